// The node's side effects, each a small function returning Status: running a program (unbd,
// blkid, mkfs, mount) with a timeout and its output captured, reading the mount table, bind
// mounts and unmounts. Children get only stdin (/dev/null), stdout and stderr: the device daemons
// `unbd add` forks must not hold the agent's sockets.
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "common/status.h"

namespace unbd::csi {

struct CommandResult {
  int exit_code = -1;  // 128+signal when killed
  std::string output;  // stdout and stderr interleaved
};

// Fails only when the program could not run or outlived `timeout` (then it is killed); a non-zero
// exit is reported in `out`.
Status RunCommand(const std::vector<std::string>& argv, std::chrono::milliseconds timeout,
                  CommandResult* out);
// "prog a b: exit 1: <last output line>".
std::string Describe(const std::vector<std::string>& argv, const CommandResult& r);

// How many mounts have `path` as their mount point (/proc/self/mountinfo).
int MountCount(const std::string& path);
inline bool IsMountPoint(const std::string& path) { return MountCount(path) > 0; }

// Unmounts `path` until nothing is mounted there. OK when nothing was.
Status UnmountAll(const std::string& path);
Status BindMount(const std::string& source, const std::string& target, bool readonly);

// The file system signature on `dev` ("" when blank).
Status ProbeFsType(const std::string& dev, std::string* type);
Status MakeFs(const std::string& dev, const std::string& fs_type);
Status MountFs(const std::string& dev, const std::string& target, const std::string& fs_type,
               const std::vector<std::string>& flags);

// mkdir -p.
Status MakeDirs(const std::string& path);
// An empty regular file (and its parents), the target of a raw block bind mount.
Status MakeFile(const std::string& path);
// Removes the file or empty directory at `path`; OK when absent.
Status RemovePath(const std::string& path);

bool PathExists(const std::string& path);
bool IsBlockDevice(const std::string& path);

}  // namespace unbd::csi
