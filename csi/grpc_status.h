// unbd::Status -> grpc::Status for the CSI services (the codes mirror each other one to one).
#pragma once

#include <grpcpp/grpcpp.h>

#include "common/status.h"

namespace unbd::csi {

inline grpc::Status ToGrpc(const Status& s) {
  using C = Status::Code;
  grpc::StatusCode c = grpc::StatusCode::INTERNAL;
  switch (s.code()) {
    case C::kOk: return grpc::Status::OK;
    case C::kInvalidArgument: c = grpc::StatusCode::INVALID_ARGUMENT; break;
    case C::kNotFound: c = grpc::StatusCode::NOT_FOUND; break;
    case C::kAlreadyExists: c = grpc::StatusCode::ALREADY_EXISTS; break;
    case C::kFailedPrecondition: c = grpc::StatusCode::FAILED_PRECONDITION; break;
    case C::kOutOfRange: c = grpc::StatusCode::OUT_OF_RANGE; break;
    case C::kUnavailable: c = grpc::StatusCode::UNAVAILABLE; break;
    case C::kDeadlineExceeded: c = grpc::StatusCode::DEADLINE_EXCEEDED; break;
    case C::kAborted: c = grpc::StatusCode::ABORTED; break;
    case C::kResourceExhausted: c = grpc::StatusCode::RESOURCE_EXHAUSTED; break;
    case C::kIoError:
    case C::kInternal: c = grpc::StatusCode::INTERNAL; break;
  }
  return grpc::Status(c, s.message());
}

inline grpc::Status Invalid(const std::string& msg) {
  return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, msg);
}

}  // namespace unbd::csi
