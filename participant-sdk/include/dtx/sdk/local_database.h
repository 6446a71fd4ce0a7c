// LocalDatabase and LocalTx: the participant's own database (SQLite or PostgreSQL), where the
// TCC fence lives and where a TCC action makes its business change, in one local transaction.
//
// OpenLocalDatabase("postgresql://user@host/db") opens PostgreSQL (libpq URI or "host=... "
// keyword string after "postgres:"); "sqlite:/path/file.db" or a plain path opens SQLite (WAL
// mode, busy timeout 10 s, write transactions taken with BEGIN IMMEDIATE so that concurrent
// writers queue instead of failing). Connections are pooled; each LocalTx holds one.
//
// SQL uses `?` placeholders on both backends (they are rewritten to $1, $2, ... for
// PostgreSQL). Values are SqlValue: null, 64-bit integer, double or text. Business code that
// wants the native API takes LocalTx::sqlite() / LocalTx::postgres(), the connection inside the
// open transaction.
//
// Thread-safety: LocalDatabase is shared by any number of threads. A LocalTx belongs to one
// thread at a time; destroying it without Commit rolls back.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "dtx/common/status.h"

struct sqlite3;
struct pg_conn;

namespace dtx::sdk {

enum class Dialect { kSqlite, kPostgres };

using SqlValue = std::variant<std::nullptr_t, int64_t, double, std::string>;
using SqlRow = std::vector<SqlValue>;

// The value as an integer (text is parsed; null and failures give `fallback`).
int64_t AsInt(const SqlValue& v, int64_t fallback = 0);

class LocalTx {
 public:
  virtual ~LocalTx() = default;
  // Runs a statement; returns the number of rows it changed.
  virtual Result<int64_t> Exec(std::string_view sql, const std::vector<SqlValue>& params = {}) = 0;
  virtual Result<std::vector<SqlRow>> Query(std::string_view sql, const std::vector<SqlValue>& params = {}) = 0;
  // After Commit or Rollback the LocalTx is finished and its connection back in the pool.
  virtual Status Commit() = 0;
  virtual Status Rollback() = 0;
  virtual Dialect dialect() const = 0;
  // The native connection, inside this transaction (null for the other backend).
  virtual ::sqlite3* sqlite() { return nullptr; }
  virtual ::pg_conn* postgres() { return nullptr; }
};

class LocalDatabase {
 public:
  virtual ~LocalDatabase() = default;
  virtual Result<std::unique_ptr<LocalTx>> Begin() = 0;
  virtual Dialect dialect() const = 0;
  // Where it is, without a password.
  virtual std::string description() const = 0;
};

Result<std::shared_ptr<LocalDatabase>> OpenLocalDatabase(std::string_view uri);
Result<std::shared_ptr<LocalDatabase>> OpenSqliteDatabase(const std::string& path);
Result<std::shared_ptr<LocalDatabase>> OpenPostgresDatabase(const std::string& conninfo);

// Runs `work(LocalTx&) -> Status` in a transaction of `db`: commits when it returns OK, rolls
// back otherwise (and when it throws; the exception goes on).
template <typename Work>
Status InLocalTx(LocalDatabase& db, Work&& work) {
  auto tx = db.Begin();
  if (!tx.ok()) return tx.status();
  Status s = work(**tx);
  if (!s.ok()) {
    (void)(*tx)->Rollback();
    return s;
  }
  return (*tx)->Commit();
}

}  // namespace dtx::sdk
