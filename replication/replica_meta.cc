#include "replication/replica_meta.h"

#include <spdlog/spdlog.h>

#include <thread>

namespace unbd::replication {

bool MetaNewer(const v1::ReplicaSetMeta& a, const v1::ReplicaSetMeta& b) {
  if (a.written_epoch() != b.written_epoch()) return a.written_epoch() > b.written_epoch();
  return a.config_version() > b.config_version();
}

bool AdoptHighest(const QuorumOpenResult& open, v1::ReplicaSetMeta* out) {
  bool found = false;
  for (const auto& r : open.replicas) {
    if (!r.status.ok() || r.response.replica_set().config_version() == 0) continue;
    if (!found || MetaNewer(r.response.replica_set(), *out)) *out = r.response.replica_set();
    found = true;
  }
  return found;
}

const char* StateName(v1::ReplicaState s) {
  switch (s) {
    case v1::REPLICA_HEALTHY:
      return "healthy";
    case v1::REPLICA_OUT:
      return "out";
    case v1::REPLICA_REBUILDING:
      return "rebuilding";
    default:
      return "unknown";
  }
}

ReplicaMeta::ReplicaMeta(uint64_t epoch, std::string client_id,
                         std::chrono::milliseconds rpc_timeout)
    : epoch_(epoch), client_id_(std::move(client_id)), rpc_timeout_(rpc_timeout) {}

v1::ReplicaSetMeta ReplicaMeta::committed() const {
  std::lock_guard lock(mu_);
  return committed_;
}

ReplicaRpc& ReplicaMeta::Rpc(const std::string& target) {
  std::lock_guard lock(mu_);
  auto& r = rpcs_[target];
  if (!r) r = std::make_unique<ReplicaRpc>(target, rpc_timeout_);
  return *r;
}

Status ReplicaMeta::Propose(const v1::ReplicaSetMeta& proposal, size_t required) {
  const v1::ReplicaSetMeta current = committed();
  const size_t n = proposal.replicas_size();
  std::vector<Status> results(n);
  ForEachParallel(n, [&](size_t i) {
    const auto& r = proposal.replicas(i);
    results[i] = Rpc(r.address()).PutMeta(r.volume_id(), epoch_, proposal);
  });
  size_t acked = 0, fenced = 0;
  std::string errors;
  for (size_t i = 0; i < n; ++i) {
    const auto& r = proposal.replicas(i);
    const bool voter = current.replicas_size() == 0 ||
                       (static_cast<int>(i) < current.replicas_size() &&
                        current.replicas(i).address() == r.address() &&
                        current.replicas(i).volume_id() == r.volume_id());
    if (results[i].ok()) {
      acked += voter;
      continue;
    }
    fenced += IsFenced(results[i]);
    errors += (errors.empty() ? "" : "; ") + r.address() + ": " + results[i].ToString();
  }
  if (acked >= required) return Status::Ok();
  const std::string msg = "replica metadata v" + std::to_string(proposal.config_version()) +
                          " at epoch " + std::to_string(epoch_) + ": stored by " +
                          std::to_string(acked) + " of " + std::to_string(n) + " replicas (need " +
                          std::to_string(required) + "): " + errors;
  if (fenced > 0) return Status::FailedPrecondition(msg + " (fenced: a newer owner exists)");
  return Status::Unavailable(msg);
}

Status ReplicaMeta::CommitInitial(v1::ReplicaSetMeta base, size_t required) {
  std::lock_guard commit(commit_mu_);
  base.set_written_epoch(epoch_);
  base.set_config_version(base.config_version() + 1);
  base.set_owner_client_id(client_id_);
  base.set_updated_unix_ms(std::chrono::duration_cast<std::chrono::milliseconds>(
                               std::chrono::system_clock::now().time_since_epoch())
                               .count());
  next_version_ = base.config_version() + 1;
  if (required == 0) required = Majority(base.replicas_size());
  {
    // Adoption: every replica of the adopted set may vote.
    std::lock_guard lock(mu_);
    committed_.Clear();
  }
  Status s = Propose(base, required);
  if (!s.ok()) return s;
  std::lock_guard lock(mu_);
  committed_ = std::move(base);
  return s;
}

Status ReplicaMeta::CommitChange(const Mutator& mutate, std::chrono::milliseconds wait) {
  std::lock_guard commit(commit_mu_);
  v1::ReplicaSetMeta proposal = committed();
  if (proposal.config_version() == 0) {
    return Status::FailedPrecondition("replica metadata: nothing committed yet at epoch " +
                                      std::to_string(epoch_));
  }
  Status s = mutate(&proposal);
  if (!s.ok()) return s;
  proposal.set_written_epoch(epoch_);
  proposal.set_config_version(next_version_++);
  proposal.set_owner_client_id(client_id_);
  proposal.set_updated_unix_ms(std::chrono::duration_cast<std::chrono::milliseconds>(
                                   std::chrono::system_clock::now().time_since_epoch())
                                   .count());
  const auto deadline = std::chrono::steady_clock::now() + wait;
  const size_t need = Majority(proposal.replicas_size());
  for (;;) {
    s = Propose(proposal, need);
    if (s.ok() || IsFenced(s) || s.code() == Status::Code::kFailedPrecondition ||
        std::chrono::steady_clock::now() >= deadline) {
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  if (!s.ok()) {
    spdlog::warn("{}", s.message());
    return s;
  }
  std::lock_guard lock(mu_);
  committed_ = std::move(proposal);
  return s;
}

}  // namespace unbd::replication
