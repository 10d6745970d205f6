// Hardware CRC32C for RocksDB's WAL. Debian 12's librocksdb is built portable, with only the
// table-driven CRC32C: a quarter of unbd-server's CPU on random writes went into checksumming WAL
// records that way. The store's library links with `--wrap` on rocksdb::crc32c::Extend, so every
// call from RocksDB lands in RocksDbCrc32cExtend, which computes the same function with ISA-L's
// crc32_iscsi (CRC32C with SSE4.2/PCLMUL, chosen at run time). The WAL format is unchanged: a WAL
// written either way reads back either way.
#pragma once

#include <cstddef>
#include <cstdint>

namespace unbd::backend {

// The CRC32C of `data` continued from `crc` (rocksdb::crc32c::Extend's contract).
uint32_t RocksDbCrc32cExtend(uint32_t crc, const char* data, size_t n);
// RocksDB's own implementation, for the test that compares the two.
uint32_t RocksDbCrc32cExtendOriginal(uint32_t crc, const char* data, size_t n);

}  // namespace unbd::backend
