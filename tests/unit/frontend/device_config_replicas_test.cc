// A replicated remote device's configuration: --replicas validation and its place in the state
// file, so `unbd recover` re-opens the same replica set.
#include <stdlib.h>
#include <unistd.h>

#include <filesystem>

#include <gtest/gtest.h>

#include "frontend/device_config.h"
#include "frontend/device_state.h"

namespace unbd::frontend {
namespace {

DeviceConfig Replicated() {
  DeviceConfig c;
  c.target = TargetType::kRemote;
  c.dev_id = 3;
  c.logical_block_size = 4096;
  c.recovery = true;
  c.replicas = {"10.0.0.1:7420", "10.0.0.2:7420", "10.0.0.3:7420"};
  c.volume = "db-1";
  return c;
}

void ExpectInvalid(const DeviceConfig& c, const std::string& needle) {
  Status s = c.Validate();
  EXPECT_EQ(s.code(), Status::Code::kInvalidArgument) << s.ToString();
  EXPECT_NE(s.message().find(needle), std::string::npos) << s.ToString();
}

TEST(ReplicasConfigTest, ValidationNamesTheProblem) {
  EXPECT_TRUE(Replicated().Validate().ok());
  DeviceConfig c = Replicated();
  c.server = "10.0.0.9:7420";
  ExpectInvalid(c, "not both");
  c = Replicated();
  c.replicas.push_back("10.0.0.1:7420");
  ExpectInvalid(c, "'10.0.0.1:7420' is listed twice");
  c = Replicated();
  c.replicas[1] = "10.0.0.2";
  ExpectInvalid(c, "entry '10.0.0.2': expected HOST:PORT");
  c = Replicated();
  for (int i = 4; i <= 6; ++i) c.replicas.push_back("10.0.0." + std::to_string(i) + ":1");
  ExpectInvalid(c, "at most 5 replicas");
  c = Replicated();
  c.replicas.clear();
  ExpectInvalid(c, "--server HOST:PORT or --replicas");
  c = Replicated();
  c.target = TargetType::kLoop;
  c.file = "/tmp/x";
  c.volume.clear();
  ExpectInvalid(c, "--replicas");
}

TEST(ReplicasConfigTest, StateFileKeepsTheReplicaSet) {
  const auto dir = std::filesystem::temp_directory_path() / ("unbd-repl-state-" + std::to_string(getpid()));
  std::filesystem::remove_all(dir);
  setenv("UNBD_RUN_DIR", dir.c_str(), 1);
  DeviceState s;
  s.dev_id = 3;
  s.daemon_pid = 4242;
  s.epoch = 133930;
  s.config = Replicated();
  ASSERT_TRUE(SaveDeviceState(s).ok());
  DeviceState back;
  ASSERT_TRUE(LoadDeviceState(3, &back).ok());
  EXPECT_EQ(back.config.replicas, Replicated().replicas);
  EXPECT_TRUE(back.config.server.empty());
  EXPECT_EQ(ToJson(back.config), ToJson(s.config));
  // A single-server config has no replicas key at all (older state files stay readable).
  DeviceConfig single = Replicated();
  single.replicas.clear();
  single.server = "10.0.0.1:7420";
  EXPECT_FALSE(ToJson(single)["remote"].contains("replicas"));
  DeviceConfig parsed;
  ASSERT_TRUE(FromJson(ToJson(single), &parsed).ok());
  EXPECT_TRUE(parsed.replicas.empty());
  std::filesystem::remove_all(dir);
  unsetenv("UNBD_RUN_DIR");
}

}  // namespace
}  // namespace unbd::frontend
