#include "backend/key_codec.h"

#include <gtest/gtest.h>

namespace unbd::backend {
namespace {

TEST(KeyCodec, RoundTripsAndIsBigEndian) {
  std::string k = DataKey(0x0102030405060708ull, 0x1112131415161718ull);
  ASSERT_EQ(k.size(), 16u);
  EXPECT_EQ(static_cast<unsigned char>(k[0]), 0x01);
  EXPECT_EQ(static_cast<unsigned char>(k[7]), 0x08);
  EXPECT_EQ(static_cast<unsigned char>(k[8]), 0x11);
  EXPECT_EQ(static_cast<unsigned char>(k[15]), 0x18);
  uint64_t v, b;
  ASSERT_TRUE(DecodeDataKey(k, &v, &b));
  EXPECT_EQ(v, 0x0102030405060708ull);
  EXPECT_EQ(b, 0x1112131415161718ull);
  EXPECT_FALSE(DecodeDataKey("short", &v, &b));
}

TEST(KeyCodec, BytewiseOrderIsVolumeThenBlockOrder) {
  // RocksDB compares bytewise: keys must sort by (volume, block) numerically so that one
  // volume's blocks form one contiguous range and range deletes cover exactly that volume.
  const uint64_t vols[] = {1, 2, 255, 256, 1ull << 40};
  const uint64_t blocks[] = {0, 1, 255, 256, 65535, 65536, (1ull << 48) - 1};
  std::string prev;
  for (uint64_t v : vols) {
    for (uint64_t b : blocks) {
      std::string k = DataKey(v, b);
      if (!prev.empty()) {
        EXPECT_LT(prev, k) << v << "/" << b;
      }
      prev = k;
    }
    EXPECT_LT(DataKey(v, ~0ull), DataKey(v + 1, 0));
  }
}

TEST(KeyCodec, MetaKeysDoNotCollide) {
  EXPECT_NE(VolumeMetaKey(1), VolumeMetaKey(256));
  EXPECT_TRUE(std::string_view(VolumeMetaKey(7)).starts_with(kVolumeMetaPrefix));
  EXPECT_EQ(VolumeNameKey("a"), "name/a");
}

}  // namespace
}  // namespace unbd::backend
