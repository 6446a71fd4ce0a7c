// Subprocess: a child process for integration tests, with its stdout readable line by line.
// The destructor sends SIGTERM, waits up to 5 s, then SIGKILLs. Not thread-safe.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

namespace dtx::testing {

class Subprocess {
 public:
  // Starts argv[0] (searched in PATH) in `cwd` (empty: ours). stderr is inherited.
  explicit Subprocess(std::vector<std::string> argv, std::string cwd = {});
  ~Subprocess();
  Subprocess(const Subprocess&) = delete;
  Subprocess& operator=(const Subprocess&) = delete;

  // The next stdout line that starts with `prefix`, skipping others; nullopt on EOF or timeout.
  std::optional<std::string> WaitForLine(const std::string& prefix, std::chrono::milliseconds timeout);
  // "LISTENING <port>" as printed by dtx's servers and the node peers; 0 if it never came.
  int WaitForListeningPort(std::chrono::milliseconds timeout = std::chrono::seconds(20));

  // Every complete stdout line not read yet, up to EOF. REQUIRES: the process has exited.
  std::vector<std::string> DrainLines();

  // Sends `signal` and waits for exit; returns the exit status as from waitpid.
  int Stop(int signal);
  pid_t pid() const { return pid_; }

 private:
  pid_t pid_ = -1;
  int out_fd_ = -1;
  std::string buffer_;
};

}  // namespace dtx::testing
