// StreamEvents: the queue thread's wait on its gRPC completion queue ends when the doorbell rings
// (Wake from another thread), at once when it rang before the wait, and otherwise at its timeout.
#include "frontend/block_stream.h"

#include <chrono>
#include <thread>

#include <gtest/gtest.h>

namespace unbd::frontend {
namespace {

using Clock = std::chrono::steady_clock;

double MsSince(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

TEST(StreamEventsTest, WaitEndsAtItsTimeoutWhenNothingHappens) {
  StreamEvents ev;
  const auto t0 = Clock::now();
  ev.Wait(std::chrono::milliseconds(50));
  const double ms = MsSince(t0);
  EXPECT_GE(ms, 45);
  EXPECT_LT(ms, 2000);
}

TEST(StreamEventsTest, WakeFromAnotherThreadEndsTheWait) {
  StreamEvents ev;
  for (int i = 0; i < 20; ++i) {
    std::thread bell([&] {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
      ev.Wake();
    });
    const auto t0 = Clock::now();
    // The alarm's event may end this wait, or a stale one from the round before: then wait again,
    // as the queue loop does; the bell must end it long before the timeout either way.
    while (MsSince(t0) < 5) ev.Wait(std::chrono::seconds(10));
    bell.join();
    EXPECT_LT(MsSince(t0), 5000) << "round " << i;
  }
}

TEST(StreamEventsTest, AWakeBeforeTheWaitIsNotLost) {
  StreamEvents ev;
  ev.Wake();
  const auto t0 = Clock::now();
  ev.Wait(std::chrono::seconds(10));
  EXPECT_LT(MsSince(t0), 1000);
}

}  // namespace
}  // namespace unbd::frontend
