// IdentityService: the CSI Identity service (plugin name csi.unbd.io, the project's version, the
// Controller capability when this process serves the Controller, Probe always ready: the agent
// holds no connection that could be unhealthy; the volumes' health is the healer's business).
#pragma once

#include <string>

#include "csi/v1/csi.grpc.pb.h"

namespace unbd::csi {

inline constexpr const char* kDriverName = "csi.unbd.io";

class IdentityService final : public ::csi::v1::Identity::Service {
 public:
  explicit IdentityService(bool controller) : controller_(controller) {}

  grpc::Status GetPluginInfo(grpc::ServerContext*, const ::csi::v1::GetPluginInfoRequest*,
                             ::csi::v1::GetPluginInfoResponse*) override;
  grpc::Status GetPluginCapabilities(grpc::ServerContext*,
                                     const ::csi::v1::GetPluginCapabilitiesRequest*,
                                     ::csi::v1::GetPluginCapabilitiesResponse*) override;
  grpc::Status Probe(grpc::ServerContext*, const ::csi::v1::ProbeRequest*,
                     ::csi::v1::ProbeResponse*) override;

 private:
  bool controller_;
};

}  // namespace unbd::csi
