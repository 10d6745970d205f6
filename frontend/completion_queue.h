// CompletionQueue: how targets that finish I/O on other threads (gRPC) hand results back to the one
// queue thread allowed to commit them. A bounded lock-free multi-producer queue (Vyukov's
// sequence-numbered ring) plus an eventfd the queue thread keeps a read posted on in its own
// io_uring. Each queue has its own instance, so no lock or cache line is shared between queues.
// Producers only write the eventfd on the empty -> non-empty transition.
#pragma once

#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <memory>

namespace unbd::frontend {

struct Completion {
  uint16_t tag;
  int32_t result;
};

class CompletionQueue {
 public:
  // `capacity` must be at least the number of completions that can be outstanding at once (the
  // queue depth); it is rounded up to a power of two.
  explicit CompletionQueue(size_t capacity) {
    size_t n = 2;
    while (n < capacity) n <<= 1;
    mask_ = n - 1;
    cells_ = std::make_unique<Cell[]>(n);
    for (size_t i = 0; i < n; ++i) cells_[i].seq.store(i, std::memory_order_relaxed);
    efd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  }
  ~CompletionQueue() {
    if (efd_ >= 0) close(efd_);
  }
  CompletionQueue(const CompletionQueue&) = delete;
  CompletionQueue& operator=(const CompletionQueue&) = delete;

  int eventfd_fd() const { return efd_; }

  // Any thread. Returns false only if the queue is full (a caller bug: more completions than tags).
  bool Push(Completion c) {
    size_t pos = tail_.load(std::memory_order_relaxed);
    Cell* cell;
    for (;;) {
      cell = &cells_[pos & mask_];
      size_t seq = cell->seq.load(std::memory_order_acquire);
      intptr_t diff = static_cast<intptr_t>(seq) - static_cast<intptr_t>(pos);
      if (diff == 0) {
        if (tail_.compare_exchange_weak(pos, pos + 1, std::memory_order_relaxed)) break;
      } else if (diff < 0) {
        return false;
      } else {
        pos = tail_.load(std::memory_order_relaxed);
      }
    }
    cell->value = c;
    cell->seq.store(pos + 1, std::memory_order_release);
    if (pending_.fetch_add(1, std::memory_order_acq_rel) == 0) {
      uint64_t one = 1;
      ssize_t r = write(efd_, &one, sizeof(one));
      (void)r;  // EAGAIN only when the counter is saturated, which means a wakeup is pending anyway
    }
    return true;
  }

  // Any thread: whether a push is waiting to be drained (a polling consumer's cheap check).
  bool HasPending() const { return pending_.load(std::memory_order_acquire) > 0; }

  // Queue thread only: calls fn(Completion) for everything pushed so far. Keeps draining until no
  // producer can have skipped the eventfd write on our behalf.
  template <typename Fn>
  size_t Drain(Fn&& fn) {
    size_t total = 0;
    for (;;) {
      size_t n = 0;
      Completion c;
      while (Pop(&c)) {
        fn(c);
        ++n;
      }
      total += n;
      if (n == 0) {
        // pending_ counts pushes not yet drained; a push between our last Pop and here is seen
        // by the next round.
        if (pending_.load(std::memory_order_acquire) == 0) return total;
        continue;
      }
      if (pending_.fetch_sub(n, std::memory_order_acq_rel) == n) return total;
    }
  }

 private:
  struct alignas(64) Cell {
    std::atomic<size_t> seq;
    Completion value;
  };

  bool Pop(Completion* out) {
    Cell* cell = &cells_[head_ & mask_];
    size_t seq = cell->seq.load(std::memory_order_acquire);
    if (static_cast<intptr_t>(seq) - static_cast<intptr_t>(head_ + 1) < 0) return false;
    *out = cell->value;
    cell->seq.store(head_ + mask_ + 1, std::memory_order_release);
    ++head_;
    return true;
  }

  std::unique_ptr<Cell[]> cells_;
  size_t mask_ = 0;
  alignas(64) std::atomic<size_t> tail_{0};
  alignas(64) size_t head_ = 0;  // consumer only
  alignas(64) std::atomic<size_t> pending_{0};
  int efd_ = -1;
};

}  // namespace unbd::frontend
