// A stream with many batches in flight at once: the server must answer every batch exactly once
// and in the order it arrived (io.proto), including batches that wait for a WAL sync off the
// queue's thread (FUA, FLUSH).
// Under SIGTERM the batches it applied are answered before the stream ends, and every FUA write
// it acknowledged is there after the restart.
#include <csignal>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "tests/integration/backend/server_process.h"

namespace unbd::testing {
namespace {

constexpr int kBatches = 24;
constexpr int kPerBatch = 4;

std::string Pattern(int batch, int k) {
  return std::string(4096, static_cast<char>('A' + (batch * kPerBatch + k) % 26));
}

// Batch b writes blocks b*kPerBatch .. +kPerBatch-1; every third batch with FUA, every fifth
// ends with a FLUSH. Tags are b*100 + k.
v1::IoBatch WriteBatch(int b, uint64_t vol) {
  v1::IoBatch batch;
  for (int k = 0; k < kPerBatch; ++k) {
    AddRequest(&batch, b * 100 + k, v1::OP_WRITE, vol, 1,
               static_cast<uint64_t>(b * kPerBatch + k) * 4096, 4096, Pattern(b, k), b % 3 == 0);
  }
  if (b % 5 == 0) AddRequest(&batch, b * 100 + kPerBatch, v1::OP_FLUSH, vol, 1, 0, 0);
  return batch;
}

uint64_t CreateAndOpen(const std::string& target, const std::string& name) {
  backend::AdminClient admin(target);
  v1::Volume v;
  EXPECT_TRUE(admin.Create(name, 4 << 20, &v).ok());
  backend::IoClient io(target);
  EXPECT_TRUE(io.Open(v.id(), 1, "pipeline").ok());
  return v.id();
}

TEST(BackendStreamPipeline, ManyBatchesInFlightAreAnsweredOnceInOrder) {
  const std::string dir = TestDir("x");
  ServerProcess server(dir, dir + "/db");
  ASSERT_TRUE(server.started()) << server.log();
  const uint64_t vol = CreateAndOpen(server.target(), "pipe");
  StreamSession stream(server.target());
  for (int b = 0; b < kBatches; ++b) ASSERT_TRUE(stream.Send(WriteBatch(b, vol))) << b;
  for (int b = 0; b < kBatches; ++b) {
    v1::CompletionBatch done;
    ASSERT_TRUE(stream.Receive(&done)) << "batch " << b << ": " << stream.Finish().error_message();
    const int expected = kPerBatch + (b % 5 == 0 ? 1 : 0);
    ASSERT_EQ(done.completions_size(), expected) << "batch " << b;
    for (int k = 0; k < expected; ++k) {
      EXPECT_EQ(done.completions(k).tag(), static_cast<uint32_t>(b * 100 + k)) << "batch " << b;
      EXPECT_EQ(done.completions(k).code(), 0) << done.completions(k).message();
    }
  }
  // Reads, pipelined the same way, see every write.
  for (int b = 0; b < kBatches; ++b) {
    v1::IoBatch reads;
    for (int k = 0; k < kPerBatch; ++k) {
      AddRequest(&reads, b * 100 + k, v1::OP_READ, vol, 1,
                 static_cast<uint64_t>(b * kPerBatch + k) * 4096, 4096);
    }
    ASSERT_TRUE(stream.Send(reads));
  }
  for (int b = 0; b < kBatches; ++b) {
    v1::CompletionBatch done;
    ASSERT_TRUE(stream.Receive(&done)) << b;
    ASSERT_EQ(done.completions_size(), kPerBatch);
    for (int k = 0; k < kPerBatch; ++k) {
      EXPECT_EQ(done.completions(k).tag(), static_cast<uint32_t>(b * 100 + k));
      EXPECT_EQ(done.completions(k).data(), Pattern(b, k)) << "batch " << b << " request " << k;
    }
  }
  EXPECT_TRUE(stream.Finish().ok());
}

TEST(BackendStreamPipeline, SigtermAnswersAppliedBatchesAndAcknowledgedFuaWritesSurvive) {
  const std::string dir = TestDir("x");
  uint64_t vol;
  std::vector<bool> acked(kBatches, false);
  {
    ServerProcess server(dir, dir + "/db");
    ASSERT_TRUE(server.started()) << server.log();
    vol = CreateAndOpen(server.target(), "drain");
    StreamSession stream(server.target());
    // Every batch FUA, so each waits for a WAL sync: SIGTERM lands while several are in flight.
    for (int b = 0; b < kBatches; ++b) {
      v1::IoBatch batch;
      for (int k = 0; k < kPerBatch; ++k) {
        AddRequest(&batch, b * 100 + k, v1::OP_WRITE, vol, 1,
                   static_cast<uint64_t>(b * kPerBatch + k) * 4096, 4096, Pattern(b, k), true);
      }
      ASSERT_TRUE(stream.Send(batch));
    }
    v1::CompletionBatch first;
    ASSERT_TRUE(stream.Receive(&first));
    ASSERT_EQ(first.completions(0).tag(), 0u);
    acked[0] = true;
    int exit_code = -1;
    std::thread stopper([&] { exit_code = server.Kill(SIGTERM); });  // sends, then reaps
    int next = 1;
    v1::CompletionBatch done;
    while (stream.Receive(&done)) {
      ASSERT_LT(next, kBatches);
      ASSERT_EQ(done.completions_size(), kPerBatch);
      EXPECT_EQ(done.completions(0).tag(), static_cast<uint32_t>(next * 100)) << "out of order";
      bool all_ok = true;
      for (const auto& c : done.completions()) all_ok = all_ok && c.code() == 0;
      acked[next++] = all_ok;
    }
    const grpc::Status end = stream.Finish();
    std::printf("SIGTERM: %d of %d batches answered before the stream ended (%d)\n", next, kBatches,
                end.error_code());
    if (next < kBatches) {
      EXPECT_TRUE(end.error_code() == grpc::UNAVAILABLE || end.error_code() == grpc::CANCELLED)
          << end.error_code() << " " << end.error_message();
    }
    stopper.join();
    EXPECT_EQ(exit_code, 0) << server.log();
  }
  ServerProcess again(dir, dir + "/db");
  ASSERT_TRUE(again.started()) << again.log();
  backend::IoClient io(again.target());
  for (int b = 0; b < kBatches; ++b) {
    if (!acked[b]) continue;
    for (int k = 0; k < kPerBatch; ++k) {
      std::string back;
      ASSERT_TRUE(
          io.Read(vol, 1, static_cast<uint64_t>(b * kPerBatch + k) * 4096, 4096, &back).ok());
      EXPECT_EQ(back, Pattern(b, k)) << "acknowledged FUA write of batch " << b << " lost";
    }
  }
}

}  // namespace
}  // namespace unbd::testing
