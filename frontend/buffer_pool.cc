#include "frontend/buffer_pool.h"

#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <string>

#include <spdlog/spdlog.h>

namespace unbd::frontend {

IoBuffers::~IoBuffers() {
  if (base_) munmap(base_, bytes_);
}

Status IoBuffers::Allocate(size_t count, size_t size) {
  bytes_ = count * size;
  // Not populated here: zeroing hundreds of MiB up front would delay a recovering device by that
  // long. Pages are locked as they fault in, and PrefaultSome() touches them all off the critical path.
  void* p = mmap(nullptr, bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return Status::FromErrno(errno, "mmap " + std::to_string(bytes_) + " bytes of I/O buffers");
  base_ = static_cast<uint8_t*>(p);
  count_ = count;
  size_ = size;
  if (mlock2(base_, bytes_, MLOCK_ONFAULT) == 0) {
    locked_ = true;
  } else {
    // Not fatal (e.g. RLIMIT_MEMLOCK for an unprivileged test run), but worth knowing about.
    spdlog::warn("mlock {} bytes of I/O buffers: {}; buffers may be swapped", bytes_, std::strerror(errno));
  }
  return Status::Ok();
}

bool IoBuffers::PrefaultSome(size_t bytes) {
  if (!base_ || prefaulted_ >= bytes_) return false;
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif
  const size_t len = std::min(bytes, bytes_ - prefaulted_);
  uint8_t* from = base_ + prefaulted_;
  if (madvise(from, len, MADV_POPULATE_WRITE) != 0) {
    // Older kernels: touching one byte per page faults it in (and locks it); the value is kept.
    const size_t page = 4096;
    for (size_t off = 0; off < len; off += page) {
      volatile uint8_t* b = from + off;
      *b = *b;
    }
  }
  prefaulted_ += len;
  return prefaulted_ < bytes_;
}

}  // namespace unbd::frontend
