#include "pg_client.h"

#include <libpq-fe.h>

namespace dtx::at::e2e {

namespace {

Answer Take(PGconn* conn, PGresult* r) {
  Answer a;
  const ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
  if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
    a.ok = true;
    a.tag = PQcmdStatus(r);
    for (int i = 0; i < PQntuples(r); ++i) {
      std::vector<std::optional<std::string>> row(PQnfields(r));
      for (int j = 0; j < PQnfields(r); ++j) {
        if (!PQgetisnull(r, i, j)) row[j] = std::string(PQgetvalue(r, i, j), PQgetlength(r, i, j));
      }
      a.rows.push_back(std::move(row));
    }
  } else {
    const char* state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : nullptr;
    const char* msg = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : nullptr;
    a.sqlstate = state ? state : "08006";
    a.error = msg ? msg : PQerrorMessage(conn);
    while (!a.error.empty() && a.error.back() == '\n') a.error.pop_back();
  }
  PQclear(r);
  return a;
}

}  // namespace

std::unique_ptr<PgClient> PgClient::Connect(const std::string& conninfo, std::string* error) {
  PGconn* c = PQconnectdb(conninfo.c_str());
  if (PQstatus(c) != CONNECTION_OK) {
    if (error) *error = PQerrorMessage(c);
    PQfinish(c);
    return nullptr;
  }
  PQsetNoticeProcessor(c, [](void*, const char*) {}, nullptr);
  return std::unique_ptr<PgClient>(new PgClient(c));
}

PgClient::~PgClient() { PQfinish(conn_); }

bool PgClient::alive() const { return PQstatus(conn_) == CONNECTION_OK; }

Answer PgClient::Exec(const std::string& sql) { return Take(conn_, PQexec(conn_, sql.c_str())); }

Answer PgClient::Params(const std::string& sql, const std::vector<std::optional<std::string>>& params) {
  std::vector<const char*> values;
  for (const auto& p : params) values.push_back(p ? p->c_str() : nullptr);
  return Take(conn_, PQexecParams(conn_, sql.c_str(), static_cast<int>(values.size()), nullptr, values.data(), nullptr,
                                  nullptr, 0));
}

}  // namespace dtx::at::e2e
