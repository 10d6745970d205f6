#include "backend/rocksdb_crc32c.h"

#include <isa-l/crc.h>

#include <algorithm>
#include <climits>

// The linker's names for rocksdb::crc32c::Extend(uint32_t, const char*, size_t) under
// --wrap=_ZN7rocksdb6crc32c6ExtendEjPKcm (backend/CMakeLists.txt).
extern "C" uint32_t __real__ZN7rocksdb6crc32c6ExtendEjPKcm(uint32_t crc, const char* data, size_t n);

extern "C" uint32_t __wrap__ZN7rocksdb6crc32c6ExtendEjPKcm(uint32_t crc, const char* data,
                                                            size_t n) {
  return unbd::backend::RocksDbCrc32cExtend(crc, data, n);
}

namespace unbd::backend {

uint32_t RocksDbCrc32cExtend(uint32_t crc, const char* data, size_t n) {
  // crc32_iscsi neither inverts its seed nor its result; RocksDB's Extend does both.
  uint32_t state = ~crc;
  while (n > 0) {
    const int piece = static_cast<int>(std::min<size_t>(n, INT_MAX));  // ISA-L takes an int
    state = crc32_iscsi(reinterpret_cast<unsigned char*>(const_cast<char*>(data)), piece, state);
    data += piece;
    n -= static_cast<size_t>(piece);
  }
  return ~state;
}

uint32_t RocksDbCrc32cExtendOriginal(uint32_t crc, const char* data, size_t n) {
  return __real__ZN7rocksdb6crc32c6ExtendEjPKcm(crc, data, n);
}

}  // namespace unbd::backend
