// csi_client: one CSI call over a unix socket, for the VM tests' scripts (no csi-sanity here).
//   csi_client -e unix:///path/csi.sock CALL [options]
// CALLs: info caps probe node-info node-caps stage unstage publish unpublish stats create delete
// controller-caps. The response is printed as JSON on stdout; the exit status is the gRPC code
// (0 OK, 3 INVALID_ARGUMENT, 5 NOT_FOUND, 6 ALREADY_EXISTS, 9 FAILED_PRECONDITION, 10 ABORTED)
// and "CODE: message" goes to stderr. --no-* options leave a required field out.
#include <cstdio>
#include <map>
#include <string>

#include <CLI/CLI.hpp>
#include <google/protobuf/util/json_util.h>
#include <grpcpp/grpcpp.h>

#include "csi/v1/csi.grpc.pb.h"

namespace pb = ::csi::v1;

namespace {

const char* CodeName(grpc::StatusCode c) {
  static const std::map<int, const char*> names = {
      {0, "OK"}, {1, "CANCELLED"}, {2, "UNKNOWN"}, {3, "INVALID_ARGUMENT"},
      {4, "DEADLINE_EXCEEDED"}, {5, "NOT_FOUND"}, {6, "ALREADY_EXISTS"},
      {7, "PERMISSION_DENIED"}, {8, "RESOURCE_EXHAUSTED"}, {9, "FAILED_PRECONDITION"},
      {10, "ABORTED"}, {11, "OUT_OF_RANGE"}, {12, "UNIMPLEMENTED"}, {13, "INTERNAL"},
      {14, "UNAVAILABLE"}, {15, "DATA_LOSS"}, {16, "UNAUTHENTICATED"}};
  auto it = names.find(static_cast<int>(c));
  return it == names.end() ? "?" : it->second;
}

struct Args {
  std::string endpoint, call, volume_id, staging, target, volume_path, name, fs = "ext4";
  std::string mode = "SINGLE_NODE_WRITER";
  std::vector<std::string> params, mount_flags;
  int64_t size = 0, limit = 0;
  bool block = false, readonly = false, no_cap = false, no_access_type = false;
  int timeout_s = 300;
};

void FillCap(const Args& a, pb::VolumeCapability* cap) {
  if (!a.no_access_type) {
    if (a.block) {
      cap->mutable_block();
    } else {
      cap->mutable_mount()->set_fs_type(a.fs);
      for (const auto& f : a.mount_flags) cap->mutable_mount()->add_mount_flags(f);
    }
  }
  pb::VolumeCapability::AccessMode::Mode m;
  if (!pb::VolumeCapability::AccessMode::Mode_Parse(a.mode, &m)) {
    std::fprintf(stderr, "--mode %s: not an access mode\n", a.mode.c_str());
    std::exit(64);
  }
  cap->mutable_access_mode()->set_mode(m);
}

template <typename Resp>
int Finish(const grpc::Status& s, const Resp& resp) {
  if (!s.ok()) {
    std::fprintf(stderr, "%s: %s\n", CodeName(s.error_code()), s.error_message().c_str());
    return static_cast<int>(s.error_code());
  }
  std::string json;
  google::protobuf::util::JsonPrintOptions o;
  o.always_print_primitive_fields = true;
  (void)google::protobuf::util::MessageToJsonString(resp, &json, o);
  std::printf("%s\n", json.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"csi_client: one CSI call"};
  Args a;
  app.add_option("-e,--endpoint", a.endpoint)->required();
  app.add_option("call", a.call)->required();
  app.add_option("--volume-id", a.volume_id);
  app.add_option("--staging", a.staging);
  app.add_option("--target", a.target);
  app.add_option("--volume-path", a.volume_path);
  app.add_option("--name", a.name);
  app.add_option("--fs", a.fs);
  app.add_option("--mount-flag", a.mount_flags);
  app.add_option("--mode", a.mode, "access mode name, e.g. SINGLE_NODE_WRITER");
  app.add_option("--param", a.params, "KEY=VALUE (create)");
  app.add_option("--size", a.size, "create: required_bytes");
  app.add_option("--limit", a.limit, "create: limit_bytes");
  app.add_flag("--block", a.block);
  app.add_flag("--readonly", a.readonly);
  app.add_flag("--no-cap", a.no_cap, "leave volume_capability out");
  app.add_flag("--no-access-type", a.no_access_type, "leave the access type out");
  app.add_option("--timeout", a.timeout_s, "seconds");
  CLI11_PARSE(app, argc, argv);

  auto channel = grpc::CreateChannel(a.endpoint, grpc::InsecureChannelCredentials());
  auto identity = pb::Identity::NewStub(channel);
  auto node = pb::Node::NewStub(channel);
  auto controller = pb::Controller::NewStub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(a.timeout_s));
  ctx.set_wait_for_ready(true);

#define CALL(stub, Method, Req, Resp, fill)   \
  do {                                        \
    pb::Req req;                              \
    pb::Resp resp;                            \
    fill;                                     \
    return Finish(stub->Method(&ctx, req, &resp), resp); \
  } while (0)

  if (a.call == "info") CALL(identity, GetPluginInfo, GetPluginInfoRequest, GetPluginInfoResponse, {});
  if (a.call == "caps")
    CALL(identity, GetPluginCapabilities, GetPluginCapabilitiesRequest, GetPluginCapabilitiesResponse, {});
  if (a.call == "probe") CALL(identity, Probe, ProbeRequest, ProbeResponse, {});
  if (a.call == "node-info") CALL(node, NodeGetInfo, NodeGetInfoRequest, NodeGetInfoResponse, {});
  if (a.call == "node-caps")
    CALL(node, NodeGetCapabilities, NodeGetCapabilitiesRequest, NodeGetCapabilitiesResponse, {});
  if (a.call == "controller-caps")
    CALL(controller, ControllerGetCapabilities, ControllerGetCapabilitiesRequest,
         ControllerGetCapabilitiesResponse, {});
  if (a.call == "stage")
    CALL(node, NodeStageVolume, NodeStageVolumeRequest, NodeStageVolumeResponse, {
      req.set_volume_id(a.volume_id);
      req.set_staging_target_path(a.staging);
      if (!a.no_cap) FillCap(a, req.mutable_volume_capability());
    });
  if (a.call == "unstage")
    CALL(node, NodeUnstageVolume, NodeUnstageVolumeRequest, NodeUnstageVolumeResponse, {
      req.set_volume_id(a.volume_id);
      req.set_staging_target_path(a.staging);
    });
  if (a.call == "publish")
    CALL(node, NodePublishVolume, NodePublishVolumeRequest, NodePublishVolumeResponse, {
      req.set_volume_id(a.volume_id);
      req.set_staging_target_path(a.staging);
      req.set_target_path(a.target);
      req.set_readonly(a.readonly);
      if (!a.no_cap) FillCap(a, req.mutable_volume_capability());
    });
  if (a.call == "unpublish")
    CALL(node, NodeUnpublishVolume, NodeUnpublishVolumeRequest, NodeUnpublishVolumeResponse, {
      req.set_volume_id(a.volume_id);
      req.set_target_path(a.target);
    });
  if (a.call == "stats")
    CALL(node, NodeGetVolumeStats, NodeGetVolumeStatsRequest, NodeGetVolumeStatsResponse, {
      req.set_volume_id(a.volume_id);
      req.set_volume_path(a.volume_path);
    });
  if (a.call == "create")
    CALL(controller, CreateVolume, CreateVolumeRequest, CreateVolumeResponse, {
      req.set_name(a.name);
      if (a.size || a.limit) {
        req.mutable_capacity_range()->set_required_bytes(a.size);
        req.mutable_capacity_range()->set_limit_bytes(a.limit);
      }
      if (!a.no_cap) FillCap(a, req.add_volume_capabilities());
      for (const auto& p : a.params) {
        auto eq = p.find('=');
        (*req.mutable_parameters())[p.substr(0, eq)] = eq == std::string::npos ? "" : p.substr(eq + 1);
      }
    });
  if (a.call == "delete")
    CALL(controller, DeleteVolume, DeleteVolumeRequest, DeleteVolumeResponse,
         { req.set_volume_id(a.volume_id); });
  std::fprintf(stderr, "unknown call %s\n", a.call.c_str());
  return 64;
}
