// The server generation: kept across a clean stop (SIGTERM), new after kill -9. Requests that
// carry the old one — unary calls and stream requests alike — are refused with ABORTED and
// change nothing, so a client cannot miss that writes it had not flushed may be gone.
#include "backend/io_frame.h"
#include "tests/integration/backend/server_process.h"

namespace unbd::testing {
namespace {

constexpr uint64_t kVolBytes = 16ull << 20;

TEST(BackendServerGeneration, CleanStopKeepsItCrashChangesItAndOldOnesAreRefused) {
  const std::string dir = TestDir("x");
  uint64_t vol = 0, g1 = 0;
  {
    ServerProcess server(dir, dir + "/db");
    ASSERT_TRUE(server.started()) << server.log();
    backend::AdminClient admin(server.target());
    v1::Volume v;
    ASSERT_TRUE(admin.Create("gen", kVolBytes, &v).ok());
    vol = v.id();
    backend::IoClient io(server.target());
    v1::OpenVolumeResponse opened;
    ASSERT_TRUE(io.Open(vol, 1, "a", &opened).ok());
    g1 = opened.server_generation();
    EXPECT_NE(g1, 0u);
    EXPECT_EQ(io.server_generation(), g1);
    ASSERT_TRUE(io.Write(vol, 1, 0, std::string(4096, 'a')).ok());
    EXPECT_EQ(server.Kill(SIGTERM), 0) << server.log();
  }
  {
    ServerProcess server(dir, dir + "/db");
    ASSERT_TRUE(server.started()) << server.log();
    backend::IoClient io(server.target());
    io.set_server_generation(g1);  // a client that opened before the clean restart
    Status s = io.Write(vol, 1, 4096, std::string(4096, 'b'));
    EXPECT_TRUE(s.ok()) << "a clean stop must keep the generation: " << s.ToString();
    std::string got;
    ASSERT_TRUE(io.Read(vol, 1, 0, 4096, &got).ok());
    EXPECT_EQ(got, std::string(4096, 'a'));
    EXPECT_EQ(server.Kill(SIGKILL), 128 + SIGKILL);
  }
  ServerProcess server(dir, dir + "/db");
  ASSERT_TRUE(server.started()) << server.log();
  backend::IoClient io(server.target());
  io.set_server_generation(g1);
  Status s = io.Write(vol, 1, 8192, std::string(4096, 'c'));
  EXPECT_EQ(s.code(), Status::Code::kAborted) << s.ToString();
  EXPECT_NE(s.message().find("volume " + std::to_string(vol) + " offset 8192: server generation " +
                             std::to_string(g1) + " is gone"),
            std::string::npos)
      << s.ToString();
  EXPECT_EQ(io.Flush(vol, 1).code(), Status::Code::kAborted);
  std::string got;
  EXPECT_EQ(io.Read(vol, 1, 0, 4096, &got).code(), Status::Code::kAborted);
  EXPECT_EQ(io.ZeroRange(vol, 1, 0, 4096, false).code(), Status::Code::kAborted);

  // The zero-copy stream header carries it too.
  StreamSession stream(server.target());
  char hdr[backend::kMaxIoRequestHeaderBytes];
  backend::IoRequestHeader h;
  h.tag = 5;
  h.op = v1::OP_WRITE;
  h.volume_id = vol;
  h.epoch = 1;
  h.offset = 12288;
  h.length = 4096;
  h.server_generation = g1;
  std::string wire(hdr, backend::EncodeIoRequestHeader(h, hdr));
  wire += std::string(4096, 'd');
  v1::IoBatch batch;
  ASSERT_TRUE(batch.ParseFromString(wire));
  v1::CompletionBatch done;
  ASSERT_TRUE(stream.Exchange(batch, &done));
  ASSERT_EQ(done.completions_size(), 1);
  EXPECT_EQ(done.completions(0).code(), grpc::StatusCode::ABORTED) << done.completions(0).message();

  // Re-opening learns the new generation; then I/O goes on, and nothing refused was written.
  v1::OpenVolumeResponse opened;
  ASSERT_TRUE(io.Open(vol, 2, "a", &opened).ok());
  EXPECT_NE(opened.server_generation(), g1);
  EXPECT_NE(opened.server_generation(), 0u);
  ASSERT_TRUE(io.Read(vol, 2, 8192, 8192, &got).ok());
  EXPECT_EQ(got, std::string(8192, '\0'));
  EXPECT_TRUE(io.Write(vol, 2, 8192, std::string(4096, 'e')).ok());
  EXPECT_TRUE(io.Flush(vol, 2).ok());
}

}  // namespace
}  // namespace unbd::testing
