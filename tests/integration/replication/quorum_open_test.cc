// QuorumOpen against three real unbd-server processes: a majority is required; two openers that
// see different, overlapping subsets of the replicas race and exactly one ends up able to write,
// while the other's writes are fenced on a majority; the data is only ever the winner's.
#include "replication/quorum_open.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <filesystem>
#include <thread>

#include "backend/admin_client.h"
#include "replication/replica_rpc.h"
#include "tests/integration/backend/server_process.h"
#include "tests/integration/replication/dropping_proxy.h"

namespace unbd::replication {
namespace {

using testing::DroppingProxy;
using testing::ServerProcess;
using testing::TestDir;

constexpr uint64_t kVolumeBytes = 16 << 20;
// Connection refused at once: a replica this client cannot see.
const std::string kUnreachable = "127.0.0.1:1";

class QuorumOpenTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (int i = 0; i < 3; ++i) {
      const std::string dir = TestDir("s" + std::to_string(i));
      dirs_.push_back(dir);
      servers_.push_back(std::make_unique<ServerProcess>(dir, dir + "/data"));
      ASSERT_TRUE(servers_.back()->started());
      v1::Volume vol;
      Status s = backend::AdminClient(servers_.back()->target()).Create("vol", kVolumeBytes, &vol);
      ASSERT_TRUE(s.ok()) << s.ToString();
      all_.push_back({servers_.back()->target(), vol.id()});
    }
  }

  // The replica set as one client sees it: the hidden replicas' addresses do not answer.
  std::vector<ReplicaAddr> View(std::initializer_list<int> hidden) const {
    std::vector<ReplicaAddr> v = all_;
    for (int h : hidden) v[h].target = kUnreachable;
    return v;
  }

  // Writes `pattern` to block `block` on every real replica at `epoch`; returns the statuses.
  std::vector<Status> WriteEverywhere(uint64_t epoch, uint64_t block, char pattern) const {
    std::vector<Status> out;
    for (const auto& r : all_) {
      out.push_back(backend::IoClient(r.target).Write(r.volume_id, epoch, block * 4096,
                                                      std::string(4096, pattern)));
    }
    return out;
  }

  static size_t CountOk(const std::vector<Status>& v) {
    size_t n = 0;
    for (const auto& s : v) n += s.ok();
    return n;
  }
  static size_t CountFenced(const std::vector<Status>& v) {
    size_t n = 0;
    for (const auto& s : v) {
      n += s.code() == Status::Code::kFailedPrecondition &&
           s.message().find("fenced") != std::string::npos;
    }
    return n;
  }

  void TearDown() override {
    servers_.clear();
    if (!HasFailure()) {
      for (const auto& d : dirs_) std::filesystem::remove_all(d);
    }
  }

  std::vector<std::string> dirs_;
  std::vector<std::unique_ptr<ServerProcess>> servers_;
  std::vector<ReplicaAddr> all_;
};

TEST_F(QuorumOpenTest, NeedsAMajority) {
  QuorumOpenResult res;
  Status s = QuorumOpen(View({1, 2}), {.client_id = "lonely"}, &res);
  EXPECT_EQ(s.code(), Status::Code::kUnavailable) << s.ToString();
  EXPECT_NE(s.message().find("only 1 of 3 replicas answered (need 2)"), std::string::npos)
      << s.ToString();
  // Even told an epoch explicitly (no phase 1), one promise is not an open.
  s = QuorumOpen(View({1, 2}), {.client_id = "lonely", .epoch = MakeBallot(9, 1)}, &res);
  EXPECT_EQ(s.code(), Status::Code::kUnavailable) << s.ToString();
  EXPECT_EQ(res.accepted, 1u);

  s = QuorumOpen(View({2}), {.client_id = "a"}, &res);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(res.accepted, 2u);
  EXPECT_EQ(res.size_bytes, kVolumeBytes);
  // Round 10: the highest round the majority had seen was 9 (the lonely minority promise).
  EXPECT_EQ(BallotRound(res.epoch), 10u);
  EXPECT_EQ(res.epoch & 0xffff, BallotTag("a"));
  const uint64_t epoch_a = res.epoch;

  // A later opener that sees every replica takes over; `a` is fenced everywhere.
  s = QuorumOpen(all_, {.client_id = "b"}, &res);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(res.accepted, 3u);
  EXPECT_GT(res.epoch, epoch_a);
  EXPECT_EQ(CountFenced(WriteEverywhere(epoch_a, 0, 'a')), 3u);
  EXPECT_EQ(CountOk(WriteEverywhere(res.epoch, 0, 'b')), 3u);
}

TEST_F(QuorumOpenTest, AKnownEpochSkipsTheFirstPhaseAStaleOneFallsBackToIt) {
  QuorumOpenResult res;
  ASSERT_TRUE(QuorumOpen(all_, {.client_id = "a"}, &res).ok());
  const uint64_t epoch_a = res.epoch;
  // Told the current epoch (its own lookup): the next round at once, and no phase-1 answers.
  Status s = QuorumOpen(all_, {.client_id = "b", .known_epoch = epoch_a}, &res);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(res.epoch, MakeBallot(BallotRound(epoch_a) + 1, BallotTag("b")));
  for (const auto& r : res.replicas) EXPECT_EQ(r.seen_epoch, 0u) << "phase 1 ran";
  const uint64_t epoch_b = res.epoch;
  // Told an epoch that is stale by now (another opener moved on since that lookup): the guess is
  // fenced everywhere, so both phases run, and the open still wins, above the newer epoch.
  ASSERT_TRUE(QuorumOpen(all_, {.client_id = "c", .epoch = MakeBallot(BallotRound(epoch_b) + 5, 3)}, &res).ok());
  const uint64_t epoch_c = res.epoch;
  s = QuorumOpen(all_, {.client_id = "d", .known_epoch = epoch_b}, &res);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(res.accepted, 3u);
  EXPECT_EQ(res.epoch, MakeBallot(BallotRound(epoch_c) + 1, BallotTag("d")));
  for (const auto& r : res.replicas) EXPECT_EQ(r.seen_epoch, epoch_c) << "phase 1 did not run";
  EXPECT_EQ(CountFenced(WriteEverywhere(epoch_c, 0, 'c')), 3u);
  EXPECT_EQ(CountOk(WriteEverywhere(res.epoch, 0, 'd')), 3u);
}

TEST_F(QuorumOpenTest, AReplicaThatDiedUnderAConnectedChannelCostsNoTimeout) {
  // As a standby holds them: a channel to every replica, connected by a first call.
  std::vector<std::unique_ptr<ReplicaRpc>> held;
  for (const auto& r : all_) {
    held.push_back(std::make_unique<ReplicaRpc>(r.target, std::chrono::seconds(5)));
    v1::VolumeRef ref;
    ref.set_id(r.volume_id);
    v1::Volume vol;
    ASSERT_TRUE(held.back()->Stat(ref, &vol).ok());
  }
  EXPECT_EQ(servers_[1]->Kill(SIGKILL), 128 + SIGKILL);
  QuorumOpenResult res;
  const auto started = std::chrono::steady_clock::now();
  Status s = QuorumOpen(all_, {.client_id = "b", .rpc_timeout = std::chrono::seconds(5)}, &res);
  const auto took = std::chrono::steady_clock::now() - started;
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(res.accepted, 2u);
  // A dead server refuses the reconnection: not waited for until the deadline.
  EXPECT_LT(took, std::chrono::seconds(2)) << res.replicas[1].status.ToString();
}

TEST_F(QuorumOpenTest, AReplicaWhoseFirstConnectionsFailIsRetriedNotCountedOut) {
  // Replica 2 is up, but its first connections are dropped mid-handshake (a loaded machine's can
  // be). Replica 0 is really down. The open must not count replica 2 out: a retry that only
  // asks the channel again inside its reconnect backoff gets the cached failure back.
  DroppingProxy proxy(servers_[2]->port(), /*drop_first=*/2);
  std::vector<ReplicaAddr> view = View({0});
  view[2].target = proxy.target();
  QuorumOpenResult res;
  Status s = QuorumOpen(view, {.client_id = "patient"}, &res);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(res.accepted, 2u);
  EXPECT_GE(proxy.dropped(), 1);
}

TEST_F(QuorumOpenTest, SameEpochTwoClientsAtMostOneWins) {
  // Ballot tags normally keep epochs apart; even if two openers propose the very same epoch,
  // each replica promises it to one client only, so two majorities cannot both form.
  const uint64_t epoch = MakeBallot(3, 77);
  for (int round = 0; round < 10; ++round) {
    const uint64_t e = epoch + (uint64_t(round) << kBallotTagBits);
    QuorumOpenResult ra, rb;
    Status sa, sb;
    std::atomic<int> ready{0};
    std::thread ta([&] {
      ready++;
      while (ready < 2) {
      }
      sa = QuorumOpen(View({2}), {.client_id = "a", .epoch = e}, &ra);
    });
    std::thread tb([&] {
      ready++;
      while (ready < 2) {
      }
      sb = QuorumOpen(View({0}), {.client_id = "b", .epoch = e}, &rb);
    });
    ta.join();
    tb.join();
    EXPECT_EQ(sa.ok() + sb.ok(), 1)
        << "round " << round << ": a: " << sa.ToString() << " b: " << sb.ToString();
    // The loser names the replica that refused it (its third replica is unreachable, so the
    // answer is UNAVAILABLE: it could still win if that one came back and promised).
    const Status& loser = sa.ok() ? sb : sa;
    EXPECT_NE(loser.message().find("is fenced by epoch"), std::string::npos) << loser.ToString();
  }
}

TEST_F(QuorumOpenTest, RacingOpenersOverlappingSubsetsExactlyOneWins) {
  // a sees replicas 0 and 1, b sees 1 and 2: each sees a majority, and only replica 1 is shared.
  // Both open concurrently, over and over. Whatever the interleaving, afterwards exactly one of
  // them has its epoch current on a majority (checked on the servers themselves, not trusted from
  // QuorumOpen), the other is fenced on a majority, and the shared replica holds the winner's data.
  int wins_a = 0, wins_b = 0;
  for (int round = 0; round < 20; ++round) {
    QuorumOpenResult ra, rb;
    Status sa, sb;
    std::atomic<int> ready{0};
    std::thread ta([&] {
      ready++;
      while (ready < 2) {
      }
      sa = QuorumOpen(View({2}), {.client_id = "frontend-a"}, &ra);
    });
    std::thread tb([&] {
      ready++;
      while (ready < 2) {
      }
      sb = QuorumOpen(View({0}), {.client_id = "frontend-b"}, &rb);
    });
    ta.join();
    tb.join();
    EXPECT_NE(ra.epoch, rb.epoch) << "ballots of different clients must differ";
    ASSERT_TRUE(sa.ok() || sb.ok())
        << "round " << round << ": nobody won: a: " << sa.ToString() << " b: " << sb.ToString();

    const uint64_t block = round;
    auto wa = WriteEverywhere(ra.epoch, block, 'a');
    auto wb = WriteEverywhere(rb.epoch, block, 'b');
    const bool a_writes = CountOk(wa) >= Majority(3);
    const bool b_writes = CountOk(wb) >= Majority(3);
    ASSERT_EQ(a_writes + b_writes, 1)
        << "round " << round << ": a epoch " << ra.epoch << " ok " << CountOk(wa) << ", b epoch "
        << rb.epoch << " ok " << CountOk(wb);
    // The winner's open succeeded; the loser is fenced on a majority.
    EXPECT_TRUE(a_writes ? sa.ok() : sb.ok());
    EXPECT_GE(CountFenced(a_writes ? wb : wa), Majority(3)) << "round " << round;
    // Only the winner's data is on the replicas that hold the winner's epoch.
    const char want = a_writes ? 'a' : 'b';
    const uint64_t epoch = a_writes ? ra.epoch : rb.epoch;
    for (int i = 0; i < 3; ++i) {
      if (!(a_writes ? wa : wb)[i].ok()) continue;
      std::string got;
      ASSERT_TRUE(backend::IoClient(all_[i].target)
                      .Read(all_[i].volume_id, epoch, block * 4096, 4096, &got)
                      .ok());
      EXPECT_EQ(got, std::string(4096, want)) << "replica " << i << " round " << round;
    }
    (a_writes ? wins_a : wins_b)++;
  }
  std::printf("racing opens: frontend-a won %d rounds, frontend-b %d\n", wins_a, wins_b);
}

}  // namespace
}  // namespace unbd::replication
