// DirtyRegions: a replica's persistent record of which regions of a volume may differ from its
// peers (docs/replication.md, "Dirty-region tracking"). Server side; lives in the replica's RocksDB
// so a mark is exactly as durable as the data write it rides with.
//
// A volume has several independent region sets:
//   kUnstableSet  regions written since the last FLUSH that completed on every healthy replica
//                 (what a crash may leave different between replicas: reconciled on open)
//   PeerSet(p)    regions written while replica p of the replica set was out (what p must copy
//                 back when it returns: incremental resync)
// Keys: "dirty/" + be64 volume + be32 set + be64 region, empty value (a sparse bitmap: one key per
// dirty region, so a clean volume costs nothing). The region size is fixed when the database is
// first used ("dirty-cfg/region_bytes") and a later open with another size is refused, because
// region indices would silently mean different byte ranges.
//
// Marking is two-phase so it can ride in the same WriteBatch as the data it describes:
// PrepareMark() adds Puts for regions not yet known dirty and returns them; after the batch is
// written, Published() records them in memory. A region is re-put only if a crash lost it.
// Thread-safe.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "common/status.h"
#include "replication/region_sets.h"

namespace rocksdb {
class DB;
class ColumnFamilyHandle;
class WriteBatch;
}  // namespace rocksdb

namespace unbd::replication {

// A region of a set, as stored.
struct RegionKey {
  uint64_t volume_id = 0;
  uint32_t set = 0;
  uint64_t region = 0;
  auto operator<=>(const RegionKey&) const = default;
};

class DirtyRegions {
 public:
  // Loads every mark from `cf` of `db` (neither is owned; both must outlive this object).
  // region_bytes: a power of two >= 4096. Fails if the database was used with another size.
  // `write_synced` writes a batch and makes it durable (the store sends it through its
  // write-failure latch and group commit); `what` names the write in errors.
  using WriteSyncedFn =
      std::function<Status(rocksdb::WriteBatch* batch, const std::string& what)>;
  static Status Open(rocksdb::DB* db, rocksdb::ColumnFamilyHandle* cf, uint64_t region_bytes,
                     WriteSyncedFn write_synced, std::unique_ptr<DirtyRegions>* out);

  uint64_t region_bytes() const { return region_bytes_; }

  // Adds to `batch` the marks for [offset, offset + length) not yet recorded and appends their
  // keys to `*fresh`. Nothing is visible until Published(*fresh) after the batch was written.
  Status PrepareMark(uint64_t volume_id, uint32_t set, uint64_t offset, uint64_t length,
                     rocksdb::WriteBatch* batch, std::vector<RegionKey>* fresh);
  void Published(const std::vector<RegionKey>& fresh);

  // Marks and writes at once, synced (for marks that do not ride with data, e.g. "every region
  // that was unstable when peer p went out is now dirty for p").
  Status Mark(uint64_t volume_id, uint32_t set, uint64_t offset, uint64_t length);
  Status MarkRegions(uint64_t volume_id, uint32_t set, const std::vector<uint64_t>& regions);

  // Clears regions [first_region, end_region) of a set (synced): after a resync copied them, or
  // after a FLUSH completed on every healthy replica (kUnstableSet). Caller contract: no write to
  // those regions is between PrepareMark and Published while Clear runs (the resync copier and
  // the flush path order themselves after such writes); marks prepared after Clear began survive.
  Status Clear(uint64_t volume_id, uint32_t set, uint64_t first_region, uint64_t end_region);
  // Clears the listed regions of a set in one synced write (same caller contract as Clear).
  Status ClearRegions(uint64_t volume_id, uint32_t set, const std::vector<uint64_t>& regions);
  // Removes every set of a volume (volume deleted, or a full rebuild starts over).
  Status DropVolume(uint64_t volume_id);

  // Dirty regions of a set, ascending.
  std::vector<uint64_t> Regions(uint64_t volume_id, uint32_t set) const;
  uint64_t Count(uint64_t volume_id, uint32_t set) const;
  // Sets of a volume that have at least one dirty region.
  std::vector<uint32_t> Sets(uint64_t volume_id) const;

 private:
  DirtyRegions(rocksdb::DB* db, rocksdb::ColumnFamilyHandle* cf, uint64_t region_bytes,
               WriteSyncedFn write_synced)
      : db_(db), cf_(cf), region_bytes_(region_bytes), write_synced_(std::move(write_synced)) {}
  Status Load();
  Status RegionRange(uint64_t volume_id, uint64_t offset, uint64_t length, uint64_t* first,
                     uint64_t* last) const;
  Status WriteSynced(rocksdb::WriteBatch* batch, const std::string& what);

  rocksdb::DB* db_;
  rocksdb::ColumnFamilyHandle* cf_;
  const uint64_t region_bytes_;
  const WriteSyncedFn write_synced_;
  mutable std::mutex mu_;
  std::map<std::pair<uint64_t, uint32_t>, std::set<uint64_t>> dirty_;  // guarded by mu_
};

// The key of one mark (exposed for tests and for scans by the resync code).
std::string DirtyRegionKey(const RegionKey& k);

}  // namespace unbd::replication
