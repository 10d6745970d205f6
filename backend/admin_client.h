// Clients of unbd-server for tools and tests: AdminClient (VolumeAdmin), IoClient (BlockIo
// unary calls) and ReplicationClient (Replication). Both return unbd::Status with the server's code and message. The frontend's
// high-throughput path uses the BlockIo stream directly (proto/unbd/v1/io.proto, io_frame.h).
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "common/status.h"
#include "unbd/v1/io.grpc.pb.h"
#include "unbd/v1/replication.grpc.pb.h"
#include "unbd/v1/volume.grpc.pb.h"

namespace unbd::backend {

// Every client's channel to an unbd-server: message limits that fit ServerLimits, and a lost
// connection retried quickly (attempts 100 ms apart backing off to 1 s, re-resolving after 100 ms)
// instead of gRPC's defaults (backoff growing to 120 s, re-resolution at most every 30 s), so a
// server that returns after a crash or reboot is used again within about a second, well inside a
// frontend's retry deadline or a replicated write's quorum wait. own_connection: a separate TCP
// connection rather than gRPC's shared one (one per frontend queue spreads load).
std::shared_ptr<grpc::Channel> MakeChannel(const std::string& target, bool own_connection = false);

Status FromGrpc(const grpc::Status& s);

// "12" names volume id 12, anything else a volume name.
v1::VolumeRef ParseVolumeRef(const std::string& s);

class AdminClient {
 public:
  explicit AdminClient(std::shared_ptr<grpc::Channel> channel);
  explicit AdminClient(const std::string& target) : AdminClient(MakeChannel(target)) {}

  Status Create(const std::string& name, uint64_t size_bytes, v1::Volume* out);
  // A replica of a replicated volume: `replica_uuid` names this copy (1-64 of [A-Za-z0-9-]).
  Status Create(const std::string& name, uint64_t size_bytes, const std::string& replica_uuid,
                v1::Volume* out);
  Status Delete(const v1::VolumeRef& ref);
  Status List(std::vector<v1::Volume>* out);
  Status Stat(const v1::VolumeRef& ref, v1::Volume* out);
  // epoch: only for a replica (the owner's resize, ResizeVolumeRequest.epoch); 0 otherwise.
  Status Resize(const v1::VolumeRef& ref, uint64_t new_size_bytes, v1::Volume* out,
                uint64_t epoch = 0);
  Status Checksums(const v1::VolumeRef& ref, uint64_t start_block, uint32_t count,
                   std::vector<uint64_t>* out);

 private:
  std::unique_ptr<v1::VolumeAdmin::Stub> stub_;
};

class IoClient {
 public:
  explicit IoClient(std::shared_ptr<grpc::Channel> channel);
  explicit IoClient(const std::string& target) : IoClient(MakeChannel(target)) {}

  // Also remembers the server generation: later data calls carry it, so they fail with ABORTED
  // if the server has restarted after a crash since (unflushed writes may be lost).
  Status Open(uint64_t volume_id, uint64_t epoch, const std::string& client_id,
              v1::OpenVolumeResponse* out = nullptr);
  Status Read(uint64_t volume_id, uint64_t epoch, uint64_t offset, uint32_t length,
              std::string* out);
  // out_mask: replicated volumes, see IoRequest.out_mask.
  Status Write(uint64_t volume_id, uint64_t epoch, uint64_t offset, std::string_view data,
               bool fua = false, uint32_t out_mask = 0);
  Status ZeroRange(uint64_t volume_id, uint64_t epoch, uint64_t offset, uint64_t length,
                   bool discard, bool fua = false, uint32_t out_mask = 0);
  Status Flush(uint64_t volume_id, uint64_t epoch);

  uint64_t server_generation() const { return server_generation_; }
  void set_server_generation(uint64_t g) { server_generation_ = g; }  // 0: unchecked
  v1::BlockIo::Stub* stub() { return stub_.get(); }

 private:
  std::unique_ptr<v1::BlockIo::Stub> stub_;
  uint64_t server_generation_ = 0;
};

class ReplicationClient {
 public:
  explicit ReplicationClient(std::shared_ptr<grpc::Channel> channel);
  explicit ReplicationClient(const std::string& target) : ReplicationClient(MakeChannel(target)) {}

  Status PutMeta(uint64_t volume_id, uint64_t epoch, const v1::ReplicaSetMeta& meta);
  Status GetDirty(uint64_t volume_id, uint32_t set, bool counts_only,
                  v1::GetDirtyRegionsResponse* out);
  Status MarkDirty(uint64_t volume_id, uint64_t epoch, uint32_t set,
                   const std::vector<uint64_t>& regions);
  // all: clear the whole set (regions ignored).
  Status ClearDirty(uint64_t volume_id, uint64_t epoch, uint32_t set,
                    const std::vector<uint64_t>& regions, bool all = false);

 private:
  std::unique_ptr<v1::Replication::Stub> stub_;
};

}  // namespace unbd::backend
