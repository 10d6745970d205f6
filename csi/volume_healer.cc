#include "csi/volume_healer.h"

#include <spdlog/spdlog.h>

namespace unbd::csi {

namespace {
using Clock = std::chrono::steady_clock;
constexpr auto kRetryPause = std::chrono::seconds(5);
}  // namespace

void VolumeHealer::Start() {
  thread_ = std::thread([this] {
    ReconcileAll();
    Loop();
  });
}

void VolumeHealer::Stop() {
  {
    std::lock_guard<std::mutex> l(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void VolumeHealer::ReconcileAll() {
  for (StagingRecord rec : records_->All()) {
    auto guard = locks_->TryLock(rec.volume_id);
    if (!guard.held()) continue;  // a CSI call got there first and does the same work
    const DeviceHealth before = devices_->Health(rec.dev_id);
    const bool unrecorded = rec.dev_id < 0;  // killed inside NodeStageVolume
    Status s = stager_->Attach(&rec);
    if (s.ok()) s = records_->Put(rec);
    if (!s.ok()) {
      spdlog::error("reconcile volume {}: {}", rec.volume_id, s.ToString());
      continue;
    }
    if (unrecorded) {
      spdlog::info("reconcile volume {}: staging was interrupted; /dev/ublkb{} now serves it",
                   rec.volume_id, rec.dev_id);
    } else {
      spdlog::info("reconcile volume {}: /dev/ublkb{} {}{}", rec.volume_id, rec.dev_id,
                   DeviceHealthName(before),
                   before == DeviceHealth::kAlive ? ", left alone" : ", healed");
    }
  }
}

void VolumeHealer::CheckOne(const StagingRecord& snapshot) {
  if (snapshot.dev_id < 0 || devices_->Health(snapshot.dev_id) == DeviceHealth::kAlive) return;
  auto retry = retry_after_.find(snapshot.volume_id);
  if (retry != retry_after_.end() && Clock::now() < retry->second) return;
  auto guard = locks_->TryLock(snapshot.volume_id);
  if (!guard.held()) return;  // Stage/Unstage running: look again next tick
  StagingRecord rec;
  if (!records_->Get(snapshot.volume_id, &rec)) return;  // unstaged meanwhile
  const DeviceHealth h = devices_->Health(rec.dev_id);
  if (h == DeviceHealth::kAlive) return;
  spdlog::warn("volume {}: /dev/ublkb{} {}, healing", rec.volume_id, rec.dev_id,
               DeviceHealthName(h));
  const auto t0 = Clock::now();
  Status s = h == DeviceHealth::kDead ? devices_->Recover(rec.dev_id) : stager_->Attach(&rec);
  if (s.ok() && h == DeviceHealth::kGone) s = records_->Put(rec);
  const double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  if (!s.ok()) {
    spdlog::error("heal volume {} (/dev/ublkb{} {}): {}; retrying in {} s", rec.volume_id,
                  rec.dev_id, DeviceHealthName(h), s.ToString(), kRetryPause.count());
    retry_after_[rec.volume_id] = Clock::now() + kRetryPause;
    return;
  }
  retry_after_.erase(rec.volume_id);
  ++heals_;
  spdlog::warn("healed volume {}: /dev/ublkb{} was {}, served again after {:.0f} ms",
               rec.volume_id, rec.dev_id, DeviceHealthName(h), ms);
}

void VolumeHealer::Loop() {
  for (;;) {
    {
      std::unique_lock<std::mutex> l(mu_);
      if (cv_.wait_for(l, interval_, [this] { return stop_; })) return;
    }
    for (const auto& rec : records_->All()) CheckOne(rec);
  }
}

}  // namespace unbd::csi
