// Incremental resync and full rebuild of an out replica (docs/replication.md, section 5), run by
// the owner:
//  1. probe the replica; NOT_FOUND or another uuid means a wiped or replaced copy: recreate the
//     volume there and rebuild in full (the metadata gets the new volume id and uuid);
//  2. re-open it at the owner's epoch and commit REBUILDING; from then on new writes also go to it
//     (not waited for), and writes started before that have drained;
//  3. copy the dirty set D (the healthy replicas' PeerSet(p) ∪ its own unstable set, or every
//     region) region by region from a healthy source, each under the owner's exclusive region lock
//     so a copy never interleaves with an application write to that region; all-zero regions go
//     as discards;
//  4. checkpoint progress in the metadata and clear the copied regions from the sources' PeerSet;
//  5. FLUSH on the replica, commit HEALTHY.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include "common/status.h"
#include "replication/replica_rpc.h"

namespace unbd::replication {

class ReplicatedVolume;

struct ResyncProgress {
  std::string target;
  bool active = false;
  bool full = false;
  uint64_t total_bytes = 0;   // the dirty set (full: the volume)
  uint64_t done_bytes = 0;    // of total_bytes, copied
  uint64_t copied_bytes = 0;  // bytes read from a source and written (or discarded) on the replica
  uint64_t regions = 0;       // regions in the dirty set
  double bytes_per_s = 0;     // EWMA over ~5 s
  double eta_seconds = 0;     // (total - done) / rate; 0 when unknown or done
  Status result;              // of the last finished run
};

// Bytes per second as an exponentially weighted moving average with a ~5 s time constant.
class RateMeter {
 public:
  void Add(uint64_t bytes);
  double rate() const { return rate_; }

 private:
  std::chrono::steady_clock::time_point last_ = std::chrono::steady_clock::now();
  uint64_t pending_ = 0;
  double rate_ = 0;
};

// One end of a copy: the replica, the volume's id there and its server generation.
struct CopyEnd {
  ReplicaRpc* rpc;
  uint64_t volume_id;
  uint64_t generation;
};

// Copies [offset, offset + length) from `src` to `dst` at `epoch` in pieces of at most
// `max_io_bytes`; an all-zero piece is sent as a discard. Adds the bytes moved to *copied.
// A failure of the source is UNAVAILABLE, of the destination ABORTED.
Status CopyRange(const CopyEnd& src, const CopyEnd& dst, uint64_t epoch, uint64_t offset,
                 uint64_t length, uint32_t max_io_bytes, uint32_t out_mask, uint64_t* copied);

// Makes every `dsts` replica hold `src`'s blocks in [offset, offset + length) (block-aligned),
// copying only the blocks whose checksums differ, in runs of at most `max_io_bytes`. For the
// reconciliation after an owner's crash, where an unstable region usually differs in a few blocks
// (those in flight) if at all. Adds the bytes moved to *copied. Errors as CopyRange's; on ABORTED
// (a destination failed) *failed_dst, if given, is that destination's index in `dsts`.
Status CopyDifferingBlocks(const CopyEnd& src, const std::vector<CopyEnd>& dsts, uint64_t epoch,
                           uint64_t offset, uint64_t length, uint32_t max_io_bytes, uint32_t out_mask,
                           uint64_t* copied, size_t* failed_dst = nullptr);

// One resync of replica `p` of `volume`; the volume's resync_progress() shows it while it runs.
class ResyncJob {
 public:
  ResyncJob(ReplicatedVolume* volume, size_t p) : v_(volume), p_(p) {}
  // UNAVAILABLE: the replica does not answer (still out, try later).
  Status Run();

 private:
  Status Prepare(bool* full);
  Status Copy(bool full);
  void Publish(const ResyncProgress& progress);
  // The replica refused its server generation during the copy: rebuild it in full next time.
  void DestinationLost();

  ReplicatedVolume* v_;
  size_t p_;
};

}  // namespace unbd::replication
