#include "csi/system.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <fstream>
#include <sstream>

extern char** environ;

namespace unbd::csi {

namespace {

using Clock = std::chrono::steady_clock;

std::string Join(const std::vector<std::string>& argv) {
  std::string s;
  for (const auto& a : argv) s += (s.empty() ? "" : " ") + a;
  return s;
}

// mountinfo escapes space, tab, newline and backslash as \ooo.
std::string Unescape(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size()) {
      const std::string oct = s.substr(i + 1, 3);
      if (oct.find_first_not_of("01234567") == std::string::npos) {
        out += static_cast<char>(std::stoi(oct, nullptr, 8));
        i += 3;
        continue;
      }
    }
    out += s[i];
  }
  return out;
}

std::string Normalize(const std::string& path) {
  std::error_code ec;
  auto canon = std::filesystem::weakly_canonical(path, ec);
  std::string p = ec ? path : canon.string();
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  return p;
}

}  // namespace

Status RunCommand(const std::vector<std::string>& argv, std::chrono::milliseconds timeout,
                  CommandResult* out) {
  *out = CommandResult{};
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return Status::FromErrno(errno, "pipe");
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&fa, fds[1], STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&fa, fds[1], STDERR_FILENO);
  posix_spawn_file_actions_addclosefrom_np(&fa, 3);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = -1;
  int rc = posix_spawnp(&pid, args[0], &fa, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  close(fds[1]);
  if (rc != 0) {
    close(fds[0]);
    return Status::FromErrno(rc, "run " + argv[0]);
  }
  const auto deadline = Clock::now() + timeout;
  bool timed_out = false;
  for (;;) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) {
      timed_out = true;
      break;
    }
    pollfd p{fds[0], POLLIN, 0};
    int n = poll(&p, 1, static_cast<int>(left));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) continue;
    char buf[4096];
    ssize_t r = read(fds[0], buf, sizeof buf);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    out->output.append(buf, static_cast<size_t>(r));
  }
  close(fds[0]);
  if (timed_out) kill(pid, SIGKILL);
  int st = 0;
  while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
  out->exit_code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  if (timed_out)
    return Status::DeadlineExceeded(Join(argv) + ": still running after " +
                                    std::to_string(timeout.count()) + " ms, killed");
  return Status::Ok();
}

std::string Describe(const std::vector<std::string>& argv, const CommandResult& r) {
  std::string text = r.output;
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  const size_t nl = text.rfind('\n');
  if (nl != std::string::npos) text = text.substr(nl + 1);
  return Join(argv) + ": exit " + std::to_string(r.exit_code) + (text.empty() ? "" : ": " + text);
}

int MountCount(const std::string& path) {
  const std::string want = Normalize(path);
  std::ifstream f("/proc/self/mountinfo");
  std::string line;
  int n = 0;
  while (std::getline(f, line)) {
    std::istringstream ss(line);
    std::string id, parent, devno, root, mount_point;
    ss >> id >> parent >> devno >> root >> mount_point;
    if (Unescape(mount_point) == want) ++n;
  }
  return n;
}

Status UnmountAll(const std::string& path) {
  for (int i = 0; i < 16 && IsMountPoint(path); ++i) {
    if (umount2(path.c_str(), 0) != 0 && errno != EINVAL && errno != ENOENT)
      return Status::FromErrno(errno, "umount " + path);
  }
  if (IsMountPoint(path)) return Status::Internal("umount " + path + ": still mounted");
  return Status::Ok();
}

Status BindMount(const std::string& source, const std::string& target, bool readonly) {
  if (mount(source.c_str(), target.c_str(), nullptr, MS_BIND, nullptr) != 0)
    return Status::FromErrno(errno, "bind mount " + source + " on " + target);
  // A bind mount ignores MS_RDONLY on creation; only a remount of the bind makes it read-only.
  if (readonly &&
      mount(nullptr, target.c_str(), nullptr, MS_BIND | MS_REMOUNT | MS_RDONLY, nullptr) != 0) {
    Status s = Status::FromErrno(errno, "remount " + target + " read-only");
    umount2(target.c_str(), 0);
    return s;
  }
  return Status::Ok();
}

Status ProbeFsType(const std::string& dev, std::string* type) {
  std::vector<std::string> argv = {"blkid", "-p", "-s", "TYPE", "-o", "value", dev};
  CommandResult r;
  Status s = RunCommand(argv, std::chrono::seconds(60), &r);
  if (!s.ok()) return s;
  if (r.exit_code == 2) {  // blkid: nothing found
    type->clear();
    return Status::Ok();
  }
  if (r.exit_code != 0) return Status::IoError(Describe(argv, r));
  std::string t = r.output;
  while (!t.empty() && (t.back() == '\n' || t.back() == ' ')) t.pop_back();
  *type = t;
  return Status::Ok();
}

Status MakeFs(const std::string& dev, const std::string& fs_type) {
  std::vector<std::string> argv;
  if (fs_type == "ext4") argv = {"mkfs.ext4", "-q", "-F", dev};
  else if (fs_type == "xfs") argv = {"mkfs.xfs", "-q", dev};
  else return Status::InvalidArgument("fs_type " + fs_type + ": unbd-csi formats ext4 or xfs");
  CommandResult r;
  Status s = RunCommand(argv, std::chrono::minutes(5), &r);
  if (!s.ok()) return s;
  if (r.exit_code != 0) return Status::IoError(Describe(argv, r));
  return Status::Ok();
}

Status MountFs(const std::string& dev, const std::string& target, const std::string& fs_type,
               const std::vector<std::string>& flags) {
  std::vector<std::string> argv = {"mount", "-t", fs_type};
  std::string opts;
  for (const auto& f : flags) opts += (opts.empty() ? "" : ",") + f;
  if (!opts.empty()) {
    argv.push_back("-o");
    argv.push_back(opts);
  }
  argv.push_back(dev);
  argv.push_back(target);
  CommandResult r;
  Status s = RunCommand(argv, std::chrono::minutes(2), &r);
  if (!s.ok()) return s;
  if (r.exit_code != 0) return Status::IoError(Describe(argv, r));
  return Status::Ok();
}

Status MakeDirs(const std::string& path) {
  std::error_code ec;
  std::filesystem::create_directories(path, ec);
  if (ec) return Status::IoError("mkdir -p " + path + ": " + ec.message());
  return Status::Ok();
}

Status MakeFile(const std::string& path) {
  Status s = MakeDirs(std::filesystem::path(path).parent_path().string());
  if (!s.ok()) return s;
  int fd = open(path.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0640);
  if (fd < 0) return Status::FromErrno(errno, "create " + path);
  close(fd);
  return Status::Ok();
}

Status RemovePath(const std::string& path) {
  std::error_code ec;
  std::filesystem::remove(path, ec);
  if (ec && ec != std::errc::no_such_file_or_directory)
    return Status::IoError("remove " + path + ": " + ec.message());
  return Status::Ok();
}

bool PathExists(const std::string& path) {
  struct stat st;
  return lstat(path.c_str(), &st) == 0;
}

bool IsBlockDevice(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 && S_ISBLK(st.st_mode);
}

}  // namespace unbd::csi
