// LifeLine between real processes: a holder that lives keeps a standby waiting; one killed with
// SIGKILL wakes it at once, as does one that exits; a fresh Hold replaces the previous file.
#include "frontend/lifeline.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <vector>

#include <gtest/gtest.h>

#include "tests/unit/frontend/state_dir_test.h"

namespace unbd::frontend {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

class LifeLineTest : public StateDirTest {
 protected:
  void TearDown() override {
    for (pid_t p : children_) {
      kill(p, SIGKILL);
      waitpid(p, nullptr, 0);
    }
    StateDirTest::TearDown();
  }

  // A child process that holds device `id`'s lifeline, reports through a pipe, then sleeps (or
  // exits after `exit_after_ms`).
  pid_t StartHolder(int id, int exit_after_ms = -1) {
    int fds[2];
    EXPECT_EQ(pipe(fds), 0);
    pid_t pid = fork();
    if (pid == 0) {
      close(fds[0]);
      std::unique_ptr<LifeLine> l;
      char ok = LifeLine::Hold(id, &l).ok() ? '1' : '0';
      if (write(fds[1], &ok, 1) != 1) _exit(2);
      if (exit_after_ms >= 0) {
        usleep(static_cast<useconds_t>(exit_after_ms) * 1000);
        _exit(0);
      }
      for (;;) pause();
    }
    close(fds[1]);
    char ok = 0;
    EXPECT_EQ(read(fds[0], &ok, 1), 1);
    close(fds[0]);
    EXPECT_EQ(ok, '1');
    children_.push_back(pid);
    return pid;
  }

  std::vector<pid_t> children_;
};

TEST_F(LifeLineTest, AttachWithoutHolderIsNotFound) {
  std::unique_ptr<LifeLine> l;
  EXPECT_EQ(LifeLine::Attach(3, &l).code(), Status::Code::kNotFound);
}

TEST_F(LifeLineTest, LiveHolderKeepsTheStandbyWaitingAndSigkillWakesItAtOnce) {
  pid_t holder = StartHolder(3);
  std::unique_ptr<LifeLine> l;
  ASSERT_TRUE(LifeLine::Attach(3, &l).ok());
  EXPECT_EQ(l->holder(), holder);
  Status s = l->WaitForHolderDeath(milliseconds(300));
  EXPECT_EQ(s.code(), Status::Code::kDeadlineExceeded) << s.ToString();
  const auto t0 = Clock::now();
  kill(holder, SIGKILL);
  s = l->WaitForHolderDeath(milliseconds(10000));
  const auto waited = Clock::now() - t0;
  EXPECT_TRUE(s.ok()) << s.ToString();
  EXPECT_LT(waited, milliseconds(2000));
  // Seen dead once, it stays dead for later waits.
  EXPECT_TRUE(l->WaitForHolderDeath(milliseconds(0)).ok());
}

TEST_F(LifeLineTest, HolderThatExitsWakesTheStandby) {
  StartHolder(4, /*exit_after_ms=*/200);
  std::unique_ptr<LifeLine> l;
  ASSERT_TRUE(LifeLine::Attach(4, &l).ok());
  EXPECT_TRUE(l->WaitForHolderDeath(milliseconds(10000)).ok());
}

TEST_F(LifeLineTest, AHolderDeadBeforeTheStandbyAttachedIsSeenDead) {
  pid_t holder = StartHolder(5);
  kill(holder, SIGKILL);
  waitpid(holder, nullptr, 0);
  children_.clear();
  std::unique_ptr<LifeLine> l;
  ASSERT_TRUE(LifeLine::Attach(5, &l).ok());
  EXPECT_TRUE(l->WaitForHolderDeath(milliseconds(1000)).ok());
}

TEST_F(LifeLineTest, ANewHolderReplacesTheOldFile) {
  pid_t first = StartHolder(6);
  std::unique_ptr<LifeLine> old_view;
  ASSERT_TRUE(LifeLine::Attach(6, &old_view).ok());
  kill(first, SIGKILL);
  ASSERT_TRUE(old_view->WaitForHolderDeath(milliseconds(10000)).ok());
  pid_t second = StartHolder(6);
  std::unique_ptr<LifeLine> l;
  ASSERT_TRUE(LifeLine::Attach(6, &l).ok());
  EXPECT_EQ(l->holder(), second);
  EXPECT_EQ(l->WaitForHolderDeath(milliseconds(200)).code(), Status::Code::kDeadlineExceeded);
}

}  // namespace
}  // namespace unbd::frontend
