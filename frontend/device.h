// Device: the daemon's side of one ublk device: /dev/ublkcN opened once per process and each
// queue's descriptor array (struct ublksrv_io_desc[depth], written by the driver) mapped read-only.
#pragma once

#include <linux/ublk_cmd.h>

#include <memory>
#include <vector>

#include "common/status.h"

namespace unbd::frontend {

class Device {
 public:
  // Retries briefly while the char device node is still appearing or the previous daemon's file
  // is still being released (recovery).
  static Status Open(const ublksrv_ctrl_dev_info& info, std::unique_ptr<Device>* out);
  ~Device();
  Device(const Device&) = delete;
  Device& operator=(const Device&) = delete;

  int fd() const { return fd_; }
  const ublksrv_ctrl_dev_info& info() const { return info_; }
  const ublksrv_io_desc* descriptors(int queue) const { return descs_[queue]; }

 private:
  Device() = default;
  ublksrv_ctrl_dev_info info_{};
  int fd_ = -1;
  size_t map_size_ = 0;
  std::vector<ublksrv_io_desc*> descs_;
};

}  // namespace unbd::frontend
