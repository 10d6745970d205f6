#include "replication/replicated_volume.h"

#include <spdlog/spdlog.h>

#include <algorithm>

namespace unbd::replication {

const char* ReplicaStateName(ReplicaState s) {
  switch (s) {
    case ReplicaState::kHealthy:
      return "healthy";
    case ReplicaState::kOut:
      return "out";
    case ReplicaState::kRebuilding:
      return "rebuilding";
  }
  return "?";
}

namespace {

// The server's bound on a volume's size (backend/store.cc).
constexpr uint64_t kMaxVolumeBytes = 1ull << 60;

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

void Undo(const std::string& name, const std::vector<ReplicaAddr>& created) {
  for (const auto& c : created) {
    Status d = ReplicaRpc(c.target, std::chrono::seconds(5)).Delete(c.volume_id);
    if (!d.ok()) spdlog::warn("volume \"{}\": undo create on {}: {}", name, c.target, d.ToString());
  }
}

}  // namespace

class ReplicatedVolume::LockLanes {
 public:
  explicit LockLanes(const ReplicatedVolume* v) : v_(v) {
    for (Lane& l : v_->lanes_) l.mu.lock();
  }
  ~LockLanes() {
    for (size_t i = kLanes; i-- > 0;) v_->lanes_[i].mu.unlock();
  }
  LockLanes(const LockLanes&) = delete;
  LockLanes& operator=(const LockLanes&) = delete;

 private:
  const ReplicatedVolume* v_;
};

Status ReplicatedVolume::Create(const std::vector<std::string>& targets, const std::string& name,
                                uint64_t size_bytes, std::vector<ReplicaAddr>* out) {
  out->clear();
  if (targets.empty() || targets.size() > 5) {
    return Status::InvalidArgument("volume \"" + name + "\": " + std::to_string(targets.size()) +
                                   " replicas; a replicated volume has 1 to 5");
  }
  for (size_t i = 0; i < targets.size(); ++i) {
    for (size_t j = 0; j < i; ++j) {
      if (targets[i] == targets[j]) {
        return Status::InvalidArgument("volume \"" + name + "\": replica " + targets[i] +
                                       " listed twice; each replica needs its own server");
      }
    }
  }
  const auto timeout = std::chrono::seconds(10);
  v1::ReplicaSetMeta meta;
  meta.set_size_bytes(size_bytes);
  for (const auto& t : targets) {
    const std::string uuid = NewReplicaUuid();
    v1::Volume vol;
    Status s = ReplicaRpc(t, timeout).Create(name, size_bytes, uuid, &vol);
    if (!s.ok()) {
      Undo(name, *out);
      out->clear();
      if (s.code() == Status::Code::kAlreadyExists)
        return Status::AlreadyExists("volume \"" + name + "\" on " + t + ": " + s.message());
      if (s.code() == Status::Code::kInvalidArgument)
        return Status::InvalidArgument("volume \"" + name + "\" on " + t + ": " + s.message());
      return Status::Unavailable("volume \"" + name + "\": create on " + t +
                                 " failed: " + s.ToString());
    }
    out->push_back({t, vol.id()});
    auto* r = meta.add_replicas();
    r->set_address(t);
    r->set_volume_id(vol.id());
    r->set_uuid(uuid);
    r->set_state(v1::REPLICA_HEALTHY);
    r->set_state_since_unix_ms(NowMs());
  }
  // Every replica must use the same region size: PeerSet indices name byte ranges.
  uint64_t region_bytes = 0;
  Status s;
  for (const auto& r : *out) {
    uint64_t rb = 0;
    s = ReplicaRpc(r.target, timeout).CountRegions(r.volume_id, nullptr, &rb);
    if (!s.ok()) break;
    if (region_bytes != 0 && rb != region_bytes) {
      s = Status::InvalidArgument("replicas use different dirty-region sizes (" +
                                  std::to_string(region_bytes) + " and " + std::to_string(rb) +
                                  " bytes on " + r.target + ")");
      break;
    }
    region_bytes = rb;
  }
  if (s.ok() && region_bytes == 0) s = Status::Internal("a replica reported region size 0");
  meta.set_region_bytes(region_bytes);

  // Commit v1 at a create-time epoch on all replicas: a later owner adopts it from any majority.
  const std::string client = "cli/create/" + NewReplicaUuid();
  QuorumOpenResult open;
  if (s.ok()) s = QuorumOpen(*out, {.client_id = client, .rpc_timeout = timeout}, &open);
  if (s.ok() && open.accepted != out->size()) {
    s = Status::Unavailable("only " + std::to_string(open.accepted) + " of " +
                            std::to_string(out->size()) + " new replicas accepted the create epoch");
  }
  if (s.ok()) {
    // The generation each copy starts at: a restart after an unclean stop before the first owner
    // opens it is then noticed like any other (and costs nothing: nothing was written yet).
    for (size_t i = 0; i < out->size(); ++i)
      meta.mutable_replicas(i)->set_server_generation(
          open.replicas[i].response.server_generation());
    s = ReplicaMeta(open.epoch, client, timeout).CommitInitial(meta, out->size());
  }
  if (!s.ok()) {
    Undo(name, *out);
    out->clear();
    return Status(s.code() == Status::Code::kInvalidArgument
                      ? Status::InvalidArgument("volume \"" + name + "\": " + s.message())
                      : Status::Unavailable("volume \"" + name + "\": " + s.ToString()));
  }
  return Status::Ok();
}

Status ReplicatedVolume::Open(const std::vector<ReplicaAddr>& replicas,
                              const ReplicatedVolumeOptions& options,
                              std::unique_ptr<ReplicatedVolume>* out) {
  auto since = std::chrono::steady_clock::now();
  const auto lap = [&since] {
    const auto now = std::chrono::steady_clock::now();
    const double ms = std::chrono::duration<double, std::milli>(now - since).count();
    since = now;
    return ms;
  };
  QuorumOpenResult res;
  Status s = QuorumOpen(replicas,
                        {.client_id = options.client_id,
                         .known_epoch = options.known_epoch,
                         .rpc_timeout = options.rpc_timeout},
                        &res);
  if (!s.ok()) return s;
  v1::ReplicaSetMeta adopted;
  std::vector<ReplicaAddr> set = replicas;
  // The metadata names the replica set (a replace may have changed it since the caller learned
  // it); open that set at the same epoch, and adopt again from the answers.
  for (int round = 0;; ++round) {
    if (!AdoptHighest(res, &adopted)) {
      return Status::FailedPrecondition(
          "volume " + std::to_string(replicas[0].volume_id) + " on " + replicas[0].target +
          ": no replica metadata on the accepting replicas (not created as a replicated volume?)");
    }
    std::vector<ReplicaAddr> meta_set;
    for (const auto& r : adopted.replicas()) meta_set.push_back({r.address(), r.volume_id()});
    const bool same = meta_set.size() == set.size() &&
                      std::equal(meta_set.begin(), meta_set.end(), set.begin(),
                                 [](const ReplicaAddr& a, const ReplicaAddr& b) {
                                   return a.target == b.target && a.volume_id == b.volume_id;
                                 });
    if (same) break;
    if (round == 3) return Status::Unavailable("replica metadata keeps changing during the open");
    set = meta_set;
    s = QuorumOpen(set,
                   {.client_id = options.client_id,
                    .epoch = res.epoch,
                    .rpc_timeout = options.rpc_timeout},
                   &res);
    if (!s.ok()) return s;
  }

  std::unique_ptr<ReplicatedVolume> v(new ReplicatedVolume());
  v->options_ = options;
  v->epoch_ = res.epoch;
  v->size_bytes_ = adopted.size_bytes();
  v->region_bytes_ = adopted.region_bytes() ? adopted.region_bytes() : v->region_bytes_;
  for (const auto& r : res.replicas) {
    if (r.status.ok() && v->name_.empty()) v->name_ = r.response.name();
  }
  std::vector<size_t> healthy, outs;
  // Healthy replicas whose server restarted after an unclean stop since the last owner recorded
  // its generation: they may lack writes that owner acknowledged and never flushed.
  std::vector<size_t> restarted;
  for (size_t i = 0; i < set.size(); ++i) {
    const auto& info = adopted.replicas(i);
    const ReplicaOpenResult& r = res.replicas[i];
    auto rep = std::make_unique<Replica>();
    rep->rpc = std::make_unique<ReplicaRpc>(info.address(), options.rpc_timeout);
    rep->volume_id = info.volume_id();
    rep->full_rebuild = info.full_rebuild() && info.state() != v1::REPLICA_HEALTHY;
    // A resync began on it (its generation was recorded then, and a mark-out clears it): it may
    // hold copies that were cleared from the dirty sets but never flushed.
    rep->unflushed_rebuild = info.state() != v1::REPLICA_HEALTHY && info.server_generation() != 0;
    const bool same_copy = r.status.ok() && r.response.replica_uuid() == info.uuid();
    if (r.status.ok()) {
      rep->generation = r.response.server_generation();
      const uint32_t mio = r.response.limits().max_io_bytes();
      if (mio != 0) v->max_io_bytes_ = std::min(v->max_io_bytes_, mio);
    }
    if (r.status.ok() && !same_copy) rep->full_rebuild = true;  // wiped or replaced copy
    if (r.status.code() == Status::Code::kNotFound) rep->full_rebuild = true;
    const bool generation_changed =
        same_copy && info.server_generation() != 0 && rep->generation != info.server_generation();
    if (generation_changed) ++v->open_stats_.restarted;
    if (generation_changed && info.state() != v1::REPLICA_HEALTHY && !rep->full_rebuild) {
      rep->full_rebuild = true;
      spdlog::warn(
          "volume \"{}\" epoch {}: replica {} ({}) restarted after an unclean stop since the "
          "last owner (generation {} -> {}) while {}: the copies it had not flushed are gone and "
          "no dirty set names them: full rebuild",
          v->name_, v->epoch_, i, info.address(), info.server_generation(), rep->generation,
          StateName(info.state()));
    }
    if (same_copy && info.state() == v1::REPLICA_HEALTHY) {
      rep->state = ReplicaState::kHealthy;
      healthy.push_back(i);
      if (generation_changed) {
        restarted.push_back(i);
      } else {
        adopted.mutable_replicas(i)->set_server_generation(rep->generation);
      }
    } else {
      rep->state = ReplicaState::kOut;
      outs.push_back(i);
      spdlog::warn("volume \"{}\" epoch {}: replica {} ({}) starts out: {}", v->name_, v->epoch_, i,
                   info.address(),
                   !r.status.ok() ? r.status.ToString()
                   : !same_copy   ? "holds another copy (uuid " + r.response.replica_uuid() + ")"
                                  : std::string("metadata says ") + StateName(info.state()));
    }
    v->replicas_.push_back(std::move(rep));
  }
  v->progress_.resize(set.size());
  for (size_t i = 0; i < set.size(); ++i) v->progress_[i].target = set[i].target;
  s = v->GrowSmallerCopies(res, adopted, &healthy, &outs, &restarted);
  if (!s.ok()) return s;
  if (healthy.size() < Majority(set.size())) {
    return Status::Unavailable("volume \"" + v->name_ + "\" epoch " + std::to_string(v->epoch_) +
                               ": only " + std::to_string(healthy.size()) + " of " +
                               std::to_string(set.size()) +
                               " replicas are healthy and reachable; need a majority (" +
                               std::to_string(Majority(set.size())) + ")");
  }
  v->meta_ = std::make_unique<ReplicaMeta>(v->epoch_, options.client_id, options.rpc_timeout);

  v->open_stats_.quorum_ms = lap();
  // Every out replica's PeerSet gets the unstable regions before the metadata says it is out.
  // They are the union of the healthy replicas' unstable sets, from their open answers (a server
  // too old to send it there is asked).
  std::vector<uint64_t> unstable;
  {
    std::set<uint64_t> u;
    std::vector<size_t> ask;
    for (size_t h : healthy) {
      const v1::OpenVolumeResponse& answer = res.replicas[h].response;
      if (!answer.has_unstable_regions()) ask.push_back(h);
      u.insert(answer.unstable_regions().regions().begin(), answer.unstable_regions().regions().end());
    }
    std::vector<std::vector<uint64_t>> regions(ask.size());
    std::vector<Status> got(ask.size());
    ForEachParallel(ask.size(), [&](size_t k) {
      const Replica& r = *v->replicas_[ask[k]];
      got[k] = r.rpc->GetRegions(r.volume_id, kUnstableSet, &regions[k], nullptr);
    });
    for (size_t k = 0; k < ask.size(); ++k) {
      if (!got[k].ok()) return Status::Unavailable("reconcile: unstable regions of " +
                                                   v->replicas_[ask[k]]->rpc->target() + ": " +
                                                   got[k].ToString());
      u.insert(regions[k].begin(), regions[k].end());
    }
    unstable.assign(u.begin(), u.end());
  }
  v->open_stats_.regions_ms = lap();
  for (size_t p : outs) {
    s = v->MarkPeerSet(p, unstable);
    if (!s.ok()) return s;
  }
  v->open_stats_.marks_ms = lap();
  for (size_t p : outs) {
    auto* info = adopted.mutable_replicas(p);
    if (info->state() == v1::REPLICA_HEALTHY) {
      ++v->open_stats_.marked_out;
      info->set_state_since_unix_ms(NowMs());
      // What it may have lost is in its PeerSet now (above): its generation no longer matters.
      info->set_server_generation(0);
    }
    info->set_state(v1::REPLICA_OUT);
    info->set_full_rebuild(v->replicas_[p]->full_rebuild);
  }
  // The reconciliation's source must hold every acknowledged write: a replica whose generation
  // is the one the last owner recorded (the first of them, in replica order).
  size_t source = healthy[0];
  for (size_t h : healthy) {
    if (std::find(restarted.begin(), restarted.end(), h) == restarted.end()) {
      source = h;
      break;
    }
  }
  const bool none_trusted = restarted.size() == healthy.size();
  for (size_t p : restarted) {
    const auto& info = adopted.replicas(p);
    spdlog::warn(
        "volume \"{}\" epoch {}: replica {} ({}) restarted after an unclean stop since the "
        "last owner (generation {} -> {}): reconciling from replica {}{}",
        v->name_, v->epoch_, p, info.address(), info.server_generation(),
        v->replicas_[p]->generation, source,
        none_trusted ? " (every healthy replica restarted: writes acknowledged but not "
                       "flushed may be lost)"
                     : "");
  }
  // The restarted ones keep their recorded generation until reconciled: an owner that dies
  // before that leaves the doubt to the next one.
  s = v->meta_->CommitInitial(adopted);
  if (!s.ok()) return s;
  v->open_stats_.commit_ms = lap();
  // In the background only when every healthy replica kept what the last owner acknowledged:
  // then they differ only where writes were in flight, and a read can wait for its region.
  const bool deferred = options.reconcile_in_background && restarted.empty() && !unstable.empty();
  if (deferred) {
    v->DeferReconcile(source, unstable);
  } else {
    s = v->Reconcile(source, unstable);
    if (!s.ok()) return s;
  }
  v->open_stats_.reconcile_ms = lap();
  if (!restarted.empty()) {
    s = v->meta_->CommitChange([&](v1::ReplicaSetMeta* m) {
      for (size_t p : restarted)
        m->mutable_replicas(p)->set_server_generation(v->replicas_[p]->generation);
      return Status::Ok();
    });
    if (IsFenced(s)) return s;
    // Not fatal: the next owner then reconciles these replicas from a trusted one once more.
    if (!s.ok())
      spdlog::warn("volume \"{}\" epoch {}: recording the restarted replicas' generations: {}",
                   v->name_, v->epoch_, s.ToString());
    v->open_stats_.commit_ms += lap();
  }
  {
    std::lock_guard lock(v->mu_);
    v->Publish();
  }
  if (options.resync_probe_interval.count() > 0) {
    v->prober_ = std::thread([p = v.get()] { p->ProbeLoop(); });
  }
  if (deferred) v->reconciler_ = std::thread([p = v.get()] { p->ReconcileLoop(); });
  *out = std::move(v);
  return Status::Ok();
}

Status ReplicatedVolume::GrowSmallerCopies(const QuorumOpenResult& open,
                                           const v1::ReplicaSetMeta& adopted,
                                           std::vector<size_t>* healthy, std::vector<size_t>* outs,
                                           std::vector<size_t>* restarted) {
  // A previous owner died between committing a resize and growing every copy, or a copy was out
  // during the resize: grow it before anything reads or writes past its old end.
  std::vector<size_t> grow;
  for (size_t i = 0; i < replicas_.size(); ++i) {
    const ReplicaOpenResult& r = open.replicas[i];
    if (r.status.ok() && r.response.replica_uuid() == adopted.replicas(i).uuid() &&
        r.response.size_bytes() < size_bytes_)
      grow.push_back(i);
  }
  std::vector<Status> results(grow.size());
  ForEachParallel(grow.size(), [&](size_t k) {
    const Replica& r = *replicas_[grow[k]];
    results[k] = r.rpc->Grow(r.volume_id, size_bytes_, epoch_);
  });
  for (size_t k = 0; k < grow.size(); ++k) {
    const size_t p = grow[k];
    const uint64_t had = open.replicas[p].response.size_bytes();
    if (IsFenced(results[k])) return results[k];
    if (results[k].ok()) {
      spdlog::info(
          "volume \"{}\" epoch {}: replica {} ({}) grown from {} to {} bytes (the "
          "metadata's size)",
          name_, epoch_, p, replicas_[p]->rpc->target(), had, size_bytes_.load());
      continue;
    }
    auto h = std::find(healthy->begin(), healthy->end(), p);
    if (h == healthy->end()) continue;  // out already: its resync grows it
    // A healthy copy it cannot grow cannot take writes past its end: out, resynced later.
    spdlog::warn(
        "volume \"{}\" epoch {}: replica {} ({}) starts out: growing it from {} to {} "
        "bytes failed: {}",
        name_, epoch_, p, replicas_[p]->rpc->target(), had, size_bytes_.load(),
        results[k].ToString());
    healthy->erase(h);
    restarted->erase(std::remove(restarted->begin(), restarted->end(), p), restarted->end());
    outs->push_back(p);
    replicas_[p]->state = ReplicaState::kOut;
  }
  std::sort(outs->begin(), outs->end());
  return Status::Ok();
}

Status ReplicatedVolume::Reconcile(size_t source, const std::vector<uint64_t>& unstable) {
  // Any version of an unstable region is acceptable (none was flushed and acknowledged on only
  // some replicas); what matters is that every replica returns the same one: copy the source's.
  ReconcileEnds ends;
  {
    std::lock_guard lock(mu_);
    ends = ReconcileEndsFrom(source);
  }
  uint64_t copied = 0;
  // `unstable` is ascending: runs of adjacent regions go as one range (one checksum call each).
  for (size_t i = 0; i < unstable.size();) {
    size_t j = i + 1;
    while (j < unstable.size() && unstable[j] == unstable[j - 1] + 1) ++j;
    const uint64_t off = unstable[i] * region_bytes_;
    const uint64_t end = std::min<uint64_t>(size_bytes_, (unstable[j - 1] + 1) * region_bytes_);
    const uint64_t first_region = unstable[i];
    i = j;
    if (off >= end) continue;
    // Usually only the blocks that were in flight differ: compare checksums, copy those.
    Status s = CopyDifferingBlocks(ends.src, ends.dsts, epoch_, off, end - off, max_io_bytes_, ends.out_mask,
                                   &copied);
    // A racing opener won meanwhile: fenced, so the caller does not retry in a new round (that
    // would fence the winner), and not a replica failure.
    if (IsFenced(s)) return s;
    if (!s.ok()) return Status::Unavailable("reconcile regions from " + std::to_string(first_region) + " from " +
                                            ends.src.rpc->target() + ": " + s.ToString());
  }
  Status s = FlushHealthy(
      [&](const CopyEnd& r) { return r.rpc->ClearRegions(r.volume_id, epoch_, kUnstableSet, {}, true); },
      nullptr);
  if (!s.ok()) return IsFenced(s) ? s : Status::Unavailable("reconcile: " + s.message());
  open_stats_.reconciled_regions = unstable.size();
  open_stats_.reconciled_bytes = copied;
  if (!unstable.empty()) {
    spdlog::info("volume \"{}\" epoch {}: reconciled {} unstable regions from {}: {} bytes differed", name_,
                 epoch_, unstable.size(), ends.src.rpc->target(), copied);
  }
  return Status::Ok();
}

ReplicatedVolume::ReconcileEnds ReplicatedVolume::ReconcileEndsFrom(size_t source) const {
  ReconcileEnds ends;
  uint8_t order[kMaxReplicas];
  ends.readable = ReadableSources(order);
  // A read of a region not reconciled yet has not been served, so any healthy copy will do when
  // `source` cannot be read from.
  const bool keep = std::find(order, order + ends.readable, source) != order + ends.readable &&
                    !replicas_[source]->suspect;
  ends.source = keep || ends.readable == 0 ? source : order[0];
  for (size_t i = 0; i < replicas_.size(); ++i) {
    const Replica& rep = *replicas_[i];
    if (rep.state == ReplicaState::kOut) ends.out_mask |= 1u << i;
    if (rep.state != ReplicaState::kHealthy) continue;
    if (i == ends.source) {
      ends.src = {rep.rpc.get(), rep.volume_id, rep.generation};
    } else {
      ends.dsts.push_back({rep.rpc.get(), rep.volume_id, rep.generation});
      ends.dst_index.push_back(i);
    }
  }
  return ends;
}

std::vector<CopyEnd> ReplicatedVolume::HealthyEnds(std::vector<size_t>* index) const {
  std::vector<CopyEnd> out;
  for (size_t i : IndicesIn(ReplicaState::kHealthy)) {
    out.push_back({replicas_[i]->rpc.get(), replicas_[i]->volume_id, replicas_[i]->generation});
    if (index) index->push_back(i);
  }
  return out;
}

Status ReplicatedVolume::FlushHealthy(const std::function<Status(const CopyEnd&)>& after,
                                      std::vector<size_t>* failed) {
  std::vector<size_t> index;
  std::vector<CopyEnd> healthy;
  {
    std::lock_guard lock(mu_);
    healthy = HealthyEnds(&index);
  }
  std::vector<Status> results(healthy.size());
  ForEachParallel(healthy.size(), [&](size_t k) {
    results[k] = healthy[k].rpc->Flush(healthy[k].volume_id, epoch_, healthy[k].generation);
    if (results[k].ok() && after) results[k] = after(healthy[k]);
  });
  std::string errors;
  for (size_t k = 0; k < healthy.size(); ++k) {
    // A racing opener won meanwhile: fenced, not a replica failure.
    if (IsFenced(results[k])) return results[k];
    if (results[k].ok()) continue;
    errors += (errors.empty() ? "" : "; ") + healthy[k].rpc->target() + ": " + results[k].ToString();
    if (failed) failed->push_back(index[k]);
  }
  return errors.empty() ? Status::Ok() : Status::Unavailable("flush: " + errors);
}

ReplicatedVolume::~ReplicatedVolume() {
  stop_ = true;
  if (prober_.joinable()) prober_.join();
  if (reconciler_.joinable()) reconciler_.join();
}

void ReplicatedVolume::DeferReconcile(size_t source, const std::vector<uint64_t>& unstable) {
  {
    std::lock_guard lock(mu_);
    deferred_unstable_.insert(unstable.begin(), unstable.end());
  }
  {
    std::lock_guard lock(reconcile_mu_);
    reconcile_pending_.insert(unstable.begin(), unstable.end());
  }
  reconcile_source_ = source;
  open_stats_.deferred_regions = unstable.size();
  reconcile_left_.store(unstable.size(), std::memory_order_release);
  spdlog::info("volume \"{}\" epoch {}: {} unstable regions to reconcile from {} while I/O goes on", name_,
               epoch_, unstable.size(), replicas_[source]->rpc->target());
}

bool ReplicatedVolume::ReconcilePending(uint64_t offset, uint64_t length) const {
  if (reconcile_left_.load(std::memory_order_acquire) == 0) return false;
  const auto [first, last] = RegionsOf(offset, length);
  std::lock_guard lock(reconcile_mu_);
  auto it = reconcile_pending_.lower_bound(first);
  return it != reconcile_pending_.end() && *it <= last;
}

Status ReplicatedVolume::ReconcileBeforeRead(uint64_t offset, uint64_t length) {
  if (!ReconcilePending(offset, length)) return Status::Ok();
  reconcile_readers_.fetch_add(1);
  std::unique_lock run(reconcile_run_mu_);
  reconcile_readers_.fetch_sub(1);
  const auto [first, last] = RegionsOf(offset, length);
  for (uint64_t r = first; r <= last; ++r) {
    bool pending;
    {
      std::lock_guard lock(reconcile_mu_);
      pending = reconcile_pending_.count(r) != 0;
    }
    if (!pending) continue;
    Status s = ReconcileRegion(r);
    if (!s.ok()) return s;
  }
  return Status::Ok();
}

Status ReplicatedVolume::ReconcileRegion(uint64_t r) {
  const uint64_t off = r * region_bytes_;
  const uint64_t end = std::min<uint64_t>(size_bytes_.load(), off + region_bytes_);
  // Writes to the region wait while it is compared and copied; those that ended before went to
  // every healthy replica, so their blocks compare equal and are not copied over.
  locks_.Lock(r);
  ReconcileEnds ends;
  Status fenced;
  {
    std::lock_guard lock(mu_);
    fenced = fenced_;
    ends = ReconcileEndsFrom(reconcile_source_);
    reconcile_source_ = ends.source;
    if (fenced.ok() && ends.readable == 0) fenced = Status::Unavailable("no healthy replica");
  }
  if (!fenced.ok()) {
    locks_.Unlock(r);
    return fenced;
  }
  uint64_t copied = 0;
  size_t failed_dst = ends.dsts.size();
  Status s = off < end ? CopyDifferingBlocks(ends.src, ends.dsts, epoch_, off, end - off, max_io_bytes_,
                                             ends.out_mask, &copied, &failed_dst)
                       : Status::Ok();
  locks_.Unlock(r);
  if (s.ok()) {
    {
      std::lock_guard lock(reconcile_mu_);
      reconcile_pending_.erase(r);
    }
    reconciled_bytes_ += copied;
    reconcile_left_.fetch_sub(1, std::memory_order_acq_rel);
    return Status::Ok();
  }
  if (IsFenced(s)) {
    FailIncarnation(s);
    return s;
  }
  // Like a failed write: the replica that failed goes out (the region lands in its PeerSet) and
  // the region is retried on the others.
  const size_t bad = s.code() == Status::Code::kAborted && failed_dst < ends.dst_index.size()
                         ? ends.dst_index[failed_dst]
                         : ends.source;
  const std::string why = "reconciling region " + std::to_string(r) + ": " + s.ToString();
  Status m = MarkOut({bad}, r, r, why);
  if (IsFenced(m)) {
    FailIncarnation(m);
    return m;
  }
  return Status::Unavailable("volume \"" + name_ + "\" epoch " + std::to_string(epoch_) + ": " + why +
                             (m.ok() ? "" : " (mark-out: " + m.message() + ")"));
}

void ReplicatedVolume::ReconcileLoop() {
  const auto started = std::chrono::steady_clock::now();
  int failures = 0;
  // A failed step is retried (a replica that failed it was marked out, or no majority is left to
  // mark it out, which only time can change), less often the longer it keeps failing.
  const auto back_off = [&](const Status& s) {
    if (failures++ % 10 == 0) spdlog::warn("{} (retrying)", s.ToString());
    const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(std::min(100 * failures, 1000));
    while (!stop_ && std::chrono::steady_clock::now() < until)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
  };
  while (!stop_ && fenced().ok()) {
    // A read waiting for its region goes first.
    while (reconcile_readers_.load() > 0 && !stop_) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    std::unique_lock run(reconcile_run_mu_);
    uint64_t r;
    {
      std::lock_guard lock(reconcile_mu_);
      if (reconcile_pending_.empty()) break;
      r = *reconcile_pending_.begin();
    }
    Status s = ReconcileRegion(r);
    if (s.ok()) {
      failures = 0;
      continue;
    }
    run.unlock();
    if (IsFenced(s)) return;  // the incarnation failed: nothing is served any more
    back_off(s);
  }
  if (options_.before_reconcile_flush && !stop_) options_.before_reconcile_flush();
  failures = 0;
  while (!stop_ && fenced().ok()) {
    Status s = FinishReconcile(started);
    if (s.ok() || IsFenced(s)) return;
    back_off(s);
  }
}

Status ReplicatedVolume::FinishReconcile(std::chrono::steady_clock::time_point started) {
  // The copies, and the last owner's acknowledged writes, durable on every healthy replica before
  // their regions may leave the unstable sets.
  for (;;) {
    std::vector<size_t> failed;
    Status flushed = FlushHealthy(nullptr, &failed);
    if (flushed.ok()) break;
    if (IsFenced(flushed)) {
      FailIncarnation(flushed);
      return flushed;
    }
    // Like a failed FLUSH: out it goes (the regions are still pinned, so its PeerSet gets them),
    // and the others are flushed once more.
    const std::string why = "volume \"" + name_ + "\" epoch " + std::to_string(epoch_) +
                            ": flush after the background reconciliation: " + flushed.message();
    Status m = MarkOut(failed, UINT64_MAX, 0, why);
    if (IsFenced(m)) {
      FailIncarnation(m);
      return m;
    }
    if (!m.ok()) return Status::Unavailable(why + " (mark-out: " + m.message() + ")");
  }
  std::vector<uint64_t> regions;
  std::vector<CopyEnd> healthy;
  {
    std::lock_guard lock(mu_);
    regions.assign(deferred_unstable_.begin(), deferred_unstable_.end());
    healthy = HealthyEnds();
  }
  // The regions no write touched since the open leave the unstable sets now (under their lock,
  // so none starts meanwhile); the written ones go with the flush that covers their writes.
  std::vector<uint64_t> held, clear;
  for (uint64_t r : regions) {
    if (locks_.TryLock(r)) held.push_back(r);
  }
  {
    std::lock_guard lock(mu_);
    deferred_unstable_.clear();
    for (uint64_t r : held) {
      if (regions_.At(r).last.load(std::memory_order_relaxed) == 0 && !pinned_unstable_.count(r))
        clear.push_back(r);
    }
  }
  Status cleared;
  if (!clear.empty()) {
    std::vector<Status> results(healthy.size());
    ForEachParallel(healthy.size(), [&](size_t k) {
      results[k] = healthy[k].rpc->ClearRegions(healthy[k].volume_id, epoch_, kUnstableSet, clear, false);
    });
    for (const Status& c : results) {
      if (!c.ok() && cleared.ok()) cleared = c;
    }
  }
  for (uint64_t r : held) locks_.Unlock(r);
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started).count();
  spdlog::info("volume \"{}\" epoch {}: reconciled {} unstable regions in the background in {:.0f} ms: {} bytes "
               "differed; {} cleared from the unstable sets{}",
               name_, epoch_, regions.size(), ms, reconciled_bytes_, cleared.ok() ? clear.size() : 0,
               cleared.ok() ? "" : " (clearing: " + cleared.ToString() + ")");
  return Status::Ok();
}

std::vector<ReplicaState> ReplicatedVolume::states() const {
  std::lock_guard lock(mu_);
  std::vector<ReplicaState> out;
  for (const auto& r : replicas_) out.push_back(r->state);
  return out;
}

std::vector<ReplicaAddr> ReplicatedVolume::replica_addrs() const {
  std::lock_guard lock(mu_);
  std::vector<ReplicaAddr> out;
  for (const auto& r : replicas_) out.push_back({r->rpc->target(), r->volume_id});
  return out;
}

std::vector<ResyncProgress> ReplicatedVolume::resync_progress() const {
  std::lock_guard lock(mu_);
  return progress_;
}

std::vector<size_t> ReplicatedVolume::HealthySourcesFirst() const {
  std::vector<size_t> out = IndicesIn(ReplicaState::kHealthy);
  std::stable_partition(out.begin(), out.end(), [&](size_t i) { return !replicas_[i]->suspect; });
  return out;
}

std::vector<size_t> ReplicatedVolume::IndicesIn(ReplicaState s) const {
  std::vector<size_t> out;
  for (size_t i = 0; i < replicas_.size(); ++i) {
    if (replicas_[i]->state == s) out.push_back(i);
  }
  return out;
}

void ReplicatedVolume::FailIncarnation(const Status& s) {
  std::lock_guard lock(mu_);
  if (fenced_.ok()) {
    fenced_ = s;
    Publish();
    spdlog::error("volume \"{}\" epoch {}: fenced, failing all I/O: {}", name_, epoch_,
                  s.message());
  }
}

Status ReplicatedVolume::MarkPeerSet(size_t p, const std::vector<uint64_t>& regions) {
  if (regions.empty()) return Status::Ok();
  std::vector<std::pair<ReplicaRpc*, uint64_t>> healthy;
  {
    std::lock_guard lock(mu_);
    for (size_t i : IndicesIn(ReplicaState::kHealthy))
      healthy.push_back({replicas_[i]->rpc.get(), replicas_[i]->volume_id});
  }
  std::vector<Status> results(healthy.size());
  ForEachParallel(healthy.size(), [&](size_t k) {
    results[k] = healthy[k].first->MarkRegions(healthy[k].second, epoch_, PeerSet(p), regions);
  });
  for (size_t k = 0; k < healthy.size(); ++k) {
    if (!results[k].ok()) {
      return Status(results[k].code() == Status::Code::kFailedPrecondition && IsFenced(results[k])
                        ? results[k]
                        : Status::Unavailable("mark " + std::to_string(regions.size()) +
                                              " regions dirty for replica " + std::to_string(p) +
                                              " on " + healthy[k].first->target() + ": " +
                                              results[k].ToString()));
    }
  }
  return Status::Ok();
}

Status ReplicatedVolume::MarkOut(const std::vector<size_t>& failed, uint64_t first_region,
                                 uint64_t last_region, const std::string& why) {
  const size_t need = Majority(replicas_.size());
  std::lock_guard serial(markout_mu_);
  std::vector<size_t> to_mark, already, survivors;
  {
    std::lock_guard lock(mu_);
    for (size_t i : failed) {
      (replicas_[i]->state == ReplicaState::kHealthy ? to_mark : already).push_back(i);
    }
    for (size_t i : IndicesIn(ReplicaState::kHealthy)) {
      if (std::find(failed.begin(), failed.end(), i) == failed.end()) survivors.push_back(i);
    }
  }
  if (survivors.size() < need) {
    return Status::Unavailable("only " + std::to_string(survivors.size()) + " of " +
                               std::to_string(replicas_.size()) +
                               " replicas would stay healthy, a majority is " +
                               std::to_string(need));
  }
  std::set<uint64_t> regions;
  for (uint64_t r = first_region; r <= last_region && first_region != UINT64_MAX; ++r)
    regions.insert(r);
  if (!to_mark.empty()) {
    // Writes in flight to the dead replica may or may not have landed there, and a replica that
    // restarted after a crash lost every write since its last FLUSH: everything still unstable
    // (the owner's view, and on the survivors, whose marks outlive an owner) is dirty for it.
    {
      std::lock_guard lock(mu_);
      for (uint64_t r : OwnerUnstable()) regions.insert(r);
    }
    for (size_t h : survivors) {
      std::vector<uint64_t> u;
      Status s = replicas_[h]->rpc->GetRegions(replicas_[h]->volume_id, kUnstableSet, &u,
                                               nullptr);
      if (!s.ok()) return Status::Unavailable("unstable regions of " +
                                              replicas_[h]->rpc->target() + ": " + s.ToString());
      regions.insert(u.begin(), u.end());
    }
  }
  const std::vector<uint64_t> list(regions.begin(), regions.end());
  for (size_t p : failed) {
    std::vector<Status> results(survivors.size());
    ForEachParallel(survivors.size(), [&](size_t k) {
      Replica& r = *replicas_[survivors[k]];
      results[k] = r.rpc->MarkRegions(r.volume_id, epoch_, PeerSet(p), list);
    });
    for (size_t k = 0; k < survivors.size(); ++k) {
      if (results[k].ok()) continue;
      if (IsFenced(results[k])) return results[k];
      return Status::Unavailable("mark regions for replica " + std::to_string(p) + " on " +
                                 replicas_[survivors[k]]->rpc->target() + ": " +
                                 results[k].ToString());
    }
  }
  if (to_mark.empty()) return Status::Ok();
  Status s = meta_->CommitChange([&](v1::ReplicaSetMeta* m) {
    for (size_t p : to_mark) {
      auto* info = m->mutable_replicas(p);
      info->set_state(v1::REPLICA_OUT);
      info->set_state_since_unix_ms(NowMs());
      info->set_resync_done_bytes(0);
      info->set_resync_total_bytes(0);
      info->set_resync_bytes_per_s(0);
      // What it may lack is in its PeerSet from here on: a restart no longer loses anything.
      info->set_server_generation(0);
    }
    return Status::Ok();
  });
  if (!s.ok()) return s;
  std::lock_guard lock(mu_);
  for (size_t p : to_mark) {
    replicas_[p]->state = ReplicaState::kOut;
    replicas_[p]->suspect = false;
    replicas_[p]->unflushed_rebuild = false;  // healthy since its resync's final FLUSH
    spdlog::warn("volume \"{}\" epoch {}: replica {} ({}) marked out ({} regions dirty for it): {}",
                 name_, epoch_, p, replicas_[p]->rpc->target(), list.size(), why);
  }
  Publish();  // the writes that start from here carry the new out_mask
  return Status::Ok();
}

void ReplicatedVolume::DemoteRebuilding(size_t p, uint64_t first_region, uint64_t last_region,
                                        const std::string& why, bool lost) {
  std::vector<uint64_t> regions;
  for (uint64_t r = first_region; r <= last_region && first_region != UINT64_MAX; ++r)
    regions.push_back(r);
  bool full;
  {
    std::lock_guard lock(mu_);
    if (replicas_[p]->state == ReplicaState::kRebuilding) replicas_[p]->state = ReplicaState::kOut;
    // What it lost (copies and writes since the resync began) is no longer in any dirty set.
    if (lost) replicas_[p]->full_rebuild = true;
    full = replicas_[p]->full_rebuild;
    Publish();
  }
  Status s = MarkPeerSet(p, regions);
  if (!s.ok()) spdlog::warn("volume \"{}\": replica {}: {}", name_, p, s.ToString());
  s = meta_->CommitChange([&](v1::ReplicaSetMeta* m) {
    auto* info = m->mutable_replicas(p);
    if (info->state() != v1::REPLICA_REBUILDING) return Status::Aborted("not rebuilding");
    info->set_state(v1::REPLICA_OUT);
    info->set_full_rebuild(full);
    info->set_state_since_unix_ms(NowMs());
    return Status::Ok();
  });
  spdlog::warn("volume \"{}\" epoch {}: rebuilding replica {} ({}) failed a write, out again{}: {}",
               name_, epoch_, p, replicas_[p]->rpc->target(),
               lost ? " (restarted after a crash: full rebuild)" : "", why);
}

std::vector<uint64_t> ReplicatedVolume::OwnerUnstable() const {
  std::set<uint64_t> u(pinned_unstable_.begin(), pinned_unstable_.end());
  u.insert(deferred_unstable_.begin(), deferred_unstable_.end());
  LockLanes all(this);  // no write between its sequence number and its regions' entries
  regions_.ForEachTracked([&](uint64_t r, const RegionTable::Entry& e) {
    if (!RegionTable::Covered(e.last.load(std::memory_order_relaxed))) u.insert(r);
  });
  return std::vector<uint64_t>(u.begin(), u.end());
}

void ReplicatedVolume::PinTracked() {
  LockLanes all(this);
  regions_.ForEachTracked(
      [&](uint64_t r, const RegionTable::Entry&) { pinned_unstable_.insert(r); });
}

bool ReplicatedVolume::NoteGenerationGone(size_t p, uint64_t generation) {
  std::lock_guard lock(mu_);
  Replica& r = *replicas_[p];
  if (generation == 0 || r.generation != generation || r.state == ReplicaState::kOut) return false;
  if (!r.lost_writes) {
    spdlog::error(
        "volume \"{}\" epoch {}: replica {} ({}): server generation {} is gone: it "
        "restarted after a crash and may have lost the writes it acknowledged since the "
        "last FLUSH",
        name_, epoch_, p, r.rpc->target(), generation);
  }
  r.lost_writes = true;
  Publish();  // reads avoid it from now on
  bool any_kept = false;
  for (const auto& o : replicas_) any_kept |= o->state == ReplicaState::kHealthy && !o->lost_writes;
  if (!any_kept && !unreported_loss_) {
    unreported_loss_ = true;
    spdlog::error(
        "volume \"{}\" epoch {}: every healthy replica restarted after a crash; writes "
        "acknowledged since the last FLUSH may be lost; the next FLUSH fails",
        name_, epoch_);
  }
  return true;
}

Status ReplicatedVolume::RenewGeneration(size_t p, uint64_t seen) {
  std::lock_guard serial(renew_mu_);
  uint64_t vid;
  ReplicaRpc* rpc;
  {
    std::lock_guard lock(mu_);
    const Replica& r = *replicas_[p];
    // Renewed already, or out (its resync re-opens it).
    if (r.generation != seen || r.state != ReplicaState::kHealthy) return Status::Ok();
    vid = r.volume_id;
    rpc = r.rpc.get();
  }
  v1::OpenVolumeResponse opened;
  // Same epoch and client id: a re-open, refused if another owner opened the volume since.
  Status s = rpc->Open(vid, epoch_, options_.client_id, &opened);
  if (!s.ok()) return s;
  std::vector<uint64_t> unstable;
  {
    std::lock_guard lock(mu_);
    unstable = OwnerUnstable();
  }
  s = rpc->MarkRegions(vid, epoch_, kUnstableSet, unstable);
  if (!s.ok()) return s;
  {
    // The metadata keeps the generation it had: this copy lost writes, and a next owner that
    // finds the new one must not take it as a reconciliation source either.
    std::lock_guard lock(mu_);
    replicas_[p]->generation = opened.server_generation();
    replicas_[p]->suspect = true;
    replicas_[p]->lost_writes = true;
    Publish();
  }
  spdlog::warn(
      "volume \"{}\" epoch {}: replica {} ({}) re-opened after its restart (server "
      "generation {} -> {}); suspect until the others are a healthy majority without it",
      name_, epoch_, p, rpc->target(), seen, opened.server_generation());
  return Status::Ok();
}

void ReplicatedVolume::ReportGenerationGone(size_t p, uint64_t generation, const Status& why) {
  if (!NoteGenerationGone(p, generation)) return;
  Status m = MarkOut({p}, UINT64_MAX, 0, why.ToString());
  if (m.ok()) return;
  if (IsFenced(m)) return FailIncarnation(m);
  {
    std::lock_guard lock(mu_);
    PinTracked();
  }
  Status r = RenewGeneration(p, generation);
  if (IsFenced(r)) return FailIncarnation(r);
  if (!r.ok())
    spdlog::warn("volume \"{}\": replica {} ({}): re-open after its restart: {}", name_, p,
                 replicas_[p]->rpc->target(), r.ToString());
}

Status ReplicatedVolume::SendOne(const Target& t, FanOutOp op, uint64_t offset, uint64_t length,
                                 std::string_view data, bool fua, uint32_t out_mask) {
  ReplicaRpc& rpc = *replicas_[t.index]->rpc;
  switch (op) {
    case FanOutOp::kFlush:
      return rpc.Flush(t.volume_id, epoch_, t.generation);
    case FanOutOp::kWrite:
      return rpc.Write(t.volume_id, epoch_, offset, data, fua, out_mask, t.generation);
    case FanOutOp::kZero:
    case FanOutOp::kDiscard:
      return rpc.Zero(t.volume_id, epoch_, offset, length, op == FanOutOp::kDiscard, out_mask,
                      t.generation);
  }
  return Status::Internal("unknown op");
}

uint8_t ReplicatedVolume::Publish(bool new_era) {
  // Built before taking the lanes: the queues wait only for the copy.
  Snapshot next;
  next.fenced = !fenced_.ok();
  for (size_t i = 0; i < replicas_.size(); ++i) {
    const Replica& r = *replicas_[i];
    next.volume_ids[i] = r.volume_id;
    next.generations[i] = r.generation;
    const uint32_t bit = 1u << i;
    switch (r.state) {
      case ReplicaState::kHealthy: next.healthy_mask |= bit; break;
      case ReplicaState::kRebuilding: next.rebuilding_mask |= bit; break;
      case ReplicaState::kOut: next.out_mask |= bit; break;
    }
  }
  next.read_n = static_cast<uint8_t>(ReadableSources(next.read_order));
  for (size_t k = 0; k < next.read_n; ++k) {
    const Replica& r = *replicas_[next.read_order[k]];
    next.read_volume_ids[k] = r.volume_id;
    next.read_generations[k] = r.generation;
    next.read_trusted += !r.suspect;
  }
  LockLanes all(this);
  snap_ = next;
  const uint8_t ended = era_;
  if (new_era) era_ ^= 1;
  return ended;
}

void ReplicatedVolume::DrainEra(std::unique_lock<std::mutex>& lock, uint8_t era) {
  // Publish(true) was the last moment a write could join `era`; EndFanOut wakes us when a
  // lane's count of it reaches zero.
  cv_.wait(lock, [&] {
    for (Lane& l : lanes_) {
      std::lock_guard g(l.mu);
      if (l.running[era] != 0) return false;
    }
    return true;
  });
}

FanOutStart ReplicatedVolume::BeginFanOut(FanOutOp op, uint64_t offset, uint64_t length, bool fua,
                                          bool block, FanOutTicket* t, Status* failed,
                                          size_t queue) {
  const bool is_write = op != FanOutOp::kFlush;
  t->op = op;
  t->offset = offset;
  t->length = length;
  t->fua = fua;
  const auto [first, last] = RegionsOf(offset, length);
  t->first_region = is_write ? first : UINT64_MAX;
  t->last_region = is_write ? last : 0;
  t->wait_mask = t->rebuild_mask = t->out_mask = 0;
  t->flush_candidates.clear();
  t->lane = static_cast<uint8_t>(queue % kLanes);
  t->era = 0;
  // Caller holds a lane: the replicas it goes to, as the snapshot shows them.
  auto take_targets = [&] {
    t->wait_mask = snap_.healthy_mask;
    t->rebuild_mask = is_write ? snap_.rebuilding_mask : 0;  // a flush skips rebuilding ones
    t->out_mask = snap_.out_mask;
    std::copy(std::begin(snap_.volume_ids), std::end(snap_.volume_ids), t->volume_ids);
    std::copy(std::begin(snap_.generations), std::end(snap_.generations), t->generations);
  };
  if (is_write) {
    if (block) {
      locks_.LockShared(t->first_region, t->last_region);
    } else if (!locks_.TryLockShared(t->first_region, t->last_region)) {
      return FanOutStart::kBusy;
    }
    Lane& lane = lanes_[t->lane];
    std::lock_guard lock(lane.mu);
    if (!snap_.fenced) {
      t->seq = seq_.fetch_add(1, std::memory_order_relaxed) + 1;
      t->era = era_;
      lane.running[era_]++;
      for (uint64_t r = t->first_region; r <= t->last_region; ++r) regions_.StartWrite(r, t->seq);
      take_targets();
      return FanOutStart::kStarted;
    }
  } else {
    // A flush covers the regions whose last write started before it and is done: with every
    // lane held, each write numbered below it has its regions' entries updated, and none runs
    // its BeginFanOut or EndFanOut.
    LockLanes all(this);
    if (!snap_.fenced) {
      t->seq = seq_.fetch_add(1, std::memory_order_relaxed) + 1;
      regions_.ForEachTracked([&](uint64_t r, const RegionTable::Entry& e) {
        if (e.running.load(std::memory_order_relaxed) == 0) t->flush_candidates.push_back(r);
      });
      take_targets();
      return FanOutStart::kStarted;
    }
  }
  // Fenced (fenced_ is set before the snapshot says so).
  if (is_write) locks_.UnlockShared(t->first_region, t->last_region);
  std::lock_guard lock(mu_);
  *failed = fenced_;
  return FanOutStart::kFailed;
}

Status ReplicatedVolume::ResolveFanOut(const FanOutTicket& t, std::string_view data,
                                       const Status* first_results) {
  const bool is_write = t.op != FanOutOp::kFlush;
  const uint64_t first = t.first_region, last = t.last_region;
  const std::string what =
      is_write ? "write at offset " + std::to_string(t.offset) : std::string("flush");
  std::vector<Target> pending;
  std::vector<Status> results;
  for (size_t i = 0; i < replicas_.size(); ++i) {
    if (!(t.targets() & (1u << i))) continue;
    pending.push_back({i, t.volume_ids[i], t.generations[i], (t.wait_mask & (1u << i)) != 0});
    results.push_back(first_results[i]);
  }
  // Every replica refused the request itself (past the end, misaligned): the caller's error, not
  // a replica failure. Nothing was applied, so nobody is marked out and nothing waits.
  const auto malformed = [](const Status& r) {
    return r.code() == Status::Code::kOutOfRange || r.code() == Status::Code::kInvalidArgument;
  };
  if (!results.empty() && std::all_of(results.begin(), results.end(), malformed)) {
    const std::string m = "volume \"" + name_ + "\": " + what + ", length " +
                          std::to_string(t.length) + ": refused by every replica: " +
                          results[0].message();
    return results[0].code() == Status::Code::kOutOfRange ? Status::OutOfRange(m)
                                                          : Status::InvalidArgument(m);
  }
  const auto deadline = std::chrono::steady_clock::now() + options_.quorum_wait;
  const size_t need = Majority(replicas_.size());
  Status result;
  for (int attempt = 0;; ++attempt) {
    if (attempt > 0) {
      // The others already applied it; writes are idempotent anyway. A replica re-opened after
      // its restart is sent its new generation.
      {
        std::lock_guard lock(mu_);
        for (auto& tg : pending) tg.generation = replicas_[tg.index]->generation;
      }
      results.assign(pending.size(), Status::Ok());
      ForEachParallel(pending.size(), [&](size_t k) {
        results[k] = SendOne(pending[k], t.op, t.offset, t.length, data, t.fua, t.out_mask);
      });
    }
    std::vector<size_t> failed;
    std::vector<Target> retry, gone;
    std::string errors;
    bool fenced = false;
    for (size_t k = 0; k < pending.size() && !fenced; ++k) {
      if (results[k].ok()) continue;
      const Target& tg = pending[k];
      const std::string& target = replicas_[tg.index]->rpc->target();
      if (IsFenced(results[k])) {
        // A newer owner exists (docs/replication.md, section 1): never mark out, stop serving.
        FailIncarnation(Status::FailedPrecondition("volume " + std::to_string(tg.volume_id) +
                                                   " on " + target + ": " + results[k].message()));
        fenced = true;
        break;
      }
      const bool lost = IsGenerationGone(results[k]);
      if (lost) NoteGenerationGone(tg.index, tg.generation);
      errors += (errors.empty() ? "" : "; ") + target + ": " + results[k].ToString();
      if (!tg.wait) {
        // Not waited for; it must not become healthy without this write.
        bool now_healthy;
        {
          std::lock_guard lock(mu_);
          now_healthy = replicas_[tg.index]->state == ReplicaState::kHealthy;
        }
        if (!now_healthy) {
          DemoteRebuilding(tg.index, first, last, results[k].ToString(), lost);
          continue;
        }
      }
      failed.push_back(tg.index);
      retry.push_back({tg.index, tg.volume_id, tg.generation, true});
      if (lost) gone.push_back(tg);
    }
    if (fenced) {
      std::lock_guard lock(mu_);
      result = fenced_;
      break;
    }
    if (failed.empty()) break;
    Status m = MarkOut(failed, first, last, what + ": " + errors);
    if (m.ok()) break;
    {
      // These replicas stay healthy for now (no majority to mark them out). If one crashed, it
      // lost its unsynced writes: keep everything unstable pinned for the next open's reconcile.
      std::lock_guard lock(mu_);
      PinTracked();
      for (uint64_t r = first; r <= last && first != UINT64_MAX; ++r) pinned_unstable_.insert(r);
      for (size_t i : failed) replicas_[i]->suspect = true;
      Publish();
    }
    if (IsFenced(m) || m.code() == Status::Code::kFailedPrecondition) {
      FailIncarnation(m);
      result = m;
      break;
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      result = Status::Unavailable(
          "volume \"" + name_ + "\" epoch " + std::to_string(epoch_) + ": " + what +
          " applied by at most " + std::to_string(replicas_.size() - failed.size()) + " of " +
          std::to_string(replicas_.size()) + " replicas, a majority (" + std::to_string(need) +
          ") is not available after " + std::to_string(options_.quorum_wait.count()) +
          " ms; not acknowledged (" + errors + "; mark-out: " + m.message() + ")");
      break;
    }
    // A replica that restarted after a crash refuses our generation until re-opened; it then
    // takes the retry, suspect (the others are trusted for reads and copies).
    for (const Target& tg : gone) {
      Status r = RenewGeneration(tg.index, tg.generation);
      if (IsFenced(r)) {
        FailIncarnation(r);
        std::lock_guard lock(mu_);
        return fenced_;
      }
      if (!r.ok())
        spdlog::warn("{}: re-open {} after its restart: {}", what,
                     replicas_[tg.index]->rpc->target(), r.ToString());
    }
    if (attempt == 0) spdlog::warn("{}: waiting for a majority: {}", what, errors);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    pending = retry;
  }
  return result;
}

Status ReplicatedVolume::EndFanOut(const FanOutTicket& t, const Status& result) {
  const bool is_write = t.op != FanOutOp::kFlush;
  if (!is_write) {
    if (!result.ok()) return result;
    if (unreported_loss_.load(std::memory_order_relaxed) && unreported_loss_.exchange(false)) {
      return Status::IoError("volume \"" + name_ + "\" epoch " + std::to_string(epoch_) +
                             ": flush: every healthy replica restarted after a crash since the "
                             "last flush, writes they acknowledged may be lost");
    }
    // Durable on every healthy replica now, whether or not their unstable sets get cleared (a
    // region written since is not covered).
    for (uint64_t r : t.flush_candidates) regions_.Cover(r, t.seq);
    return result;
  }
  if (!result.ok()) {
    // Not acknowledged, maybe applied somewhere: replicas may differ here until reconciled.
    std::lock_guard lock(mu_);
    for (uint64_t r = t.first_region; r <= t.last_region; ++r) pinned_unstable_.insert(r);
  }
  bool drained;
  {
    Lane& lane = lanes_[t.lane];
    std::lock_guard lock(lane.mu);
    for (uint64_t r = t.first_region; r <= t.last_region; ++r) regions_.EndWrite(r);
    // The last write of an era a barrier waits for (DrainEra).
    drained = --lane.running[t.era] == 0 && t.era != era_;
  }
  if (drained) {
    std::lock_guard lock(mu_);
    cv_.notify_all();
  }
  locks_.UnlockShared(t.first_region, t.last_region);
  return result;
}

void ReplicatedVolume::ClearAfterFlush(const FanOutTicket& t) {
  ClearUnstableAfterFlush(t.seq, t.flush_candidates);
}

size_t ReplicatedVolume::ReadSources(uint8_t* order, uint64_t* volume_ids, uint64_t* generations,
                                     size_t* trusted, Status* failed, size_t queue) const {
  *trusted = 0;
  {
    std::lock_guard lock(lanes_[queue % kLanes].mu);
    if (!snap_.fenced) {
      const size_t n = snap_.read_n;
      std::copy(snap_.read_order, snap_.read_order + n, order);
      std::copy(snap_.read_volume_ids, snap_.read_volume_ids + n, volume_ids);
      std::copy(snap_.read_generations, snap_.read_generations + n, generations);
      *trusted = snap_.read_trusted;
      return n;
    }
  }
  std::lock_guard lock(mu_);
  *failed = fenced_;
  return 0;
}

size_t ReplicatedVolume::ReadableSources(uint8_t* order) const {
  // Healthy replicas, trusted ones first (HealthySourcesFirst's order, without its vector: Publish
  // keeps the result in the snapshot every queue's reads use). A replica that may lack
  // acknowledged writes serves no read while another one can.
  bool any_kept = false;
  for (const auto& r : replicas_) any_kept |= r->state == ReplicaState::kHealthy && !r->lost_writes;
  size_t n = 0;
  for (const bool suspects : {false, true}) {
    for (size_t i = 0; i < replicas_.size(); ++i) {
      const Replica& r = *replicas_[i];
      if (r.state != ReplicaState::kHealthy || r.suspect != suspects) continue;
      if (any_kept && r.lost_writes) continue;
      order[n++] = static_cast<uint8_t>(i);
    }
  }
  return n;
}

Status ReplicatedVolume::FanOut(FanOutOp op, uint64_t offset, uint64_t length,
                                std::string_view data, bool fua) {
  if (op != FanOutOp::kFlush && length == 0) return Status::Ok();
  FanOutTicket t;
  Status failed;
  if (BeginFanOut(op, offset, length, fua, /*block=*/true, &t, &failed) != FanOutStart::kStarted)
    return failed;
  std::vector<Target> targets;
  for (size_t i = 0; i < replicas_.size(); ++i) {
    if (t.targets() & (1u << i)) targets.push_back({i, t.volume_ids[i], t.generations[i], true});
  }
  Status results[kMaxReplicas];
  ForEachParallel(targets.size(), [&](size_t k) {
    results[targets[k].index] = SendOne(targets[k], op, offset, length, data, fua, t.out_mask);
  });
  bool all_ok = true;
  for (const auto& tg : targets) all_ok &= results[tg.index].ok();
  const Status result = EndFanOut(t, all_ok ? Status::Ok() : ResolveFanOut(t, data, results));
  if (op == FanOutOp::kFlush && result.ok()) ClearAfterFlush(t);
  return result;
}

void ReplicatedVolume::ClearUnstableAfterFlush(uint64_t flush_seq,
                                               const std::vector<uint64_t>& candidates) {
  // A region may leave the unstable set when the flush covered every write to it: none was
  // running when the flush was sent and none started since. The exclusive region lock keeps new
  // writes out while the replicas clear it (the server's caller contract), so its entry holds
  // still meanwhile.
  std::vector<uint64_t> held;
  for (uint64_t r : candidates) {
    if (locks_.TryLock(r)) held.push_back(r);
  }
  std::vector<uint64_t> clear;
  std::vector<std::pair<ReplicaRpc*, uint64_t>> healthy;
  {
    std::lock_guard lock(mu_);
    for (uint64_t r : held) {
      const RegionTable::Entry& e = regions_.At(r);
      const uint64_t last = e.last.load(std::memory_order_relaxed);
      if (last != 0 && RegionTable::Seq(last) < flush_seq &&
          e.running.load(std::memory_order_relaxed) == 0 && !pinned_unstable_.count(r) &&
          !deferred_unstable_.count(r))
        clear.push_back(r);
    }
    for (size_t i : IndicesIn(ReplicaState::kHealthy))
      healthy.push_back({replicas_[i]->rpc.get(), replicas_[i]->volume_id});
  }
  if (!clear.empty()) {
    std::vector<Status> results(healthy.size());
    ForEachParallel(healthy.size(), [&](size_t k) {
      results[k] = healthy[k].first->ClearRegions(healthy[k].second, epoch_, kUnstableSet,
                                                  clear, false);
    });
    bool all_ok = true;
    for (const auto& s : results) all_ok &= s.ok();
    if (all_ok) {
      std::lock_guard lock(mu_);
      // Untracked again: stable on every replica until the next write.
      for (uint64_t r : clear) regions_.Untrack(r, flush_seq);
    }
  }
  for (uint64_t r : held) locks_.Unlock(r);
}

Status ReplicatedVolume::Write(uint64_t offset, std::string_view data, bool fua) {
  return FanOut(FanOutOp::kWrite, offset, data.size(), data, fua);
}

Status ReplicatedVolume::WriteZeroes(uint64_t offset, uint64_t length, bool discard) {
  return FanOut(discard ? FanOutOp::kDiscard : FanOutOp::kZero, offset, length, {}, false);
}

Status ReplicatedVolume::Flush() {
  return FanOut(FanOutOp::kFlush, 0, 0, {}, false);
}

Status ReplicatedVolume::Read(uint64_t offset, uint32_t length, std::string* out) {
  // Healthy replicas may still differ in a region the open left to the background: not before
  // it was made equal, so that no later read returns something else.
  if (Status r = ReconcileBeforeRead(offset, length); !r.ok()) return r;
  struct Source {
    size_t index;
    ReplicaRpc* rpc;
    uint64_t volume_id, generation;
  };
  Source sources[kMaxReplicas];
  uint8_t order[kMaxReplicas];
  size_t n = 0, trusted = 0;
  {
    std::lock_guard lock(mu_);
    if (!fenced_.ok()) return fenced_;
    n = ReadableSources(order);
    for (size_t k = 0; k < n; ++k) {
      const Replica& r = *replicas_[order[k]];
      sources[k] = {order[k], r.rpc.get(), r.volume_id, r.generation};
      trusted += !r.suspect;
    }
  }
  if (n == 0) return Status::Unavailable("read: no healthy replica");
  // The fastest trusted replica first (suspects only as a fallback), then the rest in order.
  size_t first;
  {
    std::lock_guard lock(read_mu_);
    first = reads_.Pick(order, trusted ? trusted : n, ReadChooser::Clock::now());
  }
  std::rotate(sources, sources + first, sources + first + 1);
  std::string errors;
  for (size_t k = 0; k < n; ++k) {
    const Source& src = sources[k];
    ReplicaRpc* rpc = src.rpc;
    const auto sent = ReadChooser::Clock::now();
    Status s = rpc->Read(src.volume_id, epoch_, offset, length, out, src.generation);
    {
      const auto now = ReadChooser::Clock::now();
      std::lock_guard lock(read_mu_);
      if (s.ok()) {
        reads_.Completed(src.index, now - sent, now);
      } else {
        reads_.Failed(src.index, now);
      }
    }
    if (s.ok()) return s;
    if (IsFenced(s)) {
      FailIncarnation(s);
      return s;
    }
    if (IsGenerationGone(s)) ReportGenerationGone(src.index, src.generation, s);
    errors += (errors.empty() ? "" : "; ") + rpc->target() + ": " + s.ToString();
  }
  return Status::Unavailable("read at offset " + std::to_string(offset) +
                             ": every healthy replica failed: " + errors);
}

void ReplicatedVolume::RetireSuspects() {
  std::vector<size_t> suspects;
  size_t healthy;
  {
    std::lock_guard lock(mu_);
    const auto h = IndicesIn(ReplicaState::kHealthy);
    healthy = h.size();
    for (size_t i : h) {
      if (replicas_[i]->suspect) suspects.push_back(i);
    }
  }
  for (size_t p : suspects) {
    if (healthy - 1 < Majority(replicas_.size())) break;
    // The regions it may have lost are still unstable (pinned) on the others: MarkOut puts them
    // in its PeerSet, and the resync copies them back.
    Status s = MarkOut({p}, UINT64_MAX, 0, "failed while no majority was left, maybe restarted");
    if (s.ok()) --healthy;
  }
}

Status ReplicatedVolume::ResyncOut() {
  // A resync copies from a healthy replica: not while healthy ones may still differ.
  if (const uint64_t left = reconcile_left(); left > 0)
    return Status::Unavailable("volume \"" + name_ + "\": waiting for the reconciliation of " +
                               std::to_string(left) + " unstable regions");
  std::lock_guard serial(resync_mu_);
  std::string errors;
  // Healing one replica can make a suspect one retirable: a few passes.
  for (int pass = 0; pass < 3 && errors.empty(); ++pass) {
    RetireSuspects();
    std::vector<size_t> outs;
    {
      std::lock_guard lock(mu_);
      outs = IndicesIn(ReplicaState::kOut);
    }
    if (outs.empty()) break;
    for (size_t p : outs) {
      Status s = ResyncJob(this, p).Run();
      if (!s.ok()) errors += (errors.empty() ? "" : "; ") + replicas_[p]->rpc->target() + ": " +
                             s.ToString();
    }
  }
  if (!errors.empty()) return Status::Unavailable("resync: " + errors);
  std::lock_guard lock(mu_);
  for (const auto& r : replicas_) {
    if (r->state != ReplicaState::kHealthy || r->suspect)
      return Status::Unavailable("resync: " + r->rpc->target() + " is " +
                                 (r->suspect ? "suspect" : ReplicaStateName(r->state)));
  }
  return Status::Ok();
}

void ReplicatedVolume::ProbeLoop() {
  while (!stop_) {
    const auto until = std::chrono::steady_clock::now() + options_.resync_probe_interval;
    while (!stop_ && std::chrono::steady_clock::now() < until)
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    if (stop_) break;
    bool any_out;
    {
      std::lock_guard lock(mu_);
      any_out = fenced_.ok() && (!IndicesIn(ReplicaState::kOut).empty() ||
                                 std::any_of(replicas_.begin(), replicas_.end(),
                                             [](const auto& r) { return r->suspect; }));
    }
    if (any_out && reconcile_left() == 0) {
      Status s = ResyncOut();
      if (!s.ok()) spdlog::info("volume \"{}\": resync probe: {}", name_, s.ToString());
    }
  }
}

Status ReplicatedVolume::Resize(uint64_t new_size_bytes, std::vector<Status>* per_replica) {
  const std::string ctx = "volume \"" + name_ + "\" epoch " + std::to_string(epoch_) +
                          ": resize to " + std::to_string(new_size_bytes) + " bytes";
  if (new_size_bytes == 0 || new_size_bytes % 4096 != 0 || new_size_bytes > kMaxVolumeBytes) {
    return Status::InvalidArgument(ctx +
                                   ": the size must be a non-zero multiple of 4096 and at "
                                   "most 2^60");
  }
  // Serialized with the resync and replace-replica: a copier sizes its region list, and a full
  // rebuild or a replacement its new copy, from size_bytes_.
  std::lock_guard serial(resync_mu_);
  {
    std::lock_guard lock(mu_);
    if (!fenced_.ok()) return fenced_;
  }
  const uint64_t old_size = size_bytes_;
  if (new_size_bytes < old_size) {
    return Status::InvalidArgument(ctx + ": cannot shrink from " + std::to_string(old_size) +
                                   " bytes (grow only)");
  }
  // The size is committed on a majority before any copy grows: an owner that dies in between
  // leaves copies smaller than the metadata, which the next open grows (GrowSmallerCopies);
  // copies grown first would instead leave a size no majority knows.
  if (meta_->committed().size_bytes() < new_size_bytes) {
    Status s = meta_->CommitChange([&](v1::ReplicaSetMeta* m) {
      m->set_size_bytes(new_size_bytes);
      return Status::Ok();
    });
    if (IsFenced(s)) {
      FailIncarnation(s);
      return s;
    }
    if (!s.ok()) {
      return Status::Unavailable(ctx + ": committing the new size on a majority: " + s.ToString());
    }
  }
  size_bytes_ = new_size_bytes;

  std::vector<size_t> targets;
  std::vector<uint64_t> volume_ids;
  std::vector<bool> healthy;
  std::vector<Status> results(replicas_.size());
  {
    std::lock_guard lock(mu_);
    for (size_t i = 0; i < replicas_.size(); ++i) {
      if (replicas_[i]->state == ReplicaState::kOut) {
        results[i] = Status::Unavailable("out: grown when its resync brings it back");
        continue;
      }
      targets.push_back(i);
      volume_ids.push_back(replicas_[i]->volume_id);
      healthy.push_back(replicas_[i]->state == ReplicaState::kHealthy);
    }
  }
  ForEachParallel(targets.size(), [&](size_t k) {
    results[targets[k]] = replicas_[targets[k]]->rpc->Grow(volume_ids[k], new_size_bytes, epoch_);
  });
  if (per_replica) *per_replica = results;
  std::vector<size_t> failed;
  std::string why;
  for (size_t k = 0; k < targets.size(); ++k) {
    const size_t p = targets[k];
    const Status& r = results[p];
    if (r.ok()) continue;
    if (IsFenced(r)) {
      FailIncarnation(r);
      return r;
    }
    const std::string reason =
        "growing its copy to " + std::to_string(new_size_bytes) + " bytes failed: " + r.ToString();
    if (healthy[k]) {
      failed.push_back(p);
      why += (why.empty() ? "" : "; ") + replicas_[p]->rpc->target() + ": " + r.ToString();
    } else {
      DemoteRebuilding(p, UINT64_MAX, 0, reason, /*lost=*/false);
    }
  }
  if (!failed.empty()) {
    // A healthy copy smaller than the volume would refuse the writes past its end: out now, and
    // its resync grows it.
    Status s = MarkOut(failed, UINT64_MAX, 0, "resize: " + why);
    if (IsFenced(s)) {
      FailIncarnation(s);
      return s;
    }
    if (!s.ok()) {
      return Status::Unavailable(ctx + ": committed, but growing the copies failed (" + why +
                                 ") and they could not be marked out: " + s.ToString() +
                                 "; the next open grows them");
    }
  }
  spdlog::info("volume \"{}\" epoch {}: resized from {} to {} bytes ({} of {} copies grown)", name_,
               epoch_, old_size, new_size_bytes, targets.size() - failed.size(), replicas_.size());
  return Status::Ok();
}

Status ReplicatedVolume::ReplaceReplica(const std::string& old_target,
                                        const std::string& new_target) {
  std::lock_guard serial(resync_mu_);
  size_t idx = replicas_.size();
  for (size_t i = 0; i < replicas_.size(); ++i) {
    if (replicas_[i]->rpc->target() == new_target) {
      return Status::InvalidArgument("replace " + old_target + " by " + new_target + ": " +
                                     new_target + " already holds replica " + std::to_string(i));
    }
    if (replicas_[i]->rpc->target() == old_target) idx = i;
  }
  if (idx == replicas_.size()) {
    std::string set;
    for (const auto& r : replicas_) set += (set.empty() ? "" : ",") + r->rpc->target();
    return Status::InvalidArgument("replace " + old_target + ": not a replica of volume \"" +
                                   name_ + "\" (replicas: " + set + ")");
  }
  {
    std::lock_guard lock(mu_);
    if (replicas_[idx]->state == ReplicaState::kHealthy &&
        IndicesIn(ReplicaState::kHealthy).size() - 1 < Majority(replicas_.size())) {
      return Status::FailedPrecondition(
          "replace " + old_target + ": the other replicas are not a healthy majority; bring "
          "them back first");
    }
  }
  auto rpc = std::make_unique<ReplicaRpc>(new_target, options_.rpc_timeout);
  const std::string uuid = NewReplicaUuid();
  v1::Volume vol;
  Status s = rpc->Create(name_, size_bytes_, uuid, &vol);
  if (!s.ok()) return Status(s.code() == Status::Code::kAlreadyExists
                                 ? Status::AlreadyExists("create on " + new_target + ": " +
                                                         s.message())
                                 : Status::Unavailable("create on " + new_target + ": " +
                                                       s.ToString()));
  v1::OpenVolumeResponse opened;
  s = rpc->Open(vol.id(), epoch_, options_.client_id, &opened);
  if (s.ok()) {
    s = meta_->CommitChange([&](v1::ReplicaSetMeta* m) {
      auto* info = m->mutable_replicas(idx);
      info->set_address(new_target);
      info->set_volume_id(vol.id());
      info->set_uuid(uuid);
      info->set_state(v1::REPLICA_REBUILDING);
      info->set_full_rebuild(true);
      info->set_server_generation(opened.server_generation());
      info->set_resync_done_bytes(0);
      info->set_resync_total_bytes(size_bytes_);
      info->set_resync_bytes_per_s(0);
      info->set_state_since_unix_ms(NowMs());
      return Status::Ok();
    });
  }
  if (!s.ok()) {
    Status d = rpc->Delete(vol.id());
    if (!d.ok()) spdlog::warn("replace: undo create on {}: {}", new_target, d.ToString());
    return s;
  }
  // Stop sending to the old replica, let writes already sent to it finish, then switch.
  {
    std::lock_guard barrier(barrier_mu_);
    std::unique_lock lock(mu_);
    replicas_[idx]->state = ReplicaState::kOut;
    DrainEra(lock, Publish(/*new_era=*/true));
    replicas_[idx]->rpc = std::move(rpc);
    replicas_[idx]->volume_id = vol.id();
    replicas_[idx]->generation = opened.server_generation();
    replicas_[idx]->full_rebuild = true;
    replicas_[idx]->suspect = replicas_[idx]->lost_writes = false;
    replicas_[idx]->unflushed_rebuild = false;
    progress_[idx] = ResyncProgress();
    progress_[idx].target = new_target;
    Publish();
  }
  spdlog::info("volume \"{}\" epoch {}: replica {} {} replaced by {} (volume {}), to be rebuilt",
               name_, epoch_, idx, old_target, new_target, vol.id());
  return Status::Ok();
}

}  // namespace unbd::replication
