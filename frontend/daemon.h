// The per-device daemon: `unbd add` and `unbd recover` fork it (detached) and read one status line
// from `notify_fd`: "OK <dev_id>" once the device is LIVE, or "ERR <message>". A standby is a new
// process (exec of the same binary) started by the serving daemon.
//   add:     ADD_DEV -> SET_PARAMS -> open /dev/ublkcN -> queues FETCH -> START_DEV -> save state
//   recover: open target (new epoch) -> START_USER_RECOVERY (retried while EBUSY) -> open
//            /dev/ublkcN -> queues FETCH -> END_USER_RECOVERY -> save state
//   standby: connect to the target -> wait on the serving daemon's LifeLine -> recover
// With config.standby, a serving daemon holds its LifeLine and keeps a standby process running
// (restarting it if it dies) until it stops.
// Then it serves I/O until SIGTERM/SIGINT (STOP_DEV + DEL_DEV + state removed: a clean stop) or
// until the driver aborts its queues (someone else stopped or deleted the device).
#pragma once

#include <sys/types.h>

#include "frontend/device_config.h"

namespace unbd::frontend {

// The daemon's process name (/proc/PID/comm), how `unbd del` recognises it.
inline constexpr const char* kDaemonProcessName = "unbd-daemon";
// A standby's name until it takes over.
inline constexpr const char* kStandbyProcessName = "unbd-standby";

struct DaemonOptions {
  DeviceConfig config;     // add
  bool recover = false;
  int recover_dev_id = -1;  // recover: the rest comes from the state file
  // A standby for device `standby_for`, served by `primary_pid`: connects to the target, waits for
  // that daemon to die, then recovers the device and serves it (config.standby).
  int standby_for = -1;
  pid_t primary_pid = 0;
  int notify_fd = -1;
};

// Returns the process exit status.
int RunDaemon(const DaemonOptions& options);

// Process hardening for a daemon that must make progress under memory pressure: PR_SET_IO_FLUSHER
// and oom_score_adj -1000. Failures are logged, not fatal.
void HardenDaemonProcess();

}  // namespace unbd::frontend
