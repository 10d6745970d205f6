// How the command line shows volumes, shared by `unbd volume ...` and `unbd status`: sizes in
// binary units, a backend volume record and a replicated volume's status (replication/
// volume_status.h) as JSON, health names.
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "replication/volume_status.h"
#include "unbd/v1/volume.pb.h"

namespace unbd::cli {

// 1536 -> "1.5 KiB".
std::string HumanSize(uint64_t bytes);
const char* HealthName(replication::VolumeHealth h);
// One server's volume record: id, name, size_bytes, block_size, epoch, client_id, ...
nlohmann::json VolumeJson(const v1::Volume& v);
// name, health, size, epoch, owner, metadata versions and every replica (address, reachable or
// error, state, epoch, dirty regions, resync progress).
nlohmann::json VolumeStatusJson(const replication::VolumeStatusView& v);

}  // namespace unbd::cli
