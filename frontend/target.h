// Target: where a device's I/O goes (null, loop file, remote volume). A Target is created once per
// daemon; it hands each queue thread its own QueueHandler, which is only ever called on that
// thread. A handler finishes every request it is given exactly once, by calling
// QueueContext::Complete (on the queue thread, e.g. from OnCqe) or CompleteAsync (from any other
// thread); the result is the byte count for READ/WRITE, 0 for the others, or a negative errno.
#pragma once

#include <liburing.h>
#include <linux/ublk_cmd.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "common/status.h"
#include "frontend/device_config.h"

namespace unbd::frontend {

struct IoRequest {
  uint16_t tag;
  uint8_t op;      // UBLK_IO_OP_*
  uint32_t flags;  // UBLK_IO_F_*
  uint64_t offset;  // bytes
  uint32_t length;  // bytes
  uint8_t* buf;     // READ: fill it; WRITE: the data
};

// user_data of SQEs a handler submits on the queue's ring: the queue routes their CQEs back to
// OnCqe(tag, sub, res). `sub` is the handler's own 8-bit discriminator.
uint64_t TargetUserData(uint16_t tag, uint8_t sub);

class QueueContext {
 public:
  virtual ~QueueContext() = default;
  virtual int queue_id() const = 0;
  virtual uint16_t depth() const = 0;
  // The queue's own io_uring, for handlers that do their I/O there (queue thread only). Never
  // returns a null SQE: it submits to make room when the ring is full.
  virtual io_uring_sqe* GetSqe() = 0;
  // The index of the ring's registered buffer that holds [buf, buf + len), or -1. A handler doing
  // O_DIRECT I/O on the ring passes it to READ_FIXED / WRITE_FIXED, and the kernel then skips
  // pinning the buffer's pages for every request. The tags' buffers are registered as they are
  // faulted in, a little after start-up (queue thread only).
  virtual int FixedBufferIndex(const uint8_t* /*buf*/, uint32_t /*len*/) { return -1; }
  virtual void Complete(uint16_t tag, int result) = 0;       // queue thread only
  // Any thread; arrives as QueueHandler::OnAsync on the queue thread. `tag` may also be a value
  // >= depth() that the handler uses for its own events (e.g. "stream broken").
  virtual void CompleteAsync(uint16_t tag, int result) = 0;
};

// An event source of a handler's own that the queue thread can wait on directly (the remote
// targets' gRPC completion queue), rather than have other threads hand completions over with
// CompleteAsync. The queue thread waits there while the handler AwaitsEvents(), and Wake()s it
// from a doorbell thread when the kernel posts work to the queue's ring meanwhile.
class HandlerEvents {
 public:
  virtual ~HandlerEvents() = default;
  // Queue thread: handles what comes within `timeout`; returns early at Wake().
  virtual void Wait(std::chrono::microseconds timeout) = 0;
  // Any thread: ends the current Wait, or the next one at once.
  virtual void Wake() = 0;
};

class QueueHandler {
 public:
  virtual ~QueueHandler() = default;
  virtual void Submit(const IoRequest& req) = 0;
  virtual void OnCqe(uint16_t /*tag*/, uint8_t /*sub*/, int /*res*/) {}
  // NEED_GET_DATA: the buffer the kernel should copy a write of `length` bytes into. nullptr means
  // the tag's own buffer. Ownership of a returned buffer passes back with Submit.
  virtual uint8_t* WriteBuffer(uint16_t /*tag*/, uint32_t /*length*/) { return nullptr; }
  // A result pushed with QueueContext::CompleteAsync, delivered on the queue thread. Handlers that
  // track their own in-flight state (retries) intercept it here; the default commits it.
  virtual void OnAsync(uint16_t tag, int result, QueueContext* ctx) { ctx->Complete(tag, result); }
  // Called on the queue thread after each round of completions, before it sleeps: the moment to
  // send whatever the round queued up (batching).
  virtual void Flush() {}
  // The handler's own event source (fixed for its life), or nullptr.
  virtual HandlerEvents* events() { return nullptr; }
  // Requests are out that answer through events(): the queue thread should wait there.
  virtual bool AwaitsEvents() const { return false; }
  // Called on the queue thread once the kernel has aborted every tag, before the thread exits;
  // must not return while any request is still unfinished or any thread may call CompleteAsync.
  virtual void Stop() {}
};

class Target {
 public:
  virtual ~Target() = default;
  virtual uint64_t size_bytes() const = 0;
  // Adjusts the device parameters (discard, write cache) to what this target can honour.
  virtual void AdjustParams(ublk_params* params) const = 0;
  virtual Status CreateQueueHandler(QueueContext* ctx, std::unique_ptr<QueueHandler>* out) = 0;
  // One line for `unbd list`, e.g. "loop file=/var/lib/disk.img direct_io=1".
  virtual std::string Describe() const = 0;
  // Remote: the epoch this incarnation opened the volume with and the volume's id (0 for local
  // targets).
  virtual uint64_t epoch() const { return 0; }
  virtual uint64_t volume_id() const { return 0; }
  // Not OK once this incarnation can serve no more I/O (a newer owner fenced it): `add` checks it
  // after START_DEV, whose partition scan is the device's first I/O.
  virtual Status Health() const { return Status::Ok(); }
};

// What the previous incarnation knew (recovery): a remote target first tries to open volume
// `volume_id` at `epoch + 1` directly, saving the lookup on the way back to serving I/O.
struct TargetHint {
  uint64_t volume_id = 0;
  uint64_t epoch = 0;
};

// A standby daemon's head start on the target: what can be set up before the volume is opened,
// made and used once, so that taking over costs one OpenVolume round trip rather than gRPC's
// first-use costs (tens of ms each under TCG). A remote volume's are its server connections (a
// replicated one's, one per replica); null and loop targets have none (ConnectTarget gives nullptr).
class TargetConnections {
 public:
  virtual ~TargetConnections() = default;
  // Called about once a second while waiting: reconnects whatever the server closed meanwhile.
  virtual void KeepWarm() = 0;
};
// Not OK when some server did not answer; *out is set regardless (KeepWarm goes on trying).
Status ConnectTarget(const DeviceConfig& config, std::unique_ptr<TargetConnections>* out);

// Opens the target named by `config` (checks the file, connects to the backend, ...), on `warm`
// connections if a standby made them.
Status CreateTarget(const DeviceConfig& config, std::unique_ptr<Target>* out, const TargetHint& hint = {},
                    std::unique_ptr<TargetConnections> warm = nullptr);

// Parameters every device starts from: block sizes, max I/O, volatile cache + FUA, discard.
ublk_params BaseParams(const DeviceConfig& config, uint64_t size_bytes);

}  // namespace unbd::frontend
