// Queue: one ublk hardware queue served by one thread with its own io_uring. Start in two steps so
// that all the slow set-up (ring, buffers, the target's handler, e.g. a remote stream's connection)
// happens before the driver step that needs the device (recovery waits for it): Prepare(), then
// Fetch(device) once /dev/ublkcN is open. The thread then posts a FETCH_REQ per tag, hands each request the driver delivers to the target's QueueHandler, answers
// UBLK_IO_RES_NEED_GET_DATA with the buffer the handler chooses, and commits every result with
// COMMIT_AND_FETCH_REQ exactly once. Completions from other threads arrive through a per-queue
// CompletionQueue whose eventfd is read on the same ring. A handler with an event source of its
// own (gRPC) is waited on directly while it has requests out; new work on the ring interrupts
// that wait through a doorbell thread. The thread ends when the driver has
// aborted every tag (STOP_DEV / DEL_DEV).
#pragma once

#include <sched.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <future>
#include <memory>
#include <thread>
#include <vector>

#include "common/status.h"
#include "frontend/buffer_pool.h"
#include "frontend/completion_queue.h"
#include "frontend/device.h"
#include "frontend/event_doorbell.h"
#include "frontend/target.h"

namespace unbd::frontend {

struct QueueStats {
  std::atomic<uint64_t> requests{0};
  std::atomic<uint64_t> errors{0};
  std::atomic<uint64_t> need_get_data{0};
  std::atomic<uint64_t> fixed_buffer_ios{0};  // target I/O on the ring's registered buffers
  std::atomic<uint64_t> double_commits{0};  // must stay 0: a bug if not
};

class Queue final : public QueueContext {
 public:
  // `poll_us`: after a round that did work, spin for the next event before sleeping in
  // io_uring_enter, for at most this long (0: never spin). The window adapts to how long the next
  // event has recently taken to come (see PollForEvent).
  Queue(int queue_id, const ublksrv_ctrl_dev_info& info, Target* target, const cpu_set_t* affinity,
        uint32_t poll_us = 0);
  ~Queue() override;

  // Starts the thread; the future resolves once the ring, buffers and handler are ready.
  std::future<Status> Prepare();
  // After Prepare() resolved OK: the future resolves once every tag's FETCH_REQ has been
  // submitted on `device`. A null device (or never calling Fetch) ends the thread instead.
  std::future<Status> Fetch(Device* device);
  void Join();
  bool finished() const { return finished_.load(std::memory_order_acquire); }
  const QueueStats& stats() const { return stats_; }
  // After Start() resolved OK: fault in and lock the I/O buffers (slow; off the critical path),
  // and register the tags' buffers that are wholly in with the ring (FixedBufferIndex). See
  // IoBuffers::PrefaultSome. Any one thread, not the queue's.
  bool PrefaultSome(size_t bytes);

  int queue_id() const override { return q_; }
  uint16_t depth() const override { return depth_; }
  io_uring_sqe* GetSqe() override;
  int FixedBufferIndex(const uint8_t* buf, uint32_t len) override;
  void Complete(uint16_t tag, int result) override;
  void CompleteAsync(uint16_t tag, int result) override;

 private:
  enum class TagState : uint8_t { kIdle, kInKernel, kGetData, kOwned, kDead };

  void Run(std::promise<Status> prepared);
  Status Setup();
  Status PostFetches();
  void Loop();
  void HandleCqe(const io_uring_cqe* cqe);
  void OnIoCmd(uint16_t tag, int res);
  void Dispatch(uint16_t tag, uint8_t* buf);
  void PostIoCmd(uint32_t op, uint16_t tag, int32_t result, uint8_t* addr);
  void ArmEventfd();
  void DrainCompletions();  // hands every cross-thread completion to the handler
  bool PollForEvent();
  void CalibratePolling();

  const int q_;
  const ublksrv_ctrl_dev_info info_;
  Device* device_ = nullptr;  // set by Fetch, before the thread touches it
  Target* const target_;
  const uint16_t depth_;
  cpu_set_t affinity_;
  bool have_affinity_;

  io_uring ring_{};
  bool ring_ok_ = false;
  IoBuffers buffers_;
  // Registered buffers: a sparse table of depth_ slots, slot t = tag t's buffer once it is resident.
  // Tags [0, fixed_tags_) are registered (published with release by the prefaulting thread).
  bool fixed_table_ = false;
  std::atomic<uint32_t> fixed_tags_{0};
  bool fixed_device_file_ = false;  // the ublk char device is the ring's registered file 0
  std::unique_ptr<QueueHandler> handler_;
  CompletionQueue completions_;
  std::vector<TagState> state_;
  std::vector<uint8_t*> data_buf_;  // buffer the current request's data lives in
  uint64_t efd_value_ = 0;
  uint32_t dead_ = 0;
  bool need_get_data_ = false;
  const uint32_t poll_us_;
  uint64_t poll_max_spins_ = 0;  // spin iterations that take about poll_us_ (calibrated at Setup)
  uint64_t poll_window_ = 0;     // the current window, poll_max_spins_ / 16 .. poll_max_spins_
  uint64_t poll_rounds_ = 0;
  // The handler's own event source and the doorbell that interrupts a wait there.
  HandlerEvents* events_ = nullptr;
  EventDoorbell doorbell_;

  QueueStats stats_;
  std::promise<Device*> device_promise_;
  bool device_given_ = false;
  std::promise<Status> fetched_;
  bool first_completion_logged_ = false;
  std::chrono::steady_clock::time_point fetched_at_;
  std::atomic<bool> finished_{false};
  std::thread thread_;
};

}  // namespace unbd::frontend
