// The store's replication primitives: dirty-region marks that ride with replicated writes (and
// only those), the replica metadata rules (fencing, versions, idempotent retry, persistence),
// fenced Mark/Clear, bad input, delete, and a fixed region size per data directory.
#include <gtest/gtest.h>
#include <rocksdb/db.h>

#include <filesystem>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include "backend/store.h"
#include "replication/dirty_regions.h"
#include "tests/unit/backend/store_fixture.h"

namespace unbd::backend {
namespace {

using Regions = std::vector<uint64_t>;
using Code = Status::Code;
constexpr uint64_t kRegion = 1 << 20;

class StoreReplicationTest : public StoreFixture {
 protected:
  // A volume opened at `epoch`; a replica when `uuid` is non-empty.
  uint64_t NewVolume(const std::string& name, const std::string& uuid, uint64_t epoch = 1,
                     uint64_t size = 8 * kRegion) {
    return StoreFixture::NewVolume(name, size, uuid, epoch);
  }
  Status Do(v1::Opcode op, uint64_t vol, uint64_t epoch, uint64_t off, uint64_t len,
            uint32_t out_mask = 0, bool fua = false) {
    std::string data(op == v1::OP_WRITE ? len : 0, 'd');
    IoOp o = Op(op, vol, epoch, off, len);
    o.data = data;
    o.out_mask = out_mask;
    o.fua = fua;
    return Submit(o);
  }
  Regions Dirty(uint64_t vol, uint32_t set) {
    v1::GetDirtyRegionsResponse r;
    Status s = store_->GetDirtyRegions(vol, set, false, &r);
    EXPECT_TRUE(s.ok()) << s.ToString();
    EXPECT_EQ(r.region_bytes(), store_->region_bytes());
    return Regions(r.regions().begin(), r.regions().end());
  }
  // {set: count} of every non-empty set.
  std::map<uint32_t, uint64_t> Counts(uint64_t vol) {
    v1::GetDirtyRegionsResponse r;
    Status s = store_->GetDirtyRegions(vol, 0, true, &r);
    EXPECT_TRUE(s.ok()) << s.ToString();
    EXPECT_EQ(r.regions_size(), 0) << "counts_only returns no region list";
    std::map<uint32_t, uint64_t> out;
    for (const auto& c : r.counts()) out[c.set()] = c.regions();
    return out;
  }
  static v1::ReplicaSetMeta Meta(uint64_t epoch, uint64_t version, int replicas = 3) {
    v1::ReplicaSetMeta m;
    m.set_written_epoch(epoch);
    m.set_config_version(version);
    m.set_size_bytes(8 * kRegion);
    m.set_region_bytes(kRegion);
    for (int i = 0; i < replicas; ++i) {
      v1::ReplicaInfo* r = m.add_replicas();
      r->set_address("10.0.0." + std::to_string(i + 1) + ":7420");
      r->set_volume_id(i + 1);
      r->set_uuid("u" + std::to_string(i));
      r->set_state(v1::REPLICA_HEALTHY);
    }
    return m;
  }
};

TEST_F(StoreReplicationTest, CreateKeepsReplicaUuidAndValidatesIt) {
  v1::Volume v;
  ASSERT_TRUE(store_->CreateVolume("r", 1 << 20, 0, "0c2d-AB-9", &v).ok());
  EXPECT_EQ(v.replica_uuid(), "0c2d-AB-9");
  ASSERT_TRUE(Reopen().ok());
  ASSERT_TRUE(store_->StatVolume(v.id(), &v).ok());
  EXPECT_EQ(v.replica_uuid(), "0c2d-AB-9");
  for (const std::string& bad : std::vector<std::string>{
           "a_b", "a b", "\xc3\xa9", std::string(65, 'a'), std::string("a\0b", 3)}) {
    Status s = store_->CreateVolume("bad", 1 << 20, 0, bad, &v);
    EXPECT_EQ(s.code(), Code::kInvalidArgument) << bad;
    EXPECT_NE(s.message().find("replica uuid"), std::string::npos) << s.ToString();
  }
  EXPECT_TRUE(store_->CreateVolume("ok64", 1 << 20, 0, std::string(64, 'z'), &v).ok());
}

TEST_F(StoreReplicationTest, ReplicatedWritesMarkUnstableAndOutPeersPlainWritesNothing) {
  const uint64_t r = NewVolume("r", "uuid-r");
  const uint64_t plain = NewVolume("plain", "");
  // Region 1, replica 1 out (set 2).
  ASSERT_TRUE(Do(v1::OP_WRITE, r, 1, kRegion + 4096, 8192, 0b10).ok());
  EXPECT_EQ(Dirty(r, replication::kUnstableSet), (Regions{1}));
  EXPECT_EQ(Dirty(r, replication::PeerSet(1)), (Regions{1}));
  EXPECT_EQ(Dirty(r, replication::PeerSet(0)), (Regions{}));
  // A discard over regions 2-4 and write-zeroes in 6, no replica out: unstable only.
  ASSERT_TRUE(Do(v1::OP_DISCARD, r, 1, 2 * kRegion + 4096, 2 * kRegion, 0).ok());
  ASSERT_TRUE(Do(v1::OP_WRITE_ZEROES, r, 1, 6 * kRegion, 4096, 0b101).ok());
  EXPECT_EQ(Dirty(r, replication::kUnstableSet), (Regions{1, 2, 3, 4, 6}));
  EXPECT_EQ(Dirty(r, replication::PeerSet(0)), (Regions{6}));
  EXPECT_EQ(Dirty(r, replication::PeerSet(2)), (Regions{6}));
  EXPECT_EQ(Counts(r), (std::map<uint32_t, uint64_t>{{0, 5}, {1, 1}, {2, 1}, {3, 1}}));
  // Reads and flushes mark nothing; a fenced or out-of-range write marks nothing.
  std::string out;
  IoOp read{.op = v1::OP_READ,
            .volume_id = r,
            .epoch = 1,
            .offset = 7 * kRegion,
            .length = 4096,
            .read_out = &out};
  store_->SubmitBatch(std::span<IoOp>(&read, 1));
  ASSERT_TRUE(read.status.ok());
  ASSERT_TRUE(Do(v1::OP_FLUSH, r, 1, 0, 0).ok());
  EXPECT_EQ(Do(v1::OP_WRITE, r, 7, 7 * kRegion, 4096, 0b1).code(), Code::kFailedPrecondition);
  EXPECT_EQ(Do(v1::OP_WRITE, r, 1, 8 * kRegion, 4096, 0b1).code(), Code::kOutOfRange);
  EXPECT_EQ(Dirty(r, replication::kUnstableSet), (Regions{1, 2, 3, 4, 6}));
  EXPECT_EQ(Dirty(r, replication::PeerSet(0)), (Regions{6}));
  // A plain volume records nothing.
  ASSERT_TRUE(Do(v1::OP_WRITE, plain, 1, 0, 4096).ok());
  ASSERT_TRUE(Do(v1::OP_DISCARD, plain, 1, 0, 4 * kRegion).ok());
  EXPECT_TRUE(Counts(plain).empty());
}

TEST_F(StoreReplicationTest, MarksAreAsDurableAsTheirFlushedData) {
  const uint64_t r = NewVolume("r", "uuid-r");
  ASSERT_TRUE(Do(v1::OP_WRITE, r, 1, 3 * kRegion, 4096, 0b100).ok());
  ASSERT_TRUE(Do(v1::OP_WRITE, r, 1, 5 * kRegion, 4096, 0, /*fua=*/true).ok());
  ASSERT_TRUE(Do(v1::OP_FLUSH, r, 1, 0, 0).ok());
  ASSERT_TRUE(Reopen().ok());
  EXPECT_EQ(Dirty(r, replication::kUnstableSet), (Regions{3, 5}));
  EXPECT_EQ(Dirty(r, replication::PeerSet(2)), (Regions{3}));
}

TEST_F(StoreReplicationTest, OutMaskBounds) {
  const uint64_t r = NewVolume("r", "uuid-r");
  const uint64_t plain = NewVolume("plain", "");
  Status s = Do(v1::OP_WRITE, plain, 1, 0, 4096, 0b1);
  EXPECT_EQ(s.code(), Code::kInvalidArgument);
  EXPECT_NE(s.message().find("not a replica"), std::string::npos) << s.ToString();
  // Before any metadata: any index of the largest replica set (5).
  EXPECT_TRUE(Do(v1::OP_WRITE, r, 1, 0, 4096, 0b10000).ok());
  s = Do(v1::OP_WRITE, r, 1, 0, 4096, 0b100000);
  EXPECT_EQ(s.code(), Code::kInvalidArgument);
  EXPECT_NE(s.message().find("out_mask 32"), std::string::npos) << s.ToString();
  EXPECT_EQ(Do(v1::OP_DISCARD, r, 1, 0, 4096, 1u << 31).code(), Code::kInvalidArgument);
  // With a 3-replica set stored: bits 0-2 only.
  ASSERT_TRUE(store_->PutReplicaMeta(r, 1, Meta(1, 1, 3)).ok());
  EXPECT_TRUE(Do(v1::OP_WRITE_ZEROES, r, 1, 0, 4096, 0b100).ok());
  s = Do(v1::OP_WRITE_ZEROES, r, 1, 0, 4096, 0b1000);
  EXPECT_EQ(s.code(), Code::kInvalidArgument);
  EXPECT_NE(s.message().find("has 3 replicas"), std::string::npos) << s.ToString();
  EXPECT_EQ(Dirty(r, replication::PeerSet(3)), (Regions{}));
}

TEST_F(StoreReplicationTest, PutReplicaMetaFencingAndVersions) {
  const uint64_t r = NewVolume("r", "uuid-r", /*epoch=*/5);
  v1::Volume vol;
  // Only at the current epoch, with written_epoch == epoch.
  Status s = store_->PutReplicaMeta(r, 4, Meta(4, 1));
  EXPECT_EQ(s.code(), Code::kFailedPrecondition);
  EXPECT_NE(s.message().find("epoch 4 is fenced by epoch 5"), std::string::npos) << s.ToString();
  EXPECT_EQ(store_->PutReplicaMeta(r, 6, Meta(6, 1)).code(), Code::kFailedPrecondition);
  s = store_->PutReplicaMeta(r, 5, Meta(4, 1));
  EXPECT_EQ(s.code(), Code::kFailedPrecondition);
  EXPECT_NE(s.message().find("written_epoch 4"), std::string::npos) << s.ToString();
  ASSERT_TRUE(store_->StatVolume(r, &vol).ok());
  EXPECT_FALSE(vol.has_replica_set());

  ASSERT_TRUE(store_->PutReplicaMeta(r, 5, Meta(5, 2)).ok());
  EXPECT_TRUE(store_->PutReplicaMeta(r, 5, Meta(5, 2)).ok()) << "an identical retry is OK";
  v1::ReplicaSetMeta changed = Meta(5, 2);
  changed.mutable_replicas(1)->set_state(v1::REPLICA_OUT);
  s = store_->PutReplicaMeta(r, 5, changed);
  EXPECT_EQ(s.code(), Code::kFailedPrecondition);
  EXPECT_NE(s.message().find("different content"), std::string::npos) << s.ToString();
  s = store_->PutReplicaMeta(r, 5, Meta(5, 1));
  EXPECT_EQ(s.code(), Code::kFailedPrecondition);
  EXPECT_NE(s.message().find("(written_epoch 5, config_version 1) is not newer than the stored "
                             "(written_epoch 5, config_version 2)"),
            std::string::npos)
      << s.ToString();
  changed.set_config_version(3);
  ASSERT_TRUE(store_->PutReplicaMeta(r, 5, changed).ok());

  // A newer owner's epoch wins even with a lower version; the old owner is fenced.
  ASSERT_TRUE(store_->OpenVolume(r, 9, "next", &vol).ok());
  EXPECT_EQ(vol.replica_set().config_version(), 3u);
  EXPECT_EQ(store_->PutReplicaMeta(r, 5, Meta(5, 4)).code(), Code::kFailedPrecondition);
  ASSERT_TRUE(store_->PutReplicaMeta(r, 9, Meta(9, 1, 2)).ok());
  ASSERT_TRUE(Reopen().ok());
  ASSERT_TRUE(store_->StatVolume(r, &vol).ok());
  EXPECT_EQ(vol.replica_set().written_epoch(), 9u);
  EXPECT_EQ(vol.replica_set().config_version(), 1u);
  EXPECT_EQ(vol.replica_set().replicas_size(), 2);
  EXPECT_EQ(vol.epoch(), 9u);
  std::vector<v1::Volume> all;
  ASSERT_TRUE(store_->ListVolumes(&all).ok());
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0].replica_set().written_epoch(), 9u);
  EXPECT_EQ(all[0].replica_uuid(), "uuid-r");
}

TEST_F(StoreReplicationTest, ResizeOfAReplicaNeedsTheOwnersEpoch) {
  const uint64_t r = NewVolume("rv", "uuid-r", /*epoch=*/5);
  const uint64_t plain = NewVolume("plain", "", /*epoch=*/5);
  ASSERT_TRUE(store_->PutReplicaMeta(r, 5, Meta(5, 1)).ok());
  v1::Volume vol;
  // The plain admin path: refused, naming the replicated volume and how to resize it.
  Status s = store_->ResizeVolume(r, 16 * kRegion, &vol);
  EXPECT_EQ(s.code(), Code::kFailedPrecondition);
  EXPECT_NE(s.message().find("is a copy of replicated volume \"rv\": resize it with unbd volume "
                             "resize rv --replicas 10.0.0.1:7420,10.0.0.2:7420,10.0.0.3:7420"),
            std::string::npos)
      << s.ToString();
  // Fenced like PutReplicaMeta: an older epoch, or one never opened.
  s = store_->ResizeVolume(r, 16 * kRegion, 4, &vol);
  EXPECT_NE(s.message().find("epoch 4 is fenced by epoch 5"), std::string::npos) << s.ToString();
  EXPECT_EQ(store_->ResizeVolume(r, 16 * kRegion, 6, &vol).code(), Code::kFailedPrecondition);
  ASSERT_TRUE(store_->StatVolume(r, &vol).ok());
  EXPECT_EQ(vol.size_bytes(), 8 * kRegion);
  EXPECT_EQ(Do(v1::OP_WRITE, r, 5, 12 * kRegion, 4096).code(), Code::kOutOfRange);

  // The owner's epoch: grown, durable, idempotent; never shrunk.
  ASSERT_TRUE(store_->ResizeVolume(r, 16 * kRegion, 5, &vol).ok());
  EXPECT_EQ(vol.size_bytes(), 16 * kRegion);
  EXPECT_TRUE(store_->ResizeVolume(r, 16 * kRegion, 5, &vol).ok());
  EXPECT_EQ(store_->ResizeVolume(r, 8 * kRegion, 5, &vol).code(), Code::kInvalidArgument);
  EXPECT_TRUE(Do(v1::OP_WRITE, r, 5, 12 * kRegion, 4096).ok());
  EXPECT_EQ(Dirty(r, 0), Regions({12}));
  ASSERT_TRUE(Reopen().ok());
  ASSERT_TRUE(store_->StatVolume(r, &vol).ok());
  EXPECT_EQ(vol.size_bytes(), 16 * kRegion);
  // A newer owner fences the old one's resize.
  ASSERT_TRUE(store_->OpenVolume(r, 9, "next", &vol).ok());
  EXPECT_EQ(store_->ResizeVolume(r, 32 * kRegion, 5, &vol).code(), Code::kFailedPrecondition);
  EXPECT_TRUE(store_->ResizeVolume(r, 32 * kRegion, 9, &vol).ok());

  // A plain volume resizes as before; the epoch is ignored.
  EXPECT_TRUE(store_->ResizeVolume(plain, 16 * kRegion, &vol).ok());
  EXPECT_TRUE(store_->ResizeVolume(plain, 32 * kRegion, 3, &vol).ok());
  EXPECT_EQ(vol.size_bytes(), 32 * kRegion);
}

TEST_F(StoreReplicationTest, PutReplicaMetaBadInput) {
  const uint64_t plain = NewVolume("plain", "");
  Status s = store_->PutReplicaMeta(plain, 1, Meta(1, 1));
  EXPECT_EQ(s.code(), Code::kFailedPrecondition);
  EXPECT_NE(s.message().find("is not a replica"), std::string::npos) << s.ToString();
  EXPECT_EQ(store_->PutReplicaMeta(999, 1, Meta(1, 1)).code(), Code::kNotFound);
  const uint64_t r = NewVolume("r", "uuid-r");
  EXPECT_EQ(store_->PutReplicaMeta(r, 1, Meta(1, 1, 6)).code(), Code::kInvalidArgument);
}

TEST_F(StoreReplicationTest, MarkAndClearAreFencedAndRangeChecked) {
  const uint64_t r = NewVolume("r", "uuid-r", 2, 5 * kRegion + 4096);  // 6 regions
  ASSERT_TRUE(store_->MarkDirtyRegions(r, 2, replication::PeerSet(0), {0, 5, 3}).ok());
  EXPECT_EQ(Dirty(r, replication::PeerSet(0)), (Regions{0, 3, 5}));
  Status s = store_->MarkDirtyRegions(r, 2, replication::PeerSet(0), {6});
  EXPECT_EQ(s.code(), Code::kOutOfRange);
  EXPECT_NE(s.message().find("region 6 is past the end (6 regions"), std::string::npos)
      << s.ToString();
  EXPECT_EQ(store_->ClearDirtyRegions(r, 2, replication::PeerSet(0), {1, 6}, false).code(),
            Code::kOutOfRange);
  EXPECT_EQ(store_->MarkDirtyRegions(r, 2, 6, {1}).code(), Code::kInvalidArgument);
  EXPECT_EQ(store_->MarkDirtyRegions(r, 3, 1, {1}).code(), Code::kFailedPrecondition);
  EXPECT_EQ(store_->MarkDirtyRegions(77, 2, 1, {1}).code(), Code::kNotFound);

  ASSERT_TRUE(store_->ClearDirtyRegions(r, 2, replication::PeerSet(0), {3}, false).ok());
  EXPECT_EQ(Dirty(r, replication::PeerSet(0)), (Regions{0, 5}));

  v1::Volume vol;
  ASSERT_TRUE(store_->OpenVolume(r, 3, "next", &vol).ok());
  s = store_->ClearDirtyRegions(r, 2, replication::PeerSet(0), {}, true);
  EXPECT_EQ(s.code(), Code::kFailedPrecondition);
  EXPECT_NE(s.message().find("epoch 2 is fenced by epoch 3"), std::string::npos) << s.ToString();
  EXPECT_EQ(store_->MarkDirtyRegions(r, 2, replication::PeerSet(0), {1}).code(),
            Code::kFailedPrecondition);
  EXPECT_EQ(Dirty(r, replication::PeerSet(0)), (Regions{0, 5}));

  // With a 2-replica set stored, sets 0..2 exist.
  ASSERT_TRUE(store_->PutReplicaMeta(r, 3, Meta(3, 1, 2)).ok());
  EXPECT_EQ(store_->MarkDirtyRegions(r, 3, 3, {1}).code(), Code::kInvalidArgument);
  ASSERT_TRUE(store_->MarkDirtyRegions(r, 3, 2, {4}).ok());
  ASSERT_TRUE(Reopen().ok());
  EXPECT_EQ(Counts(r), (std::map<uint32_t, uint64_t>{{1, 2}, {2, 1}}));
  ASSERT_TRUE(store_->ClearDirtyRegions(r, 3, replication::PeerSet(0), {}, true).ok());
  EXPECT_EQ(Counts(r), (std::map<uint32_t, uint64_t>{{2, 1}}));
  ASSERT_TRUE(Reopen().ok());
  EXPECT_EQ(Counts(r), (std::map<uint32_t, uint64_t>{{2, 1}}));

  // Plain volumes have no sets to change.
  const uint64_t plain = NewVolume("plain", "");
  EXPECT_EQ(store_->MarkDirtyRegions(plain, 1, 0, {0}).code(), Code::kFailedPrecondition);
  EXPECT_TRUE(Counts(plain).empty());
}

// Number of dirty-region keys left in the data directory (store closed).
size_t DirtyKeysOnDisk(const std::string& dir) {
  std::vector<rocksdb::ColumnFamilyDescriptor> cfs = {
      {rocksdb::kDefaultColumnFamilyName, rocksdb::ColumnFamilyOptions()},
      {"meta", rocksdb::ColumnFamilyOptions()}};
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* db = nullptr;
  rocksdb::Status s = rocksdb::DB::OpenForReadOnly(rocksdb::DBOptions(), dir, cfs, &handles, &db);
  EXPECT_TRUE(s.ok()) << s.ToString();
  if (!s.ok()) return ~size_t{0};
  size_t n = 0;
  std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(rocksdb::ReadOptions(), handles[1]));
  for (it->Seek("dirty/"); it->Valid() && it->key().starts_with("dirty/"); it->Next()) ++n;
  it.reset();
  for (auto* h : handles) db->DestroyColumnFamilyHandle(h);
  delete db;
  return n;
}

TEST_F(StoreReplicationTest, DeleteDropsTheVolumesMarks) {
  const uint64_t a = NewVolume("a", "uuid-a");
  const uint64_t b = NewVolume("b", "uuid-b");
  ASSERT_TRUE(Do(v1::OP_WRITE, a, 1, 0, 4096, 0b11, true).ok());
  ASSERT_TRUE(Do(v1::OP_WRITE, b, 1, kRegion, 4096, 0, true).ok());
  store_.reset();
  EXPECT_EQ(DirtyKeysOnDisk(dir_), 4u);  // a: sets 0, 1, 2; b: set 0
  ASSERT_TRUE(Reopen().ok());
  ASSERT_TRUE(store_->DeleteVolume(a).ok());
  v1::GetDirtyRegionsResponse resp;
  EXPECT_EQ(store_->GetDirtyRegions(a, 0, true, &resp).code(), Code::kNotFound);
  EXPECT_EQ(Dirty(b, 0), (Regions{1}));
  store_.reset();
  EXPECT_EQ(DirtyKeysOnDisk(dir_), 1u);
}

TEST_F(StoreReplicationTest, RegionSizeIsFixedPerDataDirectory) {
  store_.reset();
  Status s = Reopen(64 << 10);
  EXPECT_EQ(s.code(), Code::kFailedPrecondition);
  EXPECT_NE(s.message().find("1048576-byte regions"), std::string::npos) << s.ToString();
  EXPECT_NE(s.message().find("--region-bytes"), std::string::npos) << s.ToString();
  EXPECT_EQ(Reopen(3000).code(), Code::kInvalidArgument);
  ASSERT_TRUE(Reopen(kRegion).ok());
}

TEST_F(StoreReplicationTest, FencedWriteReportsTheCurrentEpoch) {
  const uint64_t r = NewVolume("r", "uuid-r", 4);
  IoOp op{.op = v1::OP_WRITE, .volume_id = r, .epoch = 3, .offset = 0, .length = 4096};
  std::string data(4096, 'x');
  op.data = data;
  store_->SubmitBatch(std::span<IoOp>(&op, 1));
  EXPECT_EQ(op.status.code(), Code::kFailedPrecondition);
  EXPECT_EQ(op.current_epoch, 4u);
}

// Concurrent writers (batches of several ops, several threads) lose no mark: after a reopen every
// set is exactly the union of what the writes touched.
TEST_F(StoreReplicationTest, ConcurrentWritersLoseNoMark) {
  constexpr uint64_t kRegions = 64;
  const uint64_t r = NewVolume("r", "uuid-r", 1, kRegions * kRegion);
  std::vector<std::set<uint64_t>> want(kMaxReplicas + 1);
  std::mutex mu;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(t);
      const std::string data(4096, 'c');
      for (int i = 0; i < 200; ++i) {
        std::vector<IoOp> ops(4);
        for (IoOp& op : ops) {
          op.op = rng() % 3 == 0 ? v1::OP_DISCARD : v1::OP_WRITE;
          op.volume_id = r;
          op.epoch = 1;
          op.offset = (rng() % (kRegions * kRegion / 4096)) * 4096;
          op.length = 4096;
          if (op.op == v1::OP_WRITE) op.data = data;
          op.out_mask = static_cast<uint32_t>(rng() % 32);
        }
        store_->SubmitBatch(ops);
        std::lock_guard l(mu);
        for (const IoOp& op : ops) {
          ASSERT_TRUE(op.status.ok()) << op.status.ToString();
          want[0].insert(op.offset / kRegion);
          for (uint32_t p = 0; p < kMaxReplicas; ++p) {
            if (op.out_mask & (1u << p)) want[p + 1].insert(op.offset / kRegion);
          }
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  ASSERT_TRUE(Do(v1::OP_FLUSH, r, 1, 0, 0).ok());
  ASSERT_TRUE(Reopen().ok());
  for (uint32_t set = 0; set <= kMaxReplicas; ++set) {
    EXPECT_EQ(Dirty(r, set), Regions(want[set].begin(), want[set].end())) << "set " << set;
  }
}

}  // namespace
}  // namespace unbd::backend
