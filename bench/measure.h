// What the benchmarks share: the median of a few runs (the machine is noisy), and the rate of an
// operation run by several threads at once.
#pragma once

#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <thread>
#include <vector>

namespace unbd::bench {

inline double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

// The CPU time this process has used, user and system, in seconds.
inline double SelfCpuSeconds() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec +
         (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

struct Rate {
  double per_second = 0;  // operations of all threads together
  // CPU time over wall time: below the thread count when the threads did not all get a core
  // (a shared machine), so their rate says less about contention.
  double cores = 0;
};

// `threads` threads running an operation together for `seconds`. make_op(thread) runs on its
// thread before the clock starts (the setup is not measured) and returns the operation, called
// as op(n) with n = 0, 1, 2, ...
template <typename MakeOp>
Rate OpsPerSecond(int threads, double seconds, MakeOp make_op) {
  std::atomic<int> ready{0};
  std::atomic<bool> go{false}, stop{false};
  std::vector<uint64_t> ops(threads);
  std::vector<std::thread> running;
  for (int t = 0; t < threads; ++t) {
    running.emplace_back([&, t] {
      auto op = make_op(t);
      ready++;
      while (!go.load(std::memory_order_acquire)) {
      }
      uint64_t n = 0;
      while (!stop.load(std::memory_order_relaxed)) {
        for (int k = 0; k < 1024; ++k, ++n) op(n);  // the flag's load out of the measurement
      }
      ops[t] = n;
    });
  }
  while (ready < threads) std::this_thread::yield();
  const auto t0 = std::chrono::steady_clock::now();
  const double cpu0 = SelfCpuSeconds();
  go.store(true, std::memory_order_release);
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  stop = true;
  for (auto& th : running) th.join();
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  uint64_t total = 0;
  for (uint64_t n : ops) total += n;
  return {total / secs, (SelfCpuSeconds() - cpu0) / secs};
}

}  // namespace unbd::bench
