// Key layout of the block store. Data keys are 16 bytes, big-endian volume id then block index,
// so one volume's blocks are one contiguous, block-ordered key range (range deletes and scans are
// a single [begin, end) interval). Metadata lives in its own column family under text prefixes.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace unbd::backend {

inline constexpr size_t kDataKeyBytes = 16;

inline void PutBigEndian64(char* out, uint64_t v) {
  for (int i = 7; i >= 0; --i) {
    out[i] = static_cast<char>(v & 0xff);
    v >>= 8;
  }
}

inline uint64_t GetBigEndian64(const char* in) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | static_cast<unsigned char>(in[i]);
  return v;
}

// Writes the 16-byte key of (volume, block) into out[0..16).
inline void EncodeDataKey(uint64_t volume_id, uint64_t block, char* out) {
  PutBigEndian64(out, volume_id);
  PutBigEndian64(out + 8, block);
}

inline std::string DataKey(uint64_t volume_id, uint64_t block) {
  std::string key(kDataKeyBytes, '\0');
  EncodeDataKey(volume_id, block, key.data());
  return key;
}

// Returns false if `key` is not a data key.
inline bool DecodeDataKey(std::string_view key, uint64_t* volume_id, uint64_t* block) {
  if (key.size() != kDataKeyBytes) return false;
  *volume_id = GetBigEndian64(key.data());
  *block = GetBigEndian64(key.data() + 8);
  return true;
}

// Metadata column family keys.
inline std::string VolumeMetaKey(uint64_t volume_id) {
  std::string key = "vol/";
  key.resize(4 + 8);
  PutBigEndian64(key.data() + 4, volume_id);
  return key;
}
inline constexpr std::string_view kVolumeMetaPrefix = "vol/";
inline std::string VolumeNameKey(std::string_view name) { return "name/" + std::string(name); }
inline constexpr std::string_view kNextVolumeIdKey = "next_volume_id";
// The server generation (Store::server_generation) and the marker a clean close leaves behind.
inline constexpr std::string_view kServerGenerationKey = "server_generation";
inline constexpr std::string_view kCleanCloseKey = "clean_close";

}  // namespace unbd::backend
