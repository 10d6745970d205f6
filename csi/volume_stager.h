// VolumeStager: the node-side work behind a staged volume, shared by NodeStageVolume and the
// volume healer. Attach makes sure a device serves the volume (reusing one that already does),
// waits for /dev/ublkbN, and for file system access formats it when blank and mounts it at the
// staging path. Detach undoes it. Both are idempotent.
#pragma once

#include <chrono>

#include "common/status.h"
#include "csi/staging_record.h"
#include "csi/unbd_devices.h"

namespace unbd::csi {

class VolumeStager {
 public:
  explicit VolumeStager(UnbdDevices* devices) : devices_(devices) {}

  // Updates rec->dev_id when it adds a device. A device whose daemon died is recovered.
  Status Attach(StagingRecord* rec);
  Status Detach(const StagingRecord& rec);

 private:
  Status WaitForBlockDevice(const std::string& dev, std::chrono::seconds timeout);
  Status MountStaging(const StagingRecord& rec);

  UnbdDevices* devices_;
};

}  // namespace unbd::csi
