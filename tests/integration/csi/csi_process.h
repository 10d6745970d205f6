// CsiProcess: a real unbd-csi (path from UNBD_CSI_BIN) serving on <dir>/csi.sock for the host
// tests, with stubs for its three services; its log goes to <dir>/csi.log.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include "csi/v1/csi.grpc.pb.h"
#include "tests/integration/backend/server_process.h"

namespace unbd::testing {

class CsiProcess {
 public:
  CsiProcess(const std::string& dir, std::vector<std::string> extra) : dir_(dir) {
    socket_ = dir + "/csi.sock";
    log_ = dir + "/csi.log";
    std::vector<std::string> args = {UNBD_CSI_BIN, "--endpoint", "unix://" + socket_,
                                     "--state-dir", dir + "/state", "--node-id", "test-node",
                                     "--log-level", "debug"};
    args.insert(args.end(), extra.begin(), extra.end());
    pid_ = fork();
    if (pid_ == 0) {
      int fd = open(log_.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      dup2(fd, 1);
      dup2(fd, 2);
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(argv[0], argv.data());
      _exit(127);
    }
    // A channel made before the socket exists backs off for seconds before it retries.
    for (int i = 0; i < 400 && !std::filesystem::exists(socket_); ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    channel_ = grpc::CreateChannel("unix://" + socket_, grpc::InsecureChannelCredentials());
    identity = ::csi::v1::Identity::NewStub(channel_);
    node = ::csi::v1::Node::NewStub(channel_);
    controller = ::csi::v1::Controller::NewStub(channel_);
    for (int i = 0; i < 200; ++i) {
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(100));
      ::csi::v1::ProbeRequest req;
      ::csi::v1::ProbeResponse resp;
      if (identity->Probe(&ctx, req, &resp).ok()) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(25));
    }
    ADD_FAILURE() << "unbd-csi did not answer Probe; log:\n" << ReadFile(log_);
  }
  ~CsiProcess() { Stop(SIGKILL); }

  int Stop(int sig) {
    if (pid_ <= 0) return -1;
    kill(pid_, sig);
    int st = 0;
    waitpid(pid_, &st, 0);
    pid_ = -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  }
  std::string log() const { return ReadFile(log_); }
  const std::string& socket() const { return socket_; }

  std::unique_ptr<::csi::v1::Identity::Stub> identity;
  std::unique_ptr<::csi::v1::Node::Stub> node;
  std::unique_ptr<::csi::v1::Controller::Stub> controller;

 private:
  std::string dir_, socket_, log_;
  pid_t pid_ = -1;
  std::shared_ptr<grpc::Channel> channel_;
};

// A client context with a deadline, for one call.
inline std::unique_ptr<grpc::ClientContext> Ctx(int seconds = 30) {
  auto c = std::make_unique<grpc::ClientContext>();
  c->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(seconds));
  return c;
}

}  // namespace unbd::testing
