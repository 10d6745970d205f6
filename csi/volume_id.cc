#include "csi/volume_id.h"

#include <algorithm>

namespace unbd::csi {

namespace {

bool ValidName(const std::string& n) {
  if (n.empty() || n.size() > 128) return false;
  return std::all_of(n.begin(), n.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-';
  });
}

bool ValidServer(const std::string& t) {
  const size_t colon = t.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == t.size()) return false;
  const std::string port = t.substr(colon + 1);
  if (port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos) return false;
  const int p = std::stoi(port);
  return p >= 1 && p <= 65535 && t.find_first_of("/@ ") == std::string::npos;
}

}  // namespace

std::string VolumeId::ToString() const {
  std::string out = name + "@";
  for (size_t i = 0; i < servers.size(); ++i) out += (i ? "," : "") + servers[i];
  return out;
}

Status ParseVolumeId(const std::string& text, VolumeId* out) {
  const auto bad = [&](const std::string& why) {
    return Status::NotFound("volume " + text + " does not exist: " + why +
                            " (unbd-csi volume ids are NAME@HOST:PORT[,HOST:PORT...])");
  };
  const size_t at = text.find('@');
  if (at == std::string::npos) return bad("no '@'");
  VolumeId v;
  v.name = text.substr(0, at);
  if (!ValidName(v.name)) return bad("\"" + v.name + "\" is not a volume name");
  size_t start = at + 1;
  for (;;) {
    const size_t comma = text.find(',', start);
    std::string s = text.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    if (!ValidServer(s)) return bad("\"" + s + "\" is not HOST:PORT");
    if (std::find(v.servers.begin(), v.servers.end(), s) != v.servers.end())
      return bad(s + " listed twice");
    v.servers.push_back(s);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  if (v.servers.size() > 5) return bad("more than 5 replicas");
  *out = std::move(v);
  return Status::Ok();
}

}  // namespace unbd::csi
