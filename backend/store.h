// Store: unbd-server's block store on RocksDB. Volumes are arrays of 4 KiB blocks; a block is one
// key (backend/key_codec.h) in the default column family, volume metadata is in the "meta" column
// family. Blocks never written read as zeros; discard and write-zeroes are range deletes; deleting
// a volume range-deletes all of its blocks.
//
// Guarantees:
//  * Epoch fencing: a data op is applied only if its epoch equals the volume's current epoch; the
//    check and the apply happen under the volume's FenceLock (shared), OpenVolume takes it
//    exclusively and persists (synced) before returning. Once OpenVolume(E) returned, no op with
//    epoch < E can be applied.
//  * Writes are idempotent (whole-block puts / range deletes).
//  * Plain writes are volatile (RocksDB WAL kept in a user-space buffer: manual_wal_flush); FLUSH
//    and FUA ops return only after a group-committed WAL sync (backend/wal_syncer.h).
//  * Replicated volumes (created with a replica uuid; docs/replication.md): every WRITE / DISCARD /
//    WRITE_ZEROES records its regions in the unstable set and in PeerSet(p) for each bit p of its
//    out_mask, in the same RocksDB batch as the data (replication/dirty_regions.h), so a mark is
//    exactly as durable as its data. The replica metadata (ReplicaSetMeta) is kept in the volume's
//    record. Plain volumes skip all of it.
//  * Server generation: a random number that changes when the store opens after an unclean close
//    (the process died with writes possibly unsynced). Ops carrying an older one are refused with
//    ABORTED, so a client learns that writes it had acknowledged but not flushed may be lost.
// Thread-safe. Errors carry the volume and offset.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <shared_mutex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "backend/fence_lock.h"
#include "backend/wal_syncer.h"
#include "backend/write_failure_latch.h"
#include "common/status.h"
#include "unbd/v1/io.pb.h"
#include "unbd/v1/replication.pb.h"
#include "unbd/v1/volume.pb.h"

namespace rocksdb {
class DB;
class ColumnFamilyHandle;
class WriteBatch;
}  // namespace rocksdb

namespace unbd::replication {
class DirtyRegions;
}  // namespace unbd::replication

namespace unbd::backend {

inline constexpr uint32_t kBlockSize = 4096;
// Largest replica set (docs/replication.md): out_mask bits and dirty sets beyond it are refused.
inline constexpr uint32_t kMaxReplicas = 5;

struct StoreLimits {
  uint32_t max_io_bytes = 1u << 20;          // READ / WRITE
  uint64_t max_discard_bytes = 1ull << 40;   // DISCARD / WRITE_ZEROES
};

struct StoreOptions {
  std::string dir;
  StoreLimits limits;
  size_t block_cache_bytes = 512ull << 20;
  // Dirty-region granularity for replicated volumes: a power of two >= 4096, fixed per data
  // directory (Open fails if the directory was created with another size).
  uint64_t region_bytes = 1ull << 20;
  // Memtable size of the data column family. The WAL is capped at 8x this: together they bound
  // what a busy store holds outside compacted tables.
  uint64_t write_buffer_bytes = 128ull << 20;
  // Test-only fault injection: sleep this long between the epoch check and the apply of a write
  // (inside the fence), widening the window a broken fence would expose.
  uint32_t test_apply_delay_us = 0;
};

// One data request. The caller fills the inputs; SubmitBatch fills `status` (and `*read_out`).
struct IoOp {
  v1::Opcode op = v1::OP_UNSPECIFIED;
  bool fua = false;
  uint64_t volume_id = 0;
  uint64_t epoch = 0;
  uint64_t offset = 0;
  uint64_t length = 0;
  std::string_view data = {};       // WRITE payload
  std::string* read_out = nullptr;  // READ destination, resized to `length`
  uint32_t out_mask = 0;            // replicated volumes: replicas that are out (IoRequest)
  Status status = {};
  uint64_t current_epoch = 0;       // set when the epoch check failed: the volume's epoch
  uint64_t server_generation = 0;   // 0 = unchecked; else must equal Store::server_generation()
};

class Store {
 public:
  // Opens (creating if needed) the store in options.dir. Fails with a clear message if the
  // directory is not writable or is locked by another process.
  static Status Open(const StoreOptions& options, std::unique_ptr<Store>* out);
  ~Store();  // syncs the WAL and closes the database
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  // Admin.
  Status CreateVolume(const std::string& name, uint64_t size_bytes, uint32_t block_size,
                      v1::Volume* out) {
    return CreateVolume(name, size_bytes, block_size, "", out);
  }
  // replica_uuid: empty (a plain volume) or 1-64 chars of [A-Za-z0-9-] (a replica of a
  // replicated volume: its writes are tracked in dirty-region sets).
  Status CreateVolume(const std::string& name, uint64_t size_bytes, uint32_t block_size,
                      const std::string& replica_uuid, v1::Volume* out);
  Status DeleteVolume(uint64_t volume_id);
  Status ListVolumes(std::vector<v1::Volume>* out);
  Status StatVolume(uint64_t volume_id, v1::Volume* out);
  // Grow only (the current size is OK). A replica needs `epoch` == its current epoch (the
  // owner's resize, fenced like PutReplicaMeta); with epoch 0 it is FAILED_PRECONDITION, naming
  // the replicated volume and the CLI command that resizes every copy. Plain volumes ignore it.
  Status ResizeVolume(uint64_t volume_id, uint64_t new_size_bytes, uint64_t epoch, v1::Volume* out);
  Status ResizeVolume(uint64_t volume_id, uint64_t new_size_bytes, v1::Volume* out) {
    return ResizeVolume(volume_id, new_size_bytes, 0, out);
  }
  Status ResolveVolume(const v1::VolumeRef& ref, uint64_t* volume_id);
  Status BlockChecksums(uint64_t volume_id, uint64_t start_block, uint32_t count,
                        std::vector<uint64_t>* out);

  // Claims the volume for writer generation `epoch`; durable before it returns.
  Status OpenVolume(uint64_t volume_id, uint64_t epoch, const std::string& client_id,
                    v1::Volume* out);

  // Replication (proto/unbd/v1/replication.proto). The state-changing calls need the volume's
  // current epoch, are checked and applied atomically with OpenVolume, and are synced before they
  // return. Only replicated volumes accept them (FAILED_PRECONDITION otherwise).
  //  PutReplicaMeta: stored iff meta.written_epoch == epoch == current epoch and
  //    (written_epoch, config_version) > the stored pair; an identical retry is OK.
  Status PutReplicaMeta(uint64_t volume_id, uint64_t epoch, const v1::ReplicaSetMeta& meta);
  //  Mark / Clear regions of one set (0 = unstable, p+1 = PeerSet(p)); each region must be
  //  < ceil(size / region_bytes). Clear: the caller guarantees no write to those regions is in
  //  flight (DirtyRegions::Clear's contract); all=true clears the whole set.
  Status MarkDirtyRegions(uint64_t volume_id, uint64_t epoch, uint32_t set,
                          const std::vector<uint64_t>& regions);
  Status ClearDirtyRegions(uint64_t volume_id, uint64_t epoch, uint32_t set,
                           const std::vector<uint64_t>& regions, bool all);
  //  Unfenced read: counts of every non-empty set, and the regions of `set` unless counts_only.
  Status GetDirtyRegions(uint64_t volume_id, uint32_t set, bool counts_only,
                         v1::GetDirtyRegionsResponse* out);
  uint64_t region_bytes() const { return options_.region_bytes; }
  // See "Server generation" above; fixed while the store is open.
  uint64_t server_generation() const { return server_generation_; }

  // Data path: applies a batch; every op gets its own status. Writes of one volume in the batch
  // are applied as one atomic RocksDB write; reads use MultiGet. If any successful op in the batch
  // is a FLUSH or has fua, the whole batch's writes are synced before returning.
  void SubmitBatch(std::span<IoOp> ops);

  // Makes every completed write durable (group commit).
  Status Sync() { return syncer_.Sync(); }
  uint64_t syncs_done() const { return syncer_.syncs_done(); }
  // True once a write or WAL sync failed: the store then refuses writes until restarted.
  bool write_failed() const { return write_failure_.failed(); }
  const StoreLimits& limits() const { return options_.limits; }

 private:
  struct VolumeState {
    uint64_t id = 0;
    FenceLock fence;
    // Guarded by `fence` (written exclusively, read shared).
    v1::Volume meta;
    bool deleted = false;
  };

  Store(StoreOptions options, rocksdb::DB* db, std::vector<rocksdb::ColumnFamilyHandle*> cfs);
  Status LoadVolumes();
  // Keeps the generation after a clean close, draws a new one otherwise; clears the marker.
  Status StartGeneration();
  std::shared_ptr<VolumeState> FindVolume(uint64_t volume_id);
  Status PutMetaSynced(const v1::Volume& meta, bool new_name);
  Status CheckRange(const VolumeState& v, const IoOp& op) const;
  Status CheckEpoch(const VolumeState& v, uint64_t epoch) const;
  Status CheckOutMask(const VolumeState& v, const IoOp& op) const;
  Status CheckSet(const VolumeState& v, uint32_t set) const;
  Status CheckRegions(const VolumeState& v, uint32_t set,
                      const std::vector<uint64_t>& regions) const;
  // FindVolume, as a NOT_FOUND status.
  Status FindReplica(uint64_t volume_id, std::shared_ptr<VolumeState>* out);
  void ApplyVolumeGroup(VolumeState& v, std::span<IoOp*> ops, bool* need_sync);

  StoreOptions options_;
  rocksdb::DB* db_;
  rocksdb::ColumnFamilyHandle* data_cf_;
  rocksdb::ColumnFamilyHandle* meta_cf_;
  std::vector<rocksdb::ColumnFamilyHandle*> handles_;
  // db_->Write through the write-failure latch (refused once latched; a failure latches).
  Status WriteGuarded(rocksdb::WriteBatch* wb, const std::string& what);

  WriteFailureLatch write_failure_;
  WalSyncer syncer_;
  std::unique_ptr<replication::DirtyRegions> dirty_;

  std::mutex admin_mu_;  // serializes create/delete/resize (name uniqueness, id allocation)
  std::shared_mutex volumes_mu_;
  std::map<uint64_t, std::shared_ptr<VolumeState>> volumes_;
  uint64_t next_volume_id_ = 1;  // guarded by admin_mu_
  uint64_t server_generation_ = 0;
};

// CRC-64/ECMA (reflected, ISA-L's carry-less-multiply code) of a block's bytes: the BlockChecksums
// algorithm. Fast enough that checksumming a range costs little next to reading it, which the
// owner's reconciliation relies on (it compares checksums before it copies).
uint64_t BlockChecksum(std::string_view block);

}  // namespace unbd::backend
