// RocksInfoLog: RocksDB's informational log (`<data dir>/LOG`), written so that a full disk can
// never take the server down. RocksDB's own file logger appends through a WritableFileWriter,
// which in Debian's (assert-enabled) build aborts the process on the first log line after a
// failed append: with the data disk full, the next flush or error message killed unbd-server.
// Here each line is one write(2); a failed write loses that line and nothing else.
//
// The file keeps RocksDB's name and line format (tests and operators grep it for flush events);
// runs append to it, and past `max_bytes` it is renamed to LOG.old and started afresh.
#pragma once

#include <rocksdb/env.h>

#include <atomic>
#include <cstdarg>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "common/status.h"

namespace unbd::backend {

class RocksInfoLog : public rocksdb::Logger {
 public:
  static Status Open(const std::string& dir, uint64_t max_bytes,
                     std::shared_ptr<RocksInfoLog>* out);
  ~RocksInfoLog() override;

  using rocksdb::Logger::Logv;
  void Logv(const char* format, va_list ap) override;
  size_t GetLogFileSize() const override { return bytes_.load(std::memory_order_relaxed); }

 private:
  RocksInfoLog(std::string path, uint64_t max_bytes)
      : path_(std::move(path)), max_bytes_(max_bytes) {}
  bool Rotate();  // renames the file to LOG.old and starts a new one; needs mu_

  const std::string path_;
  const uint64_t max_bytes_;
  std::mutex mu_;  // guards fd_ across a rotation
  int fd_ = -1;
  std::atomic<uint64_t> bytes_{0};
};

}  // namespace unbd::backend
