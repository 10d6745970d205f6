#include "frontend/daemon.h"

#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <spdlog/spdlog.h>

#include "frontend/ctrl_client.h"
#include "frontend/device.h"
#include "frontend/device_state.h"
#include "frontend/lifeline.h"
#include "frontend/queue.h"
#include "frontend/recovery_lock.h"
#include "frontend/target.h"

#ifndef PR_SET_IO_FLUSHER
#define PR_SET_IO_FLUSHER 57
#endif

namespace unbd::frontend {

namespace {

using Clock = std::chrono::steady_clock;

void Notify(int fd, const std::string& line) {
  if (fd < 0) return;
  std::string l = line + "\n";
  ssize_t r = write(fd, l.data(), l.size());
  (void)r;
}

// Best effort: a device with the kernel's default scheduler still works, only slower.
void ApplyIoScheduler(int dev_id, const std::string& name) {
  if (name == "keep") return;
  const std::string path = "/sys/block/ublkb" + std::to_string(dev_id) + "/queue/scheduler";
  int fd = open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0 || write(fd, name.data(), name.size()) != static_cast<ssize_t>(name.size())) {
    spdlog::warn("device {}: I/O scheduler {}: {}: {}", dev_id, name, path, std::strerror(errno));
  } else {
    spdlog::info("device {}: I/O scheduler {}", dev_id, name);
  }
  if (fd >= 0) close(fd);
}

std::string DeviceLogPath(int dev_id) { return StateDir() + "/" + std::to_string(dev_id) + ".log"; }

// Points stdout and stderr (spdlog's sink) at `path`.
void RedirectLogs(const std::string& path, int flags) {
  mkdir(StateDir().c_str(), 0755);
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC | flags, 0644);
  if (fd < 0) return;
  dup2(fd, STDOUT_FILENO);
  dup2(fd, STDERR_FILENO);
  close(fd);
}

// `add` logs before the driver has given it a device id (the target's open: which server, how
// long, which replicas answered), so it starts in a log of its own; once the id is known that is
// appended to <id>.log, which the daemon then continues. A device id is reused after `del`, so
// <id>.log holds one device after another, each starting with its "unbd add" line.
class AddLog {
 public:
  AddLog() : path_(StateDir() + "/add-" + std::to_string(getpid()) + ".log") {
    RedirectLogs(path_, O_TRUNC);
    spdlog::info("unbd add (daemon pid {})", getpid());
  }
  void Adopt(int dev_id) {
    spdlog::default_logger()->flush();
    std::fflush(nullptr);
    const int from = open(path_.c_str(), O_RDONLY | O_CLOEXEC);
    RedirectLogs(DeviceLogPath(dev_id), O_APPEND);
    if (from >= 0) {
      char buf[8192];
      ssize_t n;
      while ((n = read(from, buf, sizeof(buf))) > 0) {
        if (write(STDOUT_FILENO, buf, static_cast<size_t>(n)) != n) break;
      }
      close(from);
    }
    Discard();
  }
  // An add that failed before it had a device: the error goes back to `unbd add` itself.
  ~AddLog() { Discard(); }

 private:
  void Discard() {
    if (!path_.empty()) unlink(path_.c_str());
    path_.clear();
  }
  std::string path_;
};

class Daemon {
 public:
  explicit Daemon(const DaemonOptions& o) : opts_(o) {}

  int Run() {
    sigset_t set;
    sigemptyset(&set);
    for (int s : {SIGTERM, SIGINT, SIGHUP}) sigaddset(&set, s);
    // Blocked before any thread exists so every thread (queues, gRPC) inherits the mask and only
    // the signalfd sees them.
    pthread_sigmask(SIG_BLOCK, &set, nullptr);
    signal(SIGPIPE, SIG_IGN);
    sigfd_ = signalfd(-1, &set, SFD_CLOEXEC);

    Status s;
    if (opts_.standby_for >= 0) {
      bool take_over = false;
      s = Standby(&take_over);
      if (s.ok() && !take_over) return 0;
    } else {
      s = opts_.recover ? Recover() : Add();
    }
    if (!s.ok()) {
      spdlog::error("{}", s.ToString());
      Notify(opts_.notify_fd, "ERR " + s.ToString());
      return 1;
    }
    Notify(opts_.notify_fd, "OK " + std::to_string(state_.dev_id));
    if (opts_.notify_fd >= 0) close(opts_.notify_fd);
    if (state_.config.standby) {
      if (opts_.standby_for >= 0) {
        // Just took over: the next standby's start-up (a process, gRPC, connections: about a
        // second of CPU under TCG) would compete with the backlog of requeued I/O. Serve's tick
        // starts it a little later.
        standby_started_ = Clock::now() - kStandbyRestartInterval + std::chrono::seconds(2);
      } else {
        StartStandby();
      }
    }
    prefault_ = std::thread([this] {
      // The buffers are faulted in (and so locked) a few MiB at a time, once a recovery's requeued
      // backlog has gone through. Each fault holds the mmap lock, which the queues' own faults and
      // gRPC's allocations need too: one long MADV_POPULATE_WRITE at SCHED_IDLE, starved of CPU
      // while holding it, stalled whole queues for seconds after a recovery.
      if (PrefaultPause(std::chrono::seconds(1))) return;
      for (auto& q : queues_) {
        while (q->PrefaultSome(2u << 20)) {
          if (PrefaultPause(std::chrono::milliseconds(1))) return;
        }
      }
    });
    return Serve();
  }

 private:
  Status Add() {
    DeviceConfig& cfg = state_.config;
    cfg = opts_.config;
    AddLog log;
    Status s = cfg.Validate();
    if (!s.ok()) return s;
    s = CtrlClient::Open(&ctrl_);
    if (!s.ok()) return s;
    s = CreateTarget(cfg, &target_);
    if (!s.ok()) return s;

    ublksrv_ctrl_dev_info info{};
    info.nr_hw_queues = cfg.nr_queues;
    info.queue_depth = cfg.queue_depth;
    info.max_io_buf_bytes = cfg.max_io_bytes;
    info.dev_id = static_cast<uint32_t>(cfg.dev_id);
    info.ublksrv_pid = getpid();
    info.flags = cfg.ublk_flags();
    s = ctrl_->AddDevice(&info);
    if (!s.ok()) {
      if (s.code() == Status::Code::kAlreadyExists)
        return Status::AlreadyExists("device " + std::to_string(cfg.dev_id) + " already exists");
      return s;
    }
    state_.dev_id = static_cast<int>(info.dev_id);
    cfg.dev_id = state_.dev_id;
    added_ = true;
    log.Adopt(state_.dev_id);
    if ((info.flags & cfg.ublk_flags()) != cfg.ublk_flags()) {
      return Fail(Status::FailedPrecondition("the ublk driver does not support the requested features (asked 0x" +
                                             Hex(cfg.ublk_flags()) + ", got 0x" + Hex(info.flags) + ")"));
    }
    ublk_params params = BaseParams(cfg, target_->size_bytes());
    if (params.basic.max_sectors > info.max_io_buf_bytes >> 9) params.basic.max_sectors = info.max_io_buf_bytes >> 9;
    target_->AdjustParams(&params);
    s = ctrl_->SetParams(state_.dev_id, params);
    if (!s.ok()) return Fail(s);
    s = PrepareQueues(info);
    if (!s.ok()) return Fail(s);
    s = FetchQueues(info);
    if (!s.ok()) return Fail(s);
    s = ctrl_->StartDevice(state_.dev_id, getpid());
    if (!s.ok()) return Fail(s);
    // Another owner may have opened the volume while this one started (two `unbd add` racing):
    // then every request already fails, starting with the partition scan. Say so and remove the
    // device instead of leaving a LIVE device that can do nothing.
    s = target_->Health();
    if (!s.ok()) return Fail(Status::FailedPrecondition("volume lost to a newer owner while starting: " + s.ToString()));
    ApplyIoScheduler(state_.dev_id, cfg.io_scheduler);
    state_.daemon_pid = getpid();
    state_.epoch = target_->epoch();
    state_.volume_id = target_->volume_id();
    s = SaveDeviceState(state_);
    if (!s.ok()) return Fail(s);
    spdlog::info("device {} LIVE: /dev/ublkb{} ({}), {} queues x {} tags, flags 0x{}", state_.dev_id, state_.dev_id,
                 target_->Describe(), info.nr_hw_queues, info.queue_depth, Hex(info.flags));
    return Status::Ok();
  }

  // `warm`: a standby's connections; it has loaded the state and opened the control device.
  Status Recover(std::unique_ptr<TargetConnections> warm = nullptr, Clock::time_point t0 = Clock::now()) {
    const int id = opts_.standby_for >= 0 ? opts_.standby_for : opts_.recover_dev_id;
    Status s;
    if (opts_.standby_for < 0) {
      s = LoadDeviceState(id, &state_);
      if (!s.ok()) return s;
      RedirectLogs(DeviceLogPath(id), O_APPEND);
      s = CtrlClient::Open(&ctrl_);
      if (!s.ok()) return s;
    }
    ublksrv_ctrl_dev_info info{};
    s = ctrl_->GetDeviceInfo(id, &info);
    if (!s.ok()) {
      if (s.code() == Status::Code::kNotFound) return Status::NotFound("device " + std::to_string(id) + " does not exist");
      return s;
    }
    if (!(info.flags & UBLK_F_USER_RECOVERY))
      return Status::FailedPrecondition("device " + std::to_string(id) + " was not added with --recovery");
    if (info.state == UBLK_S_DEV_LIVE && info.ublksrv_pid > 0 && info.ublksrv_pid != state_.daemon_pid &&
        kill(info.ublksrv_pid, 0) == 0) {
      return Status::FailedPrecondition("device " + std::to_string(id) + " is LIVE, served by pid " +
                                        std::to_string(info.ublksrv_pid));
    }
    const auto t_info = Clock::now();
    // Everything slow happens while the driver is still noticing the death and quiescing: open the
    // target (for a remote volume this takes the new epoch, fencing anything the dead daemon still
    // has in flight before this incarnation serves a single request), then set up the queues,
    // including their streams' connections. Only FETCH has to wait for START_USER_RECOVERY.
    s = CreateTarget(state_.config, &target_, TargetHint{state_.volume_id, state_.epoch}, std::move(warm));
    if (!s.ok()) return s;
    const auto t_target = Clock::now();
    s = PrepareQueues(info);
    if (!s.ok()) return s;
    const auto t_prepared = Clock::now();
    // The driver answers EBUSY until it has noticed the death, quiesced the queue and released the
    // old /dev/ublkcN.
    auto deadline = Clock::now() + std::chrono::seconds(60);
    int tries = 0;
    for (;;) {
      ++tries;
      s = ctrl_->StartUserRecovery(id);
      if (s.ok()) break;
      if (s.code() != Status::Code::kUnavailable || Clock::now() > deadline) return s;
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    const auto t_started = Clock::now();
    if (std::getenv("UNBD_TEST_STALL_RECOVERY")) {
      // Test hook: leave the device with recovery started but never ended, as a daemon dying at
      // this point would, and wait to be told to go.
      spdlog::warn("device {}: UNBD_TEST_STALL_RECOVERY: stopping after START_USER_RECOVERY", id);
      state_.daemon_pid = getpid();
      SaveDeviceState(state_);
      Notify(opts_.notify_fd, "OK " + std::to_string(id));
      signalfd_siginfo si;
      while (read(sigfd_, &si, sizeof(si)) != sizeof(si)) {
      }
      _exit(0);
    }
    s = FetchQueues(info);
    if (!s.ok()) return s;
    const auto t_fetched = Clock::now();
    s = ctrl_->EndUserRecovery(id, getpid());
    if (!s.ok()) return s;
    const auto t_live = Clock::now();
    state_.daemon_pid = getpid();
    state_.standby_pid = 0;  // until StartStandby
    state_.epoch = target_->epoch();
    state_.volume_id = target_->volume_id();
    state_.recoveries++;
    state_.recovered_by_standby = opts_.standby_for >= 0;
    state_.recovered_at_unix_ms = UnixMillisNow();
    s = SaveDeviceState(state_);
    if (!s.ok()) return s;
    auto ms = [](Clock::time_point a, Clock::time_point b) {
      return std::chrono::duration<double, std::milli>(b - a).count();
    };
    spdlog::info("device {} recovered (#{}) by {}pid {} in {:.1f} ms: state + device info {:.1f}, target open {:.1f}, "
                 "queues prepared {:.1f}, START_USER_RECOVERY {:.1f} ({} tries), FETCH {:.1f}, "
                 "END_USER_RECOVERY {:.1f}",
                 id, state_.recoveries, opts_.standby_for >= 0 ? "standby " : "", getpid(), ms(t0, t_live),
                 ms(t0, t_info), ms(t_info, t_target),
                 ms(t_target, t_prepared), ms(t_prepared, t_started), tries, ms(t_started, t_fetched),
                 ms(t_fetched, t_live));
    return Status::Ok();
  }

  // The standby's life until it takes over: connect to the target, wait on the serving daemon's
  // LifeLine (on a thread of its own, so SIGTERM is seen at once), then recover the device under
  // the recovery lock, unless someone else has meanwhile. `take_over` false: exit quietly.
  Status Standby(bool* take_over) {
    const int id = opts_.standby_for;
    const pid_t primary = opts_.primary_pid;
    prctl(PR_SET_NAME, kStandbyProcessName, 0, 0, 0);
    RedirectLogs(DeviceLogPath(id), O_APPEND);
    const auto t_start = Clock::now();
    Status s = LoadDeviceState(id, &state_);
    if (!s.ok()) return s;
    if (state_.daemon_pid != primary) {
      spdlog::info("standby {}: device {} is served by pid {}, not {}: not needed", getpid(), id, state_.daemon_pid,
                   primary);
      return Status::Ok();
    }
    std::unique_ptr<LifeLine> lifeline;
    s = LifeLine::Attach(id, &lifeline);
    if (!s.ok()) return s;
    if (lifeline->holder() != primary)
      return Status::FailedPrecondition("device " + std::to_string(id) + ": the lifeline is held by pid " +
                                        std::to_string(lifeline->holder()) + ", not " + std::to_string(primary));
    s = CtrlClient::Open(&ctrl_);
    if (!s.ok()) return s;
    std::unique_ptr<TargetConnections> warm;
    s = ConnectTarget(state_.config, &warm);
    if (!s.ok()) spdlog::warn("standby {}: connecting to the target: {} (keeps trying)", getpid(), s.ToString());
    spdlog::info("standby {} for device {} (daemon pid {}) ready in {:.1f} ms", getpid(), id, primary,
                 std::chrono::duration<double, std::milli>(Clock::now() - t_start).count());

    const int died = eventfd(0, EFD_CLOEXEC);
    std::thread([l = lifeline.get(), died] {
      while (!l->WaitForHolderDeath(std::chrono::hours(24)).ok()) {
      }
      uint64_t one = 1;
      (void)!write(died, &one, sizeof(one));
    }).detach();  // blocked until the death; the process may end first (SIGTERM)
    for (;;) {
      pollfd p[2] = {{sigfd_, POLLIN, 0}, {died, POLLIN, 0}};
      int r = poll(p, 2, 1000);
      if (r > 0 && (p[0].revents & POLLIN)) {
        spdlog::info("standby {} for device {}: stopped", getpid(), id);
        _exit(0);  // the lifeline thread is blocked in the kernel: nothing to unwind
      }
      if (r > 0 && (p[1].revents & POLLIN)) {
        close(died);
        break;
      }
      if (warm) warm->KeepWarm();  // never blocks: the death must be seen at once
    }
    const auto t_dead = Clock::now();
    spdlog::warn("standby {}: daemon pid {} of device {} died; taking over", getpid(), primary, id);
    std::unique_ptr<RecoveryLock> lock;
    s = RecoveryLock::Acquire(id, &lock);
    if (!s.ok()) return s;
    // Under the lock: `unbd del` may have removed the device, or `unbd recover` brought it back.
    DeviceState now;
    s = LoadDeviceState(id, &now);
    if (s.code() == Status::Code::kNotFound || (s.ok() && now.daemon_pid != primary)) {
      spdlog::info("standby {}: device {} was {} meanwhile: not needed", getpid(), id,
                   s.ok() ? "recovered by pid " + std::to_string(now.daemon_pid) : std::string("deleted"));
      return Status::Ok();
    }
    if (!s.ok()) return s;
    state_ = now;
    prctl(PR_SET_NAME, kDaemonProcessName, 0, 0, 0);
    *take_over = true;
    return Recover(std::move(warm), t_dead);
  }

  // Holds this daemon's LifeLine (on the main thread, which lives as long as the process) and
  // starts a standby: a new process running this binary, so it shares nothing with us but files.
  void StartStandby() {
    if (!lifeline_) {
      Status s = LifeLine::Hold(state_.dev_id, &lifeline_);
      if (!s.ok()) {
        spdlog::error("device {}: no standby: {}", state_.dev_id, s.ToString());
        return;
      }
    }
    const std::string id = std::to_string(state_.dev_id), pid = std::to_string(getpid());
    std::vector<std::string> args = {"unbd", "__daemon", "--standby-for", id, "--primary-pid", pid};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t files;
    posix_spawn_file_actions_init(&files);
    for (int fd : {STDIN_FILENO, STDOUT_FILENO, STDERR_FILENO})
      posix_spawn_file_actions_addopen(&files, fd, "/dev/null", O_RDWR, 0);
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    sigset_t none;
    sigemptyset(&none);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK);
    pid_t child = 0;
    // /proc/self/exe: the binary this daemon runs, even if a newer one was installed since.
    int r = posix_spawn(&child, "/proc/self/exe", &files, &attr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&files);
    posix_spawnattr_destroy(&attr);
    standby_started_ = Clock::now();
    if (r != 0) {
      spdlog::error("device {}: starting a standby: {}", state_.dev_id, std::strerror(r));
      return;
    }
    state_.standby_pid = child;
    Status s = SaveDeviceState(state_);
    if (!s.ok()) spdlog::warn("device {}: {}", state_.dev_id, s.ToString());
    spdlog::info("device {}: standby pid {} started", state_.dev_id, child);
  }

  static constexpr auto kStandbyRestartInterval = std::chrono::seconds(10);

  // Serve's tick: a standby that died is replaced (at most every 10 s, should it keep dying).
  void SuperviseStandby() {
    if (state_.standby_pid > 0) {
      int status = 0;
      if (waitpid(state_.standby_pid, &status, WNOHANG) != state_.standby_pid) return;
      spdlog::warn("device {}: standby pid {} exited (status 0x{:x})", state_.dev_id, state_.standby_pid, status);
      state_.standby_pid = 0;
    }
    if (Clock::now() - standby_started_ > kStandbyRestartInterval) StartStandby();
  }

  void StopStandby() {
    if (state_.standby_pid <= 0) return;
    kill(state_.standby_pid, SIGTERM);
    waitpid(state_.standby_pid, nullptr, 0);
    state_.standby_pid = 0;
  }

  // Sleeps `d`; true when the daemon is stopping.
  bool PrefaultPause(std::chrono::milliseconds d) {
    std::unique_lock l(prefault_mu_);
    return prefault_cv_.wait_for(l, d, [this] { return stopping_; });
  }

  // Each queue thread sets up its ring, buffers and target handler; nothing needs the device yet.
  Status PrepareQueues(const ublksrv_ctrl_dev_info& info) {
    std::vector<std::future<Status>> ready;
    for (int q = 0; q < info.nr_hw_queues; ++q) {
      cpu_set_t cpus;
      bool have = ctrl_->GetQueueAffinity(static_cast<int>(info.dev_id), q, &cpus).ok();
      queues_.push_back(
          std::make_unique<Queue>(q, info, target_.get(), have ? &cpus : nullptr, state_.config.poll_us));
      ready.push_back(queues_.back()->Prepare());
    }
    return FirstError(ready);
  }

  // Opens /dev/ublkcN and has every queue post its FETCH_REQs.
  Status FetchQueues(const ublksrv_ctrl_dev_info& info) {
    Status s = Device::Open(info, &device_);
    if (!s.ok()) return s;
    std::vector<std::future<Status>> fetched;
    for (auto& q : queues_) fetched.push_back(q->Fetch(device_.get()));
    return FirstError(fetched);
  }

  static Status FirstError(std::vector<std::future<Status>>& results) {
    Status first;
    for (auto& f : results) {
      Status r = f.get();
      if (!r.ok() && first.ok()) first = r;
    }
    return first;
  }

  // A failure after ADD_DEV: take the half-made device away again. Queue threads with FETCHes in
  // the kernel cannot be unwound from here, so leave through _exit, which lets the driver clean up.
  Status Fail(Status s) {
    if (added_) {
      Notify(opts_.notify_fd, "ERR " + s.ToString());
      spdlog::error("device {}: {}", state_.dev_id, s.ToString());
      if (!queues_.empty()) {
        ctrl_->StopDevice(state_.dev_id);
      }
      for (auto& q : queues_) q->Join();
      ctrl_->DeleteDevice(state_.dev_id);
      RemoveDeviceState(state_.dev_id);
      _exit(1);
    }
    return s;
  }

  int Serve() {
    bool stop_requested = false;
    for (;;) {
      pollfd p{sigfd_, POLLIN, 0};
      int r = poll(&p, 1, 200);
      if (r > 0) {
        signalfd_siginfo si;
        if (read(sigfd_, &si, sizeof(si)) == sizeof(si)) {
          spdlog::info("device {}: signal {}, stopping", state_.dev_id, si.ssi_signo);
          stop_requested = true;
          break;
        }
      }
      bool all_done = true;
      for (auto& q : queues_) all_done &= q->finished();
      if (all_done) break;  // stopped or deleted behind our back
      if (state_.config.standby) SuperviseStandby();
    }
    // Before the device goes: a standby must not take a clean stop for a death.
    StopStandby();
    if (stop_requested) {
      Status s = ctrl_->StopDevice(state_.dev_id);
      if (!s.ok()) spdlog::error("{}", s.ToString());
    }
    for (auto& q : queues_) q->Join();
    {
      std::lock_guard l(prefault_mu_);
      stopping_ = true;
    }
    prefault_cv_.notify_all();
    if (prefault_.joinable()) prefault_.join();
    uint64_t dc = 0;
    for (auto& q : queues_) dc += q->stats().double_commits.load();
    if (dc) spdlog::critical("device {}: {} completions for requests not owned (bug)", state_.dev_id, dc);
    queues_.clear();
    device_.reset();  // close /dev/ublkcN before DEL_DEV
    if (stop_requested) {
      Status s = ctrl_->DeleteDevice(state_.dev_id);
      if (!s.ok() && s.code() != Status::Code::kNotFound) spdlog::error("{}", s.ToString());
      RemoveDeviceState(state_.dev_id);
      LifeLine::Remove(state_.dev_id);
    }
    spdlog::info("device {}: daemon {} exits", state_.dev_id, getpid());
    return 0;
  }

  static std::string Hex(uint64_t v) {
    char b[32];
    std::snprintf(b, sizeof(b), "%llx", static_cast<unsigned long long>(v));
    return b;
  }

  DaemonOptions opts_;
  DeviceState state_;
  std::unique_ptr<CtrlClient> ctrl_;
  std::unique_ptr<Target> target_;
  std::unique_ptr<Device> device_;
  std::vector<std::unique_ptr<Queue>> queues_;
  bool added_ = false;
  int sigfd_ = -1;
  std::thread prefault_;
  std::mutex prefault_mu_;
  std::condition_variable prefault_cv_;
  bool stopping_ = false;
  std::unique_ptr<LifeLine> lifeline_;  // held while serving with a standby
  Clock::time_point standby_started_{};
};

}  // namespace

void HardenDaemonProcess() {
  if (prctl(PR_SET_IO_FLUSHER, 1, 0, 0, 0) != 0)
    spdlog::warn("prctl(PR_SET_IO_FLUSHER): {}", std::strerror(errno));
  int fd = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
  if (fd >= 0) {
    if (write(fd, "-1000", 5) != 5) spdlog::warn("oom_score_adj -1000: {}", std::strerror(errno));
    close(fd);
  }
}

int RunDaemon(const DaemonOptions& options) {
  prctl(PR_SET_NAME, kDaemonProcessName, 0, 0, 0);
  HardenDaemonProcess();
  Daemon d(options);
  return d.Run();
}

}  // namespace unbd::frontend
