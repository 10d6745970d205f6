#include "frontend/target.h"

#include "frontend/targets/loop.h"
#include "frontend/targets/null.h"
#ifdef UNBD_HAVE_REMOTE
#include "frontend/targets/remote.h"
#include "frontend/targets/replicated.h"
#endif

namespace unbd::frontend {

uint64_t TargetUserData(uint16_t tag, uint8_t sub) {
  // Layout shared with queue.cc: bits 0-15 tag, 16-23 kind (2 = target), 24-31 sub.
  return static_cast<uint64_t>(tag) | (2ull << 16) | (static_cast<uint64_t>(sub) << 24);
}

Status ConnectTarget(const DeviceConfig& config, std::unique_ptr<TargetConnections>* out) {
  out->reset();
#ifdef UNBD_HAVE_REMOTE
  if (config.target == TargetType::kRemote)
    return config.replicas.empty() ? ConnectRemoteTarget(config, out) : ConnectReplicatedTarget(config, out);
#else
  (void)config;
#endif
  return Status::Ok();
}

Status CreateTarget(const DeviceConfig& config, std::unique_ptr<Target>* out, const TargetHint& hint,
                    std::unique_ptr<TargetConnections> warm) {
  switch (config.target) {
    case TargetType::kNull:
      return CreateNullTarget(config, out);
    case TargetType::kLoop:
      return CreateLoopTarget(config, out);
    case TargetType::kRemote:
#ifdef UNBD_HAVE_REMOTE
      // A replicated volume always takes a new ballot (a quorum open): no hint.
      if (!config.replicas.empty()) return CreateReplicatedTarget(config, out, std::move(warm));
      return CreateRemoteTarget(config, out, hint, std::move(warm));
#else
      (void)hint;
      (void)warm;
      return Status::FailedPrecondition("this unbd was built without the remote target (no proto/)");
#endif
  }
  return Status::InvalidArgument("unknown target");
}

ublk_params BaseParams(const DeviceConfig& config, uint64_t size_bytes) {
  ublk_params p{};
  p.len = sizeof(p);
  p.types = UBLK_PARAM_TYPE_BASIC | UBLK_PARAM_TYPE_DISCARD;
  int shift = __builtin_ctz(config.logical_block_size);
  p.basic.attrs = UBLK_ATTR_VOLATILE_CACHE | UBLK_ATTR_FUA;
  p.basic.logical_bs_shift = static_cast<uint8_t>(shift);
  p.basic.physical_bs_shift = static_cast<uint8_t>(shift > 12 ? shift : 12);
  p.basic.io_opt_shift = 12;
  p.basic.io_min_shift = static_cast<uint8_t>(shift);
  p.basic.max_sectors = config.max_io_bytes >> 9;
  p.basic.dev_sectors = size_bytes >> 9;
  p.discard.discard_granularity = 4096;
  p.discard.max_discard_sectors = UINT32_MAX >> 9;
  p.discard.max_write_zeroes_sectors = UINT32_MAX >> 9;
  p.discard.max_discard_segments = 1;
  return p;
}

}  // namespace unbd::frontend
