// VolumeId: what a CSI volume_id names. unbd-csi's ids are "NAME@HOST:PORT[,HOST:PORT...]": the
// unbd volume name and the servers holding it (one: a plain remote volume; several: the replicas
// of a replicated volume, in replica order), so the Node service needs no lookup and no context.
#pragma once

#include <string>
#include <vector>

#include "common/status.h"

namespace unbd::csi {

struct VolumeId {
  std::string name;
  std::vector<std::string> servers;

  std::string ToString() const;
};

// NotFound for anything that is not an unbd-csi id: no such volume can exist.
Status ParseVolumeId(const std::string& text, VolumeId* out);

}  // namespace unbd::csi
