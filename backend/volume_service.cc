#include "backend/volume_service.h"

#include <chrono>
#include <fstream>
#include <thread>

#include <spdlog/spdlog.h>

#include "replication/region_sets.h"

namespace unbd::backend {
namespace {

uint64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

grpc::StatusCode ToGrpcCode(Status::Code c) {
  switch (c) {
    case Status::Code::kOk: return grpc::StatusCode::OK;
    case Status::Code::kInvalidArgument: return grpc::StatusCode::INVALID_ARGUMENT;
    case Status::Code::kNotFound: return grpc::StatusCode::NOT_FOUND;
    case Status::Code::kAlreadyExists: return grpc::StatusCode::ALREADY_EXISTS;
    case Status::Code::kFailedPrecondition: return grpc::StatusCode::FAILED_PRECONDITION;
    case Status::Code::kOutOfRange: return grpc::StatusCode::OUT_OF_RANGE;
    case Status::Code::kUnavailable: return grpc::StatusCode::UNAVAILABLE;
    case Status::Code::kDeadlineExceeded: return grpc::StatusCode::DEADLINE_EXCEEDED;
    case Status::Code::kAborted: return grpc::StatusCode::ABORTED;
    case Status::Code::kResourceExhausted: return grpc::StatusCode::RESOURCE_EXHAUSTED;
    case Status::Code::kIoError: return grpc::StatusCode::INTERNAL;
    case Status::Code::kInternal: return grpc::StatusCode::INTERNAL;
  }
  return grpc::StatusCode::UNKNOWN;
}

}  // namespace

grpc::Status ToGrpc(const Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(ToGrpcCode(s.code()), s.message());
}

VolumeService::VolumeService(Store* store, Metrics* metrics, ServiceLimits limits)
    : store_(store), metrics_(metrics), limits_(limits) {}

v1::ServerLimits VolumeService::Limits() const {
  v1::ServerLimits l;
  l.set_max_io_bytes(store_->limits().max_io_bytes);
  l.set_max_discard_bytes(store_->limits().max_discard_bytes);
  l.set_max_batch_requests(limits_.max_batch_requests);
  l.set_max_batch_bytes(limits_.max_batch_bytes);
  l.set_max_message_bytes(limits_.max_message_bytes);
  return l;
}

void VolumeService::BeginDrain() {
  std::lock_guard l(streams_mu_);
  draining_ = true;
  // Idle streams (blocked reading the next batch) have nothing in flight: end them now. Busy ones
  // answer their batch first and then see draining_.
  for (StreamSlot* s : streams_) {
    if (!s->busy) s->ctx->TryCancel();
  }
  spdlog::info("draining: {} stream(s) open", streams_.size());
}

void VolumeService::WaitForStreams(std::chrono::milliseconds timeout) {
  std::unique_lock l(streams_mu_);
  streams_cv_.wait_for(l, timeout, [&] { return streams_.empty(); });
}

void VolumeService::Record(std::span<IoOp> ops, uint64_t latency_ns) {
  uint64_t last_id = 0;
  Metrics::VolumeMetrics* m = nullptr;
  for (const IoOp& op : ops) {
    if (op.status.code() == Status::Code::kNotFound) {
      metrics_->unknown_volume_requests.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    if (!m || op.volume_id != last_id) {
      m = &metrics_->ForVolume(op.volume_id);
      last_id = op.volume_id;
    }
    const int k = (op.op > 0 && op.op < Metrics::kNumOps) ? op.op : 0;
    m->ops[k].fetch_add(1, std::memory_order_relaxed);
    if (!op.status.ok()) {
      m->errors[k].fetch_add(1, std::memory_order_relaxed);
      if (op.status.code() == Status::Code::kFailedPrecondition) {
        m->fenced.fetch_add(1, std::memory_order_relaxed);
      }
    } else if (op.op == v1::OP_READ || op.op == v1::OP_WRITE) {
      m->bytes[k].fetch_add(op.length, std::memory_order_relaxed);
    }
    m->latency[k].Observe(latency_ns);
  }
}

bool VolumeService::HeldEpoch(uint64_t* epoch) {
  {
    std::lock_guard l(streams_mu_);
    if (draining_) return false;
  }
  std::ifstream f(hold_writes_file_);
  return f && (f >> *epoch);
}

bool VolumeService::HoldsEpoch(uint64_t epoch) {
  uint64_t held;
  return HeldEpoch(&held) && held == epoch;
}

bool VolumeService::HoldsBatch(const v1::IoBatch& batch) {
  uint64_t held;
  if (!HeldEpoch(&held)) return false;
  for (const auto& r : batch.requests()) {
    const auto op = r.op();
    const bool write = op == v1::OP_WRITE || op == v1::OP_DISCARD || op == v1::OP_WRITE_ZEROES;
    if (write && r.epoch() == held) return true;
  }
  return false;
}

void VolumeService::WaitWhileHeld(const std::function<bool()>& held) {
  bool logged = false;
  while (held()) {
    if (!logged) spdlog::info("test hook: holding a write ({} exists)", hold_writes_file_);
    logged = true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  if (logged) spdlog::info("test hook: releasing a held write");
}

void VolumeService::HoldUnary(uint64_t epoch) {
  // A unary call has a gRPC thread of its own: holding it blocks nothing else. It stays held even
  // if the client goes away: the hook stands for a dead writer's request still in flight.
  WaitWhileHeld([&] { return HoldsEpoch(epoch); });
}

grpc::Status VolumeService::SubmitOne(IoOp* op) {
  const uint64_t start = NowNs();
  store_->SubmitBatch(std::span<IoOp>(op, 1));
  Record(std::span<IoOp>(op, 1), NowNs() - start);
  return ToGrpc(op->status);
}

// ---- VolumeAdmin ----

grpc::Status VolumeService::CreateVolume(grpc::ServerContext*, const v1::CreateVolumeRequest* req,
                                         v1::CreateVolumeResponse* resp) {
  return ToGrpc(store_->CreateVolume(req->name(), req->size_bytes(), req->block_size(),
                                     req->replica_uuid(), resp->mutable_volume()));
}

grpc::Status VolumeService::DeleteVolume(grpc::ServerContext*, const v1::DeleteVolumeRequest* req,
                                         v1::DeleteVolumeResponse*) {
  uint64_t id;
  Status s = store_->ResolveVolume(req->volume(), &id);
  if (s.ok()) s = store_->DeleteVolume(id);
  return ToGrpc(s);
}

grpc::Status VolumeService::ListVolumes(grpc::ServerContext*, const v1::ListVolumesRequest*,
                                        v1::ListVolumesResponse* resp) {
  std::vector<v1::Volume> vols;
  Status s = store_->ListVolumes(&vols);
  for (auto& v : vols) *resp->add_volumes() = std::move(v);
  return ToGrpc(s);
}

grpc::Status VolumeService::StatVolume(grpc::ServerContext*, const v1::StatVolumeRequest* req,
                                       v1::StatVolumeResponse* resp) {
  uint64_t id;
  Status s = store_->ResolveVolume(req->volume(), &id);
  if (s.ok()) s = store_->StatVolume(id, resp->mutable_volume());
  return ToGrpc(s);
}

grpc::Status VolumeService::ResizeVolume(grpc::ServerContext*, const v1::ResizeVolumeRequest* req,
                                         v1::ResizeVolumeResponse* resp) {
  uint64_t id;
  Status s = store_->ResolveVolume(req->volume(), &id);
  if (s.ok())
    s = store_->ResizeVolume(id, req->new_size_bytes(), req->epoch(), resp->mutable_volume());
  return ToGrpc(s);
}

grpc::Status VolumeService::BlockChecksums(grpc::ServerContext*,
                                           const v1::BlockChecksumsRequest* req,
                                           v1::BlockChecksumsResponse* resp) {
  uint64_t id;
  Status s = store_->ResolveVolume(req->volume(), &id);
  std::vector<uint64_t> sums;
  if (s.ok()) s = store_->BlockChecksums(id, req->start_block(), req->block_count(), &sums);
  for (uint64_t x : sums) resp->add_checksums(x);
  return ToGrpc(s);
}

// ---- BlockIo ----

grpc::Status VolumeService::OpenVolume(grpc::ServerContext*, const v1::OpenVolumeRequest* req,
                                       v1::OpenVolumeResponse* resp) {
  v1::Volume vol;
  Status s = store_->OpenVolume(req->volume_id(), req->epoch(), req->client_id(), &vol);
  if (!s.ok()) return ToGrpc(s);
  resp->set_volume_id(vol.id());
  resp->set_name(vol.name());
  resp->set_size_bytes(vol.size_bytes());
  resp->set_block_size(vol.block_size());
  resp->set_epoch(vol.epoch());
  *resp->mutable_limits() = Limits();
  if (vol.has_replica_set()) *resp->mutable_replica_set() = vol.replica_set();
  resp->set_replica_uuid(vol.replica_uuid());
  resp->set_server_generation(store_->server_generation());
  if (!vol.replica_uuid().empty()) {
    v1::GetDirtyRegionsResponse unstable;
    s = store_->GetDirtyRegions(vol.id(), replication::kUnstableSet, false, &unstable);
    if (!s.ok()) return ToGrpc(s);
    resp->mutable_unstable_regions()->mutable_regions()->Swap(unstable.mutable_regions());
  }
  return grpc::Status::OK;
}

grpc::Status VolumeService::GetLimits(grpc::ServerContext*, const v1::GetLimitsRequest*,
                                      v1::ServerLimits* resp) {
  *resp = Limits();
  return grpc::Status::OK;
}

grpc::Status VolumeService::Read(grpc::ServerContext*, const v1::ReadRequest* req,
                                 v1::ReadResponse* resp) {
  if (read_delay_.count() > 0) std::this_thread::sleep_for(read_delay_);
  IoOp op;
  op.op = v1::OP_READ;
  op.volume_id = req->volume_id();
  op.epoch = req->epoch();
  op.offset = req->offset();
  op.length = req->length();
  op.read_out = resp->mutable_data();
  op.server_generation = req->server_generation();
  return SubmitOne(&op);
}

grpc::Status VolumeService::Write(grpc::ServerContext*, const v1::WriteRequest* req,
                                  v1::WriteResponse*) {
  if (holds_writes()) HoldUnary(req->epoch());
  IoOp op;
  op.op = v1::OP_WRITE;
  op.fua = req->fua();
  op.volume_id = req->volume_id();
  op.epoch = req->epoch();
  op.offset = req->offset();
  op.length = req->data().size();
  op.data = req->data();
  op.out_mask = req->out_mask();
  op.server_generation = req->server_generation();
  return SubmitOne(&op);
}

grpc::Status VolumeService::ZeroRange(grpc::ServerContext*, const v1::ZeroRangeRequest* req,
                                      v1::ZeroRangeResponse*) {
  if (holds_writes()) HoldUnary(req->epoch());
  IoOp op;
  op.op = req->discard() ? v1::OP_DISCARD : v1::OP_WRITE_ZEROES;
  op.fua = req->fua();
  op.volume_id = req->volume_id();
  op.epoch = req->epoch();
  op.offset = req->offset();
  op.length = req->length();
  op.out_mask = req->out_mask();
  op.server_generation = req->server_generation();
  return SubmitOne(&op);
}

grpc::Status VolumeService::Flush(grpc::ServerContext*, const v1::FlushRequest* req,
                                  v1::FlushResponse*) {
  IoOp op;
  op.op = v1::OP_FLUSH;
  op.volume_id = req->volume_id();
  op.epoch = req->epoch();
  op.server_generation = req->server_generation();
  return SubmitOne(&op);
}

// ---- Stream support ----

bool VolumeService::AddStream(StreamSlot* s) {
  std::lock_guard l(streams_mu_);
  if (draining_) return false;
  streams_.insert(s);
  metrics_->active_streams.fetch_add(1);
  return true;
}

bool VolumeService::BeginBatch(StreamSlot* s) {
  std::lock_guard l(streams_mu_);
  s->busy = true;
  return !draining_;
}

bool VolumeService::EndBatch(StreamSlot* s) {
  std::lock_guard l(streams_mu_);
  s->busy = false;
  return !draining_;
}

void VolumeService::RemoveStream(StreamSlot* s) {
  std::lock_guard l(streams_mu_);
  if (streams_.erase(s) == 0) return;
  streams_cv_.notify_all();
  metrics_->active_streams.fetch_sub(1);
}

grpc::Status VolumeService::ApplyBatch(const v1::IoBatch& in, v1::CompletionBatch* out,
                                       std::vector<IoOp>* ops) {
  const uint64_t start = NowNs();
  const int n = in.requests_size();
  if (static_cast<uint32_t>(n) > limits_.max_batch_requests) {
    return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                        "batch of " + std::to_string(n) + " requests exceeds max_batch_requests " +
                            std::to_string(limits_.max_batch_requests));
  }
  uint64_t batch_bytes = 0;
  for (const auto& r : in.requests()) {
    if (r.op() == v1::OP_READ || r.op() == v1::OP_WRITE) batch_bytes += r.length();
  }
  if (batch_bytes > limits_.max_batch_bytes) {
    return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                        "batch of " + std::to_string(batch_bytes) +
                            " bytes exceeds max_batch_bytes " +
                            std::to_string(limits_.max_batch_bytes));
  }
  out->Clear();
  ops->resize(n);
  for (int i = 0; i < n; ++i) {
    const v1::IoRequest& r = in.requests(i);
    v1::IoCompletion* c = out->add_completions();
    c->set_tag(r.tag());
    IoOp& op = (*ops)[i];
    op.op = r.op();
    op.fua = r.fua();
    op.volume_id = r.volume_id();
    op.epoch = r.epoch();
    op.offset = r.offset();
    op.length = r.length();
    op.data = r.data();
    op.read_out = r.op() == v1::OP_READ ? c->mutable_data() : nullptr;
    op.out_mask = r.out_mask();
    op.server_generation = r.server_generation();
    op.status = Status::Ok();
    op.current_epoch = 0;
  }
  store_->SubmitBatch(*ops);
  for (int i = 0; i < n; ++i) {
    const IoOp& op = (*ops)[i];
    if (!op.status.ok()) {
      v1::IoCompletion* c = out->mutable_completions(i);
      c->set_code(static_cast<int32_t>(ToGrpcCode(op.status.code())));
      c->set_message(op.status.message());
      c->clear_data();
      if (op.status.code() == Status::Code::kFailedPrecondition) {
        c->set_current_epoch(op.current_epoch);
      }
    }
  }
  Record(*ops, NowNs() - start);
  metrics_->batches.fetch_add(1, std::memory_order_relaxed);
  return grpc::Status::OK;
}

}  // namespace unbd::backend
