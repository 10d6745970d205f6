// ReplicaRpc: the owner's calls to one replica's unbd-server (BlockIo, VolumeAdmin and the
// Replication primitives of proto/unbd/v1/replication.proto), each with a deadline and returning
// unbd::Status with the server's code and message. Plus the small helpers every owner-side piece
// shares: parallel fan-out, fencing detection, replica uuids.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "common/status.h"
#include "replication/region_sets.h"
#include "unbd/v1/io.grpc.pb.h"
#include "unbd/v1/replication.grpc.pb.h"
#include "unbd/v1/volume.grpc.pb.h"

namespace unbd::replication {

// Runs fn(i) for i in [0, n) on separate threads: a dead replica costs one timeout, not n.
void ForEachParallel(size_t n, const std::function<void(size_t)>& fn);

// A newer owner holds the replica. The server answers FAILED_PRECONDITION both for "fenced by a
// newer epoch" and for "this epoch was never opened here" (a replica that missed our open: a
// replica failure, not a newer owner); unary answers carry only the message to tell them apart.
bool IsFenced(const Status& s);

// The replica refused a request because the server generation it carried is gone: the server
// restarted after an unclean stop (kill -9, power loss) and may have lost every write it
// acknowledged since its last FLUSH. The server answers ABORTED naming the generation.
bool IsGenerationGone(const Status& s);

// The process's one channel to `target` (backend::MakeChannel) for as long as anyone holds it. An
// owner's lookups, quorum open and replica calls, and a standby's warm connections all share it:
// a new channel costs a resolver round and a load-balancing pick before its first call (tens of
// ms under TCG), even when gRPC's subchannel pool already has the connection.
std::shared_ptr<grpc::Channel> SharedChannel(const std::string& target);

// A random RFC 4122 version-4 uuid: the identity of one copy of a volume.
std::string NewReplicaUuid();

class ReplicaRpc {
 public:
  ReplicaRpc(std::string target, std::chrono::milliseconds timeout);
  const std::string& target() const { return target_; }

  // Runs call() (one of this replica's calls) and, while it fails to connect for any reason but a
  // refusal, asks again after a short pause until the timeout has passed. A refused connection is
  // a server that is down: answered at once. Anything else is not an answer yet: a handshake that
  // failed or timed out on a loaded machine, or a connection that broke under the call (its server
  // died; gRPC hands back that failure until its next connection attempt has failed too). Never
  // waits for the channel with wait_for_ready: a call that does waits through every refusal of a
  // dead server until its deadline.
  Status RetryUnlessRefused(const std::function<Status()>& call) const;

  Status Open(uint64_t volume_id, uint64_t epoch, const std::string& client_id,
              v1::OpenVolumeResponse* out);
  // wait_for_ready: a replica that just came back is waited for (within the timeout) instead of
  // failing at once while the channel is still in its reconnect backoff (a probe).
  Status Stat(const v1::VolumeRef& ref, v1::Volume* out, bool wait_for_ready = false);
  Status Create(const std::string& name, uint64_t size_bytes, const std::string& uuid,
                v1::Volume* out);
  Status Delete(uint64_t volume_id);
  // Grows the copy to `size_bytes` as the owner of `epoch` (the server refuses a replica's
  // resize without the current epoch). A copy at least that large already is OK: it only got
  // there through an owner's committed resize, and nothing was written past the committed size.
  Status Grow(uint64_t volume_id, uint64_t size_bytes, uint64_t epoch, v1::Volume* out = nullptr);

  // Data requests: `generation` is the server generation from Open (0 = unchecked); a server
  // that restarted after a crash since refuses it (IsGenerationGone).
  Status Read(uint64_t volume_id, uint64_t epoch, uint64_t offset, uint32_t length,
              std::string* out, uint64_t generation = 0);
  Status Write(uint64_t volume_id, uint64_t epoch, uint64_t offset, std::string_view data, bool fua,
               uint32_t out_mask, uint64_t generation = 0);
  Status Zero(uint64_t volume_id, uint64_t epoch, uint64_t offset, uint64_t length, bool discard,
              uint32_t out_mask, uint64_t generation = 0);
  Status Flush(uint64_t volume_id, uint64_t epoch, uint64_t generation = 0);
  // Per-block checksums of `count` blocks from `start_block` (VolumeAdmin.BlockChecksums: an
  // unfenced read of what the replica holds now, unwritten blocks as zeros).
  Status Checksums(uint64_t volume_id, uint64_t start_block, uint32_t count, std::vector<uint64_t>* out);

  Status PutMeta(uint64_t volume_id, uint64_t epoch, const v1::ReplicaSetMeta& meta);
  // Regions of one set (ascending) and the replica's region size.
  Status GetRegions(uint64_t volume_id, uint32_t set, std::vector<uint64_t>* regions,
                    uint64_t* region_bytes);
  // Region count of every non-empty set.
  Status CountRegions(uint64_t volume_id, std::vector<v1::RegionSetCount>* counts,
                      uint64_t* region_bytes);
  Status MarkRegions(uint64_t volume_id, uint64_t epoch, uint32_t set,
                     const std::vector<uint64_t>& regions);
  // all: the whole set (`regions` ignored).
  Status ClearRegions(uint64_t volume_id, uint64_t epoch, uint32_t set,
                      const std::vector<uint64_t>& regions, bool all);

 private:
  void Arm(grpc::ClientContext* ctx) const;

  std::string target_;
  std::chrono::milliseconds timeout_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::BlockIo::Stub> io_;
  std::unique_ptr<v1::VolumeAdmin::Stub> admin_;
  std::unique_ptr<v1::Replication::Stub> repl_;
};

}  // namespace unbd::replication
