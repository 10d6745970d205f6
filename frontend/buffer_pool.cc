#include "frontend/buffer_pool.h"

#include <sys/mman.h>

#include <cerrno>
#include <string>

#include <spdlog/spdlog.h>

namespace unbd::frontend {

IoBuffers::~IoBuffers() {
  if (base_) munmap(base_, bytes_);
}

Status IoBuffers::Allocate(size_t count, size_t size) {
  bytes_ = count * size;
  void* p = mmap(nullptr, bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
  if (p == MAP_FAILED) return Status::FromErrno(errno, "mmap " + std::to_string(bytes_) + " bytes of I/O buffers");
  base_ = static_cast<uint8_t*>(p);
  count_ = count;
  size_ = size;
  if (mlock(base_, bytes_) == 0) {
    locked_ = true;
  } else {
    // Not fatal (e.g. RLIMIT_MEMLOCK for an unprivileged test run), but worth knowing about.
    spdlog::warn("mlock {} bytes of I/O buffers: {}; buffers may be swapped", bytes_, std::strerror(errno));
  }
  return Status::Ok();
}

}  // namespace unbd::frontend
