#include "frontend/event_doorbell.h"

#include <pthread.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>

#include <spdlog/spdlog.h>

namespace unbd::frontend {

bool EventDoorbell::Start(io_uring* ring, HandlerEvents* events, const std::string& thread_name) {
  ring_ = ring;
  events_ = events;
  fd_ = eventfd(0, EFD_CLOEXEC);
  const int r = fd_ < 0 ? -errno : io_uring_register_eventfd(ring_, fd_);
  if (r < 0) {
    spdlog::warn("{}: no doorbell for the target's events: {}", thread_name, std::strerror(-r));
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
    return false;
  }
  io_uring_cq_eventfd_toggle(ring_, false);  // signalled only while waiting on the handler
  stop_.store(false, std::memory_order_relaxed);
  thread_ = std::thread([this, thread_name] {
    pthread_setname_np(pthread_self(), thread_name.substr(0, 15).c_str());
    uint64_t v;
    while (read(fd_, &v, sizeof(v)) > 0 || errno == EINTR) {
      if (stop_.load(std::memory_order_acquire)) break;
      events_->Wake();
    }
  });
  return true;
}

void EventDoorbell::Stop() {
  if (!thread_.joinable()) return;
  stop_.store(true, std::memory_order_release);
  uint64_t one = 1;
  if (write(fd_, &one, sizeof(one)) < 0) spdlog::error("doorbell: {}", std::strerror(errno));
  thread_.join();
  io_uring_unregister_eventfd(ring_);
  close(fd_);
  fd_ = -1;
}

void EventDoorbell::Wait(const CompletionQueue& completions) {
  // A lost doorbell (the kernel may read the flag before our store lands) costs at most this.
  constexpr auto kMaxWait = std::chrono::milliseconds(10);
  constexpr auto kWaitWithoutDoorbell = std::chrono::microseconds(200);
  if (fd_ < 0) {
    if (io_uring_cq_ready(ring_) == 0 && !completions.HasPending()) events_->Wait(kWaitWithoutDoorbell);
    return;
  }
  io_uring_cq_eventfd_toggle(ring_, true);
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (io_uring_cq_ready(ring_) == 0 && !completions.HasPending()) events_->Wait(kMaxWait);
  io_uring_cq_eventfd_toggle(ring_, false);
}

}  // namespace unbd::frontend
