#include "at_harness.h"

#include <algorithm>
#include <cstdlib>

namespace dtx::at::testing {

Result<QueryResult> RunStatement(PgConnection& conn, AtBranch& branch, const std::string& sql, QueryParams params,
                                 sdk::CoordinatorClient* client) {
  auto st = branch.Prepare(sql, std::move(params));
  if (!st.ok()) return st.status();
  QueryResult seen;
  while (auto step = (*st)->Next()) {
    if (step->check_global_locks) {
      if (!client) return Internal("a lock check needs a coordinator");
      DTX_RETURN_IF_ERROR((*st)->CheckGlobalLocks(*client));
      continue;
    }
    auto r = conn.Run(step->query);
    if (!r.ok()) {
      (*st)->OnError();
      return r.status();
    }
    DTX_RETURN_IF_ERROR((*st)->OnResult(*r));
    if (step->query.role == QueryRole::kStatement) {
      seen = std::move(*r);
      for (auto& row : seen.rows) row.resize(row.size() - step->query.hidden_columns);
    }
  }
  return seen;
}

Status CommitBranch(PgConnection& conn, AtBranch& branch, sdk::CoordinatorClient& client) {
  auto undo = branch.Register(client);
  if (!undo.ok()) {
    (void)conn.Run("ROLLBACK");
    return undo.status();
  }
  if (*undo) {
    auto w = conn.Run(**undo);
    if (!w.ok()) {
      Status e = branch.UndoWriteFailed(SqlStateOf(w.status()), SqlTextOf(w.status()));
      (void)conn.Run("ROLLBACK");
      (void)branch.Finish(client, false);
      return e;
    }
  }
  auto c = conn.Run("COMMIT");
  (void)branch.Finish(client, c.ok());
  return c.status();
}

Status CommitWithoutCoordinator(PgConnection& conn, const AtBranch& branch, int64_t branch_id) {
  if (branch.has_writes()) {
    auto w = conn.Run(InsertUndoQuery(branch.options().undo_table, branch.xid(), branch_id, branch.entries()));
    if (!w.ok()) {
      (void)conn.Run("ROLLBACK");
      return w.status();
    }
  }
  return conn.Run("COMMIT").status();
}

void AtTest::SetUp() {
  auto base = sdk::testing::PostgresUri();
  if (!base) {
    if (std::getenv("DTX_REQUIRE_POSTGRES")) FAIL() << "DTX_TEST_PG_URI is not set";
    GTEST_SKIP() << "DTX_TEST_PG_URI is not set: run through scripts/with-postgres.sh";
  }
  schema_ = std::make_unique<sdk::testing::PgSchema>(*base);
  conn_ = Connect();
  ASSERT_TRUE(conn_);
  Exec("SET client_min_messages = warning");
  Exec(CreateUndoTableSql(kDefaultUndoTable));
  Exec("RESET client_min_messages");
  options_.resource_id = "pg-test";
}

std::unique_ptr<PgConnection> AtTest::Connect() {
  auto c = PgConnection::Open(schema_->uri());
  EXPECT_TRUE(c.ok()) << c.status();
  return c.ok() ? std::move(*c) : nullptr;
}

QueryResult AtTest::Exec(const std::string& sql) {
  auto r = conn_->Run(sql);
  EXPECT_TRUE(r.ok()) << sql << ": " << r.status();
  return r.ok() ? *r : QueryResult{};
}

std::vector<std::string> AtTest::Snapshot(const std::string& table) {
  auto r = Exec("SELECT row_to_json(t.*)::text FROM " + table + " t");
  std::vector<std::string> out;
  for (auto& row : r.rows) out.push_back(row[0].value_or("NULL"));
  std::sort(out.begin(), out.end());
  return out;
}

int64_t AtTest::Count(const std::string& sql) {
  auto r = Exec(sql);
  return r.rows.empty() || !r.rows[0][0] ? -1 : std::stoll(*r.rows[0][0]);
}

}  // namespace dtx::at::testing
