#include "replication/quorum_open.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <memory>

#include "replication/replica_rpc.h"

namespace unbd::replication {
namespace {

std::string Describe(const std::vector<ReplicaAddr>& replicas,
                     const std::vector<ReplicaOpenResult>& results) {
  std::string out;
  for (size_t i = 0; i < replicas.size(); ++i) {
    if (!out.empty()) out += "; ";
    out += replicas[i].target + ": " +
           (results[i].status.ok() ? "accepted" : results[i].status.ToString());
  }
  return out;
}

}  // namespace

uint32_t BallotTag(const std::string& client_id) {
  // FNV-1a folded to the tag width; 0 is reserved for epochs chosen without ballots.
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : client_id) {
    h ^= c;
    h *= 1099511628211ull;
  }
  uint32_t tag = static_cast<uint32_t>((h ^ (h >> 32)) & ((1u << kBallotTagBits) - 1));
  return tag == 0 ? 1 : tag;
}

Status QuorumOpen(const std::vector<ReplicaAddr>& replicas, const QuorumOpenOptions& options,
                  QuorumOpenResult* out) {
  *out = QuorumOpenResult{};
  if (replicas.empty()) return Status::InvalidArgument("quorum open: no replicas");
  if (options.client_id.empty()) return Status::InvalidArgument("quorum open: empty client id");
  const size_t n = replicas.size();
  const size_t need = Majority(n);
  out->replicas.resize(n);
  std::vector<std::unique_ptr<ReplicaRpc>> rpcs;
  for (const auto& r : replicas) {
    rpcs.push_back(std::make_unique<ReplicaRpc>(r.target, options.rpc_timeout));
  }

  // Phase 1: learn the highest epoch a majority has promised. Safety does not depend on it (each
  // replica refuses a lower epoch by itself); it makes the first proposal likely to win. A caller
  // that has just learned it (its lookup of the volume) saves the round.
  const auto learn_epoch = [&](uint64_t* epoch) {
    ForEachParallel(n, [&](size_t i) {
      v1::VolumeRef ref;
      ref.set_id(replicas[i].volume_id);
      v1::Volume vol;
      Status s = rpcs[i]->RetryUnlessRefused([&] { return rpcs[i]->Stat(ref, &vol); });
      out->replicas[i].status = s;
      if (s.ok()) out->replicas[i].seen_epoch = vol.epoch();
    });
    size_t answered = 0;
    uint64_t max_epoch = 0;
    for (const auto& r : out->replicas) {
      if (!r.status.ok()) continue;
      ++answered;
      max_epoch = std::max(max_epoch, r.seen_epoch);
    }
    if (answered < need) {
      return Status::Unavailable("quorum open: only " + std::to_string(answered) + " of " +
                                 std::to_string(n) + " replicas answered (need " +
                                 std::to_string(need) + "): " + Describe(replicas, out->replicas));
    }
    *epoch = MakeBallot(BallotRound(max_epoch) + 1, BallotTag(options.client_id));
    return Status::Ok();
  };
  // Phase 2: ask every replica to promise `epoch`. Replicas outside the majority are asked too:
  // each one that promises is one fewer to bring back later. A promise is idempotent for the same
  // client id, so the retry is safe. Returns how many refused it as fenced.
  const auto promise = [&](uint64_t epoch) {
    ForEachParallel(n, [&](size_t i) {
      ReplicaOpenResult& r = out->replicas[i];
      r.status = rpcs[i]->RetryUnlessRefused([&] {
        return rpcs[i]->Open(replicas[i].volume_id, epoch, options.client_id, &r.response);
      });
    });
    size_t fenced = 0;
    out->accepted = 0;
    for (const auto& r : out->replicas) {
      out->accepted += r.status.ok();
      fenced += r.status.code() == Status::Code::kFailedPrecondition;
    }
    return fenced;
  };

  uint64_t epoch = options.epoch;
  const bool guess = epoch == 0 && options.known_epoch != 0;
  if (guess) epoch = MakeBallot(BallotRound(options.known_epoch) + 1, BallotTag(options.client_id));
  size_t fenced = epoch != 0 ? promise(epoch) : 0;
  // Another opener moved the epoch on since the caller's lookup: both phases, as without it.
  const bool stale_guess = guess && out->accepted < need && fenced > 0;
  if (epoch == 0 || stale_guess) {
    Status s = learn_epoch(&epoch);
    if (!s.ok()) return s;
    fenced = promise(epoch);
  }
  out->epoch = epoch;

  std::vector<uint64_t> sizes;
  for (const auto& r : out->replicas) {
    if (r.status.ok()) sizes.push_back(r.response.size_bytes());
  }
  const std::string ctx = "volume open with epoch " + std::to_string(epoch) + " (round " +
                          std::to_string(BallotRound(epoch)) + ") by \"" + options.client_id +
                          "\": accepted by " + std::to_string(out->accepted) + " of " +
                          std::to_string(n) + " replicas (need " + std::to_string(need) + ")";
  if (out->accepted < need) {
    const std::string msg = ctx + ": " + Describe(replicas, out->replicas);
    spdlog::warn("{}", msg);
    // Fenced if a competing epoch alone stops us; unavailable if missing replicas do.
    if (fenced > 0 && out->accepted + (n - out->accepted - fenced) < need) {
      return Status::FailedPrecondition(msg);
    }
    return Status::Unavailable(msg);
  }
  // Copies may differ in size: an owner commits a resize in the metadata before it grows them,
  // and an out copy grows when it returns. The owner takes the metadata's size and grows the
  // smaller copies (ReplicatedVolume::Open); this is only the largest one seen.
  out->size_bytes = *std::max_element(sizes.begin(), sizes.end());
  spdlog::info("{}", ctx);
  return Status::Ok();
}

}  // namespace unbd::replication
