// region_locks_bench: what a write's region lock costs the owner (LockShared + UnlockShared,
// replication/region_locks.h) on 1 and 2 threads, each thread playing a queue that writes 4 KiB
// at random offsets of a 1 GiB volume (1024 regions of 1 MiB), and with every write on one region
// (the worst case: each pair writes the same word). No servers and no copier: the writes' side
// alone, which bench/replication_bench's end-to-end figures cannot separate. Rounds alternate the
// cases (the machine is shared); prints ns per pair per thread, pairs/s of all threads and the
// cores the threads got, medians last.
//
// The figures from before (one mutex over a std::map): build this file against main's
// region_locks.h, constructing RegionLocks without the table (docs/replication.md, "Measured").
#include <CLI/CLI.hpp>
#include <cstdint>
#include <cstdio>
#include <iterator>
#include <random>
#include <vector>

#include "bench/measure.h"
#include "replication/region_locks.h"
#include "replication/region_table.h"

namespace {

namespace repl = unbd::replication;

struct Case {
  const char* name;
  int threads;
  uint64_t regions;  // writes go to random regions among these
};

unbd::bench::Rate Run(const Case& c, double seconds) {
  repl::RegionTable table;
  repl::RegionLocks locks(&table);
  return unbd::bench::OpsPerSecond(c.threads, seconds, [&](int thread) {
    // The random regions up front: the loop measures the lock, not the generator.
    std::mt19937_64 rng(thread + 1);
    std::vector<uint64_t> order(1 << 16);
    for (auto& r : order) r = rng() % c.regions;
    return [&locks, order = std::move(order)](uint64_t n) {
      const uint64_t r = order[n & (order.size() - 1)];
      locks.LockShared(r, r);
      locks.UnlockShared(r, r);
    };
  });
}

}  // namespace

int main(int argc, char** argv) {
  double seconds = 1;
  int rounds = 5;
  CLI::App app{"region_locks_bench: LockShared + UnlockShared per write, 1 and 2 threads"};
  app.add_option("--seconds", seconds, "per run")->capture_default_str();
  app.add_option("--rounds", rounds, "rounds of every case")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  const Case cases[] = {{"1 thread, 1024 regions", 1, 1024},
                        {"2 threads, 1024 regions", 2, 1024},
                        {"1 thread, 1 region", 1, 1},
                        {"2 threads, 1 region", 2, 1}};
  // cores: CPU time over wall time; below the threads' count, they shared a core (a busy machine).
  std::printf("%-6s %-24s %14s %14s %6s\n", "round", "case", "ns/pair/thread", "Mpairs/s",
              "cores");
  std::vector<double> rates[std::size(cases)];
  for (int round = 1; round <= rounds; ++round) {
    for (size_t k = 0; k < std::size(cases); ++k) {
      const unbd::bench::Rate rate = Run(cases[k], seconds);
      rates[k].push_back(rate.per_second);
      std::printf("%-6d %-24s %14.1f %14.2f %6.2f\n", round, cases[k].name,
                  1e9 * cases[k].threads / rate.per_second, rate.per_second / 1e6, rate.cores);
      std::fflush(stdout);
    }
  }
  for (size_t k = 0; k < std::size(cases); ++k) {
    const double rate = unbd::bench::Median(rates[k]);
    std::printf("median %-24s %14.1f %14.2f\n", cases[k].name, 1e9 * cases[k].threads / rate,
                rate / 1e6);
  }
  return 0;
}
