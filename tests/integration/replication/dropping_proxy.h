// DroppingProxy: a TCP proxy on 127.0.0.1 in front of one server that closes the first N
// connections it accepts as soon as they are made and forwards every later one. To a gRPC client
// this is a server that is up but whose first connections fail in the handshake, as a loaded
// machine's can, and unlike a refused port.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace unbd::testing {

class DroppingProxy {
 public:
  DroppingProxy(uint16_t upstream_port, int drop_first) : upstream_port_(upstream_port) {
    drops_left_ = drop_first;
    listen_fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr = Loopback(0);
    socklen_t len = sizeof addr;
    if (bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), len) != 0 ||
        listen(listen_fd_, 16) != 0 ||
        getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      return;
    }
    port_ = ntohs(addr.sin_port);
    acceptor_ = std::thread([this] { AcceptLoop(); });
  }

  ~DroppingProxy() {
    stopping_ = true;
    if (acceptor_.joinable()) acceptor_.join();
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (int fd : open_fds_) shutdown(fd, SHUT_RDWR);
    }
    for (auto& t : pumps_) t.join();
    for (int fd : open_fds_) close(fd);
    close(listen_fd_);
  }

  std::string target() const { return "127.0.0.1:" + std::to_string(port_); }
  int dropped() const { return dropped_; }

 private:
  static sockaddr_in Loopback(uint16_t port) {
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return addr;
  }

  void AcceptLoop() {
    while (!stopping_) {
      pollfd p{listen_fd_, POLLIN, 0};
      if (poll(&p, 1, 20) <= 0) continue;
      const int client = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (client < 0) continue;
      if (drops_left_ > 0) {
        --drops_left_;
        ++dropped_;
        close(client);
        continue;
      }
      const int server = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      sockaddr_in up = Loopback(upstream_port_);
      if (connect(server, reinterpret_cast<sockaddr*>(&up), sizeof up) != 0) {
        close(server);
        close(client);
        continue;
      }
      std::lock_guard<std::mutex> lock(mu_);
      open_fds_.push_back(client);
      open_fds_.push_back(server);
      pumps_.emplace_back([client, server] { Pump(client, server); });
      pumps_.emplace_back([client, server] { Pump(server, client); });
    }
  }

  // Copies one direction until EOF or error, then passes the EOF on.
  static void Pump(int from, int to) {
    char buf[64 << 10];
    for (;;) {
      const ssize_t n = read(from, buf, sizeof buf);
      if (n <= 0) break;
      for (ssize_t off = 0; off < n;) {
        const ssize_t w = write(to, buf + off, n - off);
        if (w <= 0) return;
        off += w;
      }
    }
    shutdown(to, SHUT_WR);
  }

  const uint16_t upstream_port_;
  int listen_fd_ = -1;
  uint16_t port_ = 0;
  std::atomic<int> drops_left_{0};
  std::atomic<int> dropped_{0};
  std::atomic<bool> stopping_{false};
  std::thread acceptor_;
  std::mutex mu_;
  std::vector<int> open_fds_;
  std::vector<std::thread> pumps_;
};

}  // namespace unbd::testing
