// DeviceConfig: everything needed to (re)create one ublk device and its target, exactly as the user
// asked for it with `unbd add`. `unbd recover` rebuilds an identical daemon from the persisted copy,
// so every field that influences the device or the target lives here (and in its JSON form).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/status.h"

namespace unbd::frontend {

enum class TargetType { kNull, kLoop, kRemote };

struct DeviceConfig {
  TargetType target = TargetType::kNull;
  int dev_id = -1;  // -1: let the driver choose
  uint16_t nr_queues = 1;
  uint16_t queue_depth = 128;
  uint32_t max_io_bytes = 512 * 1024;
  uint32_t logical_block_size = 512;
  bool recovery = false;
  bool reissue = false;
  // With recovery: keep a standby daemon (started, connected to the target, waiting) that takes
  // over the moment the serving one dies, without waiting for `unbd recover`.
  bool standby = false;
  bool need_get_data = false;
  // The block layer's I/O scheduler for /dev/ublkbN, set once the disk exists. "none" by default,
  // as for loop and virtio-blk: the daemon and the backend order and batch I/O themselves, and
  // mq-deadline sends every unplugged request (all O_DIRECT reads) through a kblockd worker,
  // halving read IOPS. "keep" leaves the kernel's (or a udev rule's) choice alone.
  std::string io_scheduler = "none";
  // After a queue round that did work, spin up to this long (microseconds, adaptive: see
  // Queue::PollForEvent) for the next event before sleeping: a sleeping queue thread costs a
  // wakeup per request, most of QD1 latency. Off by default: on a small node the spinning takes
  // CPU from co-located servers (see frontend/README.md). 0: never.
  uint32_t poll_us = 0;

  // null
  uint64_t null_size_bytes = 250ull << 30;
  // loop
  std::string file;
  bool direct_io = true;  // try O_DIRECT, fall back to buffered I/O when the file system refuses
  // remote
  std::string server;  // host:port of unbd-server
  // Replicated volume (docs/replication.md): the servers holding its replicas, instead of server.
  std::vector<std::string> replicas;
  std::string volume;
  uint32_t retry_deadline_ms = 30000;  // how long I/O rides out a backend outage before failing

  // Checks ranges and target options; the message names the offending option.
  Status Validate() const;
  uint64_t ublk_flags() const;
};

const char* TargetTypeName(TargetType t);
Status ParseTargetType(const std::string& name, TargetType* out);

nlohmann::json ToJson(const DeviceConfig& c);
Status FromJson(const nlohmann::json& j, DeviceConfig* c);

}  // namespace unbd::frontend
