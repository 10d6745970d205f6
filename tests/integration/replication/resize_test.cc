// Resizing a replicated volume against three real unbd-server processes: the owner commits the
// new size in the metadata on a majority, then grows every copy; a replica that was down grows
// when its resync brings it back; an owner that died between the commit and the growth leaves
// the next open to grow the copies; the plain admin resize of one copy is refused, and a fenced
// owner's resize never lands.
#include <string>

#include "tests/integration/replication/cluster.h"

namespace unbd::replication {
namespace {

using testing::Cluster;
using testing::Pattern;

constexpr uint64_t kOldBytes = 16 << 20;
constexpr uint64_t kNewBytes = 32 << 20;
constexpr uint64_t kPastOldEnd = 20 << 20;  // a block only the grown volume has

class ResizeTest : public Cluster {
 protected:
  void SetUp() override {
    StartServers(3);
    SetUpVolume("rvol", kOldBytes);
  }
  ReplicatedVolumeOptions Opts(const std::string& client) {
    return {.client_id = client,
            .rpc_timeout = std::chrono::milliseconds(1000),
            .quorum_wait = std::chrono::seconds(10)};
  }
  std::unique_ptr<ReplicatedVolume> OpenAs(const std::string& client) {
    std::unique_ptr<ReplicatedVolume> v;
    Status s = ReplicatedVolume::Open(replicas_, Opts(client), &v);
    EXPECT_TRUE(s.ok()) << s.ToString();
    return v;
  }
  // Every copy and the metadata every replica stores have `bytes`.
  void ExpectSizeEverywhere(uint64_t bytes) {
    for (int i = 0; i < 3; ++i) {
      const v1::Volume v = Stat(i, "rvol");
      EXPECT_EQ(v.size_bytes(), bytes) << "copy on replica " << i;
      EXPECT_EQ(v.replica_set().size_bytes(), bytes) << "metadata on replica " << i;
    }
  }
  void ExpectChecksumsEqual() {
    const auto first = Checksums(0, "rvol");
    EXPECT_EQ(first.size(), kNewBytes / 4096);
    for (int i = 1; i < 3; ++i) EXPECT_TRUE(Checksums(i, "rvol") == first) << "replica " << i;
  }
  static void ExpectReads(ReplicatedVolume& v, uint64_t offset, const std::string& want) {
    std::string got;
    Status s = v.Read(offset, static_cast<uint32_t>(want.size()), &got);
    ASSERT_TRUE(s.ok()) << "read at " << offset << ": " << s.ToString();
    EXPECT_TRUE(got == want) << "read at " << offset << " returned other data";
  }
};

TEST_F(ResizeTest, ResizeGrowsTheMetadataAndEveryCopy) {
  auto a = OpenAs("owner-a");
  ASSERT_TRUE(a);
  ASSERT_TRUE(a->Write(0, Pattern(0, 1)).ok());
  std::vector<Status> per_replica;
  Status s = a->Resize(kNewBytes, &per_replica);
  ASSERT_TRUE(s.ok()) << s.ToString();
  ASSERT_EQ(per_replica.size(), 3u);
  for (size_t i = 0; i < 3; ++i) EXPECT_TRUE(per_replica[i].ok()) << per_replica[i].ToString();
  EXPECT_EQ(a->size_bytes(), kNewBytes);
  EXPECT_EQ(a->meta().size_bytes(), kNewBytes);
  ExpectSizeEverywhere(kNewBytes);
  // Idempotent: the current size again is OK; shrinking is refused.
  EXPECT_TRUE(a->Resize(kNewBytes).ok());
  EXPECT_EQ(a->Resize(kOldBytes).code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(a->Resize(kNewBytes + 512).code(), Status::Code::kInvalidArgument);

  // Past the old end through this owner, then through a new one.
  const std::string data = Pattern(kPastOldEnd / 4096, 2);
  s = a->Write(kPastOldEnd, data);
  ASSERT_TRUE(s.ok()) << s.ToString();
  ExpectReads(*a, kPastOldEnd, data);
  a.reset();
  auto b = OpenAs("owner-b");
  ASSERT_TRUE(b);
  EXPECT_EQ(b->size_bytes(), kNewBytes);
  ExpectReads(*b, kPastOldEnd, data);
  ExpectReads(*b, 0, Pattern(0, 1));
  const std::string last = Pattern(kNewBytes / 4096 - 1, 3);
  ASSERT_TRUE(b->Write(kNewBytes - 4096, last, /*fua=*/true).ok());
  ExpectReads(*b, kNewBytes - 4096, last);
  ASSERT_TRUE(b->Flush().ok());
  for (auto st : b->states()) EXPECT_EQ(st, ReplicaState::kHealthy);
  ExpectChecksumsEqual();
}

TEST_F(ResizeTest, ReplicaDownDuringTheResizeGrowsWhenItReturns) {
  auto a = OpenAs("owner-a");
  ASSERT_TRUE(a);
  ASSERT_TRUE(a->Write(4096, Pattern(1, 1)).ok());
  Kill(2);
  // The majority commits the size and grows; the dead replica is marked out.
  Status s = a->Resize(kNewBytes);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(a->size_bytes(), kNewBytes);
  EXPECT_EQ(a->states()[2], ReplicaState::kOut);
  for (int i : {0, 1}) {
    EXPECT_EQ(Stat(i, "rvol").size_bytes(), kNewBytes) << "replica " << i;
    EXPECT_EQ(Stat(i, "rvol").replica_set().size_bytes(), kNewBytes) << "replica " << i;
  }
  const std::string data = Pattern(kPastOldEnd / 4096, 2);
  ASSERT_TRUE(a->Write(kPastOldEnd, data).ok());
  ASSERT_TRUE(a->Write(kNewBytes - 8192, Pattern(kNewBytes / 4096 - 2, 2)).ok());
  ASSERT_TRUE(a->Flush().ok());

  Restart(2);
  EXPECT_EQ(Stat(2, "rvol").size_bytes(), kOldBytes) << "the copy grew while its server was down";
  s = ResyncUntilHealthy(*a);
  ASSERT_TRUE(s.ok()) << s.ToString();
  ExpectSizeEverywhere(kNewBytes);
  ExpectChecksumsEqual();
  // And the grown copy serves the new blocks once the others are gone.
  a.reset();
  Kill(0);
  auto b = OpenAs("owner-b");
  ASSERT_TRUE(b);
  ExpectReads(*b, kPastOldEnd, data);
}

TEST_F(ResizeTest, NextOwnerOpensCopiesOfDifferentSizes) {
  auto a = OpenAs("owner-a");
  ASSERT_TRUE(a);
  Kill(2);
  ASSERT_TRUE(a->Resize(kNewBytes).ok());
  const std::string data = Pattern(kPastOldEnd / 4096, 1);
  ASSERT_TRUE(a->Write(kPastOldEnd, data, /*fua=*/true).ok());
  a.reset();
  Restart(2);
  // Two copies are grown, the returning one is not: the metadata's size wins, and the copy that
  // is out grows before its resync.
  auto b = OpenAs("owner-b");
  ASSERT_TRUE(b);
  EXPECT_EQ(b->size_bytes(), kNewBytes);
  Status s = ResyncUntilHealthy(*b);
  ASSERT_TRUE(s.ok()) << s.ToString();
  ExpectSizeEverywhere(kNewBytes);
  ExpectReads(*b, kPastOldEnd, data);
  ExpectChecksumsEqual();
}

TEST_F(ResizeTest, OwnerDiedBetweenCommitAndGrowthTheNextOpenGrows) {
  auto a = OpenAs("owner-a");
  ASSERT_TRUE(a);
  // The dying owner's step 1 only: the new size committed on every replica, no copy grown.
  v1::ReplicaSetMeta m = a->meta();
  m.set_config_version(m.config_version() + 1);
  m.set_size_bytes(kNewBytes);
  for (size_t i = 0; i < 3; ++i) {
    Status s = ReplicaRpc(targets_[i], std::chrono::seconds(2))
                   .PutMeta(replicas_[i].volume_id, a->epoch(), m);
    ASSERT_TRUE(s.ok()) << s.ToString();
  }
  a.reset();
  for (int i = 0; i < 3; ++i) EXPECT_EQ(Stat(i, "rvol").size_bytes(), kOldBytes);

  auto b = OpenAs("owner-b");
  ASSERT_TRUE(b);
  EXPECT_EQ(b->size_bytes(), kNewBytes);
  for (auto st : b->states()) EXPECT_EQ(st, ReplicaState::kHealthy);
  ExpectSizeEverywhere(kNewBytes);
  const std::string data = Pattern(kPastOldEnd / 4096, 1);
  Status s = b->Write(kPastOldEnd, data);
  ASSERT_TRUE(s.ok()) << s.ToString();
  ExpectReads(*b, kPastOldEnd, data);
  ASSERT_TRUE(b->Flush().ok());
  ExpectChecksumsEqual();
}

TEST_F(ResizeTest, PlainResizeOfACopyIsRefusedAndAFencedOwnersResizeNeverLands) {
  v1::VolumeRef ref;
  ref.set_name("rvol");
  v1::Volume out;
  Status s = backend::AdminClient(targets_[0]).Resize(ref, kNewBytes, &out);
  EXPECT_EQ(s.code(), Status::Code::kFailedPrecondition) << s.ToString();
  EXPECT_NE(s.message().find("is a copy of replicated volume \"rvol\""), std::string::npos)
      << s.message();
  EXPECT_NE(s.message().find("unbd volume resize rvol --replicas " + targets_[0] + "," +
                             targets_[1] + "," + targets_[2]),
            std::string::npos)
      << s.message();
  ExpectSizeEverywhere(kOldBytes);

  auto a = OpenAs("owner-a");
  ASSERT_TRUE(a);
  const uint64_t ea = a->epoch();
  auto b = OpenAs("owner-b");
  ASSERT_TRUE(b);
  // The server's fence on the resize itself: a's epoch is older, a later one was never opened.
  s = backend::AdminClient(targets_[1]).Resize(ref, kNewBytes, &out, ea);
  EXPECT_EQ(s.code(), Status::Code::kFailedPrecondition) << s.ToString();
  EXPECT_NE(s.message().find("is fenced by epoch"), std::string::npos) << s.message();
  s = backend::AdminClient(targets_[1]).Resize(ref, kNewBytes, &out, b->epoch() + 1);
  EXPECT_EQ(s.code(), Status::Code::kFailedPrecondition) << s.ToString();
  // The fenced owner as a whole: its metadata commit is refused, nothing grows.
  s = a->Resize(kNewBytes);
  EXPECT_EQ(s.code(), Status::Code::kFailedPrecondition) << s.ToString();
  EXPECT_TRUE(IsFenced(s)) << s.ToString();
  ExpectSizeEverywhere(kOldBytes);
  EXPECT_EQ(b->size_bytes(), kOldBytes);

  // The current owner's epoch passes; the same size again is OK, smaller is refused.
  s = backend::AdminClient(targets_[1]).Resize(ref, kNewBytes, &out, b->epoch());
  EXPECT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(out.size_bytes(), kNewBytes);
  s = backend::AdminClient(targets_[1]).Resize(ref, kNewBytes, &out, b->epoch());
  EXPECT_TRUE(s.ok()) << s.ToString();
  s = backend::AdminClient(targets_[1]).Resize(ref, kOldBytes, &out, b->epoch());
  EXPECT_EQ(s.code(), Status::Code::kInvalidArgument) << s.ToString();
  EXPECT_EQ(Stat(1, "rvol").size_bytes(), kNewBytes);

  // A plain volume resizes on its server as before, with or without an epoch.
  ASSERT_TRUE(backend::AdminClient(targets_[0]).Create("plain", kOldBytes, &out).ok());
  v1::VolumeRef plain;
  plain.set_name("plain");
  s = backend::AdminClient(targets_[0]).Resize(plain, kNewBytes, &out);
  EXPECT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(out.size_bytes(), kNewBytes);
  s = backend::AdminClient(targets_[0]).Resize(plain, kNewBytes + 4096, &out, 12345);
  EXPECT_TRUE(s.ok()) << s.ToString();
}

}  // namespace
}  // namespace unbd::replication
