// `unbd recover -n ID | --all`: serve devices whose daemon died with a new daemon
// (docs/architecture.md, "Recovery, step by step"). --all walks every device of this node: live
// ones are left alone, quiesced ones are recovered, and a device whose kernel side is gone while
// its state file remains (the module was reloaded, or the state directory outlived a reboot) is
// added again from its saved configuration on the same id. Every device gets one report line;
// the exit status is 1 when any could not be brought back.
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "cli/commands.h"
#include "cli/device_util.h"
#include "frontend/ctrl_client.h"
#include "frontend/daemon.h"
#include "frontend/device_state.h"
#include "frontend/recovery_lock.h"

namespace unbd::cli {
namespace {

using frontend::CtrlClient;
using frontend::DeviceState;
using Clock = std::chrono::steady_clock;

// What a recovery would do for one device, decided from the driver's view and the state file.
enum class Plan { kLive, kRecover, kReadd, kNotOurs, kCannot };

struct Decision {
  Plan plan;
  std::string why;  // kLive: the daemon; kNotOurs / kCannot: the reason
};

Decision Decide(CtrlClient* ctrl, int id, bool readd_missing) {
  const std::string dev = "device " + std::to_string(id);
  DeviceState st;
  Status loaded = frontend::LoadDeviceState(id, &st);
  ublksrv_ctrl_dev_info info;
  Status s = ctrl->GetDeviceInfo(id, &info);
  if (!loaded.ok()) {
    if (loaded.code() == Status::Code::kNotFound) {
      return {Plan::kNotOurs, "no state file in " + frontend::StateDir() + " (not an unbd device)"};
    }
    return {Plan::kCannot, loaded.ToString()};
  }
  if (!s.ok()) {
    if (s.code() == Status::Code::kNotFound && readd_missing) {
      return {Plan::kReadd, "the kernel device is gone"};
    }
    return {Plan::kCannot, s.ToString()};
  }
  // The driver's pid and the state file's differ while a recovery is half done; either alive
  // means somebody serves (or is bringing back) the device.
  for (pid_t pid : {static_cast<pid_t>(info.ublksrv_pid), st.daemon_pid}) {
    if (IsOurDaemon(pid)) {
      return {Plan::kLive, "daemon pid " + std::to_string(pid) + " alive, state " +
                               frontend::DeviceStateName(info.state)};
    }
  }
  if (!st.config.recovery) {
    return {Plan::kCannot, dev + ": its daemon is dead and it was not added with --recovery "
                           "(state " + std::string(frontend::DeviceStateName(info.state)) +
                           "; remove it with `unbd del -n " + std::to_string(id) + "`)"};
  }
  if (info.state == UBLK_S_DEV_DEAD) {
    return {Plan::kCannot, dev + ": the driver stopped it (state DEAD); remove it with `unbd del -n " +
                               std::to_string(id) + "`"};
  }
  // LIVE with a dead daemon only until the driver notices; START_USER_RECOVERY waits that out.
  return {Plan::kRecover, ""};
}

std::unique_ptr<frontend::RecoveryLock> LockRecovery(int id) {
  std::unique_ptr<frontend::RecoveryLock> lock;
  Status s = frontend::RecoveryLock::Acquire(id, &lock);
  if (!s.ok()) Fail(s);
  return lock;
}

// True when device `id`'s latest recovery was its standby's, at most `within_ms` ago; *st is the
// state read.
bool StandbyRecovered(int id, int64_t within_ms, DeviceState* st) {
  return frontend::LoadDeviceState(id, st).ok() && st->recovered_by_standby &&
         frontend::UnixMillisNow() - st->recovered_at_unix_ms <= within_ms;
}

// Runs the planned recovery; returns the report line. Fail()s (throws Exit) on error.
std::string Execute(int id, Plan plan) {
  auto t0 = Clock::now();
  frontend::DaemonOptions o;
  if (plan == Plan::kRecover) {
    o.recover = true;
    o.recover_dev_id = id;
  } else {
    DeviceState old;
    Status s = frontend::LoadDeviceState(id, &old);
    if (!s.ok()) Fail(s);
    o.config = old.config;
    o.config.dev_id = id;
  }
  SpawnDaemon(o, 90);
  double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  DeviceState st;
  frontend::LoadDeviceState(id, &st);
  char line[256];
  std::snprintf(line, sizeof line, "/dev/ublkb%d %s by pid %d in %.1f ms (epoch %llu)", id,
                plan == Plan::kRecover ? "recovered" : "added again", st.daemon_pid, ms,
                static_cast<unsigned long long>(st.epoch));
  return line;
}

void RecoverAll(bool readd_missing) {
  auto ctrl = OpenCtrl();
  int recovered = 0, live = 0, skipped = 0, failed = 0;
  for (int id : AllDeviceIds()) {
    Decision d = Decide(ctrl.get(), id, readd_missing);
    std::unique_ptr<frontend::RecoveryLock> lock;
    if (d.plan == Plan::kRecover || d.plan == Plan::kReadd) {
      lock = LockRecovery(id);
      d = Decide(ctrl.get(), id, readd_missing);  // someone else may have recovered it meanwhile
    }
    switch (d.plan) {
      case Plan::kLive:
        ++live;
        std::printf("/dev/ublkb%d: live (%s), left alone\n", id, d.why.c_str());
        break;
      case Plan::kNotOurs:
        ++skipped;
        std::printf("/dev/ublkb%d: skipped: %s\n", id, d.why.c_str());
        break;
      case Plan::kCannot:
        ++failed;
        std::printf("/dev/ublkb%d: FAILED: %s\n", id, d.why.c_str());
        break;
      case Plan::kRecover:
      case Plan::kReadd:
        try {
          std::printf("%s\n", Execute(id, d.plan).c_str());
          ++recovered;
        } catch (const Exit& e) {
          ++failed;
          std::printf("/dev/ublkb%d: FAILED: %s\n", id, e.message.c_str());
        }
        break;
    }
    std::fflush(stdout);
  }
  std::printf("recover --all: %d recovered, %d live, %d skipped, %d failed\n", recovered, live,
              skipped, failed);
  std::fflush(stdout);  // the summary before main's error line on stderr
  if (failed) throw Exit{1, std::to_string(failed) + " device(s) could not be recovered"};
}

}  // namespace

void RegisterRecoverCommand(CLI::App& app) {
  auto* cmd = app.add_subcommand("recover", "Serve a device whose daemon died with a new daemon");
  auto id = std::make_shared<int>(-1);
  auto all = std::make_shared<bool>(false);
  auto no_readd = std::make_shared<bool>(false);
  auto* n = cmd->add_option("-n,--number", *id, "Device id");
  auto* a = cmd->add_flag("-a,--all", *all,
                          "Every device whose daemon is dead (live ones are left alone); exit 1 "
                          "if any could not be recovered");
  cmd->add_flag("--no-readd", *no_readd,
                "With --all: do not add again devices whose kernel side is gone but whose state "
                "file remains");
  n->excludes(a);
  cmd->callback([id, all, no_readd] {
    if (*all) return RecoverAll(!*no_readd);
    if (*id < 0) Fail("recover: give -n ID or --all");
    DeviceState st;
    Status s = frontend::LoadDeviceState(*id, &st);
    if (!s.ok()) Fail(s);
    if (!st.config.recovery) Fail("device " + std::to_string(*id) + " was not added with --recovery");
    auto ctrl = OpenCtrl();
    auto lock = LockRecovery(*id);
    // Right after kill -9 the daemon may not have begun to exit yet (IsOurDaemon stops counting
    // it once it has): give it a moment before concluding somebody else's daemon serves the device.
    // Not when the live daemon is a standby that took over moments ago: that is the recovery the
    // caller is asking for, done already.
    DeviceState now;
    const auto waited_from = Clock::now();
    Decision d = Decide(ctrl.get(), *id, false);
    for (auto deadline = waited_from + std::chrono::seconds(2);
         d.plan == Plan::kLive && !StandbyRecovered(*id, 5000, &now) && Clock::now() < deadline;) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
      d = Decide(ctrl.get(), *id, false);
    }
    const double waited_ms = std::chrono::duration<double, std::milli>(Clock::now() - waited_from).count();
    if (d.plan == Plan::kLive) {
      // Recovered by someone else since the caller saw it dead (typically the device's standby,
      // which holds the lock while it takes over): a second recovery would fence it.
      if (StandbyRecovered(*id, INT64_MAX, &now)) {
        std::printf("/dev/ublkb%d recovered by its standby, pid %d, %lld ms before this command looked (epoch "
                    "%llu); nothing left to recover\n",
                    *id, now.daemon_pid, static_cast<long long>(frontend::UnixMillisNow() - now.recovered_at_unix_ms),
                    static_cast<unsigned long long>(now.epoch));
        return;
      }
      std::printf("/dev/ublkb%d: live (%s), nothing to recover\n", *id, d.why.c_str());
      return;
    }
    if (d.plan != Plan::kRecover) Fail(d.why);
    std::printf("%s; %.1f ms for the old daemon to stop serving\n", Execute(*id, Plan::kRecover).c_str(),
                waited_ms);
  });
}

}  // namespace unbd::cli
