// Shared helpers of the device commands (device_util.h).
#include "cli/device_util.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>
#include <string>

#include "frontend/device_state.h"

namespace unbd::cli {

using frontend::CtrlClient;
using Clock = std::chrono::steady_clock;

[[noreturn]] void Fail(const Status& s) { throw Exit{1, s.ToString()}; }
[[noreturn]] void Fail(const std::string& msg) { throw Exit{1, msg}; }

std::unique_ptr<CtrlClient> OpenCtrl() {
  std::unique_ptr<CtrlClient> c;
  Status s = CtrlClient::Open(&c);
  if (!s.ok()) Fail(s);
  return c;
}

bool ProcessAlive(pid_t pid) { return pid > 0 && (kill(pid, 0) == 0 || errno == EPERM); }

namespace {

bool IsOurProcess(pid_t pid, const char* name) {
  if (!ProcessAlive(pid)) return false;
  std::ifstream f("/proc/" + std::to_string(pid) + "/comm");
  std::string comm;
  std::getline(f, comm);
  if (comm != name) return false;
  // A killed daemon still answers kill(pid, 0) while it tears down (under TCG, unmapping its
  // locked buffers takes hundreds of ms) and until it is reaped (a container without an init
  // reaping orphans). /proc/PID/stat after "(comm) ": state, ppid, pgrp, session, tty_nr, tpgid,
  // flags. Zombie, or PF_EXITING in the flags: it serves nothing any more, and `recover` need
  // not wait for its teardown (the driver holds START_USER_RECOVERY off until it is done).
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  std::getline(stat, line);
  const size_t paren = line.rfind(')');
  if (paren == std::string::npos) return true;
  std::istringstream fields(line.substr(paren + 1));
  std::string state;
  long skip = 0;
  unsigned long flags = 0;
  if (!(fields >> state >> skip >> skip >> skip >> skip >> skip >> flags)) return true;
  constexpr unsigned long kPfExiting = 0x4;  // include/linux/sched.h
  return state != "Z" && state != "X" && !(flags & kPfExiting);
}

}  // namespace

bool IsOurDaemon(pid_t pid) { return IsOurProcess(pid, frontend::kDaemonProcessName); }
bool IsOurStandby(pid_t pid) { return IsOurProcess(pid, frontend::kStandbyProcessName); }

// Starts the device daemon fully detached (own session, reparented to init) and waits for its one
// status line. Returns the device id. The daemon is a fork of this process running
// frontend::RunDaemon directly: no exec, so no second round of loading the gRPC libraries, which
// matters for how fast `recover` brings a device back.
int SpawnDaemon(const frontend::DaemonOptions& base, int timeout_s) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) Fail(Status::FromErrno(errno, "pipe"));
  pid_t child = fork();
  if (child < 0) Fail(Status::FromErrno(errno, "fork"));
  if (child == 0) {
    close(fds[0]);
    setsid();
    pid_t grandchild = fork();
    if (grandchild != 0) _exit(grandchild < 0 ? 1 : 0);
    // The daemon: no controlling terminal, stdio on /dev/null until it opens its log.
    int null_fd = open("/dev/null", O_RDWR);
    if (null_fd >= 0) {
      dup2(null_fd, STDIN_FILENO);
      dup2(null_fd, STDOUT_FILENO);
      dup2(null_fd, STDERR_FILENO);
      if (null_fd > STDERR_FILENO) close(null_fd);
    }
    frontend::DaemonOptions o = base;
    o.notify_fd = fds[1];
    std::fflush(nullptr);
    _exit(frontend::RunDaemon(o));
  }
  close(fds[1]);
  int st = 0;
  waitpid(child, &st, 0);
  std::string line;
  auto deadline = Clock::now() + std::chrono::seconds(timeout_s);
  for (;;) {
    int left = static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count());
    if (left <= 0) {
      close(fds[0]);
      Fail("the device daemon did not report within " + std::to_string(timeout_s) + " s");
    }
    pollfd p{fds[0], POLLIN, 0};
    if (poll(&p, 1, left) <= 0) continue;
    char buf[512];
    ssize_t n = read(fds[0], buf, sizeof(buf));
    if (n <= 0) break;
    line.append(buf, static_cast<size_t>(n));
    if (line.find('\n') != std::string::npos) break;
  }
  close(fds[0]);
  if (!line.empty() && line.back() == '\n') line.pop_back();
  if (line.rfind("OK ", 0) == 0) return std::atoi(line.c_str() + 3);
  if (line.rfind("ERR ", 0) == 0) Fail(line.substr(4));
  Fail("the device daemon exited without reporting (see " + frontend::StateDir() + "/<id>.log)");
}

// Every ublk device id on this node: char device nodes plus state files.
std::vector<int> AllDeviceIds() {
  std::set<int> ids;
  if (DIR* d = opendir("/dev")) {
    while (dirent* e = readdir(d)) {
      std::string n = e->d_name;
      if (n.rfind("ublkc", 0) == 0 && n.size() > 5 && n.find_first_not_of("0123456789", 5) == std::string::npos)
        ids.insert(std::atoi(n.c_str() + 5));
    }
    closedir(d);
  }
  for (int id : frontend::ListDeviceStates()) ids.insert(id);
  return {ids.begin(), ids.end()};
}

}  // namespace unbd::cli
