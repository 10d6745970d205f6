// BlockStream: the client side of one BlockIo.Stream call as the remote targets use it (plain and
// replicated): IoBatch messages are hand-encoded ByteBuffers (backend/io_frame.h) whose write
// payload slices are the very memory the kernel copied the data into, and CompletionBatch messages
// are parsed by hand so READ data goes straight into the request's buffer. A BlockStreamSink gets
// every completion and the end of the call, on gRPC's threads.
//
//   StreamLink link(channel);                 // per queue per server: the generations of streams
//   link.Connect(&sink);                      // a new call; the old ones are pruned later
//   BatchBuilder b; b.AddHeader(h, n); b.AddPoolPayload(&pool, slot, len) ...; link.Send(b.Take());
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include "frontend/write_pool.h"

namespace unbd::frontend {

class BlockStreamSink {
 public:
  virtual ~BlockStreamSink() = default;
  // Where READ data for `wire_tag` goes, or nullptr if `size` is not what the request asked for.
  virtual uint8_t* ReadDest(uint32_t wire_tag, uint32_t size) = 0;
  // One IoCompletion: `code` is a grpc::StatusCode value; `current_epoch` is the server's epoch on
  // FAILED_PRECONDITION (greater than the request's: fenced by a newer owner).
  virtual void StreamCompletion(uint32_t generation, uint32_t wire_tag, int code,
                                const std::string& message, uint64_t current_epoch) = 0;
  // The call of `generation` is over (or broken): no more completions come from it.
  virtual void StreamEnded(uint32_t generation, const grpc::Status& s) = 0;
};

// One BlockIo.Stream call. Writes are queued here (a lock private to this stream) because the
// callback API allows one outstanding write at a time. Destroyed only well after OnDone.
class BlockStream final : public grpc::ClientBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  using Clock = std::chrono::steady_clock;
  BlockStream(BlockStreamSink* sink, grpc::GenericStub* stub, uint32_t generation);
  void Start();
  void Send(grpc::ByteBuffer batch);
  void Cancel() { ctx_.TryCancel(); }
  void WaitDone();
  bool done();
  Clock::time_point done_at();

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

  BlockStreamSink* const sink_;
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

// The streams of one queue to one server: the current one plus ended ones kept until gRPC is
// surely done with them. Queue thread only. The channel is kept for the process's life (see the
// destructor).
class StreamLink {
 public:
  explicit StreamLink(std::shared_ptr<grpc::Channel> channel);
  ~StreamLink();
  // Starts a new call (generation + 1) reporting to `sink`; returns its generation.
  uint32_t Connect(BlockStreamSink* sink);
  uint32_t generation() const { return generation_; }
  // Sends on the current call (dropped if it has ended: the owner re-sends or fails the requests).
  void Send(grpc::ByteBuffer batch);
  // Cancels the current call (a wedged server): its requests end with the call.
  void Cancel();
  // Cancels every call and waits for their OnDone.
  void Stop();

 private:
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<grpc::GenericStub> stub_;
  std::vector<std::unique_ptr<BlockStream>> streams_;
  uint32_t generation_ = 0;
};

// Builds one IoBatch ByteBuffer from request headers and zero-copy payload slices. Reused per
// queue; its vectors keep their capacity, so steady-state batches do not allocate here.
class BatchBuilder {
 public:
  explicit BatchBuilder(size_t reserve = 0);
  // Header bytes that stay untouched until the request's completion.
  void AddHeader(const char* header, size_t len);
  // A payload slice over a pool slot: gRPC's reference is dropped by the slice's release callback.
  void AddPoolPayload(WritePool* pool, int slot, uint32_t len);
  // A payload slice over memory that stays valid until the request's completion (the tag buffer).
  void AddStaticPayload(const uint8_t* buf, uint32_t len);
  bool empty() const { return slices_.empty(); }
  // The batch; with `verify`, counts payload slices checked and bytes gRPC holds in memory other
  // than the buffers given (a copy).
  grpc::ByteBuffer Take(bool verify, uint64_t* checked, uint64_t* copied_bytes);

 private:
  std::vector<grpc::Slice> slices_;
  std::vector<const uint8_t*> payload_of_;  // per slice: the write buffer it must be, or nullptr
};

// gRPC status codes as the remote targets treat them.
bool RetryableGrpcCode(int code);

}  // namespace unbd::frontend
