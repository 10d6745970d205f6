#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "frontend/device_config.h"
#include "frontend/device_state.h"
#include "tests/unit/frontend/state_dir_test.h"

namespace unbd::frontend {
namespace {

DeviceConfig RemoteConfig() {
  DeviceConfig c;
  c.target = TargetType::kRemote;
  c.dev_id = 7;
  c.nr_queues = 4;
  c.queue_depth = 64;
  c.max_io_bytes = 1 << 20;
  c.logical_block_size = 4096;
  c.recovery = true;
  c.reissue = true;
  c.need_get_data = true;
  c.server = "10.0.0.1:7420";
  c.volume = "db-1";
  c.retry_deadline_ms = 1234;
  c.poll_us = 200;
  return c;
}

TEST_F(StateDirTest, RoundTripKeepsEveryField) {
  DeviceState s;
  s.dev_id = 7;
  s.daemon_pid = 4242;
  s.epoch = 99;
  s.recoveries = 3;
  s.config = RemoteConfig();
  ASSERT_TRUE(SaveDeviceState(s).ok());
  DeviceState back;
  ASSERT_TRUE(LoadDeviceState(7, &back).ok());
  EXPECT_EQ(ToJson(back), ToJson(s));
  EXPECT_EQ(back.daemon_pid, 4242);
  EXPECT_EQ(back.config.volume, "db-1");
  EXPECT_EQ(back.config.retry_deadline_ms, 1234u);
  EXPECT_TRUE(back.config.reissue);
  EXPECT_EQ(back.config.io_scheduler, "none");
  EXPECT_EQ(back.config.poll_us, 200u);  // RemoteConfig() sets it
  EXPECT_EQ(ListDeviceStates(), std::vector<int>{7});
  ASSERT_TRUE(RemoveDeviceState(7).ok());
  EXPECT_EQ(LoadDeviceState(7, &back).code(), Status::Code::kNotFound);
  EXPECT_TRUE(ListDeviceStates().empty());
}

TEST_F(StateDirTest, LoopConfigRoundTrip) {
  DeviceState s;
  s.dev_id = 2;
  s.config.target = TargetType::kLoop;
  s.config.file = "/var/lib/x.img";
  s.config.direct_io = false;
  ASSERT_TRUE(SaveDeviceState(s).ok());
  DeviceState back;
  ASSERT_TRUE(LoadDeviceState(2, &back).ok());
  EXPECT_EQ(back.config.target, TargetType::kLoop);
  EXPECT_EQ(back.config.file, "/var/lib/x.img");
  EXPECT_FALSE(back.config.direct_io);
}

TEST_F(StateDirTest, CorruptFileIsAClearError) {
  std::filesystem::create_directories(dir_);
  std::ofstream(dir_ / "5.json") << "{not json";
  DeviceState s;
  Status st = LoadDeviceState(5, &s);
  EXPECT_EQ(st.code(), Status::Code::kInvalidArgument);
  EXPECT_NE(st.message().find("5.json"), std::string::npos) << st.ToString();
}

TEST(DeviceConfigTest, ValidationNamesTheOption) {
  DeviceConfig c;
  EXPECT_TRUE(c.Validate().ok());
  c.nr_queues = 0;
  EXPECT_NE(c.Validate().message().find("-q"), std::string::npos);
  c = DeviceConfig();
  c.queue_depth = 5000;
  EXPECT_NE(c.Validate().message().find("-d"), std::string::npos);
  c = DeviceConfig();
  c.reissue = true;
  EXPECT_NE(c.Validate().message().find("--reissue needs --recovery"), std::string::npos);
  c = DeviceConfig();
  c.target = TargetType::kLoop;
  EXPECT_NE(c.Validate().message().find("-f FILE"), std::string::npos);
  c = RemoteConfig();
  EXPECT_TRUE(c.Validate().ok());
  c.server = "nohostport";
  EXPECT_NE(c.Validate().message().find("HOST:PORT"), std::string::npos);
  c = RemoteConfig();
  c.volume.clear();
  EXPECT_NE(c.Validate().message().find("--volume"), std::string::npos);
  c = DeviceConfig();
  c.logical_block_size = 1000;
  EXPECT_FALSE(c.Validate().ok());
  c = DeviceConfig();
  c.max_io_bytes = 5000;
  EXPECT_FALSE(c.Validate().ok());
  c = DeviceConfig();
  c.io_scheduler = "../../etc";
  EXPECT_NE(c.Validate().message().find("--io-scheduler"), std::string::npos);
  c.io_scheduler = "mq-deadline";
  EXPECT_TRUE(c.Validate().ok());
  c.poll_us = 20000;
  EXPECT_NE(c.Validate().message().find("--poll-us"), std::string::npos);
  TargetType t;
  EXPECT_NE(ParseTargetType("nbd", &t).message().find("unknown target type 'nbd'"), std::string::npos);
}

TEST(DeviceConfigTest, FromJsonRejectsInvalidConfig) {
  auto j = ToJson(RemoteConfig());
  j["nr_queues"] = 0;
  DeviceConfig c;
  EXPECT_FALSE(FromJson(j, &c).ok());
  j = ToJson(RemoteConfig());
  j.erase("remote");
  EXPECT_FALSE(FromJson(j, &c).ok());
}

}  // namespace
}  // namespace unbd::frontend
