#include "backend/rocksdb_info_log.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <ctime>
#include <string>

namespace unbd::backend {

Status RocksInfoLog::Open(const std::string& dir, uint64_t max_bytes,
                          std::shared_ptr<RocksInfoLog>* out) {
  std::shared_ptr<RocksInfoLog> log(new RocksInfoLog(dir + "/LOG", max_bytes));
  // Appends: a second server started on the same directory (refused a moment later, RocksDB's
  // LOCK) must not rotate away the log of the one running.
  log->fd_ = ::open(log->path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log->fd_ < 0) return Status::FromErrno(errno, "data directory " + dir + ": cannot open LOG");
  struct stat st;
  if (::fstat(log->fd_, &st) == 0) log->bytes_.store(st.st_size, std::memory_order_relaxed);
  *out = std::move(log);
  return Status::Ok();
}

RocksInfoLog::~RocksInfoLog() {
  if (fd_ >= 0) ::close(fd_);
}

bool RocksInfoLog::Rotate() {
  if (fd_ >= 0) ::close(fd_);
  ::rename(path_.c_str(), (path_ + ".old").c_str());
  fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644);
  bytes_.store(0, std::memory_order_relaxed);
  return fd_ >= 0;
}

void RocksInfoLog::Logv(const char* format, va_list ap) {
  // RocksDB's line format: "2026/12/06-05:40:01.123456 140123456 message".
  char line[4096];
  const auto now = std::chrono::system_clock::now();
  const std::time_t secs = std::chrono::system_clock::to_time_t(now);
  const auto micros =
      std::chrono::duration_cast<std::chrono::microseconds>(now.time_since_epoch()).count() %
      1000000;
  std::tm tm;
  localtime_r(&secs, &tm);
  int n =
      std::snprintf(line, sizeof(line), "%04d/%02d/%02d-%02d:%02d:%02d.%06lld %ld ",
                    tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                    static_cast<long long>(micros), static_cast<long>(::syscall(SYS_gettid)));
  va_list copy;
  va_copy(copy, ap);
  const int m = std::vsnprintf(line + n, sizeof(line) - n, format, copy);
  va_end(copy);
  std::string big;  // a long message (RocksDB's periodic stats dump) does not fit the stack buffer
  char* text = line;
  size_t len = n + static_cast<size_t>(m < 0 ? 0 : m);
  if (len + 1 >= sizeof(line)) {
    big.assign(line, n);
    big.resize(len + 1);
    std::vsnprintf(big.data() + n, m + 1, format, ap);
    text = big.data();
  }
  if (len == 0 || text[len - 1] != '\n') text[len++] = '\n';

  std::lock_guard l(mu_);
  if (max_bytes_ > 0 && bytes_.load(std::memory_order_relaxed) + len > max_bytes_ && !Rotate())
    return;
  // One write per line; a failure (a full disk) loses the line and nothing else.
  if (fd_ >= 0 && ::write(fd_, text, len) == static_cast<ssize_t>(len))
    bytes_.fetch_add(len, std::memory_order_relaxed);
}

}  // namespace unbd::backend
