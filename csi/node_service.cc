#include "csi/node_service.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <chrono>

#include <spdlog/spdlog.h>

#include "csi/grpc_status.h"
#include "csi/system.h"
#include "csi/volume_id.h"

namespace unbd::csi {

namespace {

using Mode = ::csi::v1::VolumeCapability::AccessMode;

grpc::Status Aborted(const std::string& volume_id) {
  return grpc::Status(grpc::StatusCode::ABORTED,
                      "volume " + volume_id + ": another operation on it is in progress");
}

std::vector<std::string> Flags(const ::csi::v1::VolumeCapability& cap) {
  return {cap.mount().mount_flags().begin(), cap.mount().mount_flags().end()};
}

std::string FsType(const ::csi::v1::VolumeCapability& cap) {
  return cap.mount().fs_type().empty() ? "ext4" : cap.mount().fs_type();
}

bool SingleWriter(int mode) {
  return mode == Mode::SINGLE_NODE_WRITER || mode == Mode::SINGLE_NODE_SINGLE_WRITER;
}

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

grpc::Status CheckCapability(const ::csi::v1::VolumeCapability& cap, const std::string& what) {
  if (!cap.has_block() && !cap.has_mount())
    return Invalid(what + ": volume_capability has no access_type (block or mount)");
  if (!cap.has_access_mode() || cap.access_mode().mode() == Mode::UNKNOWN)
    return Invalid(what + ": volume_capability has no access_mode");
  switch (cap.access_mode().mode()) {
    case Mode::SINGLE_NODE_WRITER:
    case Mode::SINGLE_NODE_READER_ONLY:
    case Mode::SINGLE_NODE_SINGLE_WRITER:
    case Mode::SINGLE_NODE_MULTI_WRITER:
      break;
    default:
      return Invalid(what + ": access mode " + Mode::Mode_Name(cap.access_mode().mode()) +
                     " is not supported (an unbd volume is attached to one node at a time)");
  }
  if (cap.has_mount()) {
    const std::string fs = FsType(cap);
    if (fs != "ext4" && fs != "xfs")
      return Invalid(what + ": fs_type " + fs + " is not supported (ext4 or xfs)");
  }
  return grpc::Status::OK;
}

grpc::Status NodeService::NodeStageVolume(grpc::ServerContext*,
                                          const ::csi::v1::NodeStageVolumeRequest* req,
                                          ::csi::v1::NodeStageVolumeResponse*) {
  if (req->volume_id().empty()) return Invalid("NodeStageVolume: volume_id missing");
  const std::string what = "NodeStageVolume " + req->volume_id();
  if (req->staging_target_path().empty()) return Invalid(what + ": staging_target_path missing");
  if (!req->has_volume_capability()) return Invalid(what + ": volume_capability missing");
  grpc::Status cs = CheckCapability(req->volume_capability(), what);
  if (!cs.ok()) return cs;
  auto guard = locks_->TryLock(req->volume_id());
  if (!guard.held()) return Aborted(req->volume_id());
  VolumeId vid;
  Status s = ParseVolumeId(req->volume_id(), &vid);
  if (!s.ok()) return ToGrpc(s);

  const auto& cap = req->volume_capability();
  StagingRecord rec;
  if (records_->Get(req->volume_id(), &rec)) {
    if (rec.staging_path != req->staging_target_path())
      return grpc::Status(grpc::StatusCode::ALREADY_EXISTS,
                          what + ": already staged at " + rec.staging_path);
    if (rec.block != cap.has_block() || (!rec.block && rec.fs_type != FsType(cap)))
      return grpc::Status(grpc::StatusCode::ALREADY_EXISTS,
                          what + ": already staged with another volume_capability");
    // Staged before: repair whatever is missing (a dead daemon, a lost mount) and succeed.
    s = stager_->Attach(&rec);
    if (s.ok()) s = records_->Put(rec);
    return ToGrpc(s);
  }
  rec.volume_id = req->volume_id();
  rec.staging_path = req->staging_target_path();
  rec.block = cap.has_block();
  if (!rec.block) {
    rec.fs_type = FsType(cap);
    rec.mount_flags = Flags(cap);
  }
  rec.access_mode = cap.access_mode().mode();
  rec.staged_unix_ms = NowMs();
  // Recorded before the device exists: an agent killed from here on finds the record on restart
  // and the device (VolumeStager::Attach looks it up), instead of adding a second one.
  s = records_->Put(rec);
  if (!s.ok()) return ToGrpc(s);
  s = stager_->Attach(&rec);
  if (s.ok()) s = records_->Put(rec);
  if (!s.ok()) {
    spdlog::warn("{}: {}; rolling back", what, s.ToString());
    Status undo = stager_->Detach(rec);
    if (undo.ok()) {
      records_->Remove(rec.volume_id);
    } else {
      spdlog::error("{}: rollback failed, the record stays for Unstage: {}", what, undo.ToString());
    }
    return ToGrpc(s);
  }
  spdlog::info("{}: staged {} at {}", what, rec.device(), rec.staging_path);
  return grpc::Status::OK;
}

grpc::Status NodeService::NodeUnstageVolume(grpc::ServerContext*,
                                            const ::csi::v1::NodeUnstageVolumeRequest* req,
                                            ::csi::v1::NodeUnstageVolumeResponse*) {
  if (req->volume_id().empty()) return Invalid("NodeUnstageVolume: volume_id missing");
  const std::string what = "NodeUnstageVolume " + req->volume_id();
  if (req->staging_target_path().empty()) return Invalid(what + ": staging_target_path missing");
  auto guard = locks_->TryLock(req->volume_id());
  if (!guard.held()) return Aborted(req->volume_id());
  StagingRecord rec;
  if (!records_->Get(req->volume_id(), &rec)) return grpc::Status::OK;  // unstaged already
  if (rec.staging_path != req->staging_target_path())
    return grpc::Status(grpc::StatusCode::NOT_FOUND,
                        what + ": staged at " + rec.staging_path + ", not at " +
                            req->staging_target_path());
  for (auto it = rec.publishes.begin(); it != rec.publishes.end();) {
    if (IsMountPoint(it->first)) {
      return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                          what + ": still published at " + it->first);
    }
    it = rec.publishes.erase(it);  // unmounted behind our back: nothing left to undo
  }
  Status s = stager_->Detach(rec);
  if (s.ok()) s = records_->Remove(rec.volume_id);
  if (s.ok()) spdlog::info("{}: unstaged", what);
  return ToGrpc(s);
}

grpc::Status NodeService::NodePublishVolume(grpc::ServerContext*,
                                            const ::csi::v1::NodePublishVolumeRequest* req,
                                            ::csi::v1::NodePublishVolumeResponse*) {
  if (req->volume_id().empty()) return Invalid("NodePublishVolume: volume_id missing");
  const std::string what = "NodePublishVolume " + req->volume_id();
  if (req->staging_target_path().empty()) return Invalid(what + ": staging_target_path missing");
  if (req->target_path().empty()) return Invalid(what + ": target_path missing");
  if (!req->has_volume_capability()) return Invalid(what + ": volume_capability missing");
  grpc::Status cs = CheckCapability(req->volume_capability(), what);
  if (!cs.ok()) return cs;
  auto guard = locks_->TryLock(req->volume_id());
  if (!guard.held()) return Aborted(req->volume_id());
  StagingRecord rec;
  if (!records_->Get(req->volume_id(), &rec))
    return grpc::Status(grpc::StatusCode::NOT_FOUND,
                        what + ": volume is not staged on node " + node_id_);
  if (rec.staging_path != req->staging_target_path())
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                        what + ": staged at " + rec.staging_path + ", not at " +
                            req->staging_target_path());
  const auto& cap = req->volume_capability();
  if (rec.block != cap.has_block())
    return Invalid(what + ": staged for " + (rec.block ? "block" : "mount") + " access, asked for " +
                   (cap.has_block() ? "block" : "mount"));
  const std::string& target = req->target_path();
  const bool readonly = req->readonly() || cap.access_mode().mode() == Mode::SINGLE_NODE_READER_ONLY;
  auto it = rec.publishes.find(target);
  if (it != rec.publishes.end() && it->second != readonly)
    return grpc::Status(grpc::StatusCode::ALREADY_EXISTS,
                        what + ": already published at " + target + (it->second ? " read-only" : " read-write"));
  if (!readonly && SingleWriter(cap.access_mode().mode())) {
    for (const auto& [path, ro] : rec.publishes) {
      if (path != target && !ro && IsMountPoint(path))
        return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                            what + ": single-writer volume already published read-write at " + path);
    }
  }
  if (!IsMountPoint(target)) {
    Status s = rec.block ? MakeFile(target) : MakeDirs(target);
    if (s.ok()) s = BindMount(rec.block ? rec.device() : rec.staging_path, target, readonly);
    if (!s.ok()) return ToGrpc(s);
  }
  rec.publishes[target] = readonly;
  Status s = records_->Put(rec);
  if (s.ok()) spdlog::info("{}: published at {}{}", what, target, readonly ? " read-only" : "");
  return ToGrpc(s);
}

grpc::Status NodeService::NodeUnpublishVolume(grpc::ServerContext*,
                                              const ::csi::v1::NodeUnpublishVolumeRequest* req,
                                              ::csi::v1::NodeUnpublishVolumeResponse*) {
  if (req->volume_id().empty()) return Invalid("NodeUnpublishVolume: volume_id missing");
  const std::string what = "NodeUnpublishVolume " + req->volume_id();
  if (req->target_path().empty()) return Invalid(what + ": target_path missing");
  auto guard = locks_->TryLock(req->volume_id());
  if (!guard.held()) return Aborted(req->volume_id());
  const std::string& target = req->target_path();
  Status s = UnmountAll(target);
  if (s.ok()) s = RemovePath(target);
  if (!s.ok()) return ToGrpc(s);
  StagingRecord rec;
  if (records_->Get(req->volume_id(), &rec) && rec.publishes.erase(target) > 0) {
    s = records_->Put(rec);
    if (s.ok()) spdlog::info("{}: unpublished {}", what, target);
  }
  return ToGrpc(s);
}

grpc::Status NodeService::NodeGetVolumeStats(grpc::ServerContext*,
                                             const ::csi::v1::NodeGetVolumeStatsRequest* req,
                                             ::csi::v1::NodeGetVolumeStatsResponse* resp) {
  if (req->volume_id().empty()) return Invalid("NodeGetVolumeStats: volume_id missing");
  const std::string what = "NodeGetVolumeStats " + req->volume_id();
  if (req->volume_path().empty()) return Invalid(what + ": volume_path missing");
  StagingRecord rec;
  if (!records_->Get(req->volume_id(), &rec))
    return grpc::Status(grpc::StatusCode::NOT_FOUND, what + ": volume is not staged on node " + node_id_);
  const std::string& path = req->volume_path();
  if ((path != rec.staging_path && rec.publishes.count(path) == 0) || !PathExists(path))
    return grpc::Status(grpc::StatusCode::NOT_FOUND, what + ": volume is not at " + path);
  if (rec.block) {
    int fd = open(rec.device().c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return ToGrpc(Status::FromErrno(errno, what + ": open " + rec.device()));
    uint64_t bytes = 0;
    int rc = ioctl(fd, BLKGETSIZE64, &bytes);
    int err = errno;
    close(fd);
    if (rc != 0) return ToGrpc(Status::FromErrno(err, what + ": BLKGETSIZE64 " + rec.device()));
    auto* u = resp->add_usage();
    u->set_unit(::csi::v1::VolumeUsage::BYTES);
    u->set_total(static_cast<int64_t>(bytes));
  } else {
    struct statvfs st;
    if (statvfs(path.c_str(), &st) != 0)
      return ToGrpc(Status::FromErrno(errno, what + ": statvfs " + path));
    auto* b = resp->add_usage();
    b->set_unit(::csi::v1::VolumeUsage::BYTES);
    b->set_total(static_cast<int64_t>(st.f_blocks * st.f_frsize));
    b->set_available(static_cast<int64_t>(st.f_bavail * st.f_frsize));
    b->set_used(static_cast<int64_t>((st.f_blocks - st.f_bfree) * st.f_frsize));
    auto* i = resp->add_usage();
    i->set_unit(::csi::v1::VolumeUsage::INODES);
    i->set_total(static_cast<int64_t>(st.f_files));
    i->set_available(static_cast<int64_t>(st.f_favail));
    i->set_used(static_cast<int64_t>(st.f_files - st.f_ffree));
  }
  return grpc::Status::OK;
}

grpc::Status NodeService::NodeGetCapabilities(grpc::ServerContext*,
                                              const ::csi::v1::NodeGetCapabilitiesRequest*,
                                              ::csi::v1::NodeGetCapabilitiesResponse* resp) {
  using Rpc = ::csi::v1::NodeServiceCapability::RPC;
  for (auto t : {Rpc::STAGE_UNSTAGE_VOLUME, Rpc::GET_VOLUME_STATS})
    resp->add_capabilities()->mutable_rpc()->set_type(t);
  return grpc::Status::OK;
}

grpc::Status NodeService::NodeGetInfo(grpc::ServerContext*, const ::csi::v1::NodeGetInfoRequest*,
                                      ::csi::v1::NodeGetInfoResponse* resp) {
  resp->set_node_id(node_id_);
  return grpc::Status::OK;
}

}  // namespace unbd::csi
