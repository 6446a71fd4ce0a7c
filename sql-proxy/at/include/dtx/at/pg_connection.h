// PgConnection: a blocking libpq connection that runs the engine's AtQuery values. Phase 2 runs
// on it, and tests drive AtBranch with it the way the proxy session will on its backend socket.
//
// Errors are SqlError statuses carrying the server's SQLSTATE (08006 when the connection is
// lost; ok() is then false and the owner opens a new one).
//
// Thread-safety: one thread at a time. Owns its PGconn.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "dtx/at/sql_state.h"

struct pg_conn;

namespace dtx::at {

class PgConnection {
 public:
  static Result<std::unique_ptr<PgConnection>> Open(const std::string& conninfo);
  ~PgConnection();
  PgConnection(const PgConnection&) = delete;
  PgConnection& operator=(const PgConnection&) = delete;

  // Runs one statement with the query's parameters; results in text format.
  Result<QueryResult> Run(const AtQuery& query);
  Result<QueryResult> Run(std::string_view sql, std::vector<std::optional<std::string>> params = {});
  bool ok() const;

 private:
  explicit PgConnection(pg_conn* conn) : conn_(conn) {}
  pg_conn* conn_;
};

}  // namespace dtx::at
