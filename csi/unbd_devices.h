// UnbdDevices: this node's ublk devices as the `unbd` command line manages them. Devices are
// added, recovered and deleted by running `unbd` (so each daemon is detached from the agent and
// outlives it); their health is read from the state files the daemons keep
// ($UNBD_RUN_DIR or /run/unbd/<id>.json: configuration and daemon pid).
#pragma once

#include <chrono>
#include <string>

#include "common/status.h"
#include "csi/volume_id.h"

namespace unbd::csi {

enum class DeviceHealth {
  kAlive,  // the daemon serving it runs
  kDead,   // the device exists, its daemon died: `unbd recover` brings it back
  kGone,   // no such device (deleted, or the node rebooted)
};
const char* DeviceHealthName(DeviceHealth h);

class UnbdDevices {
 public:
  explicit UnbdDevices(std::string unbd_bin) : unbd_(std::move(unbd_bin)) {}

  // `unbd add -t remote --server|--replicas ... --volume NAME --recovery --reissue --standby`; NotFound
  // when the backend has no such volume.
  Status Add(const VolumeId& v, int* dev_id);
  Status Recover(int dev_id);
  // `unbd del -n ID`; OK when the device is already gone.
  Status Delete(int dev_id);
  // The device already serving `v` on this node (e.g. added by an agent that died before it
  // recorded it), or -1.
  int Find(const VolumeId& v) const;
  DeviceHealth Health(int dev_id) const;

  const std::string& unbd_bin() const { return unbd_; }

 private:
  std::string unbd_;
};

}  // namespace unbd::csi
