// Fencing race over the network: writers of epoch 5 keep streaming batches while epoch 6 opens.
// After OpenVolume(6) is acknowledged no epoch-5 write may land: a snapshot read right after the
// acknowledgement must equal the state after all writers have stopped. The server runs with a
// test delay between the epoch check and the apply, so a fence that is not atomic with
// OpenVolume lets in-flight epoch-5 writes land after the open and this test fails.
#include <atomic>
#include <random>
#include <regex>
#include <thread>

#include "tests/integration/backend/server_process.h"

namespace unbd::testing {
namespace {

constexpr uint64_t kVolBytes = 4ull << 20;

TEST(BackendFencing, NoStaleWriteLandsAfterOpenIsAcknowledged) {
  const std::string dir = TestDir("x");
  ServerProcess server(dir, dir + "/db", {"--test-apply-delay-us", "20000"});
  ASSERT_TRUE(server.started()) << server.log();
  backend::AdminClient admin(server.target());
  v1::Volume v;
  ASSERT_TRUE(admin.Create("race", kVolBytes, &v).ok());
  const uint64_t vol = v.id();
  backend::IoClient io(server.target());
  ASSERT_TRUE(io.Open(vol, 5, "old-frontend").ok());

  std::atomic<bool> opened{false}, stop{false};
  std::atomic<int> ok_before{0}, ok_sent_after_open{0}, fenced{0}, other_errors{0};
  std::string bad_message, other_message;
  std::mutex mu;
  std::vector<std::thread> writers;
  for (int t = 0; t < 6; ++t) {
    writers.emplace_back([&, t] {
      StreamSession stream(server.target());
      std::mt19937_64 rng(t);
      uint64_t seq = 0;
      while (!stop) {
        const bool sent_after_open = opened.load();
        v1::IoBatch batch;
        for (uint32_t k = 0; k < 8; ++k) {
          std::string d(4096, static_cast<char>('A' + t));
          ++seq;
          std::memcpy(d.data(), &seq, 8);
          // Distinct blocks per writer so the writers never overlap each other.
          const uint64_t block = (rng() % (kVolBytes / 4096 / 6)) * 6 + t;
          AddRequest(&batch, k, v1::OP_WRITE, vol, 5, block * 4096, 4096, d);
        }
        v1::CompletionBatch done;
        if (!stream.Exchange(batch, &done)) {
          other_errors++;
          const grpc::Status st = stream.Finish();
          std::lock_guard l(mu);
          if (other_message.empty())
            other_message = "stream ended: " + std::to_string(st.error_code()) + " " + st.error_message();
          return;
        }
        for (const auto& c : done.completions()) {
          if (c.code() == 0) {
            (sent_after_open ? ok_sent_after_open : ok_before)++;
          } else if (c.code() == grpc::StatusCode::FAILED_PRECONDITION) {
            fenced++;
            std::lock_guard l(mu);
            if (bad_message.empty() &&
                c.message() != "volume " + std::to_string(vol) + ": epoch 5 is fenced by epoch 6") {
              bad_message = c.message();
            }
          } else {
            other_errors++;
            std::lock_guard l(mu);
            if (other_message.empty()) other_message = std::to_string(c.code()) + " " + c.message();
          }
        }
      }
    });
  }
  while (ok_before < 48) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  ASSERT_TRUE(io.Open(vol, 6, "new-frontend").ok());
  opened = true;
  const std::string after_open = ReadVolume(io, vol, 6, kVolBytes);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  stop = true;
  for (auto& w : writers) w.join();
  const std::string final_state = ReadVolume(io, vol, 6, kVolBytes);

  EXPECT_TRUE(after_open == final_state)
      << "an epoch-5 write landed after OpenVolume(6) was acknowledged";
  EXPECT_EQ(ok_sent_after_open.load(), 0);
  EXPECT_GT(fenced.load(), 0);
  EXPECT_EQ(other_errors.load(), 0) << "first: " << other_message;
  EXPECT_EQ(bad_message, "");
  const std::string metrics = HttpGet(server.metrics_port());
  std::smatch m;
  const std::regex re("unbd_fenced_requests_total\\{volume=\"" + std::to_string(vol) +
                      "\"\\} ([0-9]+)");
  ASSERT_TRUE(std::regex_search(metrics, m, re)) << metrics;
  EXPECT_EQ(std::stoi(m[1]), fenced.load());
}

}  // namespace
}  // namespace unbd::testing
