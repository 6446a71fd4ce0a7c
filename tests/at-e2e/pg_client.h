// PgClient: a small blocking libpq client for the AT end-to-end tests, speaking the simple query
// protocol (PQexec) or the extended one (PQexecParams), and reporting each answer's SQLSTATE.
// Thread-safety: one thread at a time per client; each worker of a test owns its own.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

struct pg_conn;

namespace dtx::at::e2e {

struct Answer {
  bool ok = false;
  std::string sqlstate;  // of the error ("" when ok; "08006" when the connection is gone)
  std::string error;     // its primary message
  std::string tag;       // command tag ("UPDATE 1")
  std::vector<std::vector<std::optional<std::string>>> rows;
  // The first value of the first row ("" when there is none or it is NULL).
  std::string Value() const { return rows.empty() || rows[0].empty() || !rows[0][0] ? "" : *rows[0][0]; }
};

class PgClient {
 public:
  // nullptr when the connection cannot be made (`error` says why).
  static std::unique_ptr<PgClient> Connect(const std::string& conninfo, std::string* error = nullptr);
  ~PgClient();
  PgClient(const PgClient&) = delete;
  PgClient& operator=(const PgClient&) = delete;

  Answer Exec(const std::string& sql);  // simple protocol; one statement
  Answer Params(const std::string& sql, const std::vector<std::optional<std::string>>& params);  // extended
  bool alive() const;

 private:
  explicit PgClient(pg_conn* conn) : conn_(conn) {}
  pg_conn* conn_;
};

}  // namespace dtx::at::e2e
