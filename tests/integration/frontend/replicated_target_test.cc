// The replicated remote target's queue handler against three real unbd-server processes on
// 127.0.0.1 (no kernel: FakeQueue plays the queue thread): verified random writes land on every
// replica; a replica killed with requests in flight fails no request and is marked out, and once
// restarted is resynced to the same per-block checksums; of two targets opening the same volume,
// the first one's writes are fenced with -EIO and the data is only the winner's; a replica that
// restarts after kill -9 between two requests (it lost its unflushed writes, the owner saw no
// failure) is caught by its server generation, marked out and resynced; when all of them restart,
// the next FLUSH fails once; reads go to the replicas that answer them fastest.
#include "frontend/targets/replicated.h"

#include <signal.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "tests/integration/frontend/fake_queue.h"
#include "tests/integration/replication/cluster.h"

namespace unbd::frontend {
namespace {

using Clock = std::chrono::steady_clock;
using replication::ReplicaState;
using replication::testing::Pattern;
using testing::FakeQueue;

constexpr uint16_t kDepth = 32;
constexpr uint64_t kVolumeBytes = 64ull << 20;
constexpr uint64_t kBlocks = kVolumeBytes / 4096;
constexpr uint32_t kSlotBlocks = 16;  // writes of 1..16 blocks, one per 64 KiB slot per round

class ReplicatedTargetTest : public replication::testing::Cluster {
 protected:
  void SetUp() override {
    StartServers(3);
    SetUpVolume("rvol", kVolumeBytes);
  }
  DeviceConfig Config() {
    DeviceConfig c;
    c.target = TargetType::kRemote;
    c.replicas = targets_;
    c.volume = "rvol";
    c.queue_depth = kDepth;
    c.max_io_bytes = 256 << 10;
    c.logical_block_size = 4096;
    c.retry_deadline_ms = 10000;
    return c;
  }
  ReplicatedTargetOptions Options() {
    ReplicatedTargetOptions o;
    o.resync_probe_interval = std::chrono::milliseconds(300);
    o.rpc_timeout = std::chrono::milliseconds(1000);
    return o;
  }
  std::unique_ptr<ReplicatedTarget> OpenTarget() {
    std::unique_ptr<ReplicatedTarget> t;
    Status s = ReplicatedTarget::Open(Config(), Options(), &t);
    EXPECT_TRUE(s.ok()) << s.ToString();
    return t;
  }
  // An open target and one queue it serves: where most tests start.
  struct Served {
    std::unique_ptr<ReplicatedTarget> target;
    FakeQueue q{kDepth};
    std::unique_ptr<QueueHandler> h;
  };
  std::unique_ptr<Served> Serve() {
    auto served = std::make_unique<Served>();
    served->target = OpenTarget();
    if (!served->target) return nullptr;
    Status s = served->target->CreateQueueHandler(&served->q, &served->h);
    EXPECT_TRUE(s.ok()) << s.ToString();
    return s.ok() ? std::move(served) : nullptr;
  }

  // One round: kDepth writes of 1..16 blocks into distinct 64 KiB slots, every block's data
  // naming the block and a fresh sequence number; `during` runs while they are in flight;
  // Every write must complete successfully.
  // `slots` limits them to the first that many slots (a small dirty set).
  void WriteRound(FakeQueue& q, QueueHandler* h, const std::function<void()>& during = {},
                  uint64_t nr_slots = kBlocks / kSlotBlocks) {
    std::set<uint64_t> slots;
    while (slots.size() < kDepth) slots.insert(rng_() % nr_slots);
    uint16_t tag = 0;
    for (uint64_t slot : slots) {
      const uint32_t n = 1 + rng_() % kSlotBlocks;
      const uint64_t first = slot * kSlotBlocks + rng_() % (kSlotBlocks - n + 1);
      auto& buf = bufs_[tag];
      buf.resize(n * 4096);
      for (uint32_t b = 0; b < n; ++b) {
        const uint64_t seq = ++seq_;
        std::memcpy(&buf[b * 4096], Pattern(first + b, seq).data(), 4096);
        expect_[first + b] = seq;
      }
      q.Submit(h, {tag, UBLK_IO_OP_WRITE, 0, first * 4096, n * 4096, buf.data()});
      ++tag;
    }
    if (during) during();
    ASSERT_TRUE(q.Pump(h, std::chrono::seconds(30)));
    for (tag = 0; tag < kDepth; ++tag) {
      ASSERT_EQ(q.result(tag), static_cast<int>(bufs_[tag].size())) << "tag " << tag;
    }
  }
  // Reads every block written so far through the target and checks its latest data.
  void VerifyAll(FakeQueue& q, QueueHandler* h) {
    std::vector<uint8_t> back(4096);
    for (const auto& [block, seq] : expect_) {
      q.Submit(h, {0, UBLK_IO_OP_READ, 0, block * 4096, 4096, back.data()});
      ASSERT_TRUE(q.Pump(h, std::chrono::seconds(30)));
      ASSERT_EQ(q.result(0), 4096) << "block " << block;
      ASSERT_EQ(std::memcmp(back.data(), Pattern(block, seq).data(), 4096), 0)
          << "block " << block << " does not hold write " << seq;
    }
  }
  void Flush(FakeQueue& q, QueueHandler* h) {
    q.Submit(h, {0, UBLK_IO_OP_FLUSH, 0, 0, 0, nullptr});
    ASSERT_TRUE(q.Pump(h, std::chrono::seconds(30)));
    ASSERT_EQ(q.result(0), 0);
  }
  // Reads every block written so far from replica i directly and counts the ones that do not
  // hold their latest data.
  size_t StaleBlocksOn(int i, uint64_t epoch) {
    const uint64_t vid = Stat(i, "rvol").id();
    const std::string all = unbd::testing::ReadVolume(
        *std::make_unique<backend::IoClient>(targets_[i]), vid, epoch, kVolumeBytes);
    EXPECT_EQ(all.size(), kVolumeBytes);
    if (all.size() != kVolumeBytes) return expect_.size();
    size_t stale = 0;
    for (const auto& [block, seq] : expect_)
      stale += all.compare(block * 4096, 4096, Pattern(block, seq)) != 0;
    return stale;
  }
  // Waits until no replica has a region in its unstable set (set 0).
  bool WaitUnstableCleared(std::chrono::seconds within) {
    const auto until = Clock::now() + within;
    while (Clock::now() < until) {
      size_t unstable = 0;
      for (int i = 0; i < static_cast<int>(targets_.size()); ++i) {
        v1::GetDirtyRegionsResponse r;
        Status s =
            backend::ReplicationClient(targets_[i]).GetDirty(Stat(i, "rvol").id(), 0, false, &r);
        unstable += s.ok() ? r.regions_size() : 1;
      }
      if (unstable == 0) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return false;
  }
  bool WaitAllHealthy(ReplicatedTarget& t, std::chrono::seconds within) {
    const auto until = Clock::now() + within;
    while (Clock::now() < until) {
      const auto st = t.volume()->states();
      if (std::all_of(st.begin(), st.end(), [](auto s) { return s == ReplicaState::kHealthy; }))
        return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return false;
  }
  void ExpectIdenticalReplicas() {
    const auto c0 = Checksums(0, "rvol");
    ASSERT_EQ(c0.size(), kBlocks);
    for (int i = 1; i < 3; ++i) {
      const auto ci = Checksums(i, "rvol");
      ASSERT_EQ(ci.size(), kBlocks);
      size_t differ = 0;
      for (size_t b = 0; b < kBlocks; ++b) differ += c0[b] != ci[b];
      EXPECT_EQ(differ, 0u) << "replica " << i << " differs from replica 0 in " << differ << " blocks";
    }
  }

  std::mt19937_64 rng_{42};
  uint64_t seq_ = 0;
  std::map<uint64_t, uint64_t> expect_;  // block -> seq of its last write
  std::vector<std::vector<uint8_t>> bufs_ = std::vector<std::vector<uint8_t>>(kDepth);
};

TEST_F(ReplicatedTargetTest, VerifiedRandomWritesLandOnAllThreeReplicas) {
  auto target = OpenTarget();
  ASSERT_TRUE(target);
  EXPECT_EQ(target->size_bytes(), kVolumeBytes);
  FakeQueue q(kDepth);
  std::unique_ptr<QueueHandler> h;
  ASSERT_TRUE(target->CreateQueueHandler(&q, &h).ok());
  for (int round = 0; round < 12; ++round) WriteRound(q, h.get());
  // A FUA write, a discard and write-zeroes reach every replica too; the latter two over data.
  std::vector<uint8_t> ones(8 * 4096, 0x11);
  q.Submit(h.get(), {0, UBLK_IO_OP_WRITE, 0, (kBlocks - 64) * 4096, 8 * 4096, ones.data()});
  q.Submit(h.get(), {1, UBLK_IO_OP_WRITE, 0, (kBlocks - 32) * 4096, 8 * 4096, ones.data()});
  ASSERT_TRUE(q.Pump(h.get(), std::chrono::seconds(30)));
  ASSERT_EQ(q.result(0), 8 * 4096);
  ASSERT_EQ(q.result(1), 8 * 4096);
  std::vector<uint8_t> fua(4096);
  std::memcpy(fua.data(), Pattern(kBlocks - 1, ++seq_).data(), 4096);
  expect_[kBlocks - 1] = seq_;
  q.Submit(h.get(), {0, UBLK_IO_OP_WRITE, UBLK_IO_F_FUA, (kBlocks - 1) * 4096, 4096, fua.data()});
  q.Submit(h.get(), {1, UBLK_IO_OP_DISCARD, 0, (kBlocks - 64) * 4096, 8 * 4096, nullptr});
  q.Submit(h.get(), {2, UBLK_IO_OP_WRITE_ZEROES, 0, (kBlocks - 32) * 4096, 8 * 4096, nullptr});
  ASSERT_TRUE(q.Pump(h.get(), std::chrono::seconds(30)));
  EXPECT_EQ(q.result(0), 4096);
  EXPECT_EQ(q.result(1), 0);
  EXPECT_EQ(q.result(2), 0);
  for (uint64_t b = kBlocks - 64; b < kBlocks - 56; ++b) expect_.erase(b);
  for (uint64_t b = kBlocks - 32; b < kBlocks - 24; ++b) expect_.erase(b);
  Flush(q, h.get());
  VerifyAll(q, h.get());
  for (uint64_t first : {kBlocks - 64, kBlocks - 32}) {
    std::vector<uint8_t> back(8 * 4096, 0xff);
    q.Submit(h.get(), {0, UBLK_IO_OP_READ, 0, first * 4096, 8 * 4096, back.data()});
    ASSERT_TRUE(q.Pump(h.get(), std::chrono::seconds(30)));
    ASSERT_EQ(q.result(0), 8 * 4096);
    EXPECT_EQ(back, std::vector<uint8_t>(8 * 4096, 0)) << "blocks from " << first << " not zeroed";
  }
  h->Stop();
  for (auto s : target->volume()->states()) EXPECT_EQ(s, ReplicaState::kHealthy);
  ExpectIdenticalReplicas();
  // The checksums are of real data: written blocks differ from never-written ones.
  const auto c0 = Checksums(0, "rvol");
  EXPECT_NE(c0[expect_.begin()->first], c0[kBlocks - 30]);
}

TEST_F(ReplicatedTargetTest, KilledReplicaFailsNoRequestIsMarkedOutAndResyncedOnReturn) {
  auto served = Serve();
  ASSERT_TRUE(served);
  auto& [target, q, h] = *served;
  for (int round = 0; round < 3; ++round) WriteRound(q, h.get());
  Flush(q, h.get());
  // The flush clears the unstable sets after it completed, off the queue thread: wait for that,
  // or the mark-out below rightly counts every region written so far as dirty for replica 2.
  ASSERT_TRUE(WaitUnstableCleared(std::chrono::seconds(10)));
  // kill -9 replica 2 while a round of writes is in flight: none of them may fail. From here on
  // writes go to the first 8 MiB only, so the incremental resync must copy at most that.
  constexpr uint64_t kDirtyBytes = 8 << 20;
  constexpr uint64_t kDirtySlots = kDirtyBytes / (kSlotBlocks * 4096);
  WriteRound(q, h.get(), [&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    Kill(2);
  }, kDirtySlots);
  for (int round = 0; round < 3; ++round) WriteRound(q, h.get(), {}, kDirtySlots);
  auto states = target->volume()->states();
  EXPECT_EQ(states[0], ReplicaState::kHealthy);
  EXPECT_EQ(states[1], ReplicaState::kHealthy);
  EXPECT_EQ(states[2], ReplicaState::kOut);
  // The mark-out is committed in the metadata on the survivors.
  auto meta = Stat(0, "rvol").replica_set();
  ASSERT_EQ(meta.replicas_size(), 3);
  EXPECT_EQ(meta.replicas(2).state(), v1::REPLICA_OUT);
  EXPECT_EQ(meta.replicas(0).state(), v1::REPLICA_HEALTHY);

  // Back on the same port with its data: the target's prober resyncs it while writes go on.
  Restart(2);
  const auto until = Clock::now() + std::chrono::seconds(60);
  int rounds_during_resync = 0;
  while (target->volume()->states()[2] != ReplicaState::kHealthy && Clock::now() < until) {
    WriteRound(q, h.get(), {}, kDirtySlots);
    ++rounds_during_resync;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_EQ(target->volume()->states()[2], ReplicaState::kHealthy) << "not resynced within 60 s";
  const auto progress = target->volume()->resync_progress()[2];
  EXPECT_FALSE(progress.full);
  EXPECT_TRUE(progress.result.ok()) << progress.result.ToString();
  EXPECT_GT(progress.copied_bytes, 0u);
  EXPECT_LE(progress.copied_bytes, kDirtyBytes) << "the resync copied more than the dirty set";
  WriteRound(q, h.get());
  Flush(q, h.get());
  VerifyAll(q, h.get());
  h->Stop();
  EXPECT_EQ(Stat(0, "rvol").replica_set().replicas(2).state(), v1::REPLICA_HEALTHY);
  ExpectIdenticalReplicas();
  std::printf("rounds during resync %d, copied %llu KiB of %llu MiB\n", rounds_during_resync,
              static_cast<unsigned long long>(progress.copied_bytes >> 10),
              static_cast<unsigned long long>(kVolumeBytes >> 20));
}

// A standby opens from the lookup it made while it waited, which may be old by then: another
// owner may have taken a newer epoch since, and a replica's id may be stale. The open still takes
// an epoch above every earlier one, on every replica, and the data is there.
TEST_F(ReplicatedTargetTest, AnOldLookupStillOpensAboveEveryEarlierEpochOnEveryReplica) {
  uint64_t first_epoch;
  {
    auto t = OpenTarget();
    ASSERT_TRUE(t);
    first_epoch = t->epoch();
    FakeQueue q(kDepth);
    std::unique_ptr<QueueHandler> h;
    ASSERT_TRUE(t->CreateQueueHandler(&q, &h).ok());
    WriteRound(q, h.get());
    Flush(q, h.get());
  }
  ReplicatedTargetOptions o = Options();
  o.looked_up = replicas_;
  o.looked_up_epoch = first_epoch;
  std::unique_ptr<ReplicatedTarget> t;
  Status s = ReplicatedTarget::Open(Config(), o, &t);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_GT(t->epoch(), first_epoch);
  t.reset();
  // A newer owner came and went after that lookup; and replica 2's id in it is stale.
  const uint64_t newer = OpenTarget()->epoch();
  o.looked_up[2].volume_id += 1000;
  s = ReplicatedTarget::Open(Config(), o, &t);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_GT(t->epoch(), newer);
  EXPECT_EQ(t->volume()->states(), std::vector<ReplicaState>(3, ReplicaState::kHealthy));
  for (int i = 0; i < 3; ++i) EXPECT_EQ(Stat(i, "rvol").epoch(), t->epoch()) << "replica " << i;
  FakeQueue q(kDepth);
  std::unique_ptr<QueueHandler> h;
  ASSERT_TRUE(t->CreateQueueHandler(&q, &h).ok());
  VerifyAll(q, h.get());
}

TEST_F(ReplicatedTargetTest, SecondOpenerFencesTheFirstDataOnlyTheWinners) {
  auto first = OpenTarget();
  ASSERT_TRUE(first);
  FakeQueue q1(kDepth), q2(kDepth);
  std::unique_ptr<QueueHandler> h1, h2;
  ASSERT_TRUE(first->CreateQueueHandler(&q1, &h1).ok());
  std::vector<uint8_t> a(4 * 4096, 0xaa), b(4 * 4096, 0xbb), back(4 * 4096);
  q1.Submit(h1.get(), {0, UBLK_IO_OP_WRITE, 0, 0, 4 * 4096, a.data()});
  ASSERT_TRUE(q1.Pump(h1.get(), std::chrono::seconds(30)));
  ASSERT_EQ(q1.result(0), 4 * 4096);

  auto second = OpenTarget();
  ASSERT_TRUE(second);
  EXPECT_GT(second->epoch(), first->epoch());
  ASSERT_TRUE(second->CreateQueueHandler(&q2, &h2).ok());
  q2.Submit(h2.get(), {0, UBLK_IO_OP_WRITE, 0, 0, 4 * 4096, b.data()});
  ASSERT_TRUE(q2.Pump(h2.get(), std::chrono::seconds(30)));
  ASSERT_EQ(q2.result(0), 4 * 4096);

  // The loser's writes (over the winner's block and to a fresh one), flush and read all fail.
  const auto t0 = Clock::now();
  q1.Submit(h1.get(), {0, UBLK_IO_OP_WRITE, 0, 0, 4 * 4096, a.data()});
  q1.Submit(h1.get(), {1, UBLK_IO_OP_WRITE, 0, 100 * 4096, 4 * 4096, a.data()});
  ASSERT_TRUE(q1.Pump(h1.get(), std::chrono::seconds(30)));
  EXPECT_EQ(q1.result(0), -EIO);
  EXPECT_EQ(q1.result(1), -EIO);
  // Fenced is final at once, not after the quorum wait.
  EXPECT_LT(Clock::now() - t0, std::chrono::seconds(5));
  q1.Submit(h1.get(), {2, UBLK_IO_OP_FLUSH, 0, 0, 0, nullptr});
  q1.Submit(h1.get(), {3, UBLK_IO_OP_READ, 0, 0, 4096, back.data()});
  q1.Submit(h1.get(), {4, UBLK_IO_OP_WRITE, 0, 200 * 4096, 4096, a.data()});
  ASSERT_TRUE(q1.Pump(h1.get(), std::chrono::seconds(30)));
  EXPECT_EQ(q1.result(2), -EIO);
  EXPECT_EQ(q1.result(3), -EIO);
  EXPECT_EQ(q1.result(4), -EIO);
  h1->Stop();
  // Only the winner's data, on every replica.
  q2.Submit(h2.get(), {0, UBLK_IO_OP_READ, 0, 0, 4 * 4096, back.data()});
  ASSERT_TRUE(q2.Pump(h2.get(), std::chrono::seconds(30)));
  ASSERT_EQ(q2.result(0), 4 * 4096);
  EXPECT_EQ(back, b);
  q2.Submit(h2.get(), {0, UBLK_IO_OP_READ, 0, 100 * 4096, 4 * 4096, back.data()});
  ASSERT_TRUE(q2.Pump(h2.get(), std::chrono::seconds(30)));
  EXPECT_EQ(back, std::vector<uint8_t>(4 * 4096, 0));
  Flush(q2, h2.get());
  h2->Stop();
  ExpectIdenticalReplicas();
  const auto c0 = Checksums(0, "rvol");
  EXPECT_EQ(c0[100], c0[5000]) << "the fenced write landed on block 100";
  EXPECT_EQ(c0[200], c0[5000]) << "the fenced write landed on block 200";
  EXPECT_NE(c0[0], c0[5000]);
}

TEST_F(ReplicatedTargetTest, WithoutAMajorityWritesFailAfterTheQuorumWaitThenResume) {
  DeviceConfig c = Config();
  c.retry_deadline_ms = 1500;  // the quorum wait
  std::unique_ptr<ReplicatedTarget> target;
  ASSERT_TRUE(ReplicatedTarget::Open(c, Options(), &target).ok());
  FakeQueue q(kDepth);
  std::unique_ptr<QueueHandler> h;
  ASSERT_TRUE(target->CreateQueueHandler(&q, &h).ok());
  WriteRound(q, h.get());
  Kill(2);
  WriteRound(q, h.get());  // degraded: replica 2 is marked out, nothing fails
  ASSERT_EQ(target->volume()->states()[2], ReplicaState::kOut);
  Kill(1);
  // Replica 1 cannot be marked out (that needs a majority): the write waits, then fails.
  std::vector<uint8_t> data(4096, 0x5a);
  const auto t0 = Clock::now();
  q.Submit(h.get(), {0, UBLK_IO_OP_WRITE, 0, 7 * 4096, 4096, data.data()});
  ASSERT_TRUE(q.Pump(h.get(), std::chrono::seconds(30)));
  const auto waited = Clock::now() - t0;
  EXPECT_EQ(q.result(0), -EIO);
  EXPECT_GE(waited, std::chrono::milliseconds(1400));
  EXPECT_LT(waited, std::chrono::seconds(10));
  // Replica 1 back (same data, our epoch still promised there): I/O resumes, nothing lost.
  Restart(1);
  bool resumed = false;
  for (int i = 0; i < 40 && !resumed; ++i) {
    q.Submit(h.get(), {0, UBLK_IO_OP_WRITE, 0, 7 * 4096, 4096, data.data()});
    ASSERT_TRUE(q.Pump(h.get(), std::chrono::seconds(30)));
    resumed = q.result(0) == 4096;
  }
  ASSERT_TRUE(resumed) << "writes did not resume with a majority back";
  WriteRound(q, h.get());
  Flush(q, h.get());
  VerifyAll(q, h.get());
  h->Stop();
}

TEST_F(ReplicatedTargetTest, OpensWithOneReplicaDownWhichStartsOutAndIsResynced) {
  Kill(1);
  const auto t0 = Clock::now();
  auto target = OpenTarget();
  ASSERT_TRUE(target);
  const auto open_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count();
  std::printf("open with one replica down: %lld ms\n", static_cast<long long>(open_ms));
  auto states = target->volume()->states();
  EXPECT_EQ(states[0], ReplicaState::kHealthy);
  EXPECT_EQ(states[1], ReplicaState::kOut);
  EXPECT_EQ(states[2], ReplicaState::kHealthy);
  FakeQueue q(kDepth);
  std::unique_ptr<QueueHandler> h;
  ASSERT_TRUE(target->CreateQueueHandler(&q, &h).ok());
  for (int round = 0; round < 3; ++round) WriteRound(q, h.get());
  Restart(1);
  const auto until = Clock::now() + std::chrono::seconds(60);
  while (target->volume()->states()[1] != ReplicaState::kHealthy && Clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_EQ(target->volume()->states()[1], ReplicaState::kHealthy) << "not resynced within 60 s";
  Flush(q, h.get());
  VerifyAll(q, h.get());
  h->Stop();
  ExpectIdenticalReplicas();
}

TEST_F(ReplicatedTargetTest, AStandbyWithAReplicaDownIsReadyAtOnceAndItsTakeoverOpens) {
  Kill(1);
  const auto t0 = Clock::now();
  std::unique_ptr<TargetConnections> warm;
  Status s = ConnectReplicatedTarget(Config(), &warm);
  const auto took = Clock::now() - t0;
  EXPECT_EQ(s.code(), Status::Code::kUnavailable) << "2 of 3 connected: " << s.ToString();
  ASSERT_TRUE(warm);
  // The dead replica refuses the connection: the standby does not wait it out (5 s).
  EXPECT_LT(took, std::chrono::seconds(2));
  std::unique_ptr<Target> t;
  s = CreateReplicatedTarget(Config(), &t, std::move(warm));
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(static_cast<ReplicatedTarget*>(t.get())->volume()->states(),
            (std::vector<ReplicaState>{ReplicaState::kHealthy, ReplicaState::kOut, ReplicaState::kHealthy}));
}

TEST_F(ReplicatedTargetTest, HungReplicaTimesOutIsMarkedOutNoRequestFailsResyncedLater) {
  // Replica 2 stops answering writes of our epoch (the server's hold hook) while the other two
  // answer: its stream's requests time out (rpc_timeout), the stream is dropped, replica 2 is
  // marked out on the majority, and every write still completes. Once it answers again the
  // prober resyncs it and the three are identical.
  const std::string hold = dirs_[2] + "/hold";
  servers_[2].reset();
  servers_[2] = std::make_unique<unbd::testing::ServerProcess>(
      dirs_[2], dirs_[2] + "/data", std::vector<std::string>{"--test-hold-writes-file", hold},
      targets_[2]);
  ASSERT_TRUE(servers_[2]->started());
  auto served = Serve();
  ASSERT_TRUE(served);
  auto& [target, q, h] = *served;
  for (int round = 0; round < 2; ++round) WriteRound(q, h.get());
  {
    std::ofstream f(hold);
    f << target->epoch() << "\n";
  }
  const auto t0 = Clock::now();
  WriteRound(q, h.get());  // every write completes OK although replica 2 never answers them
  const auto took = Clock::now() - t0;
  EXPECT_GE(took, Options().rpc_timeout) << "finished before the replica timed out";
  // Out, or already rebuilding: the prober may have found it answering (only writes are held)
  // and started a resync, whose copies are held too. Never healthy while the hold lasts.
  EXPECT_NE(target->volume()->states()[2], ReplicaState::kHealthy);
  EXPECT_EQ(target->volume()->states()[0], ReplicaState::kHealthy);
  const auto recorded = Stat(0, "rvol").replica_set().replicas(2).state();
  EXPECT_TRUE(recorded == v1::REPLICA_OUT || recorded == v1::REPLICA_REBUILDING) << recorded;
  for (int round = 0; round < 2; ++round) WriteRound(q, h.get());
  EXPECT_NE(target->volume()->states()[2], ReplicaState::kHealthy);
  std::filesystem::remove(hold);
  const auto until = Clock::now() + std::chrono::seconds(60);
  while (target->volume()->states()[2] != ReplicaState::kHealthy && Clock::now() < until) {
    WriteRound(q, h.get());
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_EQ(target->volume()->states()[2], ReplicaState::kHealthy) << "not resynced within 60 s";
  EXPECT_FALSE(target->volume()->resync_progress()[2].full);
  WriteRound(q, h.get());
  Flush(q, h.get());
  VerifyAll(q, h.get());
  h->Stop();
  ExpectIdenticalReplicas();
}

// kill -9 of a replica with acknowledged, unflushed writes and a restart on the same data
// directory and port before the owner sends anything else: the owner never sees it fail, but the
// replica lost those writes. Its new server generation gives it away: reads never return its
// stale data, it is marked out, resynced from the others, and every block is right everywhere.
TEST_F(ReplicatedTargetTest, ReplicaRestartedBetweenRequestsIsCaughtByItsGenerationAndResynced) {
  auto served = Serve();
  ASSERT_TRUE(served);
  auto& [target, q, h] = *served;
  for (int round = 0; round < 2; ++round) WriteRound(q, h.get());
  Flush(q, h.get());
  for (int round = 0; round < 6; ++round) WriteRound(q, h.get());  // no flush after these
  const size_t written = expect_.size();
  const auto t0 = Clock::now();
  Kill(2);
  Restart(2);
  const auto restart_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count();
  // The setup must really lose data on replica 2 (its WAL is synced on FLUSH only).
  const size_t lost = StaleBlocksOn(2, target->epoch());
  std::printf("restart took %lld ms; replica 2 lost %zu of %zu blocks\n",
              static_cast<long long>(restart_ms), lost, written);
  ASSERT_GT(lost, 0u) << "kill -9 lost nothing: the test proves nothing";
  ASSERT_EQ(target->volume()->states()[2], ReplicaState::kHealthy) << "the owner saw nothing yet";
  // Reads first: round robin would send a third of them to replica 2.
  VerifyAll(q, h.get());
  for (int round = 0; round < 3; ++round) WriteRound(q, h.get());
  VerifyAll(q, h.get());
  ASSERT_TRUE(WaitAllHealthy(*target, std::chrono::seconds(60))) << "not resynced within 60 s";
  const auto progress = target->volume()->resync_progress()[2];
  EXPECT_TRUE(progress.result.ok()) << progress.result.ToString();
  EXPECT_FALSE(progress.full);
  EXPECT_GT(progress.copied_bytes, 0u);
  WriteRound(q, h.get());
  Flush(q, h.get());
  VerifyAll(q, h.get());
  h->Stop();
  for (int i = 0; i < 3; ++i) EXPECT_EQ(StaleBlocksOn(i, target->epoch()), 0u) << "replica " << i;
  ExpectIdenticalReplicas();
  std::printf("resync copied %llu KiB\n",
              static_cast<unsigned long long>(progress.copied_bytes >> 10));
}

// All three replicas restart after kill -9 with unflushed writes: nobody holds them for sure, so
// the next FLUSH fails with -EIO (once: it must not vouch for them); I/O goes on, writes after the
// restart are kept, and the replicas converge.
TEST_F(ReplicatedTargetTest, AllReplicasRestartedTheNextFlushFailsOnce) {
  auto served = Serve();
  ASSERT_TRUE(served);
  auto& [target, q, h] = *served;
  WriteRound(q, h.get());
  Flush(q, h.get());
  for (int round = 0; round < 3; ++round) WriteRound(q, h.get());  // no flush after these
  for (int i = 0; i < 3; ++i) Kill(i);
  for (int i = 0; i < 3; ++i) Restart(i);
  size_t lost = 0;
  for (int i = 0; i < 3; ++i) lost += StaleBlocksOn(i, target->epoch());
  ASSERT_GT(lost, 0u) << "kill -9 lost nothing: the test proves nothing";
  // What the crash kept is unknown: only writes from here on are checked.
  expect_.clear();
  WriteRound(q, h.get());  // every write completes although every replica refuses it first
  q.Submit(h.get(), {0, UBLK_IO_OP_FLUSH, 0, 0, 0, nullptr});
  ASSERT_TRUE(q.Pump(h.get(), std::chrono::seconds(30)));
  EXPECT_EQ(q.result(0), -EIO) << "a FLUSH vouched for writes every replica may have lost";
  Flush(q, h.get());  // once
  WriteRound(q, h.get());
  Flush(q, h.get());
  VerifyAll(q, h.get());
  // The restarted replicas were suspect; one by one they are marked out and resynced.
  const auto until = Clock::now() + std::chrono::seconds(60);
  bool same = false;
  while (!same && Clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    if (!WaitAllHealthy(*target, std::chrono::seconds(1))) continue;
    same = Checksums(0, "rvol") == Checksums(1, "rvol") &&
           Checksums(1, "rvol") == Checksums(2, "rvol");
  }
  EXPECT_TRUE(same) << "replicas did not converge within 60 s";
  VerifyAll(q, h.get());
  h->Stop();
  for (int i = 0; i < 3; ++i) EXPECT_EQ(StaleBlocksOn(i, target->epoch()), 0u) << "replica " << i;
  ExpectIdenticalReplicas();
}

// Every replica stops answering for a while (streams reconnecting after a `recover` on a loaded
// machine, or servers stalled): reads wait for one to come back, as writes wait for a majority,
// instead of failing with EIO while the outage is shorter than the retry deadline.
TEST_F(ReplicatedTargetTest, ReadsWaitWhileEveryReplicaIsUnresponsive) {
  auto served = Serve();
  ASSERT_TRUE(served);
  auto& [target, q, h] = *served;
  WriteRound(q, h.get());
  Flush(q, h.get());
  constexpr uint16_t kReads = 8;
  std::vector<std::pair<uint64_t, uint64_t>> blocks(expect_.begin(), expect_.end());
  ASSERT_GE(blocks.size(), kReads);
  std::vector<std::vector<uint8_t>> back(kReads, std::vector<uint8_t>(4096));
  for (auto& s : servers_) s->Signal(SIGSTOP);
  const auto t0 = Clock::now();
  for (uint16_t tag = 0; tag < kReads; ++tag)
    q.Submit(h.get(), {tag, UBLK_IO_OP_READ, 0, blocks[tag].first * 4096, 4096, back[tag].data()});
  // Longer than rpc_timeout (1 s) on every replica, shorter than the retry deadline (10 s).
  std::thread resume([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(3000));
    for (auto& s : servers_) s->Signal(SIGCONT);
  });
  const bool done = q.Pump(h.get(), std::chrono::seconds(30));
  resume.join();
  ASSERT_TRUE(done);
  EXPECT_GE(Clock::now() - t0, std::chrono::milliseconds(2500)) << "the replicas did not stall";
  for (uint16_t tag = 0; tag < kReads; ++tag) {
    ASSERT_EQ(q.result(tag), 4096) << "read " << tag << " failed while the replicas were stalled";
    EXPECT_EQ(std::memcmp(back[tag].data(), Pattern(blocks[tag].first, blocks[tag].second).data(),
                          4096),
              0)
        << "block " << blocks[tag].first;
  }
  h->Stop();
}

// One of three replicas answers reads 5 ms late (unbd-server --test-read-delay-us). The queue's
// read choice measures it: after a warm-up, nearly all reads go to the two fast replicas (round
// robin would send a third of them to the slow one), counted by the servers' own request
// counters, and every read returns its block's latest data.
TEST_F(ReplicatedTargetTest, ReadsGoToTheFastReplicas) {
  // Slowed before any owner opened the volume: nothing to lose.
  Kill(1);
  Restart(1, false, {"--test-read-delay-us", "5000"});
  auto served = Serve();
  ASSERT_TRUE(served);
  auto& [target, q, h] = *served;
  WriteRound(q, h.get(), {}, 64);
  Flush(q, h.get());
  const std::vector<std::pair<uint64_t, uint64_t>> blocks(expect_.begin(), expect_.end());
  std::vector<std::vector<uint8_t>> back(kDepth, std::vector<uint8_t>(4096));
  size_t next = 0;
  // Rounds of kDepth reads in flight together, each of a written block.
  auto read_rounds = [&](int rounds) {
    for (int r = 0; r < rounds; ++r) {
      std::vector<std::pair<uint64_t, uint64_t>> sent;
      for (uint16_t tag = 0; tag < kDepth; ++tag) {
        sent.push_back(blocks[next++ % blocks.size()]);
        q.Submit(h.get(),
                 {tag, UBLK_IO_OP_READ, 0, sent.back().first * 4096, 4096, back[tag].data()});
      }
      ASSERT_TRUE(q.Pump(h.get(), std::chrono::seconds(30)));
      for (uint16_t tag = 0; tag < kDepth; ++tag) {
        ASSERT_EQ(q.result(tag), 4096) << "block " << sent[tag].first;
        ASSERT_EQ(
            std::memcmp(back[tag].data(), Pattern(sent[tag].first, sent[tag].second).data(), 4096),
            0)
            << "block " << sent[tag].first;
      }
    }
  };
  read_rounds(8);  // warm-up
  // A loaded machine may have cost a replica its stream and a resync, whose copies read too:
  // measure once every replica is healthy and nothing is being copied.
  ASSERT_TRUE(WaitAllHealthy(*target, std::chrono::seconds(60)));
  for (const auto& p : target->volume()->resync_progress()) ASSERT_FALSE(p.active);
  ExpectFewReadsFromSlowReplica("rvol", 1, 64u * kDepth, [&] { read_rounds(64); });  // 2048 reads
  h->Stop();
}

TEST_F(ReplicatedTargetTest, ClearErrorsForAnUnknownVolume) {
  DeviceConfig c = Config();
  c.volume = "nope";
  std::unique_ptr<ReplicatedTarget> t;
  Status s = ReplicatedTarget::Open(c, Options(), &t);
  EXPECT_EQ(s.code(), Status::Code::kNotFound) << s.ToString();
  EXPECT_NE(s.message().find("volume 'nope' not found on any replica"), std::string::npos)
      << s.ToString();
}

}  // namespace
}  // namespace unbd::frontend
