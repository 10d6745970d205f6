#include "replication/replica_channel.h"

namespace unbd::replication {

std::shared_ptr<grpc::Channel> ReplicaChannel(const std::string& target, bool own_connection) {
  grpc::ChannelArguments args;
  // Fits ServerLimits.max_message_bytes (see backend::MakeChannel).
  args.SetMaxReceiveMessageSize(32 << 20);
  args.SetMaxSendMessageSize(32 << 20);
  // Reconnect attempts start 100 ms apart and back off to 1 s, so a returning replica is seen
  // quickly. gRPC takes the "min reconnect backoff" as the time an attempt may take to connect
  // and finish the HTTP/2 handshake: at 100 ms a loaded machine (a TCG guest during `recover`)
  // timed out "before receiving SETTINGS frame" attempt after attempt. A refused connection
  // still fails at once and is retried at the backoff's pace.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 5000);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  // A failed connection asks the resolver to re-resolve, which the DNS resolver throttles to once
  // per 30 s by default; that, not the backoff, is what kept a restarted replica unseen.
  args.SetInt(GRPC_ARG_DNS_MIN_TIME_BETWEEN_RESOLUTIONS_MS, 100);
  args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  if (own_connection) args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  return grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
}

}  // namespace unbd::replication
