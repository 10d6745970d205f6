#include "common/status.h"

#include <cstring>

namespace unbd {

Status Status::FromErrno(int err, std::string_view context) {
  std::string msg(context);
  msg += ": ";
  msg += std::strerror(err < 0 ? -err : err);
  switch (err < 0 ? -err : err) {
    case ENOENT:
    case ENODEV:
      return NotFound(std::move(msg));
    case EEXIST:
      return AlreadyExists(std::move(msg));
    case EINVAL:
      return InvalidArgument(std::move(msg));
    case EBUSY:
    case EAGAIN:
      return Unavailable(std::move(msg));
    case ETIMEDOUT:
      return DeadlineExceeded(std::move(msg));
    case ENOMEM:
    case ENOSPC:
      return ResourceExhausted(std::move(msg));
    default:
      return IoError(std::move(msg));
  }
}

int Status::ToErrno() const {
  switch (code_) {
    case Code::kOk:
      return 0;
    case Code::kInvalidArgument:
      return -EINVAL;
    case Code::kNotFound:
      return -ENODEV;
    case Code::kAlreadyExists:
      return -EEXIST;
    case Code::kOutOfRange:
      return -ERANGE;
    case Code::kResourceExhausted:
      return -ENOSPC;
    case Code::kDeadlineExceeded:
      return -ETIMEDOUT;
    case Code::kUnavailable:
      return -EAGAIN;
    default:
      return -EIO;
  }
}

std::string Status::ToString() const {
  if (ok()) return "OK";
  static constexpr const char* kNames[] = {
      "OK",           "invalid argument", "not found",          "already exists",
      "failed precondition", "out of range", "unavailable",     "deadline exceeded",
      "aborted",      "resource exhausted", "I/O error",        "internal error"};
  return std::string(kNames[static_cast<int>(code_)]) + ": " + message_;
}

}  // namespace unbd
