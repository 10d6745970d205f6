// VolumeStatus: what `unbd volume status` shows of a replicated volume without talking to its
// owner (docs/replication.md, section 6): every replica's stored volume record and dirty-region
// counts, and the metadata view of the majority (the highest (written_epoch, config_version) copy
// among the answers; what the next owner would adopt). Read-only: it never opens the volume, so
// it works while a frontend owns it.
#pragma once

#include <chrono>
#include <map>
#include <string>
#include <vector>

#include "common/status.h"
#include "unbd/v1/volume.pb.h"

namespace unbd::replication {

struct ReplicaView {
  std::string target;
  Status status;                       // of the StatVolume by name
  v1::Volume volume;                   // when status.ok()
  std::map<uint32_t, uint64_t> dirty;  // region set -> regions (non-empty sets only)
};

enum class VolumeHealth { kHealthy = 0, kDegraded = 1, kNoMajority = 2 };

struct VolumeStatusView {
  std::string name;
  std::vector<ReplicaView> replicas;  // the metadata's replica set (plus any other target asked)
  v1::ReplicaSetMeta meta;            // the adopted view; empty when nobody answered with one
  size_t answered = 0;                // replicas of meta's set that answered
  uint64_t epoch = 0;                 // the highest epoch any replica holds ...
  std::string owner;                  // ... and the client that opened it
  VolumeHealth health = VolumeHealth::kNoMajority;
};

// Queries `targets` (and every replica the metadata names) for volume `name`, in parallel.
// Fails only for bad input; unreachable replicas show in the view.
Status GatherVolumeStatus(const std::vector<std::string>& targets, const std::string& name,
                          std::chrono::milliseconds timeout, VolumeStatusView* out);

}  // namespace unbd::replication
