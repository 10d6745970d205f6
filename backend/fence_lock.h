// FenceLock: a writer-preferring reader/writer lock guarding one volume's epoch. Data requests
// hold it shared across "check epoch, apply"; OpenVolume holds it exclusively across "persist new
// epoch, answer", which makes the check and the apply atomic with respect to epoch changes.
// Writer preference matters: under a constant stream of writes a reader-preferring lock (glibc's
// default rwlock) could starve OpenVolume indefinitely.
#pragma once

#include <condition_variable>
#include <mutex>

namespace unbd::backend {

class FenceLock {
 public:
  void lock_shared() {
    std::unique_lock l(mu_);
    cv_.wait(l, [&] { return !writer_active_ && writers_waiting_ == 0; });
    ++readers_;
  }
  void unlock_shared() {
    std::lock_guard l(mu_);
    if (--readers_ == 0 && writers_waiting_ > 0) cv_.notify_all();
  }
  void lock() {
    std::unique_lock l(mu_);
    ++writers_waiting_;
    cv_.wait(l, [&] { return !writer_active_ && readers_ == 0; });
    --writers_waiting_;
    writer_active_ = true;
  }
  void unlock() {
    std::lock_guard l(mu_);
    writer_active_ = false;
    cv_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int readers_ = 0;
  int writers_waiting_ = 0;
  bool writer_active_ = false;
};

}  // namespace unbd::backend
