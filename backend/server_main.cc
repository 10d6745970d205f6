// unbd-server: serves volumes from a RocksDB store over gRPC (unbd.v1.VolumeAdmin, unbd.v1.BlockIo,
// unbd.v1.Replication).
//
//   unbd-server --listen 0.0.0.0:7420 --data-dir /var/lib/unbd --metrics-listen 127.0.0.1:9420
//
// Startup fails with a clear message (exit 1) when the port is busy, the data directory is not
// writable, or another server holds the directory. SIGTERM/SIGINT: stop accepting work, let
// in-flight batches finish and answer, sync the WAL, close the store, exit 0.
#include <arpa/inet.h>
#include <netdb.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <grpcpp/grpcpp.h>
#include <spdlog/spdlog.h>

#include "common/grpc_runtime.h"
#include "backend/metrics.h"
#include "backend/metrics_http.h"
#include "backend/replication_service.h"
#include "backend/store.h"
#include "backend/stream_server.h"
#include "backend/tcp_listen.h"
#include "backend/volume_service.h"

namespace {

using unbd::Status;

// gRPC's own bind error is a generic "failed to add port"; probing first gives the errno, and
// SO_REUSEPORT is off in gRPC too, so a second server on the same port fails instead of sharing.
Status ProbeListen(const std::string& listen) {
  std::string host;
  int port;
  if (unbd::backend::SplitHostPort(listen, &host, &port) && port == 0) return Status::Ok();
  int fd;
  Status s = unbd::backend::BindTcp(listen, "--listen", &fd);
  if (s.ok()) close(fd);
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  unbd::TuneGrpcRuntime();
  CLI::App app{"unbd-server: block volumes over gRPC, stored in RocksDB"};
  std::string listen = "0.0.0.0:7420";
  std::string data_dir;
  std::string metrics_listen;
  std::string log_level = "info";
  std::string port_file;
  uint32_t test_apply_delay_us = 0;
  uint64_t region_bytes = 1ull << 20;
  uint32_t write_buffer_mib = 128;
  std::string hold_writes_file;
  uint32_t test_read_delay_us = 0;
  // Half the cores: gRPC's epoll1 poller is shared by all queues, so every extra queue thread
  // adds wake-up hand-offs (QD1 p50 on 2 cores: 36 us with one thread, 58 us with two), while
  // RocksDB's background jobs and the kernel's TCP work need the remaining cores anyway.
  unsigned stream_threads = std::max(1u, std::thread::hardware_concurrency() / 2);
  uint32_t poll_us = 50;
  app.add_option("--listen", listen, "gRPC address HOST:PORT (port 0: pick a free one)")
      ->capture_default_str();
  app.add_option("--data-dir", data_dir, "RocksDB directory (created if missing)")->required();
  app.add_option("--metrics-listen", metrics_listen,
                 "Prometheus metrics address HOST:PORT (HTTP); off when empty");
  app.add_option("--log-level", log_level, "trace|debug|info|warn|error|critical|off")
      ->capture_default_str();
  app.add_option("--port-file", port_file,
                 "after startup, write the gRPC port and the metrics port (one per line) here");
  app.add_option("--stream-threads", stream_threads,
                 "completion-queue threads serving BlockIo.Stream (default: half the cores)")
      ->capture_default_str()
      ->check(CLI::Range(1u, 256u));
  app.add_option("--poll-us", poll_us,
                 "while a queue sees small batches (QD1-like clients) arriving less than this many "
                 "microseconds apart, its thread polls for the next one that long before it "
                 "sleeps: lower QD1 latency for CPU spent spinning; 0: off")
      ->capture_default_str()
      ->check(CLI::Range(0u, 100000u));
  app.add_option("--region-bytes", region_bytes,
                 "dirty-region size for replicated volumes: a power of two >= 4096, fixed when the "
                 "data directory is created")
      ->capture_default_str()
      ->check([](const std::string& v) -> std::string {
        uint64_t n = 0;
        try {
          n = std::stoull(v);
        } catch (...) {
          return "--region-bytes " + v + ": not a number";
        }
        if (n < 4096 || (n & (n - 1)) != 0) {
          return "--region-bytes " + v + ": must be a power of two >= 4096";
        }
        return "";
      });
  app.add_option("--write-buffer-mib", write_buffer_mib,
                 "RocksDB memtable size in MiB; the write-ahead log is capped at 8 times this "
                 "(the store's disk footprint before compaction; lower it on small disks)")
      ->capture_default_str()
      ->check(CLI::Range(4u, 4096u));
  app.add_option("--test-hold-writes-file", hold_writes_file,
                 "TEST HOOK, never in production: a WRITE/DISCARD/WRITE_ZEROES (unary or stream) "
                 "whose epoch equals the decimal number in this file waits before its fencing "
                 "check while the file exists with that number (polled every 10 ms), then is "
                 "fenced and applied as usual; a stream's whole batch waits, other streams, "
                 "volumes, epochs and OpenVolume are not held");
  app.add_option("--test-read-delay-us", test_read_delay_us,
                 "TEST HOOK, never in production: every READ (unary, or a stream batch with a "
                 "READ, once per batch) waits this many microseconds before it is applied, on a "
                 "thread of its own (other streams go on): a slow replica for the read-choice "
                 "tests; 0: off")
      ->check(CLI::Range(0u, 10000000u));
  app.add_option("--test-apply-delay-us", test_apply_delay_us,
                 "fault injection for tests: delay between fencing check and apply")
      ->group("");
  CLI11_PARSE(app, argc, argv);

  spdlog::set_level(spdlog::level::from_str(log_level));
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ unbd-server: %v");

  // Signals are taken synchronously by the main thread; block them before any thread starts.
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGTERM);
  sigaddset(&sigs, SIGINT);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
  signal(SIGPIPE, SIG_IGN);

  auto fail = [](const Status& s) {
    spdlog::critical("{}", s.message());
    return 1;
  };

  if (Status s = ProbeListen(listen); !s.ok()) return fail(s);

  unbd::backend::StoreOptions opts;
  opts.dir = data_dir;
  opts.test_apply_delay_us = test_apply_delay_us;
  opts.region_bytes = region_bytes;
  opts.write_buffer_bytes = uint64_t{write_buffer_mib} << 20;
  std::unique_ptr<unbd::backend::Store> store;
  if (Status s = unbd::backend::Store::Open(opts, &store); !s.ok()) return fail(s);

  unbd::backend::Metrics metrics;
  unbd::backend::ReplicationService replication(store.get());
  std::unique_ptr<unbd::backend::MetricsHttpServer> metrics_http;
  if (!metrics_listen.empty()) {
    metrics_http = std::make_unique<unbd::backend::MetricsHttpServer>([&] {
      metrics.wal_syncs = store->syncs_done();
      metrics.store_write_failed = store->write_failed();
      return metrics.RenderPrometheus() +
             unbd::backend::Metrics::RenderReplicaSets(replication.ReplicaSets());
    });
    if (Status s = metrics_http->Start(metrics_listen); !s.ok()) return fail(s);
  }

  unbd::backend::VolumeService service(store.get(), &metrics);
  if (!hold_writes_file.empty()) {
    spdlog::warn("test hook on: writes are held while {} names their epoch", hold_writes_file);
    service.SetTestHoldWritesFile(hold_writes_file);
  }
  if (test_read_delay_us > 0) {
    spdlog::warn("test hook on: every read waits {} us", test_read_delay_us);
    service.SetTestReadDelay(std::chrono::microseconds(test_read_delay_us));
  }
  const auto limits = service.Limits();
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(listen, grpc::InsecureServerCredentials(), &port);
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  // BDP probing stays on (gRPC's default), as in MakeChannel (admin_client.cc): it grows the
  // flow-control windows that several large batches per stream need.
  builder.SetMaxReceiveMessageSize(static_cast<int>(limits.max_message_bytes()));
  builder.SetMaxSendMessageSize(static_cast<int>(limits.max_message_bytes()));
  builder.RegisterService(static_cast<unbd::v1::VolumeAdmin::Service*>(&service));
  builder.RegisterService(static_cast<unbd::v1::BlockIo::Service*>(&service));
  builder.RegisterService(&replication);
  std::vector<std::unique_ptr<grpc::ServerCompletionQueue>> cqs;
  for (unsigned i = 0; i < stream_threads; ++i) cqs.push_back(builder.AddCompletionQueue());
  unbd::backend::StreamServer streams(&service, std::move(cqs), poll_us);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || port == 0) {
    return fail(Status::Unavailable("cannot listen on " + listen));
  }
  streams.Start();
  spdlog::info("listening on {} (port {}), data in {}, metrics {}", listen, port, data_dir,
               metrics_http ? std::to_string(metrics_http->port()) : std::string("off"));
  if (!port_file.empty()) {
    std::ofstream f(port_file + ".tmp");
    f << port << "\n" << (metrics_http ? metrics_http->port() : 0) << "\n";
    f.close();
    std::rename((port_file + ".tmp").c_str(), port_file.c_str());
  }

  int sig = 0;
  sigwait(&sigs, &sig);
  spdlog::info("signal {}: draining", sig);
  service.BeginDrain();
  // Busy streams answer the batch they are applying (bounded by one WAL sync); then the short
  // deadline only cuts off calls that are still arriving.
  service.WaitForStreams(std::chrono::seconds(5));
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(500));
  spdlog::debug("rpcs finished");
  server->Wait();
  streams.Stop();  // after Shutdown: the queues drain and their threads exit
  if (metrics_http) metrics_http->Stop();
  store.reset();  // syncs the WAL and closes RocksDB
  spdlog::info("stopped");
  return 0;
}
