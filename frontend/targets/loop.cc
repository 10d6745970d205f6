#include "frontend/targets/loop.h"

#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include <spdlog/spdlog.h>

namespace unbd::frontend {

namespace {

enum Sub : uint8_t { kRw = 0, kSync = 1, kDiscard = 2, kZeroRange = 3, kPunchFallback = 4 };

class LoopHandler final : public QueueHandler {
 public:
  LoopHandler(QueueContext* ctx, int fd) : ctx_(ctx), fd_(fd), reqs_(ctx->depth()), done_(ctx->depth()) {}

  void Submit(const IoRequest& req) override {
    reqs_[req.tag] = req;
    done_[req.tag] = 0;
    switch (req.op) {
      case UBLK_IO_OP_READ:
      case UBLK_IO_OP_WRITE:
        IssueRw(req.tag);
        return;
      case UBLK_IO_OP_FLUSH: {
        io_uring_sqe* sqe = ctx_->GetSqe();
        io_uring_prep_fsync(sqe, fd_, IORING_FSYNC_DATASYNC);
        sqe->user_data = TargetUserData(req.tag, kSync);
        return;
      }
      case UBLK_IO_OP_DISCARD:
        Fallocate(req.tag, kDiscard, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE);
        return;
      case UBLK_IO_OP_WRITE_ZEROES:
        if (req.flags & UBLK_IO_F_NOUNMAP)
          Fallocate(req.tag, kZeroRange, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE);
        else
          Fallocate(req.tag, kPunchFallback, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE);
        return;
      default:
        ctx_->Complete(req.tag, -EOPNOTSUPP);
    }
  }

  void OnCqe(uint16_t tag, uint8_t sub, int res) override {
    const IoRequest& req = reqs_[tag];
    switch (sub) {
      case kRw:
        if (res < 0) {
          ctx_->Complete(tag, res);
          return;
        }
        if (res == 0 && req.op == UBLK_IO_OP_READ) {
          // Past the end of a file that shrank underneath us: the rest reads as zeroes.
          std::memset(req.buf + done_[tag], 0, req.length - done_[tag]);
          res = static_cast<int>(req.length - done_[tag]);
        } else if (res == 0) {
          ctx_->Complete(tag, -EIO);
          return;
        }
        done_[tag] += static_cast<uint32_t>(res);
        if (done_[tag] < req.length) {
          IssueRw(tag);  // short transfer: carry on from where it stopped
          return;
        }
        ctx_->Complete(tag, static_cast<int>(req.length));
        return;
      case kSync:
        ctx_->Complete(tag, res);
        return;
      case kDiscard:
        // Discard is a hint; a file system that cannot punch holes simply keeps the blocks.
        ctx_->Complete(tag, res == -EOPNOTSUPP ? 0 : res);
        return;
      case kZeroRange:
        if (res == -EOPNOTSUPP || res == -EINVAL) {
          Fallocate(tag, kPunchFallback, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE);
          return;
        }
        ctx_->Complete(tag, res);
        return;
      case kPunchFallback:
        if (res == -EOPNOTSUPP) {
          spdlog::warn("loop: write-zeroes at {}: file system can neither zero nor punch", req.offset);
          res = -EOPNOTSUPP;
        }
        ctx_->Complete(tag, res);
        return;
    }
  }

 private:
  void IssueRw(uint16_t tag) {
    const IoRequest& req = reqs_[tag];
    uint32_t done = done_[tag];
    io_uring_sqe* sqe = ctx_->GetSqe();
    uint8_t* buf = req.buf + done;
    const uint32_t len = req.length - done;
    const int fixed = ctx_->FixedBufferIndex(buf, len);
    if (req.op == UBLK_IO_OP_READ) {
      if (fixed >= 0) io_uring_prep_read_fixed(sqe, fd_, buf, len, req.offset + done, fixed);
      else io_uring_prep_read(sqe, fd_, buf, len, req.offset + done);
    } else {
      if (fixed >= 0) io_uring_prep_write_fixed(sqe, fd_, buf, len, req.offset + done, fixed);
      else io_uring_prep_write(sqe, fd_, buf, len, req.offset + done);
      if (req.flags & UBLK_IO_F_FUA) sqe->rw_flags = RWF_DSYNC;
    }
    sqe->user_data = TargetUserData(tag, kRw);
  }

  void Fallocate(uint16_t tag, Sub sub, int mode) {
    const IoRequest& req = reqs_[tag];
    io_uring_sqe* sqe = ctx_->GetSqe();
    io_uring_prep_fallocate(sqe, fd_, mode, req.offset, req.length);
    sqe->user_data = TargetUserData(tag, sub);
  }

  QueueContext* ctx_;
  int fd_;
  std::vector<IoRequest> reqs_;
  std::vector<uint32_t> done_;
};

class LoopTarget final : public Target {
 public:
  LoopTarget(std::string path, int fd, uint64_t size, bool direct, bool blockdev)
      : path_(std::move(path)), fd_(fd), size_(size), direct_(direct), blockdev_(blockdev) {}
  ~LoopTarget() override { close(fd_); }

  uint64_t size_bytes() const override { return size_; }
  void AdjustParams(ublk_params*) const override {}
  Status CreateQueueHandler(QueueContext* ctx, std::unique_ptr<QueueHandler>* out) override {
    *out = std::make_unique<LoopHandler>(ctx, fd_);
    return Status::Ok();
  }
  std::string Describe() const override {
    return std::string("loop ") + (blockdev_ ? "bdev=" : "file=") + path_ + " direct_io=" + (direct_ ? "1" : "0");
  }

 private:
  std::string path_;
  int fd_;
  uint64_t size_;
  bool direct_;
  bool blockdev_;
};

}  // namespace

Status CreateLoopTarget(const DeviceConfig& config, std::unique_ptr<Target>* out) {
  const std::string& path = config.file;
  struct stat st;
  if (stat(path.c_str(), &st) != 0) return Status::FromErrno(errno, "loop target -f " + path);
  bool blockdev = S_ISBLK(st.st_mode);
  if (!blockdev && !S_ISREG(st.st_mode))
    return Status::InvalidArgument("loop target -f " + path + ": not a regular file or block device");
  int fd = -1;
  bool direct = false;
  if (config.direct_io) {
    fd = open(path.c_str(), O_RDWR | O_DIRECT | O_CLOEXEC);
    if (fd >= 0) direct = true;
    else if (errno != EINVAL) return Status::FromErrno(errno, "loop target: open " + path);
  }
  if (fd < 0) {
    fd = open(path.c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0) return Status::FromErrno(errno, "loop target: open " + path);
  }
  uint64_t size = static_cast<uint64_t>(st.st_size);
  if (blockdev && ioctl(fd, BLKGETSIZE64, &size) != 0) {
    int err = errno;
    close(fd);
    return Status::FromErrno(err, "loop target: BLKGETSIZE64 " + path);
  }
  size &= ~static_cast<uint64_t>(config.logical_block_size - 1);
  if (size == 0) {
    close(fd);
    return Status::InvalidArgument("loop target -f " + path + ": empty (size it first, e.g. truncate -s 1G " +
                                   path + ")");
  }
  spdlog::info("loop target {}: {} bytes, {}", path, size, direct ? "O_DIRECT" : "buffered");
  *out = std::make_unique<LoopTarget>(path, fd, size, direct, blockdev);
  return Status::Ok();
}

}  // namespace unbd::frontend
