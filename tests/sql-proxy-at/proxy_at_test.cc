// AT mode end to end: dtx-sql-proxy in front of a real PostgreSQL, a real dtx-coordinator, libpq
// clients. Global commits keep the writes and clear the undo log; global rollbacks put every row
// back exactly; lock conflicts, dirty writes, refusals and a coordinator that is down.
#include "proxy_at_harness.h"

#include <unistd.h>

#include <cstdio>
#include <thread>

namespace dtx::at::testing {
namespace {

class ProxyAt : public ProxyAtTest {
 protected:
  void SetUp() override {
    ProxyAtTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    Sql("CREATE TABLE acct (id int PRIMARY KEY, balance numeric(12,2) NOT NULL, owner text)");
    Sql("INSERT INTO acct SELECT g, 100, 'owner ' || g FROM generate_series(1, 10) g");
  }

  // SELECT dtx.begin() on `c`; the XID.
  std::string Begin(Client& c) {
    Answer a = c.Exec("SELECT dtx.begin()");
    EXPECT_TRUE(a.ok) << a.sqlstate << " " << a.error;
    EXPECT_EQ(a.rows.size(), 1u);
    return a.Value();
  }

  // SELECT dtx.rollback() on `c`: the transaction ends Rollbacked, its undo rows gone and acct
  // as `before`.
  void RollBack(Client& c, const std::string& xid, const std::vector<std::string>& before) {
    Answer rb = c.Exec("SELECT dtx.rollback()");
    ASSERT_TRUE(rb.ok) << rb.sqlstate << " " << rb.error;
    EXPECT_TRUE(WaitStatus(xid, "Rollbacked"));
    EXPECT_TRUE(WaitUndoEmpty());
    EXPECT_EQ(Snapshot("acct"), before);
  }
};

TEST_F(ProxyAt, GlobalCommitKeepsWritesAndClearsUndo) {
  auto c = Connect();
  const std::string xid = Begin(*c);
  ASSERT_FALSE(xid.empty());
  EXPECT_EQ(c->Exec("SHOW dtx.xid").Value(), xid);
  // Outside a block: a transaction of its own.
  Answer u = c->Exec("UPDATE acct SET balance = balance - 10 WHERE id = 1");
  ASSERT_TRUE(u.ok) << u.error;
  EXPECT_EQ(u.tag, "UPDATE 1");
  EXPECT_EQ(c->TxStatus(), 'I');
  // In a block, with RETURNING of the client's own.
  ASSERT_TRUE(c->Exec("BEGIN").ok);
  Answer r = c->Exec("UPDATE acct SET balance = balance + 10 WHERE id = 2 RETURNING id, balance");
  ASSERT_TRUE(r.ok) << r.error;
  ASSERT_EQ(r.rows.size(), 1u);
  ASSERT_EQ(r.rows[0].size(), 2u);  // the hidden columns are not shown
  EXPECT_EQ(r.rows[0][1], "110.00");
  ASSERT_TRUE(c->Exec("INSERT INTO acct VALUES (11, 5, 'new')").ok);
  ASSERT_TRUE(c->Exec("DELETE FROM acct WHERE id = 3").ok);
  EXPECT_EQ(UndoRows(), 1);  // the first branch's
  Answer commit = c->Exec("COMMIT");
  ASSERT_TRUE(commit.ok) << commit.error;
  EXPECT_EQ(commit.tag, "COMMIT");
  EXPECT_EQ(UndoRows(), 2);
  Answer done = c->Exec("SELECT dtx.commit()");
  ASSERT_TRUE(done.ok) << done.sqlstate << " " << done.error;
  EXPECT_EQ(done.Value(), "Committed");
  EXPECT_EQ(c->Exec("SHOW dtx.xid").Value(), "");  // unbound
  EXPECT_TRUE(WaitUndoEmpty());
  EXPECT_EQ(Sql("SELECT balance FROM acct WHERE id = 1").Value(), "90.00");
  EXPECT_EQ(Sql("SELECT balance FROM acct WHERE id = 2").Value(), "110.00");
  EXPECT_EQ(Sql("SELECT count(*) FROM acct WHERE id = 11").Value(), "1");
  EXPECT_EQ(Sql("SELECT count(*) FROM acct WHERE id = 3").Value(), "0");
  EXPECT_TRUE(WaitStatus(xid, "Committed"));
  EXPECT_GE(proxy_->Metric("dtx_sql_proxy_at_branches_total{outcome=\"committed\"}"), 2);
}

TEST_F(ProxyAt, GlobalRollbackRestoresRows) {
  const auto before = Snapshot("acct");
  auto c = Connect();
  const std::string xid = Begin(*c);
  ASSERT_TRUE(c->Exec("UPDATE acct SET balance = balance * 2, owner = NULL WHERE id <= 5").ok);
  ASSERT_TRUE(c->Exec("BEGIN").ok);
  ASSERT_TRUE(c->Exec("DELETE FROM acct WHERE id BETWEEN 6 AND 8").ok);
  ASSERT_TRUE(c->Exec("INSERT INTO acct VALUES (20, 1, 'a'), (21, 2, 'b')").ok);
  ASSERT_TRUE(c->Exec("UPDATE acct SET balance = 0 WHERE id = 20").ok);
  ASSERT_TRUE(c->Exec("COMMIT").ok);
  EXPECT_NE(Snapshot("acct"), before);
  RollBack(*c, xid, before);
}

// A bound session's BEGIN is answered by the proxy and goes to the server with the block's first
// statement (--defer-begin), through either protocol; the branches and their undo are the same.
TEST_F(ProxyAt, HeldBeginsOfBoundSessions) {
  const auto before = Snapshot("acct");
  auto c = Connect();
  const double held0 = proxy_->Metric("dtx_sql_proxy_begins_held_total");
  ASSERT_GE(held0, 0);
  const std::string xid = Begin(*c);
  ASSERT_TRUE(c->Exec("BEGIN").ok);
  EXPECT_EQ(c->TxStatus(), 'T');
  EXPECT_EQ(proxy_->Metric("dtx_sql_proxy_begins_held_total"), held0 + 1);
  ASSERT_TRUE(c->Exec("UPDATE acct SET balance = balance - 1 WHERE id = 1").ok);
  ASSERT_TRUE(c->Exec("COMMIT").ok);
  EXPECT_EQ(UndoRows(), 1);
  // The extended protocol: a prepared BEGIN, then a write with parameters and its COMMIT.
  ASSERT_TRUE(c->Prepare("b", "BEGIN", 0).ok);
  Answer begun = c->ExecPrepared("b", {});
  ASSERT_TRUE(begun.ok) << begun.error;
  EXPECT_EQ(begun.tag, "BEGIN");
  EXPECT_EQ(c->TxStatus(), 'T');
  EXPECT_EQ(proxy_->Metric("dtx_sql_proxy_begins_held_total"), held0 + 2);
  Answer u = c->Params("UPDATE acct SET owner = $1 WHERE id = 2", {"held"});
  ASSERT_TRUE(u.ok) << u.error;
  ASSERT_TRUE(c->Params("COMMIT", {}).ok);
  EXPECT_EQ(UndoRows(), 2);
  // A block that only reads registers nothing.
  ASSERT_TRUE(c->Exec("BEGIN").ok);
  EXPECT_EQ(c->Exec("SELECT owner FROM acct WHERE id = 2").Value(), "held");
  ASSERT_TRUE(c->Exec("COMMIT").ok);
  EXPECT_EQ(UndoRows(), 2);
  EXPECT_EQ(proxy_->Metric("dtx_sql_proxy_begins_held_total"), held0 + 3);
  RollBack(*c, xid, before);
}

// A bound session's extended-protocol answers are gathered into one write per batch, but a
// client's Flush still gets them at once, before any Sync.
TEST_F(ProxyAt, ExtendedAnswersComeAtTheClientsFlush) {
  const auto before = Snapshot("acct");
  auto c = Connect();
  const std::string xid = Begin(*c);
  ASSERT_TRUE(c->Exec("BEGIN").ok);
  Answer u = c->FlushedStatement("UPDATE acct SET balance = balance + 1 WHERE id = 4", std::chrono::seconds(10));
  EXPECT_TRUE(u.ok) << u.sqlstate << " " << u.error;
  EXPECT_EQ(u.tag, "UPDATE 1");
  Answer s = c->FlushedStatement("SELECT balance FROM acct WHERE id = 4", std::chrono::seconds(10));
  EXPECT_TRUE(s.ok) << s.sqlstate << " " << s.error;
  EXPECT_EQ(s.Value(), "101.00");
  ASSERT_TRUE(c->Exec("COMMIT").ok);
  EXPECT_EQ(UndoRows(), 1);
  RollBack(*c, xid, before);
}

TEST_F(ProxyAt, RolledBackBlockRecordsNothing) {
  const auto before = Snapshot("acct");
  auto c = Connect();
  const std::string xid = Begin(*c);
  ASSERT_TRUE(c->Exec("BEGIN").ok);
  ASSERT_TRUE(c->Exec("UPDATE acct SET balance = 1 WHERE id = 1").ok);
  ASSERT_TRUE(c->Exec("ROLLBACK").ok);
  EXPECT_EQ(UndoRows(), 0);
  // A failing statement in a block: the server's error, and the block's COMMIT is a ROLLBACK.
  ASSERT_TRUE(c->Exec("BEGIN").ok);
  ASSERT_TRUE(c->Exec("UPDATE acct SET balance = 2 WHERE id = 2").ok);
  Answer bad = c->Exec("UPDATE acct SET balance = 'x' WHERE id = 3");
  EXPECT_FALSE(bad.ok);
  EXPECT_EQ(bad.sqlstate, "22P02");
  EXPECT_EQ(c->TxStatus(), 'E');
  Answer commit = c->Exec("COMMIT");
  EXPECT_EQ(commit.tag, "ROLLBACK");
  EXPECT_EQ(UndoRows(), 0);
  EXPECT_EQ(Snapshot("acct"), before);
  ASSERT_EQ(c->Exec("SELECT dtx.commit()").Value(), "Committed");
  EXPECT_TRUE(WaitStatus(xid, "Committed"));
}

TEST_F(ProxyAt, LockConflictFailsTheSecondCommit) {
  auto a = Connect();
  auto b = Connect();
  const std::string xa = Begin(*a);
  const std::string xb = Begin(*b);
  ASSERT_TRUE(a->Exec("UPDATE acct SET balance = 50 WHERE id = 1").ok);
  ASSERT_TRUE(b->Exec("BEGIN").ok);
  ASSERT_TRUE(b->Exec("UPDATE acct SET balance = 70 WHERE id = 1").ok);  // the local lock is free again
  ASSERT_TRUE(b->Exec("UPDATE acct SET balance = 70 WHERE id = 2").ok);
  auto start = std::chrono::steady_clock::now();
  Answer commit = b->Exec("COMMIT");
  auto waited = std::chrono::steady_clock::now() - start;
  EXPECT_FALSE(commit.ok);
  EXPECT_EQ(commit.sqlstate, "55P03") << commit.error;
  EXPECT_NE(commit.error.find(xb), std::string::npos) << commit.error;
  EXPECT_GE(waited, std::chrono::milliseconds(300));  // --lock-retry-ms
  EXPECT_EQ(b->TxStatus(), 'I');
  // The local transaction was rolled back: both rows keep a's state.
  EXPECT_EQ(Sql("SELECT balance FROM acct WHERE id = 1").Value(), "50.00");
  EXPECT_EQ(Sql("SELECT balance FROM acct WHERE id = 2").Value(), "100.00");
  // b's session goes on.
  EXPECT_EQ(b->Exec("SELECT 1").Value(), "1");
  ASSERT_EQ(a->Exec("SELECT dtx.commit()").Value(), "Committed");
  // Once a's locks are gone, b gets through.
  ASSERT_TRUE(b->Exec("UPDATE acct SET balance = 70 WHERE id = 1").ok);
  ASSERT_EQ(b->Exec("SELECT dtx.rollback()").Value(), "Rollbacked");
  EXPECT_TRUE(WaitUndoEmpty());
  EXPECT_EQ(Sql("SELECT balance FROM acct WHERE id = 1").Value(), "50.00");
}

TEST_F(ProxyAt, DirtyWriteShowsRollbackFailed) {
  auto c = Connect();
  const std::string xid = Begin(*c);
  ASSERT_TRUE(c->Exec("UPDATE acct SET balance = 1 WHERE id = 4").ok);
  // Someone writes the row straight on PostgreSQL, past the proxy and its lock check.
  Sql("UPDATE acct SET balance = 999 WHERE id = 4");
  Answer rb = c->Exec("SELECT dtx.rollback()");
  EXPECT_TRUE(WaitStatus(xid, "RollbackFailed")) << AdminTransaction(xid) << " / " << rb.error;
  const std::string view = AdminTransaction(xid);
  EXPECT_NE(view.find("PhaseTwoRollbackFailedUnretryable"), std::string::npos) << view;
  // Nothing was touched: the other writer's value and the undo row stay for an operator.
  EXPECT_EQ(Sql("SELECT balance FROM acct WHERE id = 4").Value(), "999.00");
  EXPECT_EQ(UndoRows(), 1);
}

TEST_F(ProxyAt, UnboundWriteWaitsForGlobalLock) {
  auto g = Connect();
  auto local = Connect();
  const std::string xid = Begin(*g);
  ASSERT_TRUE(g->Exec("UPDATE acct SET balance = 1 WHERE id = 5").ok);
  Answer blocked = local->Exec("UPDATE acct SET balance = 2 WHERE id = 5");
  EXPECT_FALSE(blocked.ok);
  EXPECT_EQ(blocked.sqlstate, "55P03") << blocked.error;
  EXPECT_NE(blocked.error.find(xid), std::string::npos) << blocked.error;
  Answer del = local->Exec("DELETE FROM acct WHERE id >= 5");
  EXPECT_EQ(del.sqlstate, "55P03");
  // Rows no global transaction holds are free.
  EXPECT_TRUE(local->Exec("UPDATE acct SET balance = 2 WHERE id = 6").ok);
  ASSERT_EQ(g->Exec("SELECT dtx.rollback()").Value(), "Rollbacked");
  EXPECT_TRUE(WaitUndoEmpty());
  EXPECT_EQ(Sql("SELECT balance FROM acct WHERE id = 5").Value(), "100.00");
  EXPECT_TRUE(local->Exec("UPDATE acct SET balance = 2 WHERE id = 5").ok);
  EXPECT_GE(proxy_->Metric("dtx_sql_proxy_at_unbound_checks_total"), 1);
}

TEST_F(ProxyAt, UnboundBlockIsCheckedOnceAtItsCommit) {
  auto local = Connect();
  const auto checks = proxy_->Metric("dtx_sql_proxy_at_unbound_checks_total");
  ASSERT_TRUE(local->Exec("BEGIN").ok);
  ASSERT_TRUE(local->Exec("UPDATE acct SET balance = balance - 1 WHERE id = 1").ok);
  ASSERT_TRUE(local->Exec("UPDATE acct SET balance = balance + 1 WHERE id = 2").ok);
  ASSERT_TRUE(local->Exec("INSERT INTO acct VALUES (12, 1, 'new')").ok);
  EXPECT_EQ(proxy_->Metric("dtx_sql_proxy_at_unbound_checks_total"), checks);  // nothing asked yet
  Answer commit = local->Exec("COMMIT");
  ASSERT_TRUE(commit.ok) << commit.error;
  EXPECT_EQ(commit.tag, "COMMIT");
  EXPECT_EQ(proxy_->Metric("dtx_sql_proxy_at_unbound_checks_total"), checks + 1);
  EXPECT_EQ(Sql("SELECT string_agg(balance::text, ',' ORDER BY id) FROM acct WHERE id IN (1, 2, 12)").Value(),
            "99.00,101.00,1.00");

  // Rows a global transaction holds: an extended-protocol Execute that is not a COMMIT leaves the
  // check for later; an Execute of END checks the block's earlier writes first, fails, and the
  // block is rolled back.
  auto g = Connect();
  const std::string xid = Begin(*g);
  ASSERT_TRUE(g->Exec("UPDATE acct SET balance = 1 WHERE id = 6").ok);
  ASSERT_TRUE(local->Exec("BEGIN").ok);
  ASSERT_TRUE(local->Exec("UPDATE acct SET owner = 'local' WHERE id = 6").ok);
  Answer extended = local->Params("SELECT $1::int", {"1"});
  EXPECT_TRUE(extended.ok) << extended.error;
  EXPECT_EQ(local->TxStatus(), 'T');
  Answer ended = local->Params("END", {});
  EXPECT_EQ(ended.sqlstate, "55P03") << ended.error;
  EXPECT_NE(ended.error.find(xid), std::string::npos) << ended.error;
  EXPECT_EQ(local->TxStatus(), 'I');
  // Bound to a global transaction in the middle of the block: its COMMIT still checks the
  // unbound writes made before.
  ASSERT_TRUE(local->Exec("BEGIN").ok);
  ASSERT_TRUE(local->Exec("UPDATE acct SET owner = 'local' WHERE id = 6").ok);
  ASSERT_TRUE(local->Exec("SET dtx.xid = '" + xid + "'").ok);
  Answer bound = local->Exec("COMMIT");
  EXPECT_EQ(bound.sqlstate, "55P03") << bound.error;
  EXPECT_EQ(local->TxStatus(), 'I');
  ASSERT_TRUE(local->Exec("RESET dtx.xid").ok);
  ASSERT_EQ(g->Exec("SELECT dtx.rollback()").Value(), "Rollbacked");
  EXPECT_TRUE(WaitUndoEmpty());
  EXPECT_EQ(Sql("SELECT owner || ' ' || balance FROM acct WHERE id = 6").Value(), "owner 6 100.00");
}

TEST_F(ProxyAt, UnboundInsertsUpsertsJoinsAndStringsAreChecked) {
  auto g = Connect();
  auto local = Connect();
  const std::string xid = Begin(*g);
  // The global transaction deletes row 5 and changes row 6: its rollback must find both as it
  // left them.
  ASSERT_TRUE(g->Exec("DELETE FROM acct WHERE id = 5").ok);
  ASSERT_TRUE(g->Exec("UPDATE acct SET balance = 1 WHERE id = 6").ok);

  Answer insert = local->Exec("INSERT INTO acct VALUES (5, 7, 'local')");
  EXPECT_EQ(insert.sqlstate, "55P03") << insert.error;
  EXPECT_NE(insert.error.find(xid), std::string::npos) << insert.error;
  EXPECT_EQ(local->TxStatus(), 'I');
  Answer upsert = local->Exec("INSERT INTO acct AS a VALUES (6, 7, 'local') ON CONFLICT (id) DO UPDATE SET balance = 7");
  EXPECT_EQ(upsert.sqlstate, "55P03") << upsert.error;
  Answer nothing = local->Exec("INSERT INTO acct VALUES (6, 7, 'local') ON CONFLICT DO NOTHING");
  EXPECT_TRUE(nothing.ok) << nothing.error;  // it wrote no row
  EXPECT_EQ(nothing.tag, "INSERT 0 0");
  Answer join = local->Exec("UPDATE acct a SET balance = 7 FROM (VALUES (6)) v(k) WHERE a.id = v.k");
  EXPECT_EQ(join.sqlstate, "55P03") << join.error;
  Answer params = local->Params("INSERT INTO acct VALUES ($1, 7, 'local')", {"5"});
  EXPECT_EQ(params.sqlstate, "55P03") << params.error;
  EXPECT_EQ(local->TxStatus(), 'I');
  // Several statements in one string: one transaction, as PostgreSQL runs it.
  Answer several = local->Exec("UPDATE acct SET owner = 'x' WHERE id = 1; UPDATE acct SET owner = 'x' WHERE id = 6");
  EXPECT_EQ(several.sqlstate, "55P03") << several.error;
  EXPECT_EQ(local->TxStatus(), 'I');
  Answer fine = local->Exec("INSERT INTO acct VALUES (11, 1, 'new'); UPDATE acct SET owner = 'y' WHERE id = 2 RETURNING owner");
  ASSERT_TRUE(fine.ok) << fine.error;
  EXPECT_EQ(fine.tag, "UPDATE 1");
  ASSERT_EQ(fine.rows.size(), 1u);
  EXPECT_EQ(fine.rows[0].size(), 1u);  // the hidden column is not shown
  // In the client's block the keys are checked once, at its COMMIT: a conflict fails the COMMIT
  // and the block is rolled back, as when a COMMIT fails on the server.
  ASSERT_TRUE(local->Exec("BEGIN").ok);
  EXPECT_TRUE(local->Exec("INSERT INTO acct VALUES (5, 7, 'local')").ok);
  EXPECT_TRUE(local->Exec("SELECT 1").ok);
  Answer commit = local->Exec("COMMIT");
  EXPECT_EQ(commit.sqlstate, "55P03") << commit.error;
  EXPECT_NE(commit.error.find(xid), std::string::npos) << commit.error;
  EXPECT_EQ(local->TxStatus(), 'I');
  // The same for a COMMIT at the end of a string, for END, and for a COMMIT sent through the
  // extended protocol.
  for (const char* end : {"SELECT 1; COMMIT", "END", "extended COMMIT"}) {
    SCOPED_TRACE(end);
    ASSERT_TRUE(local->Exec("BEGIN").ok);
    ASSERT_TRUE(local->Exec("UPDATE acct SET owner = 'local' WHERE id = 6").ok);
    Answer a = std::string(end) == "extended COMMIT" ? local->Params("COMMIT", {}) : local->Exec(end);
    EXPECT_EQ(a.sqlstate, "55P03") << a.error;
    EXPECT_EQ(local->TxStatus(), 'I');
  }
  // A ROLLBACK is not checked.
  ASSERT_TRUE(local->Exec("BEGIN").ok);
  ASSERT_TRUE(local->Exec("UPDATE acct SET owner = 'local' WHERE id = 6").ok);
  EXPECT_TRUE(local->Exec("ROLLBACK").ok);
  // What cannot return its keys is refused before it runs.
  EXPECT_EQ(local->Exec("WITH d AS (DELETE FROM acct WHERE id = 3 RETURNING id) SELECT * FROM d").sqlstate, "0A000");
  EXPECT_EQ(local->Exec("MERGE INTO acct a USING (VALUES (3)) v(k) ON a.id = v.k WHEN MATCHED THEN DELETE").sqlstate,
            "0A000");
  EXPECT_EQ(local->Exec("DELETE FROM acct WHERE id = 3; COPY acct FROM STDIN").sqlstate, "0A000");
  EXPECT_EQ(local->TxStatus(), 'I');
  // Nothing of the refused or conflicting writes is left.
  EXPECT_EQ(Sql("SELECT count(*) FROM acct WHERE id IN (3, 5)").Value(), "1");
  EXPECT_EQ(Sql("SELECT string_agg(owner, ',' ORDER BY id) FROM acct WHERE id IN (1, 2, 6, 11)").Value(),
            "owner 1,y,owner 6,new");
  EXPECT_EQ(Sql("SELECT balance FROM acct WHERE id = 6").Value(), "1.00");

  ASSERT_EQ(g->Exec("SELECT dtx.rollback()").Value(), "Rollbacked");
  EXPECT_TRUE(WaitUndoEmpty());
  EXPECT_EQ(Sql("SELECT count(*) FROM acct WHERE id = 5").Value(), "1");
  EXPECT_EQ(Sql("SELECT balance FROM acct WHERE id = 6").Value(), "100.00");
  // The rows are free again.
  EXPECT_EQ(local->Exec("INSERT INTO acct VALUES (5, 7, 'local')").sqlstate, "23505");  // the server's own answer
  EXPECT_TRUE(local->Exec("INSERT INTO acct VALUES (6, 7, 'local') ON CONFLICT (id) DO UPDATE SET balance = 7").ok);
  EXPECT_EQ(Sql("SELECT balance FROM acct WHERE id = 6").Value(), "7.00");
}

TEST_F(ProxyAt, RollbackWaitsForALocalInsertThatLostTheCheck) {
  auto g = Connect();
  auto local = Connect();
  const std::string xid = Begin(*g);
  ASSERT_TRUE(g->Exec("DELETE FROM acct WHERE id = 4").ok);
  // The local insert of the deleted key ran in a block (its check waits for the COMMIT), which
  // holds the new row: the global rollback's re-insert must wait for it, not fail as a dirty
  // write; the block's COMMIT then loses the check.
  ASSERT_TRUE(local->Exec("BEGIN").ok);
  ASSERT_TRUE(local->Exec("INSERT INTO acct VALUES (4, 7, 'local')").ok);
  Answer rollback;
  std::thread decide([&] { rollback = g->Exec("SELECT dtx.rollback()"); });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  Answer commit = local->Exec("COMMIT");
  EXPECT_EQ(commit.sqlstate, "55P03") << commit.error;
  EXPECT_EQ(local->TxStatus(), 'I');
  decide.join();
  EXPECT_EQ(rollback.Value(), "Rollbacked") << rollback.error;
  EXPECT_TRUE(WaitStatus(xid, "Rollbacked")) << AdminTransaction(xid);
  EXPECT_EQ(Sql("SELECT owner FROM acct WHERE id = 4").Value(), "owner 4");
  EXPECT_TRUE(WaitUndoEmpty());
}

// What cannot say which rows it wrote (TRUNCATE, CALL, DO, COPY FROM) is checked table by table:
// every table its transaction holds a write lock on (cascades and partitions included) must have
// no row held by a global transaction.
TEST_F(ProxyAt, UnboundTruncateCallDoAndCopyAreCheckedWholeTables) {
  Sql("CREATE TABLE other (id int PRIMARY KEY, v text)");
  Sql("CREATE TABLE note (id int PRIMARY KEY, other_id int REFERENCES other (id), body text)");
  Sql("CREATE TABLE parted (id int PRIMARY KEY, v text) PARTITION BY RANGE (id)");
  Sql("CREATE TABLE parted_low PARTITION OF parted FOR VALUES FROM (0) TO (100)");
  Sql("CREATE TABLE free_t (id int PRIMARY KEY)");
  Sql("INSERT INTO other VALUES (1, 'a'); INSERT INTO note VALUES (1, 1, 'n'); INSERT INTO parted VALUES (1, 'p');"
      " INSERT INTO free_t VALUES (1)");
  Sql("CREATE PROCEDURE touch_acct(k int) LANGUAGE sql AS $$ UPDATE acct SET owner = 'proc' WHERE id = k $$");
  Sql("CREATE PROCEDURE commit_acct(k int) LANGUAGE plpgsql AS $$ BEGIN UPDATE acct SET owner = 'c' WHERE id = k; "
      "COMMIT; END $$");
  // A file on the server's side, for COPY ... FROM a file (the server writes it as its own user).
  const std::string file = "/tmp/dtx_copy_" + std::to_string(::getpid()) + ".tsv";
  Sql("COPY (SELECT 4000 + g, 1, 'file' FROM generate_series(1, 3) g) TO '" + file + "'");
  auto g = Connect();
  auto local = Connect();
  const std::string xid = Begin(*g);
  ASSERT_TRUE(g->Exec("UPDATE acct SET balance = 1 WHERE id = 5").ok);
  ASSERT_TRUE(g->Exec("UPDATE note SET body = 'global' WHERE id = 1").ok);
  Answer parted = g->Exec("UPDATE parted SET v = 'global' WHERE id = 1");
  ASSERT_TRUE(parted.ok) << parted.error;
  const auto acct = Snapshot("acct");

  // Outside a block each runs in a transaction of the proxy's, checked before it commits. The
  // rows they touch are not the held ones: the tables are checked whole.
  for (const std::string sql : {"TRUNCATE acct", "TRUNCATE other CASCADE", "TRUNCATE parted_low",
                                "CALL touch_acct(6)", "DO $$ BEGIN UPDATE acct SET owner = 'do' WHERE id = 7; END $$"}) {
    SCOPED_TRACE(sql);
    Answer a = local->Exec(sql);
    EXPECT_EQ(a.sqlstate, "55P03") << a.error;
    EXPECT_NE(a.error.find(xid), std::string::npos) << a.error;
    EXPECT_EQ(local->TxStatus(), 'I');
  }
  // A procedure that commits on its own cannot inside the proxy's transaction.
  Answer committing = local->Exec("CALL commit_acct(6)");
  EXPECT_EQ(committing.sqlstate, "2D000") << committing.error;
  EXPECT_EQ(local->TxStatus(), 'I');
  // The extended protocol: a TRUNCATE is checked in the batch's transaction; a CALL (which could
  // commit that transaction itself) is refused outside a block, and checked at the COMMIT of one.
  Answer truncated = local->Params("TRUNCATE acct", {});
  EXPECT_EQ(truncated.sqlstate, "55P03") << truncated.error;
  Answer call = local->Params("CALL touch_acct($1)", {"6"});
  EXPECT_EQ(call.sqlstate, "0A000") << call.error;
  EXPECT_EQ(local->TxStatus(), 'I');
  ASSERT_TRUE(local->Exec("BEGIN").ok);
  Answer in_block = local->Params("CALL touch_acct($1)", {"6"});
  EXPECT_TRUE(in_block.ok) << in_block.error;
  Answer call_commit = local->Params("COMMIT", {});
  EXPECT_EQ(call_commit.sqlstate, "55P03") << call_commit.error;
  EXPECT_EQ(local->TxStatus(), 'I');
  EXPECT_EQ(Sql("SELECT owner FROM acct WHERE id = 6").Value(), "owner 6");
  Answer from_file = local->Exec("COPY acct FROM '" + file + "'");
  EXPECT_EQ(from_file.sqlstate, "55P03") << from_file.error;
  EXPECT_EQ(local->TxStatus(), 'I');
  // A COPY FROM outside a block runs in a transaction of the proxy's, checked once its data is in;
  // so does a COPY of a write. In a block the check waits for the block's COMMIT.
  Answer copy_alone = local->CopyIn("COPY acct FROM STDIN", "20\t1\tcopied\n");
  EXPECT_EQ(copy_alone.sqlstate, "55P03") << copy_alone.error;
  EXPECT_EQ(local->TxStatus(), 'I');
  for (const std::string sql : {"COPY (UPDATE acct SET owner = 'out' WHERE id = 9 RETURNING id) TO STDOUT",
                                "COPY (WITH d AS (DELETE FROM acct WHERE id = 9 RETURNING id) SELECT * FROM d) TO STDOUT"}) {
    Answer copy_out = local->CopyOut(sql);
    EXPECT_EQ(copy_out.sqlstate, "55P03") << sql << ": " << copy_out.error;
    EXPECT_EQ(local->TxStatus(), 'I');
  }
  ASSERT_TRUE(local->Exec("BEGIN").ok);
  Answer copied = local->CopyIn("COPY acct FROM STDIN", "20\t1\tcopied\n");
  EXPECT_TRUE(copied.ok) << copied.error;
  Answer commit = local->Exec("COMMIT");
  EXPECT_EQ(commit.sqlstate, "55P03") << commit.error;
  EXPECT_EQ(local->TxStatus(), 'I');
  // A TRUNCATE in a block, ended by an extended-protocol END.
  ASSERT_TRUE(local->Exec("BEGIN").ok);
  ASSERT_TRUE(local->Exec("TRUNCATE parted").ok);
  Answer end = local->Params("END", {});
  EXPECT_EQ(end.sqlstate, "55P03") << end.error;
  EXPECT_EQ(local->TxStatus(), 'I');
  EXPECT_EQ(Snapshot("acct"), acct);
  EXPECT_EQ(Sql("SELECT count(*) FROM note").Value(), "1");
  EXPECT_EQ(Sql("SELECT count(*) FROM parted").Value(), "1");

  // A table no global transaction holds rows of is free, even beside a block's own checked
  // writes to a held table (TRUNCATE counts only the tables it emptied).
  EXPECT_TRUE(local->Exec("TRUNCATE free_t").ok);
  ASSERT_TRUE(local->Exec("BEGIN").ok);
  ASSERT_TRUE(local->Exec("UPDATE acct SET owner = 'local' WHERE id = 8").ok);
  ASSERT_TRUE(local->Exec("INSERT INTO free_t VALUES (2)").ok);
  ASSERT_TRUE(local->Exec("TRUNCATE free_t").ok);
  Answer mixed = local->Exec("COMMIT");
  EXPECT_TRUE(mixed.ok) << mixed.error;
  EXPECT_EQ(Sql("SELECT count(*) FROM free_t").Value(), "0");

  // Once the global transaction is committed its tables are free again.
  Answer done = g->Exec("SELECT dtx.commit()");
  ASSERT_EQ(done.Value(), "Committed") << done.error;
  Answer proc = local->Exec("CALL touch_acct(6)");
  EXPECT_TRUE(proc.ok) << proc.error;
  ASSERT_TRUE(local->Exec("BEGIN").ok);
  Answer loaded = local->CopyIn("COPY acct FROM STDIN", "20\t1\tcopied\n");
  EXPECT_TRUE(loaded.ok) << loaded.error;
  Answer kept = local->Exec("COMMIT");
  EXPECT_TRUE(kept.ok) << kept.error;
  EXPECT_EQ(Sql("SELECT owner FROM acct WHERE id = 6").Value(), "proc");
  EXPECT_EQ(Sql("SELECT owner FROM acct WHERE id = 20").Value(), "copied");
  // Outside a block: committed once checked; bad data, a CopyFail and a key taken end rolled back
  // with the server's own errors, and the session goes on.
  std::string rows;
  for (int id = 100; id < 2100; ++id) rows += std::to_string(id) + "\t5\tbulk " + std::to_string(id) + "\n";
  Answer bulk = local->CopyIn("COPY acct FROM STDIN", rows);
  EXPECT_TRUE(bulk.ok) << bulk.error;
  EXPECT_EQ(bulk.tag, "COPY 2000");
  EXPECT_EQ(local->TxStatus(), 'I');
  EXPECT_EQ(Sql("SELECT count(*) FROM acct WHERE id >= 100").Value(), "2000");
  Answer bad = local->CopyIn("COPY acct FROM STDIN", "3000\t1\tok\nnot a number\t1\tx\n");
  EXPECT_EQ(bad.sqlstate, "22P02") << bad.error;
  EXPECT_EQ(local->TxStatus(), 'I');
  Answer failed = local->CopyIn("COPY acct FROM STDIN", "3001\t1\tx\n", "the client gave up");
  EXPECT_EQ(failed.sqlstate, "57014") << failed.error;
  EXPECT_EQ(local->TxStatus(), 'I');
  // A CopyFail that straddles the proxy's reads (behind 60 kB of data; PostgreSQL takes at most
  // 10 kB for it), with and without an earlier error of the server's.
  std::string filler;
  for (int id = 5000; filler.size() < 60'000; ++id) filler += std::to_string(id) + "\t1\tfiller row\n";
  const std::string long_reason(9'000, 'r');
  Answer long_fail = local->CopyIn("COPY acct FROM STDIN", filler, long_reason.c_str());
  EXPECT_EQ(long_fail.sqlstate, "57014") << long_fail.error.substr(0, 200);
  Answer bad_then_fail = local->CopyIn("COPY acct FROM STDIN", "not a number\t1\tx\n" + filler, long_reason.c_str());
  EXPECT_EQ(bad_then_fail.sqlstate, "22P02") << bad_then_fail.error.substr(0, 200);
  EXPECT_EQ(local->TxStatus(), 'I');
  EXPECT_EQ(Sql("SELECT count(*) FROM acct WHERE id >= 5000").Value(), "0");
  // A trigger that says something for every row: its notices go on during the copy.
  Sql("CREATE TABLE chatty (id int PRIMARY KEY)");
  Sql("CREATE FUNCTION chatty_notice() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
      "RAISE NOTICE 'row % in', NEW.id; RETURN NEW; END $$");
  Sql("CREATE TRIGGER chatty_rows BEFORE INSERT ON chatty FOR EACH ROW EXECUTE FUNCTION chatty_notice()");
  std::string ids;
  for (int id = 1; id <= 20000; ++id) ids += std::to_string(id) + "\n";
  const int notices_before = local->notices();
  Answer chatty = local->CopyIn("COPY chatty FROM STDIN", ids);
  EXPECT_TRUE(chatty.ok) << chatty.error;
  EXPECT_EQ(chatty.tag, "COPY 20000");
  EXPECT_EQ(local->notices() - notices_before, 20000);
  Answer chatty_bad = local->CopyIn("COPY chatty FROM STDIN", "30001\n30002\nx\n");
  EXPECT_EQ(chatty_bad.sqlstate, "22P02") << chatty_bad.error;
  EXPECT_EQ(local->TxStatus(), 'I');
  EXPECT_EQ(Sql("SELECT count(*) FROM chatty").Value(), "20000");
  Answer by_file = local->Exec("COPY acct FROM '" + file + "'");
  EXPECT_TRUE(by_file.ok) << by_file.error;
  EXPECT_EQ(by_file.tag, "COPY 3");
  EXPECT_EQ(Sql("SELECT count(*) FROM acct WHERE owner = 'file'").Value(), "3");
  std::remove(file.c_str());
  Answer duplicate = local->CopyIn("COPY acct FROM STDIN", "3002\t1\tx\n100\t1\tagain\n");
  EXPECT_EQ(duplicate.sqlstate, "23505") << duplicate.error;
  EXPECT_EQ(local->TxStatus(), 'I');
  EXPECT_EQ(Sql("SELECT count(*) FROM acct WHERE id BETWEEN 3000 AND 3999").Value(), "0");
  Answer written = local->CopyOut("COPY (UPDATE acct SET owner = 'out' WHERE id = 9 RETURNING id) TO STDOUT");
  EXPECT_TRUE(written.ok) << written.error;
  EXPECT_EQ(written.Value(), "9\n");
  EXPECT_EQ(Sql("SELECT owner FROM acct WHERE id = 9").Value(), "out");
  EXPECT_EQ(local->Exec("SELECT 'after'").Value(), "after");
  Answer emptied = local->Exec("TRUNCATE other CASCADE");
  EXPECT_TRUE(emptied.ok) << emptied.error;
  EXPECT_EQ(Sql("SELECT count(*) FROM note").Value(), "0");
}

TEST_F(ProxyAt, UnboundWritesUncheckedWhenTurnedOff) {
  StartProxy({"--check-unbound-writes", "false"});
  auto g = Connect();
  auto local = Connect();
  Begin(*g);
  ASSERT_TRUE(g->Exec("UPDATE acct SET balance = 1 WHERE id = 5").ok);
  EXPECT_TRUE(local->Exec("UPDATE acct SET balance = 2 WHERE id = 5").ok);
  EXPECT_EQ(proxy_->Metric("dtx_sql_proxy_at_unbound_checks_total"), 0);
}

// A committed branch stays Registered at the coordinator unless --report-phase-one-done; either
// way the global commit finishes it.
TEST_F(ProxyAt, PhaseOneDoneIsReportedOnlyWhenAsked) {
  for (const bool report : {false, true}) {
    SCOPED_TRACE(report ? "--report-phase-one-done true" : "default");
    if (report) StartProxy({"--report-phase-one-done", "true"});
    auto c = Connect();
    const std::string xid = Begin(*c);
    ASSERT_TRUE(c->Exec("UPDATE acct SET balance = balance + 1 WHERE id = 7").ok);
    if (report) {
      EXPECT_TRUE(WaitStatus(xid, "PhaseOneDone", std::chrono::seconds(5))) << AdminTransaction(xid);
    } else {
      EXPECT_TRUE(WaitStatus(xid, "Registered", std::chrono::seconds(5))) << AdminTransaction(xid);
      // A report would be in the log within a few ms (lazy_delay).
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
      EXPECT_EQ(AdminTransaction(xid).find("PhaseOneDone"), std::string::npos) << AdminTransaction(xid);
    }
    Answer done = c->Exec("SELECT dtx.commit()");
    ASSERT_TRUE(done.ok) << done.sqlstate << " " << done.error;
    EXPECT_EQ(done.Value(), "Committed");
    EXPECT_TRUE(WaitStatus(xid, "Committed"));
    EXPECT_TRUE(WaitUndoEmpty());
  }
  EXPECT_EQ(Sql("SELECT balance FROM acct WHERE id = 7").Value(), "102.00");
}

TEST_F(ProxyAt, SelectForUpdateChecksGlobalLocks) {
  auto a = Connect();
  auto b = Connect();
  const std::string xa = Begin(*a);
  Begin(*b);
  ASSERT_TRUE(a->Exec("UPDATE acct SET balance = 1 WHERE id = 7").ok);
  ASSERT_TRUE(b->Exec("BEGIN").ok);
  Answer rows = b->Exec("SELECT id, balance FROM acct WHERE id = 8 FOR UPDATE");
  ASSERT_TRUE(rows.ok) << rows.error;
  EXPECT_EQ(rows.rows.size(), 1u);
  Answer held = b->Exec("SELECT id, balance FROM acct WHERE id IN (7, 8) FOR UPDATE");
  EXPECT_EQ(held.sqlstate, "55P03") << held.error;
  EXPECT_EQ(b->TxStatus(), 'E');
  ASSERT_TRUE(b->Exec("ROLLBACK").ok);
  ASSERT_EQ(a->Exec("SELECT dtx.commit()").Value(), "Committed");
  ASSERT_TRUE(b->Exec("BEGIN").ok);
  EXPECT_TRUE(b->Exec("SELECT id FROM acct WHERE id IN (7, 8) FOR UPDATE").ok);
  ASSERT_TRUE(b->Exec("COMMIT").ok);
}

TEST_F(ProxyAt, RefusalsNameTheReason) {
  Sql("CREATE TABLE nokey (a int, b text)");
  Sql("INSERT INTO nokey VALUES (1, 'x')");
  auto c = Connect();
  Begin(*c);
  struct Case {
    const char* sql;
    const char* needle;
  } cases[] = {
      {"UPDATE nokey SET b = 'y'", "primary key"},
      {"TRUNCATE acct", "TRUNCATE"},
      {"CREATE TABLE t2 (a int)", ""},
      {"UPDATE acct SET balance = 1 FROM nokey WHERE acct.id = nokey.a", "FROM"},
      {"INSERT INTO acct VALUES (1, 1, 'x') ON CONFLICT DO NOTHING", "ON CONFLICT"},
  };
  for (const auto& k : cases) {
    Answer a = c->Exec(k.sql);
    EXPECT_FALSE(a.ok) << k.sql;
    EXPECT_EQ(a.sqlstate, "0A000") << k.sql << ": " << a.error;
    EXPECT_NE(a.error.find(k.needle), std::string::npos) << k.sql << ": " << a.error;
    EXPECT_EQ(c->TxStatus(), 'I');
  }
  // Nothing ran.
  EXPECT_EQ(Sql("SELECT b FROM nokey").Value(), "x");
  EXPECT_EQ(Sql("SELECT count(*) FROM acct").Value(), "10");
  EXPECT_EQ(Sql("SELECT count(*) FROM pg_tables WHERE tablename = 't2'").Value(), "0");
  // In a block the refusal fails the block, as an error of the server's would.
  ASSERT_TRUE(c->Exec("BEGIN").ok);
  ASSERT_TRUE(c->Exec("UPDATE acct SET balance = 3 WHERE id = 1").ok);
  EXPECT_EQ(c->Exec("TRUNCATE acct").sqlstate, "0A000");
  EXPECT_EQ(c->TxStatus(), 'E');
  EXPECT_EQ(c->Exec("UPDATE acct SET balance = 4 WHERE id = 2").sqlstate, "25P02");
  EXPECT_EQ(c->Exec("COMMIT").tag, "ROLLBACK");
  EXPECT_EQ(Sql("SELECT balance FROM acct WHERE id = 1").Value(), "100.00");
  EXPECT_EQ(c->Exec("SELECT 1").Value(), "1");
}

TEST_F(ProxyAt, DtxFunctionRules) {
  auto c = Connect();
  // Inside a block: 25001, and the block fails.
  ASSERT_TRUE(c->Exec("BEGIN").ok);
  Answer in_block = c->Exec("SELECT dtx.begin()");
  EXPECT_EQ(in_block.sqlstate, "25001") << in_block.error;
  EXPECT_EQ(c->TxStatus(), 'E');
  ASSERT_TRUE(c->Exec("ROLLBACK").ok);
  // Named, with a timeout; case and a trailing ';' do not matter.
  Answer begun = c->Exec("select DTX.BEGIN('transfer', 30000);");
  ASSERT_TRUE(begun.ok) << begun.error;
  const std::string xid = begun.Value();
  // The admin API reads the log, where a Begin lands with the coordinator's next commit (a few ms).
  EXPECT_TRUE(WaitStatus(xid, "Begin", std::chrono::seconds(5))) << AdminTransaction(xid);
  EXPECT_NE(AdminTransaction(xid).find("\"name\":\"transfer\""), std::string::npos) << AdminTransaction(xid);
  Answer twice = c->Exec("SELECT dtx.begin()");
  EXPECT_EQ(twice.sqlstate, "25001") << twice.error;
  EXPECT_EQ(c->Exec("SHOW dtx.xid").Value(), xid);
  ASSERT_TRUE(c->Exec("BEGIN").ok);
  EXPECT_EQ(c->Exec("SELECT dtx.commit()").sqlstate, "25001");
  ASSERT_TRUE(c->Exec("ROLLBACK").ok);
  EXPECT_EQ(c->Exec("SELECT dtx.commit(").sqlstate, "42601");
  // Another connection ends it by its XID.
  auto other = Connect();
  Answer by_xid = other->Exec("SELECT dtx.rollback('" + xid + "')");
  ASSERT_TRUE(by_xid.ok) << by_xid.error;
  EXPECT_EQ(by_xid.Value(), "Rollbacked");
  // The first session is still bound to it; its commit names the outcome.
  Answer late = c->Exec("SELECT dtx.commit()");
  EXPECT_FALSE(late.ok);
  EXPECT_EQ(late.sqlstate, "40000") << late.error;
  EXPECT_NE(late.error.find(xid), std::string::npos);
  EXPECT_EQ(c->Exec("SHOW dtx.xid").Value(), "");
  EXPECT_EQ(c->Exec("SELECT dtx.commit()").sqlstate, "25P01");
}

TEST_F(ProxyAt, TimedOutGlobalTransactionCommitIsAnError) {
  auto c = Connect();
  Answer begun = c->Exec("SELECT dtx.begin('short', 200)");
  ASSERT_TRUE(begun.ok) << begun.error;
  ASSERT_TRUE(c->Exec("UPDATE acct SET balance = 0 WHERE id = 9").ok);
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  Answer commit = c->Exec("SELECT dtx.commit()");
  EXPECT_EQ(commit.sqlstate, "40000") << commit.error;
  EXPECT_TRUE(WaitUndoEmpty());
  EXPECT_EQ(Sql("SELECT balance FROM acct WHERE id = 9").Value(), "100.00");
}

TEST_F(ProxyAt, CoordinatorDown) {
  auto c = Connect();
  const std::string xid = Begin(*c);
  ASSERT_TRUE(c->Exec("BEGIN").ok);
  ASSERT_TRUE(c->Exec("UPDATE acct SET balance = 0 WHERE id = 10").ok);
  coordinator_->Kill();
  Answer commit = c->Exec("COMMIT");
  EXPECT_FALSE(commit.ok);
  EXPECT_EQ(commit.sqlstate, "08006") << commit.error;
  EXPECT_EQ(c->TxStatus(), 'I');
  EXPECT_EQ(Sql("SELECT balance FROM acct WHERE id = 10").Value(), "100.00");  // rolled back locally
  EXPECT_EQ(c->Exec("SELECT 1").Value(), "1");  // the session goes on
  auto d = Connect();
  Answer begin = d->Exec("SELECT dtx.begin()");
  EXPECT_EQ(begin.sqlstate, "08006") << begin.error;
  EXPECT_EQ(d->Exec("SELECT 2").Value(), "2");
  // Unbound writes cannot be checked: refused rather than let through.
  EXPECT_EQ(d->Exec("UPDATE acct SET balance = 1 WHERE id = 1").sqlstate, "08006");
}

TEST_F(ProxyAt, NoCoordinatorConfigured) {
  StartProxy({}, false);
  auto c = Connect();
  Answer a = c->Exec("SELECT dtx.begin()");
  EXPECT_FALSE(a.ok);
  EXPECT_NE(a.error.find("no coordinator configured"), std::string::npos) << a.error;
  // Binding and writes work as without AT.
  ASSERT_TRUE(c->Exec("SET dtx.xid = 'x-1'").ok);
  EXPECT_TRUE(c->Exec("UPDATE acct SET balance = 5 WHERE id = 1").ok);
  EXPECT_EQ(UndoRows(), 0);
  // The extended protocol: the binding statements and the functions are answered by the proxy.
  ASSERT_TRUE(c->Params("SET dtx.xid = 'x-2'", {}).ok);
  EXPECT_EQ(c->Exec("SHOW dtx.xid").Value(), "x-2");
  ASSERT_TRUE(c->Prepare("show", "SHOW dtx.xid", 0).ok);
  EXPECT_EQ(c->ExecPrepared("show", {}).Value(), "x-2");
  Answer e = c->Params("SELECT dtx.commit()", {});
  EXPECT_NE(e.error.find("no coordinator configured"), std::string::npos) << e.error;
  EXPECT_EQ(c->Params("SELECT $1::int * 2", {"21"}).Value(), "42");
}

TEST_F(ProxyAt, DatabaseWithoutResourceRefusesBoundWrites) {
  // Only otherdb has AT.
  proxy_.reset();
  proxy_ = std::make_unique<::dtx::testing::ProxyProcess>(std::vector<std::string>{
      "--server", pg_.host + ":" + std::to_string(pg_.port), "--coordinator", coordinator_->address(), "--resource",
      "otherdb=" + schema_->uri()});
  auto c = Connect();
  Begin(*c);
  Answer w = c->Exec("UPDATE acct SET balance = 5 WHERE id = 1");
  EXPECT_EQ(w.sqlstate, "0A000") << w.error;
  EXPECT_NE(w.error.find("--resource"), std::string::npos) << w.error;
  EXPECT_EQ(c->Exec("SELECT balance FROM acct WHERE id = 1").Value(), "100.00");
}

}  // namespace
}  // namespace dtx::at::testing
