// CsiProcess: a real unbd-csi (path from UNBD_CSI_BIN) serving on <dir>/csi.sock for the host
// tests, with stubs for its three services; its log goes to <dir>/csi.log.
#pragma once

#include <chrono>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include "csi/v1/csi.grpc.pb.h"
#include "tests/integration/backend/server_process.h"
#include "tests/integration/child_process.h"

namespace unbd::testing {

class CsiProcess {
 public:
  CsiProcess(const std::string& dir, std::vector<std::string> extra)
      : socket_(dir + "/csi.sock"), process_(Args(dir, socket_, std::move(extra)), dir + "/csi.log") {
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
    ADD_FAILURE() << "unbd-csi did not answer Probe; log:\n" << log();
  }

  // Sends `sig`, waits for the exit and returns its code (128 + signal if killed).
  int Stop(int sig) { return process_.Kill(sig); }
  std::string log() const { return process_.log(); }
  const std::string& socket() const { return socket_; }

  std::unique_ptr<::csi::v1::Identity::Stub> identity;
  std::unique_ptr<::csi::v1::Node::Stub> node;
  std::unique_ptr<::csi::v1::Controller::Stub> controller;

 private:
  static std::vector<std::string> Args(const std::string& dir, const std::string& socket,
                                       std::vector<std::string> extra) {
    std::vector<std::string> args = {UNBD_CSI_BIN, "--endpoint", "unix://" + socket,
                                     "--state-dir", dir + "/state", "--node-id", "test-node",
                                     "--log-level", "debug"};
    args.insert(args.end(), extra.begin(), extra.end());
    return args;
  }

  std::string socket_;
  ChildProcess process_;
  std::shared_ptr<grpc::Channel> channel_;
};

// A client context with a deadline, for one call.
inline std::unique_ptr<grpc::ClientContext> Ctx(int seconds = 30) {
  auto c = std::make_unique<grpc::ClientContext>();
  c->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(seconds));
  return c;
}

}  // namespace unbd::testing
