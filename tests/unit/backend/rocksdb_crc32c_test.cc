// The hardware CRC32C that RocksDB's WAL uses in unbd (backend/rocksdb_crc32c.h) is the same
// function as RocksDB's own: the standard check value, and equal results for random data, lengths
// and seeds, including continuing a checksum across pieces.
#include "backend/rocksdb_crc32c.h"

#include <gtest/gtest.h>

#include <random>
#include <string>

namespace unbd::backend {
namespace {

TEST(RocksDbCrc32c, StandardCheckValue) {
  EXPECT_EQ(RocksDbCrc32cExtend(0, "123456789", 9), 0xE3069283u);
  EXPECT_EQ(RocksDbCrc32cExtendOriginal(0, "123456789", 9), 0xE3069283u);
  EXPECT_EQ(RocksDbCrc32cExtend(0, "", 0), 0u);
}

TEST(RocksDbCrc32c, SameAsRocksDbsOwnForRandomInput) {
  std::mt19937_64 rng(7);
  std::string data(70000, '\0');
  for (auto& c : data) c = static_cast<char>(rng());
  for (int i = 0; i < 2000; ++i) {
    const size_t off = rng() % 64, n = rng() % (i % 10 == 0 ? 66000 : 300);
    const uint32_t seed = static_cast<uint32_t>(rng());
    ASSERT_EQ(RocksDbCrc32cExtend(seed, data.data() + off, n),
              RocksDbCrc32cExtendOriginal(seed, data.data() + off, n))
        << "offset " << off << " length " << n << " seed " << seed;
  }
  // Extending piece by piece equals one pass.
  const uint32_t whole = RocksDbCrc32cExtend(0, data.data(), 4096);
  EXPECT_EQ(RocksDbCrc32cExtend(RocksDbCrc32cExtend(0, data.data(), 1000), data.data() + 1000, 3096),
            whole);
}

}  // namespace
}  // namespace unbd::backend
