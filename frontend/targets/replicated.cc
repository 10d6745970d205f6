#include "frontend/targets/replicated.h"

#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <cstring>

#include <spdlog/spdlog.h>

#include "replication/replica_meta.h"
#include "replication/replica_rpc.h"

namespace unbd::frontend {

namespace {

using replication::ReplicaState;
using replication::ReplicatedVolume;

// Unique per incarnation: the ballot tag derives from it, and two targets of one process (tests)
// must not share it.
std::string ClientId() {
  static std::atomic<uint32_t> n{0};
  char host[256] = {};
  gethostname(host, sizeof(host) - 1);
  return std::string(host) + "/unbd-pid-" + std::to_string(getpid()) + "/replicated-" +
         std::to_string(n++);
}

// Requests wait in a fixed ring of tags (depth slots, allocated once) for one of the queue's
// workers; each worker blocks in the replication library and hands the result back to the queue
// thread with CompleteAsync.
class ReplicatedHandler final : public QueueHandler {
 public:
  ReplicatedHandler(ReplicatedTarget* target, QueueContext* ctx, uint32_t workers)
      : target_(target), vol_(target->volume()), ctx_(ctx), reqs_(ctx->depth()),
        ring_(ctx->depth()) {
    for (uint32_t i = 0; i < workers; ++i) workers_.emplace_back([this] { Work(); });
  }
  ~ReplicatedHandler() override { Stop(); }

  void Submit(const IoRequest& req) override {
    std::lock_guard lock(mu_);
    reqs_[req.tag] = req;
    // At most depth tags are ever outstanding, so the ring never overflows.
    ring_[(head_ + count_) % ring_.size()] = req.tag;
    ++count_;
    cv_.notify_one();
  }

  void Stop() override {
    {
      std::lock_guard lock(mu_);
      if (stopping_) return;
      stopping_ = true;
    }
    cv_.notify_all();
    // Workers finish what was queued before they exit: every request gets its one completion.
    for (auto& w : workers_) w.join();
  }

 private:
  void Work() {
    std::string scratch;  // READ data; reused, so it stops allocating once it is large enough
    for (;;) {
      IoRequest req;
      {
        std::unique_lock lock(mu_);
        cv_.wait(lock, [&] { return count_ > 0 || stopping_; });
        if (count_ == 0) return;
        req = reqs_[ring_[head_]];
        head_ = (head_ + 1) % ring_.size();
        --count_;
      }
      ctx_->CompleteAsync(req.tag, Execute(req, &scratch));
    }
  }

  int Execute(const IoRequest& req, std::string* scratch) {
    Status s;
    const char* what = "?";
    switch (req.op) {
      case UBLK_IO_OP_READ:
        what = "read";
        s = vol_->Read(req.offset, req.length, scratch);
        if (s.ok() && scratch->size() != req.length) {
          s = Status::Internal("read at offset " + std::to_string(req.offset) + ": got " +
                               std::to_string(scratch->size()) + " of " +
                               std::to_string(req.length) + " bytes");
        }
        if (s.ok()) std::memcpy(req.buf, scratch->data(), req.length);
        break;
      case UBLK_IO_OP_WRITE:
        what = "write";
        s = vol_->Write(req.offset,
                        std::string_view(reinterpret_cast<const char*>(req.buf), req.length),
                        (req.flags & UBLK_IO_F_FUA) != 0);
        break;
      case UBLK_IO_OP_FLUSH:
        what = "flush";
        s = vol_->Flush();
        break;
      case UBLK_IO_OP_DISCARD:
        what = "discard";
        s = vol_->WriteZeroes(req.offset, req.length, /*discard=*/true);
        break;
      case UBLK_IO_OP_WRITE_ZEROES:
        what = "write-zeroes";
        s = vol_->WriteZeroes(req.offset, req.length, /*discard=*/false);
        break;
      default:
        return -EOPNOTSUPP;
    }
    if (!s.ok()) {
      target_->ReportFailure(what, req.offset, s);
      return -EIO;
    }
    return req.op == UBLK_IO_OP_READ || req.op == UBLK_IO_OP_WRITE ? static_cast<int>(req.length)
                                                                    : 0;
  }

  ReplicatedTarget* target_;
  ReplicatedVolume* vol_;
  QueueContext* ctx_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<IoRequest> reqs_;   // by tag
  std::vector<uint16_t> ring_;    // tags waiting for a worker
  size_t head_ = 0, count_ = 0;   // guarded by mu_
  bool stopping_ = false;         // guarded by mu_
  std::vector<std::thread> workers_;
};

// The volume's id on each server. Any one answer is enough: each replica stores the replica set
// (addresses and ids) in its metadata, and the newest copy fills in the servers that did not
// answer in time (connections to freshly started servers can be slow; a down one must not cost
// a timeout, so no wait-for-ready). Ids still unknown stay 0:
// the open counts that replica missing.
std::vector<replication::ReplicaAddr> Resolve(const std::vector<std::string>& targets,
                                              const std::string& name,
                                              std::chrono::milliseconds timeout,
                                              std::vector<Status>* errors) {
  std::vector<replication::ReplicaAddr> out(targets.size());
  std::vector<v1::Volume> vols(targets.size());
  errors->assign(targets.size(), Status::Ok());
  replication::ForEachParallel(targets.size(), [&](size_t i) {
    out[i].target = targets[i];
    v1::VolumeRef ref;
    ref.set_name(name);
    (*errors)[i] = replication::ReplicaRpc(targets[i], timeout).Stat(ref, &vols[i]);
    if ((*errors)[i].ok()) out[i].volume_id = vols[i].id();
  });
  const v1::ReplicaSetMeta* newest = nullptr;
  for (size_t i = 0; i < targets.size(); ++i) {
    if (!(*errors)[i].ok() || !vols[i].has_replica_set()) continue;
    if (!newest || replication::MetaNewer(vols[i].replica_set(), *newest))
      newest = &vols[i].replica_set();
  }
  if (newest) {
    for (auto& a : out) {
      if (a.volume_id != 0) continue;
      for (const auto& r : newest->replicas()) {
        if (r.address() == a.target) a.volume_id = r.volume_id();
      }
    }
  }
  return out;
}

// `s` with `prefix` before its message, same code.
Status Prefixed(const Status& s, const std::string& prefix) {
  std::string m = prefix + s.message();
  switch (s.code()) {
    case Status::Code::kOk: return s;
    case Status::Code::kInvalidArgument: return Status::InvalidArgument(m);
    case Status::Code::kNotFound: return Status::NotFound(m);
    case Status::Code::kAlreadyExists: return Status::AlreadyExists(m);
    case Status::Code::kFailedPrecondition: return Status::FailedPrecondition(m);
    case Status::Code::kOutOfRange: return Status::OutOfRange(m);
    case Status::Code::kUnavailable: return Status::Unavailable(m);
    case Status::Code::kDeadlineExceeded: return Status::DeadlineExceeded(m);
    case Status::Code::kAborted: return Status::Aborted(m);
    case Status::Code::kResourceExhausted: return Status::ResourceExhausted(m);
    case Status::Code::kIoError: return Status::IoError(m);
    case Status::Code::kInternal: return Status::Internal(m);
  }
  return Status::Internal(m);
}

}  // namespace

Status ReplicatedTarget::Open(const DeviceConfig& config, const ReplicatedTargetOptions& options,
                              std::unique_ptr<ReplicatedTarget>* out) {
  if (config.replicas.empty()) return Status::InvalidArgument("replicated target: no --replicas");
  // Replicas that cannot be reached now (a loaded machine's connection handshake timing out, a
  // majority briefly down) are retried for as long as I/O would wait for a majority: during
  // `recover` the device is quiesced and waiting is what keeps an error from the filesystem. A
  // volume missing everywhere or a newer owner fails at once.
  const auto until = std::chrono::steady_clock::now() +
                     std::chrono::milliseconds(config.retry_deadline_ms);
  for (int attempt = 1;; ++attempt) {
    Status s = OpenOnce(config, options, out);
    const bool transient = s.code() == Status::Code::kUnavailable ||
                           s.code() == Status::Code::kDeadlineExceeded;
    if (s.ok() || !transient || std::chrono::steady_clock::now() >= until) return s;
    spdlog::warn("volume '{}': open attempt {} failed, retrying: {}", config.volume, attempt,
                 s.ToString());
    std::this_thread::sleep_for(std::chrono::milliseconds(std::min(100 * attempt, 1000)));
  }
}

Status ReplicatedTarget::OpenOnce(const DeviceConfig& config,
                                  const ReplicatedTargetOptions& options,
                                  std::unique_ptr<ReplicatedTarget>* out) {
  std::vector<Status> errors;
  auto addrs = Resolve(config.replicas, config.volume, options.rpc_timeout, &errors);
  size_t found = 0;
  std::string why;
  for (size_t i = 0; i < addrs.size(); ++i) {
    if (errors[i].ok()) {
      ++found;
    } else {
      why += (why.empty() ? "" : "; ") + config.replicas[i] + ": " + errors[i].ToString();
    }
  }
  if (found == 0) {
    bool all_missing = std::all_of(errors.begin(), errors.end(), [](const Status& s) {
      return s.code() == Status::Code::kNotFound;
    });
    std::string msg = "volume '" + config.volume + "' not found on any replica (" + why + ")";
    return all_missing ? Status::NotFound(msg) : Status::Unavailable(msg);
  }
  if (!why.empty()) spdlog::warn("volume '{}': {}", config.volume, why);

  replication::ReplicatedVolumeOptions vo;
  vo.client_id = ClientId();
  vo.rpc_timeout = options.rpc_timeout;
  vo.quorum_wait = std::chrono::milliseconds(config.retry_deadline_ms);
  vo.resync_probe_interval = options.resync_probe_interval;
  std::unique_ptr<ReplicatedVolume> vol;
  Status s = ReplicatedVolume::Open(addrs, vo, &vol);
  if (!s.ok()) return Prefixed(s, "open replicated volume '" + config.volume + "': ");
  std::unique_ptr<ReplicatedTarget> t(new ReplicatedTarget());
  t->config_ = config;
  t->options_ = options;
  t->volume_ = std::move(vol);
  // In the metadata's order, which may differ from --replicas (a replace happened).
  const auto states = t->volume_->states();
  const auto set = t->volume_->replica_addrs();
  std::string st;
  for (size_t i = 0; i < states.size() && i < set.size(); ++i) {
    st += (i ? " " : "") + set[i].target + "=" + replication::ReplicaStateName(states[i]);
  }
  spdlog::info("volume '{}' opened on {} replicas at epoch {} as {} ({} regions reconciled): {}",
               config.volume, states.size(), t->volume_->epoch(), vo.client_id,
               t->volume_->open_stats().reconciled_regions, st);
  t->watcher_ = std::thread([p = t.get()] { p->WatchLoop(); });
  *out = std::move(t);
  return Status::Ok();
}

ReplicatedTarget::~ReplicatedTarget() {
  stop_ = true;
  if (watcher_.joinable()) watcher_.join();
}

void ReplicatedTarget::AdjustParams(ublk_params* p) const {
  // Remote volumes address 4 KiB blocks; the servers take at most 1 MiB per READ/WRITE.
  p->basic.logical_bs_shift = 12;
  p->basic.physical_bs_shift = 12;
  p->basic.io_min_shift = 12;
  p->basic.max_sectors = std::min<uint32_t>(p->basic.max_sectors, (1u << 20) >> 9);
  p->discard.discard_granularity = 4096;
  p->discard.max_discard_sectors = (1u << 30) >> 9;
  p->discard.max_write_zeroes_sectors = (1u << 30) >> 9;
}

Status ReplicatedTarget::CreateQueueHandler(QueueContext* ctx, std::unique_ptr<QueueHandler>* out) {
  const uint32_t workers = std::clamp<uint32_t>(options_.workers_per_queue, 1, ctx->depth());
  *out = std::make_unique<ReplicatedHandler>(this, ctx, workers);
  return Status::Ok();
}

std::string ReplicatedTarget::Describe() const {
  std::string r;
  for (const auto& a : config_.replicas) r += (r.empty() ? "" : ",") + a;
  return "remote replicas=" + r + " volume=" + config_.volume +
         " epoch=" + std::to_string(volume_->epoch());
}

void ReplicatedTarget::ReportFailure(const char* op, uint64_t offset, const Status& s) {
  ++failures_;
  if (replication::IsFenced(s) || s.code() == Status::Code::kFailedPrecondition) {
    if (!fenced_logged_.exchange(true)) {
      spdlog::error("volume '{}' epoch {}: fenced, a newer owner holds it; every request of this "
                    "incarnation fails with -EIO: {}",
                    config_.volume, volume_->epoch(), s.ToString());
    }
    return;
  }
  spdlog::error("volume '{}' epoch {}: {} at offset {} failed (-EIO): {}", config_.volume,
                volume_->epoch(), op, offset, s.ToString());
}

void ReplicatedTarget::WatchLoop() {
  auto states = volume_->states();
  auto last_progress = std::chrono::steady_clock::now();
  while (!stop_) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    const auto now_states = volume_->states();
    const auto addrs = volume_->replica_addrs();
    for (size_t i = 0; i < now_states.size() && i < states.size(); ++i) {
      if (now_states[i] == states[i]) continue;
      const auto level = now_states[i] == ReplicaState::kHealthy ? spdlog::level::info
                                                                 : spdlog::level::warn;
      spdlog::log(level, "volume '{}' epoch {}: replica {} ({}) {} -> {}", config_.volume,
                  volume_->epoch(), i, i < addrs.size() ? addrs[i].target : "?",
                  replication::ReplicaStateName(states[i]),
                  replication::ReplicaStateName(now_states[i]));
    }
    states = now_states;
    const auto now = std::chrono::steady_clock::now();
    if (now - last_progress < std::chrono::seconds(2)) continue;
    last_progress = now;
    for (const auto& p : volume_->resync_progress()) {
      if (!p.active) continue;
      spdlog::info("volume '{}': {} resync of {}: {} of {} MiB ({} regions), {:.1f} MB/s, ETA {:.0f} s",
                   config_.volume, p.full ? "full" : "incremental", p.target, p.done_bytes >> 20,
                   p.total_bytes >> 20, p.regions, p.bytes_per_s / 1e6, p.eta_seconds);
    }
  }
}

Status CreateReplicatedTarget(const DeviceConfig& config, std::unique_ptr<Target>* out) {
  std::unique_ptr<ReplicatedTarget> t;
  Status s = ReplicatedTarget::Open(config, ReplicatedTargetOptions{}, &t);
  if (!s.ok()) return s;
  *out = std::move(t);
  return Status::Ok();
}

}  // namespace unbd::frontend
