// The loop target: a regular file or block device. Each queue does its I/O on its own io_uring:
// READ/WRITE (FUA as RWF_DSYNC), FLUSH as fdatasync, DISCARD as a punched hole, WRITE_ZEROES as a
// zeroed (or, when unmapping is allowed or unsupported, punched) range. Opens the file with
// O_DIRECT when the file system allows it, buffered otherwise (tmpfs).
#pragma once

#include <memory>

#include "frontend/target.h"

namespace unbd::frontend {

Status CreateLoopTarget(const DeviceConfig& config, std::unique_ptr<Target>* out);

}  // namespace unbd::frontend
