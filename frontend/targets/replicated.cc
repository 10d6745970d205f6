#include "frontend/targets/replicated.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <functional>
#include <random>
#include <thread>

#include "backend/admin_client.h"
#include "backend/io_frame.h"
#include "frontend/block_stream.h"
#include "frontend/write_pool.h"
#include "replication/read_chooser.h"
#include "replication/replica_meta.h"
#include "replication/replica_rpc.h"

namespace unbd::frontend {

namespace {

using Clock = std::chrono::steady_clock;
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

// Per queue: one BlockIo.Stream per replica (StreamLink, shared with the plain remote target) and
// a fixed slot per tag (allocated once). The queue thread starts each write or flush with the
// library's BeginFanOut (which replicas, out_mask, sequence number, region lock), encodes one
// header per targeted replica and sends the payload as zero-copy slices on every targeted stream.
// Each replica's answer is claimed once per request (sequence number << 16 | replicas still
// awaited); the last one completes it. Answers, timeouts and broken streams all arrive on the
// queue thread (its StreamEvents and ring), so a slot needs no atomics. All OK: EndFanOut and
// complete.
// Any failure, timeout or broken stream: a slow-path thread runs the library's ResolveFanOut
// (fencing, mark-out committed on a majority before the ack, quorum wait, unary retries), then
// EndFanOut, and hands the result back. Reads go to one healthy replica — the one this queue saw
// answer fastest (ReadChooser) — and to the next one on error.
class ReplicatedHandler final : public QueueHandler {
 public:
  ReplicatedHandler(ReplicatedTarget* target, QueueContext* ctx)
      : target_(target), vol_(target->volume()), ctx_(ctx), depth_(ctx->depth()),
        n_(vol_->replica_count()), slots_(new Slot[depth_]), batch_(4 * depth_) {
    for (size_t p = 0; p < n_; ++p) {
      sinks_[p].h = this;
      sinks_[p].replica = static_cast<uint8_t>(p);
      pending_[p].reserve(depth_);
    }
    busy_.reserve(depth_);
  }
  ~ReplicatedHandler() override { Stop(); }

  Status Init() {
    Status s = pool_.Init(depth_, kMaxIoBytes);
    if (!s.ok()) return s;
    for (size_t p = 0; p < n_; ++p) {
      links_[p] = std::make_unique<StreamLink>(
          backend::MakeChannel(vol_->replica_target(p), /*own_connection=*/true), &events_);
    }
    return Status::Ok();
  }

  uint8_t* WriteBuffer(uint16_t tag, uint32_t length) override { return pool_.ReservePending(tag, length); }

  void Submit(const IoRequest& req) override {
    Slot& s = slots_[req.tag];
    s.req = req;
    s.pool_slot = req.op == UBLK_IO_OP_WRITE ? pool_.TakePending(req.tag) : -1;
    switch (req.op) {
      case UBLK_IO_OP_READ:
        return StartRead(req.tag);
      case UBLK_IO_OP_WRITE:
      case UBLK_IO_OP_DISCARD:
      case UBLK_IO_OP_WRITE_ZEROES:
        if (req.length == 0) return Finish(req.tag, 0);
        [[fallthrough]];
      case UBLK_IO_OP_FLUSH:
        return StartFanOut(req.tag);
      default:
        return Finish(req.tag, -EOPNOTSUPP);
    }
  }

  void Flush() override {
    for (size_t p = 0; p < n_; ++p) {
      if (pending_[p].empty()) continue;
      if (!up_[p]) {
        gen_[p] = links_[p]->Connect(&sinks_[p]);
        up_[p] = true;
      }
      uint32_t count = 0;
      uint64_t bytes = 0;
      for (uint16_t tag : pending_[p]) {
        Slot& s = slots_[tag];
        // Failed already (its stream ended or timed out before it went out): not sent.
        if (s.state != State::kSent || (s.claim >> 16) != s.seq || !(s.claim & (1u << p))) continue;
        if (s.sent_seq[p] == s.seq) continue;  // queued twice (a tag reused within one round)
        s.sent_seq[p] = s.seq;
        const uint32_t data = s.req.op == UBLK_IO_OP_WRITE ? s.req.length : 0;
        if (count > 0 && (count >= kMaxBatchRequests || bytes + data > kMaxBatchBytes)) {
          SendBatch(p);
          count = 0;
          bytes = 0;
        }
        batch_.AddHeader(s.header[p], s.header_len[p]);
        if (data > 0) {
          if (s.pool_slot >= 0) batch_.AddPoolPayload(&pool_, s.pool_slot, data);
          else batch_.AddStaticPayload(s.req.buf, data);  // stays valid until the completion
        }
        ++count;
        bytes += data;
      }
      SendBatch(p);
      pending_[p].clear();
    }
  }

  void OnAsync(uint16_t tag, int result, QueueContext*) override {
    if (tag >= kStreamEndedBase && tag < kStreamEndedBase + replication::kMaxReplicas) {
      return OnStreamEnded(tag - kStreamEndedBase, static_cast<uint32_t>(result));
    }
    if (tag == kSlowDone) {
      const uint16_t t = static_cast<uint16_t>(result);
      slots_[t].state = State::kIdle;
      return Finish(t, slots_[t].slow_result);
    }
    if (tag >= depth_) return;
    Slot& s = slots_[tag];
    if (s.state != State::kSent || s.seq != static_cast<uint16_t>(result)) return;
    OnAllAnswered(tag);
  }

  HandlerEvents* events() override { return &events_; }
  bool AwaitsEvents() const override { return AnySent(); }

  void OnCqe(uint16_t, uint8_t sub, int) override {
    if (sub != kSubTimer) return;
    timer_armed_ = false;
    const auto now = Clock::now();
    const auto timeout = vol_->rpc_timeout();
    uint32_t wedged = 0;
    for (uint16_t tag = 0; tag < depth_; ++tag) {
      const Slot& s = slots_[tag];
      if (s.state != State::kSent || now - s.since < timeout) continue;
      wedged |= s.claim & 0xffff;
    }
    // A replica that does not answer within the timeout: its stream is dropped (a new one is made
    // for the next request sent to it) and everything awaiting it failed.
    for (size_t p = 0; p < n_; ++p) {
      if (!(wedged & (1u << p))) continue;
      spdlog::warn("volume '{}' queue {}: replica {} ({}) did not answer within {} ms", vol_->name(),
                   ctx_->queue_id(), p, vol_->replica_target(p), timeout.count());
      links_[p]->Cancel();
      up_[p] = false;
      FailAwaiting(p, grpc::StatusCode::DEADLINE_EXCEEDED);
    }
    // Requests a resync copy kept from their regions: try again.
    if (!busy_.empty()) {
      std::vector<uint16_t> again;
      again.swap(busy_);
      busy_.reserve(depth_);
      for (uint16_t tag : again) StartFanOut(tag);
    }
    if (!busy_.empty() || AnySent()) MaybeArmTimer();
  }

  void Stop() override {
    {
      // Slow-path threads finish first: each completes its request.
      std::unique_lock l(slow_mu_);
      slow_cv_.wait(l, [&] { return slow_running_ == 0; });
      if (stopped_) return;
      stopped_ = true;
    }
    for (size_t p = 0; p < n_; ++p) {
      if (links_[p]) links_[p]->Stop();
    }
    // gRPC drops its slice references when the calls are torn down; the pool must outlive them.
    const auto until = Clock::now() + std::chrono::seconds(2);
    while (pool_.outstanding() > 0 && Clock::now() < until)
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }

 private:
  enum class State : uint8_t { kIdle, kBusy, kSent, kSlow };
  static constexpr uint16_t kStreamEndedBase = 0xfff0;  // + replica; result = generation
  static constexpr uint16_t kSlowDone = 0xffe0;         // result = tag
  static constexpr uint8_t kSubTimer = 1;
  static constexpr uint32_t kMaxIoBytes = 1u << 20;
  static constexpr uint32_t kMaxBatchRequests = 64;
  static constexpr uint64_t kMaxBatchBytes = 4u << 20;
  // A FAILED_PRECONDITION answer that names a newer epoch (not "never opened": a replica failure).
  static constexpr uint8_t kFencedCode = 0xff;

  struct Slot {
    IoRequest req{};
    int pool_slot = -1;
    State state = State::kIdle;
    uint16_t seq = 0;
    Clock::time_point since;
    replication::FanOutTicket ticket;  // writes and flushes
    // Reads: the replicas to try, in order, and the next one.
    uint8_t read_order[replication::kMaxReplicas] = {};
    uint64_t read_vids[replication::kMaxReplicas] = {};
    uint64_t read_gens[replication::kMaxReplicas] = {};
    uint8_t read_n = 0, read_next = 0;
    uint8_t read_gone = 0;  // replicas that refused the read's server generation as gone
    uint8_t header_len[replication::kMaxReplicas] = {};
    uint16_t sent_seq[replication::kMaxReplicas] = {};  // the request last sent to each replica
    char header[replication::kMaxReplicas][backend::kMaxIoRequestHeaderBytes];
    // Set as answers are claimed. A slow-path thread reads code and their_epoch only after every
    // answer was claimed, and its start orders it after those writes.
    uint32_t claim = 0;   // seq << 16 | replicas still awaited
    uint32_t failed = 0;  // replicas that answered with an error
    uint8_t code[replication::kMaxReplicas] = {};
    uint64_t their_epoch[replication::kMaxReplicas] = {};
    // READ data destination, checked as the answer is parsed.
    uint32_t read_wire_tag = 0;
    uint32_t read_len = 0;
    int slow_result = 0;  // set by the slow path before kSlowDone
  };

  // One replica's stream events, tagged with the replica.
  struct Sink final : BlockStreamSink {
    ReplicatedHandler* h = nullptr;
    uint8_t replica = 0;
    uint8_t* ReadDest(uint32_t wire_tag, uint32_t size) override {
      const uint32_t tag = wire_tag & 0xffff;
      if (tag >= h->depth_) return nullptr;
      Slot& s = h->slots_[tag];
      if (s.read_len != size || s.read_wire_tag != wire_tag) return nullptr;
      return s.req.buf;
    }
    void StreamCompletion(uint32_t, uint32_t wire_tag, int code, const std::string& message,
                          uint64_t current_epoch) override {
      const uint16_t tag = static_cast<uint16_t>(wire_tag & 0xffff);
      const uint16_t seq = static_cast<uint16_t>(wire_tag >> 16);
      if (tag >= h->depth_) return;
      int c = code;
      if (code == static_cast<int>(grpc::StatusCode::FAILED_PRECONDITION) &&
          (current_epoch > h->vol_->epoch() ||
           message.find("is fenced by epoch") != std::string::npos)) {
        c = kFencedCode;
      }
      if (code != 0) {
        spdlog::warn("volume '{}': replica {} ({}) answered tag {:#x} with code {}: {}",
                     h->vol_->name(), replica, h->vol_->replica_target(replica), wire_tag, code,
                     message.empty() ? "(no message)" : message);
      }
      if (h->Answer(tag, seq, replica, c, current_epoch)) h->OnAsync(tag, seq, h->ctx_);
    }
    void StreamEnded(uint32_t generation, const grpc::Status& s) override {
      if (!s.ok() && s.error_code() != grpc::StatusCode::CANCELLED) {
        spdlog::warn("volume '{}' queue {}: stream to replica {} ({}) ended: {} ({})",
                     h->vol_->name(), h->ctx_->queue_id(), replica,
                     h->vol_->replica_target(replica), s.error_message(),
                     static_cast<int>(s.error_code()));
      }
      h->OnAsync(static_cast<uint16_t>(kStreamEndedBase + replica), static_cast<int>(generation), h->ctx_);
    }
  };

  // Claims replica p's answer to request (tag, seq) once; true when it was the last one awaited.
  bool Answer(uint16_t tag, uint16_t seq, size_t p, int code, uint64_t their_epoch) {
    Slot& s = slots_[tag];
    const uint32_t bit = 1u << p;
    if ((s.claim >> 16) != seq || !(s.claim & bit)) return false;  // stale, or answered already
    s.claim &= ~bit;
    if (code != 0) {
      s.code[p] = static_cast<uint8_t>(code);
      s.their_epoch[p] = their_epoch;
      s.failed |= bit;
    }
    return (s.claim & 0xffff) == 0;
  }

  // Arms the answers of a new request to the replicas in `mask` (before anything is sent).
  void Arm(Slot& s, uint32_t mask) {
    s.seq = static_cast<uint16_t>(s.seq + 1);
    s.failed = 0;
    s.claim = (static_cast<uint32_t>(s.seq) << 16) | mask;
    s.state = State::kSent;
    s.since = Clock::now();
  }

  void Encode(uint16_t tag, size_t p, v1::Opcode op, uint64_t volume_id, uint64_t generation,
              uint32_t out_mask) {
    Slot& s = slots_[tag];
    backend::IoRequestHeader h;
    h.tag = tag | (static_cast<uint32_t>(s.seq) << 16);
    h.op = op;
    h.fua = (s.req.flags & UBLK_IO_F_FUA) != 0;
    h.volume_id = volume_id;
    h.epoch = vol_->epoch();
    h.offset = op == v1::OP_FLUSH ? 0 : s.req.offset;
    h.length = op == v1::OP_FLUSH ? 0 : s.req.length;
    h.out_mask = out_mask;
    h.server_generation = generation;
    s.header_len[p] = static_cast<uint8_t>(backend::EncodeIoRequestHeader(h, s.header[p]));
    pending_[p].push_back(tag);
  }

  void StartFanOut(uint16_t tag) {
    Slot& s = slots_[tag];
    replication::FanOutOp op;
    v1::Opcode wire;
    switch (s.req.op) {
      case UBLK_IO_OP_WRITE: op = replication::FanOutOp::kWrite; wire = v1::OP_WRITE; break;
      case UBLK_IO_OP_DISCARD: op = replication::FanOutOp::kDiscard; wire = v1::OP_DISCARD; break;
      case UBLK_IO_OP_WRITE_ZEROES: op = replication::FanOutOp::kZero; wire = v1::OP_WRITE_ZEROES; break;
      default: op = replication::FanOutOp::kFlush; wire = v1::OP_FLUSH; break;
    }
    Status failed;
    const bool fua = (s.req.flags & UBLK_IO_F_FUA) != 0;
    switch (vol_->BeginFanOut(op, s.req.offset, s.req.length, fua, /*block=*/false, &s.ticket,
                              &failed, static_cast<size_t>(ctx_->queue_id()))) {
      case replication::FanOutStart::kBusy:
        // A resync copy holds one of its regions for a few ms; the queue thread never waits.
        s.state = State::kBusy;
        busy_.push_back(tag);
        MaybeArmTimer();
        return;
      case replication::FanOutStart::kFailed:
        target_->ReportFailure(OpName(s.req.op), s.req.offset, failed);
        return Finish(tag, -EIO);
      case replication::FanOutStart::kStarted:
        break;
    }
    const uint32_t targets = s.ticket.targets();
    if (targets == 0) {
      // No replica to send to: cannot happen while the healthy set is a committed majority.
      const Status none =
          vol_->EndFanOut(s.ticket, Status::Internal("no healthy replica to send to"));
      target_->ReportFailure(OpName(s.req.op), s.req.offset, none);
      return Finish(tag, -EIO);
    }
    Arm(s, targets);
    for (size_t p = 0; p < n_; ++p) {
      if (targets & (1u << p)) {
        Encode(tag, p, wire, s.ticket.volume_ids[p], s.ticket.generations[p], s.ticket.out_mask);
      }
    }
    MaybeArmTimer();
  }

  void StartRead(uint16_t tag) {
    Slot& s = slots_[tag];
    // A region the open left to the background reconciliation: the library's read reconciles it
    // first (a blocking copy, so not on this thread).
    if (vol_->ReconcilePending(s.req.offset, s.req.length)) {
      s.read_n = 0;
      s.read_gone = 0;
      return GoSlowRead(tag);
    }
    size_t trusted = 0;
    Status failed;
    s.read_n = static_cast<uint8_t>(
        vol_->ReadSources(s.read_order, s.read_vids, s.read_gens, &trusted, &failed,
                          static_cast<size_t>(ctx_->queue_id())));
    if (s.read_n == 0) {
      if (failed.ok()) return GoSlowRead(tag);  // no healthy replica now: wait for one
      target_->ReportFailure("read", s.req.offset, failed);
      return Finish(tag, -EIO);
    }
    // The trusted replica that answers this queue's reads fastest goes first (suspect ones only
    // as a fallback); the others keep their order behind it.
    const size_t first = reads_.Pick(s.read_order, trusted ? trusted : s.read_n, Clock::now());
    std::rotate(s.read_order, s.read_order + first, s.read_order + first + 1);
    std::rotate(s.read_vids, s.read_vids + first, s.read_vids + first + 1);
    std::rotate(s.read_gens, s.read_gens + first, s.read_gens + first + 1);
    s.read_next = 0;
    s.read_gone = 0;
    SendRead(tag);
  }

  void SendRead(uint16_t tag) {
    Slot& s = slots_[tag];
    const size_t p = s.read_order[s.read_next];
    Arm(s, 1u << p);
    s.read_wire_tag = tag | (static_cast<uint32_t>(s.seq) << 16);
    s.read_len = s.req.length;
    Encode(tag, p, v1::OP_READ, s.read_vids[s.read_next], s.read_gens[s.read_next], 0);
    MaybeArmTimer();
  }

  // Replica p's answer to the request in `s`, which carried `volume_id` and `generation`.
  Status ReplicaStatus(const Slot& s, size_t p, uint64_t volume_id, uint64_t generation) const {
    const int code = s.code[p];
    const std::string where = "volume '" + vol_->name() + "' replica " + std::to_string(p) + " (" +
                              vol_->replica_target(p) + ", volume " + std::to_string(volume_id) +
                              ")";
    if (code == kFencedCode) {
      // The wording IsFenced recognizes, as the server's own message.
      return Status::FailedPrecondition(
          where + ": epoch " + std::to_string(vol_->epoch()) + " is fenced by epoch " +
          std::to_string(s.their_epoch[p]));
    }
    const std::string m = where + ": stream answered gRPC code " + std::to_string(code);
    switch (static_cast<grpc::StatusCode>(code)) {
      case grpc::StatusCode::DEADLINE_EXCEEDED:
        return Status::DeadlineExceeded(where + ": no answer on its stream within " +
                                        std::to_string(vol_->rpc_timeout().count()) + " ms");
      case grpc::StatusCode::FAILED_PRECONDITION: return Status::FailedPrecondition(m);
      case grpc::StatusCode::ABORTED:
        // The only ABORTED a data request gets (the wording IsGenerationGone recognizes).
        return Status::Aborted(where + ": server generation " + std::to_string(generation) +
                               " is gone: it restarted after an unclean stop");
      case grpc::StatusCode::INVALID_ARGUMENT: return Status::InvalidArgument(m);
      case grpc::StatusCode::OUT_OF_RANGE: return Status::OutOfRange(m);
      default: return Status::Unavailable(m);
    }
  }

  void OnAllAnswered(uint16_t tag) {
    Slot& s = slots_[tag];
    const uint32_t failed = s.failed;
    if (s.req.op == UBLK_IO_OP_READ) {
      s.read_len = 0;
      const size_t p = s.read_order[s.read_next];
      const auto now = Clock::now();
      if (failed == 0) {
        reads_.Completed(p, now - s.since, now);
        return Finish(tag, static_cast<int>(s.req.length));
      }
      reads_.Failed(p, now);
      const uint64_t gen = s.read_gens[s.read_next];
      const Status st = ReplicaStatus(s, p, s.read_vids[s.read_next], gen);
      if (s.code[p] == kFencedCode) {
        vol_->ReportFenced(st);
        target_->ReportFailure("read", s.req.offset, st);
        return Finish(tag, -EIO);
      }
      if (replication::IsGenerationGone(st)) {
        s.read_gone |= static_cast<uint8_t>(1u << p);
        if (gone_reported_[p] != gen) {
          // Marking it out takes RPCs: off the queue thread; the read goes to the next replica.
          gone_reported_[p] = gen;
          RunSlow([vol = vol_, p, gen, st] { vol->ReportGenerationGone(p, gen, st); });
        }
      }
      if (++s.read_next < s.read_n) return SendRead(tag);
      if (st.code() == Status::Code::kInvalidArgument || st.code() == Status::Code::kOutOfRange) {
        target_->ReportFailure("read", s.req.offset, st);  // a bad request: no replica will do
        return Finish(tag, -EIO);
      }
      // Every healthy replica failed (streams reconnecting after a recover, replicas restarting):
      // retried like a write waits for a majority, so a brief outage is no error for the reader.
      return GoSlowRead(tag);
    }
    if (failed == 0) {
      const Status end = vol_->EndFanOut(s.ticket, Status::Ok());
      if (!end.ok()) {
        // A flush that would vouch for writes every healthy replica may have lost.
        target_->ReportFailure(OpName(s.req.op), s.req.offset, end);
        return Finish(tag, -EIO);
      }
      if (s.ticket.op == replication::FanOutOp::kFlush && !s.ticket.flush_candidates.empty()) {
        // Clearing the unstable set takes RPCs: off the queue thread, after the completion.
        RunSlow([vol = vol_, t = s.ticket] { vol->ClearAfterFlush(t); });
      }
      return Finish(tag, s.req.op == UBLK_IO_OP_WRITE ? static_cast<int>(s.req.length) : 0);
    }
    GoSlow(tag);
  }

  // The library's rules for a failed fan-out, on a thread of their own; the request completes
  // when they decided (kSlowDone).
  void GoSlow(uint16_t tag) {
    Slot& s = slots_[tag];
    s.state = State::kSlow;
    const uint32_t failed = s.failed;
    RunSlow([this, tag, failed] {
      Slot& s = slots_[tag];
      Status results[replication::kMaxReplicas];
      for (size_t p = 0; p < n_; ++p) {
        if (failed & (1u << p))
          results[p] = ReplicaStatus(s, p, s.ticket.volume_ids[p], s.ticket.generations[p]);
      }
      const std::string_view data =
          s.req.op == UBLK_IO_OP_WRITE
              ? std::string_view(reinterpret_cast<const char*>(s.req.buf), s.req.length)
              : std::string_view();
      const Status r = vol_->EndFanOut(s.ticket, vol_->ResolveFanOut(s.ticket, data, results));
      if (r.ok() && s.ticket.op == replication::FanOutOp::kFlush) vol_->ClearAfterFlush(s.ticket);
      if (!r.ok()) target_->ReportFailure(OpName(s.req.op), s.req.offset, r);
      s.slow_result = !r.ok() ? -EIO
                              : (s.req.op == UBLK_IO_OP_WRITE ? static_cast<int>(s.req.length) : 0);
      ctx_->CompleteAsync(kSlowDone, tag);
    });
  }

  // Every replica a read tried failed, some because they restarted after a crash: once the
  // library re-opened or marked them out, the read is retried on its unary path. Also a read of a
  // region still to be reconciled (nothing tried yet).
  void GoSlowRead(uint16_t tag) {
    Slot& s = slots_[tag];
    s.state = State::kSlow;
    RunSlow([this, tag] {
      Slot& s = slots_[tag];
      for (size_t k = 0; k < s.read_n; ++k) {
        const size_t p = s.read_order[k];
        if (s.read_gone & (1u << p))
          vol_->ReportGenerationGone(p, s.read_gens[k],
                                     ReplicaStatus(s, p, s.read_vids[k], s.read_gens[k]));
      }
      std::string data;
      Status r = ReadWithin(s.req.offset, s.req.length, &data);
      if (r.ok() && data.size() != s.req.length)
        r = Status::Internal("read returned " + std::to_string(data.size()) + " bytes");
      if (r.ok()) std::memcpy(s.req.buf, data.data(), data.size());
      if (!r.ok()) target_->ReportFailure("read", s.req.offset, r);
      s.slow_result = r.ok() ? static_cast<int>(s.req.length) : -EIO;
      ctx_->CompleteAsync(kSlowDone, tag);
    });
  }

  // A read over the library's unary path, retried while every replica fails transiently, for
  // as long as a write would wait for a majority (--retry-deadline-ms).
  Status ReadWithin(uint64_t offset, uint32_t length, std::string* data) {
    const auto until = Clock::now() + target_->quorum_wait();
    for (int attempt = 1;; ++attempt) {
      Status r = vol_->Read(offset, length, data);
      if (r.ok() || !IsTransient(r) || Clock::now() >= until) return r;
      if (attempt == 1)
        spdlog::warn("volume '{}': read at offset {} waits for a replica: {}", vol_->name(), offset,
                     r.ToString());
      std::this_thread::sleep_for(std::chrono::milliseconds(std::min(50 * attempt, 500)));
    }
  }

  static bool IsTransient(const Status& s) {
    return s.code() == Status::Code::kUnavailable || s.code() == Status::Code::kDeadlineExceeded ||
           s.code() == Status::Code::kAborted;
  }

  void RunSlow(std::function<void()> work) {
    {
      std::lock_guard l(slow_mu_);
      ++slow_running_;
    }
    std::thread([this, work = std::move(work)] {
      work();
      std::lock_guard l(slow_mu_);
      if (--slow_running_ == 0) slow_cv_.notify_all();
    }).detach();
  }

  void OnStreamEnded(size_t p, uint32_t generation) {
    if (generation != gen_[p] || !up_[p]) return;  // an older stream, or given up on already
    up_[p] = false;
    // Everything still awaiting this replica was sent on the stream that ended.
    FailAwaiting(p, grpc::StatusCode::UNAVAILABLE);
  }

  void FailAwaiting(size_t p, grpc::StatusCode code) {
    for (uint16_t tag = 0; tag < depth_; ++tag) {
      const Slot& s = slots_[tag];
      if (s.state != State::kSent) continue;
      if (Answer(tag, s.seq, p, static_cast<int>(code), 0)) OnAllAnswered(tag);
    }
  }

  bool AnySent() const {
    for (uint16_t tag = 0; tag < depth_; ++tag) {
      if (slots_[tag].state == State::kSent) return true;
    }
    return false;
  }

  void SendBatch(size_t p) {
    if (batch_.empty()) return;
    uint64_t checked = 0, copied = 0;
    links_[p]->Send(batch_.Take(false, &checked, &copied));
  }

  void Finish(uint16_t tag, int result) {
    Slot& s = slots_[tag];
    if (s.pool_slot >= 0) {
      pool_.Unref(s.pool_slot);  // the request's reference
      s.pool_slot = -1;
    }
    s.state = State::kIdle;
    ctx_->Complete(tag, result);
  }

  void MaybeArmTimer() {
    if (timer_armed_) return;
    const int ms = busy_.empty() ? 100 : 2;
    timer_.tv_sec = ms / 1000;
    timer_.tv_nsec = (ms % 1000) * 1000000LL;
    io_uring_sqe* sqe = ctx_->GetSqe();
    io_uring_prep_timeout(sqe, &timer_, 0, 0);
    sqe->user_data = TargetUserData(0, kSubTimer);
    timer_armed_ = true;
  }

  static const char* OpName(uint8_t op) {
    switch (op) {
      case UBLK_IO_OP_READ: return "read";
      case UBLK_IO_OP_WRITE: return "write";
      case UBLK_IO_OP_FLUSH: return "flush";
      case UBLK_IO_OP_DISCARD: return "discard";
      case UBLK_IO_OP_WRITE_ZEROES: return "write-zeroes";
    }
    return "?";
  }

  ReplicatedTarget* const target_;
  ReplicatedVolume* const vol_;
  QueueContext* const ctx_;
  const uint16_t depth_;
  const size_t n_;
  std::unique_ptr<Slot[]> slots_;
  WritePool pool_;
  BatchBuilder batch_;
  StreamEvents events_;  // before links_: their streams report here until they are finished
  std::unique_ptr<StreamLink> links_[replication::kMaxReplicas];
  Sink sinks_[replication::kMaxReplicas];
  uint32_t gen_[replication::kMaxReplicas] = {};
  bool up_[replication::kMaxReplicas] = {};
  uint64_t gone_reported_[replication::kMaxReplicas] = {};  // generation a read last reported gone
  std::vector<uint16_t> pending_[replication::kMaxReplicas];  // tags to send, per replica
  std::vector<uint16_t> busy_;  // tags waiting for a region a resync copy holds
  replication::ReadChooser reads_;  // this queue's read latency per replica
  bool timer_armed_ = false;
  __kernel_timespec timer_{};
  std::mutex slow_mu_;
  std::condition_variable slow_cv_;
  int slow_running_ = 0;  // guarded by slow_mu_
  bool stopped_ = false;  // guarded by slow_mu_
};

// The volume's id on each server. Any one answer is enough: each replica stores the replica set
// (addresses and ids) in its metadata, and the newest copy fills in the servers that did not
// answer in time (connections to freshly started servers can be slow; a down one must not cost
// an open a timeout, so one try each unless asked). Ids still unknown stay 0: the open counts
// that replica missing. *known_epoch: the highest epoch among the answers when a majority
// answered (the quorum open then needs no round to learn it), else 0. patient: a call that could
// not connect is asked again until it is answered, refused (a server that is down) or `timeout`
// has passed (ReplicaRpc::RetryUnlessRefused).
std::vector<replication::ReplicaAddr> Resolve(const std::vector<std::string>& targets,
                                              const std::string& name,
                                              std::chrono::milliseconds timeout,
                                              std::vector<Status>* errors, uint64_t* known_epoch,
                                              bool patient = false) {
  std::vector<replication::ReplicaAddr> out(targets.size());
  std::vector<v1::Volume> vols(targets.size());
  errors->assign(targets.size(), Status::Ok());
  replication::ForEachParallel(targets.size(), [&](size_t i) {
    out[i].target = targets[i];
    v1::VolumeRef ref;
    ref.set_name(name);
    replication::ReplicaRpc rpc(targets[i], timeout);
    (*errors)[i] = patient ? rpc.RetryUnlessRefused([&] { return rpc.Stat(ref, &vols[i]); })
                           : rpc.Stat(ref, &vols[i]);
    if ((*errors)[i].ok()) out[i].volume_id = vols[i].id();
  });
  const v1::ReplicaSetMeta* newest = nullptr;
  size_t answered = 0;
  *known_epoch = 0;
  for (size_t i = 0; i < targets.size(); ++i) {
    if (!(*errors)[i].ok()) continue;
    ++answered;
    *known_epoch = std::max(*known_epoch, vols[i].epoch());
    if (!vols[i].has_replica_set()) continue;
    if (!newest || replication::MetaNewer(vols[i].replica_set(), *newest))
      newest = &vols[i].replica_set();
  }
  if (answered < replication::Majority(targets.size())) *known_epoch = 0;
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
  // Randomized: two openers that split the replicas between them (neither has a majority) would
  // otherwise retry in step and split them again, round after round.
  const auto until = std::chrono::steady_clock::now() +
                     std::chrono::milliseconds(config.retry_deadline_ms);
  std::minstd_rand jitter(std::random_device{}());
  for (int attempt = 1;; ++attempt) {
    Status s = OpenOnce(config, options, /*use_lookup=*/attempt == 1, out);
    const bool transient = s.code() == Status::Code::kUnavailable ||
                           s.code() == Status::Code::kDeadlineExceeded;
    if (s.ok() || !transient || std::chrono::steady_clock::now() >= until) return s;
    spdlog::warn("volume '{}': open attempt {} failed, retrying: {}", config.volume, attempt,
                 s.ToString());
    const int base_ms = std::min(100 * attempt, 1000);
    std::this_thread::sleep_for(std::chrono::milliseconds(base_ms / 2 + jitter() % base_ms));
  }
}

Status ReplicatedTarget::OpenOnce(const DeviceConfig& config, const ReplicatedTargetOptions& options,
                                  bool use_lookup, std::unique_ptr<ReplicatedTarget>* out) {
  const auto started = std::chrono::steady_clock::now();
  // One channel per replica for the whole open (a standby's warm ones if it made them).
  std::vector<std::shared_ptr<grpc::Channel>> channels;
  for (const auto& r : config.replicas) channels.push_back(replication::SharedChannel(r));
  std::vector<replication::ReplicaAddr> addrs;
  uint64_t known_epoch = 0;
  if (use_lookup && !options.looked_up.empty()) {
    addrs = options.looked_up;
    known_epoch = options.looked_up_epoch;
  } else {
    std::vector<Status> errors;
    addrs = Resolve(config.replicas, config.volume, options.rpc_timeout, &errors, &known_epoch);
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
  }
  const double resolve_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started).count();

  replication::ReplicatedVolumeOptions vo;
  vo.client_id = ClientId();
  vo.rpc_timeout = options.rpc_timeout;
  vo.known_epoch = known_epoch;
  vo.quorum_wait = std::chrono::milliseconds(config.retry_deadline_ms);
  vo.resync_probe_interval = options.resync_probe_interval;
  vo.reconcile_in_background = options.reconcile_in_background;
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
  const replication::OpenStats& os = t->volume_->open_stats();
  spdlog::info("volume '{}' opened on {} replicas at epoch {} as {} ({} regions reconciled, {} left to the "
               "background): {}; in ms: resolve {:.1f}, quorum {:.1f}, unstable sets {:.1f}, marks {:.1f}, "
               "commit {:.1f}, reconcile {:.1f}",
               config.volume, states.size(), t->volume_->epoch(), vo.client_id, os.reconciled_regions,
               os.deferred_regions, st, resolve_ms, os.quorum_ms, os.regions_ms, os.marks_ms, os.commit_ms,
               os.reconcile_ms);
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
  auto h = std::make_unique<ReplicatedHandler>(this, ctx);
  Status s = h->Init();
  if (!s.ok()) return s;
  *out = std::move(h);
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

namespace {

// A standby's connections to every replica: the very channels the replicated target's open and
// its replica calls use (replication::SharedChannel), connected, so the takeover's open starts
// without creating a channel or a handshake. The per-queue streams connect during the takeover.
class ReplicaConnections final : public TargetConnections {
 public:
  explicit ReplicaConnections(const DeviceConfig& config) {
    for (const auto& r : config.replicas) {
      channels_.push_back(replication::SharedChannel(r));
      channels_.back()->GetState(/*try_to_connect=*/true);
    }
  }
  void KeepWarm() override {
    for (auto& c : channels_) c->GetState(/*try_to_connect=*/true);
  }
  // The warm-up's lookup (ReplicatedTargetOptions::looked_up); empty when no majority answered.
  std::vector<replication::ReplicaAddr> looked_up;
  uint64_t looked_up_epoch = 0;
  size_t connected() const {
    size_t n = 0;
    for (auto& c : channels_) n += c->GetState(false) == GRPC_CHANNEL_READY;
    return n;
  }

 private:
  std::vector<std::shared_ptr<grpc::Channel>> channels_;
};

}  // namespace

Status ConnectReplicatedTarget(const DeviceConfig& config, std::unique_ptr<TargetConnections>* out) {
  const auto started = std::chrono::steady_clock::now();
  auto c = std::make_unique<ReplicaConnections>(config);
  // One patient lookup (up to 5 s for a replica whose connection fails but is not refused): the
  // takeover's open starts from it (ReplicatedTargetOptions::looked_up), on connected channels
  // whose first calls (far costlier than later ones, tens of ms under TCG) are paid already. A
  // minority may be down: settle for what answered (a refusal is not waited out).
  std::vector<Status> errors;
  uint64_t known_epoch;
  auto addrs = Resolve(config.replicas, config.volume, std::chrono::seconds(5), &errors, &known_epoch,
                       /*patient=*/true);
  if (known_epoch != 0) {  // a majority answered
    c->looked_up = std::move(addrs);
    c->looked_up_epoch = known_epoch;
  }
  const size_t connected = c->connected();
  spdlog::info("volume '{}': {} of {} replicas connected and looked up in {:.1f} ms", config.volume, connected,
               config.replicas.size(),
               std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started).count());
  // The channels stay either way: KeepWarm connects the others once they are back.
  *out = std::move(c);
  if (connected < config.replicas.size())
    return Status::Unavailable(std::to_string(connected) + " of " + std::to_string(config.replicas.size()) +
                               " replicas of '" + config.volume + "' connected");
  return Status::Ok();
}

Status CreateReplicatedTarget(const DeviceConfig& config, std::unique_ptr<Target>* out,
                              std::unique_ptr<TargetConnections> warm) {
  ReplicatedTargetOptions options;
  // A standby's own ReplicaConnections (ConnectTarget chose them by the config).
  if (const auto* c = dynamic_cast<const ReplicaConnections*>(warm.get())) {
    options.looked_up = c->looked_up;
    options.looked_up_epoch = c->looked_up_epoch;
  }
  std::unique_ptr<ReplicatedTarget> t;
  Status s = ReplicatedTarget::Open(config, options, &t);
  if (!s.ok()) return s;
  *out = std::move(t);
  return Status::Ok();
}

}  // namespace unbd::frontend
