#include "csi/staging_record.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <spdlog/spdlog.h>

namespace unbd::csi {

nlohmann::json ToJson(const StagingRecord& r) {
  nlohmann::json pubs = nlohmann::json::object();
  for (const auto& [path, ro] : r.publishes) pubs[path] = {{"readonly", ro}};
  return {{"version", 1},
          {"volume_id", r.volume_id},
          {"staging_path", r.staging_path},
          {"access_type", r.block ? "block" : "mount"},
          {"fs_type", r.fs_type},
          {"mount_flags", r.mount_flags},
          {"access_mode", r.access_mode},
          {"dev_id", r.dev_id},
          {"staged_unix_ms", r.staged_unix_ms},
          {"publishes", pubs}};
}

Status FromJson(const nlohmann::json& j, StagingRecord* r) {
  if (!j.is_object() || j.value("version", 0) != 1)
    return Status::InvalidArgument("not a version 1 staging record");
  try {
    StagingRecord out;
    out.volume_id = j.at("volume_id").get<std::string>();
    out.staging_path = j.at("staging_path").get<std::string>();
    out.block = j.at("access_type").get<std::string>() == "block";
    out.fs_type = j.value("fs_type", "");
    out.mount_flags = j.value("mount_flags", std::vector<std::string>{});
    out.access_mode = j.value("access_mode", 0);
    out.dev_id = j.value("dev_id", -1);
    out.staged_unix_ms = j.value("staged_unix_ms", int64_t{0});
    if (j.contains("publishes")) {
      for (const auto& [path, p] : j.at("publishes").items())
        out.publishes[path] = p.at("readonly").get<bool>();
    }
    *r = std::move(out);
  } catch (const nlohmann::json::exception& e) {
    return Status::InvalidArgument(std::string("staging record: ") + e.what());
  }
  return Status::Ok();
}

std::string RecordStore::PathFor(const std::string& volume_id) const {
  // Volume ids are NAME@HOST:PORT,...; escape anything a file name should not carry.
  std::string name;
  for (unsigned char c : volume_id) {
    if (std::isalnum(c) || c == '.' || c == '_' || c == '-' || c == '@' || c == ':' || c == ',') {
      name += static_cast<char>(c);
    } else {
      char buf[4];
      std::snprintf(buf, sizeof buf, "%%%02X", c);
      name += buf;
    }
  }
  return dir_ + "/" + name + ".json";
}

Status RecordStore::Load() {
  std::error_code ec;
  std::filesystem::create_directories(dir_, ec);
  if (ec) return Status::IoError("mkdir -p " + dir_ + ": " + ec.message());
  std::map<std::string, StagingRecord> loaded;
  for (const auto& e : std::filesystem::directory_iterator(dir_, ec)) {
    if (e.path().extension() != ".json") continue;
    std::ifstream f(e.path());
    auto j = nlohmann::json::parse(f, nullptr, false);
    StagingRecord r;
    Status s = FromJson(j, &r);
    if (!s.ok()) {
      spdlog::error("staging record {}: {}", e.path().string(), s.ToString());
      continue;
    }
    loaded[r.volume_id] = r;
  }
  if (ec) return Status::IoError("read " + dir_ + ": " + ec.message());
  std::lock_guard<std::mutex> l(mu_);
  records_ = std::move(loaded);
  return Status::Ok();
}

bool RecordStore::Get(const std::string& volume_id, StagingRecord* out) const {
  std::lock_guard<std::mutex> l(mu_);
  auto it = records_.find(volume_id);
  if (it == records_.end()) return false;
  *out = it->second;
  return true;
}

std::vector<StagingRecord> RecordStore::All() const {
  std::lock_guard<std::mutex> l(mu_);
  std::vector<StagingRecord> out;
  for (const auto& [id, r] : records_) out.push_back(r);
  return out;
}

Status RecordStore::Put(const StagingRecord& r) {
  const std::string path = PathFor(r.volume_id);
  const std::string tmp = path + ".tmp";
  const std::string text = ToJson(r).dump(2) + "\n";
  int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return Status::FromErrno(errno, "create " + tmp);
  bool ok = write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) &&
            fsync(fd) == 0;
  int err = errno;
  close(fd);
  if (!ok) return Status::FromErrno(err, "write " + tmp);
  if (rename(tmp.c_str(), path.c_str()) != 0) return Status::FromErrno(errno, "rename " + tmp);
  std::lock_guard<std::mutex> l(mu_);
  records_[r.volume_id] = r;
  return Status::Ok();
}

Status RecordStore::Remove(const std::string& volume_id) {
  const std::string path = PathFor(volume_id);
  if (unlink(path.c_str()) != 0 && errno != ENOENT) return Status::FromErrno(errno, "remove " + path);
  std::lock_guard<std::mutex> l(mu_);
  records_.erase(volume_id);
  return Status::Ok();
}

}  // namespace unbd::csi
