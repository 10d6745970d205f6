// Reads are chosen for latency (docs/replication.md, section 3), in the library's unary path:
// one of three replicas answers reads 5 ms late (unbd-server --test-read-delay-us); after a
// warm-up, nearly all reads go to the two fast ones (round robin would send a third of them to
// the slow one), counted by the servers' own request counters. Every read returns the right data.
#include <map>

#include "tests/integration/replication/cluster.h"

namespace unbd::replication {
namespace {

using testing::Cluster;
using testing::Pattern;

class ReadChoiceTest : public Cluster {
 protected:
  void SetUp() override {
    StartServers(3);
    SetUpVolume("rvol", 16 << 20);
  }
};

TEST_F(ReadChoiceTest, UnaryReadsGoToTheFastReplicas) {
  // Slowed before any owner opened the volume: nothing to lose (its restart is noticed by its
  // server generation all the same, and reconciled from nothing).
  Kill(1);
  Restart(1, false, {"--test-read-delay-us", "5000"});
  std::unique_ptr<ReplicatedVolume> vol;
  Status s = ReplicatedVolume::Open(
      replicas_, {.client_id = "reader", .rpc_timeout = std::chrono::seconds(2)}, &vol);
  ASSERT_TRUE(s.ok()) << s.ToString();
  std::map<uint64_t, std::string> model;
  for (uint64_t b = 0; b < 64; ++b) {
    model[b] = Pattern(b, 1);
    ASSERT_TRUE(vol->Write(b * 4096, model[b]).ok());
  }
  auto read_all = [&](int rounds) {
    for (int r = 0; r < rounds; ++r) {
      for (const auto& [b, data] : model) {
        std::string got;
        ASSERT_TRUE(vol->Read(b * 4096, 4096, &got).ok()) << "block " << b;
        ASSERT_EQ(got, data) << "block " << b;
      }
    }
  };
  read_all(2);  // warm-up
  ExpectFewReadsFromSlowReplica("rvol", 1, 2048, [&] { read_all(32); });  // 2048 reads
}

}  // namespace
}  // namespace unbd::replication
