// DeviceState: what /run/unbd/<id>.json records about one device: its full configuration (so
// `unbd recover` can start an identical daemon), the serving daemon's pid and, for remote volumes,
// the epoch that daemon opened the volume with. Files are replaced atomically (write + rename).
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "common/status.h"
#include "frontend/device_config.h"

namespace unbd::frontend {

struct DeviceState {
  int dev_id = -1;
  pid_t daemon_pid = 0;
  pid_t standby_pid = 0;   // config.standby: the daemon waiting to take over (0: none)
  uint64_t epoch = 0;      // remote target only
  uint64_t volume_id = 0;  // remote target only; with `epoch`, lets recovery skip looking the volume up
  uint32_t recoveries = 0;
  // The latest recovery: whether the standby did it, and when (Unix time, ms).
  bool recovered_by_standby = false;
  int64_t recovered_at_unix_ms = 0;
  DeviceConfig config;
};

// Now, as DeviceState::recovered_at_unix_ms records it.
int64_t UnixMillisNow();

// The directory holding the state files: $UNBD_RUN_DIR, else /run/unbd.
std::string StateDir();
std::string StatePath(int dev_id);

nlohmann::json ToJson(const DeviceState& s);
Status FromJson(const nlohmann::json& j, DeviceState* s);

Status SaveDeviceState(const DeviceState& s);
// NotFound when there is no state file for `dev_id`.
Status LoadDeviceState(int dev_id, DeviceState* s);
Status RemoveDeviceState(int dev_id);
// Ids of every device with a state file, ascending.
std::vector<int> ListDeviceStates();

}  // namespace unbd::frontend
