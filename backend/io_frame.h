// Hand encoding of unbd.v1.IoBatch for zero-copy writes (see proto/unbd/v1/io.proto).
//
// A client builds one IoBatch as a grpc::ByteBuffer of slices: for each request, the header from
// EncodeIoRequestHeader (a few dozen bytes, client-owned) followed, for WRITE, by a slice over
// the payload in the client's own buffer. The bytes on the wire are exactly a serialized IoBatch,
// so the server parses it with protobuf like any other batch. Usage (frontend, per queue):
//
//   char* hdr = queue_header_area + tag * kMaxIoRequestHeaderBytes;   // per-tag, reused
//   size_t n = EncodeIoRequestHeader(fields, hdr);                   // fields.length = payload size
//   slices.emplace_back(hdr, n, grpc::Slice::STATIC_SLICE);          // valid until completion
//   slices.emplace_back(pool_buf, len, grpc::Slice::STATIC_SLICE);   // the ublk write payload
//   grpc::ByteBuffer batch(slices.data(), slices.size());
//   generic_stream->Write(batch, ...);   // GenericStub, method "/unbd.v1.BlockIo/Stream"
//
// STATIC_SLICE means gRPC does not free the memory: the client keeps header and payload alive
// until the request's completion arrives (a completion implies the server received the bytes).
#pragma once

#include <cstddef>
#include <cstdint>

#include "unbd/v1/io.pb.h"

namespace unbd::backend {

struct IoRequestHeader {
  uint32_t tag = 0;
  v1::Opcode op = v1::OP_UNSPECIFIED;
  bool fua = false;
  uint64_t volume_id = 0;
  uint64_t epoch = 0;
  uint64_t offset = 0;
  uint32_t length = 0;     // for WRITE this is also the payload size that follows the header
  uint32_t out_mask = 0;   // replicated volumes (IoRequest.out_mask); 0 is not encoded
  uint64_t server_generation = 0;  // IoRequest.server_generation; 0 (unchecked) is not encoded
};

inline constexpr size_t kMaxIoRequestHeaderBytes = 96;

// Writes the bytes that precede the payload of one request inside an IoBatch (outer field key and
// length, IoRequest fields 1..9 (zero-valued ones left out), and for WRITE the key and length of `data`) to out[0..96).
// Returns the number of bytes written. For non-WRITE ops the encoding is the whole request.
size_t EncodeIoRequestHeader(const IoRequestHeader& h, char* out);

}  // namespace unbd::backend
