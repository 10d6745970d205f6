#include "frontend/block_stream.h"

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/wire_format_lite.h>
#include <grpcpp/support/proto_buffer_reader.h>
#include <spdlog/spdlog.h>

namespace unbd::frontend {

using google::protobuf::internal::WireFormatLite;

namespace {

constexpr const char* kStreamMethod = "/unbd.v1.BlockIo/Stream";

constexpr uint32_t Key(int field, WireFormatLite::WireType t) {
  return static_cast<uint32_t>(field << 3) | static_cast<uint32_t>(t);
}

}  // namespace

bool RetryableGrpcCode(int code) {
  auto c = static_cast<grpc::StatusCode>(code);
  return c == grpc::StatusCode::UNAVAILABLE || c == grpc::StatusCode::CANCELLED ||
         c == grpc::StatusCode::DEADLINE_EXCEEDED || c == grpc::StatusCode::ABORTED;
}

// ---- StreamEvents ----

StreamEvents::StreamEvents() { alarm_op_.events = this; }

StreamEvents::~StreamEvents() {
  if (alarm_set_) alarm_.Cancel();
  cq_.Shutdown();
  void* tag;
  bool ok;
  while (cq_.Next(&tag, &ok)) {
    // Only the alarm can be left: the streams are finished.
    if (tag != &alarm_op_) spdlog::error("stream event after the streams were finished, dropped");
  }
}

void StreamEvents::Wait(std::chrono::microseconds timeout) {
  {
    std::lock_guard<std::mutex> l(mu_);
    if (woken_) {
      woken_ = false;
      return;
    }
    if (!alarm_set_) {
      // Far off: it only serves as something Wake() can cancel.
      alarm_.Set(&cq_, std::chrono::system_clock::now() + std::chrono::seconds(10), &alarm_op_);
      alarm_set_ = true;
    }
    waiting_ = true;
  }
  void* tag;
  bool ok;
  const auto r = cq_.AsyncNext(&tag, &ok, std::chrono::system_clock::now() + timeout);
  {
    std::lock_guard<std::mutex> l(mu_);
    waiting_ = false;
    woken_ = false;  // this wait is over either way
  }
  if (r == grpc::CompletionQueue::GOT_EVENT) static_cast<Op*>(tag)->Done(ok);
}

void StreamEvents::Wake() {
  std::lock_guard<std::mutex> l(mu_);
  if (waiting_) {
    alarm_.Cancel();  // its event ends the wait
    waiting_ = false;
  } else {
    woken_ = true;
  }
}

// ---- BlockStream ----

BlockStream::BlockStream(BlockStreamSink* sink, grpc::GenericStub* stub, grpc::CompletionQueue* cq,
                         uint32_t generation)
    : sink_(sink), generation_(generation) {
  static const std::string method(kStreamMethod);  // outlives every call that names it
  start_op_.handler = &BlockStream::OnStarted;
  read_op_.handler = &BlockStream::OnRead;
  write_op_.handler = &BlockStream::OnWritten;
  finish_op_.handler = &BlockStream::OnFinished;
  for (StreamOp* op : {&start_op_, &read_op_, &write_op_, &finish_op_}) op->stream = this;
  call_ = stub->PrepareCall(&ctx_, method, cq);
  outstanding_ = 2;
  call_->StartCall(&start_op_);
  call_->Read(&incoming_, &read_op_);
}

void BlockStream::Send(grpc::ByteBuffer batch) {
  if (failed_) return;  // the owner re-sends or fails everything unfinished
  writes_.push_back(std::move(batch));
  if (started_ && !writing_) WriteNext();
}

void BlockStream::WriteNext() {
  writing_ = true;
  ++outstanding_;
  call_->Write(writes_.front(), &write_op_);
}

void BlockStream::OnStarted(bool ok) {
  started_ = true;
  if (!ok) {
    failed_ = true;
    writes_.clear();
    End();
  } else if (!writes_.empty()) {
    WriteNext();
  }
}

void BlockStream::OnWritten(bool ok) {
  writes_.pop_front();
  writing_ = false;
  if (!ok) {
    // The call is broken; the read fails too and ends it.
    failed_ = true;
    writes_.clear();
  } else if (!writes_.empty()) {
    WriteNext();
  }
}

void BlockStream::End() {
  failed_ = true;
  if (ending_) return;
  ending_ = true;
  ++outstanding_;
  call_->Finish(&status_, &finish_op_);
}

void BlockStream::OnFinished(bool) {
  ended_ = true;
  sink_->StreamEnded(generation_, status_);
}

void BlockStream::OnRead(bool ok) {
  if (!ok) {
    End();
    return;
  }
  grpc::ProtoBufferReader reader(&incoming_);
  google::protobuf::io::CodedInputStream in(&reader);
  bool malformed = false;
  std::string message;
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
    uint64_t current_epoch = 0;
    message.clear();
    bool ok_parse = true;
    while (uint32_t k = in.ReadTag()) {
      if (k == Key(1, WireFormatLite::WIRETYPE_VARINT)) {
        ok_parse = in.ReadVarint32(&tag);
      } else if (k == Key(2, WireFormatLite::WIRETYPE_VARINT)) {
        ok_parse = in.ReadVarint32(&code);
      } else if (k == Key(3, WireFormatLite::WIRETYPE_LENGTH_DELIMITED)) {
        uint32_t n;
        ok_parse = in.ReadVarint32(&n) && in.ReadString(&message, static_cast<int>(n));
      } else if (k == Key(4, WireFormatLite::WIRETYPE_VARINT)) {
        ok_parse = in.ReadVarint64(&current_epoch);
      } else if (k == Key(15, WireFormatLite::WIRETYPE_LENGTH_DELIMITED)) {
        uint32_t n;
        ok_parse = in.ReadVarint32(&n);
        if (ok_parse) {
          // READ data goes straight from gRPC's buffers into the request's buffer.
          uint8_t* dest = sink_->ReadDest(tag, n);
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
    sink_->StreamCompletion(generation_, tag, static_cast<int>(code), message, current_epoch);
  }
  incoming_.Clear();
  if (malformed) {
    spdlog::error("malformed CompletionBatch from the backend; dropping the stream");
    Cancel();
    End();
    return;
  }
  ++outstanding_;
  call_->Read(&incoming_, &read_op_);
}

// ---- StreamLink ----

StreamLink::StreamLink(std::shared_ptr<grpc::Channel> channel, StreamEvents* events)
    : channel_(std::move(channel)), stub_(std::make_unique<grpc::GenericStub>(channel_)), events_(events) {}

StreamLink::~StreamLink() {
  Stop();
  // Destroying the last channel makes gRPC shut down and join its threads, which can block forever
  // while a cancelled connection attempt is still backing off. A daemon only drops its handlers on
  // the way out, so keep the channel for the process's life.
  static auto* kept = new std::vector<std::shared_ptr<grpc::Channel>>();
  static std::mutex kept_mu;
  std::lock_guard<std::mutex> l(kept_mu);
  kept->push_back(std::move(channel_));
}

uint32_t StreamLink::Connect(BlockStreamSink* sink) {
  std::erase_if(streams_, [](const std::unique_ptr<BlockStream>& st) { return st->finished(); });
  if (!streams_.empty()) streams_.back()->Cancel();
  ++generation_;
  streams_.push_back(std::make_unique<BlockStream>(sink, stub_.get(), events_->cq(), generation_));
  return generation_;
}

void StreamLink::Send(grpc::ByteBuffer batch) {
  if (!streams_.empty()) streams_.back()->Send(std::move(batch));
}

void StreamLink::Cancel() {
  if (!streams_.empty()) streams_.back()->Cancel();
}

void StreamLink::Stop() {
  for (auto& st : streams_) st->Cancel();
  const auto start = std::chrono::steady_clock::now();
  bool warned = false;
  for (;;) {
    std::erase_if(streams_, [](const std::unique_ptr<BlockStream>& st) { return st->finished(); });
    if (streams_.empty()) return;
    // A cancelled call's operations all complete promptly; this only drives them.
    events_->Wait(std::chrono::milliseconds(50));
    if (!warned && std::chrono::steady_clock::now() - start > std::chrono::seconds(5)) {
      spdlog::warn("{} cancelled stream(s) still not finished after 5 s", streams_.size());
      warned = true;
    }
  }
}

// ---- BatchBuilder ----

BatchBuilder::BatchBuilder(size_t reserve) {
  slices_.reserve(reserve);
  payload_of_.reserve(reserve);
}

void BatchBuilder::AddHeader(const char* header, size_t len) {
  slices_.emplace_back(header, len, grpc::Slice::STATIC_SLICE);
  payload_of_.push_back(nullptr);
}

void BatchBuilder::AddPoolPayload(WritePool* pool, int slot, uint32_t len) {
  pool->Ref(slot);  // gRPC's reference, dropped by the slice's release callback
  slices_.emplace_back(pool->data(slot), len, &WritePool::ReleaseCookie, pool->Cookie(slot));
  payload_of_.push_back(pool->data(slot));
}

void BatchBuilder::AddStaticPayload(const uint8_t* buf, uint32_t len) {
  slices_.emplace_back(buf, len, grpc::Slice::STATIC_SLICE);
  payload_of_.push_back(buf);
}

grpc::ByteBuffer BatchBuilder::Take(bool verify, uint64_t* checked, uint64_t* copied_bytes) {
  grpc::ByteBuffer batch(slices_.data(), slices_.size());
  if (verify) {
    // Proof for tests and benchmarks: the byte buffer gRPC will send holds, for every write, a
    // slice that starts at the very memory the kernel copied the write into.
    std::vector<grpc::Slice> dumped;
    const bool same_shape = batch.Dump(&dumped).ok() && dumped.size() == payload_of_.size();
    for (size_t i = 0; i < payload_of_.size(); ++i) {
      if (!payload_of_[i]) continue;  // a header
      ++*checked;
      if (!same_shape || dumped[i].begin() != payload_of_[i]) *copied_bytes += slices_[i].size();
    }
  }
  slices_.clear();
  payload_of_.clear();
  return batch;
}

}  // namespace unbd::frontend
