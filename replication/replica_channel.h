// The gRPC channel an owner uses to reach one replica. Unlike backend::MakeChannel it retries a
// lost connection quickly (100 ms, backing off to at most 1 s instead of gRPC's 120 s) and lets
// the resolver re-resolve after 100 ms instead of 30 s: a replica that comes back after a crash
// must be noticed within the quorum wait (measured: a restarted replica was first used 7.5 s
// after it listened with the defaults, under 1 s with these).
#pragma once

#include <memory>
#include <string>

#include <grpcpp/grpcpp.h>

namespace unbd::replication {

// own_connection: a TCP connection of its own (a frontend queue's stream), not shared with the
// process's other channels to the same target.
std::shared_ptr<grpc::Channel> ReplicaChannel(const std::string& target, bool own_connection = false);

}  // namespace unbd::replication
