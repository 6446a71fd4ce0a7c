// The SQLite LocalDatabase: a pool of connections to one file, each with a statement cache.
#include <sqlite3.h>

#include <mutex>
#include <unordered_map>

#include "dtx/sdk/local_database.h"

namespace dtx::sdk {

namespace {

struct Conn {
  sqlite3* db = nullptr;
  std::unordered_map<std::string, sqlite3_stmt*> statements;
  ~Conn() {
    for (auto& [_, st] : statements) sqlite3_finalize(st);
    sqlite3_close_v2(db);
  }
};

Status Error(sqlite3* db, std::string_view what) {
  return IOError(std::string(what) + ": " + sqlite3_errmsg(db));
}

class SqliteDatabase;

class SqliteTx final : public LocalTx {
 public:
  SqliteTx(std::shared_ptr<SqliteDatabase> owner, std::unique_ptr<Conn> conn)
      : owner_(std::move(owner)), conn_(std::move(conn)) {}
  ~SqliteTx() override {
    if (conn_) (void)Rollback();
  }

  Result<int64_t> Exec(std::string_view sql, const std::vector<SqlValue>& params) override {
    auto st = Prepare(sql, params);
    if (!st.ok()) return st.status();
    int rc;
    while ((rc = sqlite3_step(*st)) == SQLITE_ROW) {
    }
    sqlite3_reset(*st);
    if (rc != SQLITE_DONE) return Error(conn_->db, "sqlite: " + std::string(sql.substr(0, 60)));
    return static_cast<int64_t>(sqlite3_changes(conn_->db));
  }

  Result<std::vector<SqlRow>> Query(std::string_view sql, const std::vector<SqlValue>& params) override {
    auto st = Prepare(sql, params);
    if (!st.ok()) return st.status();
    std::vector<SqlRow> rows;
    int rc;
    while ((rc = sqlite3_step(*st)) == SQLITE_ROW) {
      SqlRow row;
      const int n = sqlite3_column_count(*st);
      for (int i = 0; i < n; ++i) {
        switch (sqlite3_column_type(*st, i)) {
          case SQLITE_NULL: row.emplace_back(nullptr); break;
          case SQLITE_INTEGER: row.emplace_back(static_cast<int64_t>(sqlite3_column_int64(*st, i))); break;
          case SQLITE_FLOAT: row.emplace_back(sqlite3_column_double(*st, i)); break;
          default: {
            const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(*st, i));
            row.emplace_back(std::string(p ? p : "", static_cast<size_t>(sqlite3_column_bytes(*st, i))));
          }
        }
      }
      rows.push_back(std::move(row));
    }
    sqlite3_reset(*st);
    if (rc != SQLITE_DONE) return Error(conn_->db, "sqlite: " + std::string(sql.substr(0, 60)));
    return rows;
  }

  Status Commit() override;
  Status Rollback() override;
  Dialect dialect() const override { return Dialect::kSqlite; }
  ::sqlite3* sqlite() override { return conn_ ? conn_->db : nullptr; }

 private:
  Result<sqlite3_stmt*> Prepare(std::string_view sql, const std::vector<SqlValue>& params) {
    if (!conn_) return FailedPrecondition("the local transaction is finished");
    auto& cache = conn_->statements;
    std::string key(sql);
    auto it = cache.find(key);
    sqlite3_stmt* st = nullptr;
    if (it == cache.end()) {
      if (sqlite3_prepare_v2(conn_->db, key.c_str(), static_cast<int>(key.size()), &st, nullptr) != SQLITE_OK) {
        return Error(conn_->db, "sqlite prepare");
      }
      if (cache.size() > 64) {
        for (auto& [_, old] : cache) sqlite3_finalize(old);
        cache.clear();
      }
      cache.emplace(std::move(key), st);
    } else {
      st = it->second;
    }
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    if (static_cast<int>(params.size()) != sqlite3_bind_parameter_count(st)) {
      return InvalidArgument("sqlite: statement takes " + std::to_string(sqlite3_bind_parameter_count(st)) +
                             " parameters, got " + std::to_string(params.size()));
    }
    for (size_t i = 0; i < params.size(); ++i) {
      const int idx = static_cast<int>(i) + 1;
      std::visit(
          [&](const auto& v) {
            using T = std::decay_t<decltype(v)>;
            if constexpr (std::is_same_v<T, std::nullptr_t>) sqlite3_bind_null(st, idx);
            else if constexpr (std::is_same_v<T, int64_t>) sqlite3_bind_int64(st, idx, v);
            else if constexpr (std::is_same_v<T, double>) sqlite3_bind_double(st, idx, v);
            else sqlite3_bind_text(st, idx, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
          },
          params[i]);
    }
    return st;
  }

  Status Finish(const char* sql);

  std::shared_ptr<SqliteDatabase> owner_;
  std::unique_ptr<Conn> conn_;
};

class SqliteDatabase final : public LocalDatabase, public std::enable_shared_from_this<SqliteDatabase> {
 public:
  explicit SqliteDatabase(std::string path) : path_(std::move(path)) {}

  Result<std::unique_ptr<Conn>> Open() {
    auto c = std::make_unique<Conn>();
    if (sqlite3_open_v2(path_.c_str(), &c->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                        nullptr) != SQLITE_OK) {
      return IOError("sqlite: cannot open " + path_ + ": " + (c->db ? sqlite3_errmsg(c->db) : "out of memory"));
    }
    sqlite3_busy_timeout(c->db, 10'000);
    for (const char* pragma : {"PRAGMA journal_mode=WAL", "PRAGMA foreign_keys=ON"}) {
      if (sqlite3_exec(c->db, pragma, nullptr, nullptr, nullptr) != SQLITE_OK) return Error(c->db, pragma);
    }
    return c;
  }

  Result<std::unique_ptr<LocalTx>> Begin() override {
    std::unique_ptr<Conn> conn;
    {
      std::lock_guard lock(mu_);
      if (!idle_.empty()) {
        conn = std::move(idle_.back());
        idle_.pop_back();
      }
    }
    if (!conn) {
      auto opened = Open();
      if (!opened.ok()) return opened.status();
      conn = std::move(*opened);
    }
    if (sqlite3_exec(conn->db, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr) != SQLITE_OK) {
      return Error(conn->db, "sqlite: BEGIN IMMEDIATE");
    }
    return std::unique_ptr<LocalTx>(std::make_unique<SqliteTx>(shared_from_this(), std::move(conn)));
  }

  void Release(std::unique_ptr<Conn> conn) {
    std::lock_guard lock(mu_);
    if (idle_.size() < 32) idle_.push_back(std::move(conn));
  }

  Dialect dialect() const override { return Dialect::kSqlite; }
  std::string description() const override { return "sqlite:" + path_; }

 private:
  std::string path_;
  std::mutex mu_;
  std::vector<std::unique_ptr<Conn>> idle_;
};

Status SqliteTx::Finish(const char* sql) {
  if (!conn_) return FailedPrecondition("the local transaction is finished");
  Status s;
  if (sqlite3_exec(conn_->db, sql, nullptr, nullptr, nullptr) != SQLITE_OK) {
    s = Error(conn_->db, std::string("sqlite: ") + sql);
    // A failed COMMIT may leave the transaction open: end it before the connection is reused.
    if (!sqlite3_get_autocommit(conn_->db)) sqlite3_exec(conn_->db, "ROLLBACK", nullptr, nullptr, nullptr);
  }
  if (sqlite3_get_autocommit(conn_->db)) owner_->Release(std::move(conn_));
  conn_.reset();
  return s;
}

Status SqliteTx::Commit() { return Finish("COMMIT"); }
Status SqliteTx::Rollback() { return Finish("ROLLBACK"); }

}  // namespace

Result<std::shared_ptr<LocalDatabase>> OpenSqliteDatabase(const std::string& path) {
  auto db = std::make_shared<SqliteDatabase>(path);
  auto probe = db->Open();
  if (!probe.ok()) return probe.status();
  db->Release(std::move(*probe));
  return std::shared_ptr<LocalDatabase>(db);
}

}  // namespace dtx::sdk
