// unbd-csi: the CSI plugin for unbd volumes (docs/csi.md). Serves Identity plus the Node service
// (--mode node), the Controller (--mode controller) or both (--mode all) on a unix socket.
#include <limits.h>
#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <grpcpp/grpcpp.h>
#include <spdlog/spdlog.h>

#include "common/grpc_runtime.h"
#include "csi/controller_service.h"
#include "csi/identity_service.h"
#include "csi/node_service.h"
#include "csi/staging_record.h"
#include "csi/unbd_devices.h"
#include "csi/volume_healer.h"
#include "csi/volume_locks.h"
#include "csi/volume_stager.h"

namespace {

std::string EnvOr(const char* name, std::string fallback) {
  const char* v = std::getenv(name);
  return v && *v ? v : fallback;
}

std::string HostName() {
  char buf[HOST_NAME_MAX + 1] = {};
  gethostname(buf, sizeof buf - 1);
  return buf;
}

// `unbd` next to this binary, else from PATH.
std::string DefaultUnbd() {
  std::error_code ec;
  auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    auto sibling = self.parent_path() / "unbd";
    if (access(sibling.c_str(), X_OK) == 0) return sibling.string();
  }
  return "unbd";
}

}  // namespace

int main(int argc, char** argv) {
  unbd::TuneGrpcRuntime();
  CLI::App app{"unbd-csi: CSI plugin (csi.unbd.io) attaching unbd volumes through ublk"};
  std::string endpoint = EnvOr("CSI_ENDPOINT", "unix:///var/lib/kubelet/plugins/csi.unbd.io/csi.sock");
  std::string node_id = EnvOr("NODE_ID", HostName());
  std::string state_dir = "/var/lib/unbd-csi";
  std::string backends_text;
  std::string unbd = DefaultUnbd();
  std::string mode = "all";
  std::string log_level = "info";
  int heal_interval_ms = 200;
  app.add_option("--endpoint", endpoint, "unix:///path/csi.sock (default: $CSI_ENDPOINT)");
  app.add_option("--node-id", node_id, "This node's id (default: $NODE_ID, else the host name)");
  app.add_option("--state-dir", state_dir, "Where staging records live");
  app.add_option("--backends", backends_text, "Controller: unbd-servers HOST:PORT,HOST:PORT,...");
  app.add_option("--unbd", unbd, "The unbd binary (default: next to unbd-csi, else PATH)");
  app.add_option("--mode", mode, "node, controller or all")
      ->check(CLI::IsMember({"node", "controller", "all"}));
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error");
  app.add_option("--heal-interval-ms", heal_interval_ms, "How often each staged volume's daemon is checked")
      ->check(CLI::Range(10, 60000));
  CLI11_PARSE(app, argc, argv);
  spdlog::set_level(spdlog::level::from_str(log_level));

  std::vector<std::string> backends;
  for (size_t start = 0; !backends_text.empty() && start <= backends_text.size();) {
    size_t comma = backends_text.find(',', start);
    backends.push_back(backends_text.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  const bool node = mode != "controller", controller = mode != "node";

  std::string socket_path;
  if (endpoint.rfind("unix://", 0) == 0) socket_path = endpoint.substr(7);
  else if (endpoint.rfind("unix:", 0) == 0) socket_path = endpoint.substr(5);
  else if (!endpoint.empty() && endpoint[0] == '/') socket_path = endpoint;
  if (socket_path.empty() || socket_path[0] != '/') {
    spdlog::error("--endpoint {}: expected unix:///path/csi.sock", endpoint);
    return 2;
  }
  std::error_code ec;
  std::filesystem::create_directories(std::filesystem::path(socket_path).parent_path(), ec);
  std::filesystem::remove(socket_path, ec);  // a previous agent's socket

  // Signals are taken by sigwait below, never by gRPC's threads.
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGTERM);
  sigaddset(&sigs, SIGINT);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);

  unbd::csi::RecordStore records(state_dir + "/staged");
  unbd::csi::VolumeLocks locks;
  unbd::csi::UnbdDevices devices(unbd);
  unbd::csi::VolumeStager stager(&devices);
  unbd::csi::IdentityService identity(controller);
  unbd::csi::NodeService node_service(node_id, &records, &locks, &stager);
  unbd::csi::ControllerService controller_service(backends);
  std::unique_ptr<unbd::csi::VolumeHealer> healer;
  if (node) {
    unbd::Status s = records.Load();
    if (!s.ok()) {
      spdlog::error("--state-dir {}: {}", state_dir, s.ToString());
      return 1;
    }
  }

  grpc::ServerBuilder builder;
  builder.AddListeningPort("unix://" + socket_path, grpc::InsecureServerCredentials());
  builder.RegisterService(&identity);
  if (node) builder.RegisterService(&node_service);
  if (controller) builder.RegisterService(&controller_service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server) {
    spdlog::error("cannot serve on {}", endpoint);
    return 1;
  }
  spdlog::info("unbd-csi {} ({} mode, node {}) serving on {}; unbd {}; {} staged volumes",
               UNBD_VERSION, mode, node_id, socket_path, unbd, node ? records.All().size() : 0);
  if (node) {
    healer = std::make_unique<unbd::csi::VolumeHealer>(&records, &locks, &devices, &stager,
                                                       std::chrono::milliseconds(heal_interval_ms));
    healer->Start();
  }
  int sig = 0;
  sigwait(&sigs, &sig);
  spdlog::info("signal {}: stopping (volumes stay attached)", sig);
  if (healer) healer->Stop();
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  std::filesystem::remove(socket_path, ec);
  return 0;
}
