// ReplicatedVolume: the owner side of a replicated volume over unary BlockIo calls
// (docs/replication.md, sections 1-5). It is the reference model the frontend's per-queue
// streaming target follows, and what the CLI and the tests use.
//
//  * Create: the volume on every server (each copy with its own uuid), then replica metadata v1
//    (all healthy) committed on all of them.
//  * Open: quorum open, adoption and re-commit of the metadata (ReplicaMeta), reconciliation of
//    the regions that were in flight when the previous owner stopped (every healthy replica
//    returns the same data afterwards), then I/O. With reconcile_in_background the open returns
//    before that reconciliation: a background pass does it while I/O goes on, and a read of a
//    region not reconciled yet reconciles that region first.
//  * Writes go to every healthy and rebuilding replica in parallel and are acknowledged when every
//    healthy one applied them. A failing replica is marked out — its PeerSet filled on the
//    survivors and the metadata change committed on a majority — before the write is
//    acknowledged; with no majority the write waits `quorum_wait` and fails, never acknowledged on
//    a minority. Writes carry out_mask so the survivors track what an out replica misses.
//  * A FLUSH completed on every healthy replica clears the unstable regions no write touched since.
//  * Every data request carries the replica's server generation (from the open or the resync's
//    re-open). A replica that refuses it (restarted after a crash: it may have lost every write it
//    acknowledged since the last FLUSH) is marked out like a failed one, with the owner's unstable
//    regions in its PeerSet, and resynced; with no majority to mark it out it is re-opened and
//    becomes suspect. It never serves a read before its resync while another replica can. When
//    every healthy replica lost its generation, the next FLUSH fails once (IoError): acknowledged
//    writes may be gone everywhere.
//  * ResyncOut() brings out replicas back (resync.h): incremental or full rebuild, then healthy.
// A fenced answer (a newer owner) fails the incarnation. Thread-safe; concurrent writes must not
// overlap (the block layer's rule).
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "common/status.h"
#include "replication/quorum_open.h"
#include "replication/read_chooser.h"
#include "replication/region_locks.h"
#include "replication/region_table.h"
#include "replication/replica_meta.h"
#include "replication/replica_rpc.h"
#include "replication/resync.h"

namespace unbd::replication {

enum class ReplicaState { kHealthy, kOut, kRebuilding };
const char* ReplicaStateName(ReplicaState s);

enum class FanOutOp { kWrite, kZero, kDiscard, kFlush };

// One write (WRITE, WRITE_ZEROES, DISCARD) or FLUSH as the owner tracks it from BeginFanOut to
// EndFanOut: which replicas it goes to and with which out_mask, its sequence number and regions.
// Fixed size apart from a flush's candidate list, so a caller keeps one per tag and reuses it.
struct FanOutTicket {
  FanOutOp op = FanOutOp::kWrite;
  uint64_t offset = 0;
  uint64_t length = 0;
  bool fua = false;
  uint64_t seq = 0;
  uint64_t first_region = UINT64_MAX;  // UINT64_MAX: no regions (a flush)
  uint64_t last_region = 0;
  uint32_t wait_mask = 0;     // healthy replicas: the ack waits for every one of them
  uint32_t rebuild_mask = 0;  // rebuilding replicas: written to as well (writes only)
  uint32_t out_mask = 0;      // IoRequest.out_mask for every replica
  uint64_t volume_ids[kMaxReplicas] = {};
  uint64_t generations[kMaxReplicas] = {};  // IoRequest.server_generation for each replica
  std::vector<uint64_t> flush_candidates;  // a flush: regions it may clear from the unstable set
  uint8_t lane = 0;  // the volume's lane it started on (from the caller's queue)
  uint8_t era = 0;   // a write: the lane counter it is counted in until it ends
  uint32_t targets() const { return wait_mask | rebuild_mask; }
};

enum class FanOutStart { kStarted, kBusy, kFailed };

struct ReplicatedVolumeOptions {
  std::string client_id;
  std::chrono::milliseconds rpc_timeout{2000};   // per replica per attempt
  // The highest epoch a majority of the replicas reported in the caller's lookup just before the
  // open, or 0 (QuorumOpenOptions::known_epoch).
  uint64_t known_epoch = 0;
  std::chrono::milliseconds quorum_wait{30000};  // how long a write waits for a majority
  uint64_t resync_rate_bytes_per_s = 0;          // copier throttle; 0 = unlimited
  // > 0: a background thread probes out replicas at this interval and resyncs them.
  std::chrono::milliseconds resync_probe_interval{0};
  // Open returns before the unstable regions are reconciled (see the top of this file), unless a
  // healthy replica restarted since the last owner (then the reconciliation fixes lost writes,
  // and nothing may read that replica first). For a device, whose I/O is frozen during its open.
  bool reconcile_in_background = false;
  // Tests: runs on the background pass's thread once every region is copied, before its flush.
  std::function<void()> before_reconcile_flush = nullptr;
};

struct OpenStats {
  uint64_t reconciled_regions = 0;  // unstable regions made equal on every healthy replica
  uint64_t reconciled_bytes = 0;    // what that copied: the blocks that differed, per destination
  uint64_t deferred_regions = 0;    // unstable regions left to the background reconciliation
  uint64_t marked_out = 0;          // replicas marked out by the open
  // Replicas whose server restarted after an unclean stop since the last owner recorded its
  // generation: a healthy one was reconciled from a trusted replica, a rebuilding one is rebuilt
  // in full.
  uint64_t restarted = 0;
  // Where the open's time went, in ms: the quorum open (both phases), reading the unstable sets,
  // the mark-outs' PeerSet marks, the metadata commits, the reconciliation before I/O.
  double quorum_ms = 0, regions_ms = 0, marks_ms = 0, commit_ms = 0, reconcile_ms = 0;
};

class ReplicatedVolume {
 public:
  // Creates volume `name` on every target, each copy with a fresh uuid; all must succeed (the
  // ones created are deleted otherwise). Then commits metadata v1 (every replica healthy) on all
  // of them. `*out` is the replica set in target order.
  static Status Create(const std::vector<std::string>& targets, const std::string& name,
                       uint64_t size_bytes, std::vector<ReplicaAddr>* out);

  // Quorum-opens the volume, adopts and re-commits its metadata, reconciles the unstable regions.
  static Status Open(const std::vector<ReplicaAddr>& replicas,
                     const ReplicatedVolumeOptions& options,
                     std::unique_ptr<ReplicatedVolume>* out);
  ~ReplicatedVolume();

  Status Write(uint64_t offset, std::string_view data, bool fua = false);
  Status WriteZeroes(uint64_t offset, uint64_t length, bool discard);
  // From the trusted replica with the lowest read latency (ReadChooser), the others on error.
  Status Read(uint64_t offset, uint32_t length, std::string* out);
  Status Flush();

  // ---- Hooks for a data path of its own (the frontend's per-queue streams); the unary calls
  // above are built from the same pieces, so the rules exist once. ----
  // `queue` (BeginFanOut, ReadSources): the caller's queue. Calls with different queues (modulo
  // kLanes) share no lock and no written cache line apart from the sequence counter and the
  // region table's lines of the regions both write (four regions a line); the unary calls use
  // queue 0.
  //
  // Starts a write or flush: fails at once when fenced; a write holds its regions shared (a
  // resync copy of them waits). With block == false, kBusy when a copier holds or waits for one
  // of the regions (retry later; nothing was started). Never blocks on the network. A write
  // allocates nothing; a flush takes every lane for a moment (it lists the regions written).
  FanOutStart BeginFanOut(FanOutOp op, uint64_t offset, uint64_t length, bool fua, bool block,
                          FanOutTicket* t, Status* failed, size_t queue = 0);
  // Some replica of t.targets() failed its part (results[i] for replica i; OK for the ones that
  // applied it). Applies the rules: fenced -> the incarnation fails; a failed healthy replica is
  // marked out on a majority before this returns OK; no majority -> retried (unary, with `data`)
  // until quorum_wait and then failed; a failed rebuilding replica goes back to out. Blocks.
  Status ResolveFanOut(const FanOutTicket& t, std::string_view data, const Status* results);
  // Ends it (never blocks on the network): a failed write's regions stay unstable (pinned).
  // Returns the request's final result: `result`, except for a flush that would vouch for writes
  // every healthy replica may have lost (their server generations went away): IoError, once.
  Status EndFanOut(const FanOutTicket& t, const Status& result);
  // After a flush ended OK: clears the unstable regions it covered on every healthy replica.
  void ClearAfterFlush(const FanOutTicket& t);
  // Replicas a read may use, trusted ones first: their indices, volume ids and server
  // generations; `*trusted` of them are not suspect. A replica that lost its generation is left
  // out while any other is there. 0 with *failed set when fenced.
  size_t ReadSources(uint8_t* order, uint64_t* volume_ids, uint64_t* generations, size_t* trusted,
                     Status* failed, size_t queue = 0) const;
  // A read of [offset, offset + length) must wait for the background reconciliation (one of its
  // regions is not reconciled yet): the caller reads through Read(), which reconciles them first.
  // One relaxed atomic load once the reconciliation is done (or was never deferred).
  bool ReconcilePending(uint64_t offset, uint64_t length) const;
  // Unstable regions the background reconciliation has yet to make equal (0 when done).
  uint64_t reconcile_left() const { return reconcile_left_.load(std::memory_order_acquire); }
  // Replica p refused a request carrying `generation` as gone (a read: writes and flushes go
  // through ResolveFanOut). Marks it out, or re-opens it as suspect when no majority is left.
  // Blocks; a report about a generation already handled is ignored.
  void ReportGenerationGone(size_t p, uint64_t generation, const Status& why);
  // A replica answered "fenced by a newer epoch": every request of this incarnation fails.
  void ReportFenced(const Status& s) { FailIncarnation(s); }
  size_t replica_count() const { return replicas_.size(); }
  const std::string& replica_target(size_t i) const { return replicas_[i]->rpc->target(); }
  std::chrono::milliseconds rpc_timeout() const { return options_.rpc_timeout; }

  // Probes every out replica once and resyncs each one that answers; blocks until done. OK iff
  // every replica is healthy afterwards.
  Status ResyncOut();
  // Replaces replica `old_target` by a new, empty copy on `new_target` (created here), committed
  // as REBUILDING(full); ResyncOut() (or the next owner) rebuilds it.
  Status ReplaceReplica(const std::string& old_target, const std::string& new_target);

  // Grows the volume to `new_size_bytes` (a multiple of 4096, at most 2^60; the current size
  // is OK, smaller is INVALID_ARGUMENT). First the new size is committed in the metadata on a
  // majority, then every healthy and rebuilding copy is grown at this owner's epoch; an out
  // replica is grown by its resync when it returns, and a copy the next open finds smaller than
  // the metadata is grown then. A healthy copy that cannot be grown is marked out. OK means
  // size_bytes() is the new size and writes up to it work. `per_replica` (by replica index): OK
  // for the copies grown, the reason for the others.
  // The caller must not write past the old end before this returns. A ublk device keeps the
  // size it was added with (Linux 6.1): re-add it to see the new size.
  Status Resize(uint64_t new_size_bytes, std::vector<Status>* per_replica = nullptr);

  void set_quorum_wait(std::chrono::milliseconds wait) { options_.quorum_wait = wait; }
  // Not OK once a replica reported a newer owner: every request of this incarnation fails.
  Status fenced() const {
    std::lock_guard lock(mu_);
    return fenced_;
  }
  uint64_t epoch() const { return epoch_; }
  uint64_t size_bytes() const { return size_bytes_.load(); }
  uint64_t region_bytes() const { return region_bytes_; }
  const std::string& name() const { return name_; }
  std::vector<ReplicaState> states() const;
  std::vector<ReplicaAddr> replica_addrs() const;
  v1::ReplicaSetMeta meta() const { return meta_->committed(); }
  const OpenStats& open_stats() const { return open_stats_; }
  // The last or running resync of each replica (index = replica index).
  std::vector<ResyncProgress> resync_progress() const;

 private:
  friend class ResyncJob;
  struct Replica {
    std::unique_ptr<ReplicaRpc> rpc;
    uint64_t volume_id = 0;                     // guarded by mu_ (a full rebuild may recreate)
    ReplicaState state = ReplicaState::kOut;    // guarded by mu_
    bool full_rebuild = false;                  // guarded by mu_
    // Failed while it could not be marked out (no majority left), then answered again: it may
    // have restarted and lost its unsynced writes. Read from last, copied from last, and marked
    // out (then resynced) as soon as the others are a healthy majority without it.
    bool suspect = false;  // guarded by mu_
    uint64_t generation = 0;  // its server generation from the last (re-)open; guarded by mu_
    // Its generation went away since its last resync: it may lack acknowledged writes. Never a
    // read source while another replica is healthy.
    bool lost_writes = false;  // guarded by mu_
    // Got copies and writes while rebuilding (this owner's resync, or a previous owner's: its
    // generation is in the metadata) that only the resync's final FLUSH makes durable: if it
    // restarts after a crash before that, it is rebuilt in full. Guarded by mu_.
    bool unflushed_rebuild = false;
  };
  struct Target {
    size_t index;
    uint64_t volume_id;
    uint64_t generation;
    bool wait;  // healthy: the ack waits for it
  };

  ReplicatedVolume() = default;
  // Copies `unstable` from healthy replica `source` to the other healthy ones, flushes them and
  // clears their unstable sets.
  // At open: grows every accepting copy that is smaller than the adopted metadata's size (a
  // previous owner died before growing it, or it was out during the resize). A healthy one that
  // cannot be grown moves from `healthy` (and `restarted`) to `outs`.
  Status GrowSmallerCopies(const QuorumOpenResult& open, const v1::ReplicaSetMeta& adopted,
                           std::vector<size_t>* healthy, std::vector<size_t>* outs,
                           std::vector<size_t>* restarted);
  Status Reconcile(size_t source, const std::vector<uint64_t>& unstable);
  // A reconciliation's copy: from the healthy replica `source` (or, when it cannot be read from
  // any more, the one a read would use first) to the other healthy ones; `out_mask` puts what is
  // copied in the out replicas' PeerSets. `readable` is 0 when no replica can be the source.
  struct ReconcileEnds {
    size_t source = 0;
    CopyEnd src{};
    std::vector<CopyEnd> dsts;
    std::vector<size_t> dst_index;
    uint32_t out_mask = 0;
    size_t readable = 0;
  };
  ReconcileEnds ReconcileEndsFrom(size_t source) const;  // caller holds mu_
  // The healthy replicas as copy ends, their indices in *index. Caller holds mu_.
  std::vector<CopyEnd> HealthyEnds(std::vector<size_t>* index = nullptr) const;
  // Flushes every healthy replica, then runs `after` (if any) on each one that flushed. OK, or
  // the fenced status, or UNAVAILABLE naming each replica that failed (their indices in *failed).
  Status FlushHealthy(const std::function<Status(const CopyEnd&)>& after, std::vector<size_t>* failed);
  // The background reconciliation (reconcile_in_background) of `unstable` (deferred_unstable_).
  // Caller: Open, before any I/O.
  void DeferReconcile(size_t source, const std::vector<uint64_t>& unstable);
  void ReconcileLoop();
  // Reconciles every pending region of [offset, offset + length) before a read of it.
  Status ReconcileBeforeRead(uint64_t offset, uint64_t length);
  // Makes pending region `r` equal on every healthy replica (exclusive region lock, the blocks
  // that differ copied from the source). A replica that fails it is marked out. Caller holds
  // reconcile_run_mu_.
  Status ReconcileRegion(uint64_t r);
  // Every region reconciled: flush the healthy replicas, unpin the regions, clear the ones no
  // write touched since the open from the unstable sets (the rest go with the next FLUSH). A
  // replica whose flush fails is marked out; not OK when that is not possible now (retry).
  Status FinishReconcile(std::chrono::steady_clock::time_point started);
  Status FanOut(FanOutOp op, uint64_t offset, uint64_t length, std::string_view data, bool fua);
  Status SendOne(const Target& t, FanOutOp op, uint64_t offset, uint64_t length, std::string_view data,
                 bool fua, uint32_t out_mask);
  // Marks `failed` (healthy replicas that failed `regions`) out: their PeerSet on the survivors
  // gets the survivors' unstable regions and `regions`, then the change is committed on a
  // majority. UNAVAILABLE when that is not possible now.
  Status MarkOut(const std::vector<size_t>& failed, uint64_t first_region, uint64_t last_region,
                 const std::string& why);
  // A rebuilding replica failed a write: back to out, the write's regions into its PeerSet;
  // lost (its generation went away): to be rebuilt in full.
  void DemoteRebuilding(size_t p, uint64_t first_region, uint64_t last_region,
                        const std::string& why, bool lost);
  // Replica p refused `generation` as gone: notes that it may lack acknowledged writes (and the
  // unreported loss when no healthy replica is left without that doubt). False when the report
  // is stale (the generation was renewed already).
  bool NoteGenerationGone(size_t p, uint64_t generation);
  // Re-opens healthy replica p at our epoch after it refused `seen` as gone, when no majority is
  // left to mark it out: it becomes suspect, and the owner's unstable regions go back into its
  // own unstable set (their marks were lost with the writes). OK if already renewed.
  Status RenewGeneration(size_t p, uint64_t seen);
  // Regions written since the last FLUSH that completed on every healthy replica, and pinned
  // ones. Caller holds mu_ (not a lane: it takes every lane).
  std::vector<uint64_t> OwnerUnstable() const;
  // Marks regions in PeerSet(p) on every healthy replica.
  Status MarkPeerSet(size_t p, const std::vector<uint64_t>& regions);
  void FailIncarnation(const Status& s);
  void ClearUnstableAfterFlush(uint64_t flush_seq, const std::vector<uint64_t>& candidates);
  std::vector<size_t> IndicesIn(ReplicaState s) const;  // caller holds mu_
  std::vector<size_t> HealthySourcesFirst() const;     // caller holds mu_: trusted ones first
  // Caller holds mu_: of those, the ones to read, into order[kMaxReplicas]; returns how many.
  size_t ReadableSources(uint8_t* order) const;
  // The first and last region [offset, offset + length) touches (a zero length: its offset's).
  std::pair<uint64_t, uint64_t> RegionsOf(uint64_t offset, uint64_t length) const {
    return {offset / region_bytes_, (offset + std::max<uint64_t>(length, 1) - 1) / region_bytes_};
  }
  // Marks suspect replicas out while the rest stay a healthy majority (ResyncOut then heals them).
  void RetireSuspects();
  void ProbeLoop();

  ReplicatedVolumeOptions options_;
  uint64_t epoch_ = 0;
  std::atomic<uint64_t> size_bytes_{0};  // grows in Resize while I/O runs
  uint64_t region_bytes_ = 1 << 20;
  uint32_t max_io_bytes_ = 1 << 20;
  std::string name_;
  std::unique_ptr<ReplicaMeta> meta_;
  std::vector<std::unique_ptr<Replica>> replicas_;
  OpenStats open_stats_;

  // ---- Locking. mu_ guards the replicas' fields, fenced_, the unstable sets and progress_, as
  // it always did, but the per-I/O path no longer takes it (a failed write's end does). That
  // path (BeginFanOut, EndFanOut of a write, ReadSources) takes only the lock of its lane, one
  // per queue, and reads the replicas through `snap_`, a copy made for it. Whoever changes what
  // the snapshot shows holds mu_, then every lane (LockLanes), and replaces snap_ in place
  // (Publish): no I/O is between its snapshot read and its sequence number then, so exactly as
  // with the single mutex this path used to take, a write that starts after a mark-out carries
  // the new out_mask, and a barrier (Publish(true) + DrainEra) waits for precisely the writes
  // that carried the old state. A seqlock would give the snapshot but not that barrier. The
  // rare whole-volume views (a flush's candidate regions, the owner's unstable regions) take
  // every lane too. Lock order: barrier_mu_, region locks (locks_), mu_, lanes in index order.
  static constexpr size_t kLanes = 16;
  struct alignas(64) Lane {
    std::mutex mu;
    // Running writes per era (the parity a barrier flips): a barrier waits for the old one to
    // drain. Guarded by mu.
    uint32_t running[2] = {0, 0};
  };
  // What a write, flush or read needs of the replicas, rebuilt by Publish. Guarded by every lane
  // (written with all of them held, read with one).
  struct Snapshot {
    bool fenced = false;
    uint32_t healthy_mask = 0, rebuilding_mask = 0, out_mask = 0;
    uint64_t volume_ids[kMaxReplicas] = {};
    uint64_t generations[kMaxReplicas] = {};
    // ReadableSources' order, with the volume ids and generations in that order.
    uint8_t read_n = 0, read_trusted = 0;
    uint8_t read_order[kMaxReplicas] = {};
    uint64_t read_volume_ids[kMaxReplicas] = {};
    uint64_t read_generations[kMaxReplicas] = {};
  };
  class LockLanes;  // every lane, in order
  // Caller holds mu_: rebuilds snap_ from the replicas and fenced_ under every lane; with
  // new_era, also starts a new era and returns the one that ended (see DrainEra).
  uint8_t Publish(bool new_era = false);
  // Caller holds `lock` on mu_ and barrier_mu_, and got `era` from Publish(true): waits until
  // every write that started before that Publish (so with the state before it) has ended.
  void DrainEra(std::unique_lock<std::mutex>& lock, uint8_t era);
  // Caller holds mu_ (not a lane): every region with a tracked write into pinned_unstable_.
  void PinTracked();

  mutable std::mutex mu_;
  std::condition_variable cv_;  // with mu_: an era drained
  Status fenced_;  // set once a replica reported a newer epoch
  mutable Lane lanes_[kLanes];
  Snapshot snap_;
  uint8_t era_ = 0;  // guarded by every lane, like snap_
  // One barrier (Publish(true) + DrainEra) at a time: two eras must be enough.
  std::mutex barrier_mu_;
  // Sequence numbers order writes and flushes: a flush covers the writes with smaller ones.
  std::atomic<uint64_t> seq_{0};
  // Per region: the last write started and whether a completed flush covered it, and the writes
  // running. Updated by writes under their lane; a flush lists it under every lane, so it sees
  // every write with a smaller sequence number as running or done.
  RegionTable regions_;
  // Per region: shared by the writes, exclusive for a resync copy or an unstable-set clear. Its
  // words live in regions_' entries.
  RegionLocks locks_{&regions_};
  // Regions that stay unstable until the next open reconciles them: written by a write that
  // failed (it may have landed on some replicas only), or unstable while a healthy replica failed
  // without being marked out (a replica that crashed and came back lost its unsynced writes).
  std::set<uint64_t> pinned_unstable_;
  // The unstable regions the open left to the background reconciliation: unstable like pinned
  // ones (in every mark-out's PeerSet, never cleared by a flush) until it has made them equal,
  // flushed them and cleared them (FinishReconcile).
  std::set<uint64_t> deferred_unstable_;  std::vector<ResyncProgress> progress_;
  // Every healthy replica lost its generation: the next FLUSH fails once. Set under mu_, taken
  // (exchange) by the flush that reports it.
  std::atomic<bool> unreported_loss_{false};

  // The unary reads' latency per replica: not the daemon's hot path (its queues keep their own).
  std::mutex read_mu_;
  ReadChooser reads_;  // guarded by read_mu_

  std::mutex markout_mu_;  // one mark-out at a time: a concurrent one then finds the replica out
  std::mutex resync_mu_;  // one resync driver at a time
  std::mutex renew_mu_;   // one generation renewal at a time
  std::atomic<bool> stop_{false};
  std::thread prober_;

  // The background reconciliation. Lock order: reconcile_run_mu_ (one region at a time, the
  // background pass or a read's), then the others above; reconcile_mu_ is a leaf.
  std::mutex reconcile_run_mu_;
  mutable std::mutex reconcile_mu_;
  std::set<uint64_t> reconcile_pending_;  // guarded by reconcile_mu_
  size_t reconcile_source_ = 0;           // guarded by reconcile_run_mu_
  std::atomic<uint64_t> reconcile_left_{0};
  std::atomic<int> reconcile_readers_{0};  // reads waiting for reconcile_run_mu_ go first
  uint64_t reconciled_bytes_ = 0;          // guarded by reconcile_run_mu_
  std::thread reconciler_;
};

}  // namespace unbd::replication
