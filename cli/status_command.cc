// `unbd status [--json] [-n ID] [--timeout-ms MS]`: this node's devices (kernel state, daemon
// alive or dead, target, volume, epoch) and the health of the volumes they serve, asked of the
// servers with a deadline per call and all volumes in parallel, so a dead server costs one
// timeout and shows as unreachable. Works without the ublk driver (devices come from their state
// files then). Exit 0 when every daemon is alive and every volume healthy, 1 otherwise.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/device_util.h"
#include "cli/volume_view.h"
#include "frontend/ctrl_client.h"
#include "frontend/device_state.h"
#include "replication/replica_rpc.h"
#include "replication/volume_status.h"

namespace unbd::cli {
namespace {

using frontend::DeviceState;
using nlohmann::json;

// The servers a remote device's volume lives on, as the device was added.
std::vector<std::string> Servers(const frontend::DeviceConfig& c) {
  if (!c.replicas.empty()) return c.replicas;
  return {c.server};
}

json DescribeDevice(frontend::CtrlClient* ctrl, int id) {
  json j = {{"id", id}, {"dev", "/dev/ublkb" + std::to_string(id)}};
  pid_t driver_pid = 0;
  if (ctrl == nullptr) {
    j["state"] = "UNKNOWN";  // no driver: the state file is all we know
  } else {
    ublksrv_ctrl_dev_info info;
    Status s = ctrl->GetDeviceInfo(id, &info);
    if (s.ok()) {
      j["state"] = frontend::DeviceStateName(info.state);
      j["queues"] = info.nr_hw_queues;
      j["queue_depth"] = info.queue_depth;
      driver_pid = static_cast<pid_t>(info.ublksrv_pid);
      ublk_params p;
      if (ctrl->GetParams(id, &p).ok()) j["size_bytes"] = p.basic.dev_sectors << 9;
    } else if (s.code() == Status::Code::kNotFound) {
      j["state"] = "MISSING";  // a state file without a kernel device
    } else {
      j["state"] = "UNKNOWN";
      j["error"] = s.ToString();
    }
  }
  DeviceState st;
  Status loaded = frontend::LoadDeviceState(id, &st);
  pid_t pid = loaded.ok() && st.daemon_pid > 0 ? st.daemon_pid : driver_pid;
  // Alive means a device daemon answers to that pid: after a crash the pid may be reused.
  bool alive = IsOurDaemon(pid) || (driver_pid != pid && IsOurDaemon(driver_pid));
  j["daemon_pid"] = pid;
  j["daemon"] = alive ? "alive" : "dead";
  if (!loaded.ok()) {
    // Another tool's ublk server: its process name is not ours.
    j["daemon"] = ProcessAlive(driver_pid) ? "alive" : "dead";
    j["managed"] = false;  // a ublk device some other tool created
    if (loaded.code() != Status::Code::kNotFound) j["error"] = loaded.ToString();
    return j;
  }
  j["managed"] = true;
  const auto& c = st.config;
  j["target"] = frontend::TargetTypeName(c.target);
  j["recovery"] = c.recovery;
  j["recoveries"] = st.recoveries;
  if (c.target == frontend::TargetType::kLoop) j["file"] = c.file;
  if (c.target == frontend::TargetType::kRemote) {
    j["volume"] = c.volume;
    j["servers"] = Servers(c);
    j["replicated"] = !c.replicas.empty();
    j["epoch"] = st.epoch;
  }
  return j;
}

// One volume some device serves, and what its servers say about it.
struct VolumeQuery {
  std::string name;
  std::vector<std::string> servers;
  bool replicated = false;
  std::vector<int> devices;
  replication::VolumeStatusView view;
  Status status;
};

json DescribeVolume(const VolumeQuery& q) {
  json j;
  if (q.replicated) {
    j = VolumeStatusJson(q.view);
    j["replicated"] = true;
    if (!q.status.ok()) {
      j["health"] = "unknown";
      j["error"] = q.status.ToString();
    } else if (q.view.meta.config_version() == 0) {
      // Nobody answered with replica metadata: every replica is down or the volume is gone.
      j["health"] = "unreachable";
    }
  } else {
    const auto& r = q.view.replicas.empty() ? replication::ReplicaView{} : q.view.replicas[0];
    const Status& s = q.status.ok() ? r.status : q.status;
    j = {{"name", q.name}, {"replicated", false}, {"server", q.servers[0]}};
    if (s.ok()) {
      j["health"] = "healthy";
      j["reachable"] = true;
      j["epoch"] = r.volume.epoch();
      j["owner"] = r.volume.client_id();
      j["size_bytes"] = r.volume.size_bytes();
      j["volume_id"] = r.volume.id();
    } else {
      // NotFound: the server answered but has no such volume; anything else: no answer in time.
      bool answered = s.code() == Status::Code::kNotFound;
      j["health"] = answered ? "missing" : "unreachable";
      j["reachable"] = answered;
      j["error"] = s.ToString();
    }
  }
  j["devices"] = q.devices;
  return j;
}

void GatherVolumes(std::vector<VolumeQuery>* volumes, std::chrono::milliseconds timeout) {
  replication::ForEachParallel(volumes->size(), [&](size_t i) {
    auto& q = (*volumes)[i];
    q.status = replication::GatherVolumeStatus(q.servers, q.name, timeout, &q.view);
  });
}

std::string Text(const json& j, const char* key, const std::string& none = "-") {
  if (!j.contains(key)) return none;
  const auto& v = j[key];
  return v.is_string() ? v.get<std::string>() : v.dump();
}

void PrintText(const json& out) {
  if (!out["driver"]["loaded"].get<bool>()) {
    std::printf("ublk driver: not available (%s); devices from %s only\n",
                out["driver"]["error"].get<std::string>().c_str(),
                out["state_dir"].get<std::string>().c_str());
  }
  if (out["devices"].empty()) std::printf("no ublk devices\n");
  else
    std::printf("%-13s %-9s %-7s %-6s %-7s %-20s %-6s %s\n", "DEVICE", "STATE", "PID", "DAEMON",
                "TARGET", "VOLUME", "EPOCH", "RECOVERIES");
  for (const auto& d : out["devices"]) {
    std::string volume = Text(d, "volume", d.contains("file") ? d["file"].get<std::string>() : "-");
    if (d.value("fenced", false)) volume += " (FENCED)";
    std::printf("%-13s %-9s %-7s %-6s %-7s %-20s %-6s %s\n", d["dev"].get<std::string>().c_str(),
                d["state"].get<std::string>().c_str(), Text(d, "daemon_pid").c_str(),
                d["daemon"].get<std::string>().c_str(), Text(d, "target", "(not unbd)").c_str(),
                volume.c_str(), Text(d, "epoch").c_str(), Text(d, "recoveries").c_str());
  }
  for (const auto& v : out["volumes"]) {
    std::string devs;
    for (const auto& id : v["devices"]) devs += (devs.empty() ? "ublkb" : ",ublkb") + id.dump();
    if (!v["replicated"].get<bool>()) {
      std::printf("volume %s on %s: %s", v["name"].get<std::string>().c_str(),
                  v["server"].get<std::string>().c_str(), v["health"].get<std::string>().c_str());
      if (v.contains("error")) std::printf(" (%s)", v["error"].get<std::string>().c_str());
      else
        std::printf(", epoch %s, owner %s, %s", Text(v, "epoch").c_str(), Text(v, "owner").c_str(),
                    HumanSize(v["size_bytes"].get<uint64_t>()).c_str());
      std::printf(" [%s]\n", devs.c_str());
      continue;
    }
    std::printf("volume %s (replicated): %s, epoch %s, owner %s, %s of %zu replicas answered [%s]\n",
                v["name"].get<std::string>().c_str(), v["health"].get<std::string>().c_str(),
                Text(v, "epoch").c_str(), Text(v, "owner").c_str(),
                Text(v, "replicas_answered").c_str(), v["replicas"].size(), devs.c_str());
    for (const auto& r : v["replicas"]) {
      std::printf("  %-22s %-12s", r["address"].get<std::string>().c_str(),
                  Text(r, "state").c_str());
      if (r["reachable"].get<bool>()) std::printf(" epoch %s\n", Text(r, "epoch").c_str());
      else std::printf(" unreachable: %s\n", Text(r, "error").c_str());
    }
  }
}

}  // namespace

void RegisterStatusCommand(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "status", "Devices, their daemons and the health of their volumes (exit 1 if a daemon is "
                "dead or a volume not healthy)");
  auto id = std::make_shared<int>(-1);
  auto as_json = std::make_shared<bool>(false);
  auto timeout_ms = std::make_shared<int>(2000);
  cmd->add_option("-n,--number", *id, "Only this device");
  cmd->add_flag("--json", *as_json, "Machine-readable output");
  cmd->add_option("--timeout-ms", *timeout_ms, "Per-server RPC deadline")
      ->capture_default_str()
      ->check(CLI::Range(1, 600000));
  cmd->callback([id, as_json, timeout_ms] {
    std::unique_ptr<frontend::CtrlClient> ctrl;
    Status driver = frontend::CtrlClient::Open(&ctrl);
    json out = {{"state_dir", frontend::StateDir()}, {"driver", {{"loaded", driver.ok()}}}};
    if (!driver.ok()) out["driver"]["error"] = driver.ToString();

    std::vector<int> ids = AllDeviceIds();
    if (*id >= 0) {
      if (std::find(ids.begin(), ids.end(), *id) == ids.end())
        Fail("device " + std::to_string(*id) + " does not exist");
      ids = {*id};
    }
    json devices = json::array();
    std::vector<VolumeQuery> volumes;
    std::map<std::pair<std::string, std::vector<std::string>>, size_t> volume_index;
    for (int i : ids) {
      json d = DescribeDevice(ctrl.get(), i);
      if (d.contains("volume")) {
        auto servers = d["servers"].get<std::vector<std::string>>();
        auto key_servers = servers;
        std::sort(key_servers.begin(), key_servers.end());
        auto key = std::make_pair(d["volume"].get<std::string>(), key_servers);
        auto [it, inserted] = volume_index.try_emplace(key, volumes.size());
        if (inserted) {
          volumes.push_back({});
          volumes.back().name = key.first;
          volumes.back().servers = servers;
          volumes.back().replicated = d["replicated"].get<bool>();
        }
        volumes[it->second].devices.push_back(i);
      }
      devices.push_back(d);
    }
    GatherVolumes(&volumes, std::chrono::milliseconds(*timeout_ms));

    json vols = json::array();
    int problems = 0;
    for (const auto& q : volumes) {
      json v = DescribeVolume(q);
      if (v["health"] != "healthy") ++problems;
      // A device whose epoch is below the volume's has been fenced by a newer owner: its writes
      // are refused.
      if (v.contains("epoch") && v["epoch"].is_number()) {
        for (auto& d : devices) {
          if (d.contains("volume") && std::count(q.devices.begin(), q.devices.end(), d["id"].get<int>()))
            d["fenced"] = d["epoch"].get<uint64_t>() < v["epoch"].get<uint64_t>();
        }
      }
      vols.push_back(v);
    }
    for (const auto& d : devices) {
      if (d["daemon"] == "dead" || d.value("fenced", false)) ++problems;
    }
    out["devices"] = devices;
    out["volumes"] = vols;
    out["problems"] = problems;
    if (*as_json) std::printf("%s\n", out.dump(2).c_str());
    else PrintText(out);
    if (problems) throw Exit{1, ""};
  });
}

}  // namespace unbd::cli
