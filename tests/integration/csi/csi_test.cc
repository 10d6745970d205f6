// unbd-csi over its real unix socket, on the host (no ublk here): Identity, every missing-field
// case, NOT_FOUND, ABORTED while a call runs on the same volume, and the Controller against real
// unbd-server processes. Staging real devices is the VM tests' job (tests/vm/csi).
#include <fstream>
#include <thread>

#include <gtest/gtest.h>

#include "backend/admin_client.h"
#include "tests/integration/csi/csi_process.h"

namespace unbd::testing {
namespace {

namespace pb = ::csi::v1;
using grpc::StatusCode;
using Mode = pb::VolumeCapability::AccessMode;

pb::VolumeCapability MountCap(Mode::Mode mode = Mode::SINGLE_NODE_WRITER, std::string fs = "ext4") {
  pb::VolumeCapability c;
  c.mutable_mount()->set_fs_type(fs);
  c.mutable_access_mode()->set_mode(mode);
  return c;
}

pb::NodeStageVolumeRequest StageReq(const std::string& id, const std::string& path) {
  pb::NodeStageVolumeRequest r;
  r.set_volume_id(id);
  r.set_staging_target_path(path);
  *r.mutable_volume_capability() = MountCap();
  return r;
}

pb::NodePublishVolumeRequest PublishReq(const std::string& id, const std::string& staging,
                                        const std::string& target) {
  pb::NodePublishVolumeRequest r;
  r.set_volume_id(id);
  r.set_staging_target_path(staging);
  r.set_target_path(target);
  *r.mutable_volume_capability() = MountCap();
  return r;
}

StatusCode Stage(CsiProcess& p, const pb::NodeStageVolumeRequest& r, std::string* msg = nullptr) {
  pb::NodeStageVolumeResponse resp;
  auto s = p.node->NodeStageVolume(Ctx().get(), r, &resp);
  if (msg) *msg = s.error_message();
  return s.error_code();
}
StatusCode Unstage(CsiProcess& p, const std::string& id, const std::string& path) {
  pb::NodeUnstageVolumeRequest r;
  r.set_volume_id(id);
  r.set_staging_target_path(path);
  pb::NodeUnstageVolumeResponse resp;
  return p.node->NodeUnstageVolume(Ctx().get(), r, &resp).error_code();
}
StatusCode Publish(CsiProcess& p, const pb::NodePublishVolumeRequest& r) {
  pb::NodePublishVolumeResponse resp;
  return p.node->NodePublishVolume(Ctx().get(), r, &resp).error_code();
}
StatusCode Unpublish(CsiProcess& p, const std::string& id, const std::string& target) {
  pb::NodeUnpublishVolumeRequest r;
  r.set_volume_id(id);
  r.set_target_path(target);
  pb::NodeUnpublishVolumeResponse resp;
  return p.node->NodeUnpublishVolume(Ctx().get(), r, &resp).error_code();
}
StatusCode Stats(CsiProcess& p, const std::string& id, const std::string& path) {
  pb::NodeGetVolumeStatsRequest r;
  r.set_volume_id(id);
  r.set_volume_path(path);
  pb::NodeGetVolumeStatsResponse resp;
  return p.node->NodeGetVolumeStats(Ctx().get(), r, &resp).error_code();
}
grpc::Status Create(CsiProcess& p, const std::string& name, int64_t bytes,
                    pb::CreateVolumeResponse* resp, std::map<std::string, std::string> params = {}) {
  pb::CreateVolumeRequest r;
  r.set_name(name);
  if (bytes) r.mutable_capacity_range()->set_required_bytes(bytes);
  *r.add_volume_capabilities() = MountCap();
  for (auto& [k, v] : params) (*r.mutable_parameters())[k] = v;
  return p.controller->CreateVolume(Ctx().get(), r, resp);
}
StatusCode Delete(CsiProcess& p, const std::string& id) {
  pb::DeleteVolumeRequest r;
  r.set_volume_id(id);
  pb::DeleteVolumeResponse resp;
  return p.controller->DeleteVolume(Ctx().get(), r, &resp).error_code();
}

TEST(CsiIdentity, PluginInfoCapabilitiesProbe) {
  auto dir = TestDir("csi");
  CsiProcess p(dir, {"--mode", "all"});
  pb::GetPluginInfoResponse info;
  ASSERT_TRUE(p.identity->GetPluginInfo(Ctx().get(), {}, &info).ok());
  EXPECT_EQ(info.name(), "csi.unbd.io");
  EXPECT_EQ(info.vendor_version(), "0.1.0");
  pb::GetPluginCapabilitiesResponse caps;
  ASSERT_TRUE(p.identity->GetPluginCapabilities(Ctx().get(), {}, &caps).ok());
  ASSERT_EQ(caps.capabilities_size(), 1);
  EXPECT_EQ(caps.capabilities(0).service().type(), pb::PluginCapability::Service::CONTROLLER_SERVICE);
  pb::ProbeResponse probe;
  ASSERT_TRUE(p.identity->Probe(Ctx().get(), {}, &probe).ok());
  EXPECT_TRUE(probe.has_ready() && probe.ready().value());

  pb::NodeGetCapabilitiesResponse ncaps;
  ASSERT_TRUE(p.node->NodeGetCapabilities(Ctx().get(), {}, &ncaps).ok());
  std::set<int> types;
  for (const auto& c : ncaps.capabilities()) types.insert(c.rpc().type());
  EXPECT_EQ(types, (std::set<int>{pb::NodeServiceCapability::RPC::STAGE_UNSTAGE_VOLUME,
                                  pb::NodeServiceCapability::RPC::GET_VOLUME_STATS}));
  pb::NodeGetInfoResponse ninfo;
  ASSERT_TRUE(p.node->NodeGetInfo(Ctx().get(), {}, &ninfo).ok());
  EXPECT_EQ(ninfo.node_id(), "test-node");
  pb::ControllerGetCapabilitiesResponse ccaps;
  ASSERT_TRUE(p.controller->ControllerGetCapabilities(Ctx().get(), {}, &ccaps).ok());
  ASSERT_EQ(ccaps.capabilities_size(), 1);
  EXPECT_EQ(ccaps.capabilities(0).rpc().type(), pb::ControllerServiceCapability::RPC::CREATE_DELETE_VOLUME);
}

TEST(CsiIdentity, NodeModeServesNoController) {
  auto dir = TestDir("csi");
  CsiProcess p(dir, {"--mode", "node"});
  pb::GetPluginCapabilitiesResponse caps;
  ASSERT_TRUE(p.identity->GetPluginCapabilities(Ctx().get(), {}, &caps).ok());
  EXPECT_EQ(caps.capabilities_size(), 0);
  pb::ControllerGetCapabilitiesResponse ccaps;
  EXPECT_EQ(p.controller->ControllerGetCapabilities(Ctx().get(), {}, &ccaps).error_code(),
            StatusCode::UNIMPLEMENTED);
}

TEST(CsiNode, EveryMissingFieldIsInvalidArgument) {
  auto dir = TestDir("csi");
  CsiProcess p(dir, {});
  const std::string id = "vol@127.0.0.1:7420", st = dir + "/staging", tg = dir + "/target";
  auto stage = StageReq(id, st);
  auto r = stage; r.clear_volume_id();
  EXPECT_EQ(Stage(p, r), StatusCode::INVALID_ARGUMENT) << "stage without volume_id";
  r = stage; r.clear_staging_target_path();
  EXPECT_EQ(Stage(p, r), StatusCode::INVALID_ARGUMENT) << "stage without staging_target_path";
  r = stage; r.clear_volume_capability();
  EXPECT_EQ(Stage(p, r), StatusCode::INVALID_ARGUMENT) << "stage without volume_capability";
  r = stage; r.mutable_volume_capability()->clear_mount();
  EXPECT_EQ(Stage(p, r), StatusCode::INVALID_ARGUMENT) << "stage without access type";
  r = stage; r.mutable_volume_capability()->clear_access_mode();
  EXPECT_EQ(Stage(p, r), StatusCode::INVALID_ARGUMENT) << "stage without access mode";
  r = stage; *r.mutable_volume_capability() = MountCap(Mode::SINGLE_NODE_WRITER, "btrfs");
  EXPECT_EQ(Stage(p, r), StatusCode::INVALID_ARGUMENT) << "stage with an unsupported fs";
  r = stage; *r.mutable_volume_capability() = MountCap(Mode::MULTI_NODE_MULTI_WRITER);
  EXPECT_EQ(Stage(p, r), StatusCode::INVALID_ARGUMENT) << "stage multi-node";

  EXPECT_EQ(Unstage(p, "", st), StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Unstage(p, id, ""), StatusCode::INVALID_ARGUMENT);

  auto pub = PublishReq(id, st, tg);
  auto q = pub; q.clear_volume_id();
  EXPECT_EQ(Publish(p, q), StatusCode::INVALID_ARGUMENT) << "publish without volume_id";
  q = pub; q.clear_staging_target_path();
  EXPECT_EQ(Publish(p, q), StatusCode::INVALID_ARGUMENT) << "publish without staging_target_path";
  q = pub; q.clear_target_path();
  EXPECT_EQ(Publish(p, q), StatusCode::INVALID_ARGUMENT) << "publish without target_path";
  q = pub; q.clear_volume_capability();
  EXPECT_EQ(Publish(p, q), StatusCode::INVALID_ARGUMENT) << "publish without volume_capability";
  q = pub; q.mutable_volume_capability()->clear_access_mode();
  EXPECT_EQ(Publish(p, q), StatusCode::INVALID_ARGUMENT) << "publish without access mode";

  EXPECT_EQ(Unpublish(p, "", tg), StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Unpublish(p, id, ""), StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Stats(p, "", tg), StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Stats(p, id, ""), StatusCode::INVALID_ARGUMENT);

  pb::CreateVolumeResponse cr;
  EXPECT_EQ(Create(p, "", 0, &cr).error_code(), StatusCode::INVALID_ARGUMENT);
  pb::CreateVolumeRequest nocap;
  nocap.set_name("v");
  EXPECT_EQ(p.controller->CreateVolume(Ctx().get(), nocap, &cr).error_code(), StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Delete(p, ""), StatusCode::INVALID_ARGUMENT);
  // Nothing was staged by any of it.
  EXPECT_FALSE(std::filesystem::exists(st));
}

TEST(CsiNode, UnknownVolumesAreNotFoundAndUndoingThemSucceeds) {
  auto dir = TestDir("csi");
  CsiProcess p(dir, {});
  const std::string st = dir + "/staging", tg = dir + "/target";
  std::string msg;
  EXPECT_EQ(Stage(p, StageReq("not-an-unbd-id", st), &msg), StatusCode::NOT_FOUND);
  EXPECT_NE(msg.find("NAME@HOST:PORT"), std::string::npos) << msg;
  EXPECT_EQ(Stage(p, StageReq("vol@no-port", st)), StatusCode::NOT_FOUND);
  EXPECT_EQ(Publish(p, PublishReq("vol@127.0.0.1:7420", st, tg)), StatusCode::NOT_FOUND);
  EXPECT_EQ(Stats(p, "vol@127.0.0.1:7420", st), StatusCode::NOT_FOUND);
  // Undoing what was never done is done.
  EXPECT_EQ(Unpublish(p, "vol@127.0.0.1:7420", tg), StatusCode::OK);
  EXPECT_EQ(Unstage(p, "vol@127.0.0.1:7420", st), StatusCode::OK);
  EXPECT_EQ(Delete(p, "not-an-unbd-id"), StatusCode::OK);
}

// A stand-in `unbd` whose `add` takes 3 s and fails: Stage is busy that long.
std::string SlowFailingUnbd(const std::string& dir) {
  const std::string path = dir + "/slow-unbd";
  std::ofstream(path) << "#!/bin/sh\necho \"$@\" >>" << dir << "/unbd-calls\n"
                      << "[ \"$1\" = add ] && sleep 3\necho \"unbd: backend unreachable\" >&2\nexit 1\n";
  std::filesystem::permissions(path, std::filesystem::perms::owner_all);
  return path;
}

TEST(CsiNode, SecondCallOnABusyVolumeIsAborted) {
  auto dir = TestDir("csi");
  CsiProcess p(dir, {"--unbd", SlowFailingUnbd(dir)});
  const std::string id = "vol@127.0.0.1:7420", st = dir + "/staging";
  StatusCode first = StatusCode::OK;
  std::thread t([&] { first = Stage(p, StageReq(id, st)); });
  std::this_thread::sleep_for(std::chrono::milliseconds(800));
  EXPECT_EQ(Stage(p, StageReq(id, st)), StatusCode::ABORTED);
  EXPECT_EQ(Unstage(p, id, st), StatusCode::ABORTED);
  EXPECT_EQ(Publish(p, PublishReq(id, st, dir + "/t")), StatusCode::ABORTED);
  // Another volume is not held up.
  EXPECT_EQ(Unstage(p, "other@127.0.0.1:7420", st), StatusCode::OK);
  t.join();
  EXPECT_EQ(first, StatusCode::UNAVAILABLE);
  // The failed stage left nothing behind: no record, so Publish does not find the volume.
  EXPECT_EQ(Publish(p, PublishReq(id, st, dir + "/t")), StatusCode::NOT_FOUND);
  EXPECT_TRUE(std::filesystem::is_empty(dir + "/state/staged"));
  EXPECT_NE(ReadFile(dir + "/unbd-calls").find("add -t remote --server 127.0.0.1:7420 --volume vol --recovery --reissue"),
            std::string::npos)
      << ReadFile(dir + "/unbd-calls");
}

TEST(CsiController, CreateDeleteOnARealServer) {
  auto dir = TestDir("csi");
  ServerProcess server(dir, dir + "/db");
  ASSERT_TRUE(server.started());
  CsiProcess p(dir, {"--backends", server.target()});
  pb::CreateVolumeResponse a, b, c;
  ASSERT_TRUE(Create(p, "pvc-1", 10 << 20, &a).ok());
  EXPECT_EQ(a.volume().volume_id(), "pvc-1@" + server.target());
  EXPECT_EQ(a.volume().capacity_bytes(), 10 << 20);
  // Idempotent: the same request gives the same volume.
  for (int i = 0; i < 10; ++i) {
    ASSERT_TRUE(Create(p, "pvc-1", 10 << 20, &b).ok());
    EXPECT_EQ(b.volume().volume_id(), a.volume().volume_id());
  }
  EXPECT_EQ(Create(p, "pvc-1", 20 << 20, &c).error_code(), StatusCode::ALREADY_EXISTS);
  backend::AdminClient admin(server.target());
  v1::Volume v;
  v1::VolumeRef ref;
  ref.set_name("pvc-1");
  ASSERT_TRUE(admin.Stat(ref, &v).ok());
  EXPECT_EQ(v.size_bytes(), 10u << 20);
  // Sizes round up to whole 4 KiB blocks; no size means 1 GiB.
  ASSERT_TRUE(Create(p, "pvc-2", 5000, &c).ok());
  EXPECT_EQ(c.volume().capacity_bytes(), 8192);
  ASSERT_TRUE(Create(p, "pvc-3", 0, &c).ok());
  EXPECT_EQ(c.volume().capacity_bytes(), 1 << 30);
  EXPECT_EQ(Create(p, "pvc-4", 0, &c, {{"replicas", "2"}}).error_code(), StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Create(p, "pvc-4", 0, &c, {{"colour", "red"}}).error_code(), StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Create(p, "bad/name", 0, &c).error_code(), StatusCode::INVALID_ARGUMENT);

  // ValidateVolumeCapabilities: confirms what a node can do, names what it cannot.
  pb::ValidateVolumeCapabilitiesRequest vr;
  vr.set_volume_id(a.volume().volume_id());
  *vr.add_volume_capabilities() = MountCap();
  pb::ValidateVolumeCapabilitiesResponse vresp;
  ASSERT_TRUE(p.controller->ValidateVolumeCapabilities(Ctx().get(), vr, &vresp).ok());
  EXPECT_EQ(vresp.confirmed().volume_capabilities_size(), 1);
  *vr.add_volume_capabilities() = MountCap(Mode::MULTI_NODE_MULTI_WRITER);
  vresp.Clear();
  ASSERT_TRUE(p.controller->ValidateVolumeCapabilities(Ctx().get(), vr, &vresp).ok());
  EXPECT_FALSE(vresp.has_confirmed());
  EXPECT_NE(vresp.message().find("MULTI_NODE_MULTI_WRITER"), std::string::npos) << vresp.message();
  vr.set_volume_id("nosuch@" + server.target());
  EXPECT_EQ(p.controller->ValidateVolumeCapabilities(Ctx().get(), vr, &vresp).error_code(),
            StatusCode::NOT_FOUND);

  for (int i = 0; i < 10; ++i) EXPECT_EQ(Delete(p, a.volume().volume_id()), StatusCode::OK);
  EXPECT_EQ(admin.Stat(ref, &v).code(), Status::Code::kNotFound);
}

TEST(CsiController, ReplicatedVolumeOnThreeServers) {
  auto dir = TestDir("csi");
  std::vector<std::unique_ptr<ServerProcess>> servers;
  std::string backends;
  for (int i = 0; i < 3; ++i) {
    auto d = dir + "/s" + std::to_string(i);
    std::filesystem::create_directories(d);
    servers.push_back(std::make_unique<ServerProcess>(d, d + "/db"));
    ASSERT_TRUE(servers.back()->started());
    backends += (i ? "," : "") + servers.back()->target();
  }
  CsiProcess p(dir, {"--backends", backends});
  pb::CreateVolumeResponse a;
  ASSERT_TRUE(Create(p, "pvc-r", 4 << 20, &a, {{"replicas", "3"}}).ok()) << p.log();
  const std::string& id = a.volume().volume_id();
  ASSERT_EQ(id.rfind("pvc-r@", 0), 0u) << id;
  v1::VolumeRef ref;
  ref.set_name("pvc-r");
  for (auto& s : servers) {
    EXPECT_NE(id.find(s->target()), std::string::npos) << id;
    v1::Volume v;
    ASSERT_TRUE(backend::AdminClient(s->target()).Stat(ref, &v).ok());
    EXPECT_EQ(v.size_bytes(), 4u << 20);
    EXPECT_FALSE(v.replica_uuid().empty());
  }
  pb::CreateVolumeResponse again;
  ASSERT_TRUE(Create(p, "pvc-r", 4 << 20, &again, {{"replicas", "3"}}).ok());
  EXPECT_EQ(again.volume().volume_id(), id);
  EXPECT_EQ(Delete(p, id), StatusCode::OK);
  for (auto& s : servers) {
    v1::Volume v;
    EXPECT_EQ(backend::AdminClient(s->target()).Stat(ref, &v).code(), Status::Code::kNotFound);
  }
}

}  // namespace
}  // namespace unbd::testing
