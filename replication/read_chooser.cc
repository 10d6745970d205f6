#include "replication/read_chooser.h"

#include <algorithm>

namespace unbd::replication {

size_t ReadChooser::Pick(const uint8_t* order, size_t candidates, Clock::time_point now) {
  if (candidates <= 1) return 0;
  ++picks_;
  // A replica without a recent sample is tried: it may have become the fastest.
  for (size_t k = 0; k < candidates; ++k) {
    Replica& r = r_[order[k]];
    if (!r.tried || now - r.last >= kRefresh) {
      r.tried = true;
      r.last = now;
      return k;
    }
  }
  size_t best = candidates;
  for (size_t k = 0; k < candidates; ++k) {
    const Replica& r = r_[order[k]];
    if (r.sampled && (best == candidates || r.ewma < r_[order[best]].ewma)) best = k;
  }
  // None answered yet (all tried, in flight): the first one, as the caller ordered them.
  if (best == candidates) return 0;
  if (picks_ % kExploreEvery == 0) {
    const size_t other = (best + 1 + (picks_ / kExploreEvery) % (candidates - 1)) % candidates;
    r_[order[other]].last = now;
    return other;
  }
  return best;
}

void ReadChooser::Completed(size_t replica, Clock::duration latency, Clock::time_point now) {
  Replica& r = r_[replica];
  const Clock::rep sample = std::max<Clock::rep>(latency.count(), 0);
  // After an error the penalty is no estimate: the first answer replaces it.
  r.ewma = (!r.sampled || r.failed) ? sample : r.ewma + (sample - r.ewma) / 8;
  r.sampled = r.tried = true;
  r.failed = false;
  r.last = now;
}

void ReadChooser::Failed(size_t replica, Clock::time_point now) {
  Replica& r = r_[replica];
  r.ewma = std::max(r.ewma, kErrorPenalty.count());
  r.sampled = r.tried = r.failed = true;
  r.last = now;
}

}  // namespace unbd::replication
