#include "backend/io_frame.h"

#include <cstring>

namespace unbd::backend {
namespace {

size_t PutVarint(uint64_t v, char* out) {
  size_t n = 0;
  while (v >= 0x80) {
    out[n++] = static_cast<char>((v & 0x7f) | 0x80);
    v >>= 7;
  }
  out[n++] = static_cast<char>(v);
  return n;
}

constexpr uint8_t Key(int field, int wire_type) {
  return static_cast<uint8_t>((field << 3) | wire_type);
}

}  // namespace

size_t EncodeIoRequestHeader(const IoRequestHeader& h, char* out) {
  // Inner IoRequest fields, written after room for the outer key and a 5-byte length.
  char inner[80];
  size_t n = 0;
  auto varint_field = [&](int field, uint64_t v) {
    if (v == 0) return;  // proto3 default: omitted, as protobuf itself would
    inner[n++] = static_cast<char>(Key(field, 0));
    n += PutVarint(v, inner + n);
  };
  varint_field(1, h.tag);
  varint_field(2, static_cast<uint64_t>(h.op));
  varint_field(3, h.fua ? 1 : 0);
  varint_field(4, h.volume_id);
  varint_field(5, h.epoch);
  varint_field(6, h.offset);
  varint_field(7, h.length);
  varint_field(8, h.out_mask);
  varint_field(9, h.server_generation);
  uint64_t payload = 0;
  if (h.op == v1::OP_WRITE && h.length > 0) {
    inner[n++] = static_cast<char>(Key(15, 2));
    n += PutVarint(h.length, inner + n);
    payload = h.length;
  }
  size_t o = 0;
  out[o++] = static_cast<char>(Key(1, 2));  // IoBatch.requests
  o += PutVarint(n + payload, out + o);
  std::memcpy(out + o, inner, n);
  return o + n;
}

}  // namespace unbd::backend
