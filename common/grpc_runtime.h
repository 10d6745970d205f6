// Process-wide settings for programs that use gRPC. Call once, first thing in main().
#pragma once

namespace unbd {

// Debian's abseil tracks lock-order graphs on every absl::Mutex operation (deadlock detection is
// on unless NDEBUG was defined when abseil itself was built), and gRPC takes such mutexes several
// times per message: this turns the tracking off.
void TuneGrpcRuntime();

}  // namespace unbd
