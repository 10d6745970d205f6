#include "replication/replicated_volume.h"

#include <spdlog/spdlog.h>

#include <atomic>
#include <thread>

#include "backend/admin_client.h"
#include "replication/replica_channel.h"
#include "unbd/v1/io.grpc.pb.h"

namespace unbd::replication {

const char* ReplicaStateName(ReplicaState s) {
  switch (s) {
    case ReplicaState::kHealthy:
      return "healthy";
    case ReplicaState::kOut:
      return "out";
  }
  return "?";
}

struct ReplicatedVolume::Replica {
  ReplicaAddr addr;
  std::unique_ptr<v1::BlockIo::Stub> stub;
  ReplicaState state = ReplicaState::kHealthy;  // guarded by ReplicatedVolume::mu_
};

namespace {

// A newer epoch holds the replica. The server answers FAILED_PRECONDITION both for "fenced by a
// newer epoch" and for "this epoch was never opened here" (a replica that missed our open: a
// replica failure, not a newer owner), so the message tells them apart until completions carry
// the replica's epoch (IoCompletion reserved fields).
bool IsFenced(const Status& s) {
  return s.code() == Status::Code::kFailedPrecondition &&
         s.message().find("is fenced by epoch") != std::string::npos;
}

}  // namespace

Status ReplicatedVolume::Create(const std::vector<std::string>& targets, const std::string& name,
                                uint64_t size_bytes, std::vector<ReplicaAddr>* out) {
  out->clear();
  if (targets.empty() || targets.size() > 5) {
    return Status::InvalidArgument("volume \"" + name + "\": " + std::to_string(targets.size()) +
                                   " replicas; a replicated volume has 1 to 5");
  }
  for (const auto& t : targets) {
    v1::Volume vol;
    Status s = backend::AdminClient(t).Create(name, size_bytes, &vol);
    if (!s.ok()) {
      for (const auto& created : *out) {
        v1::VolumeRef ref;
        ref.set_id(created.volume_id);
        Status d = backend::AdminClient(created.target).Delete(ref);
        if (!d.ok())
          spdlog::warn("volume \"{}\": undo create on {}: {}", name, created.target, d.ToString());
      }
      out->clear();
      return Status(
          s.code() == Status::Code::kAlreadyExists
              ? Status::AlreadyExists("volume \"" + name + "\" on " + t + ": " + s.message())
              : Status::Unavailable("volume \"" + name + "\": create on " + t +
                                    " failed: " + s.ToString()));
    }
    out->push_back({t, vol.id()});
  }
  return Status::Ok();
}

Status ReplicatedVolume::Open(const std::vector<ReplicaAddr>& replicas,
                              const ReplicatedVolumeOptions& options,
                              std::unique_ptr<ReplicatedVolume>* out) {
  QuorumOpenResult res;
  Status s = QuorumOpen(replicas,
                        {.client_id = options.client_id, .rpc_timeout = options.rpc_timeout}, &res);
  if (!s.ok()) return s;
  std::unique_ptr<ReplicatedVolume> v(new ReplicatedVolume());
  v->options_ = options;
  v->epoch_ = res.epoch;
  v->size_bytes_ = res.size_bytes;
  for (size_t i = 0; i < replicas.size(); ++i) {
    auto r = std::make_unique<Replica>();
    r->addr = replicas[i];
    r->stub = v1::BlockIo::NewStub(ReplicaChannel(replicas[i].target));
    if (!res.replicas[i].status.ok()) {
      r->state = ReplicaState::kOut;
      spdlog::warn("volume on {}: out from the start: {}", replicas[i].target,
                   res.replicas[i].status.ToString());
    }
    v->replicas_.push_back(std::move(r));
  }
  *out = std::move(v);
  return Status::Ok();
}

ReplicatedVolume::~ReplicatedVolume() = default;

std::vector<ReplicaState> ReplicatedVolume::states() const {
  std::lock_guard lock(mu_);
  std::vector<ReplicaState> out;
  for (const auto& r : replicas_) out.push_back(r->state);
  return out;
}

Status ReplicatedVolume::SendOne(Replica& r, Op op, uint64_t offset, std::string_view data,
                                 bool fua) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + options_.rpc_timeout);
  if (op == Op::kFlush) {
    v1::FlushRequest req;
    req.set_volume_id(r.addr.volume_id);
    req.set_epoch(epoch_);
    v1::FlushResponse resp;
    return backend::FromGrpc(r.stub->Flush(&ctx, req, &resp));
  }
  v1::WriteRequest req;
  req.set_volume_id(r.addr.volume_id);
  req.set_epoch(epoch_);
  req.set_offset(offset);
  req.set_fua(fua);
  req.set_data(std::string(data));
  v1::WriteResponse resp;
  return backend::FromGrpc(r.stub->Write(&ctx, req, &resp));
}

Status ReplicatedVolume::FanOut(Op op, uint64_t offset, std::string_view data, bool fua) {
  const std::string what = op == Op::kFlush ? "flush" : "write at offset " + std::to_string(offset);
  const auto deadline = std::chrono::steady_clock::now() + options_.quorum_wait;
  std::vector<size_t> pending;
  {
    std::lock_guard lock(mu_);
    if (!fenced_.ok()) return fenced_;
    for (size_t i = 0; i < replicas_.size(); ++i) {
      if (replicas_[i]->state == ReplicaState::kHealthy) pending.push_back(i);
    }
  }
  const size_t need = Majority(replicas_.size());
  for (int attempt = 0;; ++attempt) {
    std::vector<Status> results(pending.size());
    std::vector<std::thread> threads;
    for (size_t k = 1; k < pending.size(); ++k) {
      threads.emplace_back(
          [&, k] { results[k] = SendOne(*replicas_[pending[k]], op, offset, data, fua); });
    }
    if (!pending.empty()) results[0] = SendOne(*replicas_[pending[0]], op, offset, data, fua);
    for (auto& t : threads) t.join();

    std::vector<size_t> failed;
    std::string errors;
    for (size_t k = 0; k < pending.size(); ++k) {
      if (results[k].ok()) continue;
      const Replica& r = *replicas_[pending[k]];
      if (IsFenced(results[k])) {
        // A newer owner exists (docs/replication.md, section 1): never mark out, stop serving.
        std::lock_guard lock(mu_);
        fenced_ = Status::FailedPrecondition("volume " + std::to_string(r.addr.volume_id) + " on " +
                                             r.addr.target + ": " + results[k].message());
        spdlog::error("{}: {}", what, fenced_.message());
        return fenced_;
      }
      failed.push_back(pending[k]);
      errors += (errors.empty() ? "" : "; ") + r.addr.target + ": " + results[k].ToString();
    }
    if (failed.empty()) return Status::Ok();

    {
      // Every healthy replica except the failed ones has applied the op. Marking the failed ones
      // out is allowed only while a majority stays healthy (the same majority that will have to
      // commit the mark-out in the replica metadata).
      std::lock_guard lock(mu_);
      size_t healthy_after = 0;
      for (size_t i = 0; i < replicas_.size(); ++i) {
        const bool failing = std::find(failed.begin(), failed.end(), i) != failed.end();
        healthy_after += replicas_[i]->state == ReplicaState::kHealthy && !failing;
      }
      if (healthy_after >= need) {
        for (size_t i : failed) {
          if (replicas_[i]->state == ReplicaState::kOut) continue;
          replicas_[i]->state = ReplicaState::kOut;
          spdlog::warn("volume {} epoch {}: replica {} marked out after a failed {}: {}",
                       replicas_[i]->addr.volume_id, epoch_, replicas_[i]->addr.target, what,
                       errors);
        }
        return Status::Ok();
      }
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      const size_t applied = replicas_.size() - failed.size();
      return Status::Unavailable(
          "volume " + std::to_string(replicas_[0]->addr.volume_id) + " epoch " +
          std::to_string(epoch_) + ": " + what + " applied by at most " + std::to_string(applied) +
          " of " + std::to_string(replicas_.size()) + " replicas, a majority (" +
          std::to_string(need) + ") is not available after " +
          std::to_string(options_.quorum_wait.count()) + " ms; not acknowledged (" + errors + ")");
    }
    if (attempt == 0) spdlog::warn("{}: waiting for a majority: {}", what, errors);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    pending = failed;  // the others already applied it; writes are idempotent anyway
  }
}

Status ReplicatedVolume::Write(uint64_t offset, std::string_view data, bool fua) {
  return FanOut(Op::kWrite, offset, data, fua);
}

Status ReplicatedVolume::Flush() {
  return FanOut(Op::kFlush, 0, {}, false);
}

Status ReplicatedVolume::Read(uint64_t offset, uint32_t length, std::string* out) {
  static std::atomic<uint32_t> rotor{0};
  std::vector<size_t> healthy;
  {
    std::lock_guard lock(mu_);
    if (!fenced_.ok()) return fenced_;
    for (size_t i = 0; i < replicas_.size(); ++i) {
      if (replicas_[i]->state == ReplicaState::kHealthy) healthy.push_back(i);
    }
  }
  if (healthy.empty()) return Status::Unavailable("read: no healthy replica");
  // Spread reads; latency-based choice comes with the streaming target.
  const size_t start = rotor++ % healthy.size();
  std::string errors;
  for (size_t k = 0; k < healthy.size(); ++k) {
    Replica& r = *replicas_[healthy[(start + k) % healthy.size()]];
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + options_.rpc_timeout);
    v1::ReadRequest req;
    req.set_volume_id(r.addr.volume_id);
    req.set_epoch(epoch_);
    req.set_offset(offset);
    req.set_length(length);
    v1::ReadResponse resp;
    Status s = backend::FromGrpc(r.stub->Read(&ctx, req, &resp));
    if (s.ok()) {
      *out = std::move(*resp.mutable_data());
      return s;
    }
    if (IsFenced(s)) return s;
    errors += (errors.empty() ? "" : "; ") + r.addr.target + ": " + s.ToString();
  }
  return Status::Unavailable("read at offset " + std::to_string(offset) +
                             ": every healthy replica failed: " + errors);
}

}  // namespace unbd::replication
