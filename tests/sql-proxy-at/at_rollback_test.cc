// Phase one on a real PostgreSQL, then the rollback of phase 2 (UndoExecutor, no coordinator):
// every statement kind and common column type must come back exactly, whole tables compared.
#include <gtest/gtest.h>

#include <future>
#include <thread>

#include "at_harness.h"
#include "dtx/at/undo_executor.h"

namespace dtx::at::testing {
namespace {

class AtRollbackTest : public AtTest {
 protected:
  void SetUp() override {
    AtTest::SetUp();
    if (IsSkipped() || HasFailure()) return;
    Exec("CREATE TABLE typed (id int PRIMARY KEY, small smallint, big bigint, num numeric(24,6), f float8,"
         " t text, ts timestamp, tstz timestamptz, d date, b boolean, bin bytea, j json, jb jsonb, arr int[])");
    Exec("INSERT INTO typed VALUES"
         " (1, -32768, 9223372036854775807, 123456789012345678.123456, 0.1, 'plain', '2024-02-29 23:59:59.999999',"
         "  '2024-06-01 12:00:00.123456+02', '2024-01-01', true, '\\x00ff10', '{\"a\":  1,\n \"a\": [1, 2.50]}',"
         "  '{\"k\": 1.10, \"n\": null}', '{1,NULL,3}'),"
         " (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),"
         " (3, 0, 0, 1.500000, 'NaN', E'quote '' \" back\\\\slash \\n \u00e9\u4e2d', 'infinity', '-infinity', '1999-12-31',"
         "  false, '\\x', '[]', '\"str\"', '{}'),"
         " (4, 7, -1, -0.000001, -1.5e300, '', '1970-01-01', '1970-01-01 00:00:00+00', '0001-01-01', NULL, '\\x5c', 'null',"
         "  'null', NULL)");
    executor_ = std::make_unique<UndoExecutor>(schema_->uri(), std::string(kDefaultUndoTable));
  }

  // Runs `statements` as one branch on a connection with its own settings, commits phase one,
  // then rolls the branch back and expects `table` to be exactly as before.
  void PhaseOneThenRollback(const std::string& table, const std::vector<std::pair<std::string, QueryParams>>& statements,
                            const std::vector<std::string>& session_setup = {}) {
    auto before = Snapshot(table);
    auto c = Connect();
    ASSERT_TRUE(c);
    for (const auto& set : session_setup) ASSERT_TRUE(c->Run(set).ok()) << set;
    ASSERT_TRUE(c->Run("BEGIN").ok());
    AtBranch branch(options_, catalog_, "xid-" + std::to_string(++xid_counter_));
    for (const auto& [sql, params] : statements) {
      auto r = RunStatement(*c, branch, sql, params);
      ASSERT_TRUE(r.ok()) << sql << ": " << r.status();
    }
    ASSERT_TRUE(branch.has_writes());
    ASSERT_TRUE(CommitWithoutCoordinator(*c, branch, 7).ok());
    EXPECT_NE(Snapshot(table), before) << "phase one changed nothing";
    EXPECT_EQ(Count("SELECT count(*) FROM dtx_undo_log WHERE xid = '" + branch.xid() + "'"), 1);

    auto r = executor_->Rollback(branch.xid(), 7);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->outcome, RollbackOutcome::kRolledBack) << r->message;
    EXPECT_EQ(Snapshot(table), before);
    EXPECT_EQ(Count("SELECT count(*) FROM dtx_undo_log"), 0);
  }

  std::unique_ptr<UndoExecutor> executor_;
  int xid_counter_ = 0;
};

QueryParams Text(std::vector<std::optional<std::string>> v) {
  QueryParams p;
  p.values = std::move(v);
  return p;
}

TEST_F(AtRollbackTest, UpdateOfEveryColumnTypeIsRestoredExactly) {
  PhaseOneThenRollback("typed", {{"UPDATE typed SET small = 1, big = 2, num = 3.3, f = 4.4, t = 'x', ts = now(),"
                                  " tstz = now(), d = '2000-01-01', b = NOT coalesce(b, false), bin = '\\xab',"
                                  " j = '{\"z\":0}', jb = '[1]', arr = '{9}'",
                                  {}}});
}

TEST_F(AtRollbackTest, UpdateToNullsAndBackFromNulls) {
  PhaseOneThenRollback("typed", {{"UPDATE typed SET small = NULL, num = NULL, t = NULL, tstz = NULL, j = NULL WHERE id <> 2", {}},
                                 {"UPDATE typed SET small = 5, num = 5, t = 'five', tstz = now(), j = '5' WHERE id = 2", {}}});
}

TEST_F(AtRollbackTest, DeleteOfEveryColumnTypeIsRestoredExactly) {
  PhaseOneThenRollback("typed", {{"DELETE FROM typed WHERE id IN (1, 2, 3, 4)", {}}});
}

TEST_F(AtRollbackTest, MultiRowInsertIsRemoved) {
  PhaseOneThenRollback("typed", {{"INSERT INTO typed (id, t, j) VALUES (10, 'a', '{}'), (11, 'b', '[1, 2]')", {}},
                                 {"INSERT INTO typed SELECT id + 100, small, big, num, f, t, ts, tstz, d, b, bin, j, jb, arr FROM typed WHERE id < 5", {}}});
}

TEST_F(AtRollbackTest, ExtendedProtocolParametersApplyToEveryQuery) {
  QueryParams p = Text({"changed", "77.000100", "{1,3}"});
  PhaseOneThenRollback("typed", {{"UPDATE typed SET t = $1, num = $2 WHERE id = ANY($3::int[])", p},
                                 {"DELETE FROM typed WHERE id = $1", Text({"4"})},
                                 {"INSERT INTO typed (id, t, bin) VALUES ($1, $2, $3)", Text({"20", "new", "\\x0102"})}});
}

TEST_F(AtRollbackTest, BinaryParametersApplyToEveryQuery) {
  QueryParams p;
  p.values = {std::string("\x00\x00\x00\x03", 4)};  // int4 3, binary
  p.formats = {1};
  p.types = {23};
  PhaseOneThenRollback("typed", {{"UPDATE typed SET t = 'bin' WHERE id = $1", p}});
}

TEST_F(AtRollbackTest, MixedStatementsOnTheSameRowsUndoInReverse) {
  PhaseOneThenRollback("typed", {{"INSERT INTO typed (id, t) VALUES (30, 'new')", {}},
                                 {"UPDATE typed SET t = t || '!' WHERE id IN (1, 30)", {}},
                                 {"UPDATE typed SET t = t || '?' WHERE id IN (1, 30)", {}},
                                 {"DELETE FROM typed WHERE id = 1", {}},
                                 {"INSERT INTO typed (id, t) VALUES (1, 'reborn')", {}}});
}

TEST_F(AtRollbackTest, ClientTimeZoneAndDateStyleDoNotMatter) {
  PhaseOneThenRollback("typed", {{"UPDATE typed SET t = 'tz'", {}}, {"DELETE FROM typed WHERE id = 1", {}}},
                       {"SET TimeZone = 'Asia/Kolkata'", "SET DateStyle = 'SQL, DMY'", "SET extra_float_digits = 0",
                        "SET bytea_output = 'escape'", "SET IntervalStyle = 'sql_standard'"});
}

TEST_F(AtRollbackTest, IdentityGeneratedColumnsPartitionsAndSubqueries) {
  Exec("CREATE TABLE gen (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, a int, twice int GENERATED ALWAYS AS (a * 2) STORED,"
       " note text DEFAULT 'd')");
  Exec("INSERT INTO gen (a) VALUES (1), (2), (3)");
  Exec("CREATE TABLE part (region text, id int, v numeric, PRIMARY KEY (region, id)) PARTITION BY LIST (region)");
  Exec("CREATE TABLE part_eu PARTITION OF part FOR VALUES IN ('eu')");
  Exec("CREATE TABLE part_us PARTITION OF part FOR VALUES IN ('us')");
  Exec("INSERT INTO part VALUES ('eu', 1, 1), ('us', 1, 2), ('us', 2, 3)");
  PhaseOneThenRollback("gen", {{"UPDATE gen SET a = a + 10 WHERE id IN (SELECT id FROM typed WHERE b)", {}},
                               {"DELETE FROM gen WHERE a = 2", {}},
                               {"INSERT INTO gen DEFAULT VALUES", {}},
                               {"INSERT INTO gen (a) SELECT id FROM typed", {}}});
  PhaseOneThenRollback("part", {{"UPDATE ONLY part SET v = v * 10 WHERE region = 'us'", {}},
                                {"DELETE FROM part_eu", {}},
                                {"INSERT INTO part VALUES ('eu', 9, 9)", {}}});
}

TEST_F(AtRollbackTest, ReadsAndUtilityStatementsPassThroughUnchanged) {
  auto c = Connect();
  ASSERT_TRUE(c->Run("BEGIN").ok());
  AtBranch branch(options_, catalog_, "xid-read");
  auto r = RunStatement(*c, branch, "SELECT t FROM typed WHERE id = $1", [] {
    QueryParams p;
    p.values = {"1"};
    return p;
  }());
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->rows.size(), 1u);
  EXPECT_EQ(r->rows[0][0], std::optional<std::string>("plain"));
  ASSERT_TRUE(RunStatement(*c, branch, "SET LOCAL statement_timeout = '5s'").ok());
  ASSERT_TRUE(RunStatement(*c, branch, "SELECT * FROM typed FOR SHARE").ok());
  EXPECT_FALSE(branch.has_writes());
  ASSERT_TRUE(c->Run("ROLLBACK").ok());
}

TEST_F(AtRollbackTest, RollbackToSavepointDropsTheUndoneEntries) {
  auto before = Snapshot("typed");
  auto c = Connect();
  ASSERT_TRUE(c->Run("BEGIN").ok());
  AtBranch branch(options_, catalog_, "xid-sp");
  auto run = [&](const std::string& sql) {
    auto r = RunStatement(*c, branch, sql);
    EXPECT_TRUE(r.ok()) << sql << ": " << r.status();
  };
  run("UPDATE typed SET t = 'kept' WHERE id = 1");
  run("SAVEPOINT a");
  run("UPDATE typed SET t = 'undone' WHERE id = 2");
  run("SAVEPOINT b");
  run("DELETE FROM typed WHERE id = 3");
  run("ROLLBACK TO SAVEPOINT a");
  EXPECT_EQ(branch.entries().size(), 1u);
  run("INSERT INTO typed (id) VALUES (60)");
  run("SAVEPOINT c");
  run("DELETE FROM typed WHERE id = 4");
  run("RELEASE SAVEPOINT c");
  EXPECT_EQ(branch.entries().size(), 3u) << "RELEASE keeps what was done";
  ASSERT_TRUE(CommitWithoutCoordinator(*c, branch, 13).ok());
  EXPECT_EQ(Count("SELECT count(*) FROM typed WHERE t = 'undone'"), 0);
  // Without the savepoint handling, row 2's stale entry would read as a dirty write.
  auto r = executor_->Rollback("xid-sp", 13);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->outcome, RollbackOutcome::kRolledBack) << r->message;
  EXPECT_EQ(Snapshot("typed"), before);
}

TEST_F(AtRollbackTest, CompositeKeysAndOddNames) {
  // A schema with a name that needs quoting, unique to this run (dropped at the end).
  const std::string odd = "Odd " + schema_->name();
  const std::string t = QuoteIdent(odd) + ".\"Order Lines\"";
  Exec("CREATE SCHEMA " + QuoteIdent(odd));
  Exec("CREATE TABLE " + t + " (\"order:id\" text, \"line.no\" int, \"Qty\" numeric,"
       " note text, PRIMARY KEY (\"line.no\", \"order:id\"))");
  Exec("INSERT INTO " + t + " VALUES ('a:b,c', 1, 1.0, 'x'), ('a:b,c', 2, 2.00, NULL),"
       " ('z\\\\', 1, 3, 'y')");
  PhaseOneThenRollback(t, {{"UPDATE " + t + " AS ol SET \"Qty\" = ol.\"Qty\" * 2 WHERE ol.\"order:id\" = $1", Text({"a:b,c"})},
                           {"DELETE FROM " + t + " WHERE \"line.no\" = 1", {}},
                           {"INSERT INTO " + t + " VALUES ('a:b,c', 3, 0, 'new')", {}}});

  auto c = Connect();
  ASSERT_TRUE(c->Run("BEGIN").ok());
  AtBranch branch(options_, catalog_, "xid-keys");
  ASSERT_TRUE(RunStatement(*c, branch, "UPDATE " + t + " SET note = 'k' WHERE \"line.no\" = 2").ok());
  EXPECT_EQ(branch.LockKeys(), std::vector<std::string>{"pg-test:" + odd + ".Order Lines:2,a\\:b\\,c"});
  ASSERT_TRUE(c->Run("ROLLBACK").ok());
  Exec("DROP SCHEMA " + QuoteIdent(odd) + " CASCADE");
}

TEST_F(AtRollbackTest, ClientSeesOnlyItsOwnReturningColumns) {
  auto c = Connect();
  ASSERT_TRUE(c->Run("BEGIN").ok());
  AtBranch branch(options_, catalog_, "xid-ret");
  auto r = RunStatement(*c, branch, "UPDATE typed SET t = 'r' WHERE id <= 2 RETURNING id, t");
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->rows.size(), 2u);
  EXPECT_EQ(r->rows[0].size(), 2u);
  EXPECT_EQ(r->command_tag, "UPDATE 2");
  auto plain = RunStatement(*c, branch, "DELETE FROM typed WHERE id = 4");
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ(plain->rows.front().size(), 0u);
  EXPECT_EQ(plain->command_tag, "DELETE 1");
  auto none = RunStatement(*c, branch, "UPDATE typed SET t = 'none' WHERE id = 999");
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(branch.entries().size(), 2u) << "a statement that changed no row records nothing";
  ASSERT_TRUE(c->Run("ROLLBACK").ok());
}

TEST_F(AtRollbackTest, RefusalsNeedingTheCatalog) {
  Exec("CREATE TABLE nokey (a int, b text)");
  Exec("CREATE VIEW v AS SELECT * FROM typed");
  auto c = Connect();
  ASSERT_TRUE(c->Run("BEGIN").ok());
  AtBranch branch(options_, catalog_, "xid-refuse");
  auto before = Snapshot("nokey");
  auto r = RunStatement(*c, branch, "INSERT INTO nokey VALUES (1, 'x')");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(SqlStateOf(r.status()), "0A000");
  EXPECT_NE(r.status().message().find("has no primary key"), std::string_view::npos) << r.status();
  auto view = RunStatement(*c, branch, "UPDATE v SET t = 'x'");
  ASSERT_FALSE(view.ok());
  EXPECT_EQ(SqlStateOf(view.status()), "0A000");
  auto missing = RunStatement(*c, branch, "DELETE FROM nowhere");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(SqlStateOf(missing.status()), "42P01");
  auto pk = RunStatement(*c, branch, "UPDATE typed SET id = 5 WHERE id = 4");
  EXPECT_EQ(SqlStateOf(pk.status()), "0A000");
  Exec("CREATE TABLE child (id int PRIMARY KEY, parent int REFERENCES typed ON DELETE CASCADE)");
  catalog_->Invalidate();
  auto cascade = RunStatement(*c, branch, "DELETE FROM typed WHERE id = 1");
  EXPECT_EQ(SqlStateOf(cascade.status()), "0A000");
  EXPECT_NE(cascade.status().message().find("cascades"), std::string_view::npos) << cascade.status();
  EXPECT_FALSE(branch.has_writes());
  // The session puts the transaction block into the failed state with the same error.
  auto raised = c->Run(RaiseErrorSql(r.status()));
  ASSERT_FALSE(raised.ok());
  EXPECT_EQ(SqlStateOf(raised.status()), "0A000");
  EXPECT_EQ(SqlTextOf(raised.status()), SqlTextOf(r.status()));
  ASSERT_TRUE(c->Run("ROLLBACK").ok());
  EXPECT_EQ(Snapshot("nokey"), before);
}

TEST_F(AtRollbackTest, DirtyWriteLeavesDataAndNamesTheRows) {
  auto c = Connect();
  ASSERT_TRUE(c->Run("BEGIN").ok());
  AtBranch branch(options_, catalog_, "xid-dirty");
  ASSERT_TRUE(RunStatement(*c, branch, "UPDATE typed SET t = 'global' WHERE id IN (1, 2)").ok());
  ASSERT_TRUE(RunStatement(*c, branch, "DELETE FROM typed WHERE id = 4").ok());
  ASSERT_TRUE(CommitWithoutCoordinator(*c, branch, 8).ok());
  // Someone outside the global transaction writes the same rows.
  Exec("UPDATE typed SET t = 'local' WHERE id = 2");
  Exec("INSERT INTO typed (id, t) VALUES (4, 'squatter')");
  auto tampered = Snapshot("typed");

  auto r = executor_->Rollback("xid-dirty", 8);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->outcome, RollbackOutcome::kDirtyWrite);
  EXPECT_NE(r->message.find("2 row(s)"), std::string::npos) << r->message;
  EXPECT_NE(r->message.find("\"typed\" key [\"2\"] was changed"), std::string::npos) << r->message;
  EXPECT_NE(r->message.find("\"t\":\"local\""), std::string::npos) << r->message;
  EXPECT_NE(r->message.find("key [\"4\"] was inserted again"), std::string::npos) << r->message;
  EXPECT_EQ(Snapshot("typed"), tampered) << "a dirty write must leave the data untouched";
  EXPECT_EQ(Count("SELECT count(*) FROM dtx_undo_log WHERE xid = 'xid-dirty'"), 1) << "the evidence stays";
}

TEST_F(AtRollbackTest, RowDeletedByOthersIsADirtyWrite) {
  auto c = Connect();
  ASSERT_TRUE(c->Run("BEGIN").ok());
  AtBranch branch(options_, catalog_, "xid-gone");
  ASSERT_TRUE(RunStatement(*c, branch, "INSERT INTO typed (id) VALUES (50)").ok());
  ASSERT_TRUE(CommitWithoutCoordinator(*c, branch, 9).ok());
  Exec("DELETE FROM typed WHERE id = 50");
  auto r = executor_->Rollback("xid-gone", 9);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->outcome, RollbackOutcome::kDirtyWrite);
  EXPECT_NE(r->message.find("was deleted since phase one"), std::string::npos) << r->message;
}

TEST_F(AtRollbackTest, RollbackWithoutUndoLeavesMarkerThatFailsLatePhaseOne) {
  auto r = executor_->Rollback("xid-late", 11);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->outcome, RollbackOutcome::kMarked);
  EXPECT_EQ(Count("SELECT count(*) FROM dtx_undo_log WHERE xid = 'xid-late' AND log_status = 1"), 1);
  // A second rollback call (the coordinator retries) finds the marker and is done.
  auto again = executor_->Rollback("xid-late", 11);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->outcome, RollbackOutcome::kMarked);

  auto before = Snapshot("typed");
  auto c = Connect();
  ASSERT_TRUE(c->Run("BEGIN").ok());
  AtBranch branch(options_, catalog_, "xid-late");
  ASSERT_TRUE(RunStatement(*c, branch, "UPDATE typed SET t = 'late'").ok());
  auto w = c->Run(InsertUndoQuery(kDefaultUndoTable, "xid-late", 11, branch.entries()));
  ASSERT_FALSE(w.ok()) << "the late phase-one commit must fail on the marker";
  Status e = branch.UndoWriteFailed(SqlStateOf(w.status()), SqlTextOf(w.status()));
  EXPECT_EQ(SqlStateOf(e), "40001");
  EXPECT_NE(e.message().find("already rolled back"), std::string_view::npos) << e;
  ASSERT_TRUE(c->Run("ROLLBACK").ok());
  EXPECT_EQ(Snapshot("typed"), before);
}

TEST_F(AtRollbackTest, RollbackRacingPhaseOneWaitsAndUndoesIt) {
  auto before = Snapshot("typed");
  auto c = Connect();
  ASSERT_TRUE(c->Run("BEGIN").ok());
  AtBranch branch(options_, catalog_, "xid-race");
  ASSERT_TRUE(RunStatement(*c, branch, "UPDATE typed SET t = 'race' WHERE id = 1").ok());
  ASSERT_TRUE(c->Run(InsertUndoQuery(kDefaultUndoTable, "xid-race", 12, branch.entries())).ok());
  // Phase one has written its undo row but not committed: the rollback's marker insert waits.
  auto rollback = std::async(std::launch::async, [&] {
    UndoExecutor ex(schema_->uri(), std::string(kDefaultUndoTable));
    return ex.Rollback("xid-race", 12);
  });
  EXPECT_EQ(rollback.wait_for(std::chrono::milliseconds(300)), std::future_status::timeout);
  ASSERT_TRUE(c->Run("COMMIT").ok());
  auto r = rollback.get();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->outcome, RollbackOutcome::kRolledBack);
  EXPECT_EQ(Snapshot("typed"), before);
}

TEST_F(AtRollbackTest, CommitDeletesUndoRowsInOneBatch) {
  std::vector<std::pair<std::string, int64_t>> done;
  for (int i = 0; i < 5; ++i) {
    auto c = Connect();
    ASSERT_TRUE(c->Run("BEGIN").ok());
    AtBranch branch(options_, catalog_, "xid-c" + std::to_string(i));
    ASSERT_TRUE(RunStatement(*c, branch, "UPDATE typed SET small = " + std::to_string(i) + " WHERE id = 1").ok());
    ASSERT_TRUE(CommitWithoutCoordinator(*c, branch, 100 + i).ok());
    if (i < 4) done.emplace_back(branch.xid(), 100 + i);
  }
  ASSERT_TRUE(executor_->Rollback("xid-marker", 1).ok());  // a marker: commit deletion keeps it
  done.emplace_back("xid-marker", 1);
  ASSERT_TRUE(executor_->DeleteUndo(done).ok());
  EXPECT_EQ(Count("SELECT count(*) FROM dtx_undo_log WHERE log_status = 0"), 1);
  EXPECT_EQ(Count("SELECT count(*) FROM dtx_undo_log WHERE xid = 'xid-c4'"), 1);
  EXPECT_EQ(Count("SELECT count(*) FROM dtx_undo_log WHERE log_status = 1"), 1);
}

}  // namespace
}  // namespace dtx::at::testing
