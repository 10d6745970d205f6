// RegionLocks: an exclusive holder and shared holders exclude each other both ways; a waiting
// exclusive locker goes before new shared lockers (and TryLockShared fails meanwhile); TryLock
// fails while anyone holds; a shared locker that meets an exclusive one backs out of its whole
// range; and under load from several writers and a copier no region is ever held both ways.
#include "replication/region_locks.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <random>
#include <thread>
#include <vector>

namespace unbd::replication {
namespace {

using namespace std::chrono_literals;

// Long enough for a thread to reach its wait here; a slow start only lets a check pass, never
// fail.
constexpr auto kSettle = 50ms;

bool Eventually(const std::function<bool()>& cond, std::chrono::milliseconds limit = 5s) {
  const auto until = std::chrono::steady_clock::now() + limit;
  while (!cond()) {
    if (std::chrono::steady_clock::now() > until) return false;
    std::this_thread::sleep_for(1ms);
  }
  return true;
}

// Runs `f` on a thread of its own. A locker that never returns (a lost wake-up, a deadlock) ends
// the test program with a message instead of hanging it.
class InBackground {
 public:
  explicit InBackground(std::function<void()> f)
      : thread_([this, f = std::move(f)] {
          f();
          done_ = true;
        }) {}
  ~InBackground() {
    if (!Finishes(30s)) {
      std::fprintf(stderr, "a lock call never returned\n");
      std::abort();
    }
    thread_.join();
  }
  bool done() const { return done_; }
  bool Finishes(std::chrono::milliseconds limit = 5s) {
    return Eventually([&] { return done(); }, limit);
  }

 private:
  std::atomic<bool> done_{false};
  std::thread thread_;
};

TEST(RegionLocksTest, ExclusiveHolderKeepsSharedLockersOut) {
  RegionTable table;
  RegionLocks locks(&table);
  const uint64_t r = (uint64_t{1} << 40) + 5;  // far out: its entry comes with the first lock
  locks.Lock(r);
  EXPECT_FALSE(locks.TryLockShared(r, r));
  EXPECT_FALSE(locks.TryLockShared(r - 2, r + 2));
  EXPECT_TRUE(locks.TryLockShared(r + 1, r + 3));  // the neighbours are free
  locks.UnlockShared(r + 1, r + 3);
  InBackground writer([&] {
    locks.LockShared(r - 1, r);
    locks.UnlockShared(r - 1, r);
  });
  std::this_thread::sleep_for(kSettle);
  EXPECT_FALSE(writer.done());
  locks.Unlock(r);
  EXPECT_TRUE(writer.Finishes());
}

TEST(RegionLocksTest, ExclusiveLockerWaitsForSharedHolders) {
  RegionTable table;
  RegionLocks locks(&table);
  locks.LockShared(4, 6);
  InBackground copier([&] {
    locks.Lock(5);
    locks.Unlock(5);
  });
  std::this_thread::sleep_for(kSettle);
  EXPECT_FALSE(copier.done());
  locks.UnlockShared(4, 6);
  EXPECT_TRUE(copier.Finishes());
  EXPECT_TRUE(locks.TryLock(5));
  locks.Unlock(5);
}

TEST(RegionLocksTest, TryLockFailsWhileAnyoneHolds) {
  RegionTable table;
  RegionLocks locks(&table);
  locks.LockShared(3, 4);
  locks.LockShared(4, 4);  // a second write on region 4
  EXPECT_FALSE(locks.TryLock(3));
  EXPECT_FALSE(locks.TryLock(4));
  EXPECT_TRUE(locks.TryLock(5));
  EXPECT_FALSE(locks.TryLock(5));  // held exclusively
  locks.Unlock(5);
  locks.UnlockShared(3, 4);
  EXPECT_TRUE(locks.TryLock(3));
  EXPECT_FALSE(locks.TryLock(4));  // the second write still holds it
  locks.UnlockShared(4, 4);
  EXPECT_TRUE(locks.TryLock(4));
  locks.Unlock(3);
  locks.Unlock(4);
}

TEST(RegionLocksTest, WaitingExclusiveLockerGoesBeforeNewSharedLockers) {
  RegionTable table;
  RegionLocks locks(&table);
  locks.LockShared(7, 7);  // a write in flight
  std::atomic<int> turns{0};
  int copier_turn = 0, writer_turn = 0;
  std::atomic<bool> copy_done{false};
  InBackground copier([&] {
    locks.Lock(7);
    copier_turn = ++turns;
    while (!copy_done) std::this_thread::sleep_for(1ms);
    locks.Unlock(7);
  });
  // Once the copier waits, a write to its region does not start (the queue retries later)...
  EXPECT_TRUE(Eventually([&] {
    if (!locks.TryLockShared(7, 7)) return true;
    locks.UnlockShared(7, 7);
    return false;
  }));
  EXPECT_TRUE(locks.TryLockShared(8, 8));  // ...while writes elsewhere do
  locks.UnlockShared(8, 8);
  // ...and a blocking one waits, though only shared holders hold the region.
  InBackground writer([&] {
    locks.LockShared(6, 7);
    writer_turn = ++turns;
    locks.UnlockShared(6, 7);
  });
  std::this_thread::sleep_for(kSettle);
  EXPECT_FALSE(writer.done());
  EXPECT_FALSE(copier.done());
  locks.UnlockShared(7, 7);  // the last write in flight ends: the copier's turn
  EXPECT_TRUE(Eventually([&] { return turns >= 1; }));
  copy_done = true;
  EXPECT_TRUE(copier.Finishes());
  EXPECT_TRUE(writer.Finishes());
  EXPECT_EQ(copier_turn, 1);
  EXPECT_EQ(writer_turn, 2);
}

TEST(RegionLocksTest, SharedLockerMeetingAnExclusiveOneBacksOutOfItsWholeRange) {
  RegionTable table;
  RegionLocks locks(&table);
  locks.Lock(12);
  EXPECT_FALSE(locks.TryLockShared(10, 14));
  // Nothing of the range stays counted: a region still counted would refuse TryLock.
  for (uint64_t r : {10, 11, 13, 14}) {
    EXPECT_TRUE(locks.TryLock(r)) << r;
    locks.Unlock(r);
  }
  // The same while a blocking locker waits for region 12.
  InBackground writer([&] { locks.LockShared(10, 14); });
  std::this_thread::sleep_for(kSettle);
  EXPECT_FALSE(writer.done());
  EXPECT_TRUE(locks.TryLock(10));
  EXPECT_TRUE(locks.TryLock(11));
  locks.Unlock(12);  // it now meets region 10, held: backs out again and waits for it
  std::this_thread::sleep_for(kSettle);
  EXPECT_FALSE(writer.done());
  EXPECT_TRUE(locks.TryLock(13));
  locks.Unlock(13);
  locks.Unlock(10);
  locks.Unlock(11);
  EXPECT_TRUE(writer.Finishes());
  for (uint64_t r = 10; r <= 14; ++r) EXPECT_FALSE(locks.TryLock(r)) << r;  // all of it, now
  locks.UnlockShared(10, 14);
}

// Writers on random ranges (some of them non-blocking, like the queues) for as long as a copier
// takes single regions (some of them with TryLock, like the unstable-set clear), on regions that
// straddle two leaves of the table. Each holder counts itself in per-region occupancy counters and
// checks the other kind is absent; the copier also writes a plain per-region value the writers
// read, so ThreadSanitizer reports a race if a lock does not order the two. The copier finishing
// at all says the writers did not starve it.
TEST(RegionLocksTest, WritersAndACopierNeverHoldARegionTogether) {
  RegionTable table;
  RegionLocks locks(&table);
  constexpr uint64_t kBase = 8192 - 16, kRegions = 32;
  constexpr int kWriters = 3, kCopies = 3000;
  // Relaxed, so that only the lock orders the holders' accesses: ThreadSanitizer checks its order.
  constexpr auto kRelaxed = std::memory_order_relaxed;
  struct Occupancy {
    std::atomic<int> shared{0}, exclusive{0};
    uint64_t copies = 0;  // written by the copier under the exclusive lock
  };
  std::vector<Occupancy> occ(kRegions);
  std::atomic<int> violations{0}, copies_done{0}, writes_done{0}, writes_refused{0};
  std::atomic<bool> copier_done{false};
  std::atomic<uint64_t> seen{0};

  std::vector<std::unique_ptr<InBackground>> threads;
  for (int w = 0; w < kWriters; ++w) {
    threads.push_back(std::make_unique<InBackground>([&, w] {
      std::mt19937_64 rng(w + 1);
      for (int n = 0; !copier_done; ++n) {
        const uint64_t first = rng() % kRegions;
        const uint64_t last = std::min(kRegions - 1, first + rng() % 3);
        if (n % 4 == 0) {
          if (!locks.TryLockShared(kBase + first, kBase + last)) {
            writes_refused++;
            continue;
          }
        } else {
          locks.LockShared(kBase + first, kBase + last);
        }
        uint64_t sum = 0;
        for (uint64_t r = first; r <= last; ++r) {
          occ[r].shared.fetch_add(1, kRelaxed);
          if (occ[r].exclusive.load(kRelaxed) != 0) violations++;
          sum += occ[r].copies;
        }
        if (n % 64 == 0) std::this_thread::yield();
        for (uint64_t r = first; r <= last; ++r) occ[r].shared.fetch_sub(1, kRelaxed);
        locks.UnlockShared(kBase + first, kBase + last);
        seen += sum;
        writes_done++;
      }
    }));
  }
  threads.push_back(std::make_unique<InBackground>([&] {
    std::mt19937_64 rng(99);
    for (int n = 0; n < kCopies; ++n) {
      const uint64_t r = rng() % kRegions;
      if (n % 8 == 0) {
        if (!locks.TryLock(kBase + r)) continue;
      } else {
        locks.Lock(kBase + r);
      }
      if (occ[r].exclusive.fetch_add(1, kRelaxed) != 0) violations++;
      if (occ[r].shared.load(kRelaxed) != 0) violations++;
      occ[r].copies++;
      std::this_thread::yield();
      if (occ[r].shared.load(kRelaxed) != 0) violations++;
      occ[r].exclusive.fetch_sub(1, kRelaxed);
      locks.Unlock(kBase + r);
      copies_done++;
    }
    copier_done = true;
  }));
  threads.clear();  // joins them
  EXPECT_EQ(violations, 0);
  EXPECT_GT(copies_done, kCopies / 2);  // most TryLocks found their region free
  std::printf("%d writes (%d refused while the copier held or wanted a region), %d copies\n",
              writes_done.load(), writes_refused.load(), copies_done.load());
  for (uint64_t r = 0; r < kRegions; ++r) EXPECT_EQ(table.At(kBase + r).lock, 0u) << r;
}

}  // namespace
}  // namespace unbd::replication
