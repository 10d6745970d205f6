// `unbd volume create|list|stat|delete|resize --server HOST:PORT [--json]`: volume administration
// on one unbd-server through backend::AdminClient.
// Replicated volumes (docs/replication.md), through replication/:
// `unbd volume create NAME --size S --replicas a:p,b:p,c:p`,
// `unbd volume status NAME --replicas ... [--json]`,
// `unbd volume replace-replica NAME OLD NEW --replicas ...`,
// `unbd volume resize NAME --size S --replicas ...` and
// `unbd volume verify NAME --replicas ...` (are the copies identical, block by block?).
#include <algorithm>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "backend/admin_client.h"
#include "cli/commands.h"
#include "cli/volume_view.h"
#include "replication/replica_meta.h"
#include "replication/replica_rpc.h"
#include "replication/replicated_volume.h"
#include "replication/volume_status.h"

namespace unbd::cli {
namespace {

struct VolumeOptions {
  std::string server = "127.0.0.1:7420";
  bool json = false;
  std::string volume;
  std::string size;
  std::string replicas;  // a:p,b:p,c:p (replicated volumes)
  std::string old_replica, new_replica;
  bool rebuild = false;
  int timeout_ms = 5000;
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
    std::printf("%s\n", VolumeJson(v).dump(2).c_str());
    return;
  }
  if (verb) std::printf("%s volume %llu \"%s\"\n", verb, static_cast<unsigned long long>(v.id()),
                        v.name().c_str());
  PrintVolume(v);
}


// "host:port" with a non-empty host and a port in 1..65535.
bool ValidTarget(const std::string& t) {
  const size_t colon = t.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == t.size()) return false;
  const std::string port = t.substr(colon + 1);
  if (port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos) return false;
  const int p = std::stoi(port);
  return p >= 1 && p <= 65535;
}

std::vector<std::string> RequireReplicas(const VolumeOptions& o) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= o.replicas.size()) {
    const size_t comma = o.replicas.find(',', start);
    const std::string t =
        o.replicas.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    if (!ValidTarget(t)) {
      throw Exit{2, "--replicas " + o.replicas + ": \"" + t +
                        "\" is not HOST:PORT (expected a comma-separated list like "
                        "10.0.0.1:7420,10.0.0.2:7420,10.0.0.3:7420)"};
    }
    for (const auto& seen : out) {
      if (seen == t) throw Exit{2, "--replicas: " + t + " listed twice"};
    }
    out.push_back(t);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  if (out.empty() || out.size() > 5) {
    throw Exit{2, "--replicas: " + std::to_string(out.size()) +
                      " replicas; a replicated volume has 1 to 5"};
  }
  return out;
}

void CheckReplicated(const Status& s, const std::string& what) {
  if (s.ok()) return;
  throw Exit{s.code() == Status::Code::kInvalidArgument ? 2 : 1, what + ": " + s.ToString()};
}

std::string Eta(double seconds) {
  if (seconds <= 0) return "-";
  char buf[32];
  const auto s = static_cast<unsigned long long>(seconds + 0.5);
  if (s >= 3600) {
    std::snprintf(buf, sizeof buf, "%lluh%02llum", s / 3600, s / 60 % 60);
  } else {
    std::snprintf(buf, sizeof buf, "%llum%02llus", s / 60, s % 60);
  }
  return buf;
}

// The dirty-region sets of one replica as "unstable=3 out[1]=17".
std::string DirtyText(const std::map<uint32_t, uint64_t>& dirty) {
  std::string out;
  for (const auto& [set, n] : dirty) {
    out += out.empty() ? "" : " ";
    out += set == replication::kUnstableSet ? "unstable=" + std::to_string(n)
                                            : "for[" + std::to_string(set - 1) + "]=" + std::to_string(n);
  }
  return out.empty() ? "-" : out;
}

void PrintStatus(const replication::VolumeStatusView& v, bool json) {
  const auto& m = v.meta;
  if (json) {
    std::printf("%s\n", VolumeStatusJson(v).dump(2).c_str());
    return;
  }
  std::printf("volume:   %s (%s)\n", v.name.c_str(), HealthName(v.health));
  std::printf("size:     %s (%llu bytes), dirty region %s\n", HumanSize(m.size_bytes()).c_str(),
              static_cast<unsigned long long>(m.size_bytes()), HumanSize(m.region_bytes()).c_str());
  std::printf("epoch:    %llu, owner %s\n", static_cast<unsigned long long>(v.epoch),
              v.owner.empty() ? "-" : v.owner.c_str());
  std::printf("config:   version %llu written at epoch %llu; %zu of %d replicas answered\n",
              static_cast<unsigned long long>(m.config_version()),
              static_cast<unsigned long long>(m.written_epoch()), v.answered, m.replicas_size());
  std::printf("%-3s %-22s %-8s %-11s %-8s %-11s %-8s %s\n", "#", "ADDRESS", "VOLUME", "STATE",
              "RESYNC", "LEFT", "ETA", "DIRTY REGIONS");
  for (size_t i = 0; i < v.replicas.size(); ++i) {
    const auto& r = v.replicas[i];
    std::string state = "-", pct = "-", left = "-", eta = "-";
    if (static_cast<int>(i) < m.replicas_size()) {
      const auto& info = m.replicas(i);
      state = replication::StateName(info.state());
      if (info.state() == v1::REPLICA_REBUILDING) {
        if (info.full_rebuild()) state += "*";
        const uint64_t total = info.resync_total_bytes();
        const uint64_t done = std::min(info.resync_done_bytes(), total);
        char buf[16];
        std::snprintf(buf, sizeof buf, "%.1f%%", total ? 100.0 * done / total : 0.0);
        pct = buf;
        left = HumanSize(total - done);
        eta = info.resync_bytes_per_s() > 0 ? Eta((total - done) / info.resync_bytes_per_s())
                                            : "-";
      }
    } else {
      state = "(not a member)";
    }
    std::printf("%-3zu %-22s %-8s %-11s %-8s %-11s %-8s %s\n", i, r.target.c_str(),
                r.status.ok() ? std::to_string(r.volume.id()).c_str() : "?", state.c_str(),
                pct.c_str(), left.c_str(), eta.c_str(),
                r.status.ok() ? DirtyText(r.dirty).c_str() : r.status.ToString().c_str());
  }
}

// The replica set as the servers name it: each target's id for the volume (0 where unknown, so
// the open counts it missing).
std::vector<replication::ReplicaAddr> Resolve(const std::vector<std::string>& targets,
                                              const std::string& name, int timeout_ms) {
  std::vector<replication::ReplicaAddr> out(targets.size());
  replication::ForEachParallel(targets.size(), [&](size_t i) {
    out[i].target = targets[i];
    v1::VolumeRef ref;
    ref.set_name(name);
    v1::Volume vol;
    if (replication::ReplicaRpc(targets[i], std::chrono::milliseconds(timeout_ms))
            .Stat(ref, &vol)
            .ok()) {
      out[i].volume_id = vol.id();
    }
  });
  return out;
}

// Per-block checksums of volume `name` on every target, compared: the blocks where any two
// copies differ (at most `max_listed` of them listed) and how many differ in all.
struct VerifyResult {
  uint64_t blocks = 0;
  uint64_t differing = 0;
  std::vector<uint64_t> listed;
};
constexpr uint32_t kChecksumsPerCall = 65536;  // the server's per-call limit

Status VerifyReplicas(const std::vector<std::string>& targets, const std::string& name,
                      size_t max_listed, VerifyResult* out) {
  v1::VolumeRef ref;
  ref.set_name(name);
  std::vector<std::unique_ptr<backend::AdminClient>> clients;
  uint64_t size = 0;
  for (const auto& t : targets) {
    clients.push_back(std::make_unique<backend::AdminClient>(t));
    v1::Volume v;
    Status s = clients.back()->Stat(ref, &v);
    if (!s.ok()) return Status::Unavailable(t + ": " + s.ToString());
    if (size != 0 && v.size_bytes() != size) {
      return Status::FailedPrecondition(t + ": volume \"" + name + "\" has " +
                                        std::to_string(v.size_bytes()) + " bytes, " +
                                        targets[0] + " has " + std::to_string(size));
    }
    size = v.size_bytes();
  }
  out->blocks = size / 4096;
  std::vector<std::vector<uint64_t>> sums(targets.size());
  for (uint64_t start = 0; start < out->blocks; start += kChecksumsPerCall) {
    const auto count = static_cast<uint32_t>(std::min<uint64_t>(kChecksumsPerCall, out->blocks - start));
    std::vector<Status> got(targets.size());
    replication::ForEachParallel(targets.size(), [&](size_t i) {
      got[i] = clients[i]->Checksums(ref, start, count, &sums[i]);
    });
    for (size_t i = 0; i < targets.size(); ++i) {
      if (!got[i].ok()) return Status::Unavailable(targets[i] + ": " + got[i].ToString());
    }
    for (uint32_t b = 0; b < count; ++b) {
      for (size_t i = 1; i < targets.size(); ++i) {
        if (sums[i][b] != sums[0][b]) {
          if (out->listed.size() < max_listed) out->listed.push_back(start + b);
          ++out->differing;
          break;
        }
      }
    }
  }
  return Status::Ok();
}

// `volume resize NAME --replicas ...`: as a short-lived owner, like replace-replica.
void ResizeReplicated(const VolumeOptions& opts, uint64_t size) {
  const auto targets = RequireReplicas(opts);
  std::unique_ptr<replication::ReplicatedVolume> v;
  replication::ReplicatedVolumeOptions o;
  o.client_id = "cli/resize/" + replication::NewReplicaUuid();
  o.rpc_timeout = std::chrono::milliseconds(opts.timeout_ms);
  o.quorum_wait = std::chrono::milliseconds(opts.timeout_ms);
  CheckReplicated(
      replication::ReplicatedVolume::Open(Resolve(targets, opts.volume, opts.timeout_ms), o, &v),
      "open \"" + opts.volume + "\"");
  const uint64_t old_size = v->size_bytes();
  std::vector<Status> per_replica;
  CheckReplicated(v->Resize(size, &per_replica), "resize \"" + opts.volume + "\"");
  const auto addrs = v->replica_addrs();
  const auto states = v->states();
  if (opts.json) {
    nlohmann::json reps = nlohmann::json::array();
    for (size_t i = 0; i < addrs.size(); ++i) {
      nlohmann::json r = {{"address", addrs[i].target},
                          {"volume_id", addrs[i].volume_id},
                          {"state", replication::ReplicaStateName(states[i])},
                          {"grown", i < per_replica.size() && per_replica[i].ok()}};
      if (i < per_replica.size() && !per_replica[i].ok()) r["error"] = per_replica[i].ToString();
      reps.push_back(r);
    }
    std::printf("%s\n", nlohmann::json{{"name", opts.volume},
                                       {"old_size_bytes", old_size},
                                       {"size_bytes", v->size_bytes()},
                                       {"epoch", v->epoch()},
                                       {"config_version", v->meta().config_version()},
                                       {"replicas", reps}}
                            .dump(2)
                            .c_str());
    return;
  }
  std::printf("volume \"%s\": resized from %s to %s (%llu bytes)\n", opts.volume.c_str(),
              HumanSize(old_size).c_str(), HumanSize(v->size_bytes()).c_str(),
              static_cast<unsigned long long>(v->size_bytes()));
  for (size_t i = 0; i < addrs.size(); ++i) {
    const bool grown = i < per_replica.size() && per_replica[i].ok();
    std::printf("  %s volume %llu: %s\n", addrs[i].target.c_str(),
                static_cast<unsigned long long>(addrs[i].volume_id),
                grown ? "grown"
                      : (std::string(replication::ReplicaStateName(states[i])) + ", not grown: " +
                         (i < per_replica.size() ? per_replica[i].ToString() : "?"))
                            .c_str());
  }
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
  create->add_option("--replicas", opts->replicas,
                     "Replicated volume: its servers, HOST:PORT,HOST:PORT,... (1 to 5)");
  add_common(create);
  create->callback([opts] {
    const uint64_t size = RequireSize(*opts);
    if (!opts->replicas.empty()) {
      const auto targets = RequireReplicas(*opts);
      std::vector<replication::ReplicaAddr> set;
      CheckReplicated(replication::ReplicatedVolume::Create(targets, opts->volume, size, &set),
                      "create");
      if (opts->json) {
        nlohmann::json reps = nlohmann::json::array();
        for (const auto& r : set) reps.push_back({{"address", r.target}, {"volume_id", r.volume_id}});
        std::printf("%s\n", nlohmann::json{{"name", opts->volume},
                                           {"size_bytes", size},
                                           {"replicas", reps}}
                                 .dump(2)
                                 .c_str());
        return;
      }
      std::printf("created replicated volume \"%s\" (%s) on %zu replicas:\n",
                  opts->volume.c_str(), HumanSize(size).c_str(), set.size());
      for (const auto& r : set) {
        std::printf("  %s volume %llu\n", r.target.c_str(),
                    static_cast<unsigned long long>(r.volume_id));
      }
      return;
    }
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
      for (const auto& v : vols) arr.push_back(VolumeJson(v));
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

  CLI::App* resize = vol->add_subcommand(
      "resize",
      "Grow a volume. A plain volume: on --server. A replicated volume: --replicas; this opens "
      "it as its owner, which fences a current owner (detach the device first: a ublk device "
      "cannot change size while attached), commits the new size on a majority and grows every "
      "copy; one that is out grows when it is resynced");
  resize->add_option("volume", opts->volume, "Volume name or id (name with --replicas)")
      ->required();
  resize->add_option("--size", opts->size, "New size, e.g. 20G (grow only)")->required();
  resize->add_option("--replicas", opts->replicas,
                     "Replicated volume: its servers, HOST:PORT,HOST:PORT,...");
  resize->add_option("--timeout-ms", opts->timeout_ms, "Per-replica RPC timeout (--replicas)")
      ->capture_default_str();
  add_common(resize);
  resize->callback([opts] {
    const uint64_t size = RequireSize(*opts);
    if (!opts->replicas.empty()) {
      ResizeReplicated(*opts, size);
      return;
    }
    backend::AdminClient c(opts->server);
    v1::Volume v;
    Check(c.Resize(backend::ParseVolumeRef(opts->volume), size, &v), *opts);
    Emit(*opts, v, "resized");
  });

  CLI::App* status = vol->add_subcommand(
      "status", "Replicated volume: majority view of its metadata, replica states, resync progress "
                "(exit 0 healthy, 1 degraded, 2 no majority)");
  status->add_option("volume", opts->volume, "Volume name")->required();
  status->add_option("--replicas", opts->replicas, "Its servers, HOST:PORT,HOST:PORT,...")
      ->required();
  status->add_option("--timeout-ms", opts->timeout_ms, "Per-replica RPC timeout")
      ->capture_default_str();
  add_common(status);
  status->callback([opts] {
    const auto targets = RequireReplicas(*opts);
    replication::VolumeStatusView view;
    CheckReplicated(replication::GatherVolumeStatus(targets, opts->volume,
                                                    std::chrono::milliseconds(opts->timeout_ms),
                                                    &view),
                    "status");
    if (view.meta.config_version() == 0) {
      std::string why;
      for (const auto& r : view.replicas) {
        why += (why.empty() ? "" : "; ") + r.target + ": " +
               (r.status.ok() ? "no replica metadata" : r.status.ToString());
      }
      throw Exit{2, "volume \"" + opts->volume + "\": no replica metadata on any answering "
                    "replica (" + why + ")"};
    }
    PrintStatus(view, opts->json);
    if (view.health != replication::VolumeHealth::kHealthy) {
      throw Exit{static_cast<int>(view.health), ""};
    }
  });

  CLI::App* verify = vol->add_subcommand(
      "verify", "Replicated volume: compare every block's checksum across the replicas (run it "
                "while no writer is attached; exit 0 identical, 1 differing, 2 unreachable)");
  verify->add_option("volume", opts->volume, "Volume name")->required();
  verify->add_option("--replicas", opts->replicas, "Its servers, HOST:PORT,HOST:PORT,...")
      ->required();
  add_common(verify);
  verify->callback([opts] {
    const auto targets = RequireReplicas(*opts);
    VerifyResult r;
    Status s = VerifyReplicas(targets, opts->volume, 16, &r);
    if (!s.ok()) throw Exit{2, "verify \"" + opts->volume + "\": " + s.ToString()};
    if (opts->json) {
      std::printf("%s\n", nlohmann::json{{"name", opts->volume},
                                         {"replicas", targets},
                                         {"blocks", r.blocks},
                                         {"differing_blocks", r.differing},
                                         {"first_differing", r.listed}}
                              .dump(2)
                              .c_str());
    } else if (r.differing == 0) {
      std::printf("volume \"%s\": %llu blocks identical on %zu replicas\n", opts->volume.c_str(),
                  static_cast<unsigned long long>(r.blocks), targets.size());
    } else {
      std::string first;
      for (uint64_t b : r.listed) first += (first.empty() ? "" : " ") + std::to_string(b);
      std::printf("volume \"%s\": %llu of %llu blocks differ between replicas (first: %s)\n",
                  opts->volume.c_str(), static_cast<unsigned long long>(r.differing),
                  static_cast<unsigned long long>(r.blocks), first.c_str());
    }
    if (r.differing != 0) throw Exit{1, ""};
  });

  CLI::App* replace = vol->add_subcommand(
      "replace-replica",
      "Replicated volume: replace replica OLD by a new copy on NEW (rebuilt in full by the next "
      "owner, or now with --rebuild). Opens the volume as its owner: detach it first");
  replace->add_option("volume", opts->volume, "Volume name")->required();
  replace->add_option("old", opts->old_replica, "Replica to replace, HOST:PORT")->required();
  replace->add_option("new", opts->new_replica, "New replica's server, HOST:PORT")->required();
  replace->add_option("--replicas", opts->replicas, "Its servers, HOST:PORT,HOST:PORT,...")
      ->required();
  replace->add_flag("--rebuild", opts->rebuild, "Rebuild the new replica before returning");
  replace->add_option("--timeout-ms", opts->timeout_ms, "Per-replica RPC timeout")
      ->capture_default_str();
  add_common(replace);
  replace->callback([opts] {
    const auto targets = RequireReplicas(*opts);
    for (const auto* t : {&opts->old_replica, &opts->new_replica}) {
      if (!ValidTarget(*t)) throw Exit{2, "\"" + *t + "\" is not HOST:PORT"};
    }
    if (opts->old_replica == opts->new_replica) throw Exit{2, "OLD and NEW are the same server"};
    std::unique_ptr<replication::ReplicatedVolume> v;
    replication::ReplicatedVolumeOptions o;
    o.client_id = "cli/replace-replica/" + replication::NewReplicaUuid();
    o.rpc_timeout = std::chrono::milliseconds(opts->timeout_ms);
    o.quorum_wait = std::chrono::milliseconds(opts->timeout_ms);
    CheckReplicated(replication::ReplicatedVolume::Open(
                        Resolve(targets, opts->volume, opts->timeout_ms), o, &v),
                    "open \"" + opts->volume + "\"");
    CheckReplicated(v->ReplaceReplica(opts->old_replica, opts->new_replica), "replace-replica");
    Status rebuilt;
    if (opts->rebuild) rebuilt = v->ResyncOut();
    if (opts->json) {
      const auto meta = v->meta();
      std::printf("%s\n", nlohmann::json{{"name", opts->volume},
                                         {"replaced", opts->old_replica},
                                         {"by", opts->new_replica},
                                         {"config_version", meta.config_version()},
                                         {"rebuilt", opts->rebuild && rebuilt.ok()}}
                              .dump(2)
                              .c_str());
    } else {
      std::printf("volume \"%s\": replica %s replaced by %s%s\n", opts->volume.c_str(),
                  opts->old_replica.c_str(), opts->new_replica.c_str(),
                  opts->rebuild ? (rebuilt.ok() ? ", rebuilt" : "") : "; the next owner rebuilds it");
    }
    CheckReplicated(rebuilt, "rebuild");
  });
}

}  // namespace unbd::cli
