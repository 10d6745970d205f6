#include "backend/store.h"

#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <random>
#include <thread>

#include "tests/unit/backend/store_fixture.h"

namespace unbd::backend {
namespace {

class StoreTest : public StoreFixture {
 protected:
  void Reopen() {
    Status s = StoreFixture::Reopen();
    ASSERT_TRUE(s.ok()) << s.ToString();
  }
  uint64_t NewVolume(const std::string& name, uint64_t size, uint64_t epoch = 1) {
    return StoreFixture::NewVolume(name, size, "", epoch);
  }
  Status Do(v1::Opcode op, uint64_t vol, uint64_t epoch, uint64_t off, uint64_t len,
            std::string_view data = {}, std::string* out = nullptr, bool fua = false) {
    IoOp o = Op(op, vol, epoch, off, len);
    o.data = data;
    o.read_out = out;
    o.fua = fua;
    return Submit(o);
  }
  Status Write(uint64_t vol, uint64_t epoch, uint64_t off, const std::string& data) {
    return Do(v1::OP_WRITE, vol, epoch, off, data.size(), data);
  }
  std::string Read(uint64_t vol, uint64_t epoch, uint64_t off, uint64_t len) {
    std::string out;
    Status s = Do(v1::OP_READ, vol, epoch, off, len, {}, &out);
    EXPECT_TRUE(s.ok()) << s.ToString();
    return out;
  }
  static std::string Pattern(char c, size_t n) { return std::string(n, c); }
};

TEST_F(StoreTest, UnwrittenReadsZerosAndWritesReadBack) {
  uint64_t v = NewVolume("a", 1 << 20);
  EXPECT_EQ(Read(v, 1, 0, 8192), std::string(8192, '\0'));
  ASSERT_TRUE(Write(v, 1, 4096, Pattern('x', 4096) + Pattern('y', 4096)).ok());
  EXPECT_EQ(Read(v, 1, 0, 16384),
            std::string(4096, '\0') + Pattern('x', 4096) + Pattern('y', 4096) +
                std::string(4096, '\0'));
}

TEST_F(StoreTest, DiscardAndWriteZeroesReadAsZeros) {
  uint64_t v = NewVolume("a", 4 << 20);
  std::string big(2 << 20, 'q');  // large enough for the range-delete path
  ASSERT_TRUE(Write(v, 1, 0, big.substr(0, 1 << 20)).ok());
  ASSERT_TRUE(Write(v, 1, 1 << 20, big.substr(0, 1 << 20)).ok());
  ASSERT_TRUE(Do(v1::OP_DISCARD, v, 1, 4096, 4096).ok());                // point-delete path
  ASSERT_TRUE(Do(v1::OP_WRITE_ZEROES, v, 1, 65536, 1 << 20).ok());       // range-delete path
  std::string got = Read(v, 1, 0, 1 << 20);
  std::string want = big.substr(0, 1 << 20);
  std::fill(want.begin() + 4096, want.begin() + 8192, '\0');
  std::fill(want.begin() + 65536, want.end(), '\0');
  EXPECT_EQ(got, want);
  std::string tail = Read(v, 1, 1 << 20, 1 << 20);
  EXPECT_EQ(tail.substr(0, 65536), std::string(65536, '\0'));
  EXPECT_EQ(tail.substr(65536), big.substr(0, (1 << 20) - 65536));
}

TEST_F(StoreTest, DeleteRemovesAllDataAndIdsAreNotReused) {
  uint64_t a = NewVolume("a", 1 << 20);
  uint64_t b = NewVolume("b", 1 << 20);
  ASSERT_TRUE(Write(a, 1, 0, Pattern('a', 4096)).ok());
  ASSERT_TRUE(Write(b, 1, 0, Pattern('b', 4096)).ok());
  ASSERT_TRUE(store_->DeleteVolume(a).ok());
  EXPECT_EQ(Do(v1::OP_READ, a, 1, 0, 4096).code(), Status::Code::kNotFound);
  EXPECT_EQ(Read(b, 1, 0, 4096), Pattern('b', 4096)) << "neighbour volume must be untouched";
  uint64_t c = NewVolume("a", 1 << 20);  // same name again is fine after delete
  EXPECT_GT(c, b);
  EXPECT_EQ(Read(c, 1, 0, 4096), std::string(4096, '\0'));
  Reopen();
  std::vector<v1::Volume> vols;
  ASSERT_TRUE(store_->ListVolumes(&vols).ok());
  ASSERT_EQ(vols.size(), 2u);
  v1::Volume d;
  ASSERT_TRUE(store_->CreateVolume("d", 4096, 0, &d).ok());
  EXPECT_GT(d.id(), c) << "ids must survive a restart and never be reused";
}

TEST_F(StoreTest, AdminBadInput) {
  v1::Volume v;
  EXPECT_EQ(store_->CreateVolume("", 4096, 0, &v).code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(store_->CreateVolume("a/b", 4096, 0, &v).code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(store_->CreateVolume("a", 0, 0, &v).code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(store_->CreateVolume("a", 4095, 0, &v).code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(store_->CreateVolume("a", 4096, 512, &v).code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(store_->CreateVolume("a", ~0ull << 12, 0, &v).code(), Status::Code::kInvalidArgument);
  ASSERT_TRUE(store_->CreateVolume("a", 8192, 0, &v).ok());
  Status dup = store_->CreateVolume("a", 8192, 0, &v);
  EXPECT_EQ(dup.code(), Status::Code::kAlreadyExists);
  EXPECT_NE(dup.message().find("\"a\""), std::string::npos);
  EXPECT_EQ(store_->ResizeVolume(1, 4096, &v).code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(store_->ResizeVolume(1, 12289, &v).code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(store_->ResizeVolume(99, 1 << 20, &v).code(), Status::Code::kNotFound);
  ASSERT_TRUE(store_->ResizeVolume(1, 1 << 20, &v).ok());
  EXPECT_EQ(v.size_bytes(), 1u << 20);
}

TEST_F(StoreTest, DataBadInputNamesVolumeAndOffsetAndWritesNothing) {
  uint64_t v = NewVolume("a", 1 << 20);
  std::string blk(4096, 'z');
  struct Case {
    v1::Opcode op;
    uint64_t off, len;
    std::string data;
    Status::Code want;
  } cases[] = {
      {v1::OP_WRITE, 4095, 4096, blk, Status::Code::kInvalidArgument},       // misaligned offset
      {v1::OP_WRITE, 4096, 4096, blk + "x", Status::Code::kInvalidArgument}, // length != payload
      {v1::OP_WRITE, 8192, 0, "", Status::Code::kInvalidArgument},           // empty
      {v1::OP_WRITE, 1 << 20, 4096, blk, Status::Code::kOutOfRange},         // past end
      {v1::OP_WRITE, ~0ull - 4095, 4096, blk, Status::Code::kOutOfRange},    // would overflow
      {v1::OP_READ, 0, (1 << 20) + 4096, "", Status::Code::kInvalidArgument},// over max io
      {v1::OP_READ, 12288, 100, "", Status::Code::kInvalidArgument},         // misaligned length
      {v1::OP_DISCARD, 4096, ~0ull - 4095, "", Status::Code::kInvalidArgument},
      {v1::OP_WRITE_ZEROES, 1 << 19, 1 << 20, "", Status::Code::kOutOfRange},
      {static_cast<v1::Opcode>(42), 0, 4096, "", Status::Code::kInvalidArgument},
  };
  for (const auto& c : cases) {
    std::string out;
    Status s = Do(c.op, v, 1, c.off, c.len, c.data, &out);
    EXPECT_EQ(s.code(), c.want) << s.ToString() << " op " << c.op << " off " << c.off;
    EXPECT_NE(s.message().find("volume " + std::to_string(v) + " offset " + std::to_string(c.off)),
              std::string::npos)
        << s.message();
  }
  EXPECT_EQ(Do(v1::OP_WRITE, 77, 1, 0, 4096, blk).code(), Status::Code::kNotFound);
  EXPECT_EQ(Read(v, 1, 0, 1 << 20), std::string(1 << 20, '\0')) << "a rejected op wrote data";
}

TEST_F(StoreTest, EpochFencing) {
  uint64_t v = NewVolume("a", 1 << 20, /*epoch=*/0);
  // Never opened: no epoch is current.
  EXPECT_EQ(Write(v, 0, 0, Pattern('0', 4096)).code(), Status::Code::kFailedPrecondition);
  v1::Volume meta;
  ASSERT_TRUE(store_->OpenVolume(v, 5, "A", &meta).ok());
  ASSERT_TRUE(Write(v, 5, 0, Pattern('5', 4096)).ok());
  EXPECT_EQ(Write(v, 6, 0, Pattern('6', 4096)).code(), Status::Code::kFailedPrecondition)
      << "a higher epoch than the opened one is not current either";
  // Same epoch, same client: re-open allowed; same epoch, other client: fenced; lower: fenced.
  EXPECT_TRUE(store_->OpenVolume(v, 5, "A", &meta).ok());
  EXPECT_EQ(store_->OpenVolume(v, 5, "B", &meta).code(), Status::Code::kFailedPrecondition);
  EXPECT_EQ(store_->OpenVolume(v, 4, "A", &meta).code(), Status::Code::kFailedPrecondition);
  ASSERT_TRUE(store_->OpenVolume(v, 6, "B", &meta).ok());
  Status s = Write(v, 5, 0, Pattern('x', 4096));
  EXPECT_EQ(s.code(), Status::Code::kFailedPrecondition);
  EXPECT_EQ(s.message(), "volume " + std::to_string(v) + ": epoch 5 is fenced by epoch 6");
  EXPECT_EQ(Do(v1::OP_FLUSH, v, 5, 0, 0).code(), Status::Code::kFailedPrecondition);
  EXPECT_EQ(Do(v1::OP_DISCARD, v, 5, 0, 4096).code(), Status::Code::kFailedPrecondition);
  EXPECT_EQ(Read(v, 6, 0, 4096), Pattern('5', 4096)) << "fenced ops must change nothing";
  // The epoch is durable.
  Reopen();
  EXPECT_EQ(Write(v, 5, 0, Pattern('x', 4096)).code(), Status::Code::kFailedPrecondition);
  EXPECT_EQ(store_->OpenVolume(v, 6, "A", &meta).code(), Status::Code::kFailedPrecondition);
  EXPECT_TRUE(Write(v, 6, 0, Pattern('6', 4096)).ok());
}

// Writers of epoch 1 hammer the volume while epoch 2 opens. Whatever epoch-1 writes succeeded
// must all have been applied before the open returned: a snapshot right after the open must
// equal the final state once the writers stop. With the test delay between check and apply,
// a non-atomic fence would let late epoch-1 writes land after the open.
TEST_F(StoreTest, FenceIsAtomicWithOpen) {
  StoreOptions o;
  o.dir = dir_;
  store_.reset();
  o.test_apply_delay_us = 20000;  // far longer than an OpenVolume
  ASSERT_TRUE(Store::Open(o, &store_).ok());
  constexpr uint64_t kBlocks = 256;
  uint64_t v = NewVolume("a", kBlocks * 4096);
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> ok_writes{0};
  std::vector<std::thread> writers;
  for (int t = 0; t < 4; ++t) {
    writers.emplace_back([&, t] {
      std::mt19937_64 rng(t);
      uint64_t seq = 0;
      while (!stop) {
        std::string data(4096, static_cast<char>('a' + t));
        std::memcpy(data.data(), &++seq, sizeof seq);
        if (Write(v, 1, (rng() % kBlocks) * 4096, data).ok()) ok_writes++;
      }
    });
  }
  while (ok_writes < 20) std::this_thread::yield();
  v1::Volume meta;
  ASSERT_TRUE(store_->OpenVolume(v, 2, "new", &meta).ok());
  std::string snapshot;
  for (uint64_t off = 0; off < kBlocks * 4096; off += 1 << 20) {
    snapshot += Read(v, 2, off, std::min<uint64_t>(1 << 20, kBlocks * 4096 - off));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  stop = true;
  for (auto& w : writers) w.join();
  std::string final_state;
  for (uint64_t off = 0; off < kBlocks * 4096; off += 1 << 20) {
    final_state += Read(v, 2, off, std::min<uint64_t>(1 << 20, kBlocks * 4096 - off));
  }
  EXPECT_TRUE(snapshot == final_state) << "an epoch-1 write landed after OpenVolume(2) returned";
}

// Re-sending a write, interleaved with other writes, leaves the same state as sending it once.
TEST_F(StoreTest, WritesAreIdempotent) {
  uint64_t v = NewVolume("a", 64 * 4096);
  std::mt19937_64 rng(3);
  std::vector<std::pair<uint64_t, std::string>> log;
  for (int i = 0; i < 64; ++i) {
    std::string d(4096 * (1 + rng() % 3), '\0');
    for (auto& c : d) c = static_cast<char>(rng());
    uint64_t off = (i % 60) * 4096;
    log.emplace_back(off, d);
  }
  // Reference: each write once, in order, on volume a.
  for (auto& [off, d] : log) ASSERT_TRUE(Write(v, 1, off, d).ok());
  std::string once = Read(v, 1, 0, 64 * 4096);
  // Volume b: every write re-sent 1..3 times, duplicates interleaved with the next writes to
  // other blocks (as a re-issue after a crash would do), final order of each block preserved.
  uint64_t w = NewVolume("b", 64 * 4096);
  for (size_t i = 0; i < log.size(); ++i) {
    ASSERT_TRUE(Write(w, 1, log[i].first, log[i].second).ok());
    if (i > 0 && log[i - 1].first + log[i - 1].second.size() <= log[i].first) {
      ASSERT_TRUE(Write(w, 1, log[i - 1].first, log[i - 1].second).ok());
      ASSERT_TRUE(Write(w, 1, log[i].first, log[i].second).ok());
    }
    ASSERT_TRUE(Write(w, 1, log[i].first, log[i].second).ok());
  }
  EXPECT_EQ(Read(w, 1, 0, 64 * 4096), once);
  std::vector<uint64_t> a_sums, b_sums;
  ASSERT_TRUE(store_->BlockChecksums(v, 0, 64, &a_sums).ok());
  ASSERT_TRUE(store_->BlockChecksums(w, 0, 64, &b_sums).ok());
  EXPECT_EQ(a_sums, b_sums);
}

TEST_F(StoreTest, ChecksumsTreatUnwrittenAndZeroedAlike) {
  uint64_t v = NewVolume("a", 8 * 4096);
  ASSERT_TRUE(Write(v, 1, 0, std::string(4096, '\0')).ok());
  ASSERT_TRUE(Write(v, 1, 4096, Pattern('x', 4096)).ok());
  std::vector<uint64_t> s;
  ASSERT_TRUE(store_->BlockChecksums(v, 0, 8, &s).ok());
  ASSERT_EQ(s.size(), 8u);
  EXPECT_EQ(s[0], s[2]);
  EXPECT_NE(s[1], s[0]);
  EXPECT_EQ(s[1], BlockChecksum(Pattern('x', 4096)));
  EXPECT_EQ(store_->BlockChecksums(v, 4, 5, &s).code(), Status::Code::kOutOfRange);
}

TEST_F(StoreTest, FlushedWritesSurviveReopenAndBatchesMix) {
  uint64_t v = NewVolume("a", 1 << 20);
  std::vector<IoOp> ops(4);
  std::string d1 = Pattern('1', 8192), d2 = Pattern('2', 4096), out;
  ops[0] = {.op = v1::OP_WRITE, .volume_id = v, .epoch = 1, .offset = 0, .length = d1.size(),
            .data = d1};
  ops[1] = {.op = v1::OP_WRITE, .fua = true, .volume_id = v, .epoch = 1, .offset = 65536,
            .length = d2.size(), .data = d2};
  ops[2] = {.op = v1::OP_READ, .volume_id = v, .epoch = 1, .offset = 4096, .length = 8192,
            .read_out = &out};
  ops[3] = {.op = v1::OP_FLUSH, .volume_id = v, .epoch = 1};
  const uint64_t syncs = store_->syncs_done();
  store_->SubmitBatch(ops);
  for (auto& o : ops) EXPECT_TRUE(o.status.ok()) << o.status.ToString();
  EXPECT_EQ(out, Pattern('1', 4096) + std::string(4096, '\0'));
  EXPECT_EQ(store_->syncs_done(), syncs + 1) << "one sync for the whole batch";
  Reopen();
  EXPECT_EQ(Read(v, 1, 0, 8192), d1);
  EXPECT_EQ(Read(v, 1, 65536, 4096), d2);
}

}  // namespace
}  // namespace unbd::backend
