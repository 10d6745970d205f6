// RegionLocks: per-region reader/writer locks of the owner. Application writes hold their regions
// shared (writes to one region may run concurrently; the block layer keeps them from overlapping);
// the resync copier and the unstable-set clear hold one region exclusively, so a copy never
// interleaves with a write to the same region (docs/replication.md, section 5, step 3).
#pragma once

#include <condition_variable>
#include <cstdint>
#include <map>
#include <mutex>
#include <set>

namespace unbd::replication {

class RegionLocks {
 public:
  // Regions [first, last], shared.
  void LockShared(uint64_t first, uint64_t last) {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return SharedFree(first, last); });
    for (uint64_t r = first; r <= last; ++r) held_[r]++;
  }
  // Without waiting: false when a copier holds or waits for one of the regions.
  bool TryLockShared(uint64_t first, uint64_t last) {
    std::lock_guard lock(mu_);
    if (!SharedFree(first, last)) return false;
    for (uint64_t r = first; r <= last; ++r) held_[r]++;
    return true;
  }
  void UnlockShared(uint64_t first, uint64_t last) {
    std::lock_guard lock(mu_);
    for (uint64_t r = first; r <= last; ++r) {
      if (--held_[r] == 0) held_.erase(r);
    }
    cv_.notify_all();
  }
  void Lock(uint64_t region) {
    std::unique_lock lock(mu_);
    wanted_.insert(region);
    cv_.wait(lock, [&] { return held_.find(region) == held_.end(); });
    wanted_.erase(wanted_.find(region));
    held_[region] = -1;
  }
  bool TryLock(uint64_t region) {
    std::lock_guard lock(mu_);
    if (held_.count(region)) return false;
    held_[region] = -1;
    return true;
  }
  void Unlock(uint64_t region) {
    std::lock_guard lock(mu_);
    held_.erase(region);
    cv_.notify_all();
  }

 private:
  bool SharedFree(uint64_t first, uint64_t last) const {
    for (auto it = held_.lower_bound(first); it != held_.end() && it->first <= last; ++it) {
      if (it->second < 0) return false;
    }
    // A waiting copier goes first, so a steady stream of writes cannot starve it.
    auto w = wanted_.lower_bound(first);
    return w == wanted_.end() || *w > last;
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::map<uint64_t, int> held_;  // > 0: shared holders; -1: exclusive
  std::multiset<uint64_t> wanted_;  // regions an exclusive locker waits for
};

}  // namespace unbd::replication
