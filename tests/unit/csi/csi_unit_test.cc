// Volume ids and staging records: the two formats docs/csi.md promises.
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "csi/staging_record.h"
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
