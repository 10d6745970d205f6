#include "frontend/recovery_lock.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <string>

#include "frontend/device_state.h"

namespace unbd::frontend {

Status RecoveryLock::Acquire(int dev_id, std::unique_ptr<RecoveryLock>* out) {
  const std::string dir = StateDir();
  if (mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) return Status::FromErrno(errno, "mkdir " + dir);
  const std::string path = dir + "/" + std::to_string(dev_id) + ".recover.lock";
  int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return Status::FromErrno(errno, "open " + path);
  struct flock l = {};
  l.l_type = F_WRLCK;
  l.l_whence = SEEK_SET;
  // Waits out another recovery of this device; that one is bounded by its daemon's own timeouts.
  while (fcntl(fd, F_SETLKW, &l) != 0) {
    if (errno != EINTR) {
      Status s = Status::FromErrno(errno, "lock " + path);
      close(fd);
      return s;
    }
  }
  out->reset(new RecoveryLock(fd));
  return Status::Ok();
}

RecoveryLock::~RecoveryLock() { close(fd_); }

}  // namespace unbd::frontend
