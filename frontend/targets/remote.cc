#include "frontend/targets/remote.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <thread>

#include <grpcpp/grpcpp.h>
#include <spdlog/spdlog.h>

#include "backend/admin_client.h"
#include "backend/io_frame.h"
#include "frontend/block_stream.h"
#include "frontend/write_pool.h"

namespace unbd::frontend {

using Clock = std::chrono::steady_clock;

namespace {

constexpr uint16_t kStreamEnded = 0xffff;
constexpr uint8_t kSubTimer = 1;
constexpr int kRetryTickMs = 50;

int GrpcCodeToErrno(int code) {
  switch (static_cast<grpc::StatusCode>(code)) {
    case grpc::StatusCode::INVALID_ARGUMENT:
      return -EINVAL;
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return -ENOSPC;
    case grpc::StatusCode::OUT_OF_RANGE:
      return -EIO;
    default:
      return -EIO;
  }
}

}  // namespace

class RemoteHandler final : public QueueHandler, public BlockStreamSink {
 public:
  RemoteHandler(QueueContext* ctx, RemoteTarget* target, std::shared_ptr<RemoteStats> stats)
      : ctx_(ctx), target_(target), stats_(std::move(stats)), depth_(ctx->depth()), slots_(depth_),
        batch_(2 * depth_) {
    batch_left_.assign(depth_ + 1u, 0);
    pending_.reserve(depth_);
  }

  Status Init() {
    // As many slots as tags; a slot gRPC still holds after its request completed makes a later
    // write fall back to its tag's own buffer (still no copy).
    Status s = pool_.Init(depth_, target_->max_io_bytes_);
    if (!s.ok()) return s;
    link_ = std::make_unique<StreamLink>(target_->TakeQueueChannel(ctx_->queue_id()), &events_);
    Connect();
    return Status::Ok();
  }

  uint8_t* WriteBuffer(uint16_t tag, uint32_t length) override { return pool_.ReservePending(tag, length); }

  void Submit(const IoRequest& req) override {
    Slot& s = slots_[req.tag];
    s.req = req;
    s.pool_slot = req.op == UBLK_IO_OP_WRITE ? pool_.TakePending(req.tag) : -1;
    // The wire tag carries a per-tag sequence number, so a completion of an earlier request on this
    // tag (answered late, e.g. on a stream we already gave up on) can never finish a later one.
    s.seq = static_cast<uint16_t>(s.seq + 1);
    const uint32_t wire_tag = req.tag | (static_cast<uint32_t>(s.seq) << 16);
    backend::IoRequestHeader h;
    h.tag = wire_tag;
    h.volume_id = target_->volume_id_;
    h.epoch = target_->epoch_;
    h.offset = req.offset;
    h.length = req.length;
    h.fua = (req.flags & UBLK_IO_F_FUA) != 0;
    h.server_generation = target_->server_generation_.load(std::memory_order_relaxed);
    switch (req.op) {
      case UBLK_IO_OP_READ:
        h.op = v1::OP_READ;
        break;
      case UBLK_IO_OP_WRITE:
        h.op = v1::OP_WRITE;
        stats_->writes.fetch_add(1, std::memory_order_relaxed);
        break;
      case UBLK_IO_OP_FLUSH:
        h.op = v1::OP_FLUSH;
        h.offset = 0;
        h.length = 0;
        break;
      case UBLK_IO_OP_DISCARD:
        h.op = v1::OP_DISCARD;
        break;
      case UBLK_IO_OP_WRITE_ZEROES:
        h.op = v1::OP_WRITE_ZEROES;
        break;
      default:
        Finish(req.tag, -EOPNOTSUPP);
        return;
    }
    s.header_len = static_cast<uint8_t>(backend::EncodeIoRequestHeader(h, s.header));
    s.fields = h;
    s.active = true;
    s.since = Clock::now();
    if (up_) pending_.push_back(req.tag);
  }

  void Flush() override {
    if (pending_.empty()) return;
    if (!up_) {
      pending_.clear();  // everything active is re-sent on reconnect
      return;
    }
    // The server works a stream's batches one after another, answering each before it reads the
    // next. Sending a new batch every round would queue many small ones behind it; holding the
    // round's requests until the server is at most one batch behind lets them ride together.
    // An answer always comes (or the stream ends and Connect() starts over), so nothing waits
    // longer than the batch ahead of it.
    if (batches_in_flight_ >= kMaxBatchesInFlight) return;
    // Small requests first, in batches of their own, and big writes at most 1 MiB per batch: the
    // server answers a batch only once all of it is applied, so a 4 KiB read (a filesystem's
    // metadata, or the first request after a recovery) must not wait behind megabytes of writes
    // that were queued with it. Reordering requests that are in flight together is allowed (a
    // FLUSH covers only writes completed before it). Each round sends every small request and at
    // least one batch of big ones, then stops while the server is two batches behind.
    uint32_t count = 0;
    uint64_t bytes = 0;
    bool held = false;
    for (int pass = 0; pass < 2 && !held; ++pass) {
      const bool large_pass = pass == 1;
      const uint64_t max_bytes = large_pass ? std::min<uint64_t>(kLargeBatchBytes, target_->max_batch_bytes_)
                                            : target_->max_batch_bytes_;
      for (uint16_t tag : pending_) {
        const Slot& s = slots_[tag];
        // Finished already, or out and unanswered (a tag queued twice while it was held).
        if (!s.active || s.batch != 0) continue;
        uint32_t data = (s.req.op == UBLK_IO_OP_READ || s.req.op == UBLK_IO_OP_WRITE) ? s.req.length : 0;
        if ((data > kSmallRequestBytes) != large_pass) continue;
        if (count > 0 && (count >= target_->max_batch_requests_ || bytes + data > max_bytes)) {
          SendBatch();
          count = 0;
          bytes = 0;
          if (large_pass && batches_in_flight_ >= kMaxBatchesInFlight) {
            held = true;
            break;
          }
        }
        AppendRequest(tag);
        ++count;
        bytes += data;
      }
      if (count > 0) SendBatch();
      count = 0;
      bytes = 0;
    }
    // What did not go out waits for the next round.
    std::erase_if(pending_, [this](uint16_t tag) { return !slots_[tag].active || slots_[tag].batch != 0; });
  }

  void OnAsync(uint16_t tag, int result, QueueContext*) override {
    if (tag == kStreamEnded) {
      if (static_cast<uint32_t>(result) != generation_) return;  // an older stream
      if (!in_outage_)
        spdlog::warn("queue {}: lost the stream to {}; re-sending unfinished I/O for up to {} ms",
                     ctx_->queue_id(), target_->config_.server, target_->config_.retry_deadline_ms);
      in_outage_ = true;
      up_ = false;
      ArmTimer(kRetryTickMs);
      return;
    }
    const uint16_t seq = static_cast<uint16_t>(static_cast<uint32_t>(result) >> 8);
    result &= 0xff;
    if (tag >= depth_ || !slots_[tag].active || slots_[tag].seq != seq) {
      // A duplicate answer to a request we re-sent, or a stale one: the request is already done.
      spdlog::debug("queue {}: completion for tag {} seq {} that is not in flight, ignored", ctx_->queue_id(), tag, seq);
      return;
    }
    Slot& s = slots_[tag];
    Answered(s);
    if (result == 0) {
      if (in_outage_) spdlog::info("queue {}: backend {} answers again", ctx_->queue_id(), target_->config_.server);
      in_outage_ = false;
      if (s.req.op == UBLK_IO_OP_FLUSH && target_->TakeUnreportedLoss()) {
        Finish(tag, -EIO);
        return;
      }
      bool data = s.req.op == UBLK_IO_OP_READ || s.req.op == UBLK_IO_OP_WRITE;
      Finish(tag, data ? static_cast<int>(s.req.length) : 0);
      return;
    }
    if (result == static_cast<int>(grpc::StatusCode::ABORTED)) {
      // The server generation this request carried is gone (see remote.h).
      Status renewed = target_->RenewGeneration(s.fields.server_generation);
      if (renewed.code() == Status::Code::kUnavailable || renewed.code() == Status::Code::kDeadlineExceeded) {
        retry_.push_back(tag);  // until the retry deadline
        ArmTimer(kRetryTickMs);
        return;
      }
      if (!renewed.ok()) {
        Finish(tag, -EIO);
        return;
      }
      if (s.req.op == UBLK_IO_OP_FLUSH) {
        target_->TakeUnreportedLoss();
        Finish(tag, -EIO);  // it would vouch for writes the crash may have dropped
        return;
      }
      s.fields.server_generation = target_->server_generation_.load(std::memory_order_relaxed);
      s.header_len = static_cast<uint8_t>(backend::EncodeIoRequestHeader(s.fields, s.header));
      retry_.push_back(tag);
      ArmTimer(kRetryTickMs);
      return;
    }
    if (RetryableGrpcCode(result)) {
      retry_.push_back(tag);
      ArmTimer(kRetryTickMs);
      return;
    }
    spdlog::error("volume {} offset {} op {}: backend answered {} ({}), failing the request", target_->volume_id_,
                  s.req.offset, s.req.op, result,
                  result == static_cast<int>(grpc::StatusCode::FAILED_PRECONDITION) ? "fenced by a newer epoch"
                                                                                    : "error");
    Finish(tag, GrpcCodeToErrno(result));
  }

  void OnCqe(uint16_t, uint8_t sub, int) override {
    if (sub != kSubTimer) return;
    timer_armed_ = false;
    FailExpired();
    if (!up_) {
      Connect();
    } else {
      for (uint16_t tag : retry_)
        if (slots_[tag].active) pending_.push_back(tag);
      stats_->resends.fetch_add(retry_.size(), std::memory_order_relaxed);
    }
    retry_.clear();
  }

  void Stop() override {
    link_->Stop();
    // gRPC drops its slice references when the calls are torn down; the pool must outlive them.
    auto until = Clock::now() + std::chrono::seconds(2);
    while (pool_.outstanding() > 0 && Clock::now() < until) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    spdlog::info("queue {}: {} writes, payload from pool {} / tag buffers {}, {} payloads checked, {} bytes copied, "
                 "{} resends, {} reconnects",
                 ctx_->queue_id(), stats_->writes.load(), stats_->payload_from_pool.load(),
                 stats_->payload_from_tag_buffer.load(), stats_->payload_checked.load(),
                 stats_->payload_bytes_copied.load(), stats_->resends.load(), stats_->reconnects.load());
  }

  HandlerEvents* events() override { return &events_; }
  bool AwaitsEvents() const override { return batches_in_flight_ > 0; }

  // ---- BlockStreamSink: called from events_.Wait(), on the queue thread ----
  // Where READ data for `wire_tag` goes: the buffer of the READ in flight on that tag with that
  // sequence number, or nullptr if there is none or `size` is not what it asked for.
  uint8_t* ReadDest(uint32_t wire_tag, uint32_t size) override {
    const uint32_t tag = wire_tag & 0xffff;
    if (tag >= depth_) return nullptr;
    const Slot& s = slots_[tag];
    if (!s.active || s.req.op != UBLK_IO_OP_READ || s.seq != (wire_tag >> 16) || s.req.length != size)
      return nullptr;
    return s.req.buf;
  }
  void StreamCompletion(uint32_t, uint32_t wire_tag, int code, const std::string& message, uint64_t) override {
    if (code != 0) {
      // OnAsync logs the failed request; only here is the backend's reason.
      if (RetryableGrpcCode(code)) spdlog::debug("tag {:#x}: backend answered {}: {}", wire_tag, code, message);
      else spdlog::error("tag {:#x}: backend answered {}: {}", wire_tag, code, message.empty() ? "(no message)" : message);
    }
    // result = sequence number << 8 | gRPC code (codes are < 256).
    OnAsync(static_cast<uint16_t>(wire_tag & 0xffff),
            static_cast<int>(((wire_tag >> 16) << 8) | (static_cast<uint32_t>(code) & 0xff)), ctx_);
  }
  void StreamEnded(uint32_t generation, const grpc::Status& s) override {
    if (!s.ok() && s.error_code() != grpc::StatusCode::CANCELLED)
      spdlog::debug("queue {}: stream to {} ended: {} ({})", ctx_->queue_id(), target_->config_.server,
                   s.error_message(), static_cast<int>(s.error_code()));
    OnAsync(kStreamEnded, static_cast<int>(generation), ctx_);
  }

 private:
  struct Slot {
    IoRequest req{};
    int pool_slot = -1;
    uint16_t seq = 0;
    bool active = false;
    Clock::time_point since;
    backend::IoRequestHeader fields;  // what `header` encodes
    uint8_t header_len = 0;
    char header[backend::kMaxIoRequestHeaderBytes];
    uint32_t batch = 0;  // the unanswered batch this request went out in (0: none)
  };

  // The server has answered `s` (or it is finished): one request fewer awaited in its batch.
  void Answered(Slot& s) {
    if (s.batch == 0) return;
    if (--batch_left_[s.batch % batch_left_.size()] == 0) --batches_in_flight_;
    s.batch = 0;
  }

  void AppendRequest(uint16_t tag) {
    Slot& s = slots_[tag];
    s.batch = next_batch_;
    ++batch_requests_;
    // The header bytes stay untouched until the tag's completion, so gRPC may reference them.
    batch_.AddHeader(s.header, s.header_len);
    if (s.req.op != UBLK_IO_OP_WRITE || s.req.length == 0) return;
    // The memory the kernel copied this write into: what must go on the wire, uncopied.
    if (s.pool_slot >= 0) {
      batch_.AddPoolPayload(&pool_, s.pool_slot, s.req.length);
      stats_->payload_from_pool.fetch_add(1, std::memory_order_relaxed);
    } else {
      // The tag's own buffer: the kernel wrote the data there, and it is not reused before the
      // completion arrives (which implies the server has the bytes).
      batch_.AddStaticPayload(s.req.buf, s.req.length);
      stats_->payload_from_tag_buffer.fetch_add(1, std::memory_order_relaxed);
    }
  }

  void SendBatch() {
    if (batch_.empty()) return;
    batch_left_[next_batch_ % batch_left_.size()] = batch_requests_;
    ++batches_in_flight_;
    batch_requests_ = 0;
    if (++next_batch_ == 0) next_batch_ = 1;
    uint64_t checked = 0, copied = 0;
    grpc::ByteBuffer batch = batch_.Take(target_->verify_zero_copy_, &checked, &copied);
    if (checked) stats_->payload_checked.fetch_add(checked, std::memory_order_relaxed);
    if (copied) stats_->payload_bytes_copied.fetch_add(copied, std::memory_order_relaxed);
    link_->Send(std::move(batch));
  }

  void Finish(uint16_t tag, int result) {
    Slot& s = slots_[tag];
    Answered(s);
    if (s.pool_slot >= 0) {
      pool_.Unref(s.pool_slot);  // the request's reference
      s.pool_slot = -1;
    }
    s.active = false;
    ctx_->Complete(tag, result);
  }

  void Connect() {
    if (generation_ > 0) stats_->reconnects.fetch_add(1, std::memory_order_relaxed);
    generation_ = link_->Connect(this);
    up_ = true;
    // Batches of the old stream will never be answered on the new one.
    batches_in_flight_ = 0;
    for (auto& s : slots_) s.batch = 0;
    pending_.clear();  // everything active goes out once on the new stream
    size_t n = 0;
    for (uint16_t tag = 0; tag < depth_; ++tag) {
      if (slots_[tag].active) {
        pending_.push_back(tag);
        ++n;
      }
    }
    if (generation_ > 1) stats_->resends.fetch_add(n, std::memory_order_relaxed);
  }

  void FailExpired() {
    const auto limit = std::chrono::milliseconds(target_->config_.retry_deadline_ms);
    const auto now = Clock::now();
    for (uint16_t tag = 0; tag < depth_; ++tag) {
      Slot& s = slots_[tag];
      if (!s.active || now - s.since < limit) continue;
      stats_->deadline_failures.fetch_add(1, std::memory_order_relaxed);
      spdlog::error("volume {} offset {}: backend {} unreachable for {} ms, failing the request",
                    target_->volume_id_, s.req.offset, target_->config_.server, target_->config_.retry_deadline_ms);
      Finish(tag, -EIO);
    }
  }

  void ArmTimer(int ms) {
    if (timer_armed_) return;
    timer_.tv_sec = ms / 1000;
    timer_.tv_nsec = (ms % 1000) * 1000000LL;
    io_uring_sqe* sqe = ctx_->GetSqe();
    io_uring_prep_timeout(sqe, &timer_, 0, 0);
    sqe->user_data = TargetUserData(0, kSubTimer);
    timer_armed_ = true;
  }

  QueueContext* const ctx_;
  RemoteTarget* const target_;
  std::shared_ptr<RemoteStats> stats_;
  const uint16_t depth_;
  std::vector<Slot> slots_;
  std::vector<uint16_t> pending_;
  std::vector<uint16_t> retry_;
  static constexpr uint32_t kMaxBatchesInFlight = 2;
  static constexpr uint32_t kSmallRequestBytes = 64u << 10;
  static constexpr uint64_t kLargeBatchBytes = 1u << 20;
  // Requests still awaited per unanswered batch, by batch number modulo depth + 1 (each batch
  // holds at least one request, so at most depth are unanswered).
  std::vector<uint16_t> batch_left_;
  uint32_t next_batch_ = 1;
  uint16_t batch_requests_ = 0;
  uint32_t batches_in_flight_ = 0;
  WritePool pool_;
  BatchBuilder batch_;
  StreamEvents events_;  // before link_: its streams report here until they are finished
  std::unique_ptr<StreamLink> link_;
  uint32_t generation_ = 0;
  bool up_ = false;
  bool in_outage_ = false;
  bool timer_armed_ = false;
  __kernel_timespec timer_{};
};

// ---- RemoteConnections ----

namespace {

// Each queue's own connection; queue 0's is also the control channel (OpenVolume, lookups).
class RemoteConnections final : public TargetConnections {
 public:
  explicit RemoteConnections(const DeviceConfig& config)
      : control(backend::MakeChannel(config.server, /*own_connection=*/true)) {
    control->GetState(/*try_to_connect=*/true);
    // Each queue streams on a connection of its own; queue 0 takes over the control one once the
    // volume is open (one connection fewer to set up while a recovering device is quiesced). The
    // others are made and connect while the volume is opened, on a thread of their own: making a
    // channel costs 10-20 ms of CPU under TCG while the control connection's handshake mostly waits.
    queues_.push_back(control);
    queue_maker_ = std::thread([this, server = config.server, n = config.nr_queues] {
      for (int q = 1; q < n; ++q) {
        queues_.push_back(backend::MakeChannel(server, /*own_connection=*/true));
        queues_.back()->GetState(/*try_to_connect=*/true);
      }
    });
  }
  ~RemoteConnections() override {
    if (queue_maker_.joinable()) queue_maker_.join();
  }
  // Every queue's channel (waits until they are made).
  std::vector<std::shared_ptr<grpc::Channel>>& queues() {
    if (queue_maker_.joinable()) queue_maker_.join();
    return queues_;
  }
  void KeepWarm() override {
    for (auto& q : queues()) q->GetState(/*try_to_connect=*/true);  // control is queue 0's
  }

  std::shared_ptr<grpc::Channel> control;

 private:
  std::thread queue_maker_;
  std::vector<std::shared_ptr<grpc::Channel>> queues_;
};

}  // namespace

Status ConnectRemoteTarget(const DeviceConfig& config, std::unique_ptr<TargetConnections>* out) {
  auto c = std::make_unique<RemoteConnections>(config);
  const auto deadline = std::chrono::system_clock::now() + std::chrono::seconds(5);
  v1::VolumeRef ref;
  ref.set_name(config.volume);
  // One call on each: the first RPC on a channel pays for its lazy set-up, which is exactly what a
  // standby is for.
  Status s;
  for (const auto& ch : c->queues()) {  // the control channel is queue 0's
    if (!ch->WaitForConnected(deadline)) {
      s = Status::Unavailable("unbd-server at " + config.server + " is unreachable");
      break;
    }
    v1::Volume vol;
    s = backend::AdminClient(ch).Stat(ref, &vol);
    if (!s.ok()) break;
  }
  // The channels stay either way: KeepWarm connects them once the server is back.
  *out = std::move(c);
  return s;
}

// ---- RemoteTarget ----

Status RemoteTarget::Open(const DeviceConfig& config, std::unique_ptr<RemoteTarget>* out, const TargetHint& hint,
                          std::unique_ptr<TargetConnections> warm) {
  std::unique_ptr<RemoteTarget> t(new RemoteTarget());
  t->config_ = config;
  // Tests and benchmarks ask the daemon to prove the zero-copy write path on every batch.
  t->verify_zero_copy_ = std::getenv("UNBD_VERIFY_ZERO_COPY") != nullptr;
  const auto t0 = Clock::now();
  std::unique_ptr<RemoteConnections> conns;
  if (auto* made = dynamic_cast<RemoteConnections*>(warm.get())) {
    warm.release();
    conns.reset(made);
  } else {
    conns = std::make_unique<RemoteConnections>(config);
  }
  auto channel = conns->control;
  if (!channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(5)))
    return Status::Unavailable("unbd-server at " + config.server + " is unreachable");
  const auto t_connected = Clock::now();
  backend::AdminClient admin(channel);
  backend::IoClient io(channel);
  char host[256] = "";
  gethostname(host, sizeof(host) - 1);
  const std::string client_id = std::string(host) + "/unbd-pid-" + std::to_string(getpid());
  v1::OpenVolumeResponse opened;
  Status s = Status::FailedPrecondition("not opened yet");
  int lookups = 0;
  // A recovering daemon knows the volume and the epoch its predecessor held: one round trip.
  // Refused (someone opened the volume since, or it is another volume now): look it up.
  if (hint.volume_id != 0) {
    s = io.Open(hint.volume_id, hint.epoch + 1, client_id, &opened);
    if (s.ok() && opened.name() != config.volume) s = Status::FailedPrecondition("volume id reused");
  }
  for (int attempt = 0; !s.ok() && attempt < 10; ++attempt) {
    ++lookups;
    v1::VolumeRef ref;
    ref.set_name(config.volume);
    v1::Volume vol;
    s = admin.Stat(ref, &vol);
    if (!s.ok()) {
      if (s.code() == Status::Code::kNotFound)
        return Status::NotFound("volume '" + config.volume + "' does not exist on " + config.server);
      return Status(s.code() == Status::Code::kUnavailable ? Status::Unavailable("unbd-server at " + config.server + ": " + s.message())
                                                           : s);
    }
    // A new epoch above anything the volume has seen fences every earlier writer (invariant 2).
    s = io.Open(vol.id(), vol.epoch() + 1, client_id, &opened);
    if (!s.ok() && s.code() != Status::Code::kFailedPrecondition) return s;  // else lost a race: stat again
  }
  if (!s.ok()) return s;
  t->queue_channels_ = std::move(conns->queues());
  const auto t_opened = Clock::now();
  t->volume_id_ = opened.volume_id();
  t->epoch_ = opened.epoch();
  t->client_id_ = client_id;
  t->server_generation_ = opened.server_generation();
  t->size_ = opened.size_bytes();
  const auto& lim = opened.limits();
  t->max_io_bytes_ = std::min<uint32_t>(config.max_io_bytes, lim.max_io_bytes() ? lim.max_io_bytes() : config.max_io_bytes);
  t->max_batch_requests_ = lim.max_batch_requests() ? lim.max_batch_requests() : 64;
  t->max_batch_bytes_ = lim.max_batch_bytes() ? lim.max_batch_bytes() : (8u << 20);
  t->max_discard_bytes_ = lim.max_discard_bytes() ? lim.max_discard_bytes() : (64u << 20);
  if (opened.block_size() != 4096 && opened.block_size() != 0)
    return Status::FailedPrecondition("volume '" + config.volume + "' has block size " + std::to_string(opened.block_size()));
  using ms = std::chrono::duration<double, std::milli>;
  spdlog::info("remote target: volume '{}' (id {}) on {}: {} bytes, epoch {} (connected in {:.1f} ms, opened in {:.1f} ms, "
               "{} lookups)",
               config.volume, t->volume_id_, config.server, t->size_, t->epoch_, ms(t_connected - t0).count(),
               ms(t_opened - t_connected).count(), lookups);
  *out = std::move(t);
  return Status::Ok();
}

RemoteTarget::~RemoteTarget() = default;

Status RemoteTarget::RenewGeneration(uint64_t seen) {
  std::lock_guard<std::mutex> l(renew_mu_);
  if (server_generation_.load() != seen) return Status::Ok();  // another queue renewed it already
  backend::IoClient io(backend::MakeChannel(config_.server));
  v1::OpenVolumeResponse opened;
  // Same epoch and client id: a re-open, which fences nobody and is refused if someone else
  // opened the volume since.
  Status s = io.Open(volume_id_, epoch_, client_id_, &opened);
  if (s.code() == Status::Code::kUnavailable || s.code() == Status::Code::kDeadlineExceeded) return s;
  if (!s.ok()) {
    spdlog::error("volume {}: unbd-server {} restarted after a crash and the volume cannot be opened "
                  "again: {}", volume_id_, config_.server, s.ToString());
    return s;
  }
  server_generation_ = opened.server_generation();
  unreported_loss_ = true;
  spdlog::error("volume {}: unbd-server {} restarted after a crash (server generation {} -> {}): "
                "writes it acknowledged but had not flushed may be lost; the next FLUSH fails with EIO",
                volume_id_, config_.server, seen, opened.server_generation());
  return Status::Ok();
}

std::shared_ptr<grpc::Channel> RemoteTarget::TakeQueueChannel(int q) {
  std::lock_guard<std::mutex> l(channels_mu_);
  if (q >= 0 && static_cast<size_t>(q) < queue_channels_.size() && queue_channels_[q])
    return std::move(queue_channels_[q]);
  return backend::MakeChannel(config_.server, /*own_connection=*/true);
}

void RemoteTarget::AdjustParams(ublk_params* p) const {
  p->basic.logical_bs_shift = 12;
  p->basic.physical_bs_shift = 12;
  p->basic.io_min_shift = 12;
  p->basic.max_sectors = std::min<uint32_t>(p->basic.max_sectors, max_io_bytes_ >> 9);
  uint64_t discard = std::min<uint64_t>(max_discard_bytes_, 1ull << 30);
  p->discard.discard_granularity = 4096;
  p->discard.max_discard_sectors = static_cast<uint32_t>(discard >> 9);
  p->discard.max_write_zeroes_sectors = static_cast<uint32_t>(discard >> 9);
}

Status RemoteTarget::CreateQueueHandler(QueueContext* ctx, std::unique_ptr<QueueHandler>* out) {
  auto stats = std::make_shared<RemoteStats>();
  {
    std::lock_guard<std::mutex> l(stats_mu_);
    stats_.push_back(stats);
  }
  auto h = std::make_unique<RemoteHandler>(ctx, this, stats);
  Status s = h->Init();
  if (!s.ok()) return s;
  *out = std::move(h);
  return Status::Ok();
}

std::string RemoteTarget::Describe() const {
  return "remote server=" + config_.server + " volume=" + config_.volume + " id=" + std::to_string(volume_id_) +
         " epoch=" + std::to_string(epoch_);
}

void RemoteTarget::CollectStats(RemoteStats* out) const {
  std::lock_guard<std::mutex> l(stats_mu_);
  for (auto& s : stats_) {
    out->writes += s->writes.load();
    out->payload_from_pool += s->payload_from_pool.load();
    out->payload_from_tag_buffer += s->payload_from_tag_buffer.load();
    out->payload_bytes_copied += s->payload_bytes_copied.load();
    out->payload_checked += s->payload_checked.load();
    out->resends += s->resends.load();
    out->reconnects += s->reconnects.load();
    out->deadline_failures += s->deadline_failures.load();
  }
}

Status CreateRemoteTarget(const DeviceConfig& config, std::unique_ptr<Target>* out, const TargetHint& hint,
                          std::unique_ptr<TargetConnections> warm) {
  std::unique_ptr<RemoteTarget> t;
  Status s = RemoteTarget::Open(config, &t, hint, std::move(warm));
  if (!s.ok()) return s;
  *out = std::move(t);
  return Status::Ok();
}

}  // namespace unbd::frontend
