// BlockStream: the client side of one BlockIo.Stream call as the remote targets use it (plain and
// replicated): IoBatch messages are hand-encoded ByteBuffers (backend/io_frame.h) whose write
// payload slices are the very memory the kernel copied the data into, and CompletionBatch messages
// are parsed by hand so READ data goes straight into the request's buffer. A BlockStreamSink gets
// every completion and the end of the call, on the queue thread, from StreamEvents::Wait.
//
//   StreamEvents events;                      // per queue: what the queue thread waits on
//   StreamLink link(channel, &events);        // per queue per server: the generations of streams
//   link.Connect(&sink);                      // a new call; the old ones are pruned later
//   BatchBuilder b; b.AddHeader(h, n); b.AddPoolPayload(&pool, slot, len) ...; link.Send(b.Take());
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <grpcpp/alarm.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include "frontend/target.h"
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

// The gRPC completion queue of one frontend queue. Every stream of the queue (one per server)
// reports here and the queue thread itself waits on it while requests are out, so an answer is
// read off the socket, parsed and committed by that one thread: no hand-off to gRPC's callback
// threads and back, which costs more than the request itself under TCG.
class StreamEvents final : public HandlerEvents {
 public:
  // A stream operation (or the wake-up alarm); Done runs on the queue thread when it completes.
  struct Op {
    virtual ~Op() = default;
    virtual void Done(bool ok) = 0;
  };
  StreamEvents();
  // Only after every stream reporting here is finished (StreamLink::Stop).
  ~StreamEvents() override;
  StreamEvents(const StreamEvents&) = delete;
  StreamEvents& operator=(const StreamEvents&) = delete;

  grpc::CompletionQueue* cq() { return &cq_; }
  // Handles the first event to come within `timeout`, or returns at Wake(). One event per call:
  // asking gRPC for more with a deadline already past defers the work it has in hand.
  void Wait(std::chrono::microseconds timeout) override;
  void Wake() override;

 private:
  struct AlarmOp final : Op {
    StreamEvents* events;
    void Done(bool) override { events->alarm_set_ = false; }
  };

  grpc::CompletionQueue cq_;
  grpc::Alarm alarm_;  // cancelled by Wake() to end a wait
  AlarmOp alarm_op_;
  bool alarm_set_ = false;  // queue thread
  std::mutex mu_;           // waiting_, woken_: shared with the thread calling Wake()
  bool waiting_ = false;
  bool woken_ = false;
};

// One BlockIo.Stream call on the async API, driven by the queue thread through StreamEvents.
// Writes are queued (one may be outstanding at a time); a read is always posted. Once the call
// ends (a failed read or start), Finish collects its status and reports StreamEnded. Owned by its
// StreamLink, which deletes it only once finished().
class BlockStream {
 public:
  BlockStream(BlockStreamSink* sink, grpc::GenericStub* stub, grpc::CompletionQueue* cq, uint32_t generation);
  void Send(grpc::ByteBuffer batch);
  void Cancel() { ctx_.TryCancel(); }
  // No operation outstanding and the end reported: may be deleted.
  bool finished() const { return outstanding_ == 0 && ended_; }

 private:
  using Handler = void (BlockStream::*)(bool ok);
  struct StreamOp final : StreamEvents::Op {
    BlockStream* stream = nullptr;
    Handler handler = nullptr;
    // The operation counts as outstanding until its handler has returned, so that a sink callback
    // that makes its link prune old streams cannot delete the stream running it.
    void Done(bool ok) override {
      (stream->*handler)(ok);
      --stream->outstanding_;
    }
  };
  void OnStarted(bool ok);
  void OnRead(bool ok);
  void OnWritten(bool ok);
  void OnFinished(bool ok);
  void WriteNext();
  void End();  // no more reads or writes: collect the status

  BlockStreamSink* const sink_;
  const uint32_t generation_;
  grpc::ClientContext ctx_;
  std::unique_ptr<grpc::GenericClientAsyncReaderWriter> call_;
  grpc::ByteBuffer incoming_;
  std::deque<grpc::ByteBuffer> writes_;
  grpc::Status status_;
  StreamOp start_op_, read_op_, write_op_, finish_op_;
  int outstanding_ = 0;
  bool started_ = false;  // StartCall done: it shares Write's operation set, so writes wait for it
  bool writing_ = false;
  bool failed_ = false;   // no more writes: the call is over or broken
  bool ending_ = false;   // Finish posted
  bool ended_ = false;    // StreamEnded reported
};

// The streams of one queue to one server: the current one plus ended ones kept until gRPC is
// done with them. Queue thread only. The channel is kept for the process's life (see the
// destructor).
class StreamLink {
 public:
  StreamLink(std::shared_ptr<grpc::Channel> channel, StreamEvents* events);
  ~StreamLink();
  // Starts a new call (generation + 1) reporting to `sink`; returns its generation.
  uint32_t Connect(BlockStreamSink* sink);
  uint32_t generation() const { return generation_; }
  // Sends on the current call (dropped if it has ended: the owner re-sends or fails the requests).
  void Send(grpc::ByteBuffer batch);
  // Cancels the current call (a wedged server): its requests end with the call.
  void Cancel();
  // Cancels every call and drives the queue's events until all of them are finished.
  void Stop();

 private:
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<grpc::GenericStub> stub_;
  StreamEvents* const events_;
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
