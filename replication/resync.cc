#include "replication/resync.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <set>
#include <thread>

#include "replication/replicated_volume.h"

namespace unbd::replication {
namespace {

constexpr size_t kCheckpointRegions = 32;
constexpr auto kCheckpointInterval = std::chrono::seconds(1);

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

bool AllZero(const std::string& s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return c == 0; });
}

}  // namespace

void RateMeter::Add(uint64_t bytes) {
  pending_ += bytes;
  const auto now = std::chrono::steady_clock::now();
  const double dt = std::chrono::duration<double>(now - last_).count();
  if (dt < 0.2) return;  // sample at most 5 times a second
  const double sample = pending_ / dt;
  const double alpha = std::min(1.0, dt / 5.0);
  rate_ = rate_ == 0 ? sample : rate_ + alpha * (sample - rate_);
  pending_ = 0;
  last_ = now;
}

Status CopyRange(const CopyEnd& src, const CopyEnd& dst, uint64_t epoch, uint64_t offset,
                 uint64_t length, uint32_t max_io_bytes, uint32_t out_mask, uint64_t* copied) {
  std::string data;
  for (uint64_t done = 0; done < length;) {
    const uint32_t piece = static_cast<uint32_t>(std::min<uint64_t>(max_io_bytes, length - done));
    Status s = src.rpc->Read(src.volume_id, epoch, offset + done, piece, &data, src.generation);
    // Fenced stays fenced (a newer owner, not a failed replica): callers stop instead of retrying.
    if (!s.ok() && IsFenced(s)) return s;
    if (!s.ok()) return Status::Unavailable("read " + src.rpc->target() + ": " + s.ToString());
    s = AllZero(data) ? dst.rpc->Zero(dst.volume_id, epoch, offset + done, piece,
                                      /*discard=*/true, out_mask, dst.generation)
                      : dst.rpc->Write(dst.volume_id, epoch, offset + done, data, false, out_mask,
                                       dst.generation);
    if (!s.ok() && IsFenced(s)) return s;
    if (!s.ok()) return Status::Aborted("write " + dst.rpc->target() + ": " + s.ToString());
    done += piece;
    *copied += piece;
  }
  return Status::Ok();
}

Status CopyDifferingBlocks(const CopyEnd& src, const std::vector<CopyEnd>& dsts, uint64_t epoch,
                           uint64_t offset, uint64_t length, uint32_t max_io_bytes, uint32_t out_mask,
                           uint64_t* copied, size_t* failed_dst) {
  constexpr uint64_t kBlock = 4096;
  // The server allows 65536 blocks per BlockChecksums call, but it reads every block it sums:
  // 8 MiB a call stays well inside the RPC deadline on a loaded server.
  constexpr uint64_t kMaxBlocksPerCall = 2048;
  const uint64_t first = offset / kBlock, blocks = length / kBlock;
  for (uint64_t start = 0; start < blocks; start += kMaxBlocksPerCall) {
    const auto count = static_cast<uint32_t>(std::min(kMaxBlocksPerCall, blocks - start));
    // Index 0 the source, then the destinations: one round trip's wait for all of them.
    std::vector<std::vector<uint64_t>> sums(dsts.size() + 1);
    std::vector<Status> got(dsts.size() + 1);
    ForEachParallel(sums.size(), [&](size_t i) {
      const CopyEnd& end = i == 0 ? src : dsts[i - 1];
      got[i] = end.rpc->Checksums(end.volume_id, first + start, count, &sums[i]);
    });
    if (!got[0].ok()) return Status::Unavailable("checksums " + src.rpc->target() + ": " + got[0].ToString());
    struct Run {
      size_t dst;
      uint64_t block, blocks;
    };
    std::vector<Run> runs;  // of differing blocks, per destination
    for (size_t d = 0; d < dsts.size(); ++d) {
      if (!got[d + 1].ok()) {
        if (failed_dst) *failed_dst = d;
        return Status::Aborted("checksums " + dsts[d].rpc->target() + ": " + got[d + 1].ToString());
      }
      for (uint64_t b = 0; b < count;) {
        if (sums[d + 1][b] == sums[0][b]) {
          ++b;
          continue;
        }
        uint64_t e = b + 1;
        while (e < count && sums[d + 1][e] != sums[0][e]) ++e;
        runs.push_back({d, first + start + b, e - b});
        b = e;
      }
    }
    // The runs are small and scattered (the requests in flight at a crash): a few at a time, as
    // each is two round trips (read, write) that would otherwise add up one after another.
    constexpr size_t kParallelRuns = 8;
    std::atomic<size_t> next{0};
    std::atomic<uint64_t> moved{0};
    std::vector<Status> failed(std::min(kParallelRuns, runs.size()));
    std::vector<size_t> failed_at(failed.size());  // the destination of failed[w]
    ForEachParallel(failed.size(), [&](size_t w) {
      for (size_t i; (i = next.fetch_add(1)) < runs.size() && failed[w].ok();) {
        uint64_t n = 0;
        failed[w] = CopyRange(src, dsts[runs[i].dst], epoch, runs[i].block * kBlock, runs[i].blocks * kBlock,
                              max_io_bytes, out_mask, &n);
        failed_at[w] = runs[i].dst;
        moved += n;
      }
    });
    *copied += moved;
    for (const Status& s : failed) {
      if (IsFenced(s)) return s;
    }
    for (size_t w = 0; w < failed.size(); ++w) {
      if (failed[w].ok()) continue;
      if (failed_dst && failed[w].code() == Status::Code::kAborted) *failed_dst = failed_at[w];
      return failed[w];
    }
  }
  return Status::Ok();
}

void ResyncJob::DestinationLost() {
  std::lock_guard lock(v_->mu_);
  // Copies and writes it had not flushed are gone, and cleared from the dirty sets already.
  v_->replicas_[p_]->full_rebuild = true;
  spdlog::warn("volume \"{}\": {} restarted after a crash during its resync: full rebuild",
               v_->name_, v_->replicas_[p_]->rpc->target());
}

void ResyncJob::Publish(const ResyncProgress& progress) {
  std::lock_guard lock(v_->mu_);
  v_->progress_[p_] = progress;
}

Status ResyncJob::Run() {
  bool full = false;
  Status s = Prepare(&full);
  if (s.ok()) s = Copy(full);
  ResyncProgress last;
  bool now_full;
  {
    std::lock_guard lock(v_->mu_);
    last = v_->progress_[p_];
    if (!s.ok() && v_->replicas_[p_]->state == ReplicaState::kRebuilding) {
      v_->replicas_[p_]->state = ReplicaState::kOut;
      v_->Publish();
    }
    now_full = v_->replicas_[p_]->full_rebuild;
  }
  last.active = false;
  last.result = s;
  Publish(last);
  if (!s.ok()) {
    // Best effort: the metadata shows it out again (an owner treats REBUILDING as out anyway).
    v_->meta_->CommitChange([&](v1::ReplicaSetMeta* m) {
      auto* info = m->mutable_replicas(p_);
      if (info->state() != v1::REPLICA_REBUILDING) return Status::Aborted("not rebuilding");
      info->set_state(v1::REPLICA_OUT);
      info->set_full_rebuild(now_full);
      info->set_state_since_unix_ms(NowMs());
      return Status::Ok();
    });
  }
  return s;
}

Status ResyncJob::Prepare(bool* full) {
  ReplicatedVolume& v = *v_;
  ReplicaRpc& rpc = *v.replicas_[p_]->rpc;
  uint64_t vid, old_generation;
  bool unflushed_rebuild;
  {
    std::lock_guard lock(v.mu_);
    if (!v.fenced_.ok()) return v.fenced_;
    if (v.replicas_[p_]->state != ReplicaState::kOut) return Status::Ok();
    vid = v.replicas_[p_]->volume_id;
    *full = v.replicas_[p_]->full_rebuild;
    old_generation = v.replicas_[p_]->generation;
    unflushed_rebuild = v.replicas_[p_]->unflushed_rebuild;
  }
  const v1::ReplicaSetMeta meta = v.meta_->committed();
  std::string uuid = meta.replicas(p_).uuid();
  v1::Volume vol;
  Status s = rpc.Stat([&] {
    v1::VolumeRef ref;
    ref.set_id(vid);
    return ref;
  }(), &vol, /*wait_for_ready=*/true);
  const bool missing = s.code() == Status::Code::kNotFound;
  if (!s.ok() && !missing) return Status::Unavailable("probe: " + s.ToString());
  if (missing || vol.replica_uuid() != uuid || vol.name() != v.name_) {
    // A wiped or replaced copy: a new volume there, rebuilt in full.
    if (!missing) {
      spdlog::warn("volume \"{}\": {} volume {} is another copy (uuid \"{}\", expected \"{}\"); "
                   "deleting it for a full rebuild",
                   v.name_, rpc.target(), vid, vol.replica_uuid(), uuid);
      s = rpc.Delete(vid);
      if (!s.ok()) return Status::Unavailable("delete stale copy: " + s.ToString());
    }
    uuid = NewReplicaUuid();
    s = rpc.Create(v.name_, v.size_bytes_, uuid, &vol);
    if (!s.ok()) return Status::Unavailable("recreate for a full rebuild: " + s.ToString());
    vid = vol.id();
    *full = true;
  }
  v1::OpenVolumeResponse opened;
  s = rpc.Open(vid, v.epoch_, v.options_.client_id, &opened);
  if (!s.ok()) return Status::Unavailable("re-open at epoch " + std::to_string(v.epoch_) + ": " +
                                          s.ToString());
  // The volume grew while it was out (Resize holds resync_mu_ like us, so the size is stable):
  // the copy must take the writes and copies past its old end.
  const uint64_t size = v.size_bytes_;
  if (opened.size_bytes() < size) {
    s = rpc.Grow(vid, size, v.epoch_);
    if (IsFenced(s)) return s;
    if (!s.ok())
      return Status::Unavailable("grow from " + std::to_string(opened.size_bytes()) + " to " +
                                 std::to_string(size) + " bytes: " + s.ToString());
    spdlog::info("volume \"{}\": {} volume {} grown from {} to {} bytes before its resync", v.name_,
                 rpc.target(), vid, opened.size_bytes(), size);
  }
  // The generation its unflushed copies live at: this owner's last (re-)open of it, else the one
  // a previous owner's resync recorded (it did not answer this owner's open).
  const uint64_t copies_at =
      old_generation != 0 ? old_generation : meta.replicas(p_).server_generation();
  if (!*full && unflushed_rebuild && copies_at != 0 && opened.server_generation() != copies_at) {
    // It restarted after a crash during an earlier resync: the copies and writes it had not
    // flushed are gone, and no dirty set names them any more.
    spdlog::warn(
        "volume \"{}\": {} restarted after a crash during its resync (server "
        "generation {} -> {}): full rebuild",
        v.name_, rpc.target(), copies_at, opened.server_generation());
    *full = true;
  }
  const bool is_full = *full;
  s = v.meta_->CommitChange([&](v1::ReplicaSetMeta* m) {
    auto* info = m->mutable_replicas(p_);
    info->set_volume_id(vid);
    info->set_uuid(uuid);
    info->set_state(v1::REPLICA_REBUILDING);
    info->set_full_rebuild(is_full);
    // Its copies will live at this generation until the final FLUSH: a later owner that finds
    // another one rebuilds it in full.
    info->set_server_generation(opened.server_generation());
    info->set_resync_done_bytes(0);
    info->set_resync_total_bytes(0);
    info->set_resync_bytes_per_s(0);
    info->set_state_since_unix_ms(NowMs());
    return Status::Ok();
  });
  if (!s.ok()) return s;
  // From here new writes go to the replica too; the ones sent before (marked in PeerSet(p) on
  // the healthy replicas, not sent to it) must have landed before the dirty set is read.
  std::lock_guard barrier(v.barrier_mu_);
  std::unique_lock lock(v.mu_);
  v.replicas_[p_]->volume_id = vid;
  v.replicas_[p_]->generation = opened.server_generation();
  v.replicas_[p_]->full_rebuild = is_full;
  v.replicas_[p_]->unflushed_rebuild = true;
  v.replicas_[p_]->state = ReplicaState::kRebuilding;
  v.DrainEra(lock, v.Publish(/*new_era=*/true));
  spdlog::info("volume \"{}\" epoch {}: replica {} ({}) rebuilding ({})", v.name_, v.epoch_, p_,
               rpc.target(), is_full ? "full" : "incremental");
  return Status::Ok();
}

Status ResyncJob::Copy(bool full) {
  ReplicatedVolume& v = *v_;
  auto& dst_replica = *v.replicas_[p_];
  ReplicaRpc& dst = *dst_replica.rpc;
  const uint64_t rb = v.region_bytes_;
  const uint64_t nregions = (v.size_bytes_ + rb - 1) / rb;
  uint64_t dst_vid, dst_generation;
  std::vector<std::pair<ReplicaRpc*, uint64_t>> healthy;
  std::vector<CopyEnd> sources;
  {
    std::lock_guard lock(v.mu_);
    if (dst_replica.state != ReplicaState::kRebuilding) return Status::Ok();  // nothing to do
    dst_vid = dst_replica.volume_id;
    dst_generation = dst_replica.generation;
    for (size_t i : v.IndicesIn(ReplicaState::kHealthy))
      healthy.push_back({v.replicas_[i]->rpc.get(), v.replicas_[i]->volume_id});
  }
  // The dirty set D.
  std::vector<uint64_t> todo;
  if (full) {
    todo.resize(nregions);
    for (uint64_t r = 0; r < nregions; ++r) todo[r] = r;
  } else {
    std::set<uint64_t> d;
    for (auto [rpc, vid] : healthy) {
      std::vector<uint64_t> regions;
      Status s = rpc->GetRegions(vid, PeerSet(p_), &regions, nullptr);
      if (!s.ok()) return Status::Unavailable("dirty regions on " + rpc->target() + ": " +
                                              s.ToString());
      d.insert(regions.begin(), regions.end());
    }
    std::vector<uint64_t> own;
    Status s = dst.GetRegions(dst_vid, kUnstableSet, &own, nullptr);
    if (!s.ok()) return Status::Unavailable("unstable regions: " + s.ToString());
    d.insert(own.begin(), own.end());
    for (uint64_t r : d) {
      if (r < nregions) todo.push_back(r);
    }
  }
  auto region_len = [&](uint64_t r) { return std::min(rb, v.size_bytes_ - r * rb); };
  ResyncProgress prog;
  prog.target = dst.target();
  prog.active = true;
  prog.full = full;
  prog.regions = todo.size();
  for (uint64_t r : todo) prog.total_bytes += region_len(r);
  Publish(prog);

  RateMeter rate;
  const auto start = std::chrono::steady_clock::now();
  auto last_checkpoint = start;
  std::vector<uint64_t> copied_regions;
  auto checkpoint = [&](bool final_state) -> Status {
    // Copied regions leave the sources' PeerSet(p): no write marks them for p any more (p gets
    // every write now), so a later resync does not copy them again.
    std::vector<Status> results(healthy.size());
    ForEachParallel(healthy.size(), [&](size_t k) {
      results[k] = healthy[k].first->ClearRegions(healthy[k].second, v.epoch_, PeerSet(p_),
                                                  copied_regions, false);
    });
    for (size_t k = 0; k < healthy.size(); ++k) {
      if (!results[k].ok() && IsFenced(results[k])) return results[k];
    }
    copied_regions.clear();
    last_checkpoint = std::chrono::steady_clock::now();
    if (final_state) return Status::Ok();
    const ResyncProgress snap = prog;
    return v.meta_->CommitChange([&](v1::ReplicaSetMeta* m) {
      auto* info = m->mutable_replicas(p_);
      if (info->state() != v1::REPLICA_REBUILDING) return Status::Aborted("no longer rebuilding");
      info->set_resync_done_bytes(snap.done_bytes);
      info->set_resync_total_bytes(snap.total_bytes);
      info->set_resync_bytes_per_s(snap.bytes_per_s);
      return Status::Ok();
    });
  };
  Status s = checkpoint(false);
  if (!s.ok()) return s;

  for (uint64_t r : todo) {
    {
      std::lock_guard lock(v.mu_);
      if (!v.fenced_.ok()) return v.fenced_;
      if (dst_replica.state != ReplicaState::kRebuilding)
        return Status::Aborted("replica failed a write during the resync");
      healthy.clear();
      sources.clear();
      for (size_t i : v.HealthySourcesFirst()) {
        const auto& r = *v.replicas_[i];
        healthy.push_back({r.rpc.get(), r.volume_id});
        sources.push_back({r.rpc.get(), r.volume_id, r.generation});
      }
    }
    if (v.stop_) return Status::Aborted("volume closing");
    const uint64_t off = r * rb, len = region_len(r);
    v.locks_.Lock(r);
    Status cs = Status::Unavailable("no healthy source");
    for (const CopyEnd& src : sources) {
      cs = CopyRange(src, {&dst, dst_vid, dst_generation}, v.epoch_, off, len, v.max_io_bytes_, 0,
                     &prog.copied_bytes);
      // Aborted: the target failed; fenced: no source will do better.
      if (cs.ok() || cs.code() == Status::Code::kAborted || IsFenced(cs)) break;
    }
    v.locks_.Unlock(r);
    if (IsFenced(cs)) return cs;
    if (IsGenerationGone(cs)) DestinationLost();
    if (!cs.ok()) return Status::Unavailable("region " + std::to_string(r) + ": " + cs.ToString());
    copied_regions.push_back(r);
    prog.done_bytes += len;
    rate.Add(len);
    prog.bytes_per_s = rate.rate();
    if (prog.bytes_per_s == 0) {
      const double secs =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      if (secs > 0) prog.bytes_per_s = prog.done_bytes / secs;
    }
    prog.eta_seconds =
        prog.bytes_per_s > 0 ? (prog.total_bytes - prog.done_bytes) / prog.bytes_per_s : 0;
    Publish(prog);
    if (copied_regions.size() >= kCheckpointRegions ||
        std::chrono::steady_clock::now() - last_checkpoint >= kCheckpointInterval) {
      s = checkpoint(false);
      if (!s.ok()) return s;
    }
    if (v.options_.resync_rate_bytes_per_s > 0) {
      // Throttle: never ahead of the configured rate since the start.
      const auto due = start + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                   std::chrono::duration<double>(
                                       double(prog.done_bytes) / v.options_.resync_rate_bytes_per_s));
      std::this_thread::sleep_until(due);
    }
  }
  s = dst.Flush(dst_vid, v.epoch_, dst_generation);
  if (IsGenerationGone(s)) DestinationLost();
  if (!s.ok()) return Status::Unavailable("flush: " + s.ToString());
  s = checkpoint(true);
  if (!s.ok()) return s;
  {
    std::lock_guard lock(v.mu_);
    if (dst_replica.state != ReplicaState::kRebuilding)
      return Status::Aborted("replica failed a write during the resync");
    // From now on writes wait for it. A write that was sent while it was rebuilding and fails
    // later finds it healthy and marks it out the ordinary way.
    dst_replica.state = ReplicaState::kHealthy;
    dst_replica.full_rebuild = false;
    dst_replica.lost_writes = dst_replica.suspect = false;
    dst_replica.unflushed_rebuild = false;  // its FLUSH above made everything durable
    v.Publish();
  }
  prog.eta_seconds = 0;
  Publish(prog);
  s = v.meta_->CommitChange([&](v1::ReplicaSetMeta* m) {
    auto* info = m->mutable_replicas(p_);
    // A mark-out committed in between wins: the copy is then missing a write.
    if (info->state() != v1::REPLICA_REBUILDING) return Status::Aborted("no longer rebuilding");
    info->set_state(v1::REPLICA_HEALTHY);
    info->set_full_rebuild(false);
    info->set_resync_done_bytes(prog.done_bytes);
    info->set_resync_total_bytes(prog.total_bytes);
    info->set_resync_bytes_per_s(prog.bytes_per_s);
    info->set_state_since_unix_ms(NowMs());
    return Status::Ok();
  });
  if (!s.ok()) {
    // Safe either way: the replica has every write; the metadata still says REBUILDING, which the
    // next owner treats as out.
    spdlog::warn("volume \"{}\": replica {} healthy, but committing it failed: {}", v.name_, p_,
                 s.ToString());
    return Status::Ok();
  }
  spdlog::info("volume \"{}\" epoch {}: replica {} ({}) healthy again: {} regions, {} bytes copied",
               v.name_, v.epoch_, p_, dst.target(), prog.regions, prog.copied_bytes);
  return Status::Ok();
}

}  // namespace unbd::replication
