// backend_bench: one 4 KiB random read / random write load generator, run in the same process
// against three targets so the figures are comparable:
//   unbd    unbd-server over loopback (BlockIo stream per client stream, batched, pipelined)
//   inproc  the backend Store called directly, no network: the ceiling
//   nbd     Debian's nbd-server over loopback through libnbd (the peer)
// For every workload and queue depth it prints IOPS, MB/s, p50/p99/p99.9 latency and the ratios
// unbd/nbd and unbd/inproc. Each target is prefilled with the same data and read back and checked
// before its runs (VerifyPrefill), so every run starts from warm caches. `bench/run-backend` builds
// and runs it.
#include <arpa/inet.h>
#include <libnbd.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include "common/grpc_runtime.h"
#include "backend/admin_client.h"
#include "backend/store.h"

namespace {

using Clock = std::chrono::steady_clock;
using unbd::Status;
namespace v1 = unbd::v1;
namespace be = unbd::backend;

constexpr uint32_t kIo = 4096;

struct Config {
  uint64_t size_bytes = 256ull << 20;
  double seconds = 3;
  std::vector<int> depths = {1, 32, 128};
  int streams = 2;
  int batches_in_flight = 2;
  std::vector<std::string> workloads = {"randread", "randwrite"};
  std::vector<std::string> targets = {"unbd", "inproc", "nbd"};
  std::string server_bin;
  std::vector<std::string> server_args;  // extra unbd-server flags
  bool client_poll = false;  // clients spin on their queues/sockets instead of sleeping
  int think_us = 0;  // unbd target: idle time between an answer and the next batch (a device's gap)
  std::string nbd_server_bin = "/usr/bin/nbd-server";
  std::string work_dir;
};

struct Result {
  double iops = 0, mbps = 0, p50_us = 0, p99_us = 0, p999_us = 0;
  uint64_t errors = 0;
};

// Per-stream measurement: latencies in ns; merged after the run.
struct StreamStats {
  std::vector<uint32_t> lat_ns;
  uint64_t ios = 0;
  uint64_t errors = 0;
  void Add(uint64_t ns) {
    lat_ns.push_back(static_cast<uint32_t>(std::min<uint64_t>(ns, UINT32_MAX)));
    ++ios;
  }
};

Result Summarize(std::vector<StreamStats>& st, double secs) {
  std::vector<uint32_t> all;
  Result r;
  uint64_t ios = 0;
  for (auto& s : st) {
    all.insert(all.end(), s.lat_ns.begin(), s.lat_ns.end());
    ios += s.ios;
    r.errors += s.errors;
  }
  if (all.empty()) return r;
  std::sort(all.begin(), all.end());
  auto pct = [&](double p) {
    return all[std::min(all.size() - 1, static_cast<size_t>(p * all.size()))] / 1000.0;
  };
  r.iops = ios / secs;
  r.mbps = r.iops * kIo / 1e6;
  r.p50_us = pct(0.50);
  r.p99_us = pct(0.99);
  r.p999_us = pct(0.999);
  return r;
}

uint64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
      .count();
}

// Splits total queue depth `qd` over `streams` streams (at least 1 per stream).
std::vector<int> SplitDepth(int qd, int streams) {
  int n = std::max(1, std::min(qd, streams));
  std::vector<int> d(n, qd / n);
  for (int i = 0; i < qd % n; ++i) ++d[i];
  return d;
}

std::string RandomBlock(uint64_t seed) {
  std::string d(kIo, '\0');
  std::mt19937_64 rng(seed);
  for (size_t k = 0; k < kIo; k += 8) {
    uint64_t x = rng();
    std::memcpy(&d[k], &x, 8);
  }
  return d;
}

// The volume's content after the prefill: chunk `off` (bytes) of `len` bytes.
std::string PrefillChunk(uint64_t off, uint32_t len) {
  std::string d;
  d.reserve(len);
  for (uint32_t b = 0; b < len / kIo; ++b) d += RandomBlock(off + b);
  return d;
}

constexpr uint32_t kPrefillChunk = 1 << 20;

// Reads the whole volume back in prefill-sized chunks through `read(off, len, &out)` and checks
// it. Besides catching a target that returns wrong data, it leaves every target in the same
// steady state before the timed runs: nbd-server's data sits in the page cache from its prefill,
// and this puts the store's blocks into its block cache the same way.
template <typename ReadChunk>
bool VerifyPrefill(const char* name, uint64_t size, ReadChunk read) {
  std::string got;
  for (uint64_t off = 0; off < size; off += kPrefillChunk) {
    if (!read(off, kPrefillChunk, &got)) {
      std::fprintf(stderr, "[%s] reading back offset %llu failed\n", name,
                   static_cast<unsigned long long>(off));
      return false;
    }
    if (got != PrefillChunk(off, kPrefillChunk)) {
      std::fprintf(stderr, "[%s] offset %llu: read back differs from what the prefill wrote\n",
                   name, static_cast<unsigned long long>(off));
      return false;
    }
  }
  return true;
}

// Runs `body(stream_index, depth, deadline, stats)` on one thread per stream.
template <typename Body>
Result RunStreams(const Config& cfg, int qd, Body body) {
  auto depths = SplitDepth(qd, cfg.streams);
  std::vector<StreamStats> stats(depths.size());
  for (auto& s : stats) s.lat_ns.reserve(1 << 20);
  const auto start = Clock::now();
  const auto deadline = start + std::chrono::duration_cast<Clock::duration>(
                                    std::chrono::duration<double>(cfg.seconds));
  std::vector<std::thread> ts;
  for (size_t i = 0; i < depths.size(); ++i) {
    ts.emplace_back([&, i] { body(static_cast<int>(i), depths[i], deadline, stats[i]); });
  }
  for (auto& t : ts) t.join();
  const double secs = std::chrono::duration<double>(Clock::now() - start).count();
  return Summarize(stats, secs);
}

// ---------------------------------------------------------------- unbd-server over loopback

class UnbdTarget {
 public:
  explicit UnbdTarget(const Config& cfg) : cfg_(cfg) {}
  ~UnbdTarget() {
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      waitpid(pid_, nullptr, 0);
    }
  }

  bool Start() {
    const std::string dir = cfg_.work_dir + "/unbd";
    std::filesystem::create_directories(dir);
    const std::string ports = dir + "/ports";
    pid_ = fork();
    if (pid_ == 0) {
      std::string log = dir + "/server.log";
      freopen(log.c_str(), "w", stdout);
      freopen(log.c_str(), "a", stderr);
      const std::string db = dir + "/db";
      std::vector<const char*> argv = {cfg_.server_bin.c_str(), "--listen", "127.0.0.1:0",
                                       "--data-dir", db.c_str(), "--port-file", ports.c_str(),
                                       "--log-level", "warn"};
      for (const auto& a : cfg_.server_args) argv.push_back(a.c_str());
      argv.push_back(nullptr);
      execv(cfg_.server_bin.c_str(), const_cast<char* const*>(argv.data()));
      _exit(127);
    }
    for (int i = 0; i < 400 && !std::filesystem::exists(ports); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(25));
    }
    std::ifstream f(ports);
    int port = 0;
    f >> port;
    if (port == 0) return false;
    target_ = "127.0.0.1:" + std::to_string(port);
    be::AdminClient admin(target_);
    v1::Volume v;
    Status s = admin.Create("bench", cfg_.size_bytes, &v);
    if (!s.ok()) {
      spdlog::error("create: {}", s.ToString());
      return false;
    }
    vol_ = v.id();
    be::IoClient io(target_);
    s = io.Open(vol_, 1, "bench");
    if (!s.ok()) return false;
    return Prefill() && ReadBack();
  }

  Result Run(const std::string& workload, int qd) {
    const bool fua = workload == "fuawrite";
    const bool write = workload == "randwrite" || fua;
    return RunStreams(cfg_, qd, [&](int si, int depth, Clock::time_point deadline,
                                    StreamStats& st) {
      auto channel = be::MakeChannel(target_, /*own_connection=*/true);
      auto stub = v1::BlockIo::NewStub(channel);
      // The async API on a queue of our own, so that --client-poll can spin on it; blocking in
      // Next costs the same as the sync API (which blocks on a queue of its own).
      grpc::CompletionQueue cq;
      grpc::ClientContext ctx;
      auto stream = stub->PrepareAsyncStream(&ctx, &cq);
      enum : intptr_t { kStarted = 1, kWritten, kRead, kClosed, kFinished };
      const gpr_timespec past = gpr_inf_past(GPR_CLOCK_MONOTONIC);
      auto next = [&]() -> std::pair<intptr_t, bool> {
        void* tag = nullptr;
        bool ok = false;
        if (cfg_.client_poll) {
          while (cq.AsyncNext(&tag, &ok, past) != grpc::CompletionQueue::GOT_EVENT) {
          }
        } else if (!cq.Next(&tag, &ok)) {
          return {0, false};
        }
        return {reinterpret_cast<intptr_t>(tag), ok};
      };
      auto await = [&](intptr_t want) {
        for (;;) {
          auto [tag, ok] = next();
          if (tag == want || tag == 0) return ok;
        }
      };
      stream->StartCall(reinterpret_cast<void*>(kStarted));
      if (!await(kStarted)) {
        st.errors++;
        return;
      }
      std::mt19937_64 rng(1000 + si);
      const std::string payload = RandomBlock(si);
      const uint64_t blocks = cfg_.size_bytes / kIo;
      // Several batches in flight per stream (default two half-depth ones), so the server works
      // on one while the client turns the other around.
      const int nb = std::max(1, std::min(depth, cfg_.batches_in_flight));
      std::vector<v1::IoBatch> batches(nb);
      std::vector<uint64_t> sent_at(nb);
      auto fill = [&](int b, int count) {
        v1::IoBatch& batch = batches[b];
        if (batch.requests_size() != count) {
          batch.Clear();
          for (int k = 0; k < count; ++k) {
            v1::IoRequest* r = AddRequest(&batch, write ? v1::OP_WRITE : v1::OP_READ, 0, kIo);
            r->set_tag(static_cast<uint32_t>(b * 1024 + k));
            r->set_fua(fua);
            if (write) r->set_data(payload);
          }
        }
        for (auto& r : *batch.mutable_requests()) r.set_offset((rng() % blocks) * kIo);
      };
      // One write may be outstanding at a time: later batches wait for it.
      std::deque<int> unsent;
      bool writing = false;
      auto send = [&](int b) {
        if (writing) {
          unsent.push_back(b);
          return;
        }
        stream->Write(batches[b], reinterpret_cast<void*>(kWritten));
        writing = true;
      };
      std::vector<int> sizes(nb, depth / nb);
      sizes[0] += depth % nb;
      for (int b = 0; b < nb; ++b) {
        fill(b, sizes[b]);
        sent_at[b] = NowNs();
        send(b);
      }
      v1::CompletionBatch done;
      stream->Read(&done, reinterpret_cast<void*>(kRead));
      int next_batch = 0;
      bool stopping = false;
      int outstanding = nb;
      while (outstanding > 0) {
        auto [tag, ok] = next();
        if (!ok) {
          st.errors++;
          break;
        }
        if (tag == kWritten) {
          writing = false;
          if (!unsent.empty()) {
            send(unsent.front());
            unsent.pop_front();
          }
          continue;
        }
        const uint64_t now = NowNs();
        for (const auto& c : done.completions()) {
          if (c.code() != 0) st.errors++;
          st.Add(now - sent_at[next_batch]);
        }
        --outstanding;
        if (!stopping && Clock::now() >= deadline) stopping = true;
        if (!stopping) {
          if (cfg_.think_us > 0) std::this_thread::sleep_for(std::chrono::microseconds(cfg_.think_us));
          fill(next_batch, sizes[next_batch]);
          sent_at[next_batch] = NowNs();
          send(next_batch);
          ++outstanding;
        }
        next_batch = (next_batch + 1) % nb;
        if (outstanding > 0) stream->Read(&done, reinterpret_cast<void*>(kRead));
      }
      if (writing) await(kWritten);
      stream->WritesDone(reinterpret_cast<void*>(kClosed));
      await(kClosed);
      grpc::Status status;
      stream->Finish(&status, reinterpret_cast<void*>(kFinished));
      await(kFinished);
    });
  }

 private:
  bool Prefill() {
    be::IoClient io(target_);
    auto stream = io.stub();
    grpc::ClientContext ctx;
    auto s = stream->Stream(&ctx);
    const uint32_t chunk = kPrefillChunk;
    for (uint64_t off = 0; off < cfg_.size_bytes;) {
      v1::IoBatch batch;
      for (int k = 0; k < 4 && off < cfg_.size_bytes; ++k, off += chunk) {
        AddRequest(&batch, v1::OP_WRITE, off, chunk)->set_data(PrefillChunk(off, chunk));
      }
      v1::CompletionBatch done;
      if (!s->Write(batch) || !s->Read(&done)) return false;
      for (const auto& c : done.completions()) {
        if (c.code() != 0) {
          spdlog::error("prefill: {}", c.message());
          return false;
        }
      }
    }
    s->WritesDone();
    return s->Finish().ok();
  }

  // A request on the bench volume at epoch 1.
  v1::IoRequest* AddRequest(v1::IoBatch* batch, v1::Opcode op, uint64_t off, uint32_t len) const {
    v1::IoRequest* r = batch->add_requests();
    r->set_op(op);
    r->set_volume_id(vol_);
    r->set_epoch(1);
    r->set_offset(off);
    r->set_length(len);
    return r;
  }

  bool ReadBack() {
    be::IoClient io(target_);
    auto stub = io.stub();
    grpc::ClientContext ctx;
    auto s = stub->Stream(&ctx);
    auto read = [&](uint64_t off, uint32_t len, std::string* out) {
      v1::IoBatch batch;
      AddRequest(&batch, v1::OP_READ, off, len);
      v1::CompletionBatch done;
      if (!s->Write(batch) || !s->Read(&done) || done.completions_size() != 1 ||
          done.completions(0).code() != 0) {
        return false;
      }
      *out = std::move(*done.mutable_completions(0)->mutable_data());
      return true;
    };
    const bool ok = VerifyPrefill("unbd", cfg_.size_bytes, read);
    s->WritesDone();
    return s->Finish().ok() && ok;
  }

  const Config& cfg_;
  pid_t pid_ = -1;
  std::string target_;
  uint64_t vol_ = 0;
};

// ---------------------------------------------------------------- Store in-process (ceiling)

class InprocTarget {
 public:
  explicit InprocTarget(const Config& cfg) : cfg_(cfg) {}

  bool Start() {
    be::StoreOptions o;
    o.dir = cfg_.work_dir + "/inproc";
    if (!be::Store::Open(o, &store_).ok()) return false;
    v1::Volume v;
    if (!store_->CreateVolume("bench", cfg_.size_bytes, 0, &v).ok()) return false;
    vol_ = v.id();
    if (!store_->OpenVolume(vol_, 1, "bench", &v).ok()) return false;
    const uint32_t chunk = kPrefillChunk;
    for (uint64_t off = 0; off < cfg_.size_bytes; off += chunk) {
      const std::string d = PrefillChunk(off, chunk);
      be::IoOp op = Op(v1::OP_WRITE, off, chunk);
      op.data = d;
      store_->SubmitBatch(std::span<be::IoOp>(&op, 1));
      if (!op.status.ok()) return false;
    }
    auto read = [&](uint64_t off, uint32_t len, std::string* out) {
      be::IoOp op = Op(v1::OP_READ, off, len);
      op.read_out = out;
      store_->SubmitBatch(std::span<be::IoOp>(&op, 1));
      return op.status.ok();
    };
    return VerifyPrefill("inproc", cfg_.size_bytes, read);
  }

  Result Run(const std::string& workload, int qd) {
    const bool fua = workload == "fuawrite";
    const bool write = workload == "randwrite" || fua;
    return RunStreams(cfg_, qd, [&](int si, int depth, Clock::time_point deadline,
                                    StreamStats& st) {
      std::mt19937_64 rng(2000 + si);
      const std::string payload = RandomBlock(si);
      const uint64_t blocks = cfg_.size_bytes / kIo;
      std::vector<be::IoOp> ops(depth);
      std::vector<std::string> outs(depth);
      while (Clock::now() < deadline) {
        for (int k = 0; k < depth; ++k) {
          be::IoOp& op = ops[k];
          op.op = write ? v1::OP_WRITE : v1::OP_READ;
          op.volume_id = vol_;
          op.epoch = 1;
          op.offset = (rng() % blocks) * kIo;
          op.length = kIo;
          op.fua = fua;
          op.data = write ? std::string_view(payload) : std::string_view();
          op.read_out = write ? nullptr : &outs[k];
          op.status = Status::Ok();
        }
        const uint64_t t0 = NowNs();
        store_->SubmitBatch(ops);
        const uint64_t t1 = NowNs();
        for (auto& op : ops) {
          if (!op.status.ok()) st.errors++;
          st.Add(t1 - t0);
        }
      }
    });
  }

 private:
  be::IoOp Op(v1::Opcode code, uint64_t off, uint32_t len) const {
    be::IoOp op;
    op.op = code;
    op.volume_id = vol_;
    op.epoch = 1;
    op.offset = off;
    op.length = len;
    return op;
  }

  const Config& cfg_;
  std::unique_ptr<be::Store> store_;
  uint64_t vol_ = 0;
};

// ---------------------------------------------------------------- nbd-server via libnbd

class NbdTarget {
 public:
  explicit NbdTarget(const Config& cfg) : cfg_(cfg) {}
  ~NbdTarget() {
    if (server_pid_ > 0) {
      kill(server_pid_, SIGTERM);
      // Per-connection children exit when their clients disconnect (they already have).
    }
  }

  bool Start() {
    const std::string dir = cfg_.work_dir + "/nbd";
    std::filesystem::create_directories(dir);
    const std::string img = dir + "/disk.img";
    {
      std::ofstream f(img, std::ios::binary);
      for (uint64_t off = 0; off < cfg_.size_bytes; off += kPrefillChunk) {
        const std::string d = PrefillChunk(off, kPrefillChunk);
        f.write(d.data(), static_cast<std::streamsize>(d.size()));
      }
    }
    port_ = FreePort();
    const std::string conf = dir + "/config";
    std::ofstream(conf) << "[generic]\n  port = " << port_
                        << "\n  listenaddr = 127.0.0.1\n  allowlist = false\n"
                        << "[bench]\n  exportname = " << img << "\n";
    const std::string pidfile = dir + "/pid";
    const std::string cmd = cfg_.nbd_server_bin + " -C " + conf + " -p " + pidfile + " >" + dir +
                            "/server.log 2>&1";
    if (std::system(cmd.c_str()) != 0) {
      spdlog::error("nbd-server failed to start: see {}/server.log", dir);
      return false;
    }
    for (int i = 0; i < 200; ++i) {
      std::ifstream p(pidfile);
      if (p >> server_pid_) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(25));
    }
    // Wait until it accepts connections.
    for (int i = 0; i < 200; ++i) {
      nbd_handle* h = Connect();
      if (h) {
        auto read = [&](uint64_t off, uint32_t len, std::string* out) {
          out->resize(len);
          return nbd_pread(h, out->data(), len, off, 0) == 0;
        };
        const bool ok = VerifyPrefill("nbd", cfg_.size_bytes, read);
        nbd_close(h);
        return ok;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(25));
    }
    return false;
  }

  Result Run(const std::string& workload, int qd) {
    const bool fua = workload == "fuawrite";
    const bool write = workload == "randwrite" || fua;
    return RunStreams(cfg_, qd, [&](int si, int depth, Clock::time_point deadline,
                                    StreamStats& st) {
      nbd_handle* h = Connect();
      if (!h) {
        st.errors++;
        return;
      }
      std::mt19937_64 rng(3000 + si);
      const uint64_t blocks = cfg_.size_bytes / kIo;
      std::vector<std::string> bufs(depth, RandomBlock(si));
      struct Slot {
        std::vector<int>* done;
        int index;
      };
      std::vector<int> done;
      std::vector<Slot> slots(depth);
      std::vector<uint64_t> start(depth);
      auto cb = [](void* user, int* error) -> int {
        auto* s = static_cast<Slot*>(user);
        if (*error) s->index = -s->index - 1;  // flag; recorded as an error below
        s->done->push_back(s->index);
        return 1;  // auto-retire the command
      };
      auto issue = [&](int k) {
        slots[k] = {&done, k};
        start[k] = NowNs();
        const uint64_t off = (rng() % blocks) * kIo;
        nbd_completion_callback c{cb, &slots[k], nullptr};
        const uint32_t flags = fua ? LIBNBD_CMD_FLAG_FUA : 0;
        int64_t r = write ? nbd_aio_pwrite(h, bufs[k].data(), kIo, off, c, flags)
                          : nbd_aio_pread(h, bufs[k].data(), kIo, off, c, 0);
        if (r < 0) st.errors++;
      };
      for (int k = 0; k < depth; ++k) issue(k);
      int inflight = depth;
      bool stopping = false;
      while (inflight > 0) {
        // --client-poll: spin (timeout 0) like the unbd client does.
        if (nbd_poll(h, cfg_.client_poll ? 0 : -1) < 0) {
          st.errors++;
          break;
        }
        const uint64_t now = NowNs();
        std::vector<int> ready;
        ready.swap(done);
        for (int k : ready) {
          if (k < 0) {
            st.errors++;
            k = -k - 1;
          }
          st.Add(now - start[k]);
          --inflight;
          if (!stopping && Clock::now() >= deadline) stopping = true;
          if (!stopping) {
            issue(k);
            ++inflight;
          }
        }
      }
      nbd_shutdown(h, 0);
      nbd_close(h);
    });
  }

 private:
  nbd_handle* Connect() {
    nbd_handle* h = nbd_create();
    if (!h) return nullptr;
    nbd_set_export_name(h, "bench");
    if (nbd_connect_tcp(h, "127.0.0.1", std::to_string(port_).c_str()) < 0) {
      nbd_close(h);
      return nullptr;
    }
    return h;
  }

  static int FreePort() {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
    socklen_t len = sizeof a;
    getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
    close(fd);
    return ntohs(a.sin_port);
  }

  const Config& cfg_;
  int port_ = 0;
  pid_t server_pid_ = -1;
};

std::vector<int> ParseInts(const std::string& s) {
  std::vector<int> out;
  std::stringstream ss(s);
  std::string tok;
  while (std::getline(ss, tok, ',')) out.push_back(std::stoi(tok));
  return out;
}

std::vector<std::string> ParseList(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string tok;
  while (std::getline(ss, tok, ',')) out.push_back(tok);
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  unbd::TuneGrpcRuntime();
  Config cfg;
  std::string depths = "1,32,128", workloads = "randread,randwrite", targets = "unbd,inproc,nbd";
  uint64_t size_mib = cfg.size_bytes >> 20;
  CLI::App app{"backend_bench: 4 KiB random I/O against unbd-server, the in-process store, nbd-server"};
  app.add_option("--server-bin", cfg.server_bin, "unbd-server binary")->required();
  app.add_option("--think-us", cfg.think_us,
                 "unbd target: sleep this long between an answer and the next batch (the idle gap a "
                 "device's client leaves between requests)")->capture_default_str();
  app.add_flag("--client-poll", cfg.client_poll,
               "unbd and nbd clients spin for completions instead of sleeping (both alike)");
  app.add_option("--server-arg", cfg.server_args,
                 "an extra unbd-server flag (repeatable), e.g. --server-arg=--poll-us=50");
  app.add_option("--nbd-server-bin", cfg.nbd_server_bin, "nbd-server binary")->capture_default_str();
  app.add_option("--size-mib", size_mib, "volume / export size")->capture_default_str();
  app.add_option("--seconds", cfg.seconds, "duration of each run")->capture_default_str();
  app.add_option("--depths", depths, "total queue depths")->capture_default_str();
  app.add_option("--streams", cfg.streams, "client streams (connections) for QD > 1")
      ->capture_default_str();
  app.add_option("--batches-in-flight", cfg.batches_in_flight,
                 "unbd: batches each stream keeps in flight (its depth is split among them)")
      ->capture_default_str();
  app.add_option("--workloads", workloads,
                 "randread,randwrite; also fuawrite (random writes with FUA: durable each)")->capture_default_str();
  app.add_option("--targets", targets, "unbd,inproc,nbd")->capture_default_str();
  app.add_option("--work-dir", cfg.work_dir, "scratch directory (default: a new temp dir)");
  CLI11_PARSE(app, argc, argv);
  cfg.size_bytes = size_mib << 20;
  cfg.depths = ParseInts(depths);
  cfg.workloads = ParseList(workloads);
  cfg.targets = ParseList(targets);
  spdlog::set_level(spdlog::level::warn);
  signal(SIGPIPE, SIG_IGN);
  if (cfg.work_dir.empty()) {
    char tmpl[] = "/tmp/unbd-bench-XXXXXX";
    cfg.work_dir = mkdtemp(tmpl);
  }

  std::map<std::string, std::map<std::string, Result>> results;  // target -> "workload/qd"
  auto key = [](const std::string& w, int qd) { return w + "/" + std::to_string(qd); };
  // A target that cannot start, returns wrong data or fails requests fails the whole run.
  int failures = 0;
  auto run_target = [&](const std::string& name, auto& target) {
    std::fprintf(stderr, "[%s] preparing %llu MiB...\n", name.c_str(),
                 static_cast<unsigned long long>(cfg.size_bytes >> 20));
    if (!target.Start()) {
      std::fprintf(stderr, "[%s] failed to start; skipped\n", name.c_str());
      ++failures;
      return;
    }
    for (const auto& w : cfg.workloads) {
      for (int qd : cfg.depths) {
        // A profiler (bench/run-qd1-profile) starts sampling on this line.
        std::fprintf(stderr, "[%s] %-9s QD%-3d running for %.1f s\n", name.c_str(), w.c_str(), qd, cfg.seconds);
        Result r = target.Run(w, qd);
        results[name][key(w, qd)] = r;
        if (r.errors) ++failures;
        std::fprintf(stderr, "[%s] %-9s QD%-3d %8.0f IOPS  p50 %7.1f us%s\n", name.c_str(),
                     w.c_str(), qd, r.iops, r.p50_us, r.errors ? "  ERRORS" : "");
      }
    }
  };
  for (const auto& t : cfg.targets) {
    if (t == "unbd") {
      UnbdTarget x(cfg);
      run_target(t, x);
    } else if (t == "inproc") {
      InprocTarget x(cfg);
      run_target(t, x);
    } else if (t == "nbd") {
      NbdTarget x(cfg);
      run_target(t, x);
    }
  }

  std::printf("\n4 KiB random I/O, %llu MiB volume, %.1f s per run, up to %d streams; %u cores\n",
              static_cast<unsigned long long>(cfg.size_bytes >> 20), cfg.seconds, cfg.streams,
              std::thread::hardware_concurrency());
  std::printf("%-8s %-10s %5s %10s %9s %10s %10s %10s %7s\n", "target", "workload", "QD", "IOPS",
              "MB/s", "p50 us", "p99 us", "p99.9 us", "errors");
  for (const auto& w : cfg.workloads) {
    for (int qd : cfg.depths) {
      for (const auto& t : cfg.targets) {
        auto it = results[t].find(key(w, qd));
        if (it == results[t].end()) continue;
        const Result& r = it->second;
        std::printf("%-8s %-10s %5d %10.0f %9.1f %10.1f %10.1f %10.1f %7llu\n", t.c_str(),
                    w.c_str(), qd, r.iops, r.mbps, r.p50_us, r.p99_us, r.p999_us,
                    static_cast<unsigned long long>(r.errors));
      }
    }
  }
  std::printf("\nratios (unbd vs peer and ceiling): IOPS unbd/nbd, IOPS unbd/inproc, p50 unbd/nbd\n");
  for (const auto& w : cfg.workloads) {
    for (int qd : cfg.depths) {
      auto get = [&](const std::string& t) -> const Result* {
        auto it = results[t].find(key(w, qd));
        return it == results[t].end() ? nullptr : &it->second;
      };
      const Result *u = get("unbd"), *n = get("nbd"), *c = get("inproc");
      if (!u) continue;
      std::printf("%-10s QD%-4d", w.c_str(), qd);
      if (n && n->iops > 0) std::printf("  unbd/nbd %5.2fx", u->iops / n->iops);
      if (c && c->iops > 0) std::printf("  unbd/inproc %5.2fx", u->iops / c->iops);
      if (n && n->p50_us > 0) std::printf("  p50 unbd/nbd %5.2fx", u->p50_us / n->p50_us);
      std::printf("\n");
    }
  }
  std::filesystem::remove_all(cfg.work_dir);
  return failures == 0 ? 0 : 1;
}
