// RegionLocks: per-region reader/writer locks of the owner. Application writes hold their regions
// shared (writes to one region may run concurrently; the block layer keeps them from overlapping);
// the resync copier and the unstable-set clear hold one region exclusively, so a copy never
// interleaves with a write to the same region (docs/replication.md, section 5, step 3).
//
//   LockShared / TryLockShared / UnlockShared (regions [first, last])  every write of every queue
//   Lock / TryLock / Unlock (one region)              the resync copier, the unstable-set clear
//
// An exclusive locker that waits goes first: new shared lockers of its region wait (TryLockShared
// fails) until it has had the region, so a steady stream of writes cannot starve it. TryLock
// fails while anyone holds the region. A shared locker never holds part of its range while it
// waits.
//
// Why no mutex on the shared side: every write of every queue takes its regions, exclusive lockers
// are rare. Each region has one atomic word, in its RegionTable entry (allocated lazily, on the
// cache line the same write's tracking dirties anyway): the count of shared holders and the
// exclusive flags. A shared locker adds itself and backs out if the flags were set; an exclusive
// locker sets "wanted", then waits for the count to drain. Count and flags in one word means one
// atomic add decides, with no fence pairing. Only waiting goes through the mutex and condition
// variable; a shared unlock takes them only when it drained a region an exclusive locker wants.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>

#include "replication/region_table.h"

namespace unbd::replication {

class RegionLocks {
 public:
  // Keeps the words in `table`'s entries; the table outlives this.
  explicit RegionLocks(RegionTable* table) : table_(*table) {}
  RegionLocks(const RegionLocks&) = delete;
  RegionLocks& operator=(const RegionLocks&) = delete;

  // Regions [first, last], shared.
  void LockShared(uint64_t first, uint64_t last) {
    uint64_t busy;
    while (!TakeShared(first, last, &busy)) WaitWhileExclusive(busy);
  }
  // Without waiting: false when a copier holds or waits for one of the regions.
  bool TryLockShared(uint64_t first, uint64_t last) {
    uint64_t busy;
    return TakeShared(first, last, &busy);
  }
  void UnlockShared(uint64_t first, uint64_t last) { ReleaseShared(first, last); }

  void Lock(uint64_t region) {
    std::atomic<uint32_t>& word = Word(region);
    std::unique_lock lock(mu_);
    // "Wanted" is one bit: exclusive lockers of one region wait for it in turn (there is one
    // copier, so this hardly ever waits).
    cv_.wait(lock, [&] { return !(word.load(std::memory_order_relaxed) & kWanted); });
    uint32_t v = word.fetch_or(kWanted, std::memory_order_relaxed) | kWanted;
    for (;;) {
      if (v & (kSharedCount | kHeld)) {
        cv_.wait(lock);
        v = word.load(std::memory_order_relaxed);
      } else if (word.compare_exchange_weak(v, (v & ~kWanted) | kHeld, std::memory_order_acquire,
                                            std::memory_order_relaxed)) {
        return;
      }
    }
  }
  // Without waiting: false while anyone holds the region, or while a write that found it wanted
  // backs out of it (the caller, the unstable-set clear, retries at the next FLUSH anyway).
  bool TryLock(uint64_t region) {
    std::atomic<uint32_t>& word = Word(region);
    uint32_t v = word.load(std::memory_order_relaxed);
    while (!(v & (kSharedCount | kHeld))) {
      if (word.compare_exchange_weak(v, v | kHeld, std::memory_order_acquire,
                                     std::memory_order_relaxed))
        return true;
    }
    return false;
  }
  void Unlock(uint64_t region) {
    Word(region).fetch_and(~kHeld, std::memory_order_release);
    WakeWaiters();
  }

 private:
  // The word: shared holders (and shared lockers about to back out) in the low bits, then the
  // flags. 2^30 - 1 holders is more than ublk can have in flight on a device (2^12 queues of 2^12).
  static constexpr uint32_t kHeld = 1u << 31;    // held exclusively
  static constexpr uint32_t kWanted = 1u << 30;  // an exclusive locker waits for the count to drain
  static constexpr uint32_t kSharedCount = kWanted - 1;

  std::atomic<uint32_t>& Word(uint64_t region) { return table_.At(region).lock; }

  // True with every region of [first, last] counted; false with none of them counted and *busy
  // set to one that an exclusive locker holds or wants.
  bool TakeShared(uint64_t first, uint64_t last, uint64_t* busy) {
    for (uint64_t r = first; r <= last; ++r) {
      if (Word(r).fetch_add(1, std::memory_order_acquire) & (kWanted | kHeld)) {
        ReleaseShared(first, r);
        *busy = r;
        return false;
      }
    }
    return true;
  }
  void ReleaseShared(uint64_t first, uint64_t last) {
    bool drained_wanted = false;
    for (uint64_t r = first; r <= last; ++r) {
      const uint32_t was = Word(r).fetch_sub(1, std::memory_order_release);
      // The exclusive locker set "wanted" before this decrement (the word orders them), so it
      // either sees the count at zero or sleeps until this wakes it.
      drained_wanted |= (was & kSharedCount) == 1 && (was & kWanted);
    }
    if (drained_wanted) WakeWaiters();
  }
  void WaitWhileExclusive(uint64_t region) {
    std::atomic<uint32_t>& word = Word(region);
    std::unique_lock lock(mu_);
    // Only Unlock clears the flags (Lock turns "wanted" into "held"), and it wakes us after.
    cv_.wait(lock, [&] { return !(word.load(std::memory_order_relaxed) & (kWanted | kHeld)); });
  }
  // Taking mu_ after changing a word: a waiter checks its word under mu_, so it either sees the
  // change or is already waiting for this notify.
  void WakeWaiters() {
    std::lock_guard lock(mu_);
    cv_.notify_all();
  }

  RegionTable& table_;
  std::mutex mu_;  // only for waiting
  std::condition_variable cv_;
};

}  // namespace unbd::replication
