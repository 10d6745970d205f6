#include "backend/replication_service.h"

#include "backend/volume_service.h"

namespace unbd::backend {

grpc::Status ReplicationService::PutReplicaMeta(grpc::ServerContext*,
                                                const v1::PutReplicaMetaRequest* req,
                                                v1::PutReplicaMetaResponse*) {
  return ToGrpc(store_->PutReplicaMeta(req->volume_id(), req->epoch(), req->meta()));
}

grpc::Status ReplicationService::GetDirtyRegions(grpc::ServerContext*,
                                                 const v1::GetDirtyRegionsRequest* req,
                                                 v1::GetDirtyRegionsResponse* resp) {
  return ToGrpc(store_->GetDirtyRegions(req->volume_id(), req->set(), req->counts_only(), resp));
}

grpc::Status ReplicationService::MarkDirtyRegions(grpc::ServerContext*,
                                                  const v1::MarkDirtyRegionsRequest* req,
                                                  v1::MarkDirtyRegionsResponse*) {
  const std::vector<uint64_t> regions(req->regions().begin(), req->regions().end());
  return ToGrpc(store_->MarkDirtyRegions(req->volume_id(), req->epoch(), req->set(), regions));
}

grpc::Status ReplicationService::ClearDirtyRegions(grpc::ServerContext*,
                                                   const v1::ClearDirtyRegionsRequest* req,
                                                   v1::ClearDirtyRegionsResponse*) {
  const std::vector<uint64_t> regions(req->regions().begin(), req->regions().end());
  return ToGrpc(
      store_->ClearDirtyRegions(req->volume_id(), req->epoch(), req->set(), regions, req->all()));
}

std::vector<ReplicaSetView> ReplicationService::ReplicaSets() const {
  std::vector<ReplicaSetView> out;
  std::vector<v1::Volume> volumes;
  if (!store_->ListVolumes(&volumes).ok()) return out;
  for (auto& vol : volumes) {
    if (vol.replica_uuid().empty() || vol.replica_set().replicas_size() == 0) continue;
    ReplicaSetView v;
    v.volume_id = vol.id();
    v.name = vol.name();
    v.replica_uuid = vol.replica_uuid();
    v.meta = std::move(*vol.mutable_replica_set());
    v1::GetDirtyRegionsResponse counts;
    if (store_->GetDirtyRegions(vol.id(), 0, /*counts_only=*/true, &counts).ok()) {
      for (const auto& c : counts.counts()) v.dirty_regions.push_back({c.set(), c.regions()});
    }
    out.push_back(std::move(v));
  }
  return out;
}

}  // namespace unbd::backend
