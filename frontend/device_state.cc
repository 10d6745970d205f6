#include "frontend/device_state.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <sstream>

namespace unbd::frontend {

int64_t UnixMillisNow() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string StateDir() {
  const char* d = std::getenv("UNBD_RUN_DIR");
  return d && *d ? d : "/run/unbd";
}

std::string StatePath(int dev_id) { return StateDir() + "/" + std::to_string(dev_id) + ".json"; }

nlohmann::json ToJson(const DeviceState& s) {
  return {{"dev_id", s.dev_id},
          {"daemon_pid", s.daemon_pid},
          {"standby_pid", s.standby_pid},
          {"epoch", s.epoch},
          {"volume_id", s.volume_id},
          {"recoveries", s.recoveries},
          {"recovered_by_standby", s.recovered_by_standby},
          {"recovered_at_unix_ms", s.recovered_at_unix_ms},
          {"config", ToJson(s.config)}};
}

Status FromJson(const nlohmann::json& j, DeviceState* out) {
  DeviceState s;
  try {
    s.dev_id = j.at("dev_id").get<int>();
    s.daemon_pid = j.at("daemon_pid").get<pid_t>();
    s.standby_pid = j.value("standby_pid", pid_t{0});
    s.epoch = j.at("epoch").get<uint64_t>();
    s.volume_id = j.value("volume_id", uint64_t{0});  // absent in files written before it existed
    s.recoveries = j.at("recoveries").get<uint32_t>();
    s.recovered_by_standby = j.value("recovered_by_standby", false);
    s.recovered_at_unix_ms = j.value("recovered_at_unix_ms", int64_t{0});
    Status st = FromJson(j.at("config"), &s.config);
    if (!st.ok()) return st;
  } catch (const nlohmann::json::exception& e) {
    return Status::InvalidArgument(std::string("device state: ") + e.what());
  }
  *out = s;
  return Status::Ok();
}

Status SaveDeviceState(const DeviceState& s) {
  const std::string dir = StateDir();
  if (mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) return Status::FromErrno(errno, "mkdir " + dir);
  const std::string path = StatePath(s.dev_id);
  const std::string tmp = path + ".tmp." + std::to_string(getpid());
  const std::string text = ToJson(s).dump(2) + "\n";
  int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return Status::FromErrno(errno, "create " + tmp);
  ssize_t n = write(fd, text.data(), text.size());
  int err = n == static_cast<ssize_t>(text.size()) ? 0 : (n < 0 ? errno : EIO);
  if (!err && fsync(fd) != 0) err = errno;
  close(fd);
  if (!err && rename(tmp.c_str(), path.c_str()) != 0) err = errno;
  if (err) {
    unlink(tmp.c_str());
    return Status::FromErrno(err, "write " + path);
  }
  return Status::Ok();
}

Status LoadDeviceState(int dev_id, DeviceState* s) {
  const std::string path = StatePath(dev_id);
  std::ifstream in(path);
  if (!in) return Status::NotFound("device " + std::to_string(dev_id) + ": no state file " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  nlohmann::json j = nlohmann::json::parse(ss.str(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return Status::InvalidArgument(path + ": not valid JSON");
  Status st = FromJson(j, s);
  if (!st.ok()) return Status::InvalidArgument(path + ": " + st.message());
  return Status::Ok();
}

Status RemoveDeviceState(int dev_id) {
  const std::string path = StatePath(dev_id);
  if (unlink(path.c_str()) != 0 && errno != ENOENT) return Status::FromErrno(errno, "remove " + path);
  return Status::Ok();
}

std::vector<int> ListDeviceStates() {
  std::vector<int> ids;
  DIR* d = opendir(StateDir().c_str());
  if (!d) return ids;
  while (dirent* e = readdir(d)) {
    std::string name = e->d_name;
    if (name.size() < 6 || name.substr(name.size() - 5) != ".json") continue;
    std::string num = name.substr(0, name.size() - 5);
    if (num.empty() || num.find_first_not_of("0123456789") != std::string::npos) continue;
    ids.push_back(std::atoi(num.c_str()));
  }
  closedir(d);
  std::sort(ids.begin(), ids.end());
  return ids;
}

}  // namespace unbd::frontend
