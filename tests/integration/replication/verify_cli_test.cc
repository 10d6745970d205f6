// `unbd volume verify`: identical replicas pass (exit 0); one block written behind the owner's
// back to one replica is found and named (exit 1); an unreachable replica is exit 2.
#include <sys/wait.h>

#include <cstdio>
#include <string>

#include <gtest/gtest.h>

#include "tests/integration/replication/cluster.h"

namespace unbd::replication::testing {
namespace {

struct CliResult {
  int exit_code = -1;
  std::string output;
};

CliResult RunUnbd(const std::string& args) {
  CliResult r;
  const std::string cmd = std::string(UNBD_BIN) + " " + args + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return r;
  char buf[512];
  while (fgets(buf, sizeof(buf), p) != nullptr) r.output += buf;
  const int st = pclose(p);
  r.exit_code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

class VerifyCliTest : public Cluster {};

TEST_F(VerifyCliTest, FindsTheOneBlockThatDiffers) {
  StartServers(3);
  SetUpVolume("v", 16 << 20);
  ReplicatedVolumeOptions o;
  o.client_id = "test/verify";
  std::unique_ptr<ReplicatedVolume> vol;
  ASSERT_TRUE(ReplicatedVolume::Open(replicas_, o, &vol).ok());
  for (uint64_t b = 0; b < 64; b += 3) ASSERT_TRUE(vol->Write(b * 4096, Pattern(b, 1)).ok());
  ASSERT_TRUE(vol->Flush().ok());

  const std::string reps = targets_[0] + "," + targets_[1] + "," + targets_[2];
  CliResult ok = RunUnbd("volume verify v --replicas " + reps);
  EXPECT_EQ(ok.exit_code, 0) << ok.output;
  EXPECT_NE(ok.output.find("4096 blocks identical on 3 replicas"), std::string::npos) << ok.output;

  // Block 1000 changes on replica 1 only, at the owner's epoch (as a write that reached one
  // replica before its owner died would).
  backend::IoClient io(targets_[1]);
  ASSERT_TRUE(io.Write(replicas_[1].volume_id, vol->epoch(), 1000 * 4096, Pattern(1000, 9)).ok());
  CliResult bad = RunUnbd("volume verify v --replicas " + reps);
  EXPECT_EQ(bad.exit_code, 1) << bad.output;
  EXPECT_NE(bad.output.find("1 of 4096 blocks differ between replicas (first: 1000)"),
            std::string::npos)
      << bad.output;
  CliResult json = RunUnbd("volume verify v --json --replicas " + reps);
  EXPECT_EQ(json.exit_code, 1) << json.output;
  EXPECT_NE(json.output.find("\"differing_blocks\": 1"), std::string::npos) << json.output;

  Kill(2);
  CliResult down = RunUnbd("volume verify v --replicas " + reps);
  EXPECT_EQ(down.exit_code, 2) << down.output;
  EXPECT_NE(down.output.find(targets_[2]), std::string::npos) << down.output;
}

}  // namespace
}  // namespace unbd::replication::testing
