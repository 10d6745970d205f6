// Helpers shared by the device commands (add/del/list/recover/status): the ublk control client,
// daemon processes (alive? ours?), spawning a detached device daemon, and enumerating this node's
// devices. Failures end the command through Exit (commands.h).
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "common/status.h"
#include "frontend/ctrl_client.h"
#include "frontend/daemon.h"

namespace unbd::cli {

[[noreturn]] void Fail(const Status& s);
[[noreturn]] void Fail(const std::string& msg);

// The ublk control device; Fail()s with the driver hint when the module is not loaded.
std::unique_ptr<frontend::CtrlClient> OpenCtrl();

bool ProcessAlive(pid_t pid);
// Alive, not exiting, and a device daemon: guards against trusting (or signalling) an unrelated
// process that reused a dead daemon's pid, and lets `recover` start while a killed daemon is
// still being torn down.
bool IsOurDaemon(pid_t pid);
// The same for a device's standby daemon (config.standby) that has not taken over.
bool IsOurStandby(pid_t pid);

// Starts the device daemon fully detached and waits up to `timeout_s` for its status line.
// Returns the device id; Fail()s with the daemon's error.
int SpawnDaemon(const frontend::DaemonOptions& base, int timeout_s);

// Every ublk device id on this node: /dev/ublkcN nodes plus state files, ascending.
std::vector<int> AllDeviceIds();

}  // namespace unbd::cli
