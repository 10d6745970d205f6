#include "backend/tcp_listen.h"

#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>

namespace unbd::backend {

bool SplitHostPort(const std::string& addr, std::string* host, int* port) {
  size_t colon = addr.rfind(':');
  if (colon == std::string::npos || colon + 1 >= addr.size()) return false;
  *host = addr.substr(0, colon);
  if (host->size() >= 2 && host->front() == '[' && host->back() == ']') {
    *host = host->substr(1, host->size() - 2);
  }
  char* end = nullptr;
  long p = std::strtol(addr.c_str() + colon + 1, &end, 10);
  if (*end != '\0' || p < 0 || p > 65535) return false;
  *port = static_cast<int>(p);
  return true;
}

Status BindTcp(const std::string& addr, const std::string& flag, int* fd) {
  std::string host;
  int port;
  if (!SplitHostPort(addr, &host, &port)) {
    return Status::InvalidArgument(flag + " " + addr + ": expected HOST:PORT");
  }
  addrinfo hints{}, *res = nullptr;
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  const std::string port_str = std::to_string(port);
  int rc = getaddrinfo(host.empty() ? nullptr : host.c_str(), port_str.c_str(), &hints, &res);
  if (rc != 0) return Status::InvalidArgument(flag + " " + addr + ": " + gai_strerror(rc));
  int s = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (s >= 0) {
    int one = 1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  }
  if (s < 0 || bind(s, res->ai_addr, res->ai_addrlen) != 0) {
    int err = errno;
    if (s >= 0) close(s);
    freeaddrinfo(res);
    return Status::FromErrno(err, "cannot listen on " + addr);
  }
  freeaddrinfo(res);
  *fd = s;
  return Status::Ok();
}

}  // namespace unbd::backend
