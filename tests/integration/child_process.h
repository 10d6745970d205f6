// ChildProcess: a program an integration test runs (fork + execv), its stdout and stderr appended
// to a log file, killed with SIGKILL when the object goes away. The server and CSI fixtures build
// on it.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace unbd::testing {

inline std::string ReadFile(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

class ChildProcess {
 public:
  // argv[0] is the program's path.
  ChildProcess(std::vector<std::string> argv, std::string log) : log_(std::move(log)) {
    pid_ = fork();
    if (pid_ == 0) {
      int fd = open(log_.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      dup2(fd, 1);
      dup2(fd, 2);
      std::vector<char*> args;
      for (auto& a : argv) args.push_back(a.data());
      args.push_back(nullptr);
      execv(args[0], args.data());
      _exit(127);
    }
  }
  ~ChildProcess() { Kill(SIGKILL); }
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  // Not reaped yet (alive() or Kill() saw no exit so far).
  bool running() const { return pid_ > 0; }
  // Still running (reaps it and records the exit code if it has ended).
  bool alive() {
    if (pid_ <= 0) return false;
    int st = 0;
    if (waitpid(pid_, &st, WNOHANG) != pid_) return true;
    Reaped(st);
    return false;
  }
  // The exit code once it has ended (128 + signal if killed), else -1.
  int exit_code() const { return exit_code_; }
  // Sends `sig` without waiting (SIGSTOP / SIGCONT: a process that stops answering for a while).
  void Signal(int sig) {
    if (pid_ > 0) kill(pid_, sig);
  }
  // Sends `sig`, waits for the exit and returns its code.
  int Kill(int sig) {
    if (pid_ <= 0) return exit_code_;
    kill(pid_, sig);
    int st = 0;
    waitpid(pid_, &st, 0);
    Reaped(st);
    return exit_code_;
  }
  std::string log() const { return ReadFile(log_); }

 private:
  void Reaped(int st) {
    pid_ = -1;
    exit_code_ = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  }

  std::string log_;
  pid_t pid_ = -1;
  int exit_code_ = -1;
};

}  // namespace unbd::testing
