// RegionTable: entries far apart (every level of the tree), listed in region order, shared by
// concurrent writers without losing a count or the largest sequence number.
#include "replication/region_table.h"

#include <gtest/gtest.h>

#include <thread>
#include <vector>

namespace unbd::replication {
namespace {

std::vector<uint64_t> Tracked(const RegionTable& t) {
  std::vector<uint64_t> out;
  t.ForEachTracked([&](uint64_t r, const RegionTable::Entry&) { out.push_back(r); });
  return out;
}

TEST(RegionTableTest, EntriesAnywhereListedInOrder) {
  RegionTable t;
  EXPECT_TRUE(Tracked(t).empty());
  // The largest index a 64-bit offset gives at 4 KiB regions, and neighbours across leaves.
  const std::vector<uint64_t> regions = {0, 1, 8191, 8192, 1ull << 30, (1ull << 52) - 1};
  for (auto it = regions.rbegin(); it != regions.rend(); ++it) t.At(*it).last = (*it + 1) << 1;
  EXPECT_EQ(Tracked(t), regions);
  EXPECT_EQ(&t.At(8192), &t.At(8192));
  EXPECT_EQ(RegionTable::Seq(t.At(8192).last), 8193u);
  t.At(1).last = 0;  // untracked again; its entry stays
  t.At(2).running = 1;  // running but never stored a write: not tracked
  EXPECT_EQ(Tracked(t), (std::vector<uint64_t>{0, 8191, 8192, 1ull << 30, (1ull << 52) - 1}));
}

TEST(RegionTableTest, ConcurrentWritersShareEntries) {
  RegionTable t;
  constexpr int kThreads = 4, kPerThread = 20000;
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] {
      for (uint64_t n = 0; n < kPerThread; ++n) {
        const uint64_t region = (n * 7919) % 50000;  // several leaves, allocated by the race
        RegionTable::Entry& e = t.At(region);
        e.running.fetch_add(1);
        const uint64_t last = (n * kThreads + i + 1) << 1;
        uint64_t cur = e.last.load();
        while (cur < last && !e.last.compare_exchange_weak(cur, last)) {
        }
        e.running.fetch_sub(1);
      }
    });
  }
  for (auto& th : threads) th.join();
  size_t n = 0;
  t.ForEachTracked([&](uint64_t r, const RegionTable::Entry& e) {
    EXPECT_EQ(e.running.load(), 0u) << r;
    ++n;
  });
  EXPECT_EQ(n, static_cast<size_t>(kPerThread));  // 7919 is prime to 50000: all distinct
  EXPECT_EQ(RegionTable::Seq(t.At(((kPerThread - 1) * 7919) % 50000).last),
            static_cast<uint64_t>((kPerThread - 1) * kThreads + kThreads));
}

}  // namespace
}  // namespace unbd::replication
