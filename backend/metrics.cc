#include "backend/metrics.h"

#include <fmt/format.h>

#include <algorithm>
#include <mutex>

namespace unbd::backend {
namespace {

const char* OpName(int op) {
  switch (op) {
    case v1::OP_READ: return "read";
    case v1::OP_WRITE: return "write";
    case v1::OP_FLUSH: return "flush";
    case v1::OP_DISCARD: return "discard";
    case v1::OP_WRITE_ZEROES: return "write_zeroes";
    default: return "unknown";
  }
}

// Label values are addresses and volume names: escape what the text format needs escaped.
std::string Escaped(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

}  // namespace

void Metrics::Histogram::Observe(uint64_t ns) {
  const double s = static_cast<double>(ns) * 1e-9;
  size_t i = std::lower_bound(kBucketsSeconds.begin(), kBucketsSeconds.end(), s) -
             kBucketsSeconds.begin();
  buckets[i].fetch_add(1, std::memory_order_relaxed);
  count.fetch_add(1, std::memory_order_relaxed);
  sum_ns.fetch_add(ns, std::memory_order_relaxed);
}

Metrics::VolumeMetrics& Metrics::ForVolume(uint64_t volume_id) {
  {
    std::shared_lock l(mu_);
    auto it = volumes_.find(volume_id);
    if (it != volumes_.end()) return *it->second;
  }
  std::unique_lock l(mu_);
  auto& slot = volumes_[volume_id];
  if (!slot) slot = std::make_unique<VolumeMetrics>();
  return *slot;
}

std::string Metrics::RenderPrometheus() const {
  std::string out;
  out += "# HELP unbd_requests_total Data requests by volume and operation.\n";
  out += "# TYPE unbd_requests_total counter\n";
  std::shared_lock l(mu_);
  for (const auto& [id, m] : volumes_) {
    for (int op = 1; op < kNumOps; ++op) {
      out += fmt::format("unbd_requests_total{{volume=\"{}\",op=\"{}\"}} {}\n", id, OpName(op),
                         m->ops[op].load());
    }
  }
  out += "# HELP unbd_request_errors_total Data requests that failed, by volume and operation.\n";
  out += "# TYPE unbd_request_errors_total counter\n";
  for (const auto& [id, m] : volumes_) {
    for (int op = 1; op < kNumOps; ++op) {
      out += fmt::format("unbd_request_errors_total{{volume=\"{}\",op=\"{}\"}} {}\n", id,
                         OpName(op), m->errors[op].load());
    }
  }
  out += "# HELP unbd_bytes_total Bytes read and written, by volume and operation.\n";
  out += "# TYPE unbd_bytes_total counter\n";
  for (const auto& [id, m] : volumes_) {
    for (int op : {v1::OP_READ, v1::OP_WRITE}) {
      out += fmt::format("unbd_bytes_total{{volume=\"{}\",op=\"{}\"}} {}\n", id, OpName(op),
                         m->bytes[op].load());
    }
  }
  out += "# HELP unbd_fenced_requests_total Requests refused because their epoch was stale.\n";
  out += "# TYPE unbd_fenced_requests_total counter\n";
  for (const auto& [id, m] : volumes_) {
    out += fmt::format("unbd_fenced_requests_total{{volume=\"{}\"}} {}\n", id, m->fenced.load());
  }
  out += "# HELP unbd_request_latency_seconds Server-side request latency (receive to reply).\n";
  out += "# TYPE unbd_request_latency_seconds histogram\n";
  for (const auto& [id, m] : volumes_) {
    for (int op = 1; op < kNumOps; ++op) {
      const Histogram& h = m->latency[op];
      uint64_t cum = 0;
      for (size_t b = 0; b < kBucketsSeconds.size(); ++b) {
        cum += h.buckets[b].load();
        out += fmt::format(
            "unbd_request_latency_seconds_bucket{{volume=\"{}\",op=\"{}\",le=\"{}\"}} {}\n", id,
            OpName(op), kBucketsSeconds[b], cum);
      }
      cum += h.buckets[kBucketsSeconds.size()].load();
      out += fmt::format(
          "unbd_request_latency_seconds_bucket{{volume=\"{}\",op=\"{}\",le=\"+Inf\"}} {}\n", id,
          OpName(op), cum);
      out += fmt::format("unbd_request_latency_seconds_sum{{volume=\"{}\",op=\"{}\"}} {:.9f}\n",
                         id, OpName(op), static_cast<double>(h.sum_ns.load()) * 1e-9);
      out += fmt::format("unbd_request_latency_seconds_count{{volume=\"{}\",op=\"{}\"}} {}\n", id,
                         OpName(op), h.count.load());
    }
  }
  l.unlock();
  out += "# TYPE unbd_unknown_volume_requests_total counter\n";
  out += fmt::format("unbd_unknown_volume_requests_total {}\n", unknown_volume_requests.load());
  out += "# TYPE unbd_stream_batches_total counter\n";
  out += fmt::format("unbd_stream_batches_total {}\n", batches.load());
  out += "# TYPE unbd_active_streams gauge\n";
  out += fmt::format("unbd_active_streams {}\n", active_streams.load());
  out += "# TYPE unbd_wal_syncs_total counter\n";
  out += fmt::format("unbd_wal_syncs_total {}\n", wal_syncs.load());
  out += "# HELP unbd_store_write_failed 1 once a write or WAL sync failed (disk full, I/O error): "
         "writes are refused until unbd-server restarts\n";
  out += "# TYPE unbd_store_write_failed gauge\n";
  out += fmt::format("unbd_store_write_failed {}\n", store_write_failed.load() ? 1 : 0);
  return out;
}

std::string Metrics::RenderReplicaSets(const std::vector<ReplicaSetView>& views) {
  static constexpr std::pair<v1::ReplicaState, const char*> kStates[] = {
      {v1::REPLICA_HEALTHY, "healthy"},
      {v1::REPLICA_OUT, "out"},
      {v1::REPLICA_REBUILDING, "rebuilding"}};
  std::string state, done, total, remaining, rate, eta, dirty;
  for (const auto& v : views) {
    const std::string vol = fmt::format("volume=\"{}\",name=\"{}\"", v.volume_id, Escaped(v.name));
    for (int i = 0; i < v.meta.replicas_size(); ++i) {
      const v1::ReplicaInfo& r = v.meta.replicas(i);
      const std::string labels =
          fmt::format("{},replica=\"{}\",address=\"{}\"", vol, i, Escaped(r.address()));
      for (const auto& [st, st_name] : kStates) {
        state += fmt::format("unbd_replica_state{{{},state=\"{}\"}} {}\n", labels, st_name,
                             r.state() == st ? 1 : 0);
      }
      // Progress means something only while it rebuilds; after that the last run's totals stay
      // in the metadata, and nothing remains.
      const bool rebuilding = r.state() == v1::REPLICA_REBUILDING;
      const uint64_t left = rebuilding && r.resync_total_bytes() > r.resync_done_bytes()
                                ? r.resync_total_bytes() - r.resync_done_bytes()
                                : 0;
      const double bps = rebuilding ? r.resync_bytes_per_s() : 0;
      done += fmt::format("unbd_resync_done_bytes{{{}}} {}\n", labels, r.resync_done_bytes());
      total += fmt::format("unbd_resync_total_bytes{{{}}} {}\n", labels, r.resync_total_bytes());
      remaining += fmt::format("unbd_resync_remaining_bytes{{{}}} {}\n", labels, left);
      rate += fmt::format("unbd_resync_rate_bytes_per_second{{{}}} {:.0f}\n", labels, bps);
      // Unknown (NaN) while bytes remain and no rate was measured yet.
      if (left > 0 && bps <= 0) {
        eta += fmt::format("unbd_resync_remaining_seconds{{{}}} NaN\n", labels);
      } else {
        eta += fmt::format("unbd_resync_remaining_seconds{{{}}} {:.1f}\n", labels,
                           left == 0 ? 0.0 : static_cast<double>(left) / bps);
      }
    }
    // Every set the metadata can name, so a set that empties reads 0 rather than vanishing.
    for (int set = 0; set <= v.meta.replicas_size(); ++set) {
      // No replica keeps a PeerSet for itself.
      if (set > 0 && v.meta.replicas(set - 1).uuid() == v.replica_uuid) continue;
      uint64_t n = 0;
      for (const auto& [s, regions] : v.dirty_regions) {
        if (s == static_cast<uint32_t>(set)) n = regions;
      }
      if (set == 0) {
        dirty += fmt::format("unbd_dirty_regions{{{},set=\"unstable\"}} {}\n", vol, n);
      } else {
        dirty += fmt::format("unbd_dirty_regions{{{},set=\"peer\",replica=\"{}\"}} {}\n", vol,
                             set - 1, n);
      }
    }
  }
  std::string out;
  out +=
      "# HELP unbd_replica_state State of each replica of a replicated volume held here, as "
      "the metadata stored here says (1 for its state).\n";
  out += "# TYPE unbd_replica_state gauge\n" + state;
  out +=
      "# HELP unbd_resync_done_bytes Bytes of the replica's dirty set copied by its resync "
      "(checkpointed by the owner).\n";
  out += "# TYPE unbd_resync_done_bytes gauge\n" + done;
  out +=
      "# HELP unbd_resync_total_bytes Bytes of the replica's dirty set (the volume for a full "
      "rebuild) of its last or running resync.\n";
  out += "# TYPE unbd_resync_total_bytes gauge\n" + total;
  out += "# HELP unbd_resync_remaining_bytes Bytes its running resync still has to copy.\n";
  out += "# TYPE unbd_resync_remaining_bytes gauge\n" + remaining;
  out += "# HELP unbd_resync_rate_bytes_per_second Copy rate of its running resync.\n";
  out += "# TYPE unbd_resync_rate_bytes_per_second gauge\n" + rate;
  out +=
      "# HELP unbd_resync_remaining_seconds Estimated time its running resync needs (NaN: no "
      "rate yet).\n";
  out += "# TYPE unbd_resync_remaining_seconds gauge\n" + eta;
  out +=
      "# HELP unbd_dirty_regions Regions in each dirty-region set of the volume here "
      "(unstable, or peer: written while that replica was out).\n";
  out += "# TYPE unbd_dirty_regions gauge\n" + dirty;
  return out;
}

}  // namespace unbd::backend
