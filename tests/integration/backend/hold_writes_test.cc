// The --test-hold-writes-file hook (a dead writer's in-flight write, delayed at the backend): a
// held write of epoch E waits before its fence check; meanwhile OpenVolume(E+1), other streams on
// the same completion-queue thread and writes of other epochs proceed; once released the held
// write is fenced (current_epoch = E+1) and the block keeps the E+1 data.
#include <future>

#include "tests/integration/backend/server_process.h"

namespace unbd::testing {
namespace {

using namespace std::chrono_literals;

void WriteFile(const std::string& path, const std::string& text) {
  std::ofstream f(path + ".tmp");
  f << text;
  f.close();
  std::filesystem::rename(path + ".tmp", path);
}

TEST(BackendHoldWrites, HeldStreamWriteIsFencedByTheNextOpen) {
  const std::string dir = TestDir("x");
  const std::string hold = dir + "/hold";
  // One completion-queue thread: a held batch must not stall the other stream on it.
  ServerProcess server(dir, dir + "/db",
                       {"--test-hold-writes-file", hold, "--stream-threads", "1"});
  ASSERT_TRUE(server.started()) << server.log();
  backend::AdminClient admin(server.target());
  backend::IoClient io(server.target());
  v1::Volume v, other;
  ASSERT_TRUE(admin.Create("held", 1 << 20, &v).ok());
  ASSERT_TRUE(admin.Create("other", 1 << 20, "copy-1", &other).ok());
  ASSERT_TRUE(io.Open(v.id(), 5, "old-daemon").ok());
  ASSERT_TRUE(io.Open(other.id(), 7, "someone").ok());
  WriteFile(hold, "5\n");

  StreamSession old_stream(server.target(), 30s);  // a broken hook fails instead of hanging
  v1::IoBatch batch;
  AddRequest(&batch, 1, v1::OP_WRITE, v.id(), 5, 0, 4096, std::string(4096, 'o'));
  ASSERT_TRUE(old_stream.Send(batch));
  std::this_thread::sleep_for(200ms);
  std::string got;
  ASSERT_TRUE(io.Read(v.id(), 5, 0, 4096, &got).ok()) << "reads are never held";
  EXPECT_EQ(got, std::string(4096, '\0')) << "the epoch-5 write must still be held";

  // The next owner opens and writes while the old write is held.
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(io.Open(v.id(), 6, "new-daemon").ok());
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s) << "OpenVolume must not wait for the hold";
  ASSERT_TRUE(io.Write(v.id(), 6, 0, std::string(4096, 'n')).ok());
  StreamSession new_stream(server.target(), 5s);
  v1::IoBatch b6;
  AddRequest(&b6, 2, v1::OP_WRITE, v.id(), 6, 4096, 4096, std::string(4096, 'm'));
  AddRequest(&b6, 3, v1::OP_FLUSH, v.id(), 6, 0, 0);
  v1::CompletionBatch done;
  ASSERT_TRUE(new_stream.Exchange(b6, &done));
  for (const auto& c : done.completions()) EXPECT_EQ(c.code(), 0) << c.message();
  // Other volumes are served as usual (the hook matches by epoch only, hence epoch 7 here).
  ASSERT_TRUE(io.ZeroRange(other.id(), 7, 0, 4096, /*discard=*/true).ok());

  std::filesystem::remove(hold);
  ASSERT_TRUE(old_stream.Receive(&done));
  ASSERT_EQ(done.completions_size(), 1);
  EXPECT_EQ(done.completions(0).tag(), 1u);
  EXPECT_EQ(done.completions(0).code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(done.completions(0).current_epoch(), 6u);
  EXPECT_NE(done.completions(0).message().find("epoch 5 is fenced by epoch 6"), std::string::npos)
      << done.completions(0).message();
  ASSERT_TRUE(io.Read(v.id(), 6, 0, 8192, &got).ok());
  EXPECT_EQ(got, std::string(4096, 'n') + std::string(4096, 'm'));
  EXPECT_NE(server.log().find("test hook: holding a write"), std::string::npos);
}

TEST(BackendHoldWrites, HeldUnaryWriteIsFencedAndOtherEpochsPass) {
  const std::string dir = TestDir("x");
  const std::string hold = dir + "/hold";
  ServerProcess server(dir, dir + "/db", {"--test-hold-writes-file", hold});
  ASSERT_TRUE(server.started()) << server.log();
  backend::AdminClient admin(server.target());
  backend::IoClient io(server.target());
  v1::Volume v;
  ASSERT_TRUE(admin.Create("held", 1 << 20, &v).ok());
  ASSERT_TRUE(io.Open(v.id(), 8, "old").ok());
  // The file names another epoch: nothing is held.
  WriteFile(hold, "7");
  ASSERT_TRUE(io.Write(v.id(), 8, 0, std::string(4096, 'a')).ok());
  WriteFile(hold, "8");
  auto held_write = std::async(std::launch::async, [&] {
    backend::IoClient own(backend::MakeChannel(server.target(), /*own_connection=*/true));
    return own.ZeroRange(v.id(), 8, 0, 4096, /*discard=*/false);
  });
  EXPECT_EQ(held_write.wait_for(300ms), std::future_status::timeout) << "must be held";
  ASSERT_TRUE(io.Open(v.id(), 9, "new").ok());
  ASSERT_TRUE(io.Write(v.id(), 9, 0, std::string(4096, 'b')).ok());
  std::filesystem::remove(hold);
  Status s = held_write.get();
  EXPECT_EQ(s.code(), Status::Code::kFailedPrecondition) << s.ToString();
  EXPECT_NE(s.message().find("epoch 8 is fenced by epoch 9"), std::string::npos) << s.ToString();
  std::string got;
  ASSERT_TRUE(io.Read(v.id(), 9, 0, 4096, &got).ok());
  EXPECT_EQ(got, std::string(4096, 'b'));
}

}  // namespace
}  // namespace unbd::testing
