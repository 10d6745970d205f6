// `unbd add|del|list|features`: ublk devices on this node, in the ublk tools' conventions.
// Each device is served by its own detached daemon process (forked from this command; the hidden
// `__daemon` subcommand runs one by hand); its configuration and pid live in /run/unbd/<id>.json.
// `unbd recover` is recover_command.cc, `unbd status` status_command.cc.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/device_util.h"
#include "frontend/ctrl_client.h"
#include "frontend/daemon.h"
#include "frontend/device_config.h"
#include "frontend/device_state.h"
#include "frontend/lifeline.h"

namespace unbd::cli {

namespace {

using frontend::CtrlClient;
using frontend::DeviceConfig;
using frontend::DeviceState;
using Clock = std::chrono::steady_clock;

// "512K", "4M", "10G", "4096" -> bytes.
bool ParseSize(const std::string& text, uint64_t* out) {
  if (text.empty()) return false;
  char* end = nullptr;
  errno = 0;
  unsigned long long v = std::strtoull(text.c_str(), &end, 10);
  if (errno || end == text.c_str()) return false;
  std::string suffix(end);
  uint64_t mult = 1;
  if (suffix.empty() || suffix == "B") mult = 1;
  else if (suffix == "K" || suffix == "k" || suffix == "KiB") mult = 1ull << 10;
  else if (suffix == "M" || suffix == "MiB") mult = 1ull << 20;
  else if (suffix == "G" || suffix == "GiB") mult = 1ull << 30;
  else if (suffix == "T" || suffix == "TiB") mult = 1ull << 40;
  else return false;
  *out = v * mult;
  return true;
}

void DeleteOne(CtrlClient* ctrl, int id) {
  DeviceState st;
  bool have_state = frontend::LoadDeviceState(id, &st).ok();
  ublksrv_ctrl_dev_info info;
  Status s = ctrl->GetDeviceInfo(id, &info);
  if (!s.ok() && s.code() == Status::Code::kNotFound) {
    if (!have_state) Fail("device " + std::to_string(id) + " does not exist");
    frontend::RemoveDeviceState(id);  // stale state of a device deleted elsewhere
    return;
  }
  if (!s.ok()) Fail(s);
  // A live daemon stops and deletes the device itself on SIGTERM; give it the chance. The driver's
  // pid and the state file's differ while a recovery is half done.
  std::vector<pid_t> daemons;
  for (pid_t pid : {static_cast<pid_t>(info.ublksrv_pid), have_state ? st.daemon_pid : 0})
    if (IsOurDaemon(pid) && std::find(daemons.begin(), daemons.end(), pid) == daemons.end()) daemons.push_back(pid);
  // A standby first, or it would take the serving daemon's exit for a death (the daemon stops its
  // own, but it may be dead).
  if (have_state && IsOurStandby(st.standby_pid)) {
    kill(st.standby_pid, SIGTERM);
    daemons.push_back(st.standby_pid);
  }
  for (pid_t pid : daemons) kill(pid, SIGTERM);
  auto deadline = Clock::now() + std::chrono::seconds(20);
  for (pid_t pid : daemons)
    while (ProcessAlive(pid) && Clock::now() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  // Dead or quiesced daemon, recovery half done, or a daemon that did not stop: delete directly.
  s = ctrl->GetDeviceInfo(id, &info);
  if (s.ok()) {
    s = ctrl->DeleteDevice(id);
    if (!s.ok() && s.code() != Status::Code::kNotFound) Fail(s);
  }
  frontend::RemoveDeviceState(id);
  frontend::LifeLine::Remove(id);
}

nlohmann::json DescribeDevice(CtrlClient* ctrl, int id) {
  nlohmann::json j = {{"dev_id", id}};
  ublksrv_ctrl_dev_info info;
  Status s = ctrl->GetDeviceInfo(id, &info);
  if (s.ok()) {
    j["nr_hw_queues"] = info.nr_hw_queues;
    j["queue_depth"] = info.queue_depth;
    j["max_io_buf_bytes"] = info.max_io_buf_bytes;
    j["state"] = frontend::DeviceStateName(info.state);
    j["daemon_pid"] = info.ublksrv_pid;
    j["flags"] = info.flags;
    ublk_params p;
    if (ctrl->GetParams(id, &p).ok()) {
      j["logical_block_size"] = 1u << p.basic.logical_bs_shift;
      j["dev_sectors"] = p.basic.dev_sectors;
    }
  } else {
    j["state"] = "MISSING";
    j["error"] = s.ToString();
  }
  DeviceState st;
  if (frontend::LoadDeviceState(id, &st).ok()) {
    j["config"] = frontend::ToJson(st.config);
    j["epoch"] = st.epoch;
    j["recoveries"] = st.recoveries;
    j["daemon_alive"] = ProcessAlive(st.daemon_pid);
    if (st.config.standby) {
      j["standby_pid"] = st.standby_pid;
      j["standby_alive"] = IsOurStandby(st.standby_pid);
    }
  }
  return j;
}

std::string Join(const std::vector<std::string>& parts) {
  std::string out;
  for (const auto& p : parts) out += (out.empty() ? "" : ",") + p;
  return out;
}

void PrintDevice(const nlohmann::json& j) {
  std::printf("dev id %d: ", j["dev_id"].get<int>());
  if (j["state"] == "MISSING") {
    std::printf("state MISSING (stale state file)\n");
    return;
  }
  std::printf("nr_hw_queues %u queue_depth %u block size %u dev_capacity %llu\n", j["nr_hw_queues"].get<unsigned>(),
              j["queue_depth"].get<unsigned>(), j.value("logical_block_size", 0u),
              static_cast<unsigned long long>(j.value("dev_sectors", 0ull)));
  std::printf("\tmax rq size %u daemon pid %d flags 0x%llx state %s\n", j["max_io_buf_bytes"].get<unsigned>(),
              j["daemon_pid"].get<int>(), static_cast<unsigned long long>(j["flags"].get<uint64_t>()),
              j["state"].get<std::string>().c_str());
  if (j.contains("config")) {
    const auto& c = j["config"];
    std::string t = c["target"];
    std::string extra;
    if (t == "loop") extra = " file=" + c["loop"]["file"].get<std::string>();
    if (t == "remote")
      extra = (c["remote"].contains("replicas")
                   ? " replicas=" + Join(c["remote"]["replicas"].get<std::vector<std::string>>())
                   : " server=" + c["remote"]["server"].get<std::string>()) +
              " volume=" + c["remote"]["volume"].get<std::string>() +
              " epoch=" + std::to_string(j["epoch"].get<uint64_t>());
    std::printf("\ttarget %s%s recoveries %u\n", t.c_str(), extra.c_str(), j["recoveries"].get<unsigned>());
    if (j.contains("standby_pid")) {
      std::printf("\tstandby pid %d (%s)\n", j["standby_pid"].get<int>(),
                  j["standby_alive"].get<bool>() ? "waiting" : "not running");
    }
  }
}

}  // namespace

void RegisterDeviceCommands(CLI::App& app) {
  // ---- add ----
  {
    auto* cmd = app.add_subcommand("add", "Add a ublk device served by a new daemon; prints /dev/ublkbN");
    auto cfg = std::make_shared<DeviceConfig>();
    auto type = std::make_shared<std::string>();
    auto size = std::make_shared<std::string>();
    auto max_io = std::make_shared<std::string>();
    auto buffered = std::make_shared<bool>(false);
    cmd->add_option("-t,--type", *type, "Target: null, loop or remote")->required();
    cmd->add_option("-n,--number", cfg->dev_id, "Device id (default: first free)");
    cmd->add_option("-q,--queues", cfg->nr_queues, "Number of queues (default 1)");
    cmd->add_option("-d,--depth", cfg->queue_depth, "Queue depth (default 128)");
    cmd->add_flag("--recovery", cfg->recovery, "Keep the device across daemon crashes (unbd recover)");
    cmd->add_flag("--reissue", cfg->reissue, "With --recovery: re-send requests a dead daemon held");
    cmd->add_flag("--standby", cfg->standby,
                  "With --recovery: keep a standby daemon, connected and waiting, that takes over the moment "
                  "the serving one dies");
    cmd->add_flag("--need-get-data", cfg->need_get_data, "Copy write data only once a buffer is chosen");
    cmd->add_option("--io-scheduler", cfg->io_scheduler,
                    "Block-layer I/O scheduler for the device: none (default), mq-deadline, ... or keep");
    cmd->add_option("--poll-us", cfg->poll_us,
                    "After a busy round, each queue spins this long for the next request before sleeping (adaptive, e.g. 200; default 0: never)");
    cmd->add_option("-b,--block-size", cfg->logical_block_size, "Logical block size (default 512; remote: 4096)");
    cmd->add_option("--max-io-size", *max_io, "Largest request, e.g. 512K (default)");
    cmd->add_option("-f,--file", cfg->file, "loop: backing file or block device");
    cmd->add_flag("--buffered", *buffered, "loop: never use O_DIRECT");
    cmd->add_option("-s,--size", *size, "null: device size (default 250G)");
    cmd->add_option("--server", cfg->server, "remote: unbd-server HOST:PORT");
    cmd->add_option("--replicas", cfg->replicas,
                    "remote: a replicated volume's servers HOST:PORT,HOST:PORT,... (instead of --server)")
        ->delimiter(',');
    cmd->add_option("--volume", cfg->volume, "remote: volume name");
    cmd->add_option("--retry-deadline-ms", cfg->retry_deadline_ms,
                    "remote: how long I/O waits out a backend outage (replicated: for a majority) before failing (default 30000)");
    cmd->callback([cfg, type, size, max_io, buffered] {
      Status s = frontend::ParseTargetType(*type, &cfg->target);
      if (!s.ok()) Fail(s);
      if (!size->empty()) {
        if (cfg->target != frontend::TargetType::kNull) Fail("-s/--size applies to the null target only");
        if (!ParseSize(*size, &cfg->null_size_bytes) || cfg->null_size_bytes < 4096)
          Fail("-s " + *size + ": expected a size like 10G");
      }
      if (!max_io->empty()) {
        uint64_t v;
        if (!ParseSize(*max_io, &v) || v > UINT32_MAX) Fail("--max-io-size " + *max_io + ": expected a size like 512K");
        cfg->max_io_bytes = static_cast<uint32_t>(v);
      }
      cfg->direct_io = !*buffered;
      if (!cfg->replicas.empty() && cfg->target != frontend::TargetType::kRemote)
        Fail("--replicas applies to the remote target only");
      if (cfg->target == frontend::TargetType::kRemote && cfg->logical_block_size < 4096)
        cfg->logical_block_size = 4096;  // remote volumes address 4 KiB blocks
      s = cfg->Validate();
      if (!s.ok()) Fail(s);
      if (cfg->target == frontend::TargetType::kLoop) {
        struct stat st;
        if (stat(cfg->file.c_str(), &st) != 0) Fail(Status::FromErrno(errno, "-f " + cfg->file));
      }
      OpenCtrl();  // a clear error now if the driver is missing, rather than from the daemon
      frontend::DaemonOptions o;
      o.config = *cfg;
      int id = SpawnDaemon(o, 90);
      std::printf("/dev/ublkb%d\n", id);
    });
  }

  // ---- del ----
  {
    auto* cmd = app.add_subcommand("del", "Stop and delete a device (its daemon exits)");
    auto id = std::make_shared<int>(-1);
    auto all = std::make_shared<bool>(false);
    auto* n = cmd->add_option("-n,--number", *id, "Device id");
    auto* a = cmd->add_flag("-a,--all", *all, "Delete every device");
    n->excludes(a);
    cmd->callback([id, all] {
      if (*id < 0 && !*all) Fail("del: give -n ID or -a");
      auto ctrl = OpenCtrl();
      if (*all) {
        for (int i : AllDeviceIds()) DeleteOne(ctrl.get(), i);
      } else {
        DeleteOne(ctrl.get(), *id);
      }
    });
  }

  // ---- list ----
  {
    auto* cmd = app.add_subcommand("list", "Show devices, their daemons and targets");
    auto id = std::make_shared<int>(-1);
    auto json = std::make_shared<bool>(false);
    cmd->add_option("-n,--number", *id, "Only this device");
    cmd->add_flag("--json", *json, "Machine-readable output");
    cmd->callback([id, json] {
      auto ctrl = OpenCtrl();
      std::vector<int> ids;
      if (*id >= 0) ids.push_back(*id);
      else ids = AllDeviceIds();
      nlohmann::json out = nlohmann::json::array();
      for (int i : ids) {
        auto j = DescribeDevice(ctrl.get(), i);
        if (*id >= 0 && j["state"] == "MISSING" && !j.contains("config"))
          Fail("device " + std::to_string(i) + " does not exist");
        out.push_back(j);
      }
      if (*json) {
        std::printf("%s\n", out.dump(2).c_str());
      } else {
        for (auto& j : out) PrintDevice(j);
      }
    });
  }

  // ---- features ----
  {
    auto* cmd = app.add_subcommand("features", "Show which ublk features the loaded driver accepts");
    cmd->callback([] {
      auto ctrl = OpenCtrl();
      // 6.1 has no GET_FEATURES: add a throw-away device asking for everything and read back what
      // the driver kept.
      ublksrv_ctrl_dev_info info{};
      info.nr_hw_queues = 1;
      info.queue_depth = 1;
      info.max_io_buf_bytes = 4096;
      info.dev_id = static_cast<uint32_t>(-1);
      info.flags = UBLK_F_SUPPORT_ZERO_COPY | UBLK_F_URING_CMD_COMP_IN_TASK | UBLK_F_NEED_GET_DATA |
                   UBLK_F_USER_RECOVERY | UBLK_F_USER_RECOVERY_REISSUE;
      Status s = ctrl->AddDevice(&info);
      if (!s.ok()) Fail(s);
      ctrl->DeleteDevice(static_cast<int>(info.dev_id));
      struct {
        uint64_t bit;
        const char* name;
      } names[] = {{UBLK_F_SUPPORT_ZERO_COPY, "UBLK_F_SUPPORT_ZERO_COPY"},
                   {UBLK_F_URING_CMD_COMP_IN_TASK, "UBLK_F_URING_CMD_COMP_IN_TASK"},
                   {UBLK_F_NEED_GET_DATA, "UBLK_F_NEED_GET_DATA"},
                   {UBLK_F_USER_RECOVERY, "UBLK_F_USER_RECOVERY"},
                   {UBLK_F_USER_RECOVERY_REISSUE, "UBLK_F_USER_RECOVERY_REISSUE"}};
      std::printf("driver features: 0x%llx\n", static_cast<unsigned long long>(info.flags));
      for (auto& n : names) std::printf("\t%-32s %s\n", n.name, (info.flags & n.bit) ? "yes" : "no");
    });
  }

  // ---- __daemon (hidden: what add/recover exec) ----
  {
    auto* cmd = app.add_subcommand("__daemon", "");
    cmd->group("");
    auto notify = std::make_shared<int>(-1);
    auto config = std::make_shared<std::string>();
    auto recover = std::make_shared<int>(-1);
    auto standby_for = std::make_shared<int>(-1);
    auto primary_pid = std::make_shared<int>(0);
    cmd->add_option("--notify-fd", *notify);
    cmd->add_option("--config", *config);
    cmd->add_option("--recover", *recover);
    cmd->add_option("--standby-for", *standby_for);
    cmd->add_option("--primary-pid", *primary_pid);
    cmd->callback([notify, config, recover, standby_for, primary_pid] {
      frontend::DaemonOptions o;
      o.notify_fd = *notify;
      if (*standby_for >= 0) {
        o.standby_for = *standby_for;
        o.primary_pid = *primary_pid;
      } else if (*recover >= 0) {
        o.recover = true;
        o.recover_dev_id = *recover;
      } else {
        auto j = nlohmann::json::parse(*config, nullptr, false);
        Status s = frontend::FromJson(j, &o.config);
        if (!s.ok()) {
          std::string line = "ERR " + s.ToString() + "\n";
          if (write(o.notify_fd, line.data(), line.size()) < 0) {
          }
          throw Exit{1, s.ToString()};
        }
      }
      int rc = frontend::RunDaemon(o);
      throw Exit{rc, ""};
    });
  }
}

}  // namespace unbd::cli
