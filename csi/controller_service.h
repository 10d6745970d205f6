// ControllerService: the minimal CSI Controller. CreateVolume makes the volume on `replicas`
// (StorageClass parameter, default 1) of the configured backends — a plain volume on one server
// (backend::AdminClient) or a replicated one (replication::ReplicatedVolume::Create) — and names
// it NAME@HOST:PORT[,...] (csi/volume_id.h). DeleteVolume deletes every copy. Both idempotent:
// the same name and a compatible capacity give the same volume, an incompatible one
// ALREADY_EXISTS; deleting a missing volume succeeds.
#pragma once

#include <string>
#include <vector>

#include "csi/v1/csi.grpc.pb.h"

namespace unbd::csi {

class ControllerService final : public ::csi::v1::Controller::Service {
 public:
  explicit ControllerService(std::vector<std::string> backends) : backends_(std::move(backends)) {}

  grpc::Status CreateVolume(grpc::ServerContext*, const ::csi::v1::CreateVolumeRequest*,
                            ::csi::v1::CreateVolumeResponse*) override;
  grpc::Status DeleteVolume(grpc::ServerContext*, const ::csi::v1::DeleteVolumeRequest*,
                            ::csi::v1::DeleteVolumeResponse*) override;
  grpc::Status ValidateVolumeCapabilities(grpc::ServerContext*,
                                          const ::csi::v1::ValidateVolumeCapabilitiesRequest*,
                                          ::csi::v1::ValidateVolumeCapabilitiesResponse*) override;
  grpc::Status ControllerGetCapabilities(grpc::ServerContext*,
                                         const ::csi::v1::ControllerGetCapabilitiesRequest*,
                                         ::csi::v1::ControllerGetCapabilitiesResponse*) override;

 private:
  std::vector<std::string> backends_;
};

inline constexpr uint64_t kDefaultVolumeBytes = 1ull << 30;

}  // namespace unbd::csi
