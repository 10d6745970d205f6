#include "frontend/lifeline.h"

#include <fcntl.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "frontend/device_state.h"

namespace unbd::frontend {

struct LifeLine::Shared {
  static constexpr uint64_t kMagic = 0x756e62646c696665ull;  // "unbdlife"
  uint64_t magic;
  pthread_mutex_t mutex;
  pid_t holder;
};

std::string LifeLine::PathFor(int dev_id) { return StateDir() + "/" + std::to_string(dev_id) + ".lifeline"; }

void LifeLine::Remove(int dev_id) { unlink(PathFor(dev_id).c_str()); }

LifeLine::~LifeLine() {
  // A held robust mutex stays mapped until the process exits: the kernel reads it from the
  // thread's robust list at exit, and that is the whole point.
  if (!holding_) munmap(shared_, sizeof(Shared));
}

pid_t LifeLine::holder() const { return __atomic_load_n(&shared_->holder, __ATOMIC_ACQUIRE); }

Status LifeLine::Hold(int dev_id, std::unique_ptr<LifeLine>* out) {
  const std::string dir = StateDir();
  if (mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) return Status::FromErrno(errno, "mkdir " + dir);
  const std::string path = PathFor(dev_id);
  const std::string tmp = path + ".tmp." + std::to_string(getpid());
  int fd = open(tmp.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return Status::FromErrno(errno, "create " + tmp);
  Shared* shared = nullptr;
  Status s = ftruncate(fd, sizeof(Shared)) == 0 ? MapShared(fd, tmp, &shared)
                                                 : Status::FromErrno(errno, "size " + tmp);
  close(fd);
  if (!s.ok()) {
    unlink(tmp.c_str());
    return s;
  }
  pthread_mutexattr_t attr;
  pthread_mutexattr_init(&attr);
  pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
  pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
  pthread_mutex_init(&shared->mutex, &attr);
  pthread_mutexattr_destroy(&attr);
  int r = pthread_mutex_lock(&shared->mutex);
  if (r != 0) {
    munmap(shared, sizeof(Shared));
    unlink(tmp.c_str());
    return Status::FromErrno(r, "lock " + tmp);
  }
  shared->holder = getpid();
  __atomic_store_n(&shared->magic, Shared::kMagic, __ATOMIC_RELEASE);
  // Held before it is visible under its name: a standby never finds a free mutex of a live daemon.
  if (rename(tmp.c_str(), path.c_str()) != 0) {
    Status err = Status::FromErrno(errno, "rename " + tmp);
    unlink(tmp.c_str());
    return err;  // `shared` stays mapped for good: it is on this thread's robust list
  }
  out->reset(new LifeLine(shared, /*holding=*/true));
  return Status::Ok();
}

Status LifeLine::Attach(int dev_id, std::unique_ptr<LifeLine>* out) {
  const std::string path = PathFor(dev_id);
  int fd = open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return Status::NotFound("device " + std::to_string(dev_id) + ": no lifeline " + path);
    return Status::FromErrno(errno, "open " + path);
  }
  struct stat st;
  Shared* shared = nullptr;
  Status s = fstat(fd, &st) != 0 ? Status::FromErrno(errno, "stat " + path)
             : static_cast<size_t>(st.st_size) < sizeof(Shared)
                 ? Status::InvalidArgument(path + ": too short to be a lifeline")
                 : MapShared(fd, path, &shared);
  close(fd);
  if (!s.ok()) return s;
  if (__atomic_load_n(&shared->magic, __ATOMIC_ACQUIRE) != Shared::kMagic) {
    munmap(shared, sizeof(Shared));
    return Status::InvalidArgument(path + ": not a lifeline");
  }
  out->reset(new LifeLine(shared, /*holding=*/false));
  return Status::Ok();
}

Status LifeLine::WaitForHolderDeath(std::chrono::milliseconds timeout) {
  timespec until;
  clock_gettime(CLOCK_MONOTONIC, &until);
  const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(timeout).count() +
                  static_cast<long long>(until.tv_nsec);
  until.tv_sec += static_cast<time_t>(ns / 1000000000);
  until.tv_nsec = static_cast<long>(ns % 1000000000);
  int r;
  do {
    r = pthread_mutex_clocklock(&shared_->mutex, CLOCK_MONOTONIC, &until);
  } while (r == EINTR);
  switch (r) {
    case ETIMEDOUT:
      return Status::DeadlineExceeded("lifeline holder pid " + std::to_string(holder()) + " still alive");
    case EOWNERDEAD:
      // Leave it free and consistent again, off our robust list, so it can be unmapped.
      pthread_mutex_consistent(&shared_->mutex);
      [[fallthrough]];
    case 0:  // released without dying: only a holder that gave up its role does that
      pthread_mutex_unlock(&shared_->mutex);
      return Status::Ok();
    case ENOTRECOVERABLE:  // an earlier waiter saw the death and did not repair it
      return Status::Ok();
    default:
      return Status::FromErrno(r, "lifeline wait");
  }
}

Status LifeLine::MapShared(int fd, const std::string& path, Shared** out) {
  void* p = mmap(nullptr, sizeof(Shared), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) return Status::FromErrno(errno, "mmap " + path);
  *out = static_cast<Shared*>(p);
  return Status::Ok();
}

}  // namespace unbd::frontend
