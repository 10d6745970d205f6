#include "csi/unbd_devices.h"

#include <signal.h>
#include <sys/wait.h>

#include <cerrno>
#include <fstream>

#include <spdlog/spdlog.h>

#include "csi/system.h"
#include "frontend/daemon.h"
#include "frontend/device_state.h"

namespace unbd::csi {

namespace {

std::string JoinServers(const std::vector<std::string>& s) {
  std::string out;
  for (const auto& x : s) out += (out.empty() ? "" : ",") + x;
  return out;
}

// A daemon that was killed but not reaped yet is a zombie: dead, though kill(pid, 0) succeeds.
// When the agent is its reaper (PID 1 of a container: `unbd add` orphans its daemons) nobody else
// would reap it, so reap it here.
bool IsDaemon(pid_t pid) {
  if (pid <= 0 || (kill(pid, 0) != 0 && errno != EPERM)) return false;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  std::getline(stat, line);
  const size_t paren = line.rfind(')');
  if (paren != std::string::npos && paren + 2 < line.size() &&
      (line[paren + 2] == 'Z' || line[paren + 2] == 'X')) {
    waitpid(pid, nullptr, WNOHANG);
    return false;
  }
  std::ifstream f("/proc/" + std::to_string(pid) + "/comm");
  std::string comm;
  std::getline(f, comm);
  return comm == frontend::kDaemonProcessName;
}

// `unbd add` waits up to 90 s for its daemon; RocksDB or a replica set can be slow to answer.
constexpr auto kUnbdTimeout = std::chrono::seconds(120);

}  // namespace

const char* DeviceHealthName(DeviceHealth h) {
  switch (h) {
    case DeviceHealth::kAlive:
      return "alive";
    case DeviceHealth::kDead:
      return "daemon dead";
    case DeviceHealth::kGone:
      return "gone";
  }
  return "?";
}

Status UnbdDevices::Add(const VolumeId& v, int* dev_id) {
  std::vector<std::string> argv = {unbd_, "add", "-t", "remote"};
  if (v.servers.size() == 1) {
    argv.insert(argv.end(), {"--server", v.servers[0]});
  } else {
    argv.insert(argv.end(), {"--replicas", JoinServers(v.servers)});
  }
  // A standby daemon takes over within a fraction of a second when the serving one dies; the
  // healer's `unbd recover` remains for when both are gone.
  argv.insert(argv.end(), {"--volume", v.name, "--recovery", "--reissue", "--standby"});
  CommandResult r;
  Status s = RunCommand(argv, kUnbdTimeout, &r);
  if (!s.ok()) return s;
  if (r.exit_code != 0) {
    if (r.output.find("does not exist") != std::string::npos)
      return Status::NotFound("volume " + v.ToString() + ": " + Describe(argv, r));
    return Status::Unavailable("volume " + v.ToString() + ": " + Describe(argv, r));
  }
  const size_t at = r.output.rfind("/dev/ublkb");
  if (at == std::string::npos)
    return Status::Internal(Describe(argv, r) + ": no /dev/ublkbN in its output");
  *dev_id = std::atoi(r.output.c_str() + at + 10);
  spdlog::info("volume {}: added /dev/ublkb{}", v.ToString(), *dev_id);
  return Status::Ok();
}

Status UnbdDevices::Recover(int dev_id) {
  std::vector<std::string> argv = {unbd_, "recover", "-n", std::to_string(dev_id)};
  CommandResult r;
  Status s = RunCommand(argv, kUnbdTimeout, &r);
  if (!s.ok()) return s;
  if (r.exit_code != 0) return Status::Unavailable(Describe(argv, r));
  std::string line = r.output;
  while (!line.empty() && line.back() == '\n') line.pop_back();
  spdlog::info("{}", line);
  return Status::Ok();
}

Status UnbdDevices::Delete(int dev_id) {
  if (Health(dev_id) == DeviceHealth::kGone) return Status::Ok();
  std::vector<std::string> argv = {unbd_, "del", "-n", std::to_string(dev_id)};
  CommandResult r;
  Status s = RunCommand(argv, kUnbdTimeout, &r);
  if (!s.ok()) return s;
  if (r.exit_code != 0 && r.output.find("does not exist") == std::string::npos)
    return Status::Unavailable(Describe(argv, r));
  return Status::Ok();
}

int UnbdDevices::Find(const VolumeId& v) const {
  for (int id : frontend::ListDeviceStates()) {
    frontend::DeviceState st;
    if (!frontend::LoadDeviceState(id, &st).ok()) continue;
    const auto& c = st.config;
    if (c.target != frontend::TargetType::kRemote || c.volume != v.name) continue;
    const bool same = v.servers.size() == 1 ? (c.replicas.empty() && c.server == v.servers[0])
                                            : c.replicas == v.servers;
    if (same) return id;
  }
  return -1;
}

DeviceHealth UnbdDevices::Health(int dev_id) const {
  frontend::DeviceState st;
  if (dev_id < 0 || !frontend::LoadDeviceState(dev_id, &st).ok()) return DeviceHealth::kGone;
  return IsDaemon(st.daemon_pid) ? DeviceHealth::kAlive : DeviceHealth::kDead;
}

}  // namespace unbd::csi
