// DirtyRegions: marks map byte ranges to the right regions, ride in the caller's WriteBatch,
// survive a reopen (and only if the batch was written), clear by range, and refuse a changed
// region size.
#include "replication/dirty_regions.h"

#include <gtest/gtest.h>
#include <rocksdb/db.h>
#include <rocksdb/write_batch.h>
#include <unistd.h>

#include <filesystem>

namespace unbd::replication {
namespace {

using Regions = std::vector<uint64_t>;

class DirtyRegionsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("unbd-dirty-" + std::to_string(getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    OpenDb();
  }
  void TearDown() override {
    regions_.reset();
    db_.reset();
    std::filesystem::remove_all(dir_);
  }
  void OpenDb() {
    rocksdb::Options o;
    o.create_if_missing = true;
    // Like the block store: unsynced writes stay in a user-space buffer until FlushWAL.
    o.manual_wal_flush = true;
    rocksdb::DB* db = nullptr;
    ASSERT_TRUE(rocksdb::DB::Open(o, dir_, &db).ok());
    db_.reset(db);
  }
  Status OpenRegions(uint64_t region_bytes) {
    // What the store does, without its latch: write, then flush and sync the WAL buffer.
    auto write_synced = [db = db_.get()](rocksdb::WriteBatch* b, const std::string& what) {
      rocksdb::Status rs = db->Write(rocksdb::WriteOptions(), b);
      if (rs.ok()) rs = db->FlushWAL(/*sync=*/true);
      return rs.ok() ? Status::Ok() : Status::IoError(what + ": " + rs.ToString());
    };
    return DirtyRegions::Open(db_.get(), db_->DefaultColumnFamily(), region_bytes, write_synced,
                              &regions_);
  }
  // Closes and reopens everything, as a server restart does.
  void Restart(uint64_t region_bytes) {
    regions_.reset();
    db_.reset();
    OpenDb();
    ASSERT_TRUE(OpenRegions(region_bytes).ok());
  }

  std::string dir_;
  std::unique_ptr<rocksdb::DB> db_;
  std::unique_ptr<DirtyRegions> regions_;
};

TEST_F(DirtyRegionsTest, MarkCoversEveryTouchedRegion) {
  ASSERT_TRUE(OpenRegions(64 << 10).ok());
  ASSERT_TRUE(regions_->Mark(7, kUnstableSet, 0, 4096).ok());
  // Straddles regions 1 and 2.
  ASSERT_TRUE(regions_->Mark(7, kUnstableSet, (128 << 10) - 4096, 8192).ok());
  // Ends exactly at a boundary: region 4 only.
  ASSERT_TRUE(regions_->Mark(7, kUnstableSet, 4 * (64 << 10), 64 << 10).ok());
  EXPECT_EQ(regions_->Regions(7, kUnstableSet), (Regions{0, 1, 2, 4}));
  EXPECT_EQ(regions_->Count(7, kUnstableSet), 4u);
  // Other sets and volumes are independent.
  EXPECT_TRUE(regions_->Regions(7, PeerSet(0)).empty());
  EXPECT_TRUE(regions_->Regions(8, kUnstableSet).empty());
}

TEST_F(DirtyRegionsTest, BadInput) {
  EXPECT_EQ(OpenRegions(1000).code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(OpenRegions(2048).code(), Status::Code::kInvalidArgument);
  ASSERT_TRUE(OpenRegions(4096).ok());
  Status s = regions_->Mark(3, 0, 8192, 0);
  EXPECT_EQ(s.code(), Status::Code::kInvalidArgument);
  EXPECT_NE(s.message().find("volume 3 offset 8192"), std::string::npos) << s.ToString();
  EXPECT_EQ(regions_->Mark(3, 0, ~0ull - 100, 4096).code(), Status::Code::kOutOfRange);
  EXPECT_TRUE(regions_->Sets(3).empty());
}

TEST_F(DirtyRegionsTest, SurvivesRestart) {
  ASSERT_TRUE(OpenRegions(1 << 20).ok());
  ASSERT_TRUE(regions_->Mark(1, PeerSet(2), 5ull << 20, 4096).ok());
  ASSERT_TRUE(regions_->Mark(1, PeerSet(2), 9ull << 20, 3ull << 20).ok());
  ASSERT_TRUE(regions_->Mark(2, kUnstableSet, 0, 4096).ok());
  ASSERT_TRUE(regions_->MarkRegions(1, PeerSet(0), {3, 1000000}).ok());
  Restart(1 << 20);
  EXPECT_EQ(regions_->Regions(1, PeerSet(2)), (Regions{5, 9, 10, 11}));
  EXPECT_EQ(regions_->Regions(1, PeerSet(0)), (Regions{3, 1000000}));
  EXPECT_EQ(regions_->Regions(2, kUnstableSet), (Regions{0}));
  EXPECT_EQ(regions_->Sets(1), (std::vector<uint32_t>{PeerSet(0), PeerSet(2)}));
}

TEST_F(DirtyRegionsTest, BatchMarksAreDurableOnlyWithTheirBatch) {
  ASSERT_TRUE(OpenRegions(4096).ok());
  rocksdb::WriteBatch written, dropped;
  std::vector<RegionKey> fresh_written, fresh_dropped;
  ASSERT_TRUE(regions_->PrepareMark(4, kUnstableSet, 0, 8192, &written, &fresh_written).ok());
  ASSERT_TRUE(regions_->PrepareMark(4, kUnstableSet, 1 << 20, 4096, &dropped, &fresh_dropped).ok());
  EXPECT_EQ(fresh_written.size(), 2u);
  // Prepared, not published: invisible.
  EXPECT_EQ(regions_->Count(4, kUnstableSet), 0u);
  written.Put("data-key", "block");  // the data the mark describes rides in the same batch
  rocksdb::WriteOptions wo;
  ASSERT_TRUE(db_->Write(wo, &written).ok());
  ASSERT_TRUE(db_->FlushWAL(true).ok());
  regions_->Published(fresh_written);
  EXPECT_EQ(regions_->Regions(4, kUnstableSet), (Regions{0, 1}));
  // Known regions are not re-put: the hot path writes a mark once per region.
  rocksdb::WriteBatch again;
  std::vector<RegionKey> fresh_again;
  ASSERT_TRUE(regions_->PrepareMark(4, kUnstableSet, 4096, 4096, &again, &fresh_again).ok());
  EXPECT_TRUE(fresh_again.empty());
  EXPECT_EQ(again.Count(), 0u);
  Restart(4096);
  // The dropped batch never reached the database, so its region is not dirty after restart.
  EXPECT_EQ(regions_->Regions(4, kUnstableSet), (Regions{0, 1}));
}

TEST_F(DirtyRegionsTest, ClearRangeAndDropVolume) {
  ASSERT_TRUE(OpenRegions(4096).ok());
  ASSERT_TRUE(regions_->MarkRegions(5, PeerSet(1), {1, 2, 3, 7, 8}).ok());
  ASSERT_TRUE(regions_->MarkRegions(5, kUnstableSet, {2}).ok());
  ASSERT_TRUE(regions_->MarkRegions(6, PeerSet(1), {2}).ok());
  ASSERT_TRUE(regions_->Clear(5, PeerSet(1), 2, 8).ok());  // [2, 8)
  EXPECT_EQ(regions_->Regions(5, PeerSet(1)), (Regions{1, 8}));
  EXPECT_EQ(regions_->Regions(5, kUnstableSet), (Regions{2}));
  Restart(4096);
  EXPECT_EQ(regions_->Regions(5, PeerSet(1)), (Regions{1, 8}));
  // A region cleared and written again is dirty again.
  ASSERT_TRUE(regions_->Mark(5, PeerSet(1), 3 * 4096, 4096).ok());
  EXPECT_EQ(regions_->Regions(5, PeerSet(1)), (Regions{1, 3, 8}));
  ASSERT_TRUE(regions_->DropVolume(5).ok());
  Restart(4096);
  EXPECT_TRUE(regions_->Sets(5).empty());
  EXPECT_EQ(regions_->Regions(6, PeerSet(1)), (Regions{2}));
}

TEST_F(DirtyRegionsTest, ClearListedRegionsOnly) {
  ASSERT_TRUE(OpenRegions(4096).ok());
  ASSERT_TRUE(regions_->MarkRegions(5, PeerSet(0), {1, 2, 3, 9}).ok());
  ASSERT_TRUE(regions_->MarkRegions(5, PeerSet(2), {2}).ok());
  ASSERT_TRUE(regions_->ClearRegions(5, PeerSet(0), {2, 9, 40}).ok());  // 40 was never dirty
  EXPECT_EQ(regions_->Regions(5, PeerSet(0)), (Regions{1, 3}));
  EXPECT_EQ(regions_->Regions(5, PeerSet(2)), (Regions{2}));
  Restart(4096);
  EXPECT_EQ(regions_->Regions(5, PeerSet(0)), (Regions{1, 3}));
  ASSERT_TRUE(regions_->ClearRegions(5, PeerSet(0), {1, 3}).ok());
  EXPECT_EQ(regions_->Sets(5), (std::vector<uint32_t>{PeerSet(2)}));
  Restart(4096);
  EXPECT_TRUE(regions_->Regions(5, PeerSet(0)).empty());
}

TEST_F(DirtyRegionsTest, RefusesADifferentRegionSize) {
  ASSERT_TRUE(OpenRegions(64 << 10).ok());
  ASSERT_TRUE(regions_->Mark(1, 0, 0, 4096).ok());
  regions_.reset();
  Status s = OpenRegions(1 << 20);
  EXPECT_EQ(s.code(), Status::Code::kFailedPrecondition);
  EXPECT_NE(s.message().find("65536-byte regions"), std::string::npos) << s.ToString();
  ASSERT_TRUE(OpenRegions(64 << 10).ok());
  EXPECT_EQ(regions_->Regions(1, 0), (Regions{0}));
}

}  // namespace
}  // namespace unbd::replication
