// Metrics: per-volume request counters, byte counters, latency histograms and fenced-request
// counts, rendered in the Prometheus text format (served by backend/metrics_http.h). Recording is
// lock-free (atomics); only finding a volume's entry takes a shared lock.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <shared_mutex>
#include <string>
#include <utility>
#include <vector>

#include "unbd/v1/io.pb.h"

namespace unbd::backend {

// One replicated volume as this server stores it: the replica metadata its owner committed here
// (each replica's state and checkpointed resync progress) and the region count of every
// non-empty dirty-region set (0 = unstable, p + 1 = PeerSet(p)).
struct ReplicaSetView {
  uint64_t volume_id = 0;
  std::string name;
  std::string replica_uuid;  // this server's copy
  v1::ReplicaSetMeta meta;
  std::vector<std::pair<uint32_t, uint64_t>> dirty_regions;  // (set, regions)
};

class Metrics {
 public:
  static constexpr int kNumOps = 6;  // indexed by v1::Opcode
  static constexpr std::array<double, 15> kBucketsSeconds = {
      25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3,
      10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 500e-3, 1.0};

  struct Histogram {
    std::array<std::atomic<uint64_t>, kBucketsSeconds.size() + 1> buckets{};
    std::atomic<uint64_t> count{0};
    std::atomic<uint64_t> sum_ns{0};
    void Observe(uint64_t ns);
  };

  struct VolumeMetrics {
    std::array<std::atomic<uint64_t>, kNumOps> ops{};
    std::array<std::atomic<uint64_t>, kNumOps> errors{};
    std::array<std::atomic<uint64_t>, kNumOps> bytes{};
    std::array<Histogram, kNumOps> latency;
    std::atomic<uint64_t> fenced{0};
  };

  // The entry for an existing volume (created on first use). Entries are never removed: batches
  // in flight hold references, and a deleted volume's series simply stop changing.
  VolumeMetrics& ForVolume(uint64_t volume_id);

  std::atomic<uint64_t> unknown_volume_requests{0};
  std::atomic<uint64_t> batches{0};
  std::atomic<int64_t> active_streams{0};
  std::atomic<uint64_t> wal_syncs{0};  // refreshed from the store when rendering
  std::atomic<bool> store_write_failed{false};  // ditto: the store refuses writes until restart

  std::string RenderPrometheus() const;
  // The replication gauges (unbd_replica_state, unbd_resync_*, unbd_dirty_regions) of `views`.
  static std::string RenderReplicaSets(const std::vector<ReplicaSetView>& views);

 private:
  mutable std::shared_mutex mu_;
  std::map<uint64_t, std::unique_ptr<VolumeMetrics>> volumes_;
};

}  // namespace unbd::backend
