// StateDirTest: a fixture whose tests get a fresh, private state directory ($UNBD_RUN_DIR), removed
// afterwards.
#pragma once

#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include <gtest/gtest.h>

namespace unbd::frontend {

class StateDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("unbd-state-" + std::to_string(getpid()));
    std::filesystem::remove_all(dir_);
    setenv("UNBD_RUN_DIR", dir_.c_str(), 1);
  }
  void TearDown() override {
    std::filesystem::remove_all(dir_);
    unsetenv("UNBD_RUN_DIR");
  }
  std::filesystem::path dir_;
};

}  // namespace unbd::frontend
