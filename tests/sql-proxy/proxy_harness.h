// Helpers for the dtx-sql-proxy tests: the proxy as a real process, PostgreSQL's own programs
// (psql, pgbench, initdb, pg_ctl) run to completion, an extra PostgreSQL server of a test's own
// (for password authentication and outages), and a raw protocol client for malformed input.
// Not thread-safe; one test thread.
#pragma once

#include <gtest/gtest.h>

#include <csignal>
#include <cstdlib>
#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "subprocess.h"

namespace dtx::testing {

// Skips the test when no server was started for it (fails it under DTX_REQUIRE_POSTGRES).
#define DTX_NEED_POSTGRES()                                                              \
  do {                                                                                   \
    if (!SharedPostgres()) {                                                             \
      if (std::getenv("DTX_REQUIRE_POSTGRES")) FAIL() << "DTX_TEST_PG_URI is not set";   \
      GTEST_SKIP() << "DTX_TEST_PG_URI is not set: run through scripts/with-postgres.sh"; \
    }                                                                                    \
  } while (0)

// The server scripts/with-postgres.sh started (DTX_TEST_PG_URI), or nullopt.
struct PgTarget {
  std::string host = "127.0.0.1";
  int port = 0;
  std::string user = "postgres";
  std::string database = "postgres";
  std::string socket_dir;  // DTX_TEST_PG_SOCKET_DIR: the folder of its Unix-domain socket, if known
};
std::optional<PgTarget> SharedPostgres();
// DTX_TEST_PG_BIN/<program>, else /usr/lib/postgresql/15/bin/<program>.
std::string PgProgram(const std::string& program);

struct RunResult {
  int exit_code = -1;  // -1: killed or timed out
  std::string output;  // stdout and stderr together
};
// Runs argv to completion with `input` on stdin and `env` added to the environment.
RunResult RunProgram(const std::vector<std::string>& argv, const std::string& input = "",
              const std::map<std::string, std::string>& env = {},
              std::chrono::seconds timeout = std::chrono::seconds(120));

// psql -X -A -t -q against host:port, with ON_ERROR_STOP off, the script on stdin.
RunResult Psql(int port, const std::string& user, const std::string& database, const std::string& script,
               const std::map<std::string, std::string>& env = {});

// A dtx-sql-proxy process on ephemeral ports.
class ProxyProcess {
 public:
  explicit ProxyProcess(std::vector<std::string> args);
  int port() const { return port_; }
  int admin_port() const { return admin_port_; }
  // The value of one sample of /metrics ("name" or "name{labels}"); -1 if absent.
  double Metric(const std::string& sample) const;
  // SIGTERM; returns the exit status as from waitpid.
  int Terminate() { return process_->Stop(SIGTERM); }
  Subprocess& process() { return *process_; }

 private:
  std::unique_ptr<Subprocess> process_;
  int port_ = 0;
  int admin_port_ = 0;
};

// GET path from 127.0.0.1:port; returns status line + body, or "" if no answer.
std::string HttpGet(int port, const std::string& path);

// The OS user a test's own PostgreSQL server runs as when it is not us (DTX_TEST_PG_USER, else
// postgres when we are root), or "": files the server reads (a TLS key) must be its own.
std::string PgServerUser();

// A PostgreSQL server of the test's own, in a temp folder, on a free port, started with the given
// pg_hba.conf lines (local connections are trusted for setup) and postgresql.conf lines (after the
// harness's own, so they win). Run as DTX_TEST_PG_USER when root.
class OwnPostgres {
 public:
  explicit OwnPostgres(std::vector<std::string> hba_lines, std::vector<std::string> conf_lines = {});
  ~OwnPostgres();
  bool ok() const { return ok_; }
  const std::string& error() const { return error_; }
  int port() const { return port_; }
  // Runs SQL as the superuser over the unix socket.
  RunResult Sql(const std::string& script);
  bool Stop();
  bool Start();

 private:
  RunResult AsServerUser(std::vector<std::string> argv, const std::string& input = "");
  std::string dir_, data_, user_;
  int port_ = 0;
  bool ok_ = false;
  std::string error_;
};

// A raw frontend connection, for what no client library would send.
class RawClient {
 public:
  explicit RawClient(int port);
  ~RawClient();
  bool connected() const { return fd_ >= 0; }
  bool Send(const std::string& bytes);
  // Reads until the peer closes or `timeout` passes; returns what came.
  std::string ReadUntilClose(std::chrono::milliseconds timeout = std::chrono::seconds(10));
  // Reads exactly n bytes (fewer if the peer closes or 10 s pass).
  std::string ReadBytes(size_t n);
  // Reads whole messages until one of type `type` has arrived; returns all bytes read.
  std::optional<std::string> ReadUntilMessage(char type, std::chrono::milliseconds timeout = std::chrono::seconds(10));
  void Close();

 private:
  int fd_ = -1;
  std::string pending_;
};

// The 'M' fields of every ErrorResponse in a byte stream of backend messages.
std::vector<std::string> ErrorMessages(const std::string& stream);

}  // namespace dtx::testing
