// ReplicatedVolume: the owner side of a replicated volume over unary BlockIo calls — create on N
// servers, quorum open, write fan-out with the ack and mark-out rules, reads from one healthy
// replica with fallback (docs/replication.md, sections 1 and 3). It is the reference model the
// frontend's per-queue streaming target will follow, and what the CLI and tests use.
//
// Not yet: a mark-out is recorded only in this object (replica metadata on a majority needs the
// PutReplicaMeta RPC, next step), and out replicas are not resynced. What it already guarantees:
// a write is acknowledged only when every healthy replica applied it, and the healthy set never
// drops below a majority; with fewer replicas answering, the write is retried for `quorum_wait`
// and then fails, never acknowledged on a minority. A fenced answer fails the incarnation.
// Thread-safe; concurrent writes must not overlap (the block layer's rule).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "replication/quorum_open.h"

namespace unbd::replication {

enum class ReplicaState { kHealthy, kOut };
const char* ReplicaStateName(ReplicaState s);

struct ReplicatedVolumeOptions {
  std::string client_id;
  std::chrono::milliseconds rpc_timeout{2000};   // per replica per attempt
  std::chrono::milliseconds quorum_wait{30000};  // how long a write waits for a majority
};

class ReplicatedVolume {
 public:
  // Creates volume `name` on every target; all must succeed (the ones created are deleted
  // otherwise). `*out` is the replica set in target order.
  static Status Create(const std::vector<std::string>& targets, const std::string& name,
                       uint64_t size_bytes, std::vector<ReplicaAddr>* out);

  // Quorum-opens the volume; replicas that did not accept the epoch start out.
  static Status Open(const std::vector<ReplicaAddr>& replicas,
                     const ReplicatedVolumeOptions& options,
                     std::unique_ptr<ReplicatedVolume>* out);
  ~ReplicatedVolume();

  Status Write(uint64_t offset, std::string_view data, bool fua = false);
  Status Read(uint64_t offset, uint32_t length, std::string* out);
  Status Flush();

  void set_quorum_wait(std::chrono::milliseconds wait) { options_.quorum_wait = wait; }
  uint64_t epoch() const { return epoch_; }
  uint64_t size_bytes() const { return size_bytes_; }
  std::vector<ReplicaState> states() const;

 private:
  struct Replica;
  enum class Op { kWrite, kFlush };
  ReplicatedVolume() = default;
  // Sends the op to every healthy replica and applies the ack/mark-out rules.
  Status FanOut(Op op, uint64_t offset, std::string_view data, bool fua);
  Status SendOne(Replica& r, Op op, uint64_t offset, std::string_view data, bool fua);

  ReplicatedVolumeOptions options_;
  uint64_t epoch_ = 0;
  uint64_t size_bytes_ = 0;
  std::vector<std::unique_ptr<Replica>> replicas_;
  mutable std::mutex mu_;  // guards replica states and fenced_
  Status fenced_;          // set once a replica reported a newer epoch
};

}  // namespace unbd::replication
