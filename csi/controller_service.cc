#include "csi/controller_service.h"

#include <functional>

#include <spdlog/spdlog.h>

#include "backend/admin_client.h"
#include "csi/grpc_status.h"
#include "csi/node_service.h"
#include "csi/volume_id.h"
#include "replication/replicated_volume.h"

namespace unbd::csi {

namespace {

constexpr uint64_t kBlock = 4096;
constexpr const char* kReplicasParam = "replicas";
// Parameters the external-provisioner passes through with this prefix are Kubernetes' own.
constexpr const char* kKubernetesPrefix = "csi.storage.k8s.io/";

v1::VolumeRef NameRef(const std::string& name) {
  v1::VolumeRef ref;
  ref.set_name(name);
  return ref;
}

}  // namespace

grpc::Status ControllerService::CreateVolume(grpc::ServerContext*,
                                             const ::csi::v1::CreateVolumeRequest* req,
                                             ::csi::v1::CreateVolumeResponse* resp) {
  if (req->name().empty()) return Invalid("CreateVolume: name missing");
  const std::string what = "CreateVolume " + req->name();
  if (req->volume_capabilities().empty()) return Invalid(what + ": volume_capabilities missing");
  for (const auto& cap : req->volume_capabilities()) {
    grpc::Status cs = CheckCapability(cap, what);
    if (!cs.ok()) return cs;
  }
  VolumeId probe;
  if (!ParseVolumeId(req->name() + "@h:1", &probe).ok())
    return Invalid(what + ": a volume name is 1-128 of [A-Za-z0-9._-]");
  int replicas = 1;
  for (const auto& [key, value] : req->parameters()) {
    if (key == kReplicasParam) {
      char* end = nullptr;
      long n = std::strtol(value.c_str(), &end, 10);
      if (value.empty() || *end != '\0' || n < 1 || n > 5)
        return Invalid(what + ": parameter replicas=\"" + value + "\": expected 1 to 5");
      replicas = static_cast<int>(n);
    } else if (key.rfind(kKubernetesPrefix, 0) != 0) {
      return Invalid(what + ": unknown parameter \"" + key + "\" (unbd-csi knows: replicas)");
    }
  }
  if (backends_.empty())
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                        what + ": this unbd-csi has no --backends to create volumes on");
  if (static_cast<size_t>(replicas) > backends_.size())
    return Invalid(what + ": replicas=" + std::to_string(replicas) + " but only " +
                   std::to_string(backends_.size()) + " backends");
  const int64_t required = req->capacity_range().required_bytes();
  const int64_t limit = req->capacity_range().limit_bytes();
  if (required < 0 || limit < 0) return Invalid(what + ": negative capacity_range");
  uint64_t size = required > 0 ? static_cast<uint64_t>(required) : kDefaultVolumeBytes;
  size = (size + kBlock - 1) / kBlock * kBlock;
  if (limit > 0 && size > static_cast<uint64_t>(limit)) {
    if (required == 0) size = static_cast<uint64_t>(limit) / kBlock * kBlock;
    if (size == 0 || size > static_cast<uint64_t>(limit))
      return grpc::Status(grpc::StatusCode::OUT_OF_RANGE,
                          what + ": no multiple of 4096 bytes fits capacity_range");
  }

  // The same name always lands on the same backends, so a retried CreateVolume finds its volume.
  VolumeId vid;
  vid.name = req->name();
  const size_t first = std::hash<std::string>{}(req->name()) % backends_.size();
  for (int i = 0; i < replicas; ++i) vid.servers.push_back(backends_[(first + i) % backends_.size()]);

  int existing = 0;
  uint64_t existing_size = 0;
  for (const auto& server : vid.servers) {
    v1::Volume v;
    Status s = backend::AdminClient(server).Stat(NameRef(vid.name), &v);
    if (s.ok()) {
      ++existing;
      existing_size = v.size_bytes();
    } else if (s.code() != Status::Code::kNotFound) {
      return ToGrpc(Status(Status::Unavailable(what + ": " + server + ": " + s.ToString())));
    }
  }
  if (existing > 0) {
    const bool fits = existing_size >= static_cast<uint64_t>(required) &&
                      (limit == 0 || existing_size <= static_cast<uint64_t>(limit));
    if (existing != replicas || !fits)
      return grpc::Status(grpc::StatusCode::ALREADY_EXISTS,
                          what + ": exists with " + std::to_string(existing_size) + " bytes on " +
                              std::to_string(existing) + " of " + std::to_string(replicas) +
                              " backends, incompatible with this request");
    size = existing_size;
  } else {
    Status s;
    if (replicas == 1) {
      v1::Volume v;
      s = backend::AdminClient(vid.servers[0]).Create(vid.name, size, &v);
    } else {
      std::vector<replication::ReplicaAddr> out;
      s = replication::ReplicatedVolume::Create(vid.servers, vid.name, size, &out);
    }
    if (!s.ok()) return ToGrpc(Status(s.code() == Status::Code::kAlreadyExists
                                          ? Status::AlreadyExists(what + ": " + s.message())
                                          : Status::Unavailable(what + ": " + s.ToString())));
    spdlog::info("{}: created {} ({} bytes)", what, vid.ToString(), size);
  }
  auto* vol = resp->mutable_volume();
  vol->set_volume_id(vid.ToString());
  vol->set_capacity_bytes(static_cast<int64_t>(size));
  (*vol->mutable_volume_context())["unbd.io/volume"] = vid.name;
  (*vol->mutable_volume_context())["unbd.io/replicas"] = std::to_string(replicas);
  return grpc::Status::OK;
}

grpc::Status ControllerService::DeleteVolume(grpc::ServerContext*,
                                             const ::csi::v1::DeleteVolumeRequest* req,
                                             ::csi::v1::DeleteVolumeResponse*) {
  if (req->volume_id().empty()) return Invalid("DeleteVolume: volume_id missing");
  VolumeId vid;
  if (!ParseVolumeId(req->volume_id(), &vid).ok()) return grpc::Status::OK;  // never ours
  for (const auto& server : vid.servers) {
    Status s = backend::AdminClient(server).Delete(NameRef(vid.name));
    if (!s.ok() && s.code() != Status::Code::kNotFound) {
      Status out = s.code() == Status::Code::kFailedPrecondition
                       ? Status::FailedPrecondition("DeleteVolume " + req->volume_id() + ": " + server + ": " + s.message())
                       : Status::Unavailable("DeleteVolume " + req->volume_id() + ": " + server + ": " + s.ToString());
      return ToGrpc(out);
    }
  }
  spdlog::info("DeleteVolume {}: deleted", req->volume_id());
  return grpc::Status::OK;
}

grpc::Status ControllerService::ValidateVolumeCapabilities(
    grpc::ServerContext*, const ::csi::v1::ValidateVolumeCapabilitiesRequest* req,
    ::csi::v1::ValidateVolumeCapabilitiesResponse* resp) {
  if (req->volume_id().empty()) return Invalid("ValidateVolumeCapabilities: volume_id missing");
  const std::string what = "ValidateVolumeCapabilities " + req->volume_id();
  if (req->volume_capabilities().empty()) return Invalid(what + ": volume_capabilities missing");
  VolumeId vid;
  Status s = ParseVolumeId(req->volume_id(), &vid);
  if (!s.ok()) return ToGrpc(s);
  v1::Volume v;
  s = backend::AdminClient(vid.servers[0]).Stat(NameRef(vid.name), &v);
  if (!s.ok()) return ToGrpc(s.code() == Status::Code::kNotFound
                                 ? Status::NotFound(what + ": no such volume on " + vid.servers[0])
                                 : Status::Unavailable(what + ": " + s.ToString()));
  for (const auto& cap : req->volume_capabilities()) {
    grpc::Status cs = CheckCapability(cap, what);
    if (!cs.ok()) {
      resp->set_message(cs.error_message());
      return grpc::Status::OK;
    }
  }
  *resp->mutable_confirmed()->mutable_volume_capabilities() = req->volume_capabilities();
  return grpc::Status::OK;
}

grpc::Status ControllerService::ControllerGetCapabilities(
    grpc::ServerContext*, const ::csi::v1::ControllerGetCapabilitiesRequest*,
    ::csi::v1::ControllerGetCapabilitiesResponse* resp) {
  resp->add_capabilities()->mutable_rpc()->set_type(
      ::csi::v1::ControllerServiceCapability::RPC::CREATE_DELETE_VOLUME);
  return grpc::Status::OK;
}

}  // namespace unbd::csi
