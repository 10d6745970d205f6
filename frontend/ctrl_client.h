// CtrlClient: the ublk control commands, sent as IORING_OP_URING_CMD with 128-byte SQEs on
// /dev/ublk-control. Each call is synchronous (submit, wait for the one completion). Failures carry
// the device id, the command and the driver's errno, e.g.
// "device 3: START_USER_RECOVERY: Device or resource busy"; EBUSY maps to Status::Unavailable,
// ENODEV (no such device) to Status::NotFound. Not thread-safe: one client per thread.
#pragma once

#include <liburing.h>
#include <linux/ublk_cmd.h>
#include <sched.h>
#include <sys/types.h>

#include <memory>

#include "common/status.h"

namespace unbd::frontend {

inline constexpr const char* kUblkControlPath = "/dev/ublk-control";

class CtrlClient {
 public:
  // NotFound with a hint about loading the module when /dev/ublk-control is missing.
  static Status Open(std::unique_ptr<CtrlClient>* out);
  ~CtrlClient();
  CtrlClient(const CtrlClient&) = delete;
  CtrlClient& operator=(const CtrlClient&) = delete;

  // `info->dev_id` may be -1 (driver picks); on success `info` holds what the driver granted
  // (id, queues, max I/O size, negotiated flags).
  Status AddDevice(ublksrv_ctrl_dev_info* info);
  Status DeleteDevice(int dev_id);
  // Blocks in the driver until every queue has fetched every tag.
  Status StartDevice(int dev_id, pid_t daemon_pid);
  Status StopDevice(int dev_id);
  Status SetParams(int dev_id, const ublk_params& params);
  Status GetParams(int dev_id, ublk_params* params);
  Status GetDeviceInfo(int dev_id, ublksrv_ctrl_dev_info* info);
  Status GetQueueAffinity(int dev_id, int queue, cpu_set_t* cpus);
  Status StartUserRecovery(int dev_id);
  // Blocks in the driver until the new daemon's queues have fetched every tag.
  Status EndUserRecovery(int dev_id, pid_t daemon_pid);

 private:
  CtrlClient() = default;
  Status Run(const char* name, uint32_t op, const ublksrv_ctrl_cmd& cmd);

  int fd_ = -1;
  io_uring ring_{};
  bool ring_ok_ = false;
};

const char* DeviceStateName(int state);

}  // namespace unbd::frontend
