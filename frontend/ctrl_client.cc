#include "frontend/ctrl_client.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

namespace unbd::frontend {

const char* DeviceStateName(int state) {
  switch (state) {
    case UBLK_S_DEV_DEAD:
      return "DEAD";
    case UBLK_S_DEV_LIVE:
      return "LIVE";
    case UBLK_S_DEV_QUIESCED:
      return "QUIESCED";
  }
  return "UNKNOWN";
}

Status CtrlClient::Open(std::unique_ptr<CtrlClient>* out) {
  std::unique_ptr<CtrlClient> c(new CtrlClient());
  c->fd_ = open(kUblkControlPath, O_RDWR | O_CLOEXEC);
  if (c->fd_ < 0) {
    int err = errno;
    if (err == ENOENT)
      return Status::NotFound(std::string(kUblkControlPath) +
                              " is missing: the ublk driver is not loaded (modprobe ublk_drv, or "
                              "insmod unbd_ublk.ko)");
    return Status::FromErrno(err, std::string("open ") + kUblkControlPath);
  }
  int r = io_uring_queue_init(4, &c->ring_, IORING_SETUP_SQE128);
  if (r < 0) return Status::FromErrno(-r, "io_uring_queue_init(SQE128) for ublk control");
  c->ring_ok_ = true;
  *out = std::move(c);
  return Status::Ok();
}

CtrlClient::~CtrlClient() {
  if (ring_ok_) io_uring_queue_exit(&ring_);
  if (fd_ >= 0) close(fd_);
}

Status CtrlClient::Run(const char* name, uint32_t op, const ublksrv_ctrl_cmd& cmd) {
  io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
  if (!sqe) return Status::Internal("ublk control ring full");
  // A 128-byte SQE: the first 64 bytes are the normal header, the command payload follows.
  std::memset(sqe, 0, 2 * sizeof(*sqe));
  sqe->opcode = IORING_OP_URING_CMD;
  sqe->fd = fd_;
  sqe->cmd_op = op;
  std::memcpy(sqe->cmd, &cmd, sizeof(cmd));
  int r = io_uring_submit(&ring_);
  if (r < 0) return Status::FromErrno(-r, std::string(name) + ": io_uring_submit");
  io_uring_cqe* cqe = nullptr;
  do {
    r = io_uring_wait_cqe(&ring_, &cqe);
  } while (r == -EINTR);
  if (r < 0) return Status::FromErrno(-r, std::string(name) + ": io_uring_wait_cqe");
  int res = cqe->res;
  io_uring_cqe_seen(&ring_, cqe);
  if (res < 0) {
    std::string ctx = cmd.dev_id == static_cast<uint32_t>(-1) ? std::string(name)
                                                               : "device " + std::to_string(cmd.dev_id) + ": " + name;
    return Status::FromErrno(-res, ctx);
  }
  return Status::Ok();
}

static ublksrv_ctrl_cmd Header(int dev_id) {
  ublksrv_ctrl_cmd c{};
  c.dev_id = static_cast<uint32_t>(dev_id);
  c.queue_id = static_cast<uint16_t>(-1);
  return c;
}

Status CtrlClient::AddDevice(ublksrv_ctrl_dev_info* info) {
  ublksrv_ctrl_cmd c = Header(static_cast<int>(info->dev_id));
  c.addr = reinterpret_cast<uint64_t>(info);
  c.len = sizeof(*info);
  return Run("ADD_DEV", UBLK_CMD_ADD_DEV, c);
}

Status CtrlClient::DeleteDevice(int dev_id) { return Run("DEL_DEV", UBLK_CMD_DEL_DEV, Header(dev_id)); }

Status CtrlClient::StartDevice(int dev_id, pid_t pid) {
  ublksrv_ctrl_cmd c = Header(dev_id);
  c.data[0] = static_cast<uint64_t>(pid);
  return Run("START_DEV", UBLK_CMD_START_DEV, c);
}

Status CtrlClient::StopDevice(int dev_id) { return Run("STOP_DEV", UBLK_CMD_STOP_DEV, Header(dev_id)); }

Status CtrlClient::SetParams(int dev_id, const ublk_params& params) {
  ublk_params p = params;
  p.len = sizeof(p);
  ublksrv_ctrl_cmd c = Header(dev_id);
  c.addr = reinterpret_cast<uint64_t>(&p);
  c.len = sizeof(p);
  return Run("SET_PARAMS", UBLK_CMD_SET_PARAMS, c);
}

Status CtrlClient::GetParams(int dev_id, ublk_params* params) {
  std::memset(params, 0, sizeof(*params));
  params->len = sizeof(*params);
  ublksrv_ctrl_cmd c = Header(dev_id);
  c.addr = reinterpret_cast<uint64_t>(params);
  c.len = sizeof(*params);
  return Run("GET_PARAMS", UBLK_CMD_GET_PARAMS, c);
}

Status CtrlClient::GetDeviceInfo(int dev_id, ublksrv_ctrl_dev_info* info) {
  std::memset(info, 0, sizeof(*info));
  ublksrv_ctrl_cmd c = Header(dev_id);
  c.addr = reinterpret_cast<uint64_t>(info);
  c.len = sizeof(*info);
  return Run("GET_DEV_INFO", UBLK_CMD_GET_DEV_INFO, c);
}

Status CtrlClient::GetQueueAffinity(int dev_id, int queue, cpu_set_t* cpus) {
  CPU_ZERO(cpus);
  ublksrv_ctrl_cmd c = Header(dev_id);
  c.data[0] = static_cast<uint64_t>(queue);
  c.addr = reinterpret_cast<uint64_t>(cpus);
  c.len = sizeof(*cpus);
  return Run("GET_QUEUE_AFFINITY", UBLK_CMD_GET_QUEUE_AFFINITY, c);
}

Status CtrlClient::StartUserRecovery(int dev_id) {
  return Run("START_USER_RECOVERY", UBLK_CMD_START_USER_RECOVERY, Header(dev_id));
}

Status CtrlClient::EndUserRecovery(int dev_id, pid_t pid) {
  ublksrv_ctrl_cmd c = Header(dev_id);
  c.data[0] = static_cast<uint64_t>(pid);
  return Run("END_USER_RECOVERY", UBLK_CMD_END_USER_RECOVERY, c);
}

}  // namespace unbd::frontend
