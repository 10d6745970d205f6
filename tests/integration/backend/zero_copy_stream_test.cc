// The zero-copy write path the frontend uses: an IoBatch assembled from EncodeIoRequestHeader()
// slices and STATIC slices over the client's own payload buffers, sent on a GenericStub stream,
// is accepted by a real server, and completions parse as CompletionBatch.
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/support/byte_buffer.h>

#include "backend/io_frame.h"
#include "tests/integration/backend/server_process.h"

namespace unbd::testing {
namespace {

void* Tag(intptr_t i) { return reinterpret_cast<void*>(i); }

bool Await(grpc::CompletionQueue* cq, intptr_t want) {
  void* tag;
  bool ok;
  if (!cq->Next(&tag, &ok)) return false;
  return ok && tag == Tag(want);
}

TEST(BackendZeroCopy, HandEncodedBatchOverGenericStream) {
  const std::string dir = TestDir("x");
  ServerProcess server(dir, dir + "/db");
  ASSERT_TRUE(server.started()) << server.log();
  backend::AdminClient admin(server.target());
  v1::Volume v;
  ASSERT_TRUE(admin.Create("zc", 1 << 20, &v).ok());
  backend::IoClient io(server.target());
  ASSERT_TRUE(io.Open(v.id(), 9, "zc").ok());

  // The "pool": payload buffers owned by the client, never copied into protobuf objects.
  std::vector<std::string> pool = {std::string(4096, 'p'), std::string(8192, 'q')};
  char headers[3][backend::kMaxIoRequestHeaderBytes];
  std::vector<grpc::Slice> slices;
  backend::IoRequestHeader h;
  h.volume_id = v.id();
  h.epoch = 9;
  h.op = v1::OP_WRITE;
  h.tag = 7;
  h.offset = 0;
  h.length = 4096;
  size_t n = backend::EncodeIoRequestHeader(h, headers[0]);
  slices.emplace_back(headers[0], n, grpc::Slice::STATIC_SLICE);
  slices.emplace_back(pool[0].data(), pool[0].size(), grpc::Slice::STATIC_SLICE);
  h.tag = 8;
  h.offset = 65536;
  h.length = 8192;
  h.fua = true;
  n = backend::EncodeIoRequestHeader(h, headers[1]);
  slices.emplace_back(headers[1], n, grpc::Slice::STATIC_SLICE);
  slices.emplace_back(pool[1].data(), pool[1].size(), grpc::Slice::STATIC_SLICE);
  h = {};
  h.volume_id = v.id();
  h.epoch = 8;  // stale: must be fenced, and the rest of the batch still applies
  h.op = v1::OP_WRITE_ZEROES;
  h.tag = 9;
  h.offset = 0;
  h.length = 4096;
  n = backend::EncodeIoRequestHeader(h, headers[2]);
  slices.emplace_back(headers[2], n, grpc::Slice::STATIC_SLICE);
  grpc::ByteBuffer batch(slices.data(), slices.size());

  grpc::GenericStub stub(backend::MakeChannel(server.target(), true));
  grpc::ClientContext ctx;
  grpc::CompletionQueue cq;
  auto call = stub.PrepareCall(&ctx, "/unbd.v1.BlockIo/Stream", &cq);
  call->StartCall(Tag(1));
  ASSERT_TRUE(Await(&cq, 1));
  call->Write(batch, Tag(2));
  ASSERT_TRUE(Await(&cq, 2));
  grpc::ByteBuffer reply;
  call->Read(&reply, Tag(3));
  ASSERT_TRUE(Await(&cq, 3));
  std::vector<grpc::Slice> got;
  ASSERT_TRUE(reply.Dump(&got).ok());
  std::string bytes;
  for (auto& s : got) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  v1::CompletionBatch done;
  ASSERT_TRUE(done.ParseFromString(bytes));
  ASSERT_EQ(done.completions_size(), 3);
  EXPECT_EQ(done.completions(0).tag(), 7u);
  EXPECT_EQ(done.completions(0).code(), 0) << done.completions(0).message();
  EXPECT_EQ(done.completions(1).tag(), 8u);
  EXPECT_EQ(done.completions(1).code(), 0) << done.completions(1).message();
  EXPECT_EQ(done.completions(2).code(), grpc::FAILED_PRECONDITION);
  call->WritesDone(Tag(4));
  ASSERT_TRUE(Await(&cq, 4));
  grpc::Status st;
  call->Finish(&st, Tag(5));
  ASSERT_TRUE(Await(&cq, 5));
  EXPECT_TRUE(st.ok()) << st.error_message();
  cq.Shutdown();
  void* t;
  bool ok;
  while (cq.Next(&t, &ok)) {
  }

  std::string back;
  ASSERT_TRUE(io.Read(v.id(), 9, 0, 4096, &back).ok());
  EXPECT_EQ(back, pool[0]);
  ASSERT_TRUE(io.Read(v.id(), 9, 65536, 8192, &back).ok());
  EXPECT_EQ(back, pool[1]);
}

}  // namespace
}  // namespace unbd::testing
