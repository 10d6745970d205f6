#include "backend/metrics.h"

#include <algorithm>
#include <mutex>

#include <fmt/format.h>

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

}  // namespace unbd::backend
