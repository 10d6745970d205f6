#include "cli/volume_view.h"

#include <algorithm>
#include <cstdio>

#include "replication/replica_meta.h"
#include "replication/replica_rpc.h"

namespace unbd::cli {

std::string HumanSize(uint64_t b) {
  static const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  int u = 0;
  double v = static_cast<double>(b);
  while (v >= 1024 && u < 6) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", v, units[u]);
  return buf;
}

const char* HealthName(replication::VolumeHealth h) {
  switch (h) {
    case replication::VolumeHealth::kHealthy:
      return "healthy";
    case replication::VolumeHealth::kDegraded:
      return "degraded";
    case replication::VolumeHealth::kNoMajority:
      return "no majority";
  }
  return "?";
}

nlohmann::json VolumeJson(const v1::Volume& v) {
  return {{"id", v.id()},
          {"name", v.name()},
          {"size_bytes", v.size_bytes()},
          {"block_size", v.block_size()},
          {"epoch", v.epoch()},
          {"client_id", v.client_id()},
          {"created_unix_ms", v.created_unix_ms()},
          {"approx_stored_bytes", v.approx_stored_bytes()}};
}

nlohmann::json VolumeStatusJson(const replication::VolumeStatusView& v) {
  const auto& m = v.meta;
  nlohmann::json reps = nlohmann::json::array();
  for (size_t i = 0; i < v.replicas.size(); ++i) {
    const auto& r = v.replicas[i];
    nlohmann::json j = {{"address", r.target}, {"reachable", r.status.ok()}};
    if (!r.status.ok()) j["error"] = r.status.ToString();
    if (r.status.ok()) {
      j["volume_id"] = r.volume.id();
      j["uuid"] = r.volume.replica_uuid();
      j["epoch"] = r.volume.epoch();
      nlohmann::json d = nlohmann::json::object();
      for (const auto& [set, n] : r.dirty) {
        d[set == replication::kUnstableSet ? "unstable" : "for_replica_" + std::to_string(set - 1)] = n;
      }
      j["dirty_regions"] = d;
    }
    if (static_cast<int>(i) < m.replicas_size()) {
      const auto& info = m.replicas(i);
      j["index"] = i;
      j["state"] = replication::StateName(info.state());
      j["full_rebuild"] = info.full_rebuild();
      j["state_since_unix_ms"] = info.state_since_unix_ms();
      if (info.state() == v1::REPLICA_REBUILDING) {
        const uint64_t total = info.resync_total_bytes(), done = info.resync_done_bytes();
        j["resync"] = {{"done_bytes", done},
                       {"total_bytes", total},
                       {"left_bytes", total - std::min(done, total)},
                       {"percent", total ? 100.0 * done / total : 0.0},
                       {"bytes_per_s", info.resync_bytes_per_s()},
                       {"eta_seconds", info.resync_bytes_per_s() > 0
                                           ? (total - std::min(done, total)) /
                                                 info.resync_bytes_per_s()
                                           : 0.0}};
      }
    } else {
      j["state"] = "not in the replica set";
    }
    reps.push_back(j);
  }
  nlohmann::json out = {{"name", v.name},
                        {"health", HealthName(v.health)},
                        {"size_bytes", m.size_bytes()},
                        {"region_bytes", m.region_bytes()},
                        {"epoch", v.epoch},
                        {"owner", v.owner},
                        {"config_version", m.config_version()},
                        {"written_epoch", m.written_epoch()},
                        {"replicas_answered", v.answered},
                        {"replicas", reps}};
  return out;
}

}  // namespace unbd::cli
