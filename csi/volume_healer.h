// VolumeHealer: keeps every staged volume served. ReconcileAll (once, when the agent starts)
// re-attaches each recorded volume: nothing happens to a volume whose daemon runs and whose
// mount is in place, so an agent restart never touches I/O. Then a thread checks each staged
// volume's daemon every `interval`; when it died it runs `unbd recover` (held I/O resumes,
// re-issued), and when the device is gone altogether it attaches the volume again.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <thread>

#include "csi/staging_record.h"
#include "csi/unbd_devices.h"
#include "csi/volume_locks.h"
#include "csi/volume_stager.h"

namespace unbd::csi {

class VolumeHealer {
 public:
  VolumeHealer(RecordStore* records, VolumeLocks* locks, UnbdDevices* devices,
               VolumeStager* stager, std::chrono::milliseconds interval)
      : records_(records), locks_(locks), devices_(devices), stager_(stager), interval_(interval) {}
  ~VolumeHealer() { Stop(); }

  // Runs ReconcileAll, then checks every `interval` until Stop.
  void Start();
  void Stop();
  void ReconcileAll();
  uint64_t heals() const { return heals_.load(); }

 private:
  void Loop();
  void CheckOne(const StagingRecord& rec);

  RecordStore* records_;
  VolumeLocks* locks_;
  UnbdDevices* devices_;
  VolumeStager* stager_;
  std::chrono::milliseconds interval_;
  std::atomic<uint64_t> heals_{0};
  // A volume whose device could not be brought back is retried after a pause, not every tick.
  std::map<std::string, std::chrono::steady_clock::time_point> retry_after_;

  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace unbd::csi
