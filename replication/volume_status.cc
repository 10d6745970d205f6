#include "replication/volume_status.h"

#include <algorithm>

#include "replication/quorum_open.h"
#include "replication/replica_meta.h"
#include "replication/replica_rpc.h"

namespace unbd::replication {
namespace {

void Query(const std::string& name, std::chrono::milliseconds timeout, ReplicaView* v) {
  ReplicaRpc rpc(v->target, timeout);
  v1::VolumeRef ref;
  ref.set_name(name);
  v->status = rpc.Stat(ref, &v->volume);
  if (!v->status.ok()) return;
  std::vector<v1::RegionSetCount> counts;
  if (rpc.CountRegions(v->volume.id(), &counts, nullptr).ok()) {
    for (const auto& c : counts) v->dirty[c.set()] = c.regions();
  }
}

}  // namespace

Status GatherVolumeStatus(const std::vector<std::string>& targets, const std::string& name,
                          std::chrono::milliseconds timeout, VolumeStatusView* out) {
  *out = VolumeStatusView{};
  out->name = name;
  if (targets.empty()) return Status::InvalidArgument("no replicas given");
  std::vector<ReplicaView> asked(targets.size());
  for (size_t i = 0; i < targets.size(); ++i) asked[i].target = targets[i];
  ForEachParallel(asked.size(), [&](size_t i) { Query(name, timeout, &asked[i]); });
  auto adopt = [&](const std::vector<ReplicaView>& views) {
    for (const auto& v : views) {
      if (v.status.ok() && v.volume.replica_set().config_version() > 0 &&
          (out->meta.config_version() == 0 || MetaNewer(v.volume.replica_set(), out->meta))) {
        out->meta = v.volume.replica_set();
      }
    }
  };
  adopt(asked);
  // The metadata is authoritative for the replica set: ask the members nobody named.
  std::vector<ReplicaView> extra;
  for (const auto& r : out->meta.replicas()) {
    if (std::none_of(asked.begin(), asked.end(),
                     [&](const ReplicaView& v) { return v.target == r.address(); })) {
      extra.push_back({.target = r.address(), .status = {}, .volume = {}, .dirty = {}});
    }
  }
  ForEachParallel(extra.size(), [&](size_t i) { Query(name, timeout, &extra[i]); });
  adopt(extra);
  asked.insert(asked.end(), extra.begin(), extra.end());

  // Order as the replica set, then anything else that was asked.
  for (const auto& r : out->meta.replicas()) {
    auto it = std::find_if(asked.begin(), asked.end(),
                           [&](const ReplicaView& v) { return v.target == r.address(); });
    if (it == asked.end()) continue;
    out->answered += it->status.ok();
    out->replicas.push_back(std::move(*it));
    asked.erase(it);
  }
  for (auto& v : asked) out->replicas.push_back(std::move(v));
  for (const auto& v : out->replicas) {
    if (v.status.ok() && v.volume.epoch() > out->epoch) {
      out->epoch = v.volume.epoch();
      out->owner = v.volume.client_id();
    }
  }
  const size_t n = out->meta.replicas_size();
  if (n == 0 || out->answered < Majority(n)) {
    out->health = VolumeHealth::kNoMajority;
    return Status::Ok();
  }
  out->health = VolumeHealth::kHealthy;
  for (int i = 0; i < out->meta.replicas_size(); ++i) {
    if (out->meta.replicas(i).state() != v1::REPLICA_HEALTHY || !out->replicas[i].status.ok())
      out->health = VolumeHealth::kDegraded;
  }
  return Status::Ok();
}

}  // namespace unbd::replication
