// FakeQueue: plays a frontend queue thread for target tests without a kernel: a ring for the
// handler's own SQEs, the cross-thread completion queue, and a record of what got committed
// (each tag exactly once).
#pragma once

#include <liburing.h>

#include <chrono>
#include <climits>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "frontend/completion_queue.h"
#include "frontend/target.h"

namespace unbd::frontend::testing {

class FakeQueue final : public QueueContext {
 public:
  using Clock = std::chrono::steady_clock;
  explicit FakeQueue(uint16_t depth) : depth_(depth), cq_(2 * depth + 64), results_(depth, kNone) {
    EXPECT_EQ(io_uring_queue_init(64, &ring_, 0), 0);
  }
  ~FakeQueue() override { io_uring_queue_exit(&ring_); }

  int queue_id() const override { return 0; }
  uint16_t depth() const override { return depth_; }
  io_uring_sqe* GetSqe() override { return io_uring_get_sqe(&ring_); }
  void Complete(uint16_t tag, int result) override {
    ASSERT_LT(tag, depth_);
    EXPECT_EQ(results_[tag], kPending) << "tag " << tag << " committed twice";
    results_[tag] = result;
  }
  void CompleteAsync(uint16_t tag, int result) override { ASSERT_TRUE(cq_.Push({tag, result})); }

  void Submit(QueueHandler* h, const IoRequest& r) {
    results_[r.tag] = kPending;
    h->Submit(r);
  }
  // Runs the handler until every submitted tag has a result or `timeout` passes.
  bool Pump(QueueHandler* h, std::chrono::milliseconds timeout) {
    const auto until = Clock::now() + timeout;
    for (;;) {
      h->Flush();
      io_uring_submit(&ring_);
      io_uring_cqe* cqe;
      while (io_uring_peek_cqe(&ring_, &cqe) == 0) {
        const uint64_t ud = cqe->user_data;
        h->OnCqe(ud & 0xffff, (ud >> 24) & 0xff, cqe->res);
        io_uring_cqe_seen(&ring_, cqe);
      }
      cq_.Drain([&](const Completion& c) { h->OnAsync(c.tag, c.result, this); });
      bool pending = false;
      for (int r : results_) pending |= r == kPending;
      if (!pending) return true;
      if (Clock::now() > until) return false;
      // As the queue thread: wait on the handler's own events while it has requests out there.
      if (h->events() && h->AwaitsEvents()) h->events()->Wait(std::chrono::microseconds(200));
      else std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  }
  int result(uint16_t tag) const { return results_[tag]; }

  static constexpr int kNone = INT_MIN;
  static constexpr int kPending = INT_MIN + 1;

 private:
  uint16_t depth_;
  io_uring ring_{};
  CompletionQueue cq_;
  std::vector<int> results_;
};

}  // namespace unbd::frontend::testing
