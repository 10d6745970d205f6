// RocksInfoLog: RocksDB's LOG must never take the server down, whatever the disk does.
#include "backend/rocksdb_info_log.h"

#include <gtest/gtest.h>
#include <sys/mount.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace unbd::backend {
namespace {

class RocksInfoLogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("unbd-infolog-" + std::to_string(getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override {
    if (mounted_) umount2(dir_.c_str(), MNT_DETACH);
    std::filesystem::remove_all(dir_);
  }
  std::string Read(const std::string& name) {
    std::ifstream f(dir_ + "/" + name);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
  }
  // Logs through rocksdb::Log as RocksDB does.
  static void Line(const std::shared_ptr<RocksInfoLog>& log, const std::string& text) {
    rocksdb::Log(rocksdb::InfoLogLevel::INFO_LEVEL, log, "%s", text.c_str());
  }

  std::string dir_;
  bool mounted_ = false;
};

TEST_F(RocksInfoLogTest, LinesInRocksDbFormatAppendedAcrossOpens) {
  {
    std::shared_ptr<RocksInfoLog> log;
    ASSERT_TRUE(RocksInfoLog::Open(dir_, 0, &log).ok());
    Line(log, "first run");
  }
  std::shared_ptr<RocksInfoLog> log;
  ASSERT_TRUE(RocksInfoLog::Open(dir_, 0, &log).ok());
  Line(log, "second run");
  const std::string text = Read("LOG");
  EXPECT_NE(text.find(" first run\n"), std::string::npos) << text;
  EXPECT_NE(text.find(" second run\n"), std::string::npos) << text;
  // "YYYY/MM/DD-HH:MM:SS.uuuuuu TID message"
  EXPECT_EQ(text[4], '/');
  EXPECT_EQ(text[10], '-');
  EXPECT_EQ(text[19], '.');
}

TEST_F(RocksInfoLogTest, LongMessagesAreWrittenWhole) {
  std::shared_ptr<RocksInfoLog> log;
  ASSERT_TRUE(RocksInfoLog::Open(dir_, 0, &log).ok());
  const std::string big = std::string(20000, 'x') + "END";
  Line(log, big);
  Line(log, "after");
  const std::string text = Read("LOG");
  EXPECT_NE(text.find(big + "\n"), std::string::npos);
  EXPECT_NE(text.find(" after\n"), std::string::npos);
}

TEST_F(RocksInfoLogTest, RotatesToLogOldPastItsLimit) {
  std::shared_ptr<RocksInfoLog> log;
  ASSERT_TRUE(RocksInfoLog::Open(dir_, 4096, &log).ok());
  for (int i = 0; i < 100; ++i) Line(log, "line " + std::to_string(i) + std::string(40, '.'));
  EXPECT_LE(std::filesystem::file_size(dir_ + "/LOG"), 4096u);
  EXPECT_LE(std::filesystem::file_size(dir_ + "/LOG.old"), 4096u);
  EXPECT_NE(Read("LOG").find("line 99."), std::string::npos);
}

// RocksDB's own logger aborted the process (an assertion in Debian's build) on the line after a
// failed append; this one loses the lines that do not fit and carries on once there is room.
TEST_F(RocksInfoLogTest, AFullDiskLosesLinesNotTheProcess) {
  if (mount("tmpfs", dir_.c_str(), "tmpfs", 0, "size=64k") != 0)
    GTEST_SKIP() << "cannot mount a tmpfs here (needs root): " << std::strerror(errno);
  mounted_ = true;
  std::shared_ptr<RocksInfoLog> log;
  ASSERT_TRUE(RocksInfoLog::Open(dir_, 0, &log).ok());
  {
    std::ofstream fill(dir_ + "/fill");
    fill << std::string(60 << 10, 'f');
  }
  for (int i = 0; i < 200; ++i) Line(log, "while full " + std::string(200, '.'));
  std::filesystem::remove(dir_ + "/fill");
  Line(log, "room again");
  EXPECT_NE(Read("LOG").find(" room again\n"), std::string::npos);
}

}  // namespace
}  // namespace unbd::backend
