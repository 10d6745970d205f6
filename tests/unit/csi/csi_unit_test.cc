// Volume ids and staging records (the two formats docs/csi.md promises) and the device health
// check the healer relies on.
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "csi/staging_record.h"
#include "csi/unbd_devices.h"
#include "frontend/daemon.h"
#include "frontend/device_state.h"
#include "csi/volume_id.h"

namespace unbd::csi {
namespace {

TEST(CsiVolumeId, ParsesNameAndServers) {
  VolumeId v;
  ASSERT_TRUE(ParseVolumeId("pvc-1@10.0.0.1:7420", &v).ok());
  EXPECT_EQ(v.name, "pvc-1");
  EXPECT_EQ(v.servers, std::vector<std::string>{"10.0.0.1:7420"});
  ASSERT_TRUE(ParseVolumeId("db.data_2@a:7420,b:7420,c:7420", &v).ok());
  EXPECT_EQ(v.servers, (std::vector<std::string>{"a:7420", "b:7420", "c:7420"}));
  EXPECT_EQ(v.ToString(), "db.data_2@a:7420,b:7420,c:7420");
}

TEST(CsiVolumeId, AnythingElseIsNotFound) {
  VolumeId v;
  for (const char* bad : {"", "pvc-1", "@a:1", "pvc-1@", "pvc-1@a", "pvc-1@a:0", "pvc-1@a:70000",
                          "pvc/1@a:1", "p@a:1,a:1", "p@a:1,", "p@a:1,b:1,c:1,d:1,e:1,f:1"}) {
    Status s = ParseVolumeId(bad, &v);
    EXPECT_EQ(s.code(), Status::Code::kNotFound) << bad;
  }
}

TEST(CsiStagingRecord, SurvivesARestart) {
  auto dir = std::filesystem::temp_directory_path() / ("csi-records-" + std::to_string(getpid()));
  std::filesystem::remove_all(dir);
  {
    RecordStore store(dir.string());
    ASSERT_TRUE(store.Load().ok());
    StagingRecord r;
    r.volume_id = "pvc-1@a:7420,b:7420";
    r.staging_path = "/var/lib/kubelet/plugins/kubernetes.io/csi/csi.unbd.io/x/globalmount";
    r.fs_type = "xfs";
    r.mount_flags = {"noatime"};
    r.access_mode = 1;
    r.dev_id = 3;
    r.publishes["/pods/a/mount"] = true;
    ASSERT_TRUE(store.Put(r).ok());
    StagingRecord b = r;
    b.volume_id = "blk@a:7420";
    b.block = true;
    ASSERT_TRUE(store.Put(b).ok());
    ASSERT_TRUE(store.Remove("blk@a:7420").ok());
    ASSERT_TRUE(store.Remove("never@a:7420").ok());
  }
  std::ofstream(dir / "garbage.json") << "{not json";
  RecordStore again(dir.string());
  ASSERT_TRUE(again.Load().ok());
  auto all = again.All();
  ASSERT_EQ(all.size(), 1u);
  const auto& r = all[0];
  EXPECT_EQ(r.volume_id, "pvc-1@a:7420,b:7420");
  EXPECT_EQ(r.fs_type, "xfs");
  EXPECT_EQ(r.mount_flags, std::vector<std::string>{"noatime"});
  EXPECT_EQ(r.dev_id, 3);
  EXPECT_EQ(r.device(), "/dev/ublkb3");
  EXPECT_FALSE(r.block);
  ASSERT_EQ(r.publishes.count("/pods/a/mount"), 1u);
  EXPECT_TRUE(r.publishes.at("/pods/a/mount"));
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace unbd::csi

namespace unbd::csi {
namespace {

// The healer's liveness check: a live daemon is alive; a killed one is dead even while it is an
// unreaped zombie (the agent as a container's PID 1 inherits the orphaned daemons), and the
// check reaps it; a device without a state file is gone.
TEST(CsiDeviceHealth, ZombieDaemonIsDeadAndReaped) {
  auto dir = std::filesystem::temp_directory_path() / ("csi-run-" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  setenv("UNBD_RUN_DIR", dir.c_str(), 1);
  pid_t child = fork();
  if (child == 0) {
    prctl(PR_SET_NAME, frontend::kDaemonProcessName);
    for (;;) pause();
  }
  ASSERT_GT(child, 0);
  frontend::DeviceState st;
  st.dev_id = 7;
  st.daemon_pid = child;
  ASSERT_TRUE(frontend::SaveDeviceState(st).ok());
  UnbdDevices devices("unbd");
  // The child names itself after fork: wait until it has.
  for (int i = 0; i < 200 && devices.Health(7) != DeviceHealth::kAlive; ++i) usleep(5000);
  EXPECT_EQ(devices.Health(7), DeviceHealth::kAlive);
  kill(child, SIGKILL);
  for (int i = 0; i < 200 && devices.Health(7) == DeviceHealth::kAlive; ++i) usleep(5000);
  EXPECT_EQ(devices.Health(7), DeviceHealth::kDead);
  EXPECT_EQ(waitpid(child, nullptr, WNOHANG), -1) << "the zombie was not reaped";
  EXPECT_EQ(devices.Health(8), DeviceHealth::kGone);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace unbd::csi
