// Random reads, writes, discards, write-zeroes and flushes over the batched stream and the unary
// calls, checked against an in-memory model; then a graceful restart and a full comparison. Run
// against a server whose stream threads sleep between events (--poll-us 0) and one whose threads
// poll (the default), which must serve and stop the same way.
#include <random>

#include "backend/store.h"
#include "tests/integration/backend/server_process.h"

namespace unbd::testing {
namespace {

constexpr uint64_t kVolBytes = 16ull << 20;
constexpr uint64_t kBlocks = kVolBytes / 4096;

class BackendRandomIo : public ::testing::TestWithParam<std::vector<std::string>> {};

TEST_P(BackendRandomIo, MatchesInMemoryModel) {
  const std::string dir = TestDir("x");
  uint64_t vol;
  std::string model(kVolBytes, '\0');
  {
    ServerProcess server(dir, dir + "/db", GetParam());
    ASSERT_TRUE(server.started()) << server.log();
    backend::AdminClient admin(server.target());
    v1::Volume v;
    ASSERT_TRUE(admin.Create("random", kVolBytes, &v).ok());
    vol = v.id();
    backend::IoClient io(server.target());
    ASSERT_TRUE(io.Open(vol, 1, "random-test").ok());
    StreamSession stream(server.target());
    std::mt19937_64 rng(42);
    int reads_checked = 0;
    for (int round = 0; round < 300; ++round) {
      // One batch of non-overlapping requests (a block device never has overlapping I/O in
      // flight); reads are checked against the model as of before the batch.
      v1::IoBatch batch;
      std::vector<bool> busy(kBlocks, false);
      struct Expect { uint64_t off; uint32_t len; };
      std::vector<Expect> expect_reads;  // index by tag
      std::vector<std::pair<uint64_t, std::string>> applied;
      const int n = 1 + static_cast<int>(rng() % 32);
      for (int i = 0; i < n; ++i) {
        const uint64_t nb = 1 + rng() % 16;
        const uint64_t first = rng() % (kBlocks - nb);
        bool overlap = false;
        for (uint64_t b = first; b < first + nb; ++b) overlap = overlap || busy[b];
        if (overlap) continue;
        for (uint64_t b = first; b < first + nb; ++b) busy[b] = true;
        const uint64_t off = first * 4096;
        const uint32_t len = static_cast<uint32_t>(nb * 4096);
        const uint32_t tag = static_cast<uint32_t>(batch.requests_size());
        switch (rng() % 10) {
          case 0: case 1: case 2: case 3: {
            std::string d(len, '\0');
            for (size_t k = 0; k < d.size(); k += 8) {
              uint64_t x = rng();
              std::memcpy(&d[k], &x, 8);
            }
            AddRequest(&batch, tag, v1::OP_WRITE, vol, 1, off, len, d, rng() % 8 == 0);
            applied.emplace_back(off, d);
            break;
          }
          case 4: case 5: case 6:
            AddRequest(&batch, tag, v1::OP_READ, vol, 1, off, len);
            expect_reads.resize(tag + 1);
            expect_reads[tag] = {off, len};
            break;
          case 7:
            AddRequest(&batch, tag, v1::OP_DISCARD, vol, 1, off, len);
            applied.emplace_back(off, std::string(len, '\0'));
            break;
          case 8:
            AddRequest(&batch, tag, v1::OP_WRITE_ZEROES, vol, 1, off, len);
            applied.emplace_back(off, std::string(len, '\0'));
            break;
          default:
            AddRequest(&batch, tag, v1::OP_FLUSH, vol, 1, 0, 0);
        }
      }
      v1::CompletionBatch done;
      ASSERT_TRUE(stream.Exchange(batch, &done));
      ASSERT_EQ(done.completions_size(), batch.requests_size());
      for (const auto& c : done.completions()) {
        ASSERT_EQ(c.code(), 0) << c.message();
        const auto& r = batch.requests(static_cast<int>(c.tag()));
        if (r.op() == v1::OP_READ) {
          ASSERT_EQ(c.data(), model.substr(r.offset(), r.length())) << "read at " << r.offset();
          ++reads_checked;
        }
      }
      for (auto& [off, d] : applied) model.replace(off, d.size(), d);
      // Interleave some unary calls too.
      if (round % 10 == 0) {
        const uint64_t off = (rng() % kBlocks) * 4096;
        std::string d(4096, static_cast<char>(rng()));
        ASSERT_TRUE(io.Write(vol, 1, off, d, /*fua=*/round % 20 == 0).ok());
        model.replace(off, 4096, d);
        std::string back;
        ASSERT_TRUE(io.Read(vol, 1, off, 4096, &back).ok());
        ASSERT_EQ(back, d);
      }
    }
    EXPECT_GT(reads_checked, 500);
    EXPECT_EQ(ReadVolume(io, vol, 1, kVolBytes), model);
    ASSERT_TRUE(io.Flush(vol, 1).ok());
    // Per-block checksums through the admin call agree with the model too.
    std::vector<uint64_t> sums;
    ASSERT_TRUE(admin.Checksums(backend::ParseVolumeRef(std::to_string(vol)), 0, kBlocks, &sums).ok());
    for (uint64_t b = 0; b < kBlocks; ++b) {
      ASSERT_EQ(sums[b], backend::BlockChecksum(std::string_view(model).substr(b * 4096, 4096)))
          << "block " << b;
    }
    EXPECT_EQ(server.Kill(SIGTERM), 0) << server.log();
  }
  ServerProcess again(dir, dir + "/db", GetParam());
  ASSERT_TRUE(again.started()) << again.log();
  backend::IoClient io(again.target());
  EXPECT_EQ(ReadVolume(io, vol, 1, kVolBytes), model) << "data changed across a graceful restart";
}

INSTANTIATE_TEST_SUITE_P(StreamThreads, BackendRandomIo,
                         ::testing::Values(std::vector<std::string>{"--poll-us", "0"},
                                           std::vector<std::string>{}),
                         [](const auto& info) { return info.param.empty() ? "Polling" : "Sleeping"; });

}  // namespace
}  // namespace unbd::testing
