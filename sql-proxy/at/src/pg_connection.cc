#include "dtx/at/pg_connection.h"

#include <libpq-fe.h>

namespace dtx::at {

Result<std::unique_ptr<PgConnection>> PgConnection::Open(const std::string& conninfo) {
  PGconn* c = PQconnectdb(conninfo.c_str());
  if (PQstatus(c) != CONNECTION_OK) {
    std::string m = PQerrorMessage(c);
    PQfinish(c);
    while (!m.empty() && (m.back() == '\n' || m.back() == ' ')) m.pop_back();
    return SqlError(sqlstate::kConnectionFailure, "cannot connect: " + m, StatusCode::kUnavailable);
  }
  // NOTICEs (CREATE TABLE IF NOT EXISTS ...) are not errors: keep them off stderr.
  PQsetNoticeProcessor(c, [](void*, const char*) {}, nullptr);
  return std::unique_ptr<PgConnection>(new PgConnection(c));
}

PgConnection::~PgConnection() { PQfinish(conn_); }

bool PgConnection::ok() const { return PQstatus(conn_) == CONNECTION_OK; }

Result<QueryResult> PgConnection::Run(std::string_view sql, std::vector<std::optional<std::string>> params) {
  AtQuery q;
  q.sql = std::string(sql);
  q.params.values = std::move(params);
  return Run(q);
}

Result<QueryResult> PgConnection::Run(const AtQuery& query) {
  const auto& p = query.params;
  const int n = static_cast<int>(p.values.size());
  std::vector<const char*> values(n);
  std::vector<int> lengths(n), formats(n);
  std::vector<Oid> types(n);
  for (int i = 0; i < n; ++i) {
    values[i] = p.values[i] ? p.values[i]->data() : nullptr;
    lengths[i] = p.values[i] ? static_cast<int>(p.values[i]->size()) : 0;
    formats[i] = p.formats.empty() ? 0 : p.formats.size() == 1 ? p.formats[0] : (i < (int)p.formats.size() ? p.formats[i] : 0);
    types[i] = i < static_cast<int>(p.types.size()) ? p.types[i] : 0;
  }
  std::string sql = query.sql;
  PGresult* r = PQexecParams(conn_, sql.c_str(), n, n ? types.data() : nullptr, n ? values.data() : nullptr,
                             n ? lengths.data() : nullptr, n ? formats.data() : nullptr, 0);
  ExecStatusType st = PQresultStatus(r);
  if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
    const char* state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    const char* msg = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
    std::string m = msg ? msg : PQerrorMessage(conn_);
    while (!m.empty() && m.back() == '\n') m.pop_back();
    std::string s = state ? state : std::string(sqlstate::kConnectionFailure);
    PQclear(r);
    return SqlError(s, m, ok() ? StatusCode::kRemoteError : StatusCode::kUnavailable);
  }
  QueryResult out;
  out.command_tag = PQcmdStatus(r);
  const int rows = PQntuples(r), cols = PQnfields(r);
  out.rows.reserve(rows);
  for (int i = 0; i < rows; ++i) {
    std::vector<std::optional<std::string>> row(cols);
    for (int j = 0; j < cols; ++j) {
      if (!PQgetisnull(r, i, j)) row[j] = std::string(PQgetvalue(r, i, j), PQgetlength(r, i, j));
    }
    out.rows.push_back(std::move(row));
  }
  PQclear(r);
  return out;
}

}  // namespace dtx::at
