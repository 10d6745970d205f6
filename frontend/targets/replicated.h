// The replicated remote target: a volume kept on N unbd-servers (`unbd add -t remote --replicas
// a:p,b:p,c:p --volume NAME`), following docs/replication.md. Opening it is the replication
// library's ReplicatedVolume::Open: a quorum open with a new ballot (every `recover` runs it again,
// fencing the dead incarnation on a majority), adoption and re-commit of the replica metadata, and
// reconciliation of the regions the previous owner left in flight. The library's prober resyncs
// replicas that come back, in the daemon; this target logs their progress and state changes.
//
// The data path (docs/replication.md, section 3): per queue, one BlockIo.Stream per replica (the
// plain remote target's stream code, frontend/block_stream.h). A write's payload — the buffer the
// kernel copied it into — goes as zero-copy slices to every healthy and rebuilding replica, with
// out_mask; it completes when every targeted replica answered and all of them applied it. The
// bookkeeping and the rules are the library's (ReplicatedVolume::BeginFanOut / EndFanOut, one
// implementation for this path and the unary one): a fan-out where a replica failed, timed out
// (rpc_timeout) or its stream broke goes to ResolveFanOut on a slow-path thread — mark-out
// committed on a majority before the ack, the bounded quorum wait (= retry_deadline_ms) with
// unary retries, never an ack on a minority, a fenced incarnation fails every request with -EIO
// (the replica's message is logged once); a failed write's regions stay pinned unstable. FLUSH
// clears the unstable regions it covered after it completed. Reads go to one healthy replica on
// its stream, with fallback to the next on error: the trusted one (not suspect, not lost writes,
// not rebuilding — ReadSources) with the lowest EWMA of read completion latency as this queue
// measured it (replication/read_chooser.h: no state shared between queues, nothing allocated per
// read); every 64th read, and a replica without a sample in the last 500 ms, go to another
// trusted replica, so one that recovered from being slow is found again.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "frontend/target.h"
#include "replication/replicated_volume.h"

namespace unbd::frontend {

struct ReplicatedTargetOptions {
  // Interval of the library's prober that re-opens and resyncs out replicas.
  std::chrono::milliseconds resync_probe_interval{2000};
  std::chrono::milliseconds rpc_timeout{5000};  // per replica per attempt (--replica-timeout in the design)
  // The open returns before the previous owner's unstable regions are reconciled (I/O is frozen
  // while a device opens; the library reconciles them while I/O goes on, a read of one first).
  bool reconcile_in_background = true;
  // A lookup of the volume made earlier (a standby's, while it waited): each replica's id and the
  // highest epoch a majority reported. The first open attempt starts from it instead of looking
  // up again. An old one is safe: a server never reuses a volume id (a stale one answers
  // NOT_FOUND), the replica metadata names the current set (the open re-opens that set), and a
  // stale epoch only costs the quorum open's first phase. Later attempts look up afresh.
  std::vector<replication::ReplicaAddr> looked_up;
  uint64_t looked_up_epoch = 0;
};

class ReplicatedTarget : public Target {
 public:
  // Finds config.volume on every server of config.replicas and opens it as the new owner.
  static Status Open(const DeviceConfig& config, const ReplicatedTargetOptions& options,
                     std::unique_ptr<ReplicatedTarget>* out);
  ~ReplicatedTarget() override;

  uint64_t size_bytes() const override { return volume_->size_bytes(); }
  void AdjustParams(ublk_params* params) const override;
  Status CreateQueueHandler(QueueContext* ctx, std::unique_ptr<QueueHandler>* out) override;
  std::string Describe() const override;
  uint64_t epoch() const override { return volume_->epoch(); }
  // Ids are per server; recovery never reuses them (it always re-runs the quorum open).
  uint64_t volume_id() const override { return 0; }
  Status Health() const override { return volume_->fenced(); }

  replication::ReplicatedVolume* volume() const { return volume_.get(); }
  // How long I/O waits for a majority, and reads for any healthy replica (--retry-deadline-ms).
  std::chrono::milliseconds quorum_wait() const {
    return std::chrono::milliseconds(config_.retry_deadline_ms);
  }
  // Called by handlers when a request failed: logs it (a fenced incarnation once).
  void ReportFailure(const char* op, uint64_t offset, const Status& s);

 private:
  ReplicatedTarget() = default;
  static Status OpenOnce(const DeviceConfig& config, const ReplicatedTargetOptions& options, bool use_lookup,
                         std::unique_ptr<ReplicatedTarget>* out);
  void WatchLoop();  // logs replica state changes and resync progress

  DeviceConfig config_;
  ReplicatedTargetOptions options_;
  std::unique_ptr<replication::ReplicatedVolume> volume_;
  std::atomic<bool> fenced_logged_{false};
  std::atomic<uint64_t> failures_{0};
  std::atomic<bool> stop_{false};
  std::thread watcher_;
};

// `warm`: a standby's connections (ConnectReplicatedTarget), or null.
Status CreateReplicatedTarget(const DeviceConfig& config, std::unique_ptr<Target>* out,
                              std::unique_ptr<TargetConnections> warm = nullptr);
// A standby's head start: connections to every replica (at least one must answer), which the
// target's open then finds connected, and a lookup of the volume it starts from.
Status ConnectReplicatedTarget(const DeviceConfig& config, std::unique_ptr<TargetConnections>* out);

}  // namespace unbd::frontend
