#include "replication/replica_channel.h"

namespace unbd::replication {

std::shared_ptr<grpc::Channel> ReplicaChannel(const std::string& target) {
  grpc::ChannelArguments args;
  // Fits ServerLimits.max_message_bytes (see backend::MakeChannel).
  args.SetMaxReceiveMessageSize(32 << 20);
  args.SetMaxSendMessageSize(32 << 20);
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  return grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
}

}  // namespace unbd::replication
