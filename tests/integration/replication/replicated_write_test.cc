// ReplicatedVolume against three real unbd-server processes: kill -9 of one replica during
// continuous verified writes costs no client error and leaves the survivors byte-identical; with
// two of three killed, a write is never acknowledged on the minority, waits for the bounded time,
// and completes once one replica is back.
#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <map>
#include <random>
#include <thread>

#include "backend/admin_client.h"
#include "backend/store.h"
#include "replication/replicated_volume.h"
#include "tests/integration/backend/server_process.h"

namespace unbd::replication {
namespace {

using testing::ServerProcess;
using testing::TestDir;

constexpr uint64_t kBlocks = 2048;
constexpr uint64_t kVolumeBytes = kBlocks * 4096;

std::string Pattern(uint64_t block, uint64_t seq) {
  std::string s(4096, '\0');
  for (size_t i = 0; i < s.size(); i += 8) {
    const uint64_t v = (block << 40) ^ (seq * 0x9e3779b97f4a7c15ull) ^ i;
    std::memcpy(&s[i], &v, 8);
  }
  return s;
}

class ReplicatedWriteTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (int i = 0; i < 3; ++i) {
      dirs_.push_back(TestDir("s" + std::to_string(i)));
      servers_.push_back(std::make_unique<ServerProcess>(dirs_[i], dirs_[i] + "/data"));
      ASSERT_TRUE(servers_[i]->started());
      targets_.push_back(servers_[i]->target());
    }
    Status s = ReplicatedVolume::Create(targets_, "rvol", kVolumeBytes, &replicas_);
    ASSERT_TRUE(s.ok()) << s.ToString();
  }

  // Restarts replica i on its old port with its old data directory.
  void Restart(int i) {
    servers_[i] = std::make_unique<ServerProcess>(dirs_[i], dirs_[i] + "/data",
                                                  std::vector<std::string>{}, targets_[i]);
    ASSERT_TRUE(servers_[i]->started()) << servers_[i]->log();
  }

  std::vector<uint64_t> Checksums(int i) {
    std::vector<uint64_t> out;
    v1::VolumeRef ref;
    ref.set_id(replicas_[i].volume_id);
    Status s = backend::AdminClient(targets_[i]).Checksums(ref, 0, kBlocks, &out);
    EXPECT_TRUE(s.ok()) << s.ToString();
    return out;
  }

  void TearDown() override {
    servers_.clear();
    if (!HasFailure()) {
      for (const auto& d : dirs_) std::filesystem::remove_all(d);
    }
  }

  std::vector<std::string> dirs_, targets_;
  std::vector<std::unique_ptr<ServerProcess>> servers_;
  std::vector<ReplicaAddr> replicas_;
};

TEST_F(ReplicatedWriteTest, CreateRefusesADuplicateAndUndoesPartialCreates) {
  std::vector<ReplicaAddr> out;
  // "rvol" exists everywhere already.
  EXPECT_EQ(ReplicatedVolume::Create(targets_, "rvol", kVolumeBytes, &out).code(),
            Status::Code::kAlreadyExists);
  // Only on the last server: the first two creations are undone.
  ASSERT_TRUE(backend::AdminClient(targets_[2]).Create("other", 4096, nullptr).ok());
  EXPECT_FALSE(ReplicatedVolume::Create(targets_, "other", 4096, &out).ok());
  for (int i = 0; i < 2; ++i) {
    std::vector<v1::Volume> vols;
    ASSERT_TRUE(backend::AdminClient(targets_[i]).List(&vols).ok());
    ASSERT_EQ(vols.size(), 1u) << targets_[i];
    EXPECT_EQ(vols[0].name(), "rvol");
  }
}

TEST_F(ReplicatedWriteTest, KillOneOfThreeDuringVerifiedWrites) {
  std::unique_ptr<ReplicatedVolume> vol;
  Status s = ReplicatedVolume::Open(replicas_, {.client_id = "fe-1"}, &vol);
  ASSERT_TRUE(s.ok()) << s.ToString();

  // Two writers on disjoint halves (no overlapping writes in flight, as the block layer
  // guarantees); each verifies a random earlier block of its own after every write.
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> ops{0}, errors{0};
  std::map<uint64_t, std::string> model[2];
  std::string first_error;
  std::mutex err_mu;
  auto fail = [&](const std::string& m) {
    errors++;
    std::lock_guard l(err_mu);
    if (first_error.empty()) first_error = m;
  };
  auto writer = [&](int w) {
    std::mt19937_64 rng(w + 1);
    uint64_t seq = 0;
    while (!stop) {
      const uint64_t block = w * (kBlocks / 2) + rng() % (kBlocks / 2);
      std::string data = Pattern(block, ++seq);
      Status ws = vol->Write(block * 4096, data);
      if (!ws.ok()) {
        fail("write block " + std::to_string(block) + ": " + ws.ToString());
        continue;
      }
      model[w][block] = std::move(data);
      auto it = model[w].begin();
      std::advance(it, rng() % model[w].size());
      std::string got;
      Status rs = vol->Read(it->first * 4096, 4096, &got);
      if (!rs.ok()) {
        fail("read block " + std::to_string(it->first) + ": " + rs.ToString());
      } else if (got != it->second) {
        fail("block " + std::to_string(it->first) + " read back different data");
      }
      ops++;
    }
  };
  std::thread t0(writer, 0), t1(writer, 1);
  auto wait_ops = [&](uint64_t n) {
    for (int i = 0; i < 3000 && ops < n; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
  };
  wait_ops(300);
  EXPECT_EQ(servers_[1]->Kill(SIGKILL), 128 + SIGKILL);
  const uint64_t at_kill = ops;
  wait_ops(at_kill + 300);
  stop = true;
  t0.join();
  t1.join();
  EXPECT_EQ(errors, 0u) << first_error;
  EXPECT_GE(ops, at_kill + 300) << "writes stalled after the kill";
  EXPECT_EQ(vol->states(), (std::vector<ReplicaState>{ReplicaState::kHealthy, ReplicaState::kOut,
                                                      ReplicaState::kHealthy}));
  ASSERT_TRUE(vol->Flush().ok());

  // The survivors are byte-identical and hold exactly the acknowledged data.
  std::vector<uint64_t> want(kBlocks, backend::BlockChecksum(std::string(4096, '\0')));
  for (auto& m : model) {
    for (auto& [block, data] : m) want[block] = backend::BlockChecksum(data);
  }
  EXPECT_EQ(Checksums(0), want);
  EXPECT_EQ(Checksums(2), want);
  std::printf("verified ops: %llu (%llu before the kill)\n",
              static_cast<unsigned long long>(ops.load()),
              static_cast<unsigned long long>(at_kill));
}

// A write every replica refuses as malformed (past the end) is the caller's error: it fails at
// once with the replicas' reason, and no replica is marked out for it.
TEST_F(ReplicatedWriteTest, AWriteEveryReplicaRefusesFailsAtOnceAndMarksNobodyOut) {
  std::unique_ptr<ReplicatedVolume> vol;
  ASSERT_TRUE(ReplicatedVolume::Open(replicas_,
                                     {.client_id = "fe-bad",
                                      .rpc_timeout = std::chrono::milliseconds(2000),
                                      .quorum_wait = std::chrono::seconds(20)},
                                     &vol)
                  .ok());
  const auto t0 = std::chrono::steady_clock::now();
  Status s = vol->Write(kVolumeBytes, Pattern(kBlocks, 1));
  const auto waited = std::chrono::steady_clock::now() - t0;
  EXPECT_EQ(s.code(), Status::Code::kOutOfRange) << s.ToString();
  EXPECT_LT(waited, std::chrono::seconds(5)) << "waited for a majority that was there all along";
  EXPECT_EQ(vol->states(), std::vector<ReplicaState>(3, ReplicaState::kHealthy));
  ASSERT_TRUE(vol->Write(0, Pattern(0, 1)).ok());
}

TEST_F(ReplicatedWriteTest, MinorityNeverAcknowledgesThenResumes) {
  std::unique_ptr<ReplicatedVolume> vol;
  ASSERT_TRUE(ReplicatedVolume::Open(replicas_,
                                     {.client_id = "fe-2",
                                      .rpc_timeout = std::chrono::milliseconds(500),
                                      .quorum_wait = std::chrono::milliseconds(800)},
                                     &vol)
                  .ok());
  ASSERT_TRUE(vol->Write(0, Pattern(0, 1), /*fua=*/true).ok());  // durable across the kills
  servers_[1]->Kill(SIGKILL);
  servers_[2]->Kill(SIGKILL);

  // Only replica 0 answers: the write is not acknowledged, after the bounded wait.
  const auto t0 = std::chrono::steady_clock::now();
  Status s = vol->Write(4096, Pattern(1, 1));
  const auto waited = std::chrono::steady_clock::now() - t0;
  EXPECT_EQ(s.code(), Status::Code::kUnavailable) << s.ToString();
  EXPECT_NE(s.message().find("not acknowledged"), std::string::npos) << s.ToString();
  EXPECT_GE(waited, std::chrono::milliseconds(800));
  // Nobody was marked out: that needs a majority.
  EXPECT_EQ(vol->states(), std::vector<ReplicaState>(3, ReplicaState::kHealthy));

  // A write waiting for the majority completes once replica 1 is back; replica 2 goes out.
  vol->set_quorum_wait(std::chrono::seconds(60));
  std::atomic<bool> done{false};
  Status ws;
  std::thread w([&] {
    ws = vol->Write(2 * 4096, Pattern(2, 1));
    done = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  EXPECT_FALSE(done) << "acknowledged with only one of three replicas: " << ws.ToString();
  Restart(1);
  w.join();
  ASSERT_TRUE(ws.ok()) << ws.ToString();
  EXPECT_EQ(vol->states(), (std::vector<ReplicaState>{ReplicaState::kHealthy,
                                                      ReplicaState::kHealthy, ReplicaState::kOut}));
  ASSERT_TRUE(vol->Flush().ok());
  for (int i = 0; i < 2; ++i) {
    std::string got;
    ASSERT_TRUE(backend::IoClient(targets_[i])
                    .Read(replicas_[i].volume_id, vol->epoch(), 2 * 4096, 4096, &got)
                    .ok());
    EXPECT_EQ(got, Pattern(2, 1)) << "replica " << i;
    ASSERT_TRUE(backend::IoClient(targets_[i])
                    .Read(replicas_[i].volume_id, vol->epoch(), 0, 4096, &got)
                    .ok());
    EXPECT_EQ(got, Pattern(0, 1)) << "replica " << i;
  }
}

}  // namespace
}  // namespace unbd::replication
