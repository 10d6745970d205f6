// The region sets of a replicated volume's copy, as replication.proto numbers them (the `set`
// field of its dirty-region calls): the owner's requests and the replica's store both use these.
#pragma once

#include <cstdint>

namespace unbd::replication {

// Regions written since the last FLUSH that completed on every healthy replica: what a crash may
// leave different between replicas, reconciled when the next owner opens the volume.
inline constexpr uint32_t kUnstableSet = 0;
// The regions written while replica `replica_index` (its position in the replica set) was out:
// what it copies back when it returns.
inline constexpr uint32_t PeerSet(uint32_t replica_index) {
  return replica_index + 1;
}

}  // namespace unbd::replication
