// RecoveryLock: serialises recoveries of one device across processes (an operator's
// `unbd recover`, the boot unit, the CSI agent's healer, the device's own standby daemon). A second
// recovery of a device the first just brought back would open its volume with a newer epoch and
// fence the new daemon, so whoever holds the lock re-checks who serves the device before acting.
// A POSIX record lock on <state dir>/<id>.recover.lock: not inherited by forked children, released
// when the holder closes it or dies.
#pragma once

#include <memory>

#include "common/status.h"

namespace unbd::frontend {

class RecoveryLock {
 public:
  // Blocks while another process holds device `dev_id`'s lock.
  static Status Acquire(int dev_id, std::unique_ptr<RecoveryLock>* out);
  ~RecoveryLock();
  RecoveryLock(const RecoveryLock&) = delete;
  RecoveryLock& operator=(const RecoveryLock&) = delete;

 private:
  explicit RecoveryLock(int fd) : fd_(fd) {}
  int fd_;
};

}  // namespace unbd::frontend
