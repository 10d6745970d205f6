// Replica metadata against three real unbd-server processes: create commits v1 on every replica,
// every open adopts the highest copy and re-commits it at its epoch before I/O, a fenced owner
// cannot commit, and a version that reached only a minority is adopted or superseded as a whole.
#include <google/protobuf/util/message_differencer.h>

#include "replication/replica_meta.h"
#include "tests/integration/replication/cluster.h"

namespace unbd::replication {
namespace {

using google::protobuf::util::MessageDifferencer;
using testing::Cluster;

constexpr uint64_t kVolumeBytes = 8 << 20;

class ReplicaMetaTest : public Cluster {
 protected:
  void SetUp() override {
    StartServers(3);
    SetUpVolume("mvol", kVolumeBytes);
  }
  v1::ReplicaSetMeta MetaOn(int i) { return Stat(i, "mvol").replica_set(); }
  ReplicatedVolumeOptions Opts(const std::string& client) {
    return {.client_id = client, .rpc_timeout = std::chrono::milliseconds(1000)};
  }
};

TEST_F(ReplicaMetaTest, CreateCommitsVersionOneOnEveryReplica) {
  std::set<std::string> uuids;
  for (int i = 0; i < 3; ++i) {
    const v1::Volume vol = Stat(i, "mvol");
    const v1::ReplicaSetMeta& m = vol.replica_set();
    EXPECT_EQ(m.config_version(), 1u) << "replica " << i;
    EXPECT_EQ(m.size_bytes(), kVolumeBytes);
    EXPECT_GT(m.region_bytes(), 0u);
    ASSERT_EQ(m.replicas_size(), 3);
    for (int k = 0; k < 3; ++k) {
      EXPECT_EQ(m.replicas(k).address(), targets_[k]);
      EXPECT_EQ(m.replicas(k).volume_id(), replicas_[k].volume_id);
      EXPECT_EQ(m.replicas(k).state(), v1::REPLICA_HEALTHY);
    }
    // This copy's identity is the one the metadata lists for it.
    EXPECT_EQ(vol.replica_uuid(), m.replicas(i).uuid());
    uuids.insert(vol.replica_uuid());
    EXPECT_TRUE(MessageDifferencer::Equals(m, MetaOn(0)));
  }
  EXPECT_EQ(uuids.size(), 3u) << "each copy has its own uuid";
}

TEST_F(ReplicaMetaTest, OpenAdoptsAndRecommitsBeforeIo) {
  std::unique_ptr<ReplicatedVolume> vol;
  ASSERT_TRUE(ReplicatedVolume::Open(replicas_, Opts("owner-1"), &vol).ok());
  for (int i = 0; i < 3; ++i) {
    const v1::ReplicaSetMeta m = MetaOn(i);
    EXPECT_EQ(m.config_version(), 2u) << "replica " << i;
    EXPECT_EQ(m.written_epoch(), vol->epoch());
    EXPECT_EQ(m.owner_client_id(), "owner-1");
  }
  vol.reset();
  ASSERT_TRUE(ReplicatedVolume::Open(replicas_, Opts("owner-2"), &vol).ok());
  EXPECT_EQ(MetaOn(2).config_version(), 3u);
  EXPECT_EQ(MetaOn(2).written_epoch(), vol->epoch());
}

TEST_F(ReplicaMetaTest, FencedOwnerCannotCommit) {
  std::unique_ptr<ReplicatedVolume> a, b;
  ASSERT_TRUE(ReplicatedVolume::Open(replicas_, Opts("owner-a"), &a).ok());
  ASSERT_TRUE(ReplicatedVolume::Open(replicas_, Opts("owner-b"), &b).ok());
  const v1::ReplicaSetMeta b_meta = MetaOn(0);

  // a's metadata writer: every replica refuses its epoch, and it says so.
  ReplicaMeta am(a->epoch(), "owner-a", std::chrono::milliseconds(1000));
  v1::ReplicaSetMeta mine = a->meta();
  mine.mutable_replicas(2)->set_state(v1::REPLICA_OUT);
  Status s = am.CommitInitial(mine);
  EXPECT_EQ(s.code(), Status::Code::kFailedPrecondition) << s.ToString();
  EXPECT_NE(s.message().find("fenced"), std::string::npos) << s.ToString();
  // a's writes fail the same way, and nothing it tried reached the replicas.
  s = a->Write(0, std::string(4096, 'a'));
  EXPECT_EQ(s.code(), Status::Code::kFailedPrecondition) << s.ToString();
  for (int i = 0; i < 3; ++i) {
    EXPECT_TRUE(MessageDifferencer::Equals(MetaOn(i), b_meta)) << "replica " << i;
  }
  EXPECT_TRUE(b->Write(0, std::string(4096, 'b')).ok());
}

// The previous owner stored version v+1 on replica 0 only, then died.
v1::ReplicaSetMeta PartialWrite(ReplicatedVolume& owner, const std::string& target,
                                uint64_t volume_id) {
  v1::ReplicaSetMeta m = owner.meta();
  m.set_config_version(m.config_version() + 1);
  m.mutable_replicas(2)->set_resync_total_bytes(123456);  // the marker of the lost change
  Status s = ReplicaRpc(target, std::chrono::seconds(2)).PutMeta(volume_id, owner.epoch(), m);
  EXPECT_TRUE(s.ok()) << s.ToString();
  return m;
}

TEST_F(ReplicaMetaTest, MinorityVersionIsAdoptedWhole) {
  std::unique_ptr<ReplicatedVolume> a, b;
  ASSERT_TRUE(ReplicatedVolume::Open(replicas_, Opts("owner-a"), &a).ok());
  const v1::ReplicaSetMeta partial = PartialWrite(*a, targets_[0], replicas_[0].volume_id);
  a.reset();
  // b's majority includes replica 0: the highest copy is the minority one; b adopts it and
  // commits it, whole, at its own epoch on every replica.
  ASSERT_TRUE(ReplicatedVolume::Open(replicas_, Opts("owner-b"), &b).ok());
  for (int i = 0; i < 3; ++i) {
    const v1::ReplicaSetMeta m = MetaOn(i);
    EXPECT_EQ(m.written_epoch(), b->epoch());
    EXPECT_EQ(m.config_version(), partial.config_version() + 1);
    EXPECT_EQ(m.replicas(2).resync_total_bytes(), 123456u) << "replica " << i;
    EXPECT_TRUE(MessageDifferencer::Equals(m, MetaOn(0)));
  }
}

TEST_F(ReplicaMetaTest, MinorityVersionIsSupersededWhole) {
  std::unique_ptr<ReplicatedVolume> a, b, c;
  ASSERT_TRUE(ReplicatedVolume::Open(replicas_, Opts("owner-a"), &a).ok());
  PartialWrite(*a, targets_[0], replicas_[0].volume_id);
  a.reset();
  // b's majority is replicas 1 and 2 (0 is down): it never sees the partial version.
  Kill(0);
  ASSERT_TRUE(ReplicatedVolume::Open(replicas_, Opts("owner-b"), &b).ok());
  EXPECT_EQ(b->states()[0], ReplicaState::kOut);
  EXPECT_EQ(b->meta().replicas(2).resync_total_bytes(), 0u);
  b.reset();
  Restart(0);
  // c sees all three: b's version (a higher epoch) beats the partial one, which is gone for good.
  ASSERT_TRUE(ReplicatedVolume::Open(replicas_, Opts("owner-c"), &c).ok());
  for (int i = 0; i < 3; ++i) {
    const v1::ReplicaSetMeta m = MetaOn(i);
    EXPECT_EQ(m.written_epoch(), c->epoch()) << "replica " << i;
    EXPECT_EQ(m.replicas(2).resync_total_bytes(), 0u) << "replica " << i;
    EXPECT_EQ(m.replicas(0).state(), v1::REPLICA_OUT) << "replica " << i;
    EXPECT_TRUE(MessageDifferencer::Equals(m, MetaOn(1)));
  }
}

TEST_F(ReplicaMetaTest, MarkOutIsCommittedOnAMajorityBeforeTheAck) {
  std::unique_ptr<ReplicatedVolume> vol;
  ASSERT_TRUE(ReplicatedVolume::Open(replicas_, Opts("owner"), &vol).ok());
  ASSERT_TRUE(vol->Write(0, std::string(4096, 'x')).ok());
  Kill(1);
  // The first write after the kill is acknowledged only once the survivors store "1 is out".
  ASSERT_TRUE(vol->Write(8192, std::string(4096, 'y')).ok());
  for (int i : {0, 2}) {
    EXPECT_EQ(MetaOn(i).replicas(1).state(), v1::REPLICA_OUT) << "replica " << i;
    EXPECT_EQ(MetaOn(i).written_epoch(), vol->epoch());
  }
  // Both writes' region is dirty for replica 1 on the survivors (unstable set + out_mask).
  for (int i : {0, 2}) {
    EXPECT_EQ(Regions(i, "mvol", PeerSet(1)), std::vector<uint64_t>{0}) << "replica " << i;
  }
}

}  // namespace
}  // namespace unbd::replication
