#include "backend/store.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <random>
#include <thread>

#include <isa-l/crc64.h>
#include <rocksdb/cache.h>
#include <rocksdb/db.h>
#include <rocksdb/filter_policy.h>
#include <rocksdb/options.h>
#include <rocksdb/table.h>
#include <rocksdb/write_batch.h>
#include <spdlog/spdlog.h>

#include "backend/key_codec.h"
#include "backend/rocksdb_info_log.h"
#include "replication/dirty_regions.h"

namespace unbd::backend {
namespace {

constexpr uint64_t kMaxVolumeBytes = 1ull << 60;  // keeps offset + length far from overflow
constexpr uint32_t kMaxChecksumBlocks = 65536;
// Short discards are cheaper as point deletes: range tombstones cost every later read a check.
constexpr uint64_t kPointDeleteMaxBlocks = 64;
// RocksDB's LOG is rotated to LOG.old past this size.
constexpr uint64_t kInfoLogMaxBytes = 64ull << 20;

Status FromRocks(const rocksdb::Status& s, const std::string& context) {
  if (s.ok()) return Status::Ok();
  return Status::IoError(context + ": " + s.ToString());
}

std::string VolumeCtx(uint64_t volume_id) { return "volume " + std::to_string(volume_id); }
std::string OpCtx(const IoOp& op) {
  return "volume " + std::to_string(op.volume_id) + " offset " + std::to_string(op.offset);
}

bool ValidName(const std::string& name) {
  if (name.empty() || name.size() > 128) return false;
  for (char c : name) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-')) {
      return false;
    }
  }
  return true;
}

int64_t NowUnixMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

bool IsWriteOp(v1::Opcode op) {
  return op == v1::OP_WRITE || op == v1::OP_DISCARD || op == v1::OP_WRITE_ZEROES;
}

bool ValidReplicaUuid(const std::string& uuid) {
  if (uuid.empty() || uuid.size() > 64) return false;
  for (char c : uuid) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-')) return false;
  }
  return true;
}

std::string PairStr(uint64_t epoch, uint64_t version) {
  return "(written_epoch " + std::to_string(epoch) + ", config_version " +
         std::to_string(version) + ")";
}

}  // namespace

uint64_t BlockChecksum(std::string_view block) {
  return crc64_ecma_refl(0, reinterpret_cast<const uint8_t*>(block.data()), block.size());
}

Status Store::Open(const StoreOptions& options, std::unique_ptr<Store>* out) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(options.dir, ec);
  if (ec) {
    return Status::IoError("data directory " + options.dir + ": cannot create: " + ec.message());
  }
  if (options.region_bytes < 4096 || (options.region_bytes & (options.region_bytes - 1)) != 0) {
    return Status::InvalidArgument("region size " + std::to_string(options.region_bytes) +
                                   " is not a power of two >= 4096");
  }
  // RocksDB's own error for a read-only directory is obscure; probe first.
  const std::string probe = options.dir + "/.unbd-write-probe";
  int fd = ::open(probe.c_str(), O_CREAT | O_WRONLY | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    return Status::FromErrno(errno, "data directory " + options.dir + " is not writable");
  }
  ::close(fd);
  ::unlink(probe.c_str());

  rocksdb::Options db_opts;
  db_opts.create_if_missing = true;
  db_opts.create_missing_column_families = true;
  // Plain writes stay in a user-space WAL buffer until FLUSH/FUA (the volatile write cache of the
  // block-device contract); the WalSyncer writes and fsyncs it.
  db_opts.manual_wal_flush = true;
  db_opts.max_background_jobs = 2;
  db_opts.max_total_wal_size = 8 * options.write_buffer_bytes;
  // RocksDB's own file logger aborts the server once the disk is full (rocksdb_info_log.h).
  std::shared_ptr<RocksInfoLog> info_log;
  Status log_status = RocksInfoLog::Open(options.dir, kInfoLogMaxBytes, &info_log);
  if (!log_status.ok()) return log_status;
  db_opts.info_log = info_log;

  rocksdb::ColumnFamilyOptions data_opts;
  rocksdb::BlockBasedTableOptions table;
  table.block_cache = rocksdb::NewLRUCache(options.block_cache_bytes);
  table.filter_policy.reset(rocksdb::NewBloomFilterPolicy(10));
  table.block_size = 16 * 1024;
  table.cache_index_and_filter_blocks = false;
  // Debian's RocksDB is built without SSE4.2, so CRC32C is the slow portable one; XXH3 is fast
  // everywhere.
  table.checksum = rocksdb::kXXH3;
  data_opts.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
  data_opts.compression = rocksdb::kNoCompression;  // block payloads rarely compress; CPU matters
  data_opts.write_buffer_size = options.write_buffer_bytes;
  data_opts.max_write_buffer_number = 4;
  data_opts.level_compaction_dynamic_level_bytes = true;
  data_opts.memtable_whole_key_filtering = true;
  data_opts.memtable_prefix_bloom_size_ratio = 0.02;

  std::vector<rocksdb::ColumnFamilyDescriptor> cfs = {
      {rocksdb::kDefaultColumnFamilyName, data_opts},
      {"meta", rocksdb::ColumnFamilyOptions()},
  };
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* db = nullptr;
  rocksdb::Status s = rocksdb::DB::Open(rocksdb::DBOptions(db_opts), options.dir, cfs, &handles,
                                        &db);
  if (!s.ok()) {
    const std::string msg = s.ToString();
    if (msg.find("LOCK") != std::string::npos || msg.find("lock") != std::string::npos) {
      return Status::Unavailable("data directory " + options.dir +
                                 " is already in use by another unbd-server (RocksDB LOCK held): " +
                                 msg);
    }
    return Status::IoError("data directory " + options.dir + ": cannot open store: " + msg);
  }
  std::unique_ptr<Store> store(new Store(options, db, std::move(handles)));
  Status ls = store->LoadVolumes();
  if (!ls.ok()) return ls;
  // Marks live next to the volume records: both are small and rarely written.
  // Their synced writes go through the same latch and group commit as every other write.
  Store* st = store.get();
  ls = replication::DirtyRegions::Open(
      db, store->meta_cf_, options.region_bytes,
      [st](rocksdb::WriteBatch* b, const std::string& what) {
        Status s = st->WriteGuarded(b, what);
        return s.ok() ? st->syncer_.Sync() : s;
      },
      &store->dirty_);
  if (ls.code() == Status::Code::kFailedPrecondition) {
    return Status::FailedPrecondition("data directory " + options.dir + ": " + ls.message() +
                                      " (start with the --region-bytes it was created with)");
  }
  if (!ls.ok()) return Status::IoError("data directory " + options.dir + ": " + ls.message());
  ls = store->StartGeneration();
  if (!ls.ok()) return Status::IoError("data directory " + options.dir + ": " + ls.message());
  *out = std::move(store);
  return Status::Ok();
}

Store::Store(StoreOptions options, rocksdb::DB* db, std::vector<rocksdb::ColumnFamilyHandle*> cfs)
    : options_(std::move(options)),
      db_(db),
      data_cf_(cfs[0]),
      meta_cf_(cfs[1]),
      handles_(std::move(cfs)),
      syncer_([this] {
        return write_failure_.SyncWal(
            [this] { return FromRocks(db_->FlushWAL(/*sync=*/true), "WAL sync"); });
      }) {}

Status Store::WriteGuarded(rocksdb::WriteBatch* wb, const std::string& what) {
  return write_failure_.Write(
      what, [&] { return FromRocks(db_->Write(rocksdb::WriteOptions(), wb), what); });
}

Store::~Store() {
  dirty_.reset();
  Status s = syncer_.Sync();
  if (!s.ok()) spdlog::error("closing store: {}", s.ToString());
  if (s.ok() && !write_failure_.failed()) {
    // Everything acknowledged is durable: the next start may keep the generation.
    rocksdb::WriteBatch wb;
    wb.Put(meta_cf_, kCleanCloseKey, "1");
    s = WriteGuarded(&wb, "marking the close clean");
    if (s.ok()) s = syncer_.Sync();
    if (!s.ok()) spdlog::error("closing store: {}", s.ToString());
  }
  for (auto* h : handles_) db_->DestroyColumnFamilyHandle(h);
  rocksdb::Status cs = db_->Close();
  if (!cs.ok()) spdlog::error("closing store: {}", cs.ToString());
  delete db_;
}

Status Store::StartGeneration() {
  std::string stored, clean;
  rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), meta_cf_, kServerGenerationKey, &stored);
  if (!s.ok() && !s.IsNotFound()) return FromRocks(s, "reading the server generation");
  const uint64_t old = s.ok() && stored.size() == 8 ? GetBigEndian64(stored.data()) : 0;
  s = db_->Get(rocksdb::ReadOptions(), meta_cf_, kCleanCloseKey, &clean);
  if (!s.ok() && !s.IsNotFound()) return FromRocks(s, "reading the clean-close marker");
  if (s.ok() && old != 0) {
    server_generation_ = old;
  } else {
    // Random rather than old + 1: a wiped data directory must not come back with a generation a
    // client already knows.
    std::random_device rd;
    do {
      server_generation_ = ((uint64_t{rd()} << 32) | rd()) >> 1;
    } while (server_generation_ == 0 || server_generation_ == old);
    if (old != 0) {
      spdlog::warn("store {}: the last run did not close cleanly; server generation {} -> {} "
                   "(clients learn that unflushed writes may be lost)",
                   options_.dir, old, server_generation_);
    }
  }
  // The marker goes away while running: a crash from here on is an unclean close.
  rocksdb::WriteBatch wb;
  char gen[8];
  PutBigEndian64(gen, server_generation_);
  wb.Put(meta_cf_, kServerGenerationKey, rocksdb::Slice(gen, 8));
  wb.Delete(meta_cf_, kCleanCloseKey);
  Status st = WriteGuarded(&wb, "storing the server generation");
  if (!st.ok()) return st;
  return syncer_.Sync();
}

Status Store::LoadVolumes() {
  std::string next;
  rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), meta_cf_, kNextVolumeIdKey, &next);
  if (s.ok() && next.size() == 8) {
    next_volume_id_ = GetBigEndian64(next.data());
  } else if (!s.IsNotFound()) {
    return FromRocks(s, "reading volume id counter");
  }
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), meta_cf_));
  for (it->Seek(kVolumeMetaPrefix); it->Valid() && it->key().starts_with(kVolumeMetaPrefix);
       it->Next()) {
    auto v = std::make_shared<VolumeState>();
    if (!v->meta.ParseFromArray(it->value().data(), static_cast<int>(it->value().size()))) {
      return Status::Internal("corrupt volume metadata at key " + it->key().ToString(true));
    }
    v->id = v->meta.id();
    next_volume_id_ = std::max(next_volume_id_, v->id + 1);
    volumes_[v->id] = std::move(v);
  }
  spdlog::info("store {}: {} volume(s)", options_.dir, volumes_.size());
  return FromRocks(it->status(), "loading volumes");
}

std::shared_ptr<Store::VolumeState> Store::FindVolume(uint64_t volume_id) {
  std::shared_lock l(volumes_mu_);
  auto it = volumes_.find(volume_id);
  return it == volumes_.end() ? nullptr : it->second;
}

Status Store::PutMetaSynced(const v1::Volume& meta, bool new_name) {
  rocksdb::WriteBatch wb;
  v1::Volume stored = meta;
  stored.clear_approx_stored_bytes();
  wb.Put(meta_cf_, VolumeMetaKey(meta.id()), stored.SerializeAsString());
  if (new_name) {
    char id[8];
    PutBigEndian64(id, meta.id());
    wb.Put(meta_cf_, VolumeNameKey(meta.name()), rocksdb::Slice(id, 8));
    char next[8];
    PutBigEndian64(next, next_volume_id_);
    wb.Put(meta_cf_, kNextVolumeIdKey, rocksdb::Slice(next, 8));
  }
  Status s = WriteGuarded(&wb, VolumeCtx(meta.id()) + ": metadata");
  if (!s.ok()) return s;
  return syncer_.Sync();
}

Status Store::CreateVolume(const std::string& name, uint64_t size_bytes, uint32_t block_size,
                           const std::string& replica_uuid, v1::Volume* out) {
  if (!ValidName(name)) {
    return Status::InvalidArgument("volume name \"" + name +
                                   "\": must be 1-128 characters of [A-Za-z0-9._-]");
  }
  if (!replica_uuid.empty() && !ValidReplicaUuid(replica_uuid)) {
    return Status::InvalidArgument("volume \"" + name + "\": replica uuid \"" + replica_uuid +
                                   "\" must be 1-64 characters of [A-Za-z0-9-]");
  }
  if (block_size == 0) block_size = kBlockSize;
  if (block_size != kBlockSize) {
    return Status::InvalidArgument("volume \"" + name + "\": block size " +
                                   std::to_string(block_size) + " is not supported (only 4096)");
  }
  if (size_bytes == 0 || size_bytes % kBlockSize != 0 || size_bytes > kMaxVolumeBytes) {
    return Status::InvalidArgument("volume \"" + name + "\": size " + std::to_string(size_bytes) +
                                   " must be a non-zero multiple of 4096 and at most 2^60");
  }
  std::lock_guard admin(admin_mu_);
  {
    std::shared_lock l(volumes_mu_);
    for (const auto& [id, v] : volumes_) {
      if (v->meta.name() == name) {
        return Status::AlreadyExists("volume \"" + name + "\" already exists (id " +
                                     std::to_string(id) + ")");
      }
    }
  }
  auto v = std::make_shared<VolumeState>();
  v->id = next_volume_id_++;
  v->meta.set_id(v->id);
  v->meta.set_name(name);
  v->meta.set_size_bytes(size_bytes);
  v->meta.set_block_size(block_size);
  v->meta.set_created_unix_ms(NowUnixMs());
  v->meta.set_replica_uuid(replica_uuid);
  Status s = PutMetaSynced(v->meta, /*new_name=*/true);
  if (!s.ok()) return s;
  *out = v->meta;
  {
    std::unique_lock l(volumes_mu_);
    volumes_[v->id] = v;
  }
  spdlog::info("created volume {} \"{}\" size {}{}", v->id, name, size_bytes,
               replica_uuid.empty() ? "" : " replica " + replica_uuid);
  return Status::Ok();
}

Status Store::DeleteVolume(uint64_t volume_id) {
  std::lock_guard admin(admin_mu_);
  auto v = FindVolume(volume_id);
  if (!v) return Status::NotFound(VolumeCtx(volume_id) + ": no such volume");
  std::lock_guard fence(v->fence);
  rocksdb::WriteBatch wb;
  wb.DeleteRange(data_cf_, DataKey(volume_id, 0), DataKey(volume_id + 1, 0));
  wb.Delete(meta_cf_, VolumeMetaKey(volume_id));
  wb.Delete(meta_cf_, VolumeNameKey(v->meta.name()));
  // The dirty-region marks go in the same batch (no orphaned marks after a crash); DropVolume
  // below forgets them in memory.
  wb.DeleteRange(meta_cf_, replication::DirtyRegionKey({volume_id, 0, 0}),
                 replication::DirtyRegionKey({volume_id + 1, 0, 0}));
  Status s = WriteGuarded(&wb, VolumeCtx(volume_id) + ": delete");
  if (s.ok()) s = syncer_.Sync();
  if (s.ok()) s = dirty_->DropVolume(volume_id);
  if (!s.ok()) return s;
  v->deleted = true;
  {
    std::unique_lock l(volumes_mu_);
    volumes_.erase(volume_id);
  }
  spdlog::info("deleted volume {} \"{}\"", volume_id, v->meta.name());
  return Status::Ok();
}

Status Store::ResolveVolume(const v1::VolumeRef& ref, uint64_t* volume_id) {
  switch (ref.ref_case()) {
    case v1::VolumeRef::kId:
      if (!FindVolume(ref.id())) return Status::NotFound(VolumeCtx(ref.id()) + ": no such volume");
      *volume_id = ref.id();
      return Status::Ok();
    case v1::VolumeRef::kName: {
      std::shared_lock l(volumes_mu_);
      for (const auto& [id, v] : volumes_) {
        if (v->meta.name() == ref.name()) {
          *volume_id = id;
          return Status::Ok();
        }
      }
      return Status::NotFound("volume \"" + ref.name() + "\": no such volume");
    }
    default:
      return Status::InvalidArgument("no volume given (set an id or a name)");
  }
}

Status Store::StatVolume(uint64_t volume_id, v1::Volume* out) {
  auto v = FindVolume(volume_id);
  if (!v) return Status::NotFound(VolumeCtx(volume_id) + ": no such volume");
  {
    std::shared_lock fence(v->fence);
    *out = v->meta;
  }
  std::string begin = DataKey(volume_id, 0), end = DataKey(volume_id + 1, 0);
  rocksdb::Range range(begin, end);
  uint64_t size = 0;
  rocksdb::SizeApproximationOptions opts;
  opts.include_memtables = true;
  opts.include_files = true;
  if (db_->GetApproximateSizes(opts, data_cf_, &range, 1, &size).ok()) {
    out->set_approx_stored_bytes(size);
  }
  return Status::Ok();
}

Status Store::ListVolumes(std::vector<v1::Volume>* out) {
  std::vector<uint64_t> ids;
  {
    std::shared_lock l(volumes_mu_);
    for (const auto& [id, v] : volumes_) ids.push_back(id);
  }
  out->clear();
  for (uint64_t id : ids) {
    v1::Volume vol;
    if (StatVolume(id, &vol).ok()) out->push_back(std::move(vol));  // skip if deleted meanwhile
  }
  return Status::Ok();
}

Status Store::ResizeVolume(uint64_t volume_id, uint64_t new_size_bytes, uint64_t epoch,
                           v1::Volume* out) {
  std::lock_guard admin(admin_mu_);
  auto v = FindVolume(volume_id);
  if (!v) return Status::NotFound(VolumeCtx(volume_id) + ": no such volume");
  // Exclusive: the data path's range check reads the size under the shared fence, and an owner's
  // resize of a replica must be atomic with OpenVolume (no resize of a fenced epoch lands).
  std::lock_guard fence(v->fence);
  if (v->deleted) return Status::NotFound(VolumeCtx(volume_id) + ": no such volume");
  if (new_size_bytes == 0 || new_size_bytes % kBlockSize != 0 || new_size_bytes > kMaxVolumeBytes) {
    return Status::InvalidArgument(VolumeCtx(volume_id) + ": size " +
                                   std::to_string(new_size_bytes) +
                                   " must be a non-zero multiple of 4096 and at most 2^60");
  }
  if (!v->meta.replica_uuid().empty()) {
    if (epoch == 0) {
      // The replica set's size lives in its metadata on a majority; growing one copy alone
      // would leave the copies (and the metadata) disagreeing.
      std::string replicas;
      for (const auto& r : v->meta.replica_set().replicas())
        replicas += (replicas.empty() ? "" : ",") + r.address();
      return Status::FailedPrecondition(
          VolumeCtx(volume_id) + " is a copy of replicated volume \"" + v->meta.name() +
          "\": resize it with unbd volume resize " + v->meta.name() + " --replicas " +
          (replicas.empty() ? "HOST:PORT,..." : replicas) +
          " (growing one copy alone would make the replicas diverge)");
    }
    Status s = CheckEpoch(*v, epoch);
    if (!s.ok()) return s;
  }
  if (new_size_bytes < v->meta.size_bytes()) {
    return Status::InvalidArgument(VolumeCtx(volume_id) + ": cannot shrink from " +
                                   std::to_string(v->meta.size_bytes()) + " to " +
                                   std::to_string(new_size_bytes) + " bytes (grow only)");
  }
  if (new_size_bytes == v->meta.size_bytes()) {
    // A retry (an owner re-growing every copy after a crash): the size is durable already.
    *out = v->meta;
    return Status::Ok();
  }
  v1::Volume meta = v->meta;
  meta.set_size_bytes(new_size_bytes);
  Status s = PutMetaSynced(meta, false);
  if (!s.ok()) return s;
  v->meta = meta;
  *out = meta;
  spdlog::info("resized volume {} to {}{}", volume_id, new_size_bytes,
               epoch != 0 && !meta.replica_uuid().empty() ? " at epoch " + std::to_string(epoch)
                                                          : std::string());
  return Status::Ok();
}

Status Store::OpenVolume(uint64_t volume_id, uint64_t epoch, const std::string& client_id,
                         v1::Volume* out) {
  if (epoch == 0) return Status::InvalidArgument(VolumeCtx(volume_id) + ": epoch must be > 0");
  if (client_id.empty()) return Status::InvalidArgument(VolumeCtx(volume_id) + ": empty client id");
  auto v = FindVolume(volume_id);
  if (!v) return Status::NotFound(VolumeCtx(volume_id) + ": no such volume");
  // Exclusive: waits for every in-flight data op of the old epoch to finish applying, and no op
  // can check its epoch until the new one is durable and installed.
  std::lock_guard fence(v->fence);
  if (v->deleted) return Status::NotFound(VolumeCtx(volume_id) + ": no such volume");
  const uint64_t cur = v->meta.epoch();
  if (epoch < cur || (epoch == cur && client_id != v->meta.client_id())) {
    return Status::FailedPrecondition(VolumeCtx(volume_id) + ": epoch " + std::to_string(epoch) +
                                      " is fenced by epoch " + std::to_string(cur) +
                                      " (held by client \"" + v->meta.client_id() + "\")");
  }
  if (epoch > cur) {
    v1::Volume meta = v->meta;
    meta.set_epoch(epoch);
    meta.set_client_id(client_id);
    Status s = PutMetaSynced(meta, false);
    if (!s.ok()) return s;
    v->meta = meta;
    spdlog::info("volume {}: opened with epoch {} by \"{}\"", volume_id, epoch, client_id);
  }
  *out = v->meta;
  return Status::Ok();
}

Status Store::FindReplica(uint64_t volume_id, std::shared_ptr<VolumeState>* out) {
  *out = FindVolume(volume_id);
  if (!*out) return Status::NotFound(VolumeCtx(volume_id) + ": no such volume");
  return Status::Ok();
}

Status Store::CheckSet(const VolumeState& v, uint32_t set) const {
  if (v.meta.replica_uuid().empty()) {
    return Status::FailedPrecondition(VolumeCtx(v.id) +
                                      " is not a replica (created without a replica uuid)");
  }
  const int n = v.meta.replica_set().replicas_size();
  const uint32_t replicas = n > 0 ? static_cast<uint32_t>(n) : kMaxReplicas;
  if (set > replicas) {
    return Status::InvalidArgument(VolumeCtx(v.id) + ": dirty set " + std::to_string(set) +
                                   " does not exist (sets are 0 = unstable and 1.." +
                                   std::to_string(replicas) + " = one per replica)");
  }
  return Status::Ok();
}

Status Store::CheckRegions(const VolumeState& v, uint32_t set,
                           const std::vector<uint64_t>& regions) const {
  Status s = CheckSet(v, set);
  if (!s.ok()) return s;
  const uint64_t rb = dirty_->region_bytes();
  const uint64_t count = (v.meta.size_bytes() + rb - 1) / rb;
  for (uint64_t r : regions) {
    if (r >= count) {
      return Status::OutOfRange(VolumeCtx(v.id) + " dirty set " + std::to_string(set) +
                                ": region " + std::to_string(r) + " is past the end (" +
                                std::to_string(count) + " regions of " + std::to_string(rb) +
                                " bytes)");
    }
  }
  return Status::Ok();
}

Status Store::PutReplicaMeta(uint64_t volume_id, uint64_t epoch, const v1::ReplicaSetMeta& meta) {
  std::shared_ptr<VolumeState> v;
  Status s = FindReplica(volume_id, &v);
  if (!s.ok()) return s;
  if (meta.replicas_size() > static_cast<int>(kMaxReplicas)) {
    return Status::InvalidArgument(VolumeCtx(volume_id) + ": replica set of " +
                                   std::to_string(meta.replicas_size()) + " replicas (at most " +
                                   std::to_string(kMaxReplicas) + ")");
  }
  // Exclusive: the data path reads the replica set (out_mask bounds) under the shared fence.
  std::lock_guard fence(v->fence);
  if (v->deleted) return Status::NotFound(VolumeCtx(volume_id) + ": no such volume");
  s = CheckSet(*v, 0);
  if (!s.ok()) return s;
  s = CheckEpoch(*v, epoch);
  if (!s.ok()) return s;
  if (meta.written_epoch() != epoch) {
    return Status::FailedPrecondition(VolumeCtx(volume_id) + ": replica metadata written_epoch " +
                                      std::to_string(meta.written_epoch()) +
                                      " differs from the request's epoch " +
                                      std::to_string(epoch));
  }
  const v1::ReplicaSetMeta& cur = v->meta.replica_set();
  const auto have = std::make_pair(cur.written_epoch(), cur.config_version());
  const auto want = std::make_pair(meta.written_epoch(), meta.config_version());
  if (want == have && v->meta.has_replica_set()) {
    std::string a, b;
    cur.SerializeToString(&a);
    meta.SerializeToString(&b);
    if (a == b) return Status::Ok();  // a retry of the stored version
    return Status::FailedPrecondition(VolumeCtx(volume_id) + ": replica metadata " +
                                      PairStr(want.first, want.second) +
                                      " is already stored with different content");
  }
  if (want <= have) {
    return Status::FailedPrecondition(VolumeCtx(volume_id) + ": replica metadata " +
                                      PairStr(want.first, want.second) +
                                      " is not newer than the stored " +
                                      PairStr(have.first, have.second));
  }
  v1::Volume updated = v->meta;
  *updated.mutable_replica_set() = meta;
  s = PutMetaSynced(updated, false);
  if (!s.ok()) return s;
  v->meta = std::move(updated);
  spdlog::info("volume {}: replica metadata {} stored ({} replicas)", volume_id,
               PairStr(want.first, want.second), meta.replicas_size());
  return Status::Ok();
}

Status Store::MarkDirtyRegions(uint64_t volume_id, uint64_t epoch, uint32_t set,
                               const std::vector<uint64_t>& regions) {
  std::shared_ptr<VolumeState> v;
  Status s = FindReplica(volume_id, &v);
  if (!s.ok()) return s;
  // Shared, like a data write: atomic with OpenVolume, concurrent with the data path.
  std::shared_lock fence(v->fence);
  if (v->deleted) return Status::NotFound(VolumeCtx(volume_id) + ": no such volume");
  s = CheckRegions(*v, set, regions);
  if (s.ok()) s = CheckEpoch(*v, epoch);
  if (s.ok()) s = dirty_->MarkRegions(volume_id, set, regions);
  return s;
}

Status Store::ClearDirtyRegions(uint64_t volume_id, uint64_t epoch, uint32_t set,
                                const std::vector<uint64_t>& regions, bool all) {
  std::shared_ptr<VolumeState> v;
  Status s = FindReplica(volume_id, &v);
  if (!s.ok()) return s;
  std::shared_lock fence(v->fence);
  if (v->deleted) return Status::NotFound(VolumeCtx(volume_id) + ": no such volume");
  s = CheckRegions(*v, set, all ? std::vector<uint64_t>{} : regions);
  if (s.ok()) s = CheckEpoch(*v, epoch);
  if (!s.ok()) return s;
  // No region can be past the end (marks are range-checked and volumes only grow).
  if (all) return dirty_->Clear(volume_id, set, 0, ~0ull);
  return dirty_->ClearRegions(volume_id, set, regions);
}

Status Store::GetDirtyRegions(uint64_t volume_id, uint32_t set, bool counts_only,
                              v1::GetDirtyRegionsResponse* out) {
  auto v = FindVolume(volume_id);
  if (!v) return Status::NotFound(VolumeCtx(volume_id) + ": no such volume");
  if (set > kMaxReplicas) {
    return Status::InvalidArgument(VolumeCtx(volume_id) + ": dirty set " + std::to_string(set) +
                                   " does not exist (at most " + std::to_string(kMaxReplicas) +
                                   " replicas)");
  }
  out->Clear();
  out->set_region_bytes(dirty_->region_bytes());
  for (uint32_t s : dirty_->Sets(volume_id)) {
    v1::RegionSetCount* c = out->add_counts();
    c->set_set(s);
    c->set_regions(dirty_->Count(volume_id, s));
  }
  if (!counts_only) {
    for (uint64_t r : dirty_->Regions(volume_id, set)) out->add_regions(r);
  }
  return Status::Ok();
}

Status Store::BlockChecksums(uint64_t volume_id, uint64_t start_block, uint32_t count,
                             std::vector<uint64_t>* out) {
  auto v = FindVolume(volume_id);
  if (!v) return Status::NotFound(VolumeCtx(volume_id) + ": no such volume");
  uint64_t blocks;
  {
    std::shared_lock fence(v->fence);
    blocks = v->meta.size_bytes() / kBlockSize;
  }
  if (count > kMaxChecksumBlocks) {
    return Status::InvalidArgument(VolumeCtx(volume_id) + ": at most 65536 blocks per call");
  }
  if (start_block > blocks || count > blocks - start_block) {
    return Status::OutOfRange(VolumeCtx(volume_id) + " block " + std::to_string(start_block) +
                              ": range of " + std::to_string(count) +
                              " blocks is past the end (" + std::to_string(blocks) + " blocks)");
  }
  static const uint64_t zero_sum = BlockChecksum(std::string(kBlockSize, '\0'));
  out->assign(count, zero_sum);
  std::string begin = DataKey(volume_id, start_block), end = DataKey(volume_id, start_block + count);
  rocksdb::ReadOptions ro;
  rocksdb::Slice upper(end);
  ro.iterate_upper_bound = &upper;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro, data_cf_));
  for (it->Seek(begin); it->Valid(); it->Next()) {
    uint64_t vol, block;
    if (!DecodeDataKey(std::string_view(it->key().data(), it->key().size()), &vol, &block)) continue;
    (*out)[block - start_block] = BlockChecksum(std::string_view(it->value().data(), it->value().size()));
  }
  return FromRocks(it->status(), VolumeCtx(volume_id) + ": checksums");
}

Status Store::CheckRange(const VolumeState& v, const IoOp& op) const {
  const uint64_t size = v.meta.size_bytes();
  switch (op.op) {
    case v1::OP_FLUSH:
      return Status::Ok();
    case v1::OP_READ:
    case v1::OP_WRITE:
      if (op.length > options_.limits.max_io_bytes) {
        return Status::InvalidArgument(OpCtx(op) + ": length " + std::to_string(op.length) +
                                       " exceeds the maximum I/O size " +
                                       std::to_string(options_.limits.max_io_bytes));
      }
      if (op.op == v1::OP_WRITE && op.data.size() != op.length) {
        return Status::InvalidArgument(OpCtx(op) + ": length " + std::to_string(op.length) +
                                       " does not match the payload size " +
                                       std::to_string(op.data.size()));
      }
      break;
    case v1::OP_DISCARD:
    case v1::OP_WRITE_ZEROES:
      if (op.length > options_.limits.max_discard_bytes) {
        return Status::InvalidArgument(OpCtx(op) + ": length " + std::to_string(op.length) +
                                       " exceeds the maximum discard size " +
                                       std::to_string(options_.limits.max_discard_bytes));
      }
      break;
    default:
      return Status::InvalidArgument(OpCtx(op) + ": unknown opcode " + std::to_string(op.op));
  }
  if (op.length == 0) return Status::InvalidArgument(OpCtx(op) + ": length is 0");
  if (op.offset % kBlockSize != 0 || op.length % kBlockSize != 0) {
    return Status::InvalidArgument(OpCtx(op) + " length " + std::to_string(op.length) +
                                   ": not a multiple of the block size 4096");
  }
  if (op.length > size || op.offset > size - op.length) {
    return Status::OutOfRange(OpCtx(op) + " length " + std::to_string(op.length) +
                              ": past the end of the volume (size " + std::to_string(size) + ")");
  }
  return Status::Ok();
}

Status Store::CheckOutMask(const VolumeState& v, const IoOp& op) const {
  if (v.meta.replica_uuid().empty()) {
    return Status::InvalidArgument(OpCtx(op) + ": out_mask " + std::to_string(op.out_mask) +
                                   " on a volume that is not a replica (created without a "
                                   "replica uuid)");
  }
  // Before the owner stored the replica set, any replica index of the largest set is plausible.
  const int n = v.meta.replica_set().replicas_size();
  const uint32_t limit = n > 0 ? static_cast<uint32_t>(n) : kMaxReplicas;
  if (limit < 32 && (op.out_mask >> limit) != 0) {
    return Status::InvalidArgument(OpCtx(op) + ": out_mask " + std::to_string(op.out_mask) +
                                   " names a replica >= " + std::to_string(limit) +
                                   (n > 0 ? " (the replica set has " + std::to_string(n) +
                                                " replicas)"
                                          : std::string(" (the largest replica set)")));
  }
  return Status::Ok();
}

Status Store::CheckEpoch(const VolumeState& v, uint64_t epoch) const {
  const uint64_t cur = v.meta.epoch();
  if (epoch == cur && cur != 0) return Status::Ok();
  if (epoch < cur) {
    return Status::FailedPrecondition(VolumeCtx(v.id) + ": epoch " + std::to_string(epoch) +
                                      " is fenced by epoch " + std::to_string(cur));
  }
  return Status::FailedPrecondition(VolumeCtx(v.id) + ": epoch " + std::to_string(epoch) +
                                    " was never opened (current epoch " + std::to_string(cur) +
                                    "); call OpenVolume first");
}

void Store::SubmitBatch(std::span<IoOp> ops) {
  // Group by volume; a frontend queue's batch nearly always names one volume.
  thread_local std::vector<IoOp*> group;
  thread_local std::vector<uint64_t> done_ids;
  done_ids.clear();
  bool need_sync = false;
  for (size_t i = 0; i < ops.size(); ++i) {
    const uint64_t id = ops[i].volume_id;
    if (std::find(done_ids.begin(), done_ids.end(), id) != done_ids.end()) continue;
    done_ids.push_back(id);
    group.clear();
    for (size_t j = i; j < ops.size(); ++j) {
      if (ops[j].volume_id == id) group.push_back(&ops[j]);
    }
    auto v = FindVolume(id);
    if (!v) {
      for (IoOp* op : group) op->status = Status::NotFound(VolumeCtx(id) + ": no such volume");
      continue;
    }
    ApplyVolumeGroup(*v, group, &need_sync);
  }
  if (!need_sync) return;
  Status s = syncer_.Sync();
  if (s.ok()) return;
  for (IoOp& op : ops) {
    if (op.status.ok() && (op.op == v1::OP_FLUSH || (op.fua && IsWriteOp(op.op)))) {
      op.status = Status::IoError(OpCtx(op) + ": " + s.message());
    }
  }
}

void Store::ApplyVolumeGroup(VolumeState& v, std::span<IoOp*> ops, bool* need_sync) {
  thread_local rocksdb::WriteBatch wb;
  thread_local std::vector<char> key_buf;
  thread_local std::vector<rocksdb::Slice> keys;
  thread_local std::vector<rocksdb::PinnableSlice> values;
  thread_local std::vector<rocksdb::Status> statuses;
  thread_local std::vector<IoOp*> writes;
  thread_local std::vector<replication::RegionKey> fresh_marks;
  wb.Clear();
  writes.clear();
  fresh_marks.clear();
  size_t read_blocks = 0;

  std::shared_lock fence(v.fence);
  // Read under the fence: the uuid is fixed at create, the replica set changes exclusively.
  const bool replicated = !v.meta.replica_uuid().empty();
  for (IoOp* op : ops) {
    if (v.deleted) {
      op->status = Status::NotFound(VolumeCtx(v.id) + ": no such volume");
      continue;
    }
    op->status = CheckRange(v, *op);
    if (op->status.ok() && (op->out_mask != 0) && IsWriteOp(op->op)) {
      op->status = CheckOutMask(v, *op);
    }
    if (op->status.ok() && op->server_generation != 0 &&
        op->server_generation != server_generation_) {
      op->status = Status::Aborted(
          OpCtx(*op) + ": server generation " + std::to_string(op->server_generation) +
          " is gone (now " + std::to_string(server_generation_) +
          "): the server restarted after an unclean stop, so writes it acknowledged but had not "
          "flushed may be lost; open the volume again");
    }
    if (op->status.ok()) {
      op->status = CheckEpoch(v, op->epoch);
      if (!op->status.ok()) op->current_epoch = v.meta.epoch();
    }
    if (!op->status.ok()) continue;
    if (replicated && IsWriteOp(op->op)) {
      // The marks ride in the data's batch: exactly as durable as the write they describe.
      Status m = dirty_->PrepareMark(v.id, replication::kUnstableSet, op->offset, op->length, &wb,
                                     &fresh_marks);
      for (uint32_t p = 0; m.ok() && p < kMaxReplicas; ++p) {
        if (op->out_mask & (1u << p)) {
          m = dirty_->PrepareMark(v.id, replication::PeerSet(p), op->offset, op->length, &wb,
                                  &fresh_marks);
        }
      }
      if (!m.ok()) {
        op->status = m;
        continue;
      }
    }
    const uint64_t first = op->offset / kBlockSize, n = op->length / kBlockSize;
    char key[kDataKeyBytes], end_key[kDataKeyBytes];
    switch (op->op) {
      case v1::OP_WRITE:
        for (uint64_t b = 0; b < n; ++b) {
          EncodeDataKey(v.id, first + b, key);
          wb.Put(data_cf_, rocksdb::Slice(key, sizeof key),
                 rocksdb::Slice(op->data.data() + b * kBlockSize, kBlockSize));
        }
        writes.push_back(op);
        break;
      case v1::OP_DISCARD:
      case v1::OP_WRITE_ZEROES:
        if (n <= kPointDeleteMaxBlocks) {
          for (uint64_t b = 0; b < n; ++b) {
            EncodeDataKey(v.id, first + b, key);
            wb.Delete(data_cf_, rocksdb::Slice(key, sizeof key));
          }
        } else {
          EncodeDataKey(v.id, first, key);
          EncodeDataKey(v.id, first + n, end_key);
          wb.DeleteRange(data_cf_, rocksdb::Slice(key, sizeof key),
                         rocksdb::Slice(end_key, sizeof end_key));
        }
        writes.push_back(op);
        break;
      case v1::OP_READ:
        read_blocks += n;
        break;
      default:
        break;
    }
  }

  if (!writes.empty()) {
    if (options_.test_apply_delay_us) {
      std::this_thread::sleep_for(std::chrono::microseconds(options_.test_apply_delay_us));
    }
    Status s = WriteGuarded(&wb, "write");
    if (!s.ok()) {
      for (IoOp* op : writes) op->status = Status::IoError(OpCtx(*op) + ": " + s.message());
    } else if (!fresh_marks.empty()) {
      dirty_->Published(fresh_marks);
    }
  }

  if (read_blocks > 0) {
    key_buf.resize(read_blocks * kDataKeyBytes);
    keys.resize(read_blocks);
    values.resize(read_blocks);
    statuses.resize(read_blocks);
    size_t k = 0;
    for (IoOp* op : ops) {
      if (op->op != v1::OP_READ || !op->status.ok()) continue;
      const uint64_t first = op->offset / kBlockSize, n = op->length / kBlockSize;
      for (uint64_t b = 0; b < n; ++b, ++k) {
        EncodeDataKey(v.id, first + b, &key_buf[k * kDataKeyBytes]);
        keys[k] = rocksdb::Slice(&key_buf[k * kDataKeyBytes], kDataKeyBytes);
      }
    }
    for (auto& val : values) val.Reset();
    // Keys are ascending within each op; across ops they need not be.
    db_->MultiGet(rocksdb::ReadOptions(), data_cf_, read_blocks, keys.data(), values.data(),
                  statuses.data(), /*sorted_input=*/false);
    k = 0;
    for (IoOp* op : ops) {
      if (op->op != v1::OP_READ || !op->status.ok()) continue;
      const uint64_t n = op->length / kBlockSize;
      op->read_out->resize(op->length);
      char* dst = op->read_out->data();
      for (uint64_t b = 0; b < n; ++b, ++k) {
        if (statuses[k].ok() && values[k].size() == kBlockSize) {
          std::memcpy(dst + b * kBlockSize, values[k].data(), kBlockSize);
        } else if (statuses[k].IsNotFound()) {
          std::memset(dst + b * kBlockSize, 0, kBlockSize);
        } else if (op->status.ok()) {
          op->status = statuses[k].ok()
                           ? Status::Internal(OpCtx(*op) + ": stored block has " +
                                              std::to_string(values[k].size()) + " bytes")
                           : Status::IoError(OpCtx(*op) + ": read: " + statuses[k].ToString());
        }
      }
    }
    for (auto& val : values) val.Reset();
  }

  for (IoOp* op : ops) {
    if (op->status.ok() && (op->op == v1::OP_FLUSH || (op->fua && IsWriteOp(op->op)))) {
      *need_sync = true;
    }
  }
}

}  // namespace unbd::backend
