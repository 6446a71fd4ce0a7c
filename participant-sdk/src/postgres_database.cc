// The PostgreSQL LocalDatabase: a pool of libpq connections, each with its prepared statements.
#include <libpq-fe.h>

#include <mutex>
#include <unordered_map>

#include "dtx/sdk/local_database.h"

namespace dtx::sdk {

namespace {

// `?` -> `$n`, outside quoted strings, quoted identifiers and comments.
std::string Rewrite(std::string_view sql) {
  std::string out;
  out.reserve(sql.size() + 8);
  int n = 0;
  for (size_t i = 0; i < sql.size(); ++i) {
    const char c = sql[i];
    if (c == '\'' || c == '"') {
      const size_t end = sql.find(c, i + 1);
      const size_t stop = end == std::string_view::npos ? sql.size() : end + 1;
      out.append(sql.substr(i, stop - i));
      i = stop - 1;
    } else if (c == '-' && i + 1 < sql.size() && sql[i + 1] == '-') {
      const size_t end = sql.find('\n', i);
      const size_t stop = end == std::string_view::npos ? sql.size() : end;
      out.append(sql.substr(i, stop - i));
      i = stop - 1;
    } else if (c == '?') {
      out += '$' + std::to_string(++n);
    } else {
      out += c;
    }
  }
  return out;
}

struct Conn {
  PGconn* pg = nullptr;
  std::unordered_map<std::string, std::string> prepared;  // sql -> statement name
  ~Conn() { PQfinish(pg); }
};

class PostgresDatabase;

class PostgresTx final : public LocalTx {
 public:
  PostgresTx(std::shared_ptr<PostgresDatabase> owner, std::unique_ptr<Conn> conn)
      : owner_(std::move(owner)), conn_(std::move(conn)) {}
  ~PostgresTx() override {
    if (conn_) (void)Rollback();
  }

  Result<int64_t> Exec(std::string_view sql, const std::vector<SqlValue>& params) override {
    auto r = Run(sql, params);
    if (!r.ok()) return r.status();
    const char* n = PQcmdTuples(r->get());
    return AsInt(SqlValue(std::string(n ? n : "0")));
  }

  Result<std::vector<SqlRow>> Query(std::string_view sql, const std::vector<SqlValue>& params) override {
    auto r = Run(sql, params);
    if (!r.ok()) return r.status();
    PGresult* res = r->get();
    std::vector<SqlRow> rows;
    const int nrows = PQntuples(res), ncols = PQnfields(res);
    for (int i = 0; i < nrows; ++i) {
      SqlRow row;
      for (int j = 0; j < ncols; ++j) {
        if (PQgetisnull(res, i, j)) {
          row.emplace_back(nullptr);
          continue;
        }
        std::string text(PQgetvalue(res, i, j), static_cast<size_t>(PQgetlength(res, i, j)));
        switch (PQftype(res, j)) {
          case 20: case 21: case 23: row.emplace_back(AsInt(SqlValue(text))); break;  // int8, int2, int4
          case 16: row.emplace_back(static_cast<int64_t>(text == "t")); break;       // bool
          case 700: case 701: row.emplace_back(std::stod(text)); break;               // float4, float8
          default: row.emplace_back(std::move(text));
        }
      }
      rows.push_back(std::move(row));
    }
    return rows;
  }

  Status Commit() override { return Finish("COMMIT"); }
  Status Rollback() override { return Finish("ROLLBACK"); }
  Dialect dialect() const override { return Dialect::kPostgres; }
  ::pg_conn* postgres() override { return conn_ ? conn_->pg : nullptr; }

 private:
  using ResultPtr = std::unique_ptr<PGresult, decltype(&PQclear)>;

  Status ErrorOf(PGresult* res, std::string_view what) {
    const char* state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : nullptr;
    std::string msg = std::string(what) + ": " + (res ? PQresultErrorMessage(res) : PQerrorMessage(conn_->pg));
    while (!msg.empty() && (msg.back() == '\n' || msg.back() == ' ')) msg.pop_back();
    if (state && std::string_view(state) == "23505") return Status(StatusCode::kAlreadyExists, msg);
    if (state && (std::string_view(state) == "40001" || std::string_view(state) == "40P01")) return Unavailable(msg);
    if (PQstatus(conn_->pg) != CONNECTION_OK) return Unavailable(msg);
    return IOError(msg);
  }

  Result<ResultPtr> Run(std::string_view sql, const std::vector<SqlValue>& params) {
    if (!conn_) return FailedPrecondition("the local transaction is finished");
    std::string key(sql);
    auto it = conn_->prepared.find(key);
    if (it == conn_->prepared.end()) {
      std::string name = "dtx_s" + std::to_string(conn_->prepared.size() + 1);
      ResultPtr prep(PQprepare(conn_->pg, name.c_str(), Rewrite(sql).c_str(), 0, nullptr), &PQclear);
      if (!prep || PQresultStatus(prep.get()) != PGRES_COMMAND_OK) return ErrorOf(prep.get(), "postgres prepare");
      it = conn_->prepared.emplace(std::move(key), std::move(name)).first;
    }
    std::vector<std::string> text(params.size());
    std::vector<const char*> values(params.size());
    for (size_t i = 0; i < params.size(); ++i) {
      std::visit(
          [&](const auto& v) {
            using T = std::decay_t<decltype(v)>;
            if constexpr (std::is_same_v<T, std::nullptr_t>) values[i] = nullptr;
            else {
              if constexpr (std::is_same_v<T, std::string>) text[i] = v;
              else text[i] = std::to_string(v);
              values[i] = text[i].c_str();
            }
          },
          params[i]);
    }
    ResultPtr res(PQexecPrepared(conn_->pg, it->second.c_str(), static_cast<int>(params.size()), values.data(),
                                 nullptr, nullptr, 0),
                  &PQclear);
    const auto st = res ? PQresultStatus(res.get()) : PGRES_FATAL_ERROR;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) return ErrorOf(res.get(), "postgres");
    return res;
  }

  Status Finish(const char* sql);

  std::shared_ptr<PostgresDatabase> owner_;
  std::unique_ptr<Conn> conn_;
};

class PostgresDatabase final : public LocalDatabase, public std::enable_shared_from_this<PostgresDatabase> {
 public:
  explicit PostgresDatabase(std::string conninfo) : conninfo_(std::move(conninfo)) {}

  Result<std::unique_ptr<Conn>> Open() {
    auto c = std::make_unique<Conn>();
    c->pg = PQconnectdb(conninfo_.c_str());
    if (!c->pg || PQstatus(c->pg) != CONNECTION_OK) {
      std::string msg = c->pg ? PQerrorMessage(c->pg) : "out of memory";
      while (!msg.empty() && msg.back() == '\n') msg.pop_back();
      return Unavailable("postgres: cannot connect to " + description() + ": " + msg);
    }
    PQsetNoticeProcessor(c->pg, [](void*, const char*) {}, nullptr);
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
    if (!conn || PQstatus(conn->pg) != CONNECTION_OK) {
      auto opened = Open();
      if (!opened.ok()) return opened.status();
      conn = std::move(*opened);
    }
    PGresult* res = PQexec(conn->pg, "BEGIN");
    const bool ok = res && PQresultStatus(res) == PGRES_COMMAND_OK;
    PQclear(res);
    if (!ok) return Unavailable(std::string("postgres: BEGIN: ") + PQerrorMessage(conn->pg));
    return std::unique_ptr<LocalTx>(std::make_unique<PostgresTx>(shared_from_this(), std::move(conn)));
  }

  void Release(std::unique_ptr<Conn> conn) {
    if (PQstatus(conn->pg) != CONNECTION_OK || PQtransactionStatus(conn->pg) != PQTRANS_IDLE) return;
    std::lock_guard lock(mu_);
    if (idle_.size() < 32) idle_.push_back(std::move(conn));
  }

  Dialect dialect() const override { return Dialect::kPostgres; }
  std::string description() const override {
    // Leave out a password given in a URI (user:password@host).
    std::string d = conninfo_;
    const auto scheme = d.find("://");
    const auto at = d.find('@');
    if (scheme != std::string::npos && at != std::string::npos && at > scheme) {
      const auto colon = d.find(':', scheme + 3);
      if (colon != std::string::npos && colon < at) d.replace(colon, at - colon, ":***");
    }
    return d;
  }

 private:
  std::string conninfo_;
  std::mutex mu_;
  std::vector<std::unique_ptr<Conn>> idle_;
};

Status PostgresTx::Finish(const char* sql) {
  if (!conn_) return FailedPrecondition("the local transaction is finished");
  Status s;
  PGresult* res = PQexec(conn_->pg, sql);
  // COMMIT of a failed transaction answers "ROLLBACK" with PGRES_COMMAND_OK: check the tag.
  if (!res || PQresultStatus(res) != PGRES_COMMAND_OK) {
    s = Unavailable(std::string("postgres: ") + sql + ": " + PQerrorMessage(conn_->pg));
  } else if (std::string_view(sql) == "COMMIT" && std::string_view(PQcmdStatus(res)) != "COMMIT") {
    s = IOError("postgres: COMMIT rolled back: the transaction had failed");
  }
  PQclear(res);
  owner_->Release(std::move(conn_));
  conn_.reset();
  return s;
}

}  // namespace

Result<std::shared_ptr<LocalDatabase>> OpenPostgresDatabase(const std::string& conninfo) {
  auto db = std::make_shared<PostgresDatabase>(conninfo);
  auto probe = db->Open();
  if (!probe.ok()) return probe.status();
  db->Release(std::move(*probe));
  return std::shared_ptr<LocalDatabase>(db);
}

}  // namespace dtx::sdk
