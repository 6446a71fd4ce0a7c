#include "proxy_at_harness.h"

#include <poll.h>

#include <algorithm>
#include <cstdlib>
#include <thread>

namespace dtx::at::testing {

Client::Client(const std::string& conninfo) : conn_(PQconnectdb(conninfo.c_str())) {
  EXPECT_EQ(PQstatus(conn_), CONNECTION_OK) << conninfo << ": " << PQerrorMessage(conn_);
  PQsetNoticeProcessor(conn_, [](void* notices, const char*) { ++*static_cast<int*>(notices); }, &notices_);
}

Client::~Client() { PQfinish(conn_); }

bool Client::ok() const { return PQstatus(conn_) == CONNECTION_OK; }

Answer Client::FunctionCall(unsigned oid, const std::string& text_arg) {
  PQArgBlock arg;
  arg.len = static_cast<int>(text_arg.size());
  arg.isint = 0;
  arg.u.ptr = reinterpret_cast<int*>(const_cast<char*>(text_arg.data()));
  int result = 0, result_len = 0;
  PGresult* r = PQfn(conn_, static_cast<int>(oid), &result, &result_len, 1, &arg, 1);
  const bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
  Answer a = Take(r);
  if (ok && result_len > 0) a.rows.push_back({std::to_string(result)});
  return a;
}

Answer Client::Take(PGresult* r) {
  Answer a;
  const auto status = PQresultStatus(r);
  if (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK) {
    a.ok = true;
    a.tag = PQcmdStatus(r);
    for (int i = 0; i < PQntuples(r); ++i) {
      std::vector<std::optional<std::string>> row;
      for (int j = 0; j < PQnfields(r); ++j) {
        if (PQgetisnull(r, i, j)) {
          row.emplace_back();
        } else {
          row.emplace_back(std::string(PQgetvalue(r, i, j), PQgetlength(r, i, j)));
        }
      }
      a.rows.push_back(std::move(row));
    }
  } else {
    const char* state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    const char* message = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
    a.sqlstate = state ? state : "";
    a.error = message ? message : PQerrorMessage(conn_);
  }
  PQclear(r);
  return a;
}

Answer Client::Exec(const std::string& sql) {
  PGresult* r = PQexec(conn_, sql.c_str());
  // With several results (several statements), libpq returns the last one.
  return Take(r);
}

Answer Client::CopyIn(const std::string& sql, const std::string& data, const char* fail) {
  PGresult* started = PQexec(conn_, sql.c_str());
  if (PQresultStatus(started) != PGRES_COPY_IN) return Take(started);  // refused before any data
  PQclear(started);
  if (PQputCopyData(conn_, data.data(), static_cast<int>(data.size())) != 1 || PQputCopyEnd(conn_, fail) != 1) {
    ADD_FAILURE() << "copy data: " << PQerrorMessage(conn_);
  }
  Answer last;
  while (PGresult* r = PQgetResult(conn_)) last = Take(r);  // the command's result, or its error
  return last;
}

Answer Client::CopyOut(const std::string& sql) {
  PGresult* started = PQexec(conn_, sql.c_str());
  if (PQresultStatus(started) != PGRES_COPY_OUT) return Take(started);
  PQclear(started);
  std::string data;
  char* chunk = nullptr;
  int n;
  while ((n = PQgetCopyData(conn_, &chunk, 0)) > 0) {
    data.append(chunk, static_cast<size_t>(n));
    PQfreemem(chunk);
  }
  Answer last;
  while (PGresult* r = PQgetResult(conn_)) last = Take(r);
  if (last.ok) last.rows = {{data}};
  return last;
}

namespace {
std::vector<const char*> Values(const std::vector<std::optional<std::string>>& params) {
  std::vector<const char*> out;
  for (const auto& p : params) out.push_back(p ? p->c_str() : nullptr);
  return out;
}
}  // namespace

Answer Client::Params(const std::string& sql, const std::vector<std::optional<std::string>>& params) {
  auto values = Values(params);
  return Take(PQexecParams(conn_, sql.c_str(), static_cast<int>(params.size()), nullptr, values.data(), nullptr,
                           nullptr, 0));
}

Answer Client::Prepare(const std::string& name, const std::string& sql, int params) {
  return Take(PQprepare(conn_, name.c_str(), sql.c_str(), params, nullptr));
}

Answer Client::ExecPrepared(const std::string& name, const std::vector<std::optional<std::string>>& params) {
  auto values = Values(params);
  return Take(PQexecPrepared(conn_, name.c_str(), static_cast<int>(params.size()), values.data(), nullptr, nullptr, 0));
}

std::vector<Answer> Client::Pipeline(const std::vector<std::string>& statements) {
  std::vector<Answer> out;
  if (PQenterPipelineMode(conn_) != 1) {
    ADD_FAILURE() << "pipeline mode: " << PQerrorMessage(conn_);
    return out;
  }
  for (const auto& sql : statements) {
    if (PQsendQueryParams(conn_, sql.c_str(), 0, nullptr, nullptr, nullptr, nullptr, 0) != 1) {
      ADD_FAILURE() << "send: " << PQerrorMessage(conn_);
    }
  }
  if (PQpipelineSync(conn_) != 1) ADD_FAILURE() << "sync: " << PQerrorMessage(conn_);
  for (size_t k = 0; k < statements.size(); ++k) {
    PGresult* r = PQgetResult(conn_);
    if (!r) {
      ADD_FAILURE() << "no result for statement " << k << ": " << PQerrorMessage(conn_);
      break;
    }
    if (PQresultStatus(r) == PGRES_PIPELINE_ABORTED) {
      PQclear(r);
      Answer a;
      a.sqlstate = "pipeline aborted";
      out.push_back(a);
    } else {
      out.push_back(Take(r));
    }
    while (PGresult* extra = PQgetResult(conn_)) PQclear(extra);  // the NULL after each statement
  }
  PGresult* sync = PQgetResult(conn_);
  EXPECT_TRUE(sync && PQresultStatus(sync) == PGRES_PIPELINE_SYNC) << "expected the pipeline's Sync";
  if (sync) PQclear(sync);
  EXPECT_EQ(PQexitPipelineMode(conn_), 1) << PQerrorMessage(conn_);
  return out;
}

Answer Client::FlushedStatement(const std::string& sql, std::chrono::milliseconds limit) {
  Answer a;
  if (PQenterPipelineMode(conn_) != 1 ||
      PQsendQueryParams(conn_, sql.c_str(), 0, nullptr, nullptr, nullptr, nullptr, 0) != 1 ||
      PQsendFlushRequest(conn_) != 1 || PQflush(conn_) != 0) {
    ADD_FAILURE() << "send: " << PQerrorMessage(conn_);
    return a;
  }
  const auto deadline = std::chrono::steady_clock::now() + limit;
  bool answered = false;
  while (!answered && std::chrono::steady_clock::now() < deadline) {
    pollfd p{PQsocket(conn_), POLLIN, 0};
    if (poll(&p, 1, 50) < 0 || PQconsumeInput(conn_) != 1) break;
    answered = PQisBusy(conn_) == 0;
  }
  if (answered) {
    a = Take(PQgetResult(conn_));
    while (PGresult* extra = PQgetResult(conn_)) PQclear(extra);
  } else {
    a.sqlstate = "timeout";
  }
  if (PQpipelineSync(conn_) != 1) ADD_FAILURE() << "sync: " << PQerrorMessage(conn_);
  while (true) {  // whatever is left, then the Sync's result
    PGresult* r = PQgetResult(conn_);
    if (!r) continue;
    const bool sync = PQresultStatus(r) == PGRES_PIPELINE_SYNC;
    if (!answered && !sync && PQresultStatus(r) != PGRES_PIPELINE_ABORTED) {
      PQclear(r);
      continue;
    }
    PQclear(r);
    if (sync) break;
  }
  EXPECT_EQ(PQexitPipelineMode(conn_), 1) << PQerrorMessage(conn_);
  return a;
}

char Client::TxStatus() const {
  switch (PQtransactionStatus(conn_)) {
    case PQTRANS_IDLE: return 'I';
    case PQTRANS_INTRANS: return 'T';
    case PQTRANS_INERROR: return 'E';
    default: return '?';
  }
}

void ProxyAtTest::SetUp() {
  auto base = sdk::testing::PostgresUri();
  auto target = ::dtx::testing::SharedPostgres();
  if (!base || !target) {
    if (std::getenv("DTX_REQUIRE_POSTGRES")) FAIL() << "DTX_TEST_PG_URI is not set";
    GTEST_SKIP() << "DTX_TEST_PG_URI is not set: run through scripts/with-postgres.sh";
  }
  pg_ = *target;
  schema_ = std::make_unique<sdk::testing::PgSchema>(*base);
  coordinator_ = std::make_unique<::dtx::testing::CoordinatorProcess>();
  ASSERT_GT(coordinator_->port(), 0);
  direct_ = Direct();
  ASSERT_TRUE(direct_->ok());
  StartProxy();
}

void ProxyAtTest::StartProxy(std::vector<std::string> extra, bool with_coordinator) {
  proxy_.reset();
  std::vector<std::string> args = {"--server", pg_.host + ":" + std::to_string(pg_.port)};
  if (with_coordinator) {
    args.insert(args.end(), {"--coordinator", coordinator_->address(), "--resource", pg_.database + "=" + schema_->uri(),
                             "--lock-retry-ms", "300"});
  }
  args.insert(args.end(), extra.begin(), extra.end());
  proxy_ = std::make_unique<::dtx::testing::ProxyProcess>(args);
  ASSERT_GT(proxy_->port(), 0);
}

std::unique_ptr<Client> ProxyAtTest::Connect() {
  return std::make_unique<Client>("host=127.0.0.1 port=" + std::to_string(proxy_->port()) + " user=" + pg_.user +
                                  " dbname=" + pg_.database + " options=-csearch_path=" + schema_->name());
}

std::unique_ptr<Client> ProxyAtTest::Direct() {
  return std::make_unique<Client>("host=" + pg_.host + " port=" + std::to_string(pg_.port) + " user=" + pg_.user +
                                  " dbname=" + pg_.database + " options=-csearch_path=" + schema_->name());
}

Answer ProxyAtTest::Sql(const std::string& sql) {
  Answer a = direct_->Exec(sql);
  EXPECT_TRUE(a.ok) << sql << ": " << a.sqlstate << " " << a.error;
  return a;
}

std::vector<std::string> ProxyAtTest::Snapshot(const std::string& table) {
  auto a = Sql("SELECT row_to_json(t.*)::text FROM " + table + " t");
  std::vector<std::string> out;
  for (auto& row : a.rows) out.push_back(row[0].value_or("NULL"));
  std::sort(out.begin(), out.end());
  return out;
}

int64_t ProxyAtTest::UndoRows() {
  auto a = Sql("SELECT count(*) FROM dtx_undo_log");
  return a.ok ? std::stoll(a.Value()) : -1;
}

bool ProxyAtTest::WaitUndoEmpty(std::chrono::milliseconds limit) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (UndoRows() != 0) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(25));
  }
  return true;
}

std::string ProxyAtTest::AdminTransaction(const std::string& xid) {
  auto body = sdk::testing::HttpGet(coordinator_->admin_port(), "/api/v1/transactions/" + xid);
  return body.ok() ? *body : std::string(body.status().message());
}

bool ProxyAtTest::WaitStatus(const std::string& xid, const std::string& status, std::chrono::milliseconds limit) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  // A finished transaction leaves the coordinator's log: gone counts as finished.
  const bool final = status == "Committed" || status == "Rollbacked" || status == "TimeoutRollbacked";
  while (true) {
    const std::string view = AdminTransaction(xid);
    if (view.find("\"status\":\"" + status + "\"") != std::string::npos) return true;
    if (final && view.find("HTTP/1.1 404") != std::string::npos) return true;
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return true;
}

}  // namespace dtx::at::testing
