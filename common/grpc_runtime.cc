#include "common/grpc_runtime.h"

#include <absl/synchronization/mutex.h>

namespace unbd {

void TuneGrpcRuntime() { absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore); }

}  // namespace unbd
