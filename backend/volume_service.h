// VolumeService: the gRPC face of the Store — unbd.v1.VolumeAdmin and unbd.v1.BlockIo (unary
// data calls; see proto/unbd/v1/io.proto for the client rules). The per-queue batched stream is
// registered as an async method and driven by StreamServer (stream_server.h), which calls
// ApplyBatch() and the stream registry below.
// BeginDrain() (SIGTERM) lets every stream finish and answer the batch it is applying, then ends
// each stream with UNAVAILABLE so clients re-send elsewhere or later.
// Test hook (--test-hold-writes-file PATH): a WRITE / DISCARD / WRITE_ZEROES whose epoch equals the
// decimal number in PATH waits, before its fence check, for as long as PATH exists and holds that
// number (polled every 10 ms); it lets tests stand for a dead writer's request still in flight.
// Test hook (--test-read-delay-us N): reads wait N us before they are applied (a slow replica).
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <set>

#include <grpcpp/grpcpp.h>

#include "backend/metrics.h"
#include "backend/store.h"
#include "unbd/v1/io.grpc.pb.h"
#include "unbd/v1/volume.grpc.pb.h"

namespace unbd::backend {

// Deliberate message limits (advertised to clients in ServerLimits).
struct ServiceLimits {
  uint32_t max_batch_requests = 1024;
  uint32_t max_batch_bytes = 8u << 20;
  // Room for a full batch of payload plus per-request headers.
  uint32_t max_message_bytes = (8u << 20) + (1u << 20);
};

grpc::Status ToGrpc(const Status& s);

class VolumeService final : public v1::VolumeAdmin::Service,
                            public v1::BlockIo::WithAsyncMethod_Stream<v1::BlockIo::Service> {
 public:
  VolumeService(Store* store, Metrics* metrics, ServiceLimits limits = {});

  v1::ServerLimits Limits() const;
  // Test hook, see above; call before serving. Empty: off (the data path only tests this flag).
  void SetTestHoldWritesFile(std::string path) { hold_writes_file_ = std::move(path); }
  bool holds_writes() const { return !hold_writes_file_.empty(); }
  // Test hook (--test-read-delay-us): every unary READ, and every stream batch with a READ, waits
  // this long before it is applied (a slow replica). Call before serving; 0: off.
  void SetTestReadDelay(std::chrono::microseconds d) { read_delay_ = d; }
  std::chrono::microseconds read_delay() const { return read_delay_; }
  // Whether the hook currently holds a write of this batch (false once draining).
  bool HoldsBatch(const v1::IoBatch& batch);
  // Sleeps in 10 ms steps while `held()` is true and the server is not draining.
  void WaitWhileHeld(const std::function<bool()>& held);
  void BeginDrain();
  // After BeginDrain: waits until every stream has ended (or `timeout`).
  void WaitForStreams(std::chrono::milliseconds timeout);

  // VolumeAdmin
  grpc::Status CreateVolume(grpc::ServerContext*, const v1::CreateVolumeRequest*,
                            v1::CreateVolumeResponse*) override;
  grpc::Status DeleteVolume(grpc::ServerContext*, const v1::DeleteVolumeRequest*,
                            v1::DeleteVolumeResponse*) override;
  grpc::Status ListVolumes(grpc::ServerContext*, const v1::ListVolumesRequest*,
                           v1::ListVolumesResponse*) override;
  grpc::Status StatVolume(grpc::ServerContext*, const v1::StatVolumeRequest*,
                          v1::StatVolumeResponse*) override;
  grpc::Status ResizeVolume(grpc::ServerContext*, const v1::ResizeVolumeRequest*,
                            v1::ResizeVolumeResponse*) override;
  grpc::Status BlockChecksums(grpc::ServerContext*, const v1::BlockChecksumsRequest*,
                              v1::BlockChecksumsResponse*) override;

  // BlockIo
  grpc::Status OpenVolume(grpc::ServerContext*, const v1::OpenVolumeRequest*,
                          v1::OpenVolumeResponse*) override;
  grpc::Status GetLimits(grpc::ServerContext*, const v1::GetLimitsRequest*,
                         v1::ServerLimits*) override;
  grpc::Status Read(grpc::ServerContext*, const v1::ReadRequest*, v1::ReadResponse*) override;
  grpc::Status Write(grpc::ServerContext*, const v1::WriteRequest*, v1::WriteResponse*) override;
  grpc::Status ZeroRange(grpc::ServerContext*, const v1::ZeroRangeRequest*,
                         v1::ZeroRangeResponse*) override;
  grpc::Status Flush(grpc::ServerContext*, const v1::FlushRequest*, v1::FlushResponse*) override;

  // Stream support. ApplyBatch checks the batch against the limits, applies it and fills `out`
  // (one completion per request, same order); a non-OK result ends the stream with that status.
  // `ops` is scratch space reused across batches.
  grpc::Status ApplyBatch(const v1::IoBatch& in, v1::CompletionBatch* out, std::vector<IoOp>* ops);

  // Registry of open streams, so BeginDrain can end idle ones and wait for busy ones.
  struct StreamSlot {
    grpc::ServerContext* ctx;
    bool busy = false;
  };
  bool AddStream(StreamSlot* s);    // false when draining: end the stream with UNAVAILABLE
  bool BeginBatch(StreamSlot* s);   // false when draining
  bool EndBatch(StreamSlot* s);     // false when draining
  void RemoveStream(StreamSlot* s);

 private:

  grpc::Status SubmitOne(IoOp* op);
  bool HeldEpoch(uint64_t* epoch);  // the hook file's epoch, if it exists and parses
  bool HoldsEpoch(uint64_t epoch);
  void HoldUnary(uint64_t epoch);
  void Record(std::span<IoOp> ops, uint64_t latency_ns);

  Store* store_;
  Metrics* metrics_;
  ServiceLimits limits_;
  std::mutex streams_mu_;
  std::set<StreamSlot*> streams_;
  std::condition_variable streams_cv_;
  bool draining_ = false;
  std::string hold_writes_file_;
  std::chrono::microseconds read_delay_{0};
};

}  // namespace unbd::backend
