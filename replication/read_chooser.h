// ReadChooser: which replica a read goes to (docs/replication.md, section 3: one up-to-date
// replica, chosen for latency, with fallback on error). Per replica it keeps an EWMA (weight 1/8)
// of read completion latency; a read goes to the candidate with the lowest one. So that a replica
// that was slow and recovered is found again, a few reads go elsewhere:
//  * a candidate never tried, or whose last sample (or try) is older than kRefresh, gets the next
//    read (once per kRefresh);
//  * every kExploreEvery-th read goes to another candidate, each in turn.
// A failed read counts as kErrorPenalty until the replica answers again (its next sample replaces
// the EWMA). The caller decides which replicas are candidates (trusted ones only while there are
// any) and falls back to the others on error.
// Not thread-safe and allocation-free: the frontend keeps one per queue thread (no state shared
// between queues); the library's unary path guards its own with a mutex.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>

#include "replication/quorum_open.h"

namespace unbd::replication {

class ReadChooser {
 public:
  using Clock = std::chrono::steady_clock;
  static constexpr uint32_t kExploreEvery = 64;
  static constexpr Clock::duration kRefresh = std::chrono::milliseconds(500);
  static constexpr Clock::duration kErrorPenalty = std::chrono::milliseconds(100);

  // The position in order[0, candidates) (replica indices) of the one to read from first.
  // candidates must be at least 1.
  size_t Pick(const uint8_t* order, size_t candidates, Clock::time_point now);
  // Replica `replica` answered a read `latency` after it was sent.
  void Completed(size_t replica, Clock::duration latency, Clock::time_point now);
  // Replica `replica` failed a read (an error or no answer in time).
  void Failed(size_t replica, Clock::time_point now);
  // The replica's EWMA; 0 before its first sample.
  Clock::duration ewma(size_t replica) const { return Clock::duration(r_[replica].ewma); }

 private:
  struct Replica {
    Clock::rep ewma = 0;       // in Clock ticks
    Clock::time_point last{};  // last sample or try
    bool tried = false;        // picked (or answered) at least once
    bool sampled = false;      // ewma holds a sample
    bool failed = false;       // its last answer was an error: ewma is the penalty
  };
  Replica r_[kMaxReplicas];
  uint32_t picks_ = 0;
};

}  // namespace unbd::replication
