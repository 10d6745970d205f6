// Queue: one ublk hardware queue served by one thread with its own io_uring. The thread posts a
// FETCH_REQ per tag, hands each request the driver delivers to the target's QueueHandler, answers
// UBLK_IO_RES_NEED_GET_DATA with the buffer the handler chooses, and commits every result with
// COMMIT_AND_FETCH_REQ exactly once. Completions from other threads arrive through a per-queue
// CompletionQueue whose eventfd is read on the same ring. The thread ends when the driver has
// aborted every tag (STOP_DEV / DEL_DEV).
#pragma once

#include <sched.h>

#include <atomic>
#include <cstdint>
#include <future>
#include <memory>
#include <thread>
#include <vector>

#include "common/status.h"
#include "frontend/buffer_pool.h"
#include "frontend/completion_queue.h"
#include "frontend/device.h"
#include "frontend/target.h"

namespace unbd::frontend {

struct QueueStats {
  std::atomic<uint64_t> requests{0};
  std::atomic<uint64_t> errors{0};
  std::atomic<uint64_t> need_get_data{0};
  std::atomic<uint64_t> double_commits{0};  // must stay 0: a bug if not
};

class Queue final : public QueueContext {
 public:
  Queue(int queue_id, Device* device, Target* target, const cpu_set_t* affinity);
  ~Queue() override;

  // Starts the thread; the future resolves once every tag's FETCH_REQ has been submitted (or the
  // setup failed).
  std::future<Status> Start();
  void Join();
  bool finished() const { return finished_.load(std::memory_order_acquire); }
  const QueueStats& stats() const { return stats_; }
  // After Start() resolved OK: fault in and lock the I/O buffers (slow; off the critical path).
  void PrefaultBuffers() { buffers_.Prefault(); }

  int queue_id() const override { return q_; }
  uint16_t depth() const override { return depth_; }
  io_uring_sqe* GetSqe() override;
  void Complete(uint16_t tag, int result) override;
  void CompleteAsync(uint16_t tag, int result) override;

 private:
  enum class TagState : uint8_t { kIdle, kInKernel, kGetData, kOwned, kDead };

  void Run(std::promise<Status> ready);
  Status Setup();
  void Loop();
  void HandleCqe(const io_uring_cqe* cqe);
  void OnIoCmd(uint16_t tag, int res);
  void Dispatch(uint16_t tag, uint8_t* buf);
  void PostIoCmd(uint32_t op, uint16_t tag, int32_t result, uint8_t* addr);
  void ArmEventfd();

  const int q_;
  Device* const device_;
  Target* const target_;
  const uint16_t depth_;
  cpu_set_t affinity_;
  bool have_affinity_;

  io_uring ring_{};
  bool ring_ok_ = false;
  IoBuffers buffers_;
  std::unique_ptr<QueueHandler> handler_;
  CompletionQueue completions_;
  std::vector<TagState> state_;
  std::vector<uint8_t*> data_buf_;  // buffer the current request's data lives in
  uint64_t efd_value_ = 0;
  uint32_t dead_ = 0;
  bool need_get_data_ = false;

  QueueStats stats_;
  std::atomic<bool> finished_{false};
  std::thread thread_;
};

}  // namespace unbd::frontend
