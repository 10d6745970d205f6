#include "frontend/device.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <string>
#include <thread>

namespace unbd::frontend {

namespace {
size_t PageRound(size_t n) {
  size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  return (n + page - 1) / page * page;
}
}  // namespace

Status Device::Open(const ublksrv_ctrl_dev_info& info, std::unique_ptr<Device>* out) {
  std::unique_ptr<Device> d(new Device());
  d->info_ = info;
  const std::string path = "/dev/ublkc" + std::to_string(info.dev_id);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  for (;;) {
    d->fd_ = open(path.c_str(), O_RDWR | O_CLOEXEC);
    if (d->fd_ >= 0) break;
    int err = errno;
    if ((err != ENOENT && err != EBUSY) || std::chrono::steady_clock::now() > deadline)
      return Status::FromErrno(err, "open " + path);
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  // The driver places queue q's descriptors at offset q * (room for the deepest possible queue).
  const size_t stride = PageRound(UBLK_MAX_QUEUE_DEPTH * sizeof(ublksrv_io_desc));
  d->map_size_ = PageRound(info.queue_depth * sizeof(ublksrv_io_desc));
  for (int q = 0; q < info.nr_hw_queues; ++q) {
    void* p = mmap(nullptr, d->map_size_, PROT_READ, MAP_SHARED | MAP_POPULATE, d->fd_,
                   static_cast<off_t>(UBLKSRV_CMD_BUF_OFFSET + q * stride));
    if (p == MAP_FAILED)
      return Status::FromErrno(errno, path + ": mmap descriptors of queue " + std::to_string(q));
    d->descs_.push_back(static_cast<ublksrv_io_desc*>(p));
  }
  *out = std::move(d);
  return Status::Ok();
}

Device::~Device() {
  for (auto* p : descs_) munmap(p, map_size_);
  if (fd_ >= 0) close(fd_);
}

}  // namespace unbd::frontend
