// StagingRecord: what NodeStageVolume did for one volume, kept as JSON in
// <state-dir>/staged/<volume id>.json (written atomically: temp file, fsync, rename) so that
// NodeUnstageVolume needs nothing from the CO and a restarted agent knows every volume it staged,
// which device serves it and where it is published. RecordStore is the thread-safe set of them.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/status.h"

namespace unbd::csi {

struct StagingRecord {
  std::string volume_id;
  std::string staging_path;
  bool block = false;  // raw block access: no file system, nothing mounted at staging_path
  std::string fs_type;
  std::vector<std::string> mount_flags;
  int access_mode = 0;  // csi.v1.VolumeCapability.AccessMode.Mode
  int dev_id = -1;      // /dev/ublkb<dev_id>; -1 until the device exists
  int64_t staged_unix_ms = 0;
  std::map<std::string, bool> publishes;  // target path -> read-only

  std::string device() const { return "/dev/ublkb" + std::to_string(dev_id); }
};

nlohmann::json ToJson(const StagingRecord& r);
Status FromJson(const nlohmann::json& j, StagingRecord* r);

class RecordStore {
 public:
  explicit RecordStore(std::string dir) : dir_(std::move(dir)) {}

  // Reads every record in the directory (creating it); unreadable files are reported, not fatal.
  Status Load();
  bool Get(const std::string& volume_id, StagingRecord* out) const;
  std::vector<StagingRecord> All() const;
  Status Put(const StagingRecord& r);
  Status Remove(const std::string& volume_id);
  const std::string& dir() const { return dir_; }

 private:
  std::string PathFor(const std::string& volume_id) const;

  std::string dir_;
  mutable std::mutex mu_;
  std::map<std::string, StagingRecord> records_;
};

}  // namespace unbd::csi
