// The bad-input matrix against a real server: each bad request gets the right gRPC code and a
// message naming the volume and offset, and nothing is written.
#include "tests/integration/backend/server_process.h"

namespace unbd::testing {
namespace {

constexpr uint64_t kVolBytes = 8ull << 20;

class BackendBadInput : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = TestDir("x");
    server_ = std::make_unique<ServerProcess>(dir_, dir_ + "/db");
    ASSERT_TRUE(server_->started()) << server_->log();
    admin_ = std::make_unique<backend::AdminClient>(server_->target());
    io_ = std::make_unique<backend::IoClient>(server_->target());
    v1::Volume v;
    ASSERT_TRUE(admin_->Create("bad", kVolBytes, &v).ok());
    vol_ = v.id();
    ASSERT_TRUE(io_->Open(vol_, 2, "bad-input-test").ok());
  }
  void ExpectUntouched() {
    for (uint64_t off = 0; off < kVolBytes; off += 1 << 20) {
      std::string part;
      ASSERT_TRUE(io_->Read(vol_, 2, off, 1 << 20, &part).ok());
      ASSERT_EQ(part, std::string(1 << 20, '\0')) << "something was written near " << off;
    }
  }
  std::string Ctx(uint64_t off) {
    return "volume " + std::to_string(vol_) + " offset " + std::to_string(off);
  }

  std::string dir_;
  std::unique_ptr<ServerProcess> server_;
  std::unique_ptr<backend::AdminClient> admin_;
  std::unique_ptr<backend::IoClient> io_;
  uint64_t vol_ = 0;
};

TEST_F(BackendBadInput, UnaryDataCalls) {
  const std::string blk(4096, 'x');
  struct Case {
    const char* what;
    Status s;
    Status::Code want;
    uint64_t off;
  };
  std::string out;
  std::vector<Case> cases;
  cases.push_back({"misaligned write", io_->Write(vol_, 2, 512, blk), Status::Code::kInvalidArgument, 512});
  cases.push_back({"partial block", io_->Write(vol_, 2, 0, blk.substr(0, 1000)),
                   Status::Code::kInvalidArgument, 0});
  cases.push_back({"write past end", io_->Write(vol_, 2, kVolBytes, blk), Status::Code::kOutOfRange,
                   kVolBytes});
  cases.push_back({"write straddling end", io_->Write(vol_, 2, kVolBytes - 4096, blk + blk),
                   Status::Code::kOutOfRange, kVolBytes - 4096});
  cases.push_back({"overflowing offset", io_->Write(vol_, 2, ~0ull - 4095, blk),
                   Status::Code::kOutOfRange, ~0ull - 4095});
  cases.push_back({"read over max io", io_->Read(vol_, 2, 0, (1u << 20) + 4096, &out),
                   Status::Code::kInvalidArgument, 0});
  cases.push_back({"zero-length read", io_->Read(vol_, 2, 4096, 0, &out),
                   Status::Code::kInvalidArgument, 4096});
  cases.push_back({"discard overflow", io_->ZeroRange(vol_, 2, 8192, ~0ull - 4095, true),
                   Status::Code::kInvalidArgument, 8192});
  cases.push_back({"write-zeroes past end", io_->ZeroRange(vol_, 2, 4096, kVolBytes, false),
                   Status::Code::kOutOfRange, 4096});
  for (const auto& c : cases) {
    EXPECT_EQ(c.s.code(), c.want) << c.what << ": " << c.s.ToString();
    EXPECT_NE(c.s.message().find(Ctx(c.off)), std::string::npos) << c.what << ": " << c.s.message();
  }
  Status unknown = io_->Write(999, 2, 0, blk);
  EXPECT_EQ(unknown.code(), Status::Code::kNotFound);
  EXPECT_NE(unknown.message().find("volume 999"), std::string::npos);
  Status stale = io_->Write(vol_, 1, 0, blk);
  EXPECT_EQ(stale.code(), Status::Code::kFailedPrecondition);
  EXPECT_EQ(stale.message(), "volume " + std::to_string(vol_) + ": epoch 1 is fenced by epoch 2");
  // A message larger than the deliberate limit is refused by gRPC itself.
  Status huge = io_->Write(vol_, 2, 0, std::string(10 << 20, 'h'));
  EXPECT_EQ(huge.code(), Status::Code::kResourceExhausted) << huge.ToString();
  ExpectUntouched();
}

TEST_F(BackendBadInput, StreamRequestsAndBatchLimits) {
  StreamSession stream(server_->target());
  v1::IoBatch batch;
  const std::string blk(4096, 'y');
  AddRequest(&batch, 10, v1::OP_WRITE, vol_, 2, 4096, 8192, blk);          // length != payload
  AddRequest(&batch, 11, v1::OP_WRITE, vol_, 2, 100, 4096, blk);           // misaligned
  AddRequest(&batch, 12, v1::OP_READ, vol_, 2, kVolBytes, 4096);           // out of range
  AddRequest(&batch, 13, static_cast<v1::Opcode>(77), vol_, 2, 0, 4096);   // unknown op
  AddRequest(&batch, 14, v1::OP_WRITE, 12345, 2, 0, 4096, blk);            // unknown volume
  AddRequest(&batch, 15, v1::OP_WRITE, vol_, 9, 0, 4096, blk);             // never-opened epoch
  AddRequest(&batch, 16, v1::OP_FLUSH, vol_, 2, 0, 0);                     // fine
  v1::CompletionBatch done;
  ASSERT_TRUE(stream.Exchange(batch, &done));
  ASSERT_EQ(done.completions_size(), 7);
  const int want[] = {grpc::INVALID_ARGUMENT, grpc::INVALID_ARGUMENT, grpc::OUT_OF_RANGE,
                      grpc::INVALID_ARGUMENT, grpc::NOT_FOUND,        grpc::FAILED_PRECONDITION,
                      grpc::OK};
  for (int i = 0; i < 7; ++i) {
    const auto& c = done.completions(i);
    EXPECT_EQ(c.tag(), 10u + i);
    EXPECT_EQ(c.code(), want[i]) << "tag " << c.tag() << ": " << c.message();
    if (i < 4) {
      EXPECT_NE(c.message().find(Ctx(batch.requests(i).offset())), std::string::npos)
          << c.message();
    }
  }
  // Too many requests in one batch ends the stream with RESOURCE_EXHAUSTED.
  v1::IoBatch big;
  for (uint32_t i = 0; i < 2000; ++i) AddRequest(&big, i, v1::OP_FLUSH, vol_, 2, 0, 0);
  EXPECT_FALSE(stream.Exchange(big, &done));
  grpc::Status end = stream.Finish();
  EXPECT_EQ(end.error_code(), grpc::RESOURCE_EXHAUSTED) << end.error_message();
  EXPECT_NE(end.error_message().find("max_batch_requests"), std::string::npos);
  ExpectUntouched();
}

TEST_F(BackendBadInput, AdminCalls) {
  v1::Volume v;
  EXPECT_EQ(admin_->Create("bad", 4096, &v).code(), Status::Code::kAlreadyExists);
  EXPECT_EQ(admin_->Create("x", 0, &v).code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(admin_->Create("x", 4097, &v).code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(admin_->Create("x", ~0ull - 4095, &v).code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(admin_->Create("no spaces", 4096, &v).code(), Status::Code::kInvalidArgument);
  Status shrink = admin_->Resize(backend::ParseVolumeRef("bad"), 4096, &v);
  EXPECT_EQ(shrink.code(), Status::Code::kInvalidArgument);
  EXPECT_NE(shrink.message().find("volume " + std::to_string(vol_)), std::string::npos);
  EXPECT_EQ(admin_->Stat(backend::ParseVolumeRef("nope"), &v).code(), Status::Code::kNotFound);
  EXPECT_EQ(admin_->Delete(backend::ParseVolumeRef("4242")).code(), Status::Code::kNotFound);
  EXPECT_EQ(io_->Open(vol_, 1, "older").code(), Status::Code::kFailedPrecondition);
  EXPECT_EQ(io_->Open(vol_, 2, "someone-else").code(), Status::Code::kFailedPrecondition);
  EXPECT_EQ(io_->Open(vol_, 2, "bad-input-test").code(), Status::Code::kOk);
  EXPECT_EQ(io_->Open(vol_, 3, "").code(), Status::Code::kInvalidArgument);
  ASSERT_TRUE(admin_->Stat(backend::ParseVolumeRef("bad"), &v).ok());
  EXPECT_EQ(v.size_bytes(), kVolBytes);
  EXPECT_EQ(v.epoch(), 2u);
}

}  // namespace
}  // namespace unbd::testing
