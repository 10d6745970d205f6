#include "backend/wal_syncer.h"

namespace unbd::backend {

Status WalSyncer::Sync() {
  std::unique_lock l(mu_);
  const uint64_t ticket = ++requested_;
  for (;;) {
    if (completed_ >= ticket) return last_;
    if (syncing_) {
      cv_.wait(l);
      continue;
    }
    // Become the leader: this sync covers every ticket handed out so far, because those callers
    // finished writing before they took their ticket.
    syncing_ = true;
    const uint64_t covers = requested_;
    l.unlock();
    Status s = sync_fn_();
    l.lock();
    syncing_ = false;
    ++syncs_;
    completed_ = covers;
    last_ = s;
    cv_.notify_all();
  }
}

uint64_t WalSyncer::syncs_done() const {
  std::lock_guard l(mu_);
  return syncs_;
}

}  // namespace unbd::backend
