#include "csi/identity_service.h"

namespace unbd::csi {

grpc::Status IdentityService::GetPluginInfo(grpc::ServerContext*,
                                            const ::csi::v1::GetPluginInfoRequest*,
                                            ::csi::v1::GetPluginInfoResponse* resp) {
  resp->set_name(kDriverName);
  resp->set_vendor_version(UNBD_VERSION);
  return grpc::Status::OK;
}

grpc::Status IdentityService::GetPluginCapabilities(
    grpc::ServerContext*, const ::csi::v1::GetPluginCapabilitiesRequest*,
    ::csi::v1::GetPluginCapabilitiesResponse* resp) {
  if (controller_) {
    resp->add_capabilities()->mutable_service()->set_type(
        ::csi::v1::PluginCapability::Service::CONTROLLER_SERVICE);
  }
  return grpc::Status::OK;
}

grpc::Status IdentityService::Probe(grpc::ServerContext*, const ::csi::v1::ProbeRequest*,
                                    ::csi::v1::ProbeResponse* resp) {
  resp->mutable_ready()->set_value(true);
  return grpc::Status::OK;
}

}  // namespace unbd::csi
