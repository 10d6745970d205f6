// TCP listen addresses for unbd-server's flags ("host:port", "[::1]:port"): parsing, and binding
// with the errno in the error (gRPC's own bind failure only says "failed to add port").
#pragma once

#include <string>

#include "common/status.h"

namespace unbd::backend {

// Splits "host:port" ("[::1]:80" too). Returns false on a malformed address.
bool SplitHostPort(const std::string& addr, std::string* host, int* port);

// Binds a TCP socket (SO_REUSEADDR, not SO_REUSEPORT, so a port already served fails) to `addr`,
// given on the command line as `flag`. On success *fd is the bound socket, owned by the caller.
// Errors read "cannot listen on ADDR: Address already in use" or "FLAG ADDR: expected HOST:PORT".
Status BindTcp(const std::string& addr, const std::string& flag, int* fd);

}  // namespace unbd::backend
