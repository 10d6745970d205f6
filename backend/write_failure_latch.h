// WriteFailureLatch: after the store's first failed write or WAL sync (a full disk, an I/O error)
// it takes no more writes until unbd-server restarts. RocksDB cannot promise anything after a WAL
// error: writes acknowledged into its WAL buffer may be lost, so a later FLUSH that "succeeds"
// would lie, and Debian's build asserts (aborting the server) on the next WAL append. Reads go on.
// Every refused write names the first error, which is logged once at error level.
//
// Writes and WAL syncs go through Write() and SyncWal(), which exclude each other: a write that
// fails latches before it lets a sync run, and a sync after that is refused. With the check alone,
// a FLUSH from another stream could touch the WAL between a failed append and its latch, where
// Debian's build of RocksDB asserts and aborts the server.
#pragma once

#include <atomic>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <string_view>

#include <spdlog/spdlog.h>

#include "backend/fence_lock.h"
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

  // One store write (`write()` returns its Status): refused once latched, latched if it fails.
  // Concurrent with other writes; excludes SyncWal.
  template <typename WriteFn>
  Status Write(std::string_view what, WriteFn&& write) {
    std::shared_lock l(wal_lock_);
    Status s = Check(what);
    if (!s.ok()) return s;
    return Record(write());
  }

  // Writes RocksDB's WAL buffer out and syncs it (`sync()`, FlushWAL(true)): refused once
  // latched, run while no write is appending to the WAL. Both halves need it: RocksDB asserts in
  // Flush and in SyncWithoutFlush on a WAL writer that saw an error. Writes wait for the sync, as
  // they do in RocksDB's own synced writes; the sync is one per group commit.
  template <typename SyncFn>
  Status SyncWal(SyncFn&& sync) {
    std::unique_lock l(wal_lock_);
    Status s = Check("WAL sync");
    if (!s.ok()) return s;
    return Record(sync());
  }

 private:
  std::string Reason() const {
    std::lock_guard l(mu_);
    return "the store stopped taking writes after an earlier failure (" + first_ +
           "); restart unbd-server once the cause is fixed";
  }

  // Writer-preferring, so a sync is not starved by a constant stream of writes.
  FenceLock wal_lock_;
  std::atomic<bool> failed_{false};
  mutable std::mutex mu_;
  std::string first_;
};

}  // namespace unbd::backend
