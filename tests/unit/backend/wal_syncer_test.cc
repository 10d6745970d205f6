#include "backend/wal_syncer.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

namespace unbd::backend {
namespace {

// Many concurrent Sync() callers share a few syncs (group commit), and nobody returns before a
// sync that started after its call has finished.
TEST(WalSyncer, GroupsConcurrentCallersAndOrdersAfterCall) {
  std::atomic<int> started{0}, finished{0};
  WalSyncer syncer([&] {
    started++;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    finished++;
    return Status::Ok();
  });
  constexpr int kThreads = 16, kIters = 20;
  std::vector<std::thread> ts;
  std::atomic<int> violations{0};
  for (int t = 0; t < kThreads; ++t) {
    ts.emplace_back([&] {
      for (int i = 0; i < kIters; ++i) {
        const int started_before = started.load();
        ASSERT_TRUE(syncer.Sync().ok());
        // A sync that began after our call must have completed.
        if (finished.load() < started_before + 1) violations++;
      }
    });
  }
  for (auto& t : ts) t.join();
  EXPECT_EQ(violations.load(), 0);
  EXPECT_LT(syncer.syncs_done(), static_cast<uint64_t>(kThreads * kIters / 2))
      << "expected group commit to batch callers";
  EXPECT_GE(syncer.syncs_done(), static_cast<uint64_t>(kIters));
}

TEST(WalSyncer, PropagatesFailure) {
  WalSyncer syncer([] { return Status::IoError("disk on fire"); });
  Status s = syncer.Sync();
  EXPECT_EQ(s.code(), Status::Code::kIoError);
  EXPECT_NE(s.message().find("disk on fire"), std::string::npos);
}

}  // namespace
}  // namespace unbd::backend
