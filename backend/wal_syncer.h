// WalSyncer: group commit for FLUSH and FUA. Sync() returns once a WAL sync that *started after
// the call* has completed, so everything the caller wrote before calling is durable. Concurrent
// callers share syncs: while one sync runs, later callers queue up and the next single sync
// covers all of them (one fsync per group, not per request).
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>

#include "common/status.h"

namespace unbd::backend {

class WalSyncer {
 public:
  // `sync_fn` makes everything written so far durable (RocksDB FlushWAL(true)).
  explicit WalSyncer(std::function<Status()> sync_fn) : sync_fn_(std::move(sync_fn)) {}

  Status Sync();
  uint64_t syncs_done() const;  // number of real syncs issued (for tests and metrics)

 private:
  std::function<Status()> sync_fn_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  uint64_t requested_ = 0;   // last ticket handed out
  uint64_t completed_ = 0;   // every ticket <= completed_ is covered by a finished sync
  bool syncing_ = false;
  uint64_t syncs_ = 0;
  Status last_;
};

}  // namespace unbd::backend
