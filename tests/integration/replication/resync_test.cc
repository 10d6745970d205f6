// Degraded operation, reconciliation and resync against three real unbd-server processes:
// kill -9 of one replica under continuous verified writes (no client error, out on a majority,
// incremental resync bounded by the dirty set, byte-identical replicas), a wiped replica rebuilt
// in full, two of three down (writes wait, then complete, nothing lost), an owner killed
// mid-write (the next open reconciles), two owners racing (one wins, only its data); the
// servers' replication metrics (replica state, resync progress, dirty sets) follow a rebuild; a
// replica that restarts after kill -9 while no owner holds the volume is caught by its recorded
// server generation (never a reconciliation source; rebuilt in full if it was rebuilding).
#include <algorithm>
#include <atomic>
#include <cmath>
#include <map>
#include <mutex>
#include <random>
#include <sstream>
#include <thread>

#include "tests/integration/replication/cluster.h"

namespace unbd::replication {
namespace {

using testing::Cluster;
using testing::Pattern;

constexpr uint64_t kVolumeBytes = 64 << 20;
constexpr uint64_t kHotBlocks = 1024;  // writes go to the first 4 MiB: a small dirty set

class ResyncTest : public Cluster {
 protected:
  void SetUp() override {
    StartServers(3);
    SetUpVolume("rvol", kVolumeBytes);
  }
  ReplicatedVolumeOptions Opts(const std::string& client) {
    return {.client_id = client,
            .rpc_timeout = std::chrono::milliseconds(1000),
            .quorum_wait = std::chrono::seconds(30)};
  }
  // Every replica's checksums equal `want` (blocks not in it read as zeros).
  void ExpectAllEqual(const std::map<uint64_t, std::string>& want) {
    std::vector<uint64_t> expect(kVolumeBytes / 4096, backend::BlockChecksum(std::string(4096, 0)));
    for (const auto& [block, data] : want) expect[block] = backend::BlockChecksum(data);
    for (int i = 0; i < 3; ++i) {
      const auto got = Checksums(i, "rvol");
      ASSERT_EQ(got.size(), expect.size());
      size_t diff = 0;
      for (size_t b = 0; b < got.size(); ++b) diff += got[b] != expect[b];
      EXPECT_EQ(diff, 0u) << "replica " << i << ": " << diff << " blocks differ";
    }
  }
};

// The value of the one series of `metric` in a Prometheus text page whose labels include every
// one of `labels` (e.g. `replica="2"`); NaN if there is none, and a test failure if several.
double Gauge(const std::string& page, const std::string& metric,
             const std::vector<std::string>& labels) {
  std::istringstream in(page);
  std::string line;
  double value = NAN;
  int found = 0;
  while (std::getline(in, line)) {
    if (line.rfind(metric + "{", 0) != 0) continue;
    const size_t close = line.find("} ");
    if (close == std::string::npos) continue;
    const std::string l = line.substr(0, close);
    bool all = true;
    for (const auto& want : labels) all &= l.find(want) != std::string::npos;
    if (!all) continue;
    ++found;
    value = std::stod(line.substr(close + 2));
  }
  EXPECT_LE(found, 1) << metric << ": several series match";
  return value;
}

// Writers on disjoint block ranges that verify a random earlier block of their own after every
// write; `model` is every acknowledged write.
class VerifiedWriters {
 public:
  VerifiedWriters(ReplicatedVolume* vol, int n) : vol_(vol) {
    for (int w = 0; w < n; ++w) threads_.emplace_back([this, w, n] { Run(w, n); });
  }
  ~VerifiedWriters() { Stop(); }
  void Stop() {
    stop_ = true;
    for (auto& t : threads_) {
      if (t.joinable()) t.join();
    }
  }
  void WaitOps(uint64_t n) {
    for (int i = 0; i < 6000 && ops_ < n; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  uint64_t ops() const { return ops_; }
  uint64_t errors() const { return errors_; }
  std::string first_error() {
    std::lock_guard l(mu_);
    return first_error_;
  }
  std::map<uint64_t, std::string> model() {
    std::lock_guard l(mu_);
    return model_;
  }

 private:
  void Run(int w, int n) {
    std::mt19937_64 rng(w + 7);
    uint64_t seq = 0;
    std::vector<uint64_t> mine;
    const uint64_t span = kHotBlocks / n;
    while (!stop_) {
      const uint64_t block = w * span + rng() % span;
      std::string data = Pattern(block, ++seq);
      Status s = vol_->Write(block * 4096, data);
      if (!s.ok()) {
        Fail("write block " + std::to_string(block) + ": " + s.ToString());
        continue;
      }
      std::string expect;
      uint64_t check;
      {
        std::lock_guard l(mu_);
        if (!model_.count(block)) mine.push_back(block);
        model_[block] = std::move(data);
        check = mine[rng() % mine.size()];
        expect = model_[check];
      }
      std::string got;
      s = vol_->Read(check * 4096, 4096, &got);
      if (!s.ok()) {
        Fail("read block " + std::to_string(check) + ": " + s.ToString());
      } else if (got != expect) {
        Fail("block " + std::to_string(check) + " read back different data");
      }
      ops_++;
    }
  }
  void Fail(const std::string& m) {
    errors_++;
    std::lock_guard l(mu_);
    if (first_error_.empty()) first_error_ = m;
  }

  ReplicatedVolume* vol_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> ops_{0}, errors_{0};
  std::mutex mu_;
  std::string first_error_;
  std::map<uint64_t, std::string> model_;
  std::vector<std::thread> threads_;
};

// A copy (reconciliation, resync) at an epoch a newer owner has fenced reports "fenced", not a
// replica failure: the open that copies then fails for good instead of retrying in a new round,
// which would fence the owner that won.
TEST_F(ResyncTest, CopyAtAFencedEpochSaysFenced) {
  std::unique_ptr<ReplicatedVolume> old_owner, new_owner;
  ASSERT_TRUE(ReplicatedVolume::Open(replicas_, Opts("old"), &old_owner).ok());
  ASSERT_TRUE(old_owner->Write(0, std::string(8192, 'o')).ok());
  ASSERT_TRUE(ReplicatedVolume::Open(replicas_, Opts("new"), &new_owner).ok());
  ReplicaRpc src(replicas_[0].target, std::chrono::milliseconds(2000));
  ReplicaRpc dst(replicas_[1].target, std::chrono::milliseconds(2000));
  uint64_t copied = 0;
  const Status s = CopyRange({&src, replicas_[0].volume_id, 0}, {&dst, replicas_[1].volume_id, 0},
                             old_owner->epoch(), 0, 8192, 1 << 20, 0, &copied);
  EXPECT_TRUE(IsFenced(s)) << s.ToString();
  EXPECT_EQ(copied, 0u);
}

TEST_F(ResyncTest, KillOneThenIncrementalResyncCopiesOnlyTheDirtyRegions) {
  std::unique_ptr<ReplicatedVolume> vol;
  ASSERT_TRUE(ReplicatedVolume::Open(replicas_, Opts("fe"), &vol).ok());
  const uint64_t rb = vol->region_bytes();
  VerifiedWriters writers(vol.get(), 2);
  writers.WaitOps(200);
  Kill(1);
  const uint64_t at_kill = writers.ops();
  writers.WaitOps(at_kill + 300);
  EXPECT_EQ(writers.errors(), 0u) << writers.first_error();
  EXPECT_EQ(vol->states()[1], ReplicaState::kOut);
  // Out on a majority: the survivors' stored metadata says so.
  for (int i : {0, 2}) EXPECT_EQ(Stat(i, "rvol").replica_set().replicas(1).state(), v1::REPLICA_OUT);
  const auto dirty = Regions(0, "rvol", PeerSet(1));
  EXPECT_FALSE(dirty.empty());
  EXPECT_EQ(dirty, Regions(2, "rvol", PeerSet(1)));

  Restart(1);
  // The resync runs while the writers go on.
  Status s = ResyncUntilHealthy(*vol);
  ASSERT_TRUE(s.ok()) << s.ToString();
  const uint64_t after_resync = writers.ops();
  writers.WaitOps(after_resync + 200);
  writers.Stop();
  EXPECT_EQ(writers.errors(), 0u) << writers.first_error();
  EXPECT_EQ(vol->states(), std::vector<ReplicaState>(3, ReplicaState::kHealthy));

  const ResyncProgress p = vol->resync_progress()[1];
  EXPECT_FALSE(p.full);
  EXPECT_TRUE(p.result.ok()) << p.result.ToString();
  EXPECT_EQ(p.done_bytes, p.total_bytes);
  // Bounded by the dirty set (what the writers touched: the first 4 MiB, plus regions still
  // unstable on replica 1), far below the 64 MiB volume.
  EXPECT_LE(p.copied_bytes, p.regions * rb);
  EXPECT_LE(p.regions, kHotBlocks * 4096 / rb + 1);
  EXPECT_LT(p.copied_bytes, kVolumeBytes / 8);
  std::printf("dirty regions %zu, resync copied %llu bytes of a %llu-byte volume\n", dirty.size(),
              static_cast<unsigned long long>(p.copied_bytes),
              static_cast<unsigned long long>(kVolumeBytes));
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(Stat(i, "rvol").replica_set().replicas(1).state(), v1::REPLICA_HEALTHY);
    EXPECT_TRUE(Regions(i, "rvol", PeerSet(1)).empty()) << "replica " << i;
  }
  ASSERT_TRUE(vol->Flush().ok());
  ExpectAllEqual(writers.model());
}

TEST_F(ResyncTest, WipedReplicaIsRebuiltInFull) {
  std::unique_ptr<ReplicatedVolume> vol;
  ASSERT_TRUE(ReplicatedVolume::Open(replicas_, Opts("fe"), &vol).ok());
  std::map<uint64_t, std::string> model;
  for (uint64_t b = 0; b < kVolumeBytes / 4096; b += 97) {
    model[b] = Pattern(b, 1);
    ASSERT_TRUE(vol->Write(b * 4096, model[b]).ok());
  }
  ASSERT_TRUE(vol->Flush().ok());
  const std::string old_uuid = Stat(2, "rvol").replica_uuid();
  Kill(2);
  Restart(2, /*wipe=*/true);
  model[5] = Pattern(5, 2);
  ASSERT_TRUE(vol->Write(5 * 4096, model[5]).ok());  // marks 2 out (it has no such volume)
  EXPECT_EQ(vol->states()[2], ReplicaState::kOut);

  Status s = ResyncUntilHealthy(*vol);
  ASSERT_TRUE(s.ok()) << s.ToString();
  const ResyncProgress p = vol->resync_progress()[2];
  EXPECT_TRUE(p.full);
  EXPECT_EQ(p.total_bytes, kVolumeBytes);
  EXPECT_EQ(p.done_bytes, kVolumeBytes);
  const v1::Volume rebuilt = Stat(2, "rvol");
  EXPECT_NE(rebuilt.replica_uuid(), old_uuid);
  for (int i = 0; i < 3; ++i) {
    const v1::ReplicaSetMeta m = Stat(i, "rvol").replica_set();
    EXPECT_EQ(m.replicas(2).state(), v1::REPLICA_HEALTHY) << "replica " << i;
    EXPECT_EQ(m.replicas(2).uuid(), rebuilt.replica_uuid());
    EXPECT_EQ(m.replicas(2).volume_id(), rebuilt.id());
  }
  ExpectAllEqual(model);
  // Reads may use the rebuilt replica now: every block read back is right.
  for (const auto& [b, data] : model) {
    std::string got;
    ASSERT_TRUE(vol->Read(b * 4096, 4096, &got).ok());
    ASSERT_EQ(got, data) << "block " << b;
  }
}

TEST_F(ResyncTest, BackgroundRebuildShowsProgressAndEtaWhileWritesGoOn) {
  // A throttled full rebuild (64 MiB at 16 MiB/s) started by the owner's own prober: progress
  // and an ETA are visible to the owner and, checkpointed, in every replica's metadata.
  std::unique_ptr<ReplicatedVolume> vol;
  auto o = Opts("fe");
  o.resync_rate_bytes_per_s = 16 << 20;
  o.resync_probe_interval = std::chrono::milliseconds(200);
  ASSERT_TRUE(ReplicatedVolume::Open(replicas_, o, &vol).ok());
  Kill(2);
  Restart(2, /*wipe=*/true);
  VerifiedWriters writers(vol.get(), 1);
  ResyncProgress mid;
  v1::ReplicaInfo mid_meta;
  for (int i = 0; i < 400; ++i) {
    // Checkpoints land every 32 regions or second: wait for the first one.
    mid = vol->resync_progress()[2];
    mid_meta = Stat(0, "rvol").replica_set().replicas(2);
    if (mid.active && mid_meta.resync_done_bytes() > 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(25));
  }
  ASSERT_TRUE(mid.active) << "no rebuild started";
  // The same progress on server 0's metrics endpoint, from the metadata stored there; it moves.
  const std::vector<std::string> r2 = {"name=\"rvol\"", "replica=\"2\"",
                                       "address=\"" + targets_[2] + "\""};
  auto with = [&](std::vector<std::string> l, const std::string& more) {
    l.push_back(more);
    return l;
  };
  std::string page = unbd::testing::HttpGet(servers_[0]->metrics_port());
  EXPECT_EQ(Gauge(page, "unbd_replica_state", with(r2, "state=\"rebuilding\"")), 1);
  EXPECT_EQ(Gauge(page, "unbd_replica_state", with(r2, "state=\"healthy\"")), 0);
  EXPECT_EQ(
      Gauge(page, "unbd_replica_state", {"replica=\"0\"", "name=\"rvol\"", "state=\"healthy\""}),
      1);
  const double total1 = Gauge(page, "unbd_resync_total_bytes", r2);
  const double done1 = Gauge(page, "unbd_resync_done_bytes", r2);
  const double left1 = Gauge(page, "unbd_resync_remaining_bytes", r2);
  EXPECT_EQ(total1, static_cast<double>(kVolumeBytes));
  EXPECT_GT(done1, 0);
  EXPECT_EQ(left1, total1 - done1);
  EXPECT_GT(Gauge(page, "unbd_resync_rate_bytes_per_second", r2), 0);
  EXPECT_GT(Gauge(page, "unbd_resync_remaining_seconds", r2), 0);
  EXPECT_FALSE(
      std::isnan(Gauge(page, "unbd_dirty_regions", {"name=\"rvol\"", "set=\"unstable\""})));
  double done2 = done1, left2 = left1;
  for (int i = 0; i < 100 && done2 == done1; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    page = unbd::testing::HttpGet(servers_[0]->metrics_port());
    done2 = Gauge(page, "unbd_resync_done_bytes", r2);
    left2 = Gauge(page, "unbd_resync_remaining_bytes", r2);
  }
  EXPECT_GT(done2, done1) << "the resync progress metric did not move";
  EXPECT_LT(left2, left1);
  std::printf("metrics mid-rebuild: done %.0f then %.0f of %.0f bytes\n", done1, done2, total1);
  EXPECT_TRUE(mid.full);
  EXPECT_EQ(mid.total_bytes, kVolumeBytes);
  EXPECT_LT(mid.done_bytes, mid.total_bytes);
  EXPECT_GT(mid.bytes_per_s, 0);
  EXPECT_GT(mid.eta_seconds, 0);
  EXPECT_EQ(vol->states()[2], ReplicaState::kRebuilding);
  EXPECT_EQ(mid_meta.state(), v1::REPLICA_REBUILDING);
  EXPECT_TRUE(mid_meta.full_rebuild());
  EXPECT_EQ(mid_meta.resync_total_bytes(), kVolumeBytes);
  EXPECT_GT(mid_meta.resync_done_bytes(), 0u);
  std::printf("mid-rebuild: %llu of %llu bytes, %.1f MB/s, ETA %.1f s\n",
              static_cast<unsigned long long>(mid.done_bytes),
              static_cast<unsigned long long>(mid.total_bytes), mid.bytes_per_s / 1e6,
              mid.eta_seconds);
  for (int i = 0; i < 600 && vol->states()[2] != ReplicaState::kHealthy; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(vol->states()[2], ReplicaState::kHealthy);
  writers.Stop();
  EXPECT_EQ(writers.errors(), 0u) << writers.first_error();
  EXPECT_GT(writers.ops(), 0u);
  ASSERT_TRUE(vol->Flush().ok());
  ExpectAllEqual(writers.model());
  // Healthy again on every server's endpoint; nothing remains, nothing is dirty for it.
  for (int i = 0; i < 3; ++i) {
    page = unbd::testing::HttpGet(servers_[i]->metrics_port());
    EXPECT_EQ(Gauge(page, "unbd_replica_state", with(r2, "state=\"healthy\"")), 1) << i;
    EXPECT_EQ(Gauge(page, "unbd_replica_state", with(r2, "state=\"rebuilding\"")), 0) << i;
    EXPECT_EQ(Gauge(page, "unbd_resync_remaining_bytes", r2), 0) << i;
    EXPECT_EQ(Gauge(page, "unbd_resync_remaining_seconds", r2), 0) << i;
    EXPECT_EQ(Gauge(page, "unbd_resync_done_bytes", r2), static_cast<double>(kVolumeBytes)) << i;
    const double peer2 =
        Gauge(page, "unbd_dirty_regions", {"name=\"rvol\"", "set=\"peer\"", "replica=\"2\""});
    if (i < 2) {
      EXPECT_EQ(peer2, 0) << i;
    } else {
      EXPECT_TRUE(std::isnan(peer2)) << "replica 2 keeps no PeerSet for itself";
    }
  }
}

TEST_F(ResyncTest, TwoOfThreeDownWritesWaitThenCompleteNothingLost) {
  std::unique_ptr<ReplicatedVolume> vol;
  auto o = Opts("fe");
  o.quorum_wait = std::chrono::milliseconds(800);
  ASSERT_TRUE(ReplicatedVolume::Open(replicas_, o, &vol).ok());
  std::map<uint64_t, std::string> model;
  for (uint64_t b = 0; b < 16; ++b) {
    model[b] = Pattern(b, 1);
    ASSERT_TRUE(vol->Write(b * 4096, model[b]).ok());
  }
  // Not flushed: replicas 1 and 2 lose these with their processes (the server syncs its WAL on
  // FLUSH/FUA only); replica 0 keeps them and the owner must copy them back.
  Kill(1);
  Kill(2);
  Status s = vol->Write(100 * 4096, Pattern(100, 1));
  EXPECT_EQ(s.code(), Status::Code::kUnavailable) << s.ToString();
  EXPECT_NE(s.message().find("not acknowledged"), std::string::npos) << s.ToString();
  EXPECT_EQ(vol->states(), std::vector<ReplicaState>(3, ReplicaState::kHealthy));

  vol->set_quorum_wait(std::chrono::seconds(60));
  std::atomic<bool> done{false};
  Status ws;
  std::thread w([&] {
    ws = vol->Write(101 * 4096, Pattern(101, 1));
    done = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  EXPECT_FALSE(done) << "acknowledged with one of three replicas: " << ws.ToString();
  Restart(1);
  w.join();
  ASSERT_TRUE(ws.ok()) << ws.ToString();
  model[101] = Pattern(101, 1);
  EXPECT_EQ(vol->states()[2], ReplicaState::kOut);
  // Replica 1 came back without being marked out (no majority) and lost the unflushed writes:
  // it is suspect, reads avoid it, and once replica 2 is resynced it is marked out and resynced.
  for (uint64_t b = 0; b < 16; ++b) {
    std::string got;
    ASSERT_TRUE(vol->Read(b * 4096, 4096, &got).ok());
    ASSERT_EQ(got, model[b]) << "block " << b << " read from the replica that lost it";
  }
  Restart(2);
  Status rs = ResyncUntilHealthy(*vol);
  ASSERT_TRUE(rs.ok()) << rs.ToString();
  EXPECT_EQ(vol->states(), std::vector<ReplicaState>(3, ReplicaState::kHealthy));
  EXPECT_GE(vol->resync_progress()[1].regions, 1u) << "the suspect replica was never resynced";
  ASSERT_TRUE(vol->Flush().ok());
  {
    // Converged within this incarnation already (block 100 aside: unacknowledged, reconciled
    // by the next open below).
    std::map<uint64_t, std::string> acked = model;
    const auto c0 = Checksums(0, "rvol");
    for (int i = 1; i < 3; ++i) {
      const auto ci = Checksums(i, "rvol");
      for (const auto& [b, data] : acked) {
        EXPECT_EQ(ci[b], backend::BlockChecksum(data)) << "replica " << i << " block " << b;
      }
    }
    EXPECT_EQ(c0[0], backend::BlockChecksum(model[0]));
  }
  vol.reset();
  // A new owner's open reconciles: the unacknowledged write to block 100 (on replica 0 only)
  // stays pinned unstable across the flush above, so the replicas agree on it afterwards.
  ASSERT_TRUE(ReplicatedVolume::Open(replicas_, Opts("fe-2"), &vol).ok());
  EXPECT_GE(vol->open_stats().reconciled_regions, 1u);
  std::string b100;
  ASSERT_TRUE(vol->Read(100 * 4096, 4096, &b100).ok());
  if (b100 != std::string(4096, 0)) model[100] = b100;
  // Every acknowledged write is there on every replica, and they agree on the rest.
  ExpectAllEqual(model);
}

TEST_F(ResyncTest, OwnerKilledMidWriteNextOpenReconciles) {
  std::unique_ptr<ReplicatedVolume> vol;
  ASSERT_TRUE(ReplicatedVolume::Open(replicas_, Opts("fe-1"), &vol).ok());
  std::map<uint64_t, std::string> model;
  for (uint64_t b = 0; b < 8; ++b) {
    model[b] = Pattern(b, 1);
    ASSERT_TRUE(vol->Write(b * 4096, model[b]).ok());
  }
  ASSERT_TRUE(vol->Flush().ok());
  // The owner dies with a write to block 3000 sent to replica 0 only (never acknowledged).
  ASSERT_TRUE(backend::IoClient(targets_[0])
                  .Write(replicas_[0].volume_id, vol->epoch(), 3000 * 4096, Pattern(3000, 9))
                  .ok());
  const uint64_t old_epoch = vol->epoch();
  vol.reset();
  EXPECT_NE(Checksums(0, "rvol"), Checksums(1, "rvol")) << "the setup must leave replicas apart";

  ASSERT_TRUE(ReplicatedVolume::Open(replicas_, Opts("fe-2"), &vol).ok());
  EXPECT_GT(vol->epoch(), old_epoch);
  EXPECT_GE(vol->open_stats().reconciled_regions, 1u);
  // Only the block that differed moved, to each of the two replicas without it, not its region.
  EXPECT_EQ(vol->open_stats().reconciled_bytes, 2u * 4096);
  const auto c0 = Checksums(0, "rvol");
  EXPECT_EQ(c0, Checksums(1, "rvol"));
  EXPECT_EQ(c0, Checksums(2, "rvol"));
  for (const auto& [b, data] : model) {
    std::string got;
    ASSERT_TRUE(vol->Read(b * 4096, 4096, &got).ok());
    EXPECT_EQ(got, data) << "block " << b;
  }
  // The unstable sets were cleared once reconciled.
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(Regions(i, "rvol", kUnstableSet).empty());
}

// The same crash with the reconciliation in the background (what a device's open does): the open
// returns before the unstable regions are made equal, and I/O goes on meanwhile. Replica 0, the
// source, holds an unacknowledged write in 48 regions that the others lack. Reads issued at once,
// last region first (the background pass goes first to last), must each wait for their region:
// a read served before would come from whichever replica answers fastest, and the replicas would
// then agree on something else than it returned. A write to a pending region must survive the
// pass. In the end every replica is identical and the unstable sets are empty.
TEST_F(ResyncTest, BackgroundReconciliationReadsWaitForTheirRegionWritesSurvive) {
  std::unique_ptr<ReplicatedVolume> vol;
  ASSERT_TRUE(ReplicatedVolume::Open(replicas_, Opts("fe-1"), &vol).ok());
  const uint64_t rb = vol->region_bytes() / 4096;  // blocks per region
  constexpr uint64_t kRegions = 48;
  ASSERT_TRUE(vol->Write(0, Pattern(0, 1)).ok());
  ASSERT_TRUE(vol->Flush().ok());
  backend::IoClient io0(targets_[0]);
  for (uint64_t r = 1; r <= kRegions; ++r) {
    // Acknowledged on every replica but never flushed (the region is unstable everywhere)...
    ASSERT_TRUE(vol->Write(r * rb * 4096, Pattern(r * rb, 1)).ok());
    // ...and then a write the owner sent to replica 0 only before it died.
    ASSERT_TRUE(io0.Write(replicas_[0].volume_id, vol->epoch(), (r * rb + 1) * 4096, Pattern(r * rb + 1, 9)).ok());
  }
  vol.reset();
  ASSERT_NE(Checksums(0, "rvol"), Checksums(1, "rvol")) << "the setup must leave replicas apart";

  ReplicatedVolumeOptions opts = Opts("fe-2");
  opts.reconcile_in_background = true;
  ASSERT_TRUE(ReplicatedVolume::Open(replicas_, opts, &vol).ok());
  EXPECT_EQ(vol->open_stats().reconciled_regions, 0u);
  EXPECT_EQ(vol->open_stats().deferred_regions, kRegions);
  EXPECT_GT(vol->reconcile_left(), 0u) << "the open reconciled before returning";
  // A write to the last region while it is still pending: its blocks are equal everywhere after.
  const uint64_t wb = kRegions * rb + 2;
  ASSERT_TRUE(vol->Write(wb * 4096, Pattern(wb, 5)).ok());
  std::map<uint64_t, std::string> seen;
  for (uint64_t r = kRegions; r >= 1; --r) {
    for (uint64_t b : {r * rb, r * rb + 1}) {
      ASSERT_TRUE(vol->Read(b * 4096, 4096, &seen[b]).ok()) << "block " << b;
    }
  }
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (std::chrono::steady_clock::now() < until &&
         (vol->reconcile_left() > 0 || Regions(0, "rvol", kUnstableSet).size() > 1))
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ASSERT_EQ(vol->reconcile_left(), 0u);
  std::map<uint64_t, std::string> want;
  want[0] = Pattern(0, 1);
  want[wb] = Pattern(wb, 5);
  for (uint64_t r = 1; r <= kRegions; ++r) {
    want[r * rb] = Pattern(r * rb, 1);
    want[r * rb + 1] = Pattern(r * rb + 1, 9);  // the source's version
  }
  for (const auto& [b, data] : seen) {
    EXPECT_EQ(data, want[b]) << "block " << b << ": a read returned what the replicas no longer hold";
  }
  ExpectAllEqual(want);
  // Every deferred region left the unstable sets except the one written since the open, which
  // goes with the next flush.
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(Regions(i, "rvol", kUnstableSet), std::vector<uint64_t>{kRegions}) << "replica " << i;
  }
  ASSERT_TRUE(vol->Flush().ok());
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(Regions(i, "rvol", kUnstableSet).empty()) << "replica " << i;
}

// The background pass copied every region, then a replica dies before the pass's flush: that
// replica is marked out like one that fails a FLUSH (its PeerSet on the survivors gets every
// deferred region, since it may have lost the copies), the survivors are flushed and their
// unstable sets cleared. Restarted, the replica is resynced from those marks, and every replica
// ends identical.
TEST_F(ResyncTest, ReplicaLostBeforeTheBackgroundPassFlushesIsMarkedOutAndResynced) {
  std::unique_ptr<ReplicatedVolume> vol;
  ASSERT_TRUE(ReplicatedVolume::Open(replicas_, Opts("fe-1"), &vol).ok());
  const uint64_t rb = vol->region_bytes() / 4096;  // blocks per region
  constexpr uint64_t kRegions = 6;
  std::map<uint64_t, std::string> want;
  backend::IoClient io0(targets_[0]);
  for (uint64_t r = 1; r <= kRegions; ++r) {
    want[r * rb] = Pattern(r * rb, 1);
    ASSERT_TRUE(vol->Write(r * rb * 4096, want[r * rb]).ok());  // acknowledged, never flushed
    want[r * rb + 1] = Pattern(r * rb + 1, 9);                   // on replica 0 only
    ASSERT_TRUE(io0.Write(replicas_[0].volume_id, vol->epoch(), (r * rb + 1) * 4096, want[r * rb + 1]).ok());
  }
  vol.reset();

  ReplicatedVolumeOptions opts = Opts("fe-2");
  opts.reconcile_in_background = true;
  std::atomic<bool> killed{false};
  opts.before_reconcile_flush = [&] {
    Kill(2);
    killed = true;
  };
  ASSERT_TRUE(ReplicatedVolume::Open(replicas_, opts, &vol).ok());
  EXPECT_EQ(vol->open_stats().deferred_regions, kRegions);
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (std::chrono::steady_clock::now() < until &&
         (!killed || vol->states()[2] != ReplicaState::kOut || !Regions(0, "rvol", kUnstableSet).empty()))
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ASSERT_TRUE(killed.load());
  ASSERT_EQ(vol->states()[2], ReplicaState::kOut);
  for (int i : {0, 1}) {
    EXPECT_EQ(Stat(i, "rvol").replica_set().replicas(2).state(), v1::REPLICA_OUT) << "replica " << i;
    EXPECT_TRUE(Regions(i, "rvol", kUnstableSet).empty()) << "replica " << i << ": not cleared";
    const auto peer = Regions(i, "rvol", PeerSet(2));
    for (uint64_t r = 1; r <= kRegions; ++r)
      EXPECT_TRUE(std::binary_search(peer.begin(), peer.end(), r)) << "replica " << i << " region " << r;
  }
  for (const auto& [b, data] : want) {
    std::string got;
    ASSERT_TRUE(vol->Read(b * 4096, 4096, &got).ok());
    EXPECT_EQ(got, data) << "block " << b;
  }
  Restart(2);
  Status s = ResyncUntilHealthy(*vol);
  ASSERT_TRUE(s.ok()) << s.ToString();
  ExpectAllEqual(want);
}

// Owner A acknowledges writes it never flushes and dies (no flush, no close). Before the next
// owner opens, replica 0 — the first healthy replica, the reconciliation's default source — is
// kill -9'd and restarted on its data directory: it lost those writes, and no owner held the
// volume to notice. Its server generation differs from the one A recorded in the replica
// metadata, so owner B reconciles the unstable regions from a replica that kept them: every
// acknowledged write reads back, and every replica holds it.
TEST_F(ResyncTest, ReplicaRestartedWhileNoOwnerHeldTheVolumeIsNoReconcileSource) {
  std::unique_ptr<ReplicatedVolume> vol;
  ASSERT_TRUE(ReplicatedVolume::Open(replicas_, Opts("owner-a"), &vol).ok());
  const uint64_t rb = vol->region_bytes() / 4096;  // blocks per region
  std::map<uint64_t, std::string> model;
  for (uint64_t b = 0; b < 8; ++b) {
    model[b] = Pattern(b, 1);
    ASSERT_TRUE(vol->Write(b * 4096, model[b]).ok());
  }
  ASSERT_TRUE(vol->Flush().ok());
  // Acknowledged, never flushed: X, over eight regions (the first one overwrites flushed data).
  for (uint64_t r = 0; r < 8; ++r) {
    for (uint64_t k = 0; k < 8; ++k) {
      const uint64_t b = r * rb + k;
      model[b] = Pattern(b, 2);
      ASSERT_TRUE(vol->Write(b * 4096, model[b]).ok());
    }
  }
  vol.reset();  // owner A dies
  Kill(0);
  Restart(0);
  size_t lost = 0;
  {
    const v1::Volume v0 = Stat(0, "rvol");
    backend::IoClient io(targets_[0]);
    for (const auto& [b, data] : model) {
      std::string got;
      ASSERT_TRUE(io.Read(v0.id(), v0.epoch(), b * 4096, 4096, &got).ok());
      lost += got != data;
    }
  }
  std::printf("replica 0 lost %zu of %zu acknowledged blocks\n", lost, model.size());
  ASSERT_GT(lost, 0u) << "kill -9 lost nothing: the test proves nothing";

  ASSERT_TRUE(ReplicatedVolume::Open(replicas_, Opts("owner-b"), &vol).ok());
  EXPECT_EQ(vol->open_stats().restarted, 1u);
  EXPECT_GE(vol->open_stats().reconciled_regions, 8u);
  // Exactly what replica 0 lost came back to it; the replica that kept everything got nothing.
  EXPECT_EQ(vol->open_stats().reconciled_bytes, lost * 4096);
  EXPECT_EQ(vol->states(), std::vector<ReplicaState>(3, ReplicaState::kHealthy));
  size_t stale = 0;
  for (const auto& [b, data] : model) {
    std::string got;
    ASSERT_TRUE(vol->Read(b * 4096, 4096, &got).ok());
    stale += got != data;
  }
  EXPECT_EQ(stale, 0u) << "blocks that lost an acknowledged write";
  ExpectAllEqual(model);
  // Reconciled: the new generation is recorded, so the owner after B trusts replica 0 again.
  const uint64_t gen0 = Stat(0, "rvol").replica_set().replicas(0).server_generation();
  EXPECT_NE(gen0, 0u);
  vol.reset();
  ASSERT_TRUE(ReplicatedVolume::Open(replicas_, Opts("owner-c"), &vol).ok());
  EXPECT_EQ(vol->open_stats().restarted, 0u);
  EXPECT_EQ(Stat(1, "rvol").replica_set().replicas(0).server_generation(), gen0);
}

// Owner A resyncs replica 2 (throttled to one region every 4 s) and, while it rebuilds, writes X
// to a region the resync never copies: X goes to replica 2 too, not waited for, and a FLUSH on
// the healthy replicas clears it from their unstable sets. Then replica 2 is kill -9'd and A
// dies. Replica 2 lost X with its unflushed WAL, and no dirty set names X any more. It restarts
// before owner B opens; its generation differs from the one A's resync recorded, so B rebuilds it
// in full (an incremental resync would leave it without X).
TEST_F(ResyncTest, RebuildingReplicaRestartedWhileNoOwnerHeldItIsRebuiltInFull) {
  std::unique_ptr<ReplicatedVolume> vol;
  auto o = Opts("owner-a");
  o.resync_rate_bytes_per_s = 256 << 10;
  o.resync_probe_interval = std::chrono::milliseconds(100);
  ASSERT_TRUE(ReplicatedVolume::Open(replicas_, o, &vol).ok());
  const uint64_t rb = vol->region_bytes() / 4096;
  std::map<uint64_t, std::string> model;
  auto write = [&](uint64_t b, uint64_t seq) {
    model[b] = Pattern(b, seq);
    Status s = vol->Write(b * 4096, model[b]);
    ASSERT_TRUE(s.ok()) << "block " << b << ": " << s.ToString();
  };
  for (uint64_t b = 0; b < 8; ++b) write(b, 1);
  ASSERT_TRUE(vol->Flush().ok());
  Kill(2);
  for (uint64_t r = 1; r < 5; ++r) write(r * rb, 2);  // marks 2 out; PeerSet(2) = regions 1..4
  ASSERT_TRUE(vol->Flush().ok());
  ASSERT_EQ(vol->states()[2], ReplicaState::kOut);
  Restart(2);
  ResyncProgress p;
  for (int i = 0; i < 400; ++i) {
    p = vol->resync_progress()[2];
    if (p.active && p.done_bytes > 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_TRUE(p.active && p.done_bytes > 0) << "the resync did not start";
  ASSERT_EQ(vol->states()[2], ReplicaState::kRebuilding);
  const uint64_t x = 40 * rb + 3;  // region 40: in no dirty set
  write(x, 3);
  ASSERT_TRUE(vol->Flush().ok());
  Kill(2);
  vol.reset();  // owner A dies (its resync fails on the dead replica first)
  Restart(2);
  {
    const v1::Volume v2 = Stat(2, "rvol");
    EXPECT_NE(v2.replica_set().replicas(2).state(), v1::REPLICA_HEALTHY);
    EXPECT_FALSE(v2.replica_set().replicas(2).full_rebuild());
    std::string got;
    ASSERT_TRUE(
        backend::IoClient(targets_[2]).Read(v2.id(), v2.epoch(), x * 4096, 4096, &got).ok());
    ASSERT_NE(got, model[x])
        << "replica 2 kept X (a checkpoint synced it): the test proves nothing";
    for (int i = 0; i < 2; ++i) {
      const auto peer = Regions(i, "rvol", PeerSet(2));
      ASSERT_EQ(std::count(peer.begin(), peer.end(), 40u), 0) << "replica " << i;
    }
  }

  ASSERT_TRUE(ReplicatedVolume::Open(replicas_, Opts("owner-b"), &vol).ok());
  EXPECT_EQ(vol->open_stats().restarted, 1u);
  Status s = ResyncUntilHealthy(*vol, std::chrono::seconds(60));
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_TRUE(vol->resync_progress()[2].full);
  ExpectAllEqual(model);
}

TEST_F(ResyncTest, FlushClearsTheUnstableRegions) {
  std::unique_ptr<ReplicatedVolume> vol;
  ASSERT_TRUE(ReplicatedVolume::Open(replicas_, Opts("fe"), &vol).ok());
  const uint64_t rb = vol->region_bytes();
  ASSERT_TRUE(vol->Write(0, Pattern(0, 1)).ok());
  ASSERT_TRUE(vol->Write(3 * rb, Pattern(3 * rb / 4096, 1)).ok());
  EXPECT_EQ(Regions(1, "rvol", kUnstableSet), (std::vector<uint64_t>{0, 3}));
  ASSERT_TRUE(vol->Flush().ok());
  for (int i = 0; i < 3; ++i) {
    EXPECT_TRUE(Regions(i, "rvol", kUnstableSet).empty()) << "replica " << i;
  }
}

// The flush-candidate rule through the hooks the streaming target uses, with its writes and
// flushes on different queues (lanes): a flush covers only the regions whose last write started
// before it and had ended by then. A region with a write running when the flush started stays
// unstable even when that write ends before the flush does, and so does a region written after
// the flush started; the next flush clears both.
TEST_F(ResyncTest, FlushClearsOnlyTheRegionsItCovered) {
  std::unique_ptr<ReplicatedVolume> vol;
  ASSERT_TRUE(ReplicatedVolume::Open(replicas_, Opts("fe"), &vol).ok());
  const uint64_t rb = vol->region_bytes();
  for (uint64_t r : {0, 1, 2}) ASSERT_TRUE(vol->Write(r * rb, Pattern(r * rb / 4096, 1)).ok());
  EXPECT_EQ(Regions(0, "rvol", kUnstableSet), (std::vector<uint64_t>{0, 1, 2}));

  auto begin = [&](FanOutOp op, uint64_t offset, size_t queue, FanOutTicket* t) {
    Status failed;
    ASSERT_EQ(vol->BeginFanOut(op, offset, op == FanOutOp::kFlush ? 0 : 4096, false, true, t,
                               &failed, queue),
              FanOutStart::kStarted)
        << failed.ToString();
  };
  FanOutTicket running, flush, later;
  begin(FanOutOp::kWrite, 1 * rb + 8192, 1, &running);  // region 1, running at the flush
  begin(FanOutOp::kFlush, 0, 2, &flush);
  EXPECT_EQ(flush.flush_candidates, (std::vector<uint64_t>{0, 2}));
  begin(FanOutOp::kWrite, 2 * rb + 8192, 3, &later);  // region 2, started after the flush
  EXPECT_GT(later.seq, flush.seq);
  EXPECT_LT(running.seq, flush.seq);
  ASSERT_TRUE(vol->EndFanOut(later, Status::Ok()).ok());
  ASSERT_TRUE(vol->EndFanOut(running, Status::Ok()).ok());  // ends before the flush does
  ASSERT_TRUE(vol->EndFanOut(flush, Status::Ok()).ok());
  vol->ClearAfterFlush(flush);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(Regions(i, "rvol", kUnstableSet), (std::vector<uint64_t>{1, 2}))
        << "replica " << i;
  }

  // A write that failed (not acknowledged) keeps its region unstable: pinned until the next open.
  FanOutTicket failed_write;
  begin(FanOutOp::kWrite, 5 * rb, 4, &failed_write);
  ASSERT_FALSE(vol->EndFanOut(failed_write, Status::Unavailable("test")).ok());
  ASSERT_TRUE(vol->Write(6 * rb, Pattern(6 * rb / 4096, 1)).ok());
  ASSERT_TRUE(vol->Write(5 * rb + 4096, Pattern(5 * rb / 4096 + 1, 1)).ok());
  ASSERT_TRUE(vol->Flush().ok());
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(Regions(i, "rvol", kUnstableSet), (std::vector<uint64_t>{5})) << "replica " << i;
  }
}

// The resync's switch to rebuilding is a barrier: a write that started while the replica was
// out (so not sent to it, its regions marked for it) must end before the dirty set is read, and
// every write that starts after the switch goes to the replica, whatever queue it runs on.
TEST_F(ResyncTest, ResyncWaitsForTheWritesThatMissedTheReplica) {
  std::unique_ptr<ReplicatedVolume> vol;
  ASSERT_TRUE(ReplicatedVolume::Open(replicas_, Opts("fe"), &vol).ok());
  Kill(2);
  ASSERT_TRUE(vol->Write(0, Pattern(0, 1)).ok());
  ASSERT_EQ(vol->states()[2], ReplicaState::kOut);
  Restart(2);

  auto begin = [&](uint64_t offset, size_t queue, FanOutTicket* t) {
    Status failed;
    ASSERT_EQ(vol->BeginFanOut(FanOutOp::kWrite, offset, 4096, false, true, t, &failed, queue),
              FanOutStart::kStarted)
        << failed.ToString();
  };
  // Regions the resync does not copy (nothing marked them for it), so that only the barrier,
  // not a region lock, can hold it up.
  const uint64_t rb = vol->region_bytes();
  FanOutTicket before;
  begin(5 * rb, 5, &before);
  EXPECT_EQ(before.out_mask, 1u << 2);
  EXPECT_EQ(before.targets(), 3u);
  std::atomic<bool> done{false};
  Status resync;
  std::thread t([&] {
    resync = ResyncUntilHealthy(*vol);
    done = true;
  });
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(15);
  while (vol->states()[2] != ReplicaState::kRebuilding && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  ASSERT_EQ(vol->states()[2], ReplicaState::kRebuilding);
  FanOutTicket after;
  begin(6 * rb, 6, &after);
  EXPECT_GT(after.seq, before.seq);
  EXPECT_EQ(after.out_mask, 0u);
  EXPECT_EQ(after.rebuild_mask, 1u << 2);
  ASSERT_TRUE(vol->EndFanOut(after, Status::Ok()).ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_FALSE(done) << "the resync went on while a write that missed the replica was running";
  ASSERT_TRUE(vol->EndFanOut(before, Status::Ok()).ok());
  t.join();
  EXPECT_TRUE(resync.ok()) << resync.ToString();
  EXPECT_EQ(vol->states(), std::vector<ReplicaState>(3, ReplicaState::kHealthy));
}

TEST_F(ResyncTest, RacingOwnersOneWinsDataOnlyTheWinners) {
  for (int round = 0; round < 5; ++round) {
    std::unique_ptr<ReplicatedVolume> a, b;
    Status sa, sb;
    std::atomic<int> ready{0};
    auto open = [&](const std::string& id, std::unique_ptr<ReplicatedVolume>* out, Status* s) {
      ready++;
      while (ready < 2) {
      }
      *s = ReplicatedVolume::Open(replicas_, Opts(id), out);
    };
    std::thread ta(open, "owner-a", &a, &sa), tb(open, "owner-b", &b, &sb);
    ta.join();
    tb.join();
    ASSERT_TRUE(sa.ok() || sb.ok()) << sa.ToString() << " / " << sb.ToString();
    const uint64_t block = 10 + round;
    Status wa = a ? a->Write(block * 4096, std::string(4096, 'a')) : sa;
    Status wb = b ? b->Write(block * 4096, std::string(4096, 'b')) : sb;
    ASSERT_EQ(wa.ok() + wb.ok(), 1) << "round " << round << ": a: " << wa.ToString()
                                    << " b: " << wb.ToString();
    const Status& lost = wa.ok() ? wb : wa;
    EXPECT_EQ(lost.code(), Status::Code::kFailedPrecondition) << lost.ToString();
    ReplicatedVolume* winner = wa.ok() ? a.get() : b.get();
    ASSERT_TRUE(winner->Flush().ok());
    const std::string want(4096, wa.ok() ? 'a' : 'b');
    for (int i = 0; i < 3; ++i) {
      std::string got;
      ASSERT_TRUE(backend::IoClient(targets_[i])
                      .Read(replicas_[i].volume_id, winner->epoch(), block * 4096, 4096, &got)
                      .ok());
      EXPECT_EQ(got, want) << "replica " << i << " round " << round;
    }
    // The loser cannot shrink the winner's healthy set either.
    ReplicatedVolume* loser = wa.ok() ? b.get() : a.get();
    if (loser) {
      EXPECT_FALSE(loser->Write(0, std::string(4096, 'x')).ok());
    }
    EXPECT_EQ(winner->meta().replicas_size(), 3);
    for (int i = 0; i < 3; ++i)
      EXPECT_EQ(Stat(i, "rvol").replica_set().replicas(i).state(), v1::REPLICA_HEALTHY);
  }
}

}  // namespace
}  // namespace unbd::replication
