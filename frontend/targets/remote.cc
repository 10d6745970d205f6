#include "frontend/targets/remote.h"

#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <thread>

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/wire_format_lite.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/support/proto_buffer_reader.h>
#include <spdlog/spdlog.h>

#include "backend/admin_client.h"
#include "backend/io_frame.h"
#include "frontend/write_pool.h"

namespace unbd::frontend {

using Clock = std::chrono::steady_clock;
using google::protobuf::internal::WireFormatLite;

namespace {

constexpr const char* kStreamMethod = "/unbd.v1.BlockIo/Stream";
// CompleteAsync "tag" meaning: the stream of generation `result` has ended.
constexpr uint16_t kStreamEnded = 0xffff;
constexpr uint8_t kSubTimer = 1;
constexpr int kRetryTickMs = 50;

constexpr uint32_t Key(int field, WireFormatLite::WireType t) {
  return static_cast<uint32_t>(field << 3) | static_cast<uint32_t>(t);
}

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

bool Retryable(int code) {
  auto c = static_cast<grpc::StatusCode>(code);
  return c == grpc::StatusCode::UNAVAILABLE || c == grpc::StatusCode::CANCELLED ||
         c == grpc::StatusCode::DEADLINE_EXCEEDED || c == grpc::StatusCode::ABORTED;
}

}  // namespace

class RemoteHandler;

// One BlockIo.Stream call. Writes are queued here (a lock private to this queue) because the
// callback API allows one outstanding write at a time. Destroyed only well after OnDone.
class IoStream final : public grpc::ClientBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  IoStream(RemoteHandler* handler, grpc::GenericStub* stub, uint32_t generation);
  void Start();
  void Send(grpc::ByteBuffer batch);
  void Cancel() { ctx_.TryCancel(); }
  void WaitDone() {
    std::unique_lock<std::mutex> l(mu_);
    cv_.wait(l, [this] { return done_; });
  }
  bool done() {
    std::lock_guard<std::mutex> l(mu_);
    return done_;
  }
  Clock::time_point done_at() {
    std::lock_guard<std::mutex> l(mu_);
    return done_at_;
  }

  void OnWriteDone(bool ok) override;
  void OnReadDone(bool ok) override;
  void OnDone(const grpc::Status& s) override;

 private:
  // The queue thread may call Send at any time, but gRPC frees the call right after its last
  // operation ends; a StartWrite after that touches freed memory. So the call is held open until
  // no write can start any more (failed_) and none is in flight. Call with mu_ held; returns true
  // when the caller must RemoveHold() (after unlocking).
  bool ShouldReleaseHold() {
    if (!failed_ || writing_ || hold_released_) return false;
    hold_released_ = true;
    return true;
  }
  void ReadSideEnded();

  RemoteHandler* const handler_;
  const uint32_t generation_;
  grpc::ClientContext ctx_;
  grpc::ByteBuffer incoming_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<grpc::ByteBuffer> writes_;
  bool writing_ = false;
  bool failed_ = false;  // no more writes: the call is over or broken
  bool hold_released_ = false;
  bool done_ = false;
  Clock::time_point done_at_;
};

class RemoteHandler final : public QueueHandler {
 public:
  RemoteHandler(QueueContext* ctx, RemoteTarget* target, std::shared_ptr<RemoteStats> stats)
      : ctx_(ctx), target_(target), stats_(std::move(stats)), depth_(ctx->depth()), slots_(depth_),
        write_slot_(depth_, -1), read_dest_(new std::atomic<uint8_t*>[depth_]),
        read_len_(new std::atomic<uint32_t>[depth_]), read_wire_tag_(new std::atomic<uint32_t>[depth_]) {
    for (size_t i = 0; i < depth_; ++i) {
      read_dest_[i].store(nullptr, std::memory_order_relaxed);
      read_len_[i].store(0, std::memory_order_relaxed);
      read_wire_tag_[i].store(0, std::memory_order_relaxed);
    }
    pending_.reserve(depth_);
    slices_.reserve(2 * depth_);
    payload_of_.reserve(2 * depth_);
  }

  ~RemoteHandler() override {
    // Destroying the last channel makes gRPC shut down and join its callback completion queue's
    // threads, which can block forever while a cancelled connection attempt is still backing off.
    // A daemon only drops its handlers on the way out, so keep the channel for the process's life.
    static auto* kept = new std::vector<std::shared_ptr<grpc::Channel>>();
    static std::mutex kept_mu;
    std::lock_guard<std::mutex> l(kept_mu);
    kept->push_back(std::move(channel_));
  }

  Status Init() {
    // As many slots as tags; a slot gRPC still holds after its request completed makes a later
    // write fall back to its tag's own buffer (still no copy).
    Status s = pool_.Init(depth_, target_->max_io_bytes_);
    if (!s.ok()) return s;
    channel_ = backend::MakeChannel(target_->config_.server, /*own_connection=*/true);
    stub_ = std::make_unique<grpc::GenericStub>(channel_);
    Connect();
    return Status::Ok();
  }

  uint8_t* WriteBuffer(uint16_t tag, uint32_t length) override {
    if (length > pool_.slot_bytes()) return nullptr;
    int slot = pool_.Acquire();
    write_slot_[tag] = slot;
    return slot < 0 ? nullptr : pool_.data(slot);
  }

  void Submit(const IoRequest& req) override {
    Slot& s = slots_[req.tag];
    s.req = req;
    s.pool_slot = -1;
    if (req.op == UBLK_IO_OP_WRITE) {
      s.pool_slot = write_slot_[req.tag];
      write_slot_[req.tag] = -1;
    }
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
    switch (req.op) {
      case UBLK_IO_OP_READ:
        h.op = v1::OP_READ;
        read_dest_[req.tag].store(req.buf, std::memory_order_relaxed);
        read_wire_tag_[req.tag].store(wire_tag, std::memory_order_relaxed);
        read_len_[req.tag].store(req.length, std::memory_order_release);
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
    uint32_t count = 0;
    uint64_t bytes = 0;
    for (uint16_t tag : pending_) {
      const Slot& s = slots_[tag];
      if (!s.active) continue;
      uint32_t data = (s.req.op == UBLK_IO_OP_READ || s.req.op == UBLK_IO_OP_WRITE) ? s.req.length : 0;
      if (count > 0 && (count >= target_->max_batch_requests_ || bytes + data > target_->max_batch_bytes_)) {
        SendBatch();
        count = 0;
        bytes = 0;
      }
      AppendRequest(tag);
      ++count;
      bytes += data;
    }
    SendBatch();
    pending_.clear();
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
    const Slot& s = slots_[tag];
    if (result == 0) {
      if (in_outage_) spdlog::info("queue {}: backend {} answers again", ctx_->queue_id(), target_->config_.server);
      in_outage_ = false;
      bool data = s.req.op == UBLK_IO_OP_READ || s.req.op == UBLK_IO_OP_WRITE;
      Finish(tag, data ? static_cast<int>(s.req.length) : 0);
      return;
    }
    if (Retryable(result)) {
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
    for (auto& st : streams_) st->Cancel();
    for (auto& st : streams_) st->WaitDone();
    // gRPC drops its slice references when the calls are torn down; the pool must outlive them.
    auto until = Clock::now() + std::chrono::seconds(2);
    while (pool_.outstanding() > 0 && Clock::now() < until) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    streams_.clear();
    spdlog::info("queue {}: {} writes, payload from pool {} / tag buffers {}, {} payloads checked, {} bytes copied, "
                 "{} resends, {} reconnects",
                 ctx_->queue_id(), stats_->writes.load(), stats_->payload_from_pool.load(),
                 stats_->payload_from_tag_buffer.load(), stats_->payload_checked.load(),
                 stats_->payload_bytes_copied.load(), stats_->resends.load(), stats_->reconnects.load());
  }

  // ---- called on gRPC threads ----
  // Where READ data for `tag` goes, or nullptr if `size` is not what the request asked for.
  uint8_t* ReadDest(uint32_t wire_tag, uint32_t size) {
    const uint32_t tag = wire_tag & 0xffff;
    if (tag >= depth_) return nullptr;
    uint32_t len = read_len_[tag].load(std::memory_order_acquire);
    if (size != len || read_wire_tag_[tag].load(std::memory_order_relaxed) != wire_tag) return nullptr;
    return read_dest_[tag].load(std::memory_order_relaxed);
  }
  void StreamCompletion(uint32_t wire_tag, int code) {
    // result = sequence number << 8 | gRPC code (codes are < 256).
    ctx_->CompleteAsync(static_cast<uint16_t>(wire_tag & 0xffff),
                        static_cast<int>(((wire_tag >> 16) << 8) | (static_cast<uint32_t>(code) & 0xff)));
  }
  void StreamEnded(uint32_t generation, const grpc::Status& s) {
    if (!s.ok() && s.error_code() != grpc::StatusCode::CANCELLED)
      spdlog::debug("queue {}: stream to {} ended: {} ({})", ctx_->queue_id(), target_->config_.server,
                   s.error_message(), static_cast<int>(s.error_code()));
    ctx_->CompleteAsync(kStreamEnded, static_cast<int>(generation));
  }

 private:
  struct Slot {
    IoRequest req{};
    int pool_slot = -1;
    uint16_t seq = 0;
    bool active = false;
    Clock::time_point since;
    uint8_t header_len = 0;
    char header[backend::kMaxIoRequestHeaderBytes];
  };

  void AppendRequest(uint16_t tag) {
    Slot& s = slots_[tag];
    // The header bytes stay untouched until the tag's completion, so gRPC may reference them.
    slices_.emplace_back(s.header, s.header_len, grpc::Slice::STATIC_SLICE);
    payload_of_.push_back(nullptr);
    if (s.req.op != UBLK_IO_OP_WRITE || s.req.length == 0) return;
    // The memory the kernel copied this write into: what must go on the wire, uncopied.
    payload_of_.push_back(s.req.buf);
    if (s.pool_slot >= 0) {
      pool_.Ref(s.pool_slot);  // gRPC's reference, dropped by the slice's release callback
      slices_.emplace_back(pool_.data(s.pool_slot), s.req.length, &WritePool::ReleaseCookie, pool_.Cookie(s.pool_slot));
      stats_->payload_from_pool.fetch_add(1, std::memory_order_relaxed);
    } else {
      // The tag's own buffer: the kernel wrote the data there, and it is not reused before the
      // completion arrives (which implies the server has the bytes).
      slices_.emplace_back(s.req.buf, s.req.length, grpc::Slice::STATIC_SLICE);
      stats_->payload_from_tag_buffer.fetch_add(1, std::memory_order_relaxed);
    }
  }

  void SendBatch() {
    if (slices_.empty()) return;
    grpc::ByteBuffer batch(slices_.data(), slices_.size());
    if (target_->verify_zero_copy_) VerifyZeroCopy(batch);
    slices_.clear();
    payload_of_.clear();
    streams_.back()->Send(std::move(batch));
  }

  // Proof for tests and benchmarks: the byte buffer gRPC will send holds, for every write, a slice
  // that starts at the very memory the kernel copied the write into (the pool slot or tag buffer).
  void VerifyZeroCopy(grpc::ByteBuffer& batch) {
    std::vector<grpc::Slice> dumped;
    bool same_shape = batch.Dump(&dumped).ok() && dumped.size() == payload_of_.size();
    for (size_t i = 0; i < payload_of_.size(); ++i) {
      if (!payload_of_[i]) continue;  // a header
      stats_->payload_checked.fetch_add(1, std::memory_order_relaxed);
      if (!same_shape || dumped[i].begin() != payload_of_[i])
        stats_->payload_bytes_copied.fetch_add(slices_[i].size(), std::memory_order_relaxed);
    }
  }

  void Finish(uint16_t tag, int result) {
    Slot& s = slots_[tag];
    if (s.pool_slot >= 0) {
      pool_.Unref(s.pool_slot);  // the request's reference
      s.pool_slot = -1;
    }
    s.active = false;
    if (s.req.op == UBLK_IO_OP_READ) read_len_[tag].store(0, std::memory_order_relaxed);
    ctx_->Complete(tag, result);
  }

  void Connect() {
    // Old streams are deleted only long after their OnDone returned.
    auto now = Clock::now();
    for (auto it = streams_.begin(); it != streams_.end();) {
      if ((*it)->done() && now - (*it)->done_at() > std::chrono::seconds(1)) it = streams_.erase(it);
      else ++it;
    }
    if (generation_ > 0) stats_->reconnects.fetch_add(1, std::memory_order_relaxed);
    ++generation_;
    streams_.push_back(std::make_unique<IoStream>(this, stub_.get(), generation_));
    streams_.back()->Start();
    up_ = true;
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
  std::vector<int> write_slot_;  // NEED_GET_DATA slot chosen for a tag's pending write
  std::unique_ptr<std::atomic<uint8_t*>[]> read_dest_;
  std::unique_ptr<std::atomic<uint32_t>[]> read_len_;
  std::unique_ptr<std::atomic<uint32_t>[]> read_wire_tag_;
  std::vector<uint16_t> pending_;
  std::vector<uint16_t> retry_;
  std::vector<grpc::Slice> slices_;
  std::vector<const uint8_t*> payload_of_;  // per slice: the write buffer it must be, or nullptr
  WritePool pool_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<grpc::GenericStub> stub_;
  std::vector<std::unique_ptr<IoStream>> streams_;
  uint32_t generation_ = 0;
  bool up_ = false;
  bool in_outage_ = false;
  bool timer_armed_ = false;
  __kernel_timespec timer_{};
};

// ---- IoStream ----

IoStream::IoStream(RemoteHandler* handler, grpc::GenericStub* stub, uint32_t generation)
    : handler_(handler), generation_(generation) {
  static const std::string method(kStreamMethod);  // outlives every call that names it
  stub->PrepareBidiStreamingCall(&ctx_, method, grpc::StubOptions(), this);
}

void IoStream::Start() {
  AddHold();
  StartRead(&incoming_);
  StartCall();
}

void IoStream::Send(grpc::ByteBuffer batch) {
  std::lock_guard<std::mutex> l(mu_);
  if (failed_ || done_) return;  // the queue re-sends everything unfinished on reconnect
  writes_.push_back(std::move(batch));
  if (!writing_) {
    writing_ = true;
    StartWrite(&writes_.front());
  }
}

void IoStream::OnWriteDone(bool ok) {
  bool release;
  {
    std::lock_guard<std::mutex> l(mu_);
    writes_.pop_front();
    if (!ok) {
      failed_ = true;
      writing_ = false;
      writes_.clear();
    } else if (writes_.empty()) {
      writing_ = false;
    } else {
      StartWrite(&writes_.front());
    }
    release = ShouldReleaseHold();
  }
  if (release) RemoveHold();
}

void IoStream::ReadSideEnded() {
  bool release;
  {
    std::lock_guard<std::mutex> l(mu_);
    failed_ = true;
    release = ShouldReleaseHold();
  }
  if (release) RemoveHold();
}

void IoStream::OnReadDone(bool ok) {
  if (!ok) {
    ReadSideEnded();  // the stream is over; OnDone follows once the hold is released
    return;
  }
  grpc::ProtoBufferReader reader(&incoming_);
  google::protobuf::io::CodedInputStream in(&reader);
  bool malformed = false;
  while (uint32_t key = in.ReadTag()) {
    if (key != Key(1, WireFormatLite::WIRETYPE_LENGTH_DELIMITED)) {
      if (!WireFormatLite::SkipField(&in, key)) {
        malformed = true;
        break;
      }
      continue;
    }
    uint32_t len;
    if (!in.ReadVarint32(&len)) {
      malformed = true;
      break;
    }
    auto limit = in.PushLimit(static_cast<int>(len));
    uint32_t tag = 0, code = 0;
    std::string message;
    bool ok_parse = true;
    while (uint32_t k = in.ReadTag()) {
      if (k == Key(1, WireFormatLite::WIRETYPE_VARINT)) {
        ok_parse = in.ReadVarint32(&tag);
      } else if (k == Key(2, WireFormatLite::WIRETYPE_VARINT)) {
        ok_parse = in.ReadVarint32(&code);
      } else if (k == Key(3, WireFormatLite::WIRETYPE_LENGTH_DELIMITED)) {
        uint32_t n;
        ok_parse = in.ReadVarint32(&n) && in.ReadString(&message, static_cast<int>(n));
      } else if (k == Key(15, WireFormatLite::WIRETYPE_LENGTH_DELIMITED)) {
        uint32_t n;
        ok_parse = in.ReadVarint32(&n);
        if (ok_parse) {
          // READ data goes straight from gRPC's buffers into the request's buffer.
          uint8_t* dest = handler_->ReadDest(tag, n);
          ok_parse = dest ? in.ReadRaw(dest, static_cast<int>(n)) : in.Skip(static_cast<int>(n));
          if (ok_parse && !dest && code == 0) code = static_cast<uint32_t>(grpc::StatusCode::INTERNAL);
        }
      } else {
        ok_parse = WireFormatLite::SkipField(&in, k);
      }
      if (!ok_parse) break;
    }
    in.PopLimit(limit);
    if (!ok_parse) {
      malformed = true;
      break;
    }
    if (code != 0) {
      // The queue thread logs the failed request; only this thread has the backend's reason.
      if (Retryable(static_cast<int>(code))) spdlog::debug("tag {:#x}: backend answered {}: {}", tag, code, message);
      else spdlog::error("tag {:#x}: backend answered {}: {}", tag, code, message.empty() ? "(no message)" : message);
    }
    handler_->StreamCompletion(tag, static_cast<int>(code));
  }
  incoming_.Clear();
  if (malformed) {
    spdlog::error("malformed CompletionBatch from the backend; dropping the stream");
    Cancel();
    ReadSideEnded();
    return;
  }
  StartRead(&incoming_);
}

void IoStream::OnDone(const grpc::Status& s) {
  handler_->StreamEnded(generation_, s);
  std::lock_guard<std::mutex> l(mu_);
  done_ = true;
  done_at_ = Clock::now();
  cv_.notify_all();
}

// ---- RemoteTarget ----

Status RemoteTarget::Open(const DeviceConfig& config, std::unique_ptr<RemoteTarget>* out, const TargetHint& hint) {
  std::unique_ptr<RemoteTarget> t(new RemoteTarget());
  t->config_ = config;
  // Tests and benchmarks ask the daemon to prove the zero-copy write path on every batch.
  t->verify_zero_copy_ = std::getenv("UNBD_VERIFY_ZERO_COPY") != nullptr;
  const auto t0 = Clock::now();
  auto channel = backend::MakeChannel(config.server);
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
  const auto t_opened = Clock::now();
  t->volume_id_ = opened.volume_id();
  t->epoch_ = opened.epoch();
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

Status CreateRemoteTarget(const DeviceConfig& config, std::unique_ptr<Target>* out, const TargetHint& hint) {
  std::unique_ptr<RemoteTarget> t;
  Status s = RemoteTarget::Open(config, &t, hint);
  if (!s.ok()) return s;
  *out = std::move(t);
  return Status::Ok();
}

}  // namespace unbd::frontend
