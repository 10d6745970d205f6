#include "csi/volume_stager.h"

#include <thread>

#include <spdlog/spdlog.h>

#include "csi/system.h"

namespace unbd::csi {

Status VolumeStager::WaitForBlockDevice(const std::string& dev, std::chrono::seconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!IsBlockDevice(dev)) {
    if (std::chrono::steady_clock::now() > deadline)
      return Status::DeadlineExceeded(dev + " did not appear within " +
                                      std::to_string(timeout.count()) + " s");
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return Status::Ok();
}

Status VolumeStager::MountStaging(const StagingRecord& rec) {
  if (IsMountPoint(rec.staging_path)) return Status::Ok();
  const std::string dev = rec.device();
  std::string found;
  Status s = ProbeFsType(dev, &found);
  if (!s.ok()) return s;
  const std::string want = rec.fs_type.empty() ? "ext4" : rec.fs_type;
  if (found.empty()) {
    spdlog::info("volume {}: {} is blank, making {}", rec.volume_id, dev, want);
    s = MakeFs(dev, want);
    if (!s.ok()) return s;
  } else if (found != want) {
    return Status::FailedPrecondition("volume " + rec.volume_id + ": " + dev + " holds " + found +
                                      ", " + want + " was asked for; not reformatting");
  }
  s = MakeDirs(rec.staging_path);
  if (!s.ok()) return s;
  return MountFs(dev, rec.staging_path, want, rec.mount_flags);
}

Status VolumeStager::Attach(StagingRecord* rec) {
  VolumeId v;
  Status s = ParseVolumeId(rec->volume_id, &v);
  if (!s.ok()) return s;
  DeviceHealth h = devices_->Health(rec->dev_id);
  if (h == DeviceHealth::kGone) {
    // An agent that died between `unbd add` and writing its record left a device behind.
    rec->dev_id = devices_->Find(v);
    h = devices_->Health(rec->dev_id);
  }
  if (h == DeviceHealth::kDead) {
    s = devices_->Recover(rec->dev_id);
    if (!s.ok()) return s;
  } else if (h == DeviceHealth::kGone) {
    s = devices_->Add(v, &rec->dev_id);
    if (!s.ok()) return s;
  }
  s = WaitForBlockDevice(rec->device(), std::chrono::seconds(30));
  if (!s.ok()) return s;
  if (rec->block) return Status::Ok();
  return MountStaging(*rec);
}

Status VolumeStager::Detach(const StagingRecord& rec) {
  if (!rec.block) {
    Status s = UnmountAll(rec.staging_path);
    if (!s.ok()) return s;
  }
  if (rec.dev_id >= 0) {
    Status s = devices_->Delete(rec.dev_id);
    if (!s.ok()) return s;
    spdlog::info("volume {}: deleted /dev/ublkb{}", rec.volume_id, rec.dev_id);
  }
  return Status::Ok();
}

}  // namespace unbd::csi
