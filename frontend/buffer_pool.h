// IoBuffers: one queue's I/O memory: `count` page-aligned buffers of `size` bytes carved from one
// anonymous mapping that is locked in RAM (MLOCK_ONFAULT + PrefaultSome), so serving I/O under memory
// pressure never has to fault a page in (the daemon may be the one reclaim is waiting for).
#pragma once

#include <cstddef>
#include <cstdint>

#include "common/status.h"

namespace unbd::frontend {

class IoBuffers {
 public:
  IoBuffers() = default;
  ~IoBuffers();
  IoBuffers(const IoBuffers&) = delete;
  IoBuffers& operator=(const IoBuffers&) = delete;

  Status Allocate(size_t count, size_t size);
  // Faults the next `bytes` of pages in (and so locks them), from where the previous call stopped;
  // false once every page is in. Safe while I/O uses the buffers; one thread at a time.
  bool PrefaultSome(size_t bytes);
  uint8_t* at(size_t i) const { return base_ + i * size_; }
  // Buffers [0, resident()) are wholly faulted in (and locked).
  size_t resident() const { return size_ ? prefaulted_ / size_ : 0; }
  size_t count() const { return count_; }
  size_t size() const { return size_; }
  bool locked() const { return locked_; }

 private:
  uint8_t* base_ = nullptr;
  size_t count_ = 0;
  size_t size_ = 0;
  size_t bytes_ = 0;
  bool locked_ = false;
  size_t prefaulted_ = 0;
};

}  // namespace unbd::frontend
