// QuorumOpen: a frontend incarnation claims a replicated volume by getting a majority of its
// replicas to accept a new epoch (docs/replication.md, "Opening is a quorum act").
//
// Epochs are ballots: (round << kBallotTagBits) | tag, where tag is derived from the client id, so
// two openers racing in the same round still propose different epochs. Each replica's
// OpenVolume(E) is a durable promise (unbd-server syncs it before answering) never to apply a data
// request of an epoch below E. Phase 1 reads the epochs a majority has promised and picks the
// next round; phase 2 asks every replica to promise it. The open succeeds only if a majority
// promised; any two majorities share a replica, and that replica holds exactly one epoch at a
// time, so of two openers at most one can have its epoch current on a majority: the other's
// writes are fenced there (FAILED_PRECONDITION) and it can never acknowledge one.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"
#include "unbd/v1/io.pb.h"

namespace unbd::replication {

inline constexpr int kBallotTagBits = 16;

// One replica of a volume: its server and the volume's id there (ids are per server).
struct ReplicaAddr {
  std::string target;  // host:port
  uint64_t volume_id = 0;
};

// A replicated volume has 1 to this many replicas (per-replica state is kept in fixed arrays).
inline constexpr size_t kMaxReplicas = 5;

inline size_t Majority(size_t replicas) {
  return replicas / 2 + 1;
}

// The proposer tag of a client id: stable, never 0 (so tag 0 marks a pre-replication epoch).
uint32_t BallotTag(const std::string& client_id);
inline uint64_t MakeBallot(uint64_t round, uint32_t tag) {
  return (round << kBallotTagBits) | tag;
}
inline uint64_t BallotRound(uint64_t epoch) {
  return epoch >> kBallotTagBits;
}

struct QuorumOpenOptions {
  std::string client_id;  // non-empty, unique per frontend incarnation
  uint64_t epoch = 0;     // 0: choose the next ballot; else propose exactly this
  // With epoch 0: the highest epoch a majority of the replicas reported in the caller's own
  // lookup just before (0: unknown). Phase 1 is then skipped and the ballot follows it; if a
  // replica refuses that ballot as fenced, the open goes through both phases once more.
  uint64_t known_epoch = 0;
  std::chrono::milliseconds rpc_timeout{2000};
};

struct ReplicaOpenResult {
  Status status;                    // of OpenVolume (or of the phase-1 read if that already failed)
  uint64_t seen_epoch = 0;          // the replica's epoch from phase 1 (0 if unknown)
  v1::OpenVolumeResponse response;  // when status.ok()
};

struct QuorumOpenResult {
  uint64_t epoch = 0;                       // the proposed ballot
  size_t accepted = 0;                      // replicas that promised it
  std::vector<ReplicaOpenResult> replicas;  // same order as the replica list
  uint64_t size_bytes = 0;                  // the largest among the accepting replicas
};

// Opens the volume on `replicas` (all RPCs in parallel). OK only if a majority of
// replicas.size() promised the epoch; otherwise FAILED_PRECONDITION (fenced
// by a higher or racing epoch) or UNAVAILABLE (too few replicas answered), with every replica's
// answer in the message. `*out` is filled either way.
Status QuorumOpen(const std::vector<ReplicaAddr>& replicas, const QuorumOpenOptions& options,
                  QuorumOpenResult* out);

}  // namespace unbd::replication
