#include "frontend/completion_queue.h"

#include <poll.h>

#include <thread>
#include <vector>

#include <gtest/gtest.h>

namespace unbd::frontend {
namespace {

// Several producer threads complete disjoint tags; the consumer, woken only through the eventfd,
// must see every completion exactly once with its result.
TEST(CompletionQueueTest, ManyProducersEveryCompletionExactlyOnce) {
  constexpr int kProducers = 4;
  constexpr int kPerProducer = 200000;
  constexpr int kTags = 64;  // per producer, in flight at once at most
  CompletionQueue q(kProducers * kTags);
  std::vector<std::atomic<int>> credits(kProducers);
  for (auto& c : credits) c = kTags;
  std::vector<std::thread> producers;
  for (int p = 0; p < kProducers; ++p) {
    producers.emplace_back([&, p] {
      for (int i = 0; i < kPerProducer; ++i) {
        while (credits[p].load(std::memory_order_acquire) == 0) std::this_thread::yield();
        credits[p].fetch_sub(1, std::memory_order_acq_rel);
        uint16_t tag = static_cast<uint16_t>(p * kTags + i % kTags);
        ASSERT_TRUE(q.Push({tag, i}));
      }
    });
  }
  std::vector<int> next(kProducers, 0);
  long total = 0;
  while (total < long(kProducers) * kPerProducer) {
    pollfd pfd{q.eventfd_fd(), POLLIN, 0};
    ASSERT_GT(poll(&pfd, 1, 5000), 0) << "lost wakeup after " << total << " completions";
    uint64_t v;
    ASSERT_EQ(read(q.eventfd_fd(), &v, sizeof(v)), 8);
    total += q.Drain([&](const Completion& c) {
      int p = c.tag / kTags;
      // Each producer's completions arrive in its own order.
      EXPECT_EQ(c.result, next[p]);
      EXPECT_EQ(c.tag, p * kTags + next[p] % kTags);
      ++next[p];
      credits[p].fetch_add(1, std::memory_order_acq_rel);
    });
  }
  for (auto& t : producers) t.join();
  for (int p = 0; p < kProducers; ++p) EXPECT_EQ(next[p], kPerProducer);
}

TEST(CompletionQueueTest, FullQueueRefusesInsteadOfOverwriting) {
  CompletionQueue q(4);
  for (int i = 0; i < 4; ++i) EXPECT_TRUE(q.Push({static_cast<uint16_t>(i), i}));
  EXPECT_FALSE(q.Push({9, 9}));
  int seen = 0;
  q.Drain([&](const Completion& c) { EXPECT_EQ(c.result, seen++); });
  EXPECT_EQ(seen, 4);
}

}  // namespace
}  // namespace unbd::frontend
