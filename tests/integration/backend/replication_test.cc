// The server side of replication against real unbd-server processes: dirty-region marks ride with
// replicated writes (stream, zero-copy stream and unary) and survive kill -9 after a FLUSH;
// replica metadata is fenced, versioned, idempotent, persistent and reported by Open/Stat/List;
// Mark/Clear are fenced; GetDirtyRegions counts; delete drops marks; bad input; --region-bytes.
#include "backend/io_frame.h"
#include "tests/integration/backend/server_process.h"

namespace unbd::testing {
namespace {

using Regions = std::vector<uint64_t>;
using Code = Status::Code;
constexpr uint64_t kRegion = 1 << 20;
constexpr uint64_t kVolBytes = 16 * kRegion;

Regions Dirty(backend::ReplicationClient& repl, uint64_t vol, uint32_t set) {
  v1::GetDirtyRegionsResponse r;
  Status s = repl.GetDirty(vol, set, false, &r);
  EXPECT_TRUE(s.ok()) << s.ToString();
  return Regions(r.regions().begin(), r.regions().end());
}

std::map<uint32_t, uint64_t> Counts(backend::ReplicationClient& repl, uint64_t vol) {
  v1::GetDirtyRegionsResponse r;
  Status s = repl.GetDirty(vol, 0, true, &r);
  EXPECT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(r.region_bytes(), kRegion);
  std::map<uint32_t, uint64_t> out;
  for (const auto& c : r.counts()) out[c.set()] = c.regions();
  return out;
}

v1::ReplicaSetMeta Meta(uint64_t epoch, uint64_t version, int replicas = 3) {
  v1::ReplicaSetMeta m;
  m.set_written_epoch(epoch);
  m.set_config_version(version);
  m.set_size_bytes(kVolBytes);
  m.set_region_bytes(kRegion);
  m.set_owner_client_id("owner-" + std::to_string(epoch));
  for (int i = 0; i < replicas; ++i) {
    v1::ReplicaInfo* r = m.add_replicas();
    r->set_address("127.0.0.1:" + std::to_string(7420 + i));
    r->set_volume_id(1);
    r->set_uuid("copy-" + std::to_string(i));
    r->set_state(i == 1 ? v1::REPLICA_OUT : v1::REPLICA_HEALTHY);
  }
  return m;
}

// A server with the three clients the tests use.
struct Server {
  explicit Server(const std::string& dir)
      : process(dir, dir + "/db"),
        admin(process.target()),
        io(process.target()),
        repl(process.target()) {}
  // Creates replica "copy-0" of volume "rep" and opens it at `epoch`; returns the volume id.
  uint64_t CreateReplica(uint64_t epoch, const std::string& client) {
    v1::Volume v;
    Status s = admin.Create("rep", kVolBytes, "copy-0", &v);
    EXPECT_TRUE(s.ok()) << s.ToString();
    s = io.Open(v.id(), epoch, client);
    EXPECT_TRUE(s.ok()) << s.ToString();
    return v.id();
  }
  ServerProcess process;
  backend::AdminClient admin;
  backend::IoClient io;
  backend::ReplicationClient repl;
};

TEST(BackendReplication, MarksRideWithDataAndSurviveKill9AfterFlush) {
  const std::string dir = TestDir("x");
  uint64_t rep, plain;
  {
    ServerProcess server(dir, dir + "/db");
    ASSERT_TRUE(server.started()) << server.log();
    backend::AdminClient admin(server.target());
    v1::Volume v;
    ASSERT_TRUE(admin.Create("rep", kVolBytes, "copy-0", &v).ok());
    EXPECT_EQ(v.replica_uuid(), "copy-0");
    rep = v.id();
    ASSERT_TRUE(admin.Create("plain", kVolBytes, &v).ok());
    plain = v.id();
    backend::IoClient io(server.target());
    v1::OpenVolumeResponse opened;
    ASSERT_TRUE(io.Open(rep, 3, "owner", &opened).ok());
    EXPECT_EQ(opened.replica_uuid(), "copy-0");
    EXPECT_FALSE(opened.has_replica_set());
    ASSERT_TRUE(io.Open(plain, 3, "owner").ok());

    StreamSession stream(server.target());
    v1::IoBatch batch;
    // Replica 1 is out: region 2 goes to the unstable set and PeerSet(1) (set 2).
    AddRequest(&batch, 1, v1::OP_WRITE, rep, 3, 2 * kRegion, 4096, std::string(4096, 'a'))
        ->set_out_mask(0b10);
    AddRequest(&batch, 2, v1::OP_DISCARD, rep, 3, 5 * kRegion, 4096)->set_out_mask(0b1);
    AddRequest(&batch, 3, v1::OP_WRITE, plain, 3, 2 * kRegion, 4096, std::string(4096, 'p'));
    AddRequest(&batch, 4, v1::OP_WRITE_ZEROES, plain, 3, 0, 4 * kRegion);
    v1::CompletionBatch done;
    ASSERT_TRUE(stream.Exchange(batch, &done));
    for (const auto& c : done.completions()) ASSERT_EQ(c.code(), 0) << c.message();

    // The frontend's zero-copy header encoding carries out_mask too.
    std::string payload(8192, 'z');
    backend::IoRequestHeader h;
    h.tag = 5;
    h.op = v1::OP_WRITE;
    h.volume_id = rep;
    h.epoch = 3;
    h.offset = 9 * kRegion - 4096;  // straddles regions 8 and 9
    h.length = 8192;
    h.out_mask = 0b100;
    char hdr[backend::kMaxIoRequestHeaderBytes];
    v1::IoBatch zc;
    ASSERT_TRUE(
        zc.ParseFromString(std::string(hdr, backend::EncodeIoRequestHeader(h, hdr)) + payload));
    ASSERT_TRUE(stream.Exchange(zc, &done));
    ASSERT_EQ(done.completions(0).code(), 0) << done.completions(0).message();

    // Unary writes mark as well.
    ASSERT_TRUE(io.Write(rep, 3, 12 * kRegion, std::string(4096, 'u'), false, 0b10).ok());
    ASSERT_TRUE(io.ZeroRange(rep, 3, 13 * kRegion, kRegion, /*discard=*/false, false, 0).ok());
    ASSERT_TRUE(io.ZeroRange(plain, 3, 13 * kRegion, kRegion, true).ok());

    v1::IoBatch flush;
    AddRequest(&flush, 9, v1::OP_FLUSH, rep, 3, 0, 0);
    ASSERT_TRUE(stream.Exchange(flush, &done));
    ASSERT_EQ(done.completions(0).code(), 0) << done.completions(0).message();
    EXPECT_EQ(server.Kill(SIGKILL), 128 + SIGKILL);
  }
  ServerProcess again(dir, dir + "/db");
  ASSERT_TRUE(again.started()) << again.log();
  backend::ReplicationClient repl(again.target());
  EXPECT_EQ(Dirty(repl, rep, 0), (Regions{2, 5, 8, 9, 12, 13}));
  EXPECT_EQ(Dirty(repl, rep, 1), (Regions{5}));
  EXPECT_EQ(Dirty(repl, rep, 2), (Regions{2, 12}));
  EXPECT_EQ(Dirty(repl, rep, 3), (Regions{8, 9}));
  EXPECT_EQ(Counts(repl, rep), (std::map<uint32_t, uint64_t>{{0, 6}, {1, 1}, {2, 2}, {3, 2}}));
  EXPECT_TRUE(Counts(repl, plain).empty());
  // The flushed data is there too.
  backend::IoClient io(again.target());
  ASSERT_TRUE(io.Open(rep, 4, "next").ok());
  std::string got;
  ASSERT_TRUE(io.Read(rep, 4, 2 * kRegion, 4096, &got).ok());
  EXPECT_EQ(got, std::string(4096, 'a'));
}

TEST(BackendReplication, ReplicaMetaIsFencedVersionedAndPersistent) {
  const std::string dir = TestDir("x");
  uint64_t vol;
  {
    Server server(dir);
    ASSERT_TRUE(server.process.started()) << server.process.log();
    vol = server.CreateReplica(5, "a");
    auto& repl = server.repl;

    Status s = repl.PutMeta(vol, 4, Meta(4, 1));
    EXPECT_EQ(s.code(), Code::kFailedPrecondition);
    EXPECT_NE(s.message().find("volume " + std::to_string(vol) + ": epoch 4 is fenced by epoch 5"),
              std::string::npos)
        << s.ToString();
    ASSERT_TRUE(repl.PutMeta(vol, 5, Meta(5, 2)).ok());
    EXPECT_TRUE(repl.PutMeta(vol, 5, Meta(5, 2)).ok()) << "idempotent retry";
    s = repl.PutMeta(vol, 5, Meta(5, 1));
    EXPECT_EQ(s.code(), Code::kFailedPrecondition);
    EXPECT_NE(s.message().find("config_version 1) is not newer than the stored (written_epoch 5, "
                               "config_version 2)"),
              std::string::npos)
        << s.ToString();
    s = repl.PutMeta(vol, 5, Meta(4, 3));
    EXPECT_EQ(s.code(), Code::kFailedPrecondition);
    EXPECT_NE(s.message().find("written_epoch 4 differs from the request's epoch 5"),
              std::string::npos)
        << s.ToString();
    // Synced before the answer: kill -9 right after.
    ASSERT_TRUE(repl.PutMeta(vol, 5, Meta(5, 3)).ok());
    EXPECT_EQ(server.process.Kill(SIGKILL), 128 + SIGKILL);
  }

  Server again(dir);
  ASSERT_TRUE(again.process.started()) << again.process.log();
  auto& admin2 = again.admin;
  auto& io2 = again.io;
  auto& repl2 = again.repl;
  v1::Volume v;
  ASSERT_TRUE(admin2.Stat(backend::ParseVolumeRef("rep"), &v).ok());
  EXPECT_EQ(v.replica_uuid(), "copy-0");
  EXPECT_EQ(v.replica_set().config_version(), 3u);
  EXPECT_EQ(v.replica_set().replicas(1).state(), v1::REPLICA_OUT);
  std::vector<v1::Volume> all;
  ASSERT_TRUE(admin2.List(&all).ok());
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0].replica_set().SerializeAsString(), Meta(5, 3).SerializeAsString());
  // The next owner sees it in OpenVolume's answer; the old epoch can no longer write meta.
  v1::OpenVolumeResponse opened;
  ASSERT_TRUE(io2.Open(vol, 6, "b", &opened).ok());
  EXPECT_EQ(opened.replica_uuid(), "copy-0");
  EXPECT_EQ(opened.replica_set().SerializeAsString(), Meta(5, 3).SerializeAsString());
  EXPECT_EQ(repl2.PutMeta(vol, 5, Meta(5, 4)).code(), Code::kFailedPrecondition);
  ASSERT_TRUE(repl2.PutMeta(vol, 6, Meta(6, 1)).ok());
  ASSERT_TRUE(admin2.Stat(backend::ParseVolumeRef("rep"), &v).ok());
  EXPECT_EQ(v.replica_set().written_epoch(), 6u);
}

TEST(BackendReplication, MarkClearFencedCountsAndDelete) {
  const std::string dir = TestDir("x");
  Server server(dir);
  ASSERT_TRUE(server.process.started()) << server.process.log();
  const uint64_t vol = server.CreateReplica(2, "a");
  auto& [process, admin, io, repl] = server;
  v1::Volume v;
  ASSERT_TRUE(repl.MarkDirty(vol, 2, 1, {3, 15, 7}).ok());
  ASSERT_TRUE(repl.MarkDirty(vol, 2, 0, {1}).ok());
  EXPECT_EQ(Dirty(repl, vol, 1), (Regions{3, 7, 15}));
  EXPECT_EQ(Counts(repl, vol), (std::map<uint32_t, uint64_t>{{0, 1}, {1, 3}}));
  ASSERT_TRUE(repl.ClearDirty(vol, 2, 1, {7}).ok());
  EXPECT_EQ(Dirty(repl, vol, 1), (Regions{3, 15}));
  ASSERT_TRUE(repl.MarkDirty(vol, 2, 0, {12, 5}).ok());

  // The open answers with the unstable set (set 0) the earlier epoch left: the new owner
  // reconciles from that answer.
  v1::OpenVolumeResponse opened;
  ASSERT_TRUE(io.Open(vol, 3, "b", &opened).ok());
  ASSERT_TRUE(opened.has_unstable_regions());
  EXPECT_EQ(Regions(opened.unstable_regions().regions().begin(), opened.unstable_regions().regions().end()),
            (Regions{1, 5, 12}));
  ASSERT_TRUE(repl.ClearDirty(vol, 3, 0, {5, 12}).ok());
  Status s = repl.MarkDirty(vol, 2, 1, {4});
  EXPECT_EQ(s.code(), Code::kFailedPrecondition);
  EXPECT_NE(s.message().find("epoch 2 is fenced by epoch 3"), std::string::npos) << s.ToString();
  s = repl.ClearDirty(vol, 2, 1, {}, /*all=*/true);
  EXPECT_EQ(s.code(), Code::kFailedPrecondition);
  EXPECT_EQ(Dirty(repl, vol, 1), (Regions{3, 15}));
  ASSERT_TRUE(repl.ClearDirty(vol, 3, 1, {}, /*all=*/true).ok());
  EXPECT_EQ(Counts(repl, vol), (std::map<uint32_t, uint64_t>{{0, 1}}));

  // Bad input.
  s = repl.MarkDirty(vol, 3, 1, {16});
  EXPECT_EQ(s.code(), Code::kOutOfRange);
  EXPECT_NE(s.message().find("region 16 is past the end (16 regions of 1048576 bytes)"),
            std::string::npos)
      << s.ToString();
  EXPECT_EQ(repl.MarkDirty(vol + 100, 3, 1, {1}).code(), Code::kNotFound);
  EXPECT_EQ(repl.MarkDirty(vol, 3, 9, {1}).code(), Code::kInvalidArgument);
  v1::GetDirtyRegionsResponse resp;
  EXPECT_EQ(repl.GetDirty(vol + 100, 0, true, &resp).code(), Code::kNotFound);
  EXPECT_EQ(repl.PutMeta(vol + 100, 3, Meta(3, 1)).code(), Code::kNotFound);
  s = admin.Create("bad", kVolBytes, "not_a_uuid!", &v);
  EXPECT_EQ(s.code(), Code::kInvalidArgument);
  EXPECT_NE(s.message().find("replica uuid \"not_a_uuid!\""), std::string::npos) << s.ToString();
  ASSERT_TRUE(admin.Create("plain", kVolBytes, &v).ok());
  ASSERT_TRUE(io.Open(v.id(), 1, "a", &opened).ok());
  EXPECT_FALSE(opened.has_unstable_regions()) << "a plain volume has no region sets";
  s = io.Write(v.id(), 1, 0, std::string(4096, 'x'), false, 0b1);
  EXPECT_EQ(s.code(), Code::kInvalidArgument);
  EXPECT_NE(s.message().find("not a replica"), std::string::npos) << s.ToString();
  EXPECT_EQ(repl.PutMeta(v.id(), 1, Meta(1, 1)).code(), Code::kFailedPrecondition);

  // Delete drops the marks: a new volume of the same name starts clean.
  ASSERT_TRUE(admin.Delete(backend::ParseVolumeRef("rep")).ok());
  EXPECT_EQ(repl.GetDirty(vol, 0, true, &resp).code(), Code::kNotFound);
  ASSERT_TRUE(admin.Create("rep", kVolBytes, "copy-0", &v).ok());
  EXPECT_TRUE(Counts(repl, v.id()).empty());
}

TEST(BackendReplication, FencedStreamWriteCarriesTheCurrentEpoch) {
  const std::string dir = TestDir("x");
  Server server(dir);
  ASSERT_TRUE(server.process.started()) << server.process.log();
  const uint64_t vol = server.CreateReplica(7, "a");
  StreamSession stream(server.process.target());
  v1::IoBatch batch;
  AddRequest(&batch, 1, v1::OP_WRITE, vol, 6, 0, 4096, std::string(4096, 'o'));
  AddRequest(&batch, 2, v1::OP_WRITE, vol, 8, 0, 4096, std::string(4096, 'n'));
  AddRequest(&batch, 3, v1::OP_WRITE, vol, 7, 0, 4096, std::string(4096, 'c'));
  v1::CompletionBatch done;
  ASSERT_TRUE(stream.Exchange(batch, &done));
  EXPECT_EQ(done.completions(0).code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(done.completions(0).current_epoch(), 7u);  // > 6: fenced by a newer owner
  EXPECT_EQ(done.completions(1).code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(done.completions(1).current_epoch(), 7u);  // < 8: this replica missed the open
  EXPECT_EQ(done.completions(2).code(), 0);
  EXPECT_EQ(done.completions(2).current_epoch(), 0u);
}

TEST(BackendReplication, RegionBytesFlag) {
  const std::string dir = TestDir("x");
  {
    ServerProcess bad(dir, dir + "/db", {"--region-bytes", "12288"});
    EXPECT_FALSE(bad.started());
    EXPECT_NE(bad.exit_code(), 0);
    EXPECT_NE(bad.log().find("must be a power of two >= 4096"), std::string::npos) << bad.log();
  }
  {
    ServerProcess first(dir, dir + "/db", {"--region-bytes", "65536"});
    ASSERT_TRUE(first.started()) << first.log();
    backend::ReplicationClient repl(first.target());
    backend::AdminClient admin(first.target());
    v1::Volume v;
    ASSERT_TRUE(admin.Create("rep", kVolBytes, "copy-0", &v).ok());
    v1::GetDirtyRegionsResponse resp;
    ASSERT_TRUE(repl.GetDirty(v.id(), 0, true, &resp).ok());
    EXPECT_EQ(resp.region_bytes(), 65536u);
    EXPECT_EQ(first.Kill(SIGTERM), 0);
  }
  ServerProcess changed(dir, dir + "/db");  // default 1 MiB
  EXPECT_FALSE(changed.started());
  EXPECT_EQ(changed.exit_code(), 1);
  EXPECT_NE(changed.log().find("tracks 65536-byte regions"), std::string::npos) << changed.log();
  EXPECT_NE(changed.log().find("start with the --region-bytes it was created with"),
            std::string::npos)
      << changed.log();
}

}  // namespace
}  // namespace unbd::testing
