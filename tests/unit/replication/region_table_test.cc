// RegionTable: entries far apart (every level of the tree), listed in region order; a flush
// covers and clears only what started before it; concurrent writers share entries without losing
// a count or the largest sequence number.
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
  uint64_t seq = 0;
  for (auto it = regions.rbegin(); it != regions.rend(); ++it) {
    t.StartWrite(*it, ++seq);
    t.EndWrite(*it);
  }
  EXPECT_EQ(Tracked(t), regions);
  EXPECT_EQ(&t.At(8192), &t.At(8192));
  EXPECT_EQ(RegionTable::Seq(t.At(8192).last), 3u);
  t.Untrack(1, seq + 1);  // untracked again; its entry stays
  t.StartWrite(2, ++seq);
  EXPECT_EQ(t.At(2).running, 1u);
  EXPECT_EQ(Tracked(t), (std::vector<uint64_t>{0, 2, 8191, 8192, 1ull << 30, (1ull << 52) - 1}));
  // A leaf whose regions were all cleared is skipped, and comes back with the next write.
  t.Untrack(0, seq);
  t.Untrack(8191, seq);
  t.EndWrite(2);
  t.Untrack(2, seq + 1);
  EXPECT_EQ(Tracked(t), (std::vector<uint64_t>{8192, 1ull << 30, (1ull << 52) - 1}));
  t.StartWrite(8191, ++seq);
  EXPECT_EQ(Tracked(t), (std::vector<uint64_t>{8191, 8192, 1ull << 30, (1ull << 52) - 1}));
}

TEST(RegionTableTest, AFlushCoversAndClearsOnlyWritesStartedBeforeIt) {
  RegionTable t;
  t.StartWrite(7, 1);
  t.EndWrite(7);
  t.Cover(7, 1);  // a flush numbered 1 came before the write
  EXPECT_FALSE(RegionTable::Covered(t.At(7).last));
  t.Cover(7, 2);
  EXPECT_TRUE(RegionTable::Covered(t.At(7).last));
  t.StartWrite(7, 3);  // a newer write is not covered
  EXPECT_FALSE(RegionTable::Covered(t.At(7).last));
  EXPECT_EQ(RegionTable::Seq(t.At(7).last), 3u);
  t.StartWrite(7, 2);  // an older number (another queue, later) does not go back
  EXPECT_EQ(RegionTable::Seq(t.At(7).last), 3u);
  t.EndWrite(7);
  t.EndWrite(7);
  t.Untrack(7, 3);  // the write numbered 3 started after that flush
  EXPECT_EQ(Tracked(t), std::vector<uint64_t>{7});
  t.Untrack(7, 4);
  EXPECT_TRUE(Tracked(t).empty());
  EXPECT_EQ(t.At(7).last, 0u);
}

TEST(RegionTableTest, ConcurrentWritersShareEntries) {
  RegionTable t;
  constexpr int kThreads = 4, kPerThread = 20000;
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] {
      for (uint64_t n = 0; n < kPerThread; ++n) {
        const uint64_t region = (n * 7919) % 50000;  // several leaves, allocated by the race
        t.StartWrite(region, n * kThreads + i + 1);
        t.EndWrite(region);
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
