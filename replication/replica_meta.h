// ReplicaMeta: the owner's handle on a replicated volume's metadata (v1::ReplicaSetMeta), which
// lives on the replicas themselves (docs/replication.md, section 2).
//
// Reading is Paxos' "adopt the highest accepted value": among the replicas that promised the
// owner's epoch (a majority), the copy with the highest (written_epoch, config_version) wins, and
// the owner re-commits it at its own epoch with config_version + 1 before serving I/O. Every
// change after that goes one version at a time through CommitChange(): stored with
// PutReplicaMeta on every replica in parallel, committed once a majority of the replica set
// acked it. Replicas refuse a write of any epoch but their current one, so a fenced owner can no
// longer commit. A version that reached only a minority is adopted or superseded by the next
// owner, never half-applied. Thread-safe; commits are serialized.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "common/status.h"
#include "replication/quorum_open.h"
#include "replication/replica_rpc.h"
#include "unbd/v1/volume.pb.h"

namespace unbd::replication {

// (written_epoch, config_version) ordering of two metadata copies.
bool MetaNewer(const v1::ReplicaSetMeta& a, const v1::ReplicaSetMeta& b);

// The copy to adopt among the replicas that accepted `open`; false if none carries metadata.
bool AdoptHighest(const QuorumOpenResult& open, v1::ReplicaSetMeta* out);

class ReplicaMeta {
 public:
  ReplicaMeta(uint64_t epoch, std::string client_id, std::chrono::milliseconds rpc_timeout);

  // Starts from `base` (adopted or freshly built): stores it at this owner's epoch with
  // config_version + 1 on every replica; OK once `required` of them acked (0: a majority).
  Status CommitInitial(v1::ReplicaSetMeta base, size_t required = 0);

  // Applies `mutate` to a copy of the committed metadata and commits the result as the next
  // version. Retries the same proposal (an idempotent retry on replicas that already stored it)
  // until `wait` has passed. FAILED_PRECONDITION when this owner is fenced, UNAVAILABLE when no
  // majority acked; the committed view is unchanged then, and the next change skips the version.
  using Mutator = std::function<Status(v1::ReplicaSetMeta*)>;
  Status CommitChange(const Mutator& mutate,
                      std::chrono::milliseconds wait = std::chrono::milliseconds(0));

  v1::ReplicaSetMeta committed() const;
  uint64_t epoch() const { return epoch_; }

 private:
  // Sends `proposal` to every replica it lists; acks count only from replicas that are the same
  // (address and volume id) in the committed view, so a replacement never votes itself in.
  Status Propose(const v1::ReplicaSetMeta& proposal, size_t required);
  ReplicaRpc& Rpc(const std::string& target);

  const uint64_t epoch_;
  const std::string client_id_;
  const std::chrono::milliseconds rpc_timeout_;
  std::mutex commit_mu_;  // one version at a time
  mutable std::mutex mu_;
  v1::ReplicaSetMeta committed_;  // guarded by mu_
  uint64_t next_version_ = 0;     // guarded by commit_mu_; versions are never reused
  std::map<std::string, std::unique_ptr<ReplicaRpc>> rpcs_;  // guarded by mu_
};

// State names as the CLI and logs print them.
const char* StateName(v1::ReplicaState s);

}  // namespace unbd::replication
