// Helpers for the end-to-end tests of AT mode: a real dtx-coordinator, a real dtx-sql-proxy
// process in AT mode in front of the DTX_TEST_PG_URI server, a schema of the test's own (the
// proxy's sessions and its phase 2 both work in it, undo log included), and a libpq client that
// reports SQLSTATEs. Not thread-safe; one test thread (a test may open several clients).
#pragma once

#include <gtest/gtest.h>

#include <libpq-fe.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "coordinator_process.h"
#include "dtx/at/pg_connection.h"
#include "proxy_harness.h"
#include "sdk_harness.h"

namespace dtx::at::testing {

struct Answer {
  bool ok = false;
  std::string sqlstate;  // of the error
  std::string error;     // its message
  std::string tag;       // command tag of the last result
  std::vector<std::vector<std::optional<std::string>>> rows;
  // The first value of the first row ("" when there is none or it is NULL).
  std::string Value() const { return rows.empty() || rows[0].empty() || !rows[0][0] ? "" : *rows[0][0]; }
};

// A libpq connection (through the proxy, or straight to PostgreSQL).
class Client {
 public:
  explicit Client(const std::string& conninfo);
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;
  bool ok() const;
  // Simple protocol.
  Answer Exec(const std::string& sql);
  // Extended protocol, text parameters (nullopt: NULL), unnamed statement.
  Answer Params(const std::string& sql, const std::vector<std::optional<std::string>>& params);
  // Extended protocol with a named statement: Prepare once, then ExecPrepared.
  Answer Prepare(const std::string& name, const std::string& sql, int params);
  Answer ExecPrepared(const std::string& name, const std::vector<std::optional<std::string>>& params);
  // libpq pipeline mode: each statement as Parse/Bind/Describe/Execute (no parameters), one
  // Sync at the end; an answer per statement (after an error: sqlstate "pipeline aborted").
  std::vector<Answer> Pipeline(const std::vector<std::string>& statements);
  // Pipeline mode without a Sync: sends `sql` (no parameters) and a Flush, and waits up to
  // `limit` for its answer; then syncs and leaves pipeline mode. ok false with sqlstate "timeout"
  // when the answer did not come before the Sync.
  Answer FlushedStatement(const std::string& sql, std::chrono::milliseconds limit);
  // COPY ... FROM STDIN (`sql`) with `data` as its text, ended by CopyDone (or by CopyFail with
  // `fail` as its message), then the command's own result (or the error that ended it).
  Answer CopyIn(const std::string& sql, const std::string& data, const char* fail = nullptr);
  // COPY ... TO STDOUT (`sql`): all its data as the one value of the answer, or its error.
  Answer CopyOut(const std::string& sql);
  // The legacy FunctionCall message (libpq PQfn) of function `oid` with one text argument and an
  // int4 result: ok with the result as its value, or the error.
  Answer FunctionCall(unsigned oid, const std::string& text_arg);
  // Transaction status from libpq: 'I', 'T', 'E', or '?'.
  char TxStatus() const;
  // Notices (and warnings) received so far.
  int notices() const { return notices_; }

 private:
  Answer Take(PGresult* r);
  PGconn* conn_ = nullptr;
  int notices_ = 0;
};

class ProxyAtTest : public ::testing::Test {
 protected:
  void SetUp() override;
  // (Re)starts the proxy with the default AT flags plus `extra`.
  void StartProxy(std::vector<std::string> extra = {}, bool with_coordinator = true);
  // A session through the proxy in the test's schema.
  std::unique_ptr<Client> Connect();
  // Straight to PostgreSQL, in the test's schema.
  std::unique_ptr<Client> Direct();
  // Runs SQL straight on PostgreSQL; fails the test on error.
  Answer Sql(const std::string& sql);
  // Every row of `table` as row_to_json text, sorted.
  std::vector<std::string> Snapshot(const std::string& table);
  int64_t UndoRows();
  // Waits until the undo log is empty (commit cleanup and rollback are asynchronous).
  bool WaitUndoEmpty(std::chrono::milliseconds limit = std::chrono::seconds(10));
  // The coordinator's view of one transaction (admin API JSON), "" if none.
  std::string AdminTransaction(const std::string& xid);
  // Waits until the admin API shows the transaction in `status`.
  bool WaitStatus(const std::string& xid, const std::string& status,
                  std::chrono::milliseconds limit = std::chrono::seconds(10));

  ::dtx::testing::PgTarget pg_;
  std::unique_ptr<sdk::testing::PgSchema> schema_;
  std::unique_ptr<::dtx::testing::CoordinatorProcess> coordinator_;
  std::unique_ptr<::dtx::testing::ProxyProcess> proxy_;
  std::unique_ptr<Client> direct_;
};

}  // namespace dtx::at::testing
