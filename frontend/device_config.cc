#include "frontend/device_config.h"

#include <linux/ublk_cmd.h>

namespace unbd::frontend {

const char* TargetTypeName(TargetType t) {
  switch (t) {
    case TargetType::kNull:
      return "null";
    case TargetType::kLoop:
      return "loop";
    case TargetType::kRemote:
      return "remote";
  }
  return "?";
}

Status ParseTargetType(const std::string& name, TargetType* out) {
  if (name == "null") {
    *out = TargetType::kNull;
  } else if (name == "loop") {
    *out = TargetType::kLoop;
  } else if (name == "remote") {
    *out = TargetType::kRemote;
  } else {
    return Status::InvalidArgument("unknown target type '" + name + "' (expected null, loop or remote)");
  }
  return Status::Ok();
}

namespace {

// A replicated volume lives on 1 to 5 distinct servers (docs/replication.md).
Status ValidateReplicas(const std::vector<std::string>& replicas, const std::string& server) {
  if (!server.empty())
    return Status::InvalidArgument("give either --server (one copy) or --replicas (a replicated volume), not both");
  if (replicas.size() > 5)
    return Status::InvalidArgument("--replicas: " + std::to_string(replicas.size()) +
                                   " servers given, a volume has at most 5 replicas");
  for (size_t i = 0; i < replicas.size(); ++i) {
    const std::string& r = replicas[i];
    const auto colon = r.rfind(':');
    if (r.empty() || colon == std::string::npos || colon == 0 || colon + 1 == r.size())
      return Status::InvalidArgument("--replicas entry '" + r + "': expected HOST:PORT");
    for (size_t k = 0; k < i; ++k) {
      if (replicas[k] == r)
        return Status::InvalidArgument("--replicas: '" + r + "' is listed twice");
    }
  }
  return Status::Ok();
}

}  // namespace

Status DeviceConfig::Validate() const {
  if (dev_id < -1 || dev_id > 1048575)
    return Status::InvalidArgument("-n " + std::to_string(dev_id) + ": device id must be 0..1048575");
  if (nr_queues < 1 || nr_queues > 64)
    return Status::InvalidArgument("-q " + std::to_string(nr_queues) + ": queues must be 1..64");
  if (queue_depth < 1 || queue_depth > UBLK_MAX_QUEUE_DEPTH)
    return Status::InvalidArgument("-d " + std::to_string(queue_depth) + ": depth must be 1.." +
                                   std::to_string(UBLK_MAX_QUEUE_DEPTH));
  if (max_io_bytes < 4096 || max_io_bytes > (4u << 20) || max_io_bytes % 4096)
    return Status::InvalidArgument("max I/O size " + std::to_string(max_io_bytes) +
                                   " must be a multiple of 4096 between 4 KiB and 4 MiB");
  if (logical_block_size < 512 || logical_block_size > 4096 ||
      (logical_block_size & (logical_block_size - 1)))
    return Status::InvalidArgument("block size " + std::to_string(logical_block_size) +
                                   " must be a power of two between 512 and 4096");
  if (io_scheduler.empty() || io_scheduler.size() > 32 ||
      io_scheduler.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789-_") != std::string::npos)
    return Status::InvalidArgument("--io-scheduler '" + io_scheduler +
                                   "': expected a scheduler name like none or mq-deadline, or keep");
  if (poll_us > 10000)
    return Status::InvalidArgument("--poll-us " + std::to_string(poll_us) + ": must be 0..10000");
  if (reissue && !recovery)
    return Status::InvalidArgument("--reissue needs --recovery");
  if (standby && !recovery)
    return Status::InvalidArgument("--standby needs --recovery");
  switch (target) {
    case TargetType::kNull:
      if (!file.empty() || !server.empty() || !volume.empty() || !replicas.empty())
        return Status::InvalidArgument("the null target takes no -f/--server/--replicas/--volume");
      break;
    case TargetType::kLoop:
      if (file.empty()) return Status::InvalidArgument("the loop target needs -f FILE");
      if (!server.empty() || !volume.empty() || !replicas.empty())
        return Status::InvalidArgument("the loop target takes no --server/--replicas/--volume");
      break;
    case TargetType::kRemote:
      if (!replicas.empty()) {
        Status s = ValidateReplicas(replicas, server);
        if (!s.ok()) return s;
      } else {
        if (server.empty())
          return Status::InvalidArgument("the remote target needs --server HOST:PORT or --replicas HOST:PORT,...");
        if (server.find(':') == std::string::npos)
          return Status::InvalidArgument("--server '" + server + "': expected HOST:PORT");
      }
      if (volume.empty()) return Status::InvalidArgument("the remote target needs --volume NAME");
      if (!file.empty()) return Status::InvalidArgument("the remote target takes no -f");
      break;
  }
  return Status::Ok();
}

uint64_t DeviceConfig::ublk_flags() const {
  uint64_t f = 0;
  if (need_get_data) f |= UBLK_F_NEED_GET_DATA;
  if (recovery) f |= UBLK_F_USER_RECOVERY;
  if (reissue) f |= UBLK_F_USER_RECOVERY_REISSUE;
  return f;
}

nlohmann::json ToJson(const DeviceConfig& c) {
  nlohmann::json j = {
      {"target", TargetTypeName(c.target)},
      {"dev_id", c.dev_id},
      {"nr_queues", c.nr_queues},
      {"queue_depth", c.queue_depth},
      {"max_io_bytes", c.max_io_bytes},
      {"logical_block_size", c.logical_block_size},
      {"recovery", c.recovery},
      {"reissue", c.reissue},
      {"standby", c.standby},
      {"need_get_data", c.need_get_data},
      {"io_scheduler", c.io_scheduler},
      {"poll_us", c.poll_us},
  };
  switch (c.target) {
    case TargetType::kNull:
      j["null"] = {{"size_bytes", c.null_size_bytes}};
      break;
    case TargetType::kLoop:
      j["loop"] = {{"file", c.file}, {"direct_io", c.direct_io}};
      break;
    case TargetType::kRemote:
      j["remote"] = {{"server", c.server}, {"volume", c.volume}, {"retry_deadline_ms", c.retry_deadline_ms}};
      if (!c.replicas.empty()) j["remote"]["replicas"] = c.replicas;
      break;
  }
  return j;
}

Status FromJson(const nlohmann::json& j, DeviceConfig* out) {
  if (!j.is_object()) return Status::InvalidArgument("device config is not a JSON object");
  DeviceConfig c;
  try {
    Status s = ParseTargetType(j.at("target").get<std::string>(), &c.target);
    if (!s.ok()) return s;
    c.dev_id = j.at("dev_id").get<int>();
    c.nr_queues = j.at("nr_queues").get<uint16_t>();
    c.queue_depth = j.at("queue_depth").get<uint16_t>();
    c.max_io_bytes = j.at("max_io_bytes").get<uint32_t>();
    c.logical_block_size = j.at("logical_block_size").get<uint32_t>();
    c.recovery = j.at("recovery").get<bool>();
    c.reissue = j.at("reissue").get<bool>();
    c.need_get_data = j.at("need_get_data").get<bool>();
    // State files written before these options existed.
    c.io_scheduler = j.value("io_scheduler", std::string("keep"));
    c.poll_us = j.value("poll_us", 0u);
    c.standby = j.value("standby", false);
    switch (c.target) {
      case TargetType::kNull:
        c.null_size_bytes = j.at("null").at("size_bytes").get<uint64_t>();
        break;
      case TargetType::kLoop:
        c.file = j.at("loop").at("file").get<std::string>();
        c.direct_io = j.at("loop").at("direct_io").get<bool>();
        break;
      case TargetType::kRemote:
        c.server = j.at("remote").at("server").get<std::string>();
        c.volume = j.at("remote").at("volume").get<std::string>();
        c.retry_deadline_ms = j.at("remote").at("retry_deadline_ms").get<uint32_t>();
        if (j.at("remote").contains("replicas"))
          c.replicas = j.at("remote").at("replicas").get<std::vector<std::string>>();
        break;
    }
  } catch (const nlohmann::json::exception& e) {
    return Status::InvalidArgument(std::string("device config: ") + e.what());
  }
  Status s = c.Validate();
  if (!s.ok()) return s;
  *out = c;
  return Status::Ok();
}

}  // namespace unbd::frontend
