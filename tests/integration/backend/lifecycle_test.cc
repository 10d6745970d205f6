// Server lifecycle: clear startup errors (busy port, unwritable or locked data directory), SIGTERM
// drains and exits 0 with flushed data intact, metrics are served in Prometheus format.
#include "tests/integration/backend/server_process.h"

namespace unbd::testing {
namespace {

TEST(BackendLifecycle, StartupErrorsAreClear) {
  const std::string dir = TestDir("x");
  ServerProcess first(dir + "/..", dir + "/db");  // work dir shared; separate logs below
  ASSERT_TRUE(first.started()) << first.log();

  const std::string d2 = TestDir("busy");
  ServerProcess busy(d2, d2 + "/db", {}, first.target());
  EXPECT_FALSE(busy.started());
  EXPECT_EQ(busy.exit_code(), 1);
  EXPECT_NE(busy.log().find("cannot listen on " + first.target() + ": Address already in use"),
            std::string::npos)
      << busy.log();

  const std::string d3 = TestDir("locked");
  ServerProcess locked(d3, dir + "/db");
  EXPECT_FALSE(locked.started());
  EXPECT_EQ(locked.exit_code(), 1);
  EXPECT_NE(locked.log().find("already in use by another unbd-server"), std::string::npos)
      << locked.log();

  const std::string d4 = TestDir("unwritable");
  std::ofstream(d4 + "/plain-file") << "x";
  ServerProcess unwritable(d4, d4 + "/plain-file/db");
  EXPECT_FALSE(unwritable.started());
  EXPECT_EQ(unwritable.exit_code(), 1);
  EXPECT_NE(unwritable.log().find("data directory " + d4 + "/plain-file/db"), std::string::npos)
      << unwritable.log();
}

TEST(BackendLifecycle, SigtermDrainsAndMetricsAreServed) {
  const std::string dir = TestDir("x");
  uint64_t vol;
  {
    ServerProcess server(dir, dir + "/db");
    ASSERT_TRUE(server.started()) << server.log();
    backend::AdminClient admin(server.target());
    v1::Volume v;
    ASSERT_TRUE(admin.Create("life", 1 << 20, &v).ok());
    vol = v.id();
    backend::IoClient io(server.target());
    ASSERT_TRUE(io.Open(vol, 1, "life").ok());
    StreamSession stream(server.target());
    v1::IoBatch batch;
    AddRequest(&batch, 1, v1::OP_WRITE, vol, 1, 0, 4096, std::string(4096, 'L'));
    AddRequest(&batch, 2, v1::OP_READ, vol, 1, 4096, 4096);
    AddRequest(&batch, 3, v1::OP_FLUSH, vol, 1, 0, 0);
    v1::CompletionBatch done;
    ASSERT_TRUE(stream.Exchange(batch, &done));
    EXPECT_EQ(io.Write(vol, 0, 0, std::string(4096, 'f')).code(), Status::Code::kFailedPrecondition);

    const std::string m = HttpGet(server.metrics_port());
    EXPECT_NE(m.find("HTTP/1.0 200 OK"), std::string::npos);
    const std::string id = std::to_string(vol);
    EXPECT_NE(m.find("unbd_requests_total{volume=\"" + id + "\",op=\"write\"} 2"),
              std::string::npos) << m;
    EXPECT_NE(m.find("unbd_bytes_total{volume=\"" + id + "\",op=\"write\"} 4096"),
              std::string::npos) << m;
    EXPECT_NE(m.find("unbd_fenced_requests_total{volume=\"" + id + "\"} 1"), std::string::npos);
    EXPECT_NE(m.find("unbd_request_latency_seconds_count{volume=\"" + id + "\",op=\"flush\"} 1"),
              std::string::npos) << m;
    EXPECT_NE(m.find("unbd_active_streams 1"), std::string::npos);

    // SIGTERM with an idle stream open (nothing in flight): the server cancels it and exits 0.
    EXPECT_EQ(server.Kill(SIGTERM), 0) << server.log();
    grpc::Status end = stream.Finish();
    EXPECT_TRUE(end.error_code() == grpc::CANCELLED || end.error_code() == grpc::UNAVAILABLE)
        << end.error_code() << " " << end.error_message();
    EXPECT_NE(server.log().find("stopped"), std::string::npos);
  }
  ServerProcess again(dir, dir + "/db");
  ASSERT_TRUE(again.started()) << again.log();
  backend::IoClient io(again.target());
  std::string back;
  ASSERT_TRUE(io.Read(vol, 1, 0, 4096, &back).ok());
  EXPECT_EQ(back, std::string(4096, 'L'));
}

}  // namespace
}  // namespace unbd::testing
