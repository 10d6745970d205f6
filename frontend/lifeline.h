// LifeLine: how a standby daemon learns, at once, that the daemon it stands in for has died.
//
// The serving daemon holds a process-shared robust mutex kept in a small file next to the device's
// state (<state dir>/<id>.lifeline). A standby blocks on it. When the holder dies, however it
// dies, the kernel walks its robust-futex list at the very start of its exit, before the slow part
// of the teardown (unmapping hundreds of MiB of locked buffers), marks the mutex owner-dead and
// wakes the standby. No polling, and nothing the dying process has to do.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <memory>
#include <string>

#include "common/status.h"

namespace unbd::frontend {

class LifeLine {
 public:
  ~LifeLine();
  LifeLine(const LifeLine&) = delete;
  LifeLine& operator=(const LifeLine&) = delete;

  // The serving daemon: a fresh file replaces any earlier one, and the calling thread holds its
  // mutex until it exits. Call it on the thread that lives as long as the process.
  static Status Hold(int dev_id, std::unique_ptr<LifeLine>* out);

  // A standby: maps the file the serving daemon holds. NotFound when there is none yet.
  static Status Attach(int dev_id, std::unique_ptr<LifeLine>* out);

  // A standby: blocks until the holder has died (OK) or `timeout` passed (DeadlineExceeded).
  // Returns at once if the holder is already gone.
  Status WaitForHolderDeath(std::chrono::milliseconds timeout);

  // The thread id that holds the mutex (the serving daemon's pid for a daemon's main thread).
  pid_t holder() const;

  static std::string PathFor(int dev_id);
  static void Remove(int dev_id);

 private:
  struct Shared;
  static Status MapShared(int fd, const std::string& path, Shared** out);
  LifeLine(Shared* shared, bool holding) : shared_(shared), holding_(holding) {}
  Shared* shared_;
  bool holding_;
};

}  // namespace unbd::frontend
