// NodeService: the CSI Node service. Stage attaches the volume (VolumeStager) and records it
// (RecordStore); Publish bind-mounts the staged file system, or the device node for raw block
// access, at the target path (read-only when asked); Unpublish and Unstage undo that from the
// record alone. Every call is idempotent; a call on a volume another call is working on fails
// with ABORTED at once. Codes follow the CSI spec (docs/csi.md lists them).
#pragma once

#include <string>

#include "csi/staging_record.h"
#include "csi/v1/csi.grpc.pb.h"
#include "csi/volume_locks.h"
#include "csi/volume_stager.h"

namespace unbd::csi {

class NodeService final : public ::csi::v1::Node::Service {
 public:
  NodeService(std::string node_id, RecordStore* records, VolumeLocks* locks, VolumeStager* stager)
      : node_id_(std::move(node_id)), records_(records), locks_(locks), stager_(stager) {}

  grpc::Status NodeStageVolume(grpc::ServerContext*, const ::csi::v1::NodeStageVolumeRequest*,
                               ::csi::v1::NodeStageVolumeResponse*) override;
  grpc::Status NodeUnstageVolume(grpc::ServerContext*, const ::csi::v1::NodeUnstageVolumeRequest*,
                                 ::csi::v1::NodeUnstageVolumeResponse*) override;
  grpc::Status NodePublishVolume(grpc::ServerContext*, const ::csi::v1::NodePublishVolumeRequest*,
                                 ::csi::v1::NodePublishVolumeResponse*) override;
  grpc::Status NodeUnpublishVolume(grpc::ServerContext*,
                                   const ::csi::v1::NodeUnpublishVolumeRequest*,
                                   ::csi::v1::NodeUnpublishVolumeResponse*) override;
  grpc::Status NodeGetVolumeStats(grpc::ServerContext*, const ::csi::v1::NodeGetVolumeStatsRequest*,
                                  ::csi::v1::NodeGetVolumeStatsResponse*) override;
  grpc::Status NodeGetCapabilities(grpc::ServerContext*,
                                   const ::csi::v1::NodeGetCapabilitiesRequest*,
                                   ::csi::v1::NodeGetCapabilitiesResponse*) override;
  grpc::Status NodeGetInfo(grpc::ServerContext*, const ::csi::v1::NodeGetInfoRequest*,
                           ::csi::v1::NodeGetInfoResponse*) override;

 private:
  std::string node_id_;
  RecordStore* records_;
  VolumeLocks* locks_;
  VolumeStager* stager_;
};

// INVALID_ARGUMENT unless `cap` names an access type and a mode unbd supports (one node at a
// time; ext4 or xfs). Shared with the Controller.
grpc::Status CheckCapability(const ::csi::v1::VolumeCapability& cap, const std::string& what);

}  // namespace unbd::csi
