// ServerProcess: runs a real unbd-server (path from UNBD_SERVER_BIN) on 127.0.0.1 with an
// ephemeral port for integration tests; its log goes to <dir>/server.log.
#pragma once

#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "backend/admin_client.h"
#include "tests/integration/child_process.h"

namespace unbd::testing {

// Removes the directories a test made with TestDir once it passed (its servers are gone by
// then: fixtures and locals are destroyed before OnTestEnd). A failed test keeps them for
// debugging, and so does every test with UNBD_KEEP_TEST_DIRS=1: a server's RocksDB can reach a
// gigabyte, and CI machines would fill up.
class TestDirJanitor : public ::testing::EmptyTestEventListener {
 public:
  static TestDirJanitor& Get() {
    static TestDirJanitor* janitor = [] {
      auto* j = new TestDirJanitor;  // owned by gtest's listener list
      ::testing::UnitTest::GetInstance()->listeners().Append(j);
      return j;
    }();
    return *janitor;
  }
  void Track(const std::filesystem::path& dir) { dirs_.push_back(dir); }
  void OnTestEnd(const ::testing::TestInfo& info) override {
    const char* keep = std::getenv("UNBD_KEEP_TEST_DIRS");
    const bool keep_all = keep != nullptr && std::string(keep) == "1";
    for (const auto& d : dirs_) {
      if (info.result()->Passed() && !keep_all) {
        std::error_code ec;
        std::filesystem::remove_all(d, ec);
      } else {
        std::cerr << "kept test directory " << d.string() << "\n";
      }
    }
    dirs_.clear();
  }

 private:
  std::vector<std::filesystem::path> dirs_;
};

inline std::string TestDir(const std::string& tag) {
  auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  auto dir = std::filesystem::temp_directory_path() /
             ("unbd-it-" + std::to_string(getpid()) + "-" + info->name() + "-" + tag);
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  TestDirJanitor::Get().Track(dir);
  return dir;
}

class ServerProcess {
 public:
  // Starts the server; `extra` are additional flags. Check started() / exit_code().
  ServerProcess(std::string work_dir, std::string data_dir, std::vector<std::string> extra = {},
                std::string listen = "127.0.0.1:0")
      : port_file_(Removed(work_dir + "/ports")),
        process_(Args(std::move(data_dir), port_file_, std::move(listen), std::move(extra)),
                 work_dir + "/server.log") {
    // Wait for the port file, or for the process to exit (startup failure).
    for (int i = 0; i < 400; ++i) {
      if (std::filesystem::exists(port_file_)) {
        std::ifstream f(port_file_);
        f >> port_ >> metrics_port_;
        return;
      }
      if (!process_.alive()) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(25));
    }
    ADD_FAILURE() << "unbd-server did not start; log:\n" << log();
  }

  bool started() const { return port_ > 0 && process_.running(); }
  // Still running (reaps it and records the exit code if it has died).
  bool alive() { return process_.alive(); }
  int exit_code() const { return process_.exit_code(); }
  std::string target() const { return "127.0.0.1:" + std::to_string(port_); }
  int port() const { return port_; }
  int metrics_port() const { return metrics_port_; }
  std::string log() const { return process_.log(); }
  // Sends `sig` without waiting (SIGSTOP / SIGCONT: a server that stops answering for a while).
  void Signal(int sig) { process_.Signal(sig); }
  // Sends `sig` and waits for exit; returns the exit code (128+signal if killed).
  int Kill(int sig) { return process_.Kill(sig); }

 private:
  static std::string Removed(std::string path) {
    std::filesystem::remove(path);
    return path;
  }
  static std::vector<std::string> Args(std::string data_dir, const std::string& port_file,
                                       std::string listen, std::vector<std::string> extra) {
    std::vector<std::string> args = {UNBD_SERVER_BIN, "--listen", std::move(listen), "--data-dir",
                                     std::move(data_dir), "--metrics-listen", "127.0.0.1:0",
                                     "--port-file", port_file, "--log-level", "debug"};
    args.insert(args.end(), extra.begin(), extra.end());
    return args;
  }

  std::string port_file_;
  ChildProcess process_;
  int port_ = 0, metrics_port_ = 0;
};

// One BlockIo stream, used synchronously: send a batch, wait for its completions.
class StreamSession {
 public:
  // deadline > 0: the whole stream fails (DEADLINE_EXCEEDED) after that long.
  explicit StreamSession(const std::string& target,
                         std::chrono::milliseconds deadline = std::chrono::milliseconds(0))
      : channel_(backend::MakeChannel(target, /*own_connection=*/true)),
        stub_(v1::BlockIo::NewStub(channel_)),
        stream_(Start(deadline)) {}
  ~StreamSession() {
    if (!finished_) Finish();
  }
  // False if the stream broke; then Finish() has the status.
  bool Exchange(const v1::IoBatch& batch, v1::CompletionBatch* out) {
    return stream_->Write(batch) && stream_->Read(out);
  }
  // The two halves of Exchange, for tests that act while a batch is in flight.
  bool Send(const v1::IoBatch& batch) { return stream_->Write(batch); }
  bool Receive(v1::CompletionBatch* out) { return stream_->Read(out); }
  grpc::Status Finish() {
    stream_->WritesDone();
    grpc::Status s = stream_->Finish();
    finished_ = true;
    return s;
  }

 private:
  std::unique_ptr<grpc::ClientReaderWriter<v1::IoBatch, v1::CompletionBatch>> Start(
      std::chrono::milliseconds deadline) {
    if (deadline.count() > 0) ctx_.set_deadline(std::chrono::system_clock::now() + deadline);
    return stub_->Stream(&ctx_);
  }

  grpc::ClientContext ctx_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::BlockIo::Stub> stub_;
  std::unique_ptr<grpc::ClientReaderWriter<v1::IoBatch, v1::CompletionBatch>> stream_;
  bool finished_ = false;
};

// The first `bytes` of a volume, read through unary calls in 1 MiB pieces.
inline std::string ReadVolume(backend::IoClient& io, uint64_t vol, uint64_t epoch, uint64_t bytes) {
  std::string all;
  for (uint64_t off = 0; off < bytes; off += 1 << 20) {
    std::string part;
    Status s = io.Read(vol, epoch, off, 1 << 20, &part);
    EXPECT_TRUE(s.ok()) << s.ToString();
    all += part;
  }
  return all;
}

inline v1::IoRequest* AddRequest(v1::IoBatch* b, uint32_t tag, v1::Opcode op, uint64_t vol,
                                 uint64_t epoch, uint64_t off, uint32_t len,
                                 const std::string& data = {}, bool fua = false) {
  v1::IoRequest* r = b->add_requests();
  r->set_tag(tag);
  r->set_op(op);
  r->set_volume_id(vol);
  r->set_epoch(epoch);
  r->set_offset(off);
  r->set_length(len);
  r->set_fua(fua);
  if (!data.empty()) r->set_data(data);
  return r;
}

// Fetches http://127.0.0.1:port/metrics with a plain socket.
std::string HttpGet(int port);

}  // namespace unbd::testing
