#include "replication/dirty_regions.h"

#include <rocksdb/db.h>
#include <rocksdb/write_batch.h>

#include <memory>

#include "backend/key_codec.h"

namespace unbd::replication {
namespace {

constexpr std::string_view kPrefix = "dirty/";
constexpr std::string_view kRegionBytesKey = "dirty-cfg/region_bytes";
constexpr size_t kKeyBytes = 6 + 8 + 4 + 8;

std::string VolumeSetPrefix(uint64_t volume_id, uint32_t set) {
  std::string k(kPrefix);
  k.resize(kPrefix.size() + 12);
  backend::PutBigEndian64(k.data() + kPrefix.size(), volume_id);
  for (int i = 3; i >= 0; --i) {
    k[kPrefix.size() + 8 + i] = static_cast<char>(set & 0xff);
    set >>= 8;
  }
  return k;
}

bool DecodeKey(std::string_view key, RegionKey* out) {
  if (key.size() != kKeyBytes || key.substr(0, kPrefix.size()) != kPrefix) return false;
  const char* p = key.data() + kPrefix.size();
  out->volume_id = backend::GetBigEndian64(p);
  uint32_t set = 0;
  for (int i = 0; i < 4; ++i) set = (set << 8) | static_cast<unsigned char>(p[8 + i]);
  out->set = set;
  out->region = backend::GetBigEndian64(p + 12);
  return true;
}

std::string Ctx(uint64_t volume_id, uint32_t set) {
  return "volume " + std::to_string(volume_id) + " dirty set " + std::to_string(set);
}

}  // namespace

std::string DirtyRegionKey(const RegionKey& k) {
  std::string key = VolumeSetPrefix(k.volume_id, k.set);
  key.resize(kKeyBytes);
  backend::PutBigEndian64(key.data() + kPrefix.size() + 12, k.region);
  return key;
}

Status DirtyRegions::Open(rocksdb::DB* db, rocksdb::ColumnFamilyHandle* cf, uint64_t region_bytes,
                          WriteSyncedFn write_synced, std::unique_ptr<DirtyRegions>* out) {
  if (region_bytes < 4096 || (region_bytes & (region_bytes - 1)) != 0) {
    return Status::InvalidArgument("dirty regions: region size " + std::to_string(region_bytes) +
                                   " is not a power of two >= 4096");
  }
  std::unique_ptr<DirtyRegions> d(
      new DirtyRegions(db, cf, region_bytes, std::move(write_synced)));
  Status s = d->Load();
  if (!s.ok()) return s;
  *out = std::move(d);
  return Status::Ok();
}

Status DirtyRegions::Load() {
  std::string stored;
  rocksdb::Status rs = db_->Get(rocksdb::ReadOptions(), cf_, kRegionBytesKey, &stored);
  if (rs.IsNotFound()) {
    std::string v(8, '\0');
    backend::PutBigEndian64(v.data(), region_bytes_);
    rocksdb::WriteBatch b;
    b.Put(cf_, kRegionBytesKey, v);
    Status s = WriteSynced(&b, "dirty regions: recording the region size");
    if (!s.ok()) return s;
  } else if (!rs.ok()) {
    return Status::IoError("dirty regions: reading the region size: " + rs.ToString());
  } else {
    const uint64_t have = stored.size() == 8 ? backend::GetBigEndian64(stored.data()) : 0;
    if (have != region_bytes_) {
      return Status::FailedPrecondition("dirty regions: this data directory tracks " +
                                        std::to_string(have) +
                                        "-byte regions, refusing to reinterpret its marks as " +
                                        std::to_string(region_bytes_) + "-byte regions");
    }
  }
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), cf_));
  std::lock_guard lock(mu_);
  for (it->Seek(kPrefix); it->Valid() && it->key().starts_with(kPrefix); it->Next()) {
    RegionKey k;
    if (!DecodeKey(it->key().ToStringView(), &k)) {
      return Status::Internal("dirty regions: malformed key of " +
                              std::to_string(it->key().size()) + " bytes");
    }
    dirty_[{k.volume_id, k.set}].insert(k.region);
  }
  if (!it->status().ok()) return Status::IoError("dirty regions: scan: " + it->status().ToString());
  return Status::Ok();
}

Status DirtyRegions::RegionRange(uint64_t volume_id, uint64_t offset, uint64_t length,
                                 uint64_t* first, uint64_t* last) const {
  if (length == 0) {
    return Status::InvalidArgument("volume " + std::to_string(volume_id) + " offset " +
                                   std::to_string(offset) + ": empty dirty range");
  }
  if (offset + length < offset) {
    return Status::OutOfRange("volume " + std::to_string(volume_id) + " offset " +
                              std::to_string(offset) + ": length " + std::to_string(length) +
                              " overflows");
  }
  *first = offset / region_bytes_;
  *last = (offset + length - 1) / region_bytes_;
  return Status::Ok();
}

Status DirtyRegions::WriteSynced(rocksdb::WriteBatch* batch, const std::string& what) {
  return write_synced_(batch, what);
}

Status DirtyRegions::PrepareMark(uint64_t volume_id, uint32_t set, uint64_t offset, uint64_t length,
                                 rocksdb::WriteBatch* batch, std::vector<RegionKey>* fresh) {
  uint64_t first, last;
  Status s = RegionRange(volume_id, offset, length, &first, &last);
  if (!s.ok()) return s;
  std::lock_guard lock(mu_);
  auto it = dirty_.find({volume_id, set});
  for (uint64_t r = first; r <= last; ++r) {
    if (it != dirty_.end() && it->second.count(r)) continue;
    RegionKey k{volume_id, set, r};
    batch->Put(cf_, DirtyRegionKey(k), rocksdb::Slice());
    fresh->push_back(k);
  }
  return Status::Ok();
}

void DirtyRegions::Published(const std::vector<RegionKey>& fresh) {
  std::lock_guard lock(mu_);
  for (const RegionKey& k : fresh) dirty_[{k.volume_id, k.set}].insert(k.region);
}

Status DirtyRegions::Mark(uint64_t volume_id, uint32_t set, uint64_t offset, uint64_t length) {
  rocksdb::WriteBatch batch;
  std::vector<RegionKey> fresh;
  Status s = PrepareMark(volume_id, set, offset, length, &batch, &fresh);
  if (!s.ok() || fresh.empty()) return s;
  s = WriteSynced(&batch, Ctx(volume_id, set) + ": mark");
  if (s.ok()) Published(fresh);
  return s;
}

Status DirtyRegions::MarkRegions(uint64_t volume_id, uint32_t set,
                                 const std::vector<uint64_t>& regions) {
  rocksdb::WriteBatch batch;
  std::vector<RegionKey> fresh;
  {
    std::lock_guard lock(mu_);
    auto it = dirty_.find({volume_id, set});
    for (uint64_t r : regions) {
      if (it != dirty_.end() && it->second.count(r)) continue;
      RegionKey k{volume_id, set, r};
      batch.Put(cf_, DirtyRegionKey(k), rocksdb::Slice());
      fresh.push_back(k);
    }
  }
  if (fresh.empty()) return Status::Ok();
  Status s = WriteSynced(&batch, Ctx(volume_id, set) + ": mark");
  if (s.ok()) Published(fresh);
  return s;
}

Status DirtyRegions::Clear(uint64_t volume_id, uint32_t set, uint64_t first_region,
                           uint64_t end_region) {
  if (end_region <= first_region) return Status::Ok();
  rocksdb::WriteBatch batch;
  batch.DeleteRange(cf_, DirtyRegionKey({volume_id, set, first_region}),
                    DirtyRegionKey({volume_id, set, end_region}));
  // Held across the synced write: a PrepareMark that starts after us sees the regions clean and
  // re-puts them in a batch written after our delete, so a mark for a later write survives. A
  // write that prepared before us and has not been published is the caller's to exclude (see
  // the header): clearing is ordered after the copy or flush that made the regions clean.
  std::lock_guard lock(mu_);
  Status s =
      WriteSynced(&batch, Ctx(volume_id, set) + ": clear regions [" + std::to_string(first_region) +
                              ", " + std::to_string(end_region) + ")");
  if (!s.ok()) return s;
  auto it = dirty_.find({volume_id, set});
  if (it != dirty_.end()) {
    auto& regions = it->second;
    regions.erase(regions.lower_bound(first_region), regions.lower_bound(end_region));
    if (regions.empty()) dirty_.erase(it);
  }
  return Status::Ok();
}

Status DirtyRegions::ClearRegions(uint64_t volume_id, uint32_t set,
                                  const std::vector<uint64_t>& regions) {
  if (regions.empty()) return Status::Ok();
  rocksdb::WriteBatch batch;
  for (uint64_t r : regions) batch.Delete(cf_, DirtyRegionKey({volume_id, set, r}));
  // Held across the synced write for the same reason as in Clear.
  std::lock_guard lock(mu_);
  Status s = WriteSynced(&batch, Ctx(volume_id, set) + ": clear " +
                                     std::to_string(regions.size()) + " region(s)");
  if (!s.ok()) return s;
  auto it = dirty_.find({volume_id, set});
  if (it != dirty_.end()) {
    for (uint64_t r : regions) it->second.erase(r);
    if (it->second.empty()) dirty_.erase(it);
  }
  return Status::Ok();
}

Status DirtyRegions::DropVolume(uint64_t volume_id) {
  rocksdb::WriteBatch batch;
  batch.DeleteRange(cf_, VolumeSetPrefix(volume_id, 0), VolumeSetPrefix(volume_id + 1, 0));
  {
    std::lock_guard lock(mu_);
    for (auto it = dirty_.begin(); it != dirty_.end();) {
      it = it->first.first == volume_id ? dirty_.erase(it) : std::next(it);
    }
  }
  return WriteSynced(&batch, "volume " + std::to_string(volume_id) + ": drop dirty regions");
}

std::vector<uint64_t> DirtyRegions::Regions(uint64_t volume_id, uint32_t set) const {
  std::lock_guard lock(mu_);
  auto it = dirty_.find({volume_id, set});
  if (it == dirty_.end()) return {};
  return {it->second.begin(), it->second.end()};
}

uint64_t DirtyRegions::Count(uint64_t volume_id, uint32_t set) const {
  std::lock_guard lock(mu_);
  auto it = dirty_.find({volume_id, set});
  return it == dirty_.end() ? 0 : it->second.size();
}

std::vector<uint32_t> DirtyRegions::Sets(uint64_t volume_id) const {
  std::lock_guard lock(mu_);
  std::vector<uint32_t> out;
  for (auto it = dirty_.lower_bound({volume_id, 0});
       it != dirty_.end() && it->first.first == volume_id; ++it) {
    if (!it->second.empty()) out.push_back(it->first.second);
  }
  return out;
}

}  // namespace unbd::replication
