// Helpers for the participant SDK's tests: the example bank as a real process, the
// coordinator's admin API over HTTP, and a PostgreSQL schema of the test's own.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "coordinator_process.h"
#include "dtx/common/status.h"
#include "dtx/sdk/coordinator_client.h"
#include "subprocess.h"

namespace dtx::sdk::testing {

// A fresh temporary folder, removed at the end.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// A test's coordinator client options: these addresses, named `application`, waiting 3 s for a
// first connection.
inline CoordinatorOptions TestClientOptions(std::vector<std::string> addresses, std::string application) {
  CoordinatorOptions o;
  o.addresses = std::move(addresses);
  o.application = std::move(application);
  o.connect_wait = std::chrono::seconds(3);
  return o;
}

// DTX_TEST_PG_URI, or nullopt (the caller skips, or fails when DTX_REQUIRE_POSTGRES is set).
std::optional<std::string> PostgresUri();

// A schema of its own in the DTX_TEST_PG_URI server, dropped at the end; uri() selects it.
class PgSchema {
 public:
  explicit PgSchema(const std::string& base_uri);
  ~PgSchema();
  const std::string& uri() const { return uri_; }
  const std::string& name() const { return name_; }

 private:
  std::string base_;
  std::string name_;
  std::string uri_;
};

// dtx-tcc-bank as a child process. Restart() keeps its database and port.
class BankProcess {
 public:
  BankProcess(std::string name, std::string db, std::string coordinator, std::vector<std::string> extra = {});
  void Start(std::vector<std::string> extra);  // (re)starts with these fault flags
  void Kill();                                  // SIGKILL
  void Restart(std::vector<std::string> extra = {}) {
    Kill();
    Start(std::move(extra));
  }
  // Waits for a stdout line starting with `prefix` (e.g. "HANG confirm").
  std::optional<std::string> WaitForLine(const std::string& prefix, std::chrono::milliseconds limit);
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  const std::string& db() const { return db_; }

 private:
  std::string name_, db_, coordinator_;
  int port_ = 0;
  std::unique_ptr<::dtx::testing::Subprocess> process_;
};

// GET http://127.0.0.1:<port><path>; the body, or an error.
Result<std::string> HttpGet(int port, const std::string& path);
// The transactions the coordinator's admin API lists as unfinished (or awaiting an operator).
Result<std::vector<std::string>> UnfinishedXids(int admin_port);
// Waits until the admin API lists none; false after `limit`.
bool WaitNoneUnfinished(int admin_port, std::chrono::milliseconds limit = std::chrono::seconds(20));
// A counter from /metrics (-1 when absent).
int64_t Metric(int admin_port, const std::string& name);

}  // namespace dtx::sdk::testing
