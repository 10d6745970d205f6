// ReplicationService: the gRPC face of the Store's replication primitives, unbd.v1.Replication
// (proto/unbd/v1/replication.proto): replica metadata writes and dirty-region sets, each fenced by
// the volume's epoch (except GetDirtyRegions) and synced before it answers. The owner of a
// replicated volume drives them; see docs/replication.md.
#pragma once

#include <grpcpp/grpcpp.h>

#include "backend/metrics.h"
#include "backend/store.h"
#include "unbd/v1/replication.grpc.pb.h"

namespace unbd::backend {

class ReplicationService final : public v1::Replication::Service {
 public:
  explicit ReplicationService(Store* store) : store_(store) {}

  grpc::Status PutReplicaMeta(grpc::ServerContext*, const v1::PutReplicaMetaRequest*,
                              v1::PutReplicaMetaResponse*) override;
  grpc::Status GetDirtyRegions(grpc::ServerContext*, const v1::GetDirtyRegionsRequest*,
                               v1::GetDirtyRegionsResponse*) override;
  grpc::Status MarkDirtyRegions(grpc::ServerContext*, const v1::MarkDirtyRegionsRequest*,
                                v1::MarkDirtyRegionsResponse*) override;
  grpc::Status ClearDirtyRegions(grpc::ServerContext*, const v1::ClearDirtyRegionsRequest*,
                                 v1::ClearDirtyRegionsResponse*) override;

  // Every replicated volume held here with its stored metadata and dirty-set counts (metrics).
  std::vector<ReplicaSetView> ReplicaSets() const;

 private:
  Store* store_;
};

}  // namespace unbd::backend
