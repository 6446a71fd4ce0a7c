// AT mode with real client programs and the rest of the SQL surface: psql scripts, pgbench in
// every query mode (simple, extended, prepared) with each transaction a global one, and
// savepoints inside a branch.
#include "proxy_at_harness.h"

namespace dtx::at::testing {
namespace {

using ::dtx::testing::PgProgram;
using ::dtx::testing::Psql;
using ::dtx::testing::RunProgram;

class ProxyAtClients : public ProxyAtTest {
 protected:
  void SetUp() override {
    ProxyAtTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    Sql("CREATE TABLE acct (id int PRIMARY KEY, balance bigint NOT NULL)");
    Sql("INSERT INTO acct SELECT g, 1000 FROM generate_series(1, 20) g");
  }
  std::map<std::string, std::string> Env() const { return {{"PGOPTIONS", "-csearch_path=" + schema_->name()}}; }
};

TEST_F(ProxyAtClients, PsqlScript) {
  const auto before = Snapshot("acct");
  auto r = Psql(proxy_->port(), pg_.user, pg_.database,
                "SELECT dtx.begin('psql') \\gset\n"
                "UPDATE acct SET balance = balance - 5 WHERE id = 1;\n"
                "BEGIN;\n"
                "UPDATE acct SET balance = balance + 5 WHERE id = 2;\n"
                "INSERT INTO acct VALUES (100, 1);\n"
                "COMMIT;\n"
                "SELECT dtx.rollback();\n"
                "SELECT dtx.begin() \\gset\n"
                "UPDATE acct SET balance = balance - 1 WHERE id = 3;\n"
                "SELECT dtx.commit();\n",
                Env());
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output, "Rollbacked\nCommitted\n");
  EXPECT_TRUE(WaitUndoEmpty());
  auto after = Snapshot("acct");
  EXPECT_EQ(Sql("SELECT balance FROM acct WHERE id = 3").Value(), "999");
  Sql("UPDATE acct SET balance = 1000 WHERE id = 3");
  EXPECT_EQ(Snapshot("acct"), before);
}

TEST_F(ProxyAtClients, SavepointsInsideABranch) {
  const auto before = Snapshot("acct");
  auto c = Connect();
  ASSERT_TRUE(c->Exec("SELECT dtx.begin()").ok);
  ASSERT_TRUE(c->Exec("BEGIN").ok);
  ASSERT_TRUE(c->Exec("UPDATE acct SET balance = 1 WHERE id = 1").ok);
  ASSERT_TRUE(c->Exec("SAVEPOINT s1").ok);
  ASSERT_TRUE(c->Exec("UPDATE acct SET balance = 2 WHERE id = 2").ok);
  ASSERT_TRUE(c->Exec("DELETE FROM acct WHERE id = 3").ok);
  ASSERT_TRUE(c->Exec("ROLLBACK TO SAVEPOINT s1").ok);
  ASSERT_TRUE(c->Exec("UPDATE acct SET balance = 4 WHERE id = 4").ok);
  ASSERT_TRUE(c->Exec("RELEASE SAVEPOINT s1").ok);
  ASSERT_TRUE(c->Exec("COMMIT").ok);
  // Rows 2 and 3 were never changed in the end: the branch locks 1 and 4 only.
  auto other = Connect();
  EXPECT_TRUE(other->Exec("UPDATE acct SET balance = 1000 WHERE id = 2").ok);
  EXPECT_EQ(other->Exec("UPDATE acct SET balance = 1000 WHERE id = 4").sqlstate, "55P03");
  ASSERT_EQ(c->Exec("SELECT dtx.rollback()").Value(), "Rollbacked");
  EXPECT_TRUE(WaitUndoEmpty());
  EXPECT_EQ(Snapshot("acct"), before);
}

// Every transaction of pgbench is a global one: begin, move money between two accounts inside a
// block, end. About half of them roll back. The total never changes and no undo row is left.
TEST_F(ProxyAtClients, PgbenchEveryQueryMode) {
  const std::string script_path = ::testing::TempDir() + "/at_transfer_" + std::to_string(getpid()) + ".sql";
  {
    FILE* f = fopen(script_path.c_str(), "w");
    ASSERT_NE(f, nullptr);
    // Each client has accounts of its own (no lock conflicts, so every transaction completes).
    fputs("\\set a :client_id * 6 + random(1, 3)\n"
          "\\set b :client_id * 6 + random(4, 6)\n"
          "\\set amount random(1, 50)\n"
          "\\set undo random(0, 1)\n"
          "SELECT dtx.begin('pgbench', 20000);\n"
          "BEGIN;\n"
          "UPDATE acct SET balance = balance - :amount WHERE id = :a;\n"
          "UPDATE acct SET balance = balance + :amount WHERE id = :b;\n"
          "END;\n"
          "\\if :undo\n"
          "SELECT dtx.rollback();\n"
          "\\else\n"
          "SELECT dtx.commit();\n"
          "\\endif\n",
          f);
    fclose(f);
  }
  for (const char* mode : {"simple", "extended", "prepared"}) {
    auto r = RunProgram({PgProgram("pgbench"), "-h", "127.0.0.1", "-p", std::to_string(proxy_->port()), "-U", pg_.user,
                         "-n", "-M", mode, "-c", "3", "-t", "15", "-f", script_path, pg_.database},
                        "", Env());
    EXPECT_EQ(r.exit_code, 0) << r.output;
    EXPECT_NE(r.output.find("query mode: " + std::string(mode)), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("number of transactions actually processed: 45/45"), std::string::npos) << r.output;
    EXPECT_TRUE(WaitUndoEmpty(std::chrono::seconds(20))) << mode;
    EXPECT_EQ(Sql("SELECT sum(balance) FROM acct").Value(), "20000") << mode << "\n" << r.output;
    EXPECT_TRUE(sdk::testing::WaitNoneUnfinished(coordinator_->admin_port())) << mode;
  }
  std::remove(script_path.c_str());
  EXPECT_GE(proxy_->Metric("dtx_sql_proxy_at_global_total{event=\"commit\"}"), 1);
}

}  // namespace
}  // namespace dtx::at::testing
