// ReadChooser (replication/read_chooser.h): reads go to the replica with the lowest latency EWMA
// among the candidates; new and stale replicas are tried, every 64th read explores another one,
// a failed replica is avoided until it answers again, and a replica that recovered from being
// slow takes the reads back. Time is simulated: each read completes after its replica's latency.
#include "replication/read_chooser.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <vector>

namespace unbd::replication {
namespace {

using Clock = ReadChooser::Clock;
using std::chrono::microseconds;
using std::chrono::milliseconds;

class ReadChooserTest : public ::testing::Test {
 protected:
  // `reads` sequential reads over the first `candidates` entries of order_; returns how many
  // went to each replica.
  std::array<int, kMaxReplicas> Run(int reads, size_t candidates = 3) {
    std::array<int, kMaxReplicas> counts{};
    for (int i = 0; i < reads; ++i) {
      const size_t k = chooser_.Pick(order_, candidates, now_);
      EXPECT_LT(k, candidates);
      const size_t p = order_[k];
      ++counts[p];
      now_ += latency_[p];
      chooser_.Completed(p, latency_[p], now_);
    }
    return counts;
  }

  ReadChooser chooser_;
  Clock::time_point now_ = Clock::time_point() + std::chrono::hours(1);
  uint8_t order_[kMaxReplicas] = {0, 1, 2, 3, 4};
  Clock::duration latency_[kMaxReplicas] = {microseconds(300), microseconds(300), microseconds(300),
                                            microseconds(300), microseconds(300)};
};

TEST_F(ReadChooserTest, EveryNewReplicaIsTriedOnceFirst) {
  // Reads in flight together: each untried replica gets one, then the caller's first.
  EXPECT_EQ(chooser_.Pick(order_, 3, now_), 0u);
  EXPECT_EQ(chooser_.Pick(order_, 3, now_), 1u);
  EXPECT_EQ(chooser_.Pick(order_, 3, now_), 2u);
  EXPECT_EQ(chooser_.Pick(order_, 3, now_), 0u);
  chooser_.Completed(1, microseconds(100), now_);
  EXPECT_EQ(chooser_.Pick(order_, 3, now_), 1u) << "the only replica that answered";
}

TEST_F(ReadChooserTest, NearlyAllReadsGoToTheFastestReplica) {
  latency_[0] = microseconds(300);
  latency_[1] = milliseconds(5);
  latency_[2] = microseconds(200);
  Run(100);  // warm-up
  const auto c = Run(6400);
  EXPECT_GT(c[2], 6400 * 90 / 100) << c[0] << " " << c[1] << " " << c[2];
  EXPECT_LT(c[1], 6400 * 3 / 100) << "the slow replica";
  // Exploration keeps a sample of the others.
  EXPECT_GT(c[0], 0);
  EXPECT_GT(c[1], 0);
}

TEST_F(ReadChooserTest, OnlyCandidatesArePickedInTheCallersNumbering) {
  // order_ names replicas; Pick answers positions in it. Replica 2 is fastest but not a candidate
  // (e.g. suspect: the caller passes the trusted ones only).
  uint8_t order[3] = {1, 0, 2};
  std::copy(order, order + 3, order_);
  latency_[2] = microseconds(10);
  latency_[0] = microseconds(100);
  const auto c = Run(1000, 2);
  EXPECT_EQ(c[2], 0);
  EXPECT_GT(c[0], 900);
  EXPECT_EQ(chooser_.Pick(order_, 1, now_), 0u);
}

TEST_F(ReadChooserTest, ARecoveredReplicaTakesTheReadsBack) {
  latency_[1] = milliseconds(5);
  Run(1000);
  latency_[1] = microseconds(100);  // faster than the others now
  // It is sampled every 128th read (exploration alternates between the two others), and each
  // sample moves its average an eighth of the way: about 25 samples to get below 300 us.
  Run(4000);
  const auto c = Run(1000);
  EXPECT_GT(c[1], 900) << c[0] << " " << c[1] << " " << c[2];
}

TEST_F(ReadChooserTest, AReplicaWithoutARecentSampleIsTriedOnce) {
  latency_[1] = milliseconds(1);
  Run(200, 2);
  EXPECT_EQ(chooser_.Pick(order_, 2, now_), 0u);
  // No reads for longer than kRefresh: each stale replica gets one, then the fastest again.
  now_ += ReadChooser::kRefresh + milliseconds(1);
  EXPECT_EQ(chooser_.Pick(order_, 2, now_), 0u);
  EXPECT_EQ(chooser_.Pick(order_, 2, now_), 1u);
  EXPECT_EQ(chooser_.Pick(order_, 2, now_), 0u);
  EXPECT_EQ(chooser_.Pick(order_, 2, now_), 0u);
}

TEST_F(ReadChooserTest, AFailedReplicaIsAvoidedUntilItAnswersAgain) {
  latency_[0] = microseconds(100);
  Run(200);
  EXPECT_EQ(chooser_.Pick(order_, 3, now_), 0u);
  chooser_.Failed(0, now_);
  EXPECT_GE(chooser_.ewma(0), ReadChooser::kErrorPenalty);
  const auto c = Run(53);  // picks 202..254: short of the next exploration (every 64th)
  EXPECT_EQ(c[0], 0);
  // Its next answer replaces the penalty instead of averaging with it.
  chooser_.Completed(0, microseconds(50), now_);
  EXPECT_EQ(chooser_.ewma(0), microseconds(50));
  EXPECT_EQ(chooser_.Pick(order_, 3, now_), 0u);
}

TEST_F(ReadChooserTest, TheAverageMovesAnEighthTowardsEachSample) {
  chooser_.Completed(0, microseconds(100), now_);
  EXPECT_EQ(chooser_.ewma(0), microseconds(100));
  chooser_.Completed(0, microseconds(900), now_);
  EXPECT_EQ(chooser_.ewma(0), microseconds(200));
}

}  // namespace
}  // namespace unbd::replication
