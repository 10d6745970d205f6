// Status: the error type every unbd component returns across its boundaries (no exceptions in the
// data path). Modelled on LevelDB's Status: cheap when OK, carries a code and a contextual message
// otherwise, e.g. Status::FailedPrecondition("volume 7: epoch 5 is fenced by epoch 6").
#pragma once

#include <cerrno>
#include <string>
#include <string_view>
#include <utility>

namespace unbd {

class Status {
 public:
  // Codes mirror gRPC's so the backend can map them one to one; Errno carries a negative errno for
  // the ublk path, where the kernel wants -EIO, -EINVAL and friends.
  enum class Code {
    kOk = 0,
    kInvalidArgument,
    kNotFound,
    kAlreadyExists,
    kFailedPrecondition,
    kOutOfRange,
    kUnavailable,
    kDeadlineExceeded,
    kAborted,
    kResourceExhausted,
    kIoError,
    kInternal,
  };

  Status() = default;
  static Status Ok() { return Status(); }
  static Status InvalidArgument(std::string msg) { return {Code::kInvalidArgument, std::move(msg)}; }
  static Status NotFound(std::string msg) { return {Code::kNotFound, std::move(msg)}; }
  static Status AlreadyExists(std::string msg) { return {Code::kAlreadyExists, std::move(msg)}; }
  static Status FailedPrecondition(std::string msg) {
    return {Code::kFailedPrecondition, std::move(msg)};
  }
  static Status OutOfRange(std::string msg) { return {Code::kOutOfRange, std::move(msg)}; }
  static Status Unavailable(std::string msg) { return {Code::kUnavailable, std::move(msg)}; }
  static Status DeadlineExceeded(std::string msg) {
    return {Code::kDeadlineExceeded, std::move(msg)};
  }
  static Status Aborted(std::string msg) { return {Code::kAborted, std::move(msg)}; }
  static Status ResourceExhausted(std::string msg) {
    return {Code::kResourceExhausted, std::move(msg)};
  }
  static Status IoError(std::string msg) { return {Code::kIoError, std::move(msg)}; }
  static Status Internal(std::string msg) { return {Code::kInternal, std::move(msg)}; }
  // From a failed system call: "open /dev/ublk-control: No such file or directory".
  static Status FromErrno(int err, std::string_view context);

  bool ok() const { return code_ == Code::kOk; }
  Code code() const { return code_; }
  const std::string& message() const { return message_; }
  // The negative errno the block layer should see for this failure.
  int ToErrno() const;
  std::string ToString() const;

 private:
  Status(Code code, std::string msg) : code_(code), message_(std::move(msg)) {}

  Code code_ = Code::kOk;
  std::string message_;
};

}  // namespace unbd
