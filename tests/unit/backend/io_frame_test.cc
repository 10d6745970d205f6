#include "backend/io_frame.h"

#include <gtest/gtest.h>

#include <random>

namespace unbd::backend {
namespace {

// Concatenating [header, payload] pairs must produce bytes protobuf parses as the same IoBatch
// a client would have built with the generated API.
TEST(IoFrame, HandEncodedBatchParsesAsIoBatch) {
  std::mt19937_64 rng(1);
  std::string wire;
  std::vector<IoRequestHeader> hs;
  std::vector<std::string> payloads;
  const v1::Opcode ops[] = {v1::OP_WRITE, v1::OP_READ, v1::OP_FLUSH, v1::OP_DISCARD,
                            v1::OP_WRITE_ZEROES, v1::OP_WRITE};
  for (int i = 0; i < 6; ++i) {
    IoRequestHeader h;
    h.tag = i == 0 ? 0 : static_cast<uint32_t>(rng());
    h.op = ops[i];
    h.fua = i % 2;
    h.volume_id = i == 5 ? ~0ull : rng() % 1000;
    h.epoch = rng();
    h.offset = (rng() % (1ull << 40)) * 4096;
    h.length = i == 5 ? (1u << 20) : 4096u * (1 + i);
    std::string payload;
    if (h.op == v1::OP_WRITE) {
      payload.resize(h.length);
      for (auto& c : payload) c = static_cast<char>(rng());
    }
    char buf[kMaxIoRequestHeaderBytes];
    size_t n = EncodeIoRequestHeader(h, buf);
    ASSERT_LE(n, kMaxIoRequestHeaderBytes);
    wire.append(buf, n);
    wire += payload;
    hs.push_back(h);
    payloads.push_back(payload);
  }
  v1::IoBatch batch;
  ASSERT_TRUE(batch.ParseFromString(wire));
  ASSERT_EQ(batch.requests_size(), 6);
  for (int i = 0; i < 6; ++i) {
    const auto& r = batch.requests(i);
    EXPECT_EQ(r.tag(), hs[i].tag);
    EXPECT_EQ(r.op(), hs[i].op);
    EXPECT_EQ(r.fua(), hs[i].fua);
    EXPECT_EQ(r.volume_id(), hs[i].volume_id);
    EXPECT_EQ(r.epoch(), hs[i].epoch);
    EXPECT_EQ(r.offset(), hs[i].offset);
    EXPECT_EQ(r.length(), hs[i].length);
    EXPECT_EQ(r.data(), payloads[i]);
  }
}

// Byte for byte what protobuf itself produces, out_mask and server_generation included (written
// only when non-zero, between `length` and `data`).
TEST(IoFrame, HeaderWithOutMaskMatchesProtobufSerialization) {
  for (uint32_t out_mask : {0u, 1u, 0b10110u, ~0u}) {
    for (v1::Opcode op : {v1::OP_WRITE, v1::OP_DISCARD, v1::OP_WRITE_ZEROES, v1::OP_FLUSH}) {
      const uint64_t generation = out_mask == 1 ? 0 : (~0ull >> 1) - out_mask;
      IoRequestHeader h;
      h.tag = 300;
      h.op = op;
      h.fua = true;
      h.volume_id = 42;
      h.epoch = (7ull << 16) | 0xbeef;
      h.offset = 1ull << 33;
      h.length = 8192;
      h.out_mask = out_mask;
      h.server_generation = generation;
      const std::string payload = op == v1::OP_WRITE ? std::string(8192, 'w') : std::string();
      char buf[kMaxIoRequestHeaderBytes];
      std::string wire(buf, EncodeIoRequestHeader(h, buf));
      wire += payload;

      v1::IoBatch batch;
      v1::IoRequest* r = batch.add_requests();
      r->set_tag(h.tag);
      r->set_op(h.op);
      r->set_fua(h.fua);
      r->set_volume_id(h.volume_id);
      r->set_epoch(h.epoch);
      r->set_offset(h.offset);
      r->set_length(h.length);
      r->set_out_mask(out_mask);
      r->set_server_generation(generation);
      r->set_data(payload);
      std::string expected;
      ASSERT_TRUE(batch.SerializeToString(&expected));
      EXPECT_EQ(wire, expected) << "op " << op << " out_mask " << out_mask;
      v1::IoBatch parsed;
      ASSERT_TRUE(parsed.ParseFromString(wire));
      EXPECT_EQ(parsed.requests(0).out_mask(), out_mask);
      EXPECT_EQ(parsed.requests(0).server_generation(), generation);
    }
  }
}

}  // namespace
}  // namespace unbd::backend
