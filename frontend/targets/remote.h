// The remote target: a volume on unbd-server. Opening it takes a new epoch (stored epoch + 1), which
// fences every earlier incarnation, including a killed daemon whose writes are still in flight.
// Each queue has its own channel and one bidirectional BlockIo.Stream carrying IoBatch messages it
// encodes by hand, so a write's payload slice is the WritePool slot the kernel copied the data into
// (NEED_GET_DATA) or the tag's own buffer: userspace never copies write data. READ data is parsed
// from the completion straight into the request's buffer (one copy). When a stream breaks, the
// queue reconnects and re-sends everything unfinished (writes are idempotent) until the request has
// waited `retry_deadline_ms`, then fails it with -EIO.
// Requests carry the server generation seen at open: a server that restarted after a crash refuses
// them (ABORTED). The target then re-opens (same epoch: nothing is fenced) to learn the new
// generation and re-sends, but writes the server acknowledged and had not flushed may be gone, so
// the next FLUSH fails with -EIO: the file system above learns of the loss instead of being told
// its data is durable.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "frontend/target.h"

namespace grpc {
class Channel;
}

namespace unbd::frontend {

struct RemoteStats {
  std::atomic<uint64_t> writes{0};
  std::atomic<uint64_t> payload_from_pool{0};        // slices over WritePool slots (release callback)
  std::atomic<uint64_t> payload_from_tag_buffer{0};  // pool exhausted or no NEED_GET_DATA
  std::atomic<uint64_t> payload_bytes_copied{0};     // bytes gRPC holds in memory other than ours
  std::atomic<uint64_t> payload_checked{0};          // payload slices whose address was verified
  std::atomic<uint64_t> resends{0};
  std::atomic<uint64_t> reconnects{0};
  std::atomic<uint64_t> deadline_failures{0};
};

class RemoteTarget : public Target {
 public:
  // Connects to config.server, finds config.volume and opens it with a new epoch (with a hint:
  // tries hint.epoch + 1 on hint.volume_id first, and looks the volume up only if that is refused).
  // `warm`: connections ConnectRemoteTarget made beforehand (a standby's), used instead of new ones.
  static Status Open(const DeviceConfig& config, std::unique_ptr<RemoteTarget>* out, const TargetHint& hint = {},
                     std::unique_ptr<TargetConnections> warm = nullptr);
  ~RemoteTarget() override;

  uint64_t size_bytes() const override { return size_; }
  void AdjustParams(ublk_params* params) const override;
  Status CreateQueueHandler(QueueContext* ctx, std::unique_ptr<QueueHandler>* out) override;
  std::string Describe() const override;
  uint64_t epoch() const override { return epoch_; }
  uint64_t volume_id() const override { return volume_id_; }

  // Tests and benchmarks: check every batch's payload slices point at our buffers.
  void set_verify_zero_copy(bool on) { verify_zero_copy_ = on; }
  // Sum over the queues created so far.
  void CollectStats(RemoteStats* out) const;

 private:
  friend class RemoteHandler;
  RemoteTarget() = default;
  // A request carrying `seen` was refused: the server restarted after a crash. Re-opens once per
  // generation (any queue may ask). UNAVAILABLE / DEADLINE_EXCEEDED: try again later; any other
  // error: the volume cannot be opened again (fenced by a newer owner, deleted).
  Status RenewGeneration(uint64_t seen);
  // True once per loss: the FLUSH that reports it.
  bool TakeUnreportedLoss() { return unreported_loss_.exchange(false); }
  // Queue q's own connection, already connecting since Open (a fresh one if it was taken).
  std::shared_ptr<grpc::Channel> TakeQueueChannel(int q);

  DeviceConfig config_;
  uint64_t volume_id_ = 0;
  uint64_t epoch_ = 0;
  uint64_t size_ = 0;
  uint32_t max_io_bytes_ = 0;
  uint32_t max_batch_requests_ = 0;
  uint32_t max_batch_bytes_ = 0;
  uint64_t max_discard_bytes_ = 0;
  bool verify_zero_copy_ = false;
  std::string client_id_;
  std::atomic<uint64_t> server_generation_{0};
  std::atomic<bool> unreported_loss_{false};
  std::mutex renew_mu_;
  std::mutex channels_mu_;
  std::vector<std::shared_ptr<grpc::Channel>> queue_channels_;
  mutable std::mutex stats_mu_;  // guards the list only; counters are per queue
  std::vector<std::shared_ptr<RemoteStats>> stats_;
};

Status CreateRemoteTarget(const DeviceConfig& config, std::unique_ptr<Target>* out, const TargetHint& hint = {},
                          std::unique_ptr<TargetConnections> warm = nullptr);
// A standby's connections to config.server: the control channel and one per queue, connected and
// each used for one Stat of the volume.
Status ConnectRemoteTarget(const DeviceConfig& config, std::unique_ptr<TargetConnections>* out);

}  // namespace unbd::frontend
