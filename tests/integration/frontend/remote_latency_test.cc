// QD1 latency of the remote target against a real unbd-server on loopback: 128 MiB written in
// 256 KiB requests (as bench/frontend-vm.sh prefills), then 4 KiB random reads and writes through
// the queue handler, completions picked up the way the queue thread does it
// (blocked in the handler's own events or on the completion queue's eventfd, not by polling). Prints per-op latency percentiles
// and checks that reads are not slower than writes: a read moves the same 4 KiB the other way
// and does no more work at the server, so a read/write gap means something waits for a timer.
#include <poll.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include <gtest/gtest.h>
#include <liburing.h>

#include "frontend/completion_queue.h"
#include "frontend/targets/remote.h"
#include "tests/integration/backend/server_process.h"

namespace unbd::frontend {
namespace {

using Clock = std::chrono::steady_clock;

class EventfdQueue final : public QueueContext {
 public:
  explicit EventfdQueue(uint16_t depth) : depth_(depth), cq_(2 * depth + 64) {
    EXPECT_EQ(io_uring_queue_init(16, &ring_, 0), 0);
  }
  ~EventfdQueue() override { io_uring_queue_exit(&ring_); }
  int queue_id() const override { return 0; }
  uint16_t depth() const override { return depth_; }
  io_uring_sqe* GetSqe() override { return io_uring_get_sqe(&ring_); }
  void Complete(uint16_t, int result) override {
    done_ = true;
    result_ = result;
  }
  void CompleteAsync(uint16_t tag, int result) override { ASSERT_TRUE(cq_.Push({tag, result})); }

  // Submits one request and sleeps on the eventfd until it is committed; returns its result.
  int RunOne(QueueHandler* h, const IoRequest& r) {
    done_ = false;
    h->Submit(r);
    h->Flush();
    auto until = Clock::now() + std::chrono::seconds(10);
    while (!done_ && Clock::now() < until) {
      if (h->events() && h->AwaitsEvents()) {  // as the queue thread does
        h->events()->Wait(std::chrono::milliseconds(100));
        h->Flush();
        continue;
      }
      pollfd p{cq_.eventfd_fd(), POLLIN, 0};
      poll(&p, 1, 100);
      uint64_t v;
      if (read(cq_.eventfd_fd(), &v, sizeof(v)) < 0) { /* EAGAIN: nothing yet */ }
      cq_.Drain([&](const Completion& c) { h->OnAsync(c.tag, c.result, this); });
      h->Flush();
    }
    return done_ ? result_ : -ETIMEDOUT;
  }

 private:
  uint16_t depth_;
  io_uring ring_{};
  CompletionQueue cq_;
  bool done_ = false;
  int result_ = 0;
};

struct Percentiles {
  double p50, p99, mean;
};

Percentiles Summarize(std::vector<double> us) {
  std::sort(us.begin(), us.end());
  double sum = 0;
  for (double v : us) sum += v;
  return {us[us.size() / 2], us[us.size() * 99 / 100], sum / us.size()};
}

TEST(RemoteLatency, Qd1ReadsAreNotSlowerThanWrites) {
  const std::string dir = testing::TestDir("lat");
  testing::ServerProcess server(dir, dir + "/db");
  ASSERT_TRUE(server.started());
  backend::AdminClient admin(server.target());
  v1::Volume vol;
  // As bench/frontend-vm.sh: 128 MiB written sequentially in big requests, then 4k random I/O
  // over all of it, so reads find data wherever the server keeps it by then (memtable or SSTs).
  constexpr uint64_t kVolBytes = 128 << 20;
  ASSERT_TRUE(admin.Create("lat", kVolBytes, &vol).ok());

  DeviceConfig c;
  c.target = TargetType::kRemote;
  c.server = server.target();
  c.volume = "lat";
  c.queue_depth = 1;
  c.max_io_bytes = 256 << 10;
  c.logical_block_size = 4096;
  c.need_get_data = true;
  std::unique_ptr<RemoteTarget> target;
  ASSERT_TRUE(RemoteTarget::Open(c, &target).ok());
  EventfdQueue q(1);
  std::unique_ptr<QueueHandler> h;
  ASSERT_TRUE(target->CreateQueueHandler(&q, &h).ok());

  constexpr int kOps = 400;
  constexpr uint32_t kLen = 4096;
  std::mt19937_64 rng(7);
  std::vector<uint8_t> buf(kLen, 0x5a);
  std::vector<double> wr, rd;
  auto run = [&](uint8_t op, std::vector<double>* out) {
    for (int i = 0; i < kOps; ++i) {
      uint64_t off = (rng() % (kVolBytes / kLen)) * kLen;
      uint8_t* p = buf.data();
      if (op == UBLK_IO_OP_WRITE) {
        uint8_t* slot = h->WriteBuffer(0, kLen);
        if (slot) p = slot;
      }
      auto t0 = Clock::now();
      int r = q.RunOne(h.get(), {0, op, 0, off, kLen, p});
      out->push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
      ASSERT_EQ(r, int(kLen)) << "op " << int(op) << " #" << i;
    }
  };
  {
    constexpr uint32_t kBig = 256 << 10;
    std::vector<uint8_t> tag_buf(kBig);
    for (uint64_t off = 0; off < kVolBytes; off += kBig) {
      uint8_t* slot = h->WriteBuffer(0, kBig);
      if (!slot) slot = tag_buf.data();  // the pool slot is still referenced by gRPC
      std::memset(slot, int(off >> 18), kBig);
      ASSERT_EQ(q.RunOne(h.get(), {0, UBLK_IO_OP_WRITE, 0, off, kBig, slot}), int(kBig)) << "prefill " << off;
    }
  }
  run(UBLK_IO_OP_READ, &rd);
  run(UBLK_IO_OP_WRITE, &wr);
  run(UBLK_IO_OP_WRITE, &wr);
  h->Stop();
  Percentiles w = Summarize(wr), r = Summarize(rd);
  std::printf("remote target QD1 4k over loopback (%d ops each):\n", kOps);
  std::printf("  write  p50 %8.1f us  p99 %8.1f us  mean %8.1f us\n", w.p50, w.p99, w.mean);
  std::printf("  read   p50 %8.1f us  p99 %8.1f us  mean %8.1f us\n", r.p50, r.p99, r.mean);
  std::printf("  read/write p50 ratio %.2f\n", r.p50 / w.p50);
  // Generous bound: a timer-bound read (delayed ACK, flush linger) is 10-100x slower, not 2x.
  EXPECT_LT(r.p50, 2.0 * w.p50 + 100.0) << "QD1 reads much slower than writes: something waits on a timer";
}

}  // namespace
}  // namespace unbd::frontend
