// StoreFixture: a Store in a fresh per-test directory (removed afterwards), reopenable, with
// helpers to create an opened volume and to submit one request.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <memory>
#include <string>

#include "backend/store.h"

namespace unbd::backend {

class StoreFixture : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("unbd-store-test-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    Status s = Reopen();
    ASSERT_TRUE(s.ok()) << s.ToString();
  }
  void TearDown() override {
    store_.reset();
    std::filesystem::remove_all(dir_);
  }
  // Closes the store (if open) and opens it again on the same directory.
  Status Reopen(uint64_t region_bytes = 1 << 20) {
    store_.reset();
    StoreOptions o;
    o.dir = dir_;
    o.block_cache_bytes = 8 << 20;
    o.region_bytes = region_bytes;
    return Store::Open(o, &store_);
  }
  // Creates a volume (a replica when `uuid` is non-empty) and, when epoch > 0, opens it.
  uint64_t NewVolume(const std::string& name, uint64_t size, const std::string& uuid,
                     uint64_t epoch) {
    v1::Volume v;
    Status s = store_->CreateVolume(name, size, 0, uuid, &v);
    EXPECT_TRUE(s.ok()) << s.ToString();
    if (epoch > 0) {
      s = store_->OpenVolume(v.id(), epoch, "test", &v);
      EXPECT_TRUE(s.ok()) << s.ToString();
    }
    return v.id();
  }
  // A request on `vol` at `epoch` for [off, off + len); callers add payload, destination, flags.
  static IoOp Op(v1::Opcode op, uint64_t vol, uint64_t epoch, uint64_t off, uint64_t len) {
    IoOp o;
    o.op = op;
    o.volume_id = vol;
    o.epoch = epoch;
    o.offset = off;
    o.length = len;
    return o;
  }
  Status Submit(IoOp op) {
    store_->SubmitBatch(std::span<IoOp>(&op, 1));
    return op.status;
  }

  std::filesystem::path dir_;
  std::unique_ptr<Store> store_;
};

}  // namespace unbd::backend
