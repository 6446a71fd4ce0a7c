// A dtx-coordinator process for integration tests: its own data folder, ephemeral ports.
#pragma once

#include <csignal>
#include <unistd.h>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "subprocess.h"

namespace dtx::testing {

class CoordinatorProcess {
 public:
  // `extra` flags go after the defaults (fast retries). The data folder survives Restart().
  explicit CoordinatorProcess(std::vector<std::string> extra = {}, std::string data_dir = "") : extra_(std::move(extra)) {
    static int counter = 0;
    data_dir_ = data_dir.empty() ? (std::filesystem::temp_directory_path() /
                                    ("dtx-tc-" + std::to_string(getpid()) + "-" + std::to_string(counter++)))
                                       .string()
                                 : data_dir;
    owns_dir_ = data_dir.empty();
    Start();
  }
  ~CoordinatorProcess() {
    process_.reset();
    if (owns_dir_) std::filesystem::remove_all(data_dir_);
  }

  void Start() {
    std::vector<std::string> argv = {DTX_COORDINATOR_BIN, "--port", std::to_string(port_), "--admin", "127.0.0.1:0",
                                     "--data-dir", data_dir_, "--retry-min-ms", "50", "--retry-max-ms", "200",
                                     "--branch-call-timeout-ms", "1000", "--log-level", "warn"};
    argv.insert(argv.end(), extra_.begin(), extra_.end());
    process_ = std::make_unique<Subprocess>(argv);
    port_ = process_->WaitForListeningPort();
    auto admin = process_->WaitForLine("ADMIN ", std::chrono::seconds(10));
    admin_port_ = admin ? std::stoi(admin->substr(6)) : 0;
  }
  // SIGKILL, then start again on the same port and data.
  void Kill() { process_->Stop(SIGKILL); }
  void Restart() {
    Kill();
    Start();
  }
  int Terminate() { return process_->Stop(SIGTERM); }

  int port() const { return port_; }
  int admin_port() const { return admin_port_; }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  const std::string& data_dir() const { return data_dir_; }

 private:
  std::vector<std::string> extra_;
  std::string data_dir_;
  bool owns_dir_ = true;
  int port_ = 0;
  int admin_port_ = 0;
  std::unique_ptr<Subprocess> process_;
};

}  // namespace dtx::testing
