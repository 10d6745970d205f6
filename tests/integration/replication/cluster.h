// Cluster: N real unbd-server processes on 127.0.0.1 for the replication integration tests, with
// restart on the same port (optionally with a wiped data directory or other flags) and the
// per-replica views the tests assert on: stored replica metadata, dirty-region sets, per-block
// checksums, reads served.
#pragma once

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "backend/admin_client.h"
#include "backend/store.h"
#include "replication/replica_rpc.h"
#include "replication/replicated_volume.h"
#include "tests/integration/backend/server_process.h"

namespace unbd::replication::testing {

using unbd::testing::ServerProcess;
using unbd::testing::TestDir;

// 4 KiB of data that names its block and write sequence.
inline std::string Pattern(uint64_t block, uint64_t seq) {
  std::string s(4096, '\0');
  for (size_t i = 0; i < s.size(); i += 8) {
    const uint64_t v = (block << 40) ^ (seq * 0x9e3779b97f4a7c15ull) ^ i ^ 1;
    std::memcpy(&s[i], &v, 8);
  }
  return s;
}

class Cluster : public ::testing::Test {
 protected:
  // Each server preallocates ~145 MB of WAL: keep the directories only when a test failed.
  void TearDown() override {
    servers_.clear();
    if (!HasFailure()) {
      for (const auto& d : dirs_) std::filesystem::remove_all(d);
    }
  }
  void StartServers(int n) {
    for (int i = 0; i < n; ++i) {
      dirs_.push_back(TestDir("s" + std::to_string(i)));
      servers_.push_back(std::make_unique<ServerProcess>(dirs_[i], dirs_[i] + "/data"));
      ASSERT_TRUE(servers_[i]->started());
      targets_.push_back(servers_[i]->target());
    }
  }
  void SetUpVolume(const std::string& name, uint64_t bytes) {
    volume_bytes_ = bytes;
    Status s = ReplicatedVolume::Create(targets_, name, bytes, &replicas_);
    ASSERT_TRUE(s.ok()) << s.ToString();
  }

  void Kill(int i) { EXPECT_EQ(servers_[i]->Kill(SIGKILL), 128 + SIGKILL); }
  // Restarts replica i on its old port; wipe: with an empty data directory; `extra` flags.
  void Restart(int i, bool wipe = false, const std::vector<std::string>& extra = {}) {
    servers_[i].reset();
    if (wipe) std::filesystem::remove_all(dirs_[i] + "/data");
    servers_[i] = std::make_unique<ServerProcess>(dirs_[i], dirs_[i] + "/data", extra, targets_[i]);
    ASSERT_TRUE(servers_[i]->started()) << servers_[i]->log();
  }

  // ResyncOut until every replica is healthy, as the owner's prober would (a restarted replica
  // may still be in its channel's reconnect backoff at the first probe).
  static Status ResyncUntilHealthy(ReplicatedVolume& vol,
                                   std::chrono::milliseconds within = std::chrono::seconds(15)) {
    const auto until = std::chrono::steady_clock::now() + within;
    Status s;
    do {
      s = vol.ResyncOut();
      if (s.ok()) return s;
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    } while (std::chrono::steady_clock::now() < until);
    return s;
  }

  // The volume as server i stores it (by name: a rebuilt copy has a new id).
  v1::Volume Stat(int i, const std::string& name) {
    v1::VolumeRef ref;
    ref.set_name(name);
    v1::Volume vol;
    // The server is up: wait for the connection. This process's channels to a server restarted
    // moments ago can still be in their reconnect backoff, where a call that does not wait fails
    // at once with the last attempt's error ("Connection refused"); and the old connection may
    // still look open and fail the first call ("Socket closed"): once more then.
    Status s;
    for (int attempt = 0; attempt < 2; ++attempt) {
      s = ReplicaRpc(targets_[i], std::chrono::seconds(10)).Stat(ref, &vol, /*wait_for_ready=*/true);
      if (s.code() != Status::Code::kUnavailable) break;
    }
    EXPECT_TRUE(s.ok()) << targets_[i] << ": " << s.ToString();
    return vol;
  }
  std::vector<uint64_t> Checksums(int i, const std::string& name) {
    const v1::Volume vol = Stat(i, name);
    std::vector<uint64_t> out, part;
    const uint64_t blocks = vol.size_bytes() / 4096;
    v1::VolumeRef ref;
    ref.set_id(vol.id());
    for (uint64_t b = 0; b < blocks; b += 4096) {
      Status s = backend::AdminClient(targets_[i]).Checksums(
          ref, b, static_cast<uint32_t>(std::min<uint64_t>(4096, blocks - b)), &part);
      EXPECT_TRUE(s.ok()) << s.ToString();
      out.insert(out.end(), part.begin(), part.end());
    }
    return out;
  }
  // READ requests server i has served for volume `name` (unbd_requests_total on its metrics
  // endpoint; unary and stream alike).
  uint64_t ReadsServed(int i, const std::string& name) {
    const std::string page = unbd::testing::HttpGet(servers_[i]->metrics_port());
    const std::string series =
        "unbd_requests_total{volume=\"" + std::to_string(Stat(i, name).id()) + "\",op=\"read\"} ";
    const size_t at = page.find("\n" + series);
    EXPECT_NE(at, std::string::npos) << "no " << series << "on server " << i;
    return at == std::string::npos ? 0 : std::stoull(page.substr(at + 1 + series.size()));
  }
  // Runs `reads` (which must issue at least `at_least` reads of volume `name`) and checks that
  // replica `slow` served under a tenth of them (the read choice avoids a slow replica).
  template <typename Reads>
  void ExpectFewReadsFromSlowReplica(const std::string& name, int slow, uint64_t at_least,
                                     Reads reads) {
    const int n = static_cast<int>(servers_.size());
    std::vector<uint64_t> served(n);
    for (int i = 0; i < n; ++i) served[i] = ReadsServed(i, name);
    reads();
    uint64_t total = 0;
    std::string line;
    for (int i = 0; i < n; ++i) {
      served[i] = ReadsServed(i, name) - served[i];
      total += served[i];
      line += " " + std::to_string(served[i]) + (i == slow ? " (slow)" : "");
    }
    std::printf("reads served:%s\n", line.c_str());
    EXPECT_GE(total, at_least);  // more if a read failed over to another replica
    EXPECT_LT(served[slow], total / 10) << "the slow replica served " << served[slow] << " of " << total;
  }
  std::vector<uint64_t> Regions(int i, const std::string& name, uint32_t set) {
    std::vector<uint64_t> out;
    Status s = ReplicaRpc(targets_[i], std::chrono::seconds(5))
                   .GetRegions(Stat(i, name).id(), set, &out, nullptr);
    EXPECT_TRUE(s.ok()) << s.ToString();
    return out;
  }

  std::vector<std::string> dirs_, targets_;
  std::vector<std::unique_ptr<ServerProcess>> servers_;
  std::vector<ReplicaAddr> replicas_;
  uint64_t volume_bytes_ = 0;
};

}  // namespace unbd::replication::testing
