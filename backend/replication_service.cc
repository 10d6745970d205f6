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

}  // namespace unbd::backend
