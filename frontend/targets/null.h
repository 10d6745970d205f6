// The null target: completes every request at once without touching data (reads return whatever
// the buffer holds). Measures the ublk + frontend overhead alone.
#pragma once

#include <memory>

#include "frontend/target.h"

namespace unbd::frontend {

Status CreateNullTarget(const DeviceConfig& config, std::unique_ptr<Target>* out);

}  // namespace unbd::frontend
