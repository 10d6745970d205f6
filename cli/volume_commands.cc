// `unbd volume create|list|stat|delete|resize --server HOST:PORT [--json]`: volume administration
// on one unbd-server through backend::AdminClient.
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "backend/admin_client.h"
#include "cli/commands.h"

namespace unbd::cli {
namespace {

struct VolumeOptions {
  std::string server = "127.0.0.1:7420";
  bool json = false;
  std::string volume;
  std::string size;
};

// "10G", "512M", "4096", "1T" (binary units) -> bytes; false on garbage or overflow.
bool ParseSize(const std::string& s, uint64_t* out) {
  if (s.empty()) return false;
  size_t i = 0;
  uint64_t v = 0;
  while (i < s.size() && s[i] >= '0' && s[i] <= '9') {
    const uint64_t d = static_cast<uint64_t>(s[i] - '0');
    if (v > (UINT64_MAX - d) / 10) return false;
    v = v * 10 + d;
    ++i;
  }
  if (i == 0) return false;
  std::string unit = s.substr(i);
  if (!unit.empty() && (unit.back() == 'B' || unit.back() == 'b')) unit.pop_back();
  if (unit.size() == 2 && (unit[1] == 'i' || unit[1] == 'I')) unit.pop_back();
  int shift = 0;
  if (unit.empty()) shift = 0;
  else if (unit == "K" || unit == "k") shift = 10;
  else if (unit == "M" || unit == "m") shift = 20;
  else if (unit == "G" || unit == "g") shift = 30;
  else if (unit == "T" || unit == "t") shift = 40;
  else if (unit == "P" || unit == "p") shift = 50;
  else return false;
  if (shift && v > (UINT64_MAX >> shift)) return false;
  *out = v << shift;
  return true;
}

std::string HumanSize(uint64_t b) {
  static const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  int u = 0;
  double v = static_cast<double>(b);
  while (v >= 1024 && u < 6) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", v, units[u]);
  return buf;
}

nlohmann::json ToJson(const v1::Volume& v) {
  return {{"id", v.id()},
          {"name", v.name()},
          {"size_bytes", v.size_bytes()},
          {"block_size", v.block_size()},
          {"epoch", v.epoch()},
          {"client_id", v.client_id()},
          {"created_unix_ms", v.created_unix_ms()},
          {"approx_stored_bytes", v.approx_stored_bytes()}};
}

void PrintVolume(const v1::Volume& v) {
  std::printf("id:          %llu\n", static_cast<unsigned long long>(v.id()));
  std::printf("name:        %s\n", v.name().c_str());
  std::printf("size:        %s (%llu bytes)\n", HumanSize(v.size_bytes()).c_str(),
              static_cast<unsigned long long>(v.size_bytes()));
  std::printf("block size:  %u\n", v.block_size());
  std::printf("epoch:       %llu%s\n", static_cast<unsigned long long>(v.epoch()),
              v.epoch() == 0 ? " (never opened)" : "");
  if (!v.client_id().empty()) std::printf("client:      %s\n", v.client_id().c_str());
  std::printf("stored:      ~%s\n", HumanSize(v.approx_stored_bytes()).c_str());
}

void Check(const Status& s, const VolumeOptions& o) {
  if (s.ok()) return;
  throw Exit{1, o.server + ": " + s.ToString()};
}

uint64_t RequireSize(const VolumeOptions& o) {
  uint64_t size = 0;
  if (!ParseSize(o.size, &size)) {
    throw Exit{2, "--size " + o.size + ": expected a byte count like 4096, 512M, 10G"};
  }
  return size;
}

void Emit(const VolumeOptions& o, const v1::Volume& v, const char* verb) {
  if (o.json) {
    std::printf("%s\n", ToJson(v).dump(2).c_str());
    return;
  }
  if (verb) std::printf("%s volume %llu \"%s\"\n", verb, static_cast<unsigned long long>(v.id()),
                        v.name().c_str());
  PrintVolume(v);
}

}  // namespace

void RegisterVolumeCommands(CLI::App& app) {
  auto opts = std::make_shared<VolumeOptions>();
  CLI::App* vol = app.add_subcommand("volume", "Manage volumes on an unbd-server");
  vol->require_subcommand(1);
  vol->add_option("--server", opts->server, "unbd-server address HOST:PORT")
      ->envname("UNBD_SERVER")
      ->capture_default_str();
  vol->add_flag("--json", opts->json, "Machine-readable output");

  auto add_common = [&](CLI::App* sub) {
    sub->add_option("--server", opts->server, "unbd-server address HOST:PORT")
        ->envname("UNBD_SERVER");
    sub->add_flag("--json", opts->json, "Machine-readable output");
  };

  CLI::App* create = vol->add_subcommand("create", "Create a volume");
  create->add_option("name", opts->volume, "Unique volume name")->required();
  create->add_option("--size", opts->size, "Size, e.g. 10G (multiple of 4 KiB)")->required();
  add_common(create);
  create->callback([opts] {
    const uint64_t size = RequireSize(*opts);
    backend::AdminClient c(opts->server);
    v1::Volume v;
    Check(c.Create(opts->volume, size, &v), *opts);
    Emit(*opts, v, "created");
  });

  CLI::App* list = vol->add_subcommand("list", "List volumes");
  add_common(list);
  list->callback([opts] {
    backend::AdminClient c(opts->server);
    std::vector<v1::Volume> vols;
    Check(c.List(&vols), *opts);
    if (opts->json) {
      nlohmann::json arr = nlohmann::json::array();
      for (const auto& v : vols) arr.push_back(ToJson(v));
      std::printf("%s\n", arr.dump(2).c_str());
      return;
    }
    std::printf("%-6s %-24s %12s %8s %12s  %s\n", "ID", "NAME", "SIZE", "EPOCH", "STORED",
                "CLIENT");
    for (const auto& v : vols) {
      std::printf("%-6llu %-24s %12s %8llu %12s  %s\n", static_cast<unsigned long long>(v.id()),
                  v.name().c_str(), HumanSize(v.size_bytes()).c_str(),
                  static_cast<unsigned long long>(v.epoch()),
                  HumanSize(v.approx_stored_bytes()).c_str(),
                  v.client_id().empty() ? "-" : v.client_id().c_str());
    }
  });

  CLI::App* stat = vol->add_subcommand("stat", "Show one volume");
  stat->add_option("volume", opts->volume, "Volume name or id")->required();
  add_common(stat);
  stat->callback([opts] {
    backend::AdminClient c(opts->server);
    v1::Volume v;
    Check(c.Stat(backend::ParseVolumeRef(opts->volume), &v), *opts);
    Emit(*opts, v, nullptr);
  });

  CLI::App* del = vol->add_subcommand("delete", "Delete a volume and all of its data");
  del->add_option("volume", opts->volume, "Volume name or id")->required();
  add_common(del);
  del->callback([opts] {
    backend::AdminClient c(opts->server);
    Check(c.Delete(backend::ParseVolumeRef(opts->volume)), *opts);
    if (opts->json) {
      std::printf("%s\n", nlohmann::json{{"deleted", opts->volume}}.dump().c_str());
    } else {
      std::printf("deleted volume %s\n", opts->volume.c_str());
    }
  });

  CLI::App* resize = vol->add_subcommand("resize", "Grow a volume");
  resize->add_option("volume", opts->volume, "Volume name or id")->required();
  resize->add_option("--size", opts->size, "New size, e.g. 20G (grow only)")->required();
  add_common(resize);
  resize->callback([opts] {
    const uint64_t size = RequireSize(*opts);
    backend::AdminClient c(opts->server);
    v1::Volume v;
    Check(c.Resize(backend::ParseVolumeRef(opts->volume), size, &v), *opts);
    Emit(*opts, v, "resized");
  });
}

}  // namespace unbd::cli
