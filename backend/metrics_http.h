// MetricsHttpServer: a deliberately tiny HTTP/1.0 responder for Prometheus scrapes. Every GET
// gets the current metrics text; one thread, one connection at a time (scrapes are rare).
#pragma once

#include <atomic>
#include <functional>
#include <string>
#include <thread>

#include "common/status.h"

namespace unbd::backend {

class MetricsHttpServer {
 public:
  explicit MetricsHttpServer(std::function<std::string()> render) : render_(std::move(render)) {}
  ~MetricsHttpServer() { Stop(); }

  // `listen` is "host:port" (port 0 picks one; see port()).
  Status Start(const std::string& listen);
  int port() const { return port_; }
  void Stop();

 private:
  void Serve();

  std::function<std::string()> render_;
  int fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace unbd::backend
