// WriteFailureLatch: after the store's first failed write or WAL sync (a full disk, an I/O error)
// it takes no more writes until unbd-server restarts. RocksDB cannot promise anything after a WAL
// error: writes acknowledged into its WAL buffer may be lost, so a later FLUSH that "succeeds"
// would lie, and Debian's build asserts (aborting the server) on the next WAL append. Reads go on.
// Every refused write names the first error, which is logged once at error level.
#pragma once

#include <atomic>
#include <mutex>
#include <string>
#include <string_view>

#include <spdlog/spdlog.h>

#include "common/status.h"

namespace unbd::backend {

class WriteFailureLatch {
 public:
  // OK while no write has failed; otherwise why `what` is refused.
  Status Check(std::string_view what) const {
    if (!failed_.load(std::memory_order_acquire)) return Status::Ok();
    return Status::IoError(std::string(what) + ": " + Reason());
  }

  // Passes `s` through; an I/O error latches the store read-only (the first one is kept).
  Status Record(Status s) {
    if (s.ok() || s.code() != Status::Code::kIoError) return s;
    std::lock_guard l(mu_);
    if (!failed_.load(std::memory_order_relaxed)) {
      first_ = s.message();
      failed_.store(true, std::memory_order_release);
      spdlog::error("store: {}; no more writes or flushes until unbd-server is restarted (reads "
                    "go on). Fix the cause (free space on the data disk), then restart it.",
                    first_);
    }
    return s;
  }

  bool failed() const { return failed_.load(std::memory_order_acquire); }

 private:
  std::string Reason() const {
    std::lock_guard l(mu_);
    return "the store stopped taking writes after an earlier failure (" + first_ +
           "); restart unbd-server once the cause is fixed";
  }

  std::atomic<bool> failed_{false};
  mutable std::mutex mu_;
  std::string first_;
};

}  // namespace unbd::backend
