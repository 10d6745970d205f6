#include "replication/replica_rpc.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <mutex>
#include <random>
#include <thread>

#include "backend/admin_client.h"

namespace unbd::replication {

void ForEachParallel(size_t n, const std::function<void(size_t)>& fn) {
  if (n == 1) return fn(0);
  std::vector<std::thread> threads;
  threads.reserve(n);
  for (size_t i = 0; i < n; ++i) threads.emplace_back(fn, i);
  for (auto& t : threads) t.join();
}

bool IsFenced(const Status& s) {
  return s.code() == Status::Code::kFailedPrecondition &&
         s.message().find("is fenced by epoch") != std::string::npos;
}

bool IsGenerationGone(const Status& s) {
  return s.code() == Status::Code::kAborted &&
         s.message().find("server generation") != std::string::npos &&
         s.message().find("is gone") != std::string::npos;
}

std::string NewReplicaUuid() {
  std::random_device rd;
  std::mt19937_64 rng((uint64_t(rd()) << 32) ^ rd());
  const uint64_t hi = (rng() & ~0xf000ull) | 0x4000ull;                  // version 4
  const uint64_t lo = (rng() & 0x3fffffffffffffffull) | 0x8000000000000000ull;  // variant 1
  char buf[40];
  std::snprintf(buf, sizeof buf, "%08x-%04x-%04x-%04x-%012llx", uint32_t(hi >> 32),
                uint32_t(hi >> 16) & 0xffff, uint32_t(hi) & 0xffff, uint32_t(lo >> 48),
                static_cast<unsigned long long>(lo & 0xffffffffffffull));
  return buf;
}

std::shared_ptr<grpc::Channel> SharedChannel(const std::string& target) {
  static std::mutex mu;
  static std::map<std::string, std::weak_ptr<grpc::Channel>> channels;
  std::lock_guard lock(mu);
  std::shared_ptr<grpc::Channel> c = channels[target].lock();
  if (!c) {
    // Entries of channels nobody holds any more go now: a test process meets many servers.
    std::erase_if(channels, [](const auto& e) { return e.second.expired(); });
    c = backend::MakeChannel(target);
    channels[target] = c;
  }
  return c;
}

ReplicaRpc::ReplicaRpc(std::string target, std::chrono::milliseconds timeout)
    : target_(std::move(target)),
      timeout_(timeout),
      channel_(SharedChannel(target_)),
      io_(v1::BlockIo::NewStub(channel_)),
      admin_(v1::VolumeAdmin::NewStub(channel_)),
      repl_(v1::Replication::NewStub(channel_)) {}

void ReplicaRpc::Arm(grpc::ClientContext* ctx) const {
  ctx->set_deadline(std::chrono::system_clock::now() + timeout_);
}

Status ReplicaRpc::RetryUnlessRefused(const std::function<Status()>& call) const {
  const auto settled = [](const Status& s) {
    return s.code() != Status::Code::kUnavailable || s.message().find("Connection refused") != std::string::npos;
  };
  const auto started = std::chrono::steady_clock::now();
  const auto deadline = started + timeout_;
  Status s = call();
  if (settled(s)) return s;
  const Status first = s;
  int attempts = 1;
  // Paced below gRPC's initial reconnect backoff (100 ms, backend::MakeChannel): a retry inside
  // it only gets the cached failure back.
  for (auto pause = std::chrono::milliseconds(25); !settled(s); pause = std::min(pause * 2, std::chrono::milliseconds(200))) {
    if (std::chrono::steady_clock::now() + pause >= deadline) break;
    std::this_thread::sleep_for(pause);
    s = call();
    ++attempts;
  }
  spdlog::info("{}: {} attempts in {:.1f} ms: {} (the first: {})", target_, attempts,
               std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started).count(),
               s.ok() ? "answered" : s.ToString(), first.ToString());
  return s;
}

Status ReplicaRpc::Open(uint64_t volume_id, uint64_t epoch, const std::string& client_id,
                        v1::OpenVolumeResponse* out) {
  grpc::ClientContext ctx;
  Arm(&ctx);
  v1::OpenVolumeRequest req;
  req.set_volume_id(volume_id);
  req.set_epoch(epoch);
  req.set_client_id(client_id);
  v1::OpenVolumeResponse resp;
  return backend::FromGrpc(io_->OpenVolume(&ctx, req, out ? out : &resp));
}

Status ReplicaRpc::Stat(const v1::VolumeRef& ref, v1::Volume* out, bool wait_for_ready) {
  grpc::ClientContext ctx;
  Arm(&ctx);
  ctx.set_wait_for_ready(wait_for_ready);
  v1::StatVolumeRequest req;
  *req.mutable_volume() = ref;
  v1::StatVolumeResponse resp;
  Status s = backend::FromGrpc(admin_->StatVolume(&ctx, req, &resp));
  if (s.ok() && out) *out = resp.volume();
  return s;
}

Status ReplicaRpc::Create(const std::string& name, uint64_t size_bytes, const std::string& uuid,
                          v1::Volume* out) {
  grpc::ClientContext ctx;
  Arm(&ctx);
  v1::CreateVolumeRequest req;
  req.set_name(name);
  req.set_size_bytes(size_bytes);
  req.set_replica_uuid(uuid);
  v1::CreateVolumeResponse resp;
  Status s = backend::FromGrpc(admin_->CreateVolume(&ctx, req, &resp));
  if (s.ok() && out) *out = resp.volume();
  return s;
}

Status ReplicaRpc::Delete(uint64_t volume_id) {
  grpc::ClientContext ctx;
  Arm(&ctx);
  v1::DeleteVolumeRequest req;
  req.mutable_volume()->set_id(volume_id);
  v1::DeleteVolumeResponse resp;
  return backend::FromGrpc(admin_->DeleteVolume(&ctx, req, &resp));
}

Status ReplicaRpc::Grow(uint64_t volume_id, uint64_t size_bytes, uint64_t epoch, v1::Volume* out) {
  grpc::ClientContext ctx;
  Arm(&ctx);
  v1::ResizeVolumeRequest req;
  req.mutable_volume()->set_id(volume_id);
  req.set_new_size_bytes(size_bytes);
  req.set_epoch(epoch);
  v1::ResizeVolumeResponse resp;
  Status s = backend::FromGrpc(admin_->ResizeVolume(&ctx, req, &resp));
  // The server refuses a shrink with INVALID_ARGUMENT "cannot shrink": the copy is larger already.
  if (s.code() == Status::Code::kInvalidArgument &&
      s.message().find("cannot shrink") != std::string::npos) {
    v1::VolumeRef ref;
    ref.set_id(volume_id);
    return Stat(ref, out);
  }
  if (s.ok() && out) *out = resp.volume();
  return s;
}

Status ReplicaRpc::Read(uint64_t volume_id, uint64_t epoch, uint64_t offset, uint32_t length,
                        std::string* out, uint64_t generation) {
  grpc::ClientContext ctx;
  Arm(&ctx);
  v1::ReadRequest req;
  req.set_server_generation(generation);
  req.set_volume_id(volume_id);
  req.set_epoch(epoch);
  req.set_offset(offset);
  req.set_length(length);
  v1::ReadResponse resp;
  Status s = backend::FromGrpc(io_->Read(&ctx, req, &resp));
  if (s.ok()) *out = std::move(*resp.mutable_data());
  return s;
}

Status ReplicaRpc::Checksums(uint64_t volume_id, uint64_t start_block, uint32_t count,
                             std::vector<uint64_t>* out) {
  grpc::ClientContext ctx;
  Arm(&ctx);
  v1::BlockChecksumsRequest req;
  req.mutable_volume()->set_id(volume_id);
  req.set_start_block(start_block);
  req.set_block_count(count);
  v1::BlockChecksumsResponse resp;
  Status s = backend::FromGrpc(admin_->BlockChecksums(&ctx, req, &resp));
  if (s.ok() && resp.checksums_size() != static_cast<int>(count))
    s = Status::Internal(target_ + ": " + std::to_string(resp.checksums_size()) + " checksums for " +
                         std::to_string(count) + " blocks");
  if (s.ok()) out->assign(resp.checksums().begin(), resp.checksums().end());
  return s;
}

Status ReplicaRpc::Write(uint64_t volume_id, uint64_t epoch, uint64_t offset, std::string_view data,
                         bool fua, uint32_t out_mask, uint64_t generation) {
  grpc::ClientContext ctx;
  Arm(&ctx);
  v1::WriteRequest req;
  req.set_server_generation(generation);
  req.set_volume_id(volume_id);
  req.set_epoch(epoch);
  req.set_offset(offset);
  req.set_fua(fua);
  req.set_out_mask(out_mask);
  req.set_data(std::string(data));
  v1::WriteResponse resp;
  return backend::FromGrpc(io_->Write(&ctx, req, &resp));
}

Status ReplicaRpc::Zero(uint64_t volume_id, uint64_t epoch, uint64_t offset, uint64_t length,
                        bool discard, uint32_t out_mask, uint64_t generation) {
  grpc::ClientContext ctx;
  Arm(&ctx);
  v1::ZeroRangeRequest req;
  req.set_server_generation(generation);
  req.set_volume_id(volume_id);
  req.set_epoch(epoch);
  req.set_offset(offset);
  req.set_length(length);
  req.set_discard(discard);
  req.set_out_mask(out_mask);
  v1::ZeroRangeResponse resp;
  return backend::FromGrpc(io_->ZeroRange(&ctx, req, &resp));
}

Status ReplicaRpc::Flush(uint64_t volume_id, uint64_t epoch, uint64_t generation) {
  grpc::ClientContext ctx;
  Arm(&ctx);
  v1::FlushRequest req;
  req.set_server_generation(generation);
  req.set_volume_id(volume_id);
  req.set_epoch(epoch);
  v1::FlushResponse resp;
  return backend::FromGrpc(io_->Flush(&ctx, req, &resp));
}

Status ReplicaRpc::PutMeta(uint64_t volume_id, uint64_t epoch, const v1::ReplicaSetMeta& meta) {
  grpc::ClientContext ctx;
  Arm(&ctx);
  v1::PutReplicaMetaRequest req;
  req.set_volume_id(volume_id);
  req.set_epoch(epoch);
  *req.mutable_meta() = meta;
  v1::PutReplicaMetaResponse resp;
  return backend::FromGrpc(repl_->PutReplicaMeta(&ctx, req, &resp));
}

Status ReplicaRpc::GetRegions(uint64_t volume_id, uint32_t set, std::vector<uint64_t>* regions,
                              uint64_t* region_bytes) {
  grpc::ClientContext ctx;
  Arm(&ctx);
  v1::GetDirtyRegionsRequest req;
  req.set_volume_id(volume_id);
  req.set_set(set);
  v1::GetDirtyRegionsResponse resp;
  Status s = backend::FromGrpc(repl_->GetDirtyRegions(&ctx, req, &resp));
  if (!s.ok()) return s;
  if (regions) regions->assign(resp.regions().begin(), resp.regions().end());
  if (region_bytes) *region_bytes = resp.region_bytes();
  return s;
}

Status ReplicaRpc::CountRegions(uint64_t volume_id, std::vector<v1::RegionSetCount>* counts,
                                uint64_t* region_bytes) {
  grpc::ClientContext ctx;
  Arm(&ctx);
  v1::GetDirtyRegionsRequest req;
  req.set_volume_id(volume_id);
  req.set_counts_only(true);
  v1::GetDirtyRegionsResponse resp;
  Status s = backend::FromGrpc(repl_->GetDirtyRegions(&ctx, req, &resp));
  if (!s.ok()) return s;
  if (counts) counts->assign(resp.counts().begin(), resp.counts().end());
  if (region_bytes) *region_bytes = resp.region_bytes();
  return s;
}

Status ReplicaRpc::MarkRegions(uint64_t volume_id, uint64_t epoch, uint32_t set,
                               const std::vector<uint64_t>& regions) {
  if (regions.empty()) return Status::Ok();
  grpc::ClientContext ctx;
  Arm(&ctx);
  v1::MarkDirtyRegionsRequest req;
  req.set_volume_id(volume_id);
  req.set_epoch(epoch);
  req.set_set(set);
  req.mutable_regions()->Add(regions.begin(), regions.end());
  v1::MarkDirtyRegionsResponse resp;
  return backend::FromGrpc(repl_->MarkDirtyRegions(&ctx, req, &resp));
}

Status ReplicaRpc::ClearRegions(uint64_t volume_id, uint64_t epoch, uint32_t set,
                                const std::vector<uint64_t>& regions, bool all) {
  if (!all && regions.empty()) return Status::Ok();
  grpc::ClientContext ctx;
  Arm(&ctx);
  v1::ClearDirtyRegionsRequest req;
  req.set_volume_id(volume_id);
  req.set_epoch(epoch);
  req.set_set(set);
  req.set_all(all);
  if (!all) req.mutable_regions()->Add(regions.begin(), regions.end());
  v1::ClearDirtyRegionsResponse resp;
  return backend::FromGrpc(repl_->ClearDirtyRegions(&ctx, req, &resp));
}

}  // namespace unbd::replication
