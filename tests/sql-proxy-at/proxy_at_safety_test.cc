// AT mode: the ways a bound session's writes could escape its branch (no undo, no global locks)
// are closed. Unbinding inside a block that wrote, libpq pipelines that open and end blocks
// between one Sync and the next, statements larger than the proxy's buffer, databases without
// --resource, and a client encoding the undo log cannot hold. Each test ends with a global
// rollback and checks that every row is back, or that the statement was refused before it ran.
#include <chrono>
#include <string>
#include <thread>

#include "proxy_at_harness.h"

namespace dtx::at::testing {
namespace {

class ProxyAtSafety : public ProxyAtTest {
 protected:
  void SetUp() override {
    ProxyAtTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    Sql("CREATE TABLE acct (id int PRIMARY KEY, balance numeric(12,2) NOT NULL, note text)");
    Sql("INSERT INTO acct SELECT g, 100, '' FROM generate_series(1, 10) g");
    before_ = Snapshot("acct");
  }

  std::string Begin(Client& c) {
    Answer a = c.Exec("SELECT dtx.begin()");
    EXPECT_TRUE(a.ok) << a.sqlstate << " " << a.error;
    return a.Value();
  }

  // Rolls `xid` back through the client and expects every row as it was at SetUp.
  void ExpectRolledBackToStart(Client& c, const std::string& xid) {
    Answer rb = c.Exec("SELECT dtx.rollback('" + xid + "')");
    ASSERT_TRUE(rb.ok) << rb.sqlstate << " " << rb.error;
    EXPECT_TRUE(WaitStatus(xid, "Rollbacked"));
    EXPECT_TRUE(WaitUndoEmpty());
    EXPECT_EQ(Snapshot("acct"), before_);
  }

  std::vector<std::string> before_;
};

TEST_F(ProxyAtSafety, UnbindingInsideABlockThatWroteIsRefused) {
  auto c = Connect();
  const std::string xid = Begin(*c);
  for (const std::string unbind : {"RESET dtx.xid", "SET dtx.xid = ''", "SET LOCAL dtx.xid = ''", "SET dtx.xid TO DEFAULT"}) {
    SCOPED_TRACE(unbind);
    ASSERT_TRUE(c->Exec("BEGIN").ok);
    ASSERT_TRUE(c->Exec("UPDATE acct SET balance = balance - 10 WHERE id = 1").ok);
    Answer r = c->Exec(unbind);
    EXPECT_EQ(r.sqlstate, "0A000") << r.error;
    EXPECT_NE(r.error.find(xid), std::string::npos) << r.error;
    EXPECT_EQ(c->TxStatus(), 'E');  // the block failed: its COMMIT is a ROLLBACK
    EXPECT_EQ(c->Exec("COMMIT").tag, "ROLLBACK");
    EXPECT_EQ(c->Exec("SHOW dtx.xid").Value(), xid);
  }
  // The same through the extended protocol (the proxy answers SET dtx.xid itself there too).
  ASSERT_TRUE(c->Exec("BEGIN").ok);
  ASSERT_TRUE(c->Params("UPDATE acct SET balance = balance - 10 WHERE id = $1", {"2"}).ok);
  Answer r = c->Params("RESET dtx.xid", {});
  EXPECT_EQ(r.sqlstate, "0A000") << r.error;
  EXPECT_EQ(c->Exec("COMMIT").tag, "ROLLBACK");
  // Setting the same xid again is no change; a block that did not write may unbind.
  ASSERT_TRUE(c->Exec("BEGIN").ok);
  ASSERT_TRUE(c->Exec("UPDATE acct SET balance = balance - 10 WHERE id = 3").ok);
  EXPECT_TRUE(c->Exec("SET dtx.xid = '" + xid + "'").ok);
  ASSERT_TRUE(c->Exec("COMMIT").ok);
  ASSERT_TRUE(c->Exec("BEGIN").ok);
  EXPECT_TRUE(c->Exec("RESET dtx.xid").ok);
  ASSERT_TRUE(c->Exec("COMMIT").ok);
  EXPECT_EQ(Sql("SELECT balance FROM acct WHERE id = 3").Value(), "90.00");
  ExpectRolledBackToStart(*c, xid);
}

TEST_F(ProxyAtSafety, PipelineCommitThenWriteBeforeOneSync) {
  auto c = Connect();
  const std::string xid = Begin(*c);
  auto answers = c->Pipeline({"BEGIN", "UPDATE acct SET balance = balance - 10 WHERE id = 1", "COMMIT",
                              "UPDATE acct SET balance = balance - 10 WHERE id = 2"});
  ASSERT_EQ(answers.size(), 4u);
  for (const auto& a : answers) EXPECT_TRUE(a.ok) << a.sqlstate << " " << a.error;
  EXPECT_EQ(answers[2].tag, "COMMIT");
  EXPECT_EQ(c->TxStatus(), 'I');
  EXPECT_EQ(Sql("SELECT sum(balance) FROM acct WHERE id IN (1, 2)").Value(), "180.00");
  ExpectRolledBackToStart(*c, xid);  // both writes are in branches
}

TEST_F(ProxyAtSafety, PipelineWriteThenBeginMakesOneBlock) {
  auto c = Connect();
  const std::string xid = Begin(*c);
  auto answers = c->Pipeline({"UPDATE acct SET balance = balance - 10 WHERE id = 1", "BEGIN",
                              "UPDATE acct SET balance = balance + 10 WHERE id = 2", "COMMIT"});
  ASSERT_EQ(answers.size(), 4u);
  for (const auto& a : answers) EXPECT_TRUE(a.ok) << a.sqlstate << " " << a.error;
  EXPECT_EQ(answers[1].tag, "BEGIN");
  EXPECT_EQ(answers[3].tag, "COMMIT");
  EXPECT_EQ(c->TxStatus(), 'I');
  EXPECT_EQ(Sql("SELECT balance FROM acct WHERE id = 1").Value(), "90.00");
  EXPECT_EQ(Sql("SELECT balance FROM acct WHERE id = 2").Value(), "110.00");
  ExpectRolledBackToStart(*c, xid);
}

TEST_F(ProxyAtSafety, PipelineLockConflictCommitsNothing) {
  auto holder = Connect();
  const std::string held = Begin(*holder);
  ASSERT_TRUE(holder->Exec("UPDATE acct SET balance = 1 WHERE id = 2").ok);  // global lock on id 2
  auto c = Connect();
  const std::string xid = Begin(*c);
  auto answers = c->Pipeline({"UPDATE acct SET balance = balance - 10 WHERE id = 1", "BEGIN",
                              "UPDATE acct SET balance = balance + 10 WHERE id = 3", "COMMIT"});
  ASSERT_EQ(answers.size(), 4u);
  // Without a conflict the implicit transaction became the client's block and committed.
  for (const auto& a : answers) EXPECT_TRUE(a.ok) << a.sqlstate << " " << a.error;
  auto conflict = c->Pipeline({"UPDATE acct SET balance = balance - 10 WHERE id = 4", "BEGIN",
                               "UPDATE acct SET balance = balance + 10 WHERE id = 2", "COMMIT"});
  ASSERT_EQ(conflict.size(), 4u);
  EXPECT_EQ(conflict[3].sqlstate, "55P03") << conflict[3].error;
  EXPECT_EQ(c->TxStatus(), 'I');
  // Nothing of the failed pipeline is committed: id 4 untouched, id 2 still the holder's write.
  EXPECT_EQ(Sql("SELECT balance FROM acct WHERE id = 4").Value(), "100.00");
  EXPECT_EQ(Sql("SELECT balance FROM acct WHERE id = 2").Value(), "1.00");
  Answer rb = holder->Exec("SELECT dtx.rollback()");
  ASSERT_TRUE(rb.ok) << rb.error;
  EXPECT_TRUE(WaitStatus(held, "Rollbacked"));
  ExpectRolledBackToStart(*c, xid);
}

TEST_F(ProxyAtSafety, PipelineSavepointOutsideABlockIsRefused) {
  auto c = Connect();
  const std::string xid = Begin(*c);
  auto answers = c->Pipeline({"UPDATE acct SET balance = 0 WHERE id = 1", "SAVEPOINT s"});
  ASSERT_EQ(answers.size(), 2u);
  EXPECT_EQ(answers[1].sqlstate, "25P01") << answers[1].error;
  EXPECT_EQ(c->TxStatus(), 'I');
  EXPECT_EQ(Snapshot("acct"), before_);  // the failed pipeline's write is rolled back
  ExpectRolledBackToStart(*c, xid);
}

TEST_F(ProxyAtSafety, StatementsLargerThanTheBufferAreStillBranches) {
  auto c = Connect();
  const std::string xid = Begin(*c);
  const std::string big(100 * 1024, 'x');
  // Simple protocol: a value and a comment that together pass 64 KiB.
  Answer u = c->Exec("UPDATE acct SET note = '" + big + "' WHERE id = 1 /* " + big + " */");
  ASSERT_TRUE(u.ok) << u.sqlstate << " " << u.error;
  // Extended: a large Parse and a large Bind value.
  Answer p = c->Params("UPDATE acct SET note = $1 || '" + big + "' WHERE id = $2", {big, "2"});
  ASSERT_TRUE(p.ok) << p.sqlstate << " " << p.error;
  EXPECT_EQ(Sql("SELECT length(note) FROM acct WHERE id = 2").Value(), std::to_string(2 * big.size()));
  ExpectRolledBackToStart(*c, xid);
  // The session goes on normally after the large messages.
  EXPECT_EQ(c->Exec("SELECT 1").Value(), "1");
}

TEST_F(ProxyAtSafety, DatabaseWithoutResourceRefusesWhatItCannotTellIsARead) {
  proxy_.reset();
  proxy_ = std::make_unique<::dtx::testing::ProxyProcess>(std::vector<std::string>{
      "--server", pg_.host + ":" + std::to_string(pg_.port), "--coordinator", coordinator_->address(), "--resource",
      "otherdb=" + schema_->uri()});
  auto c = Connect();
  const std::string xid = Begin(*c);
  for (const std::string sql : {"INSERT INTO acct VALUES (1, 5, '') ON CONFLICT (id) DO UPDATE SET balance = 5",
                                "WITH d AS (DELETE FROM acct WHERE id = 2 RETURNING *) SELECT count(*) FROM d",
                                "TRUNCATE acct", "UPDATE acct SET balance = 1 WHERE id = 3; SELECT 1"}) {
    SCOPED_TRACE(sql);
    Answer a = c->Exec(sql);
    EXPECT_EQ(a.sqlstate, "0A000") << a.error;
    EXPECT_NE(a.error.find("--resource"), std::string::npos) << a.error;
    Answer e = c->Params(sql.substr(0, sql.find(';')), {});
    EXPECT_EQ(e.sqlstate, "0A000") << e.error;
  }
  EXPECT_EQ(c->Exec("SELECT count(*) FROM acct").Value(), "10");  // reads pass
  EXPECT_EQ(Snapshot("acct"), before_);
  ASSERT_TRUE(c->Exec("SELECT dtx.rollback('" + xid + "')").ok);
}

TEST_F(ProxyAtSafety, NonUtf8ClientIsRefusedAndTheProxyLives) {
  auto c = Connect();
  const std::string xid = Begin(*c);
  ASSERT_TRUE(c->Exec("SET client_encoding = 'LATIN1'").ok);
  Answer a = c->Exec(std::string("UPDATE acct SET note = 'caf\xe9' WHERE id = 1"));
  // Refused with the reason (22021 when the text itself is not UTF-8, 0A000 for the session).
  EXPECT_TRUE(a.sqlstate == "0A000" || a.sqlstate == "22021") << a.sqlstate << " " << a.error;
  EXPECT_NE(a.error.find("client_encoding UTF8"), std::string::npos) << a.error;
  Answer b = c->Params(std::string("UPDATE acct SET note = $1 WHERE id = 2"), {std::string("caf\xe9")});
  EXPECT_TRUE(b.sqlstate == "0A000" || b.sqlstate == "22021") << b.sqlstate << " " << b.error;
  EXPECT_NE(b.error.find("UTF"), std::string::npos) << b.error;
  // An ASCII statement is refused for the session's encoding alone.
  Answer d = c->Exec("UPDATE acct SET note = 'cafe' WHERE id = 4");
  EXPECT_EQ(d.sqlstate, "0A000") << d.error;
  EXPECT_NE(d.error.find("client_encoding"), std::string::npos) << d.error;
  ASSERT_TRUE(c->Exec("SET client_encoding = 'UTF8'").ok);
  Answer ok = c->Exec("UPDATE acct SET note = 'café' WHERE id = 3");
  ASSERT_TRUE(ok.ok) << ok.sqlstate << " " << ok.error;
  ExpectRolledBackToStart(*c, xid);
  auto other = Connect();  // the proxy is still serving
  EXPECT_EQ(other->Exec("SELECT 2").Value(), "2");
}

TEST_F(ProxyAtSafety, UnboundWriteOutsideABlockKeepsItsAnswer) {
  // The lock check, the write and a COMMIT run as one local transaction of the proxy's; the
  // client sees the write's own answer and an idle session.
  auto c = Connect();
  Answer r = c->Exec("UPDATE acct SET balance = balance + 1 WHERE id <= 3 RETURNING id");
  ASSERT_TRUE(r.ok) << r.sqlstate << " " << r.error;
  EXPECT_EQ(r.tag, "UPDATE 3");
  EXPECT_EQ(r.rows.size(), 3u);
  EXPECT_EQ(c->TxStatus(), 'I');
  Answer bad = c->Exec("UPDATE acct SET balance = 'x' WHERE id = 4");
  EXPECT_EQ(bad.sqlstate, "22P02");
  EXPECT_EQ(c->TxStatus(), 'I');
  EXPECT_EQ(Sql("SELECT sum(balance) FROM acct").Value(), "1003.00");
  EXPECT_GE(proxy_->Metric("dtx_sql_proxy_at_unbound_checks_total"), 1);
}

TEST_F(ProxyAtSafety, UndoWriteFailureRollsTheCommitBack) {
  // The undo row cannot be written (a trigger stands in for a full disk or a lost table): the
  // COMMIT fails with the server's error, nothing of the block is committed, the session is idle.
  Sql("CREATE FUNCTION refuse_undo() RETURNS trigger LANGUAGE plpgsql AS "
      "$$BEGIN RAISE EXCEPTION USING ERRCODE = '53100', MESSAGE = 'no space for the undo log'; END$$");
  Sql("CREATE TRIGGER refuse BEFORE INSERT ON dtx_undo_log FOR EACH ROW EXECUTE FUNCTION refuse_undo()");
  auto c = Connect();
  const std::string xid = Begin(*c);
  ASSERT_TRUE(c->Exec("BEGIN").ok);
  ASSERT_TRUE(c->Exec("UPDATE acct SET balance = 1 WHERE id = 1").ok);
  Answer commit = c->Exec("COMMIT");
  EXPECT_EQ(commit.sqlstate, "53100") << commit.error;
  EXPECT_NE(commit.error.find("undo log"), std::string::npos) << commit.error;
  EXPECT_EQ(c->TxStatus(), 'I');
  // The extended protocol: a pipeline's COMMIT, and a write outside a block.
  auto answers = c->Pipeline({"BEGIN", "UPDATE acct SET balance = 2 WHERE id = 2", "COMMIT"});
  ASSERT_EQ(answers.size(), 3u);
  EXPECT_EQ(answers[2].sqlstate, "53100") << answers[2].error;
  EXPECT_EQ(c->TxStatus(), 'I');
  Answer single = c->Params("UPDATE acct SET balance = 3 WHERE id = $1", {"3"});
  EXPECT_EQ(single.sqlstate, "53100") << single.error;
  EXPECT_EQ(c->TxStatus(), 'I');
  EXPECT_EQ(Snapshot("acct"), before_);
  Sql("DROP TRIGGER refuse ON dtx_undo_log");
  // The session and the global transaction go on.
  ASSERT_TRUE(c->Exec("UPDATE acct SET balance = 4 WHERE id = 4").ok);
  ExpectRolledBackToStart(*c, xid);
}

TEST_F(ProxyAtSafety, BeforeImageFailureStopsTheStatementSentBehindIt) {
  // An UPDATE takes its before image itself, in one statement; one with `RETURNING *` runs a
  // SELECT ... FOR UPDATE first, and the two go to the server in one write. When the locking fails
  // (here: a local row lock held past lock_timeout), the UPDATE must not have changed anything.
  for (const std::string returning : {"", " RETURNING *"}) {
    SCOPED_TRACE(returning);
    auto local = Direct();
    ASSERT_TRUE(local->Exec("BEGIN").ok);
    ASSERT_TRUE(local->Exec("UPDATE acct SET note = 'held' WHERE id = 1").ok);
    auto c = Connect();
    const std::string xid = Begin(*c);
    ASSERT_TRUE(c->Exec("SET lock_timeout = '100ms'").ok);
    const std::string update = "UPDATE acct SET balance = 0 WHERE id IN (1, 2)" + returning;
    const std::string update_param = "UPDATE acct SET balance = $1 WHERE id IN (1, 2)" + returning;
    Answer a = c->Exec(update);  // outside a block
    EXPECT_EQ(a.sqlstate, "55P03") << a.error;
    EXPECT_EQ(c->TxStatus(), 'I');
    ASSERT_TRUE(c->Exec("BEGIN").ok);
    Answer b = c->Exec(update);  // in a block
    EXPECT_EQ(b.sqlstate, "55P03") << b.error;
    EXPECT_EQ(c->TxStatus(), 'E');
    EXPECT_EQ(c->Exec("COMMIT").tag, "ROLLBACK");
    // The same through the extended protocol.
    Answer e = c->Params(update_param, {"0"});
    EXPECT_EQ(e.sqlstate, "55P03") << e.error;
    EXPECT_EQ(c->TxStatus(), 'I');
    ASSERT_TRUE(c->Exec("BEGIN").ok);
    ASSERT_TRUE(c->Prepare("zero", update_param, 1).ok);
    Answer p = c->ExecPrepared("zero", {"0"});
    EXPECT_EQ(p.sqlstate, "55P03") << p.error;
    EXPECT_EQ(c->TxStatus(), 'E');
    EXPECT_EQ(c->Exec("COMMIT").tag, "ROLLBACK");
    ASSERT_TRUE(local->Exec("ROLLBACK").ok);
    EXPECT_EQ(UndoRows(), 0);
    EXPECT_EQ(Snapshot("acct"), before_);
    // Once the row is free the same statement is a branch like any other.
    ASSERT_TRUE(c->Exec(update).ok);
    EXPECT_EQ(Sql("SELECT sum(balance) FROM acct WHERE id IN (1, 2)").Value(), "0.00");
    ExpectRolledBackToStart(*c, xid);
  }
}

// A bound UPDATE that waits for a row another transaction is changing, which then commits: its
// before image is the row as that transaction left it (the version the UPDATE changed), not the
// one its snapshot saw, both when it takes the image itself and when it runs a SELECT first.
TEST_F(ProxyAtSafety, BeforeImageIsTheRowTheUpdateWaitedFor) {
  for (const std::string returning : {"", " RETURNING *"}) {
    SCOPED_TRACE(returning);
    auto local = Direct();
    ASSERT_TRUE(local->Exec("BEGIN").ok);
    ASSERT_TRUE(local->Exec("UPDATE acct SET balance = 77, note = 'local' WHERE id = 3").ok);
    auto c = Connect();
    const std::string xid = Begin(*c);
    Answer waited;
    std::thread global([&] { waited = c->Exec("UPDATE acct SET balance = balance + 1 WHERE id IN (3, 4)" + returning); });
    // The global UPDATE waits for the local transaction's row lock.
    bool waiting = false;
    for (int i = 0; i < 200 && !waiting; ++i) {
      waiting = Sql("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%FOR UPDATE%'").Value() == "1";
      if (!waiting) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    EXPECT_TRUE(waiting);
    ASSERT_TRUE(local->Exec("COMMIT").ok);
    global.join();
    ASSERT_TRUE(waited.ok) << waited.error;
    EXPECT_EQ(waited.tag, "UPDATE 2");
    EXPECT_EQ(Sql("SELECT balance || ' ' || note FROM acct WHERE id = 3").Value(), "78.00 local");
    ASSERT_TRUE(c->Exec("SELECT dtx.rollback('" + xid + "')").ok);
    EXPECT_TRUE(WaitStatus(xid, "Rollbacked"));
    EXPECT_TRUE(WaitUndoEmpty());
    // Back to the committed local change, not to the snapshot's row.
    EXPECT_EQ(Sql("SELECT balance || ' ' || note FROM acct WHERE id = 3").Value(), "77.00 local");
    EXPECT_EQ(Sql("SELECT balance FROM acct WHERE id = 4").Value(), "100.00");
    Sql("UPDATE acct SET balance = 100, note = '' WHERE id = 3");
    EXPECT_EQ(Snapshot("acct"), before_);
  }
}

// Writes a trigger, rule or function makes beside a bound statement's own rows are not in the
// undo log: a transaction that made any (to a table its statements did not name) is refused at
// its COMMIT and rolled back, in both protocols, in a block and outside one, unless the table is
// listed in --untracked-tables. Triggers that only change the row itself, and functions that
// only read, pass.
TEST_F(ProxyAtSafety, WritesOfTriggersAndFunctionsBesideTheBranchAreRefused) {
  Sql("CREATE TABLE audit (id bigserial PRIMARY KEY, acct int, delta numeric)");
  Sql("CREATE FUNCTION audit_row() RETURNS trigger LANGUAGE plpgsql AS "
      "$$BEGIN INSERT INTO audit (acct, delta) VALUES (NEW.id, NEW.balance - OLD.balance); RETURN NEW; END$$");
  Sql("CREATE TABLE audited (id int PRIMARY KEY, balance numeric NOT NULL)");
  Sql("INSERT INTO audited SELECT g, 100 FROM generate_series(1, 5) g");
  Sql("CREATE TRIGGER audited_audit AFTER UPDATE ON audited FOR EACH ROW EXECUTE FUNCTION audit_row()");
  Sql("CREATE FUNCTION log_it(t text) RETURNS int LANGUAGE sql AS "
      "$$INSERT INTO audit (acct, delta) VALUES (0, 0) RETURNING 1$$");
  Sql("CREATE FUNCTION balance_of(i int) RETURNS numeric LANGUAGE sql AS $$SELECT balance FROM acct WHERE id = i$$");
  Sql("CREATE TABLE stamped (id int PRIMARY KEY, v int NOT NULL, changed timestamptz)");
  Sql("INSERT INTO stamped VALUES (1, 1, NULL)");
  Sql("CREATE FUNCTION stamp() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN NEW.changed = now(); RETURN NEW; END$$");
  Sql("CREATE TRIGGER stamped_stamp BEFORE UPDATE ON stamped FOR EACH ROW EXECUTE FUNCTION stamp()");
  const auto audited = Snapshot("audited");
  auto refused = [](const Answer& a, const std::string& what) {
    EXPECT_FALSE(a.ok) << what;
    EXPECT_EQ(a.sqlstate, "0A000") << what << ": " << a.error;
    EXPECT_NE(a.error.find(".\"audit\" beside"), std::string::npos) << what << ": " << a.error;
    EXPECT_NE(a.error.find("--untracked-tables"), std::string::npos) << what << ": " << a.error;
  };
  auto c = Connect();
  const std::string xid = Begin(*c);

  // A trigger's write: at the block's COMMIT, and outside a block at once.
  ASSERT_TRUE(c->Exec("BEGIN").ok);
  ASSERT_TRUE(c->Exec("UPDATE audited SET balance = balance - 1 WHERE id = 1").ok);
  refused(c->Exec("COMMIT"), "trigger, in a block");
  EXPECT_EQ(c->TxStatus(), 'I');
  refused(c->Exec("UPDATE audited SET balance = balance - 1 WHERE id = 2"), "trigger, outside a block");
  EXPECT_EQ(c->TxStatus(), 'I');
  // A function's write, from a SELECT.
  ASSERT_TRUE(c->Exec("BEGIN").ok);
  EXPECT_EQ(c->Exec("SELECT log_it('in a block')").Value(), "1");
  refused(c->Exec("COMMIT"), "function, in a block");
  refused(c->Exec("SELECT log_it('outside')"), "function, outside a block");
  // The same through the extended protocol.
  refused(c->Params("SELECT log_it($1)", {"extended"}), "function, extended, outside a block");
  refused(c->Params("UPDATE audited SET balance = balance - 1 WHERE id = $1", {"3"}), "trigger, extended");
  ASSERT_TRUE(c->Exec("BEGIN").ok);
  EXPECT_EQ(c->Params("SELECT log_it($1)", {"extended block"}).Value(), "1");
  refused(c->Params("COMMIT", {}), "function, extended, in a block");
  EXPECT_EQ(c->TxStatus(), 'I');
  // A SELECT ... FOR UPDATE that calls one, outside a block; a cursor over one outside a block
  // (refused: the check comes at a COMMIT); unbinding a block that called one.
  Answer locking = c->Exec("SELECT log_it('locking') FROM acct WHERE id = 1 FOR UPDATE");
  refused(locking, "function, SELECT FOR UPDATE");
  EXPECT_NE(locking.error.find("log_it()"), std::string::npos) << locking.error;
  Answer cursor = c->Exec("DECLARE cur CURSOR FOR SELECT log_it('cursor')");
  EXPECT_EQ(cursor.sqlstate, "0A000") << cursor.error;
  EXPECT_NE(cursor.error.find("between BEGIN and COMMIT"), std::string::npos) << cursor.error;
  // A WITH HOLD cursor would run the rest of its query inside the COMMIT, after the check.
  ASSERT_TRUE(c->Exec("BEGIN").ok);
  Answer held = c->Exec("DECLARE held CURSOR WITH HOLD FOR SELECT log_it('held') FROM generate_series(1, 3)");
  EXPECT_EQ(held.sqlstate, "0A000") << held.error;
  EXPECT_NE(held.error.find("WITH HOLD"), std::string::npos) << held.error;
  EXPECT_EQ(c->Exec("COMMIT").tag, "ROLLBACK");
  ASSERT_TRUE(c->Exec("BEGIN").ok);
  EXPECT_TRUE(c->Exec("SELECT log_it('then unbind')").ok);
  EXPECT_EQ(c->Exec("RESET dtx.xid").sqlstate, "0A000");
  EXPECT_EQ(c->Exec("COMMIT").tag, "ROLLBACK");
  // The legacy FunctionCall message (libpq PQfn) of a bound session.
  const unsigned log_it = static_cast<unsigned>(std::stoul(Sql("SELECT 'log_it'::regproc::oid").Value()));
  Answer fastpath = c->FunctionCall(log_it, "fastpath");
  EXPECT_EQ(fastpath.sqlstate, "0A000") << fastpath.error;
  EXPECT_EQ(c->TxStatus(), 'I');
  // A deferred constraint trigger would fire at the COMMIT, after the check: it fires before.
  Sql("CREATE TABLE deferred (id int PRIMARY KEY, balance numeric NOT NULL)");
  Sql("INSERT INTO deferred VALUES (1, 100)");
  Sql("CREATE CONSTRAINT TRIGGER deferred_audit AFTER UPDATE ON deferred DEFERRABLE INITIALLY DEFERRED "
      "FOR EACH ROW EXECUTE FUNCTION audit_row()");
  ASSERT_TRUE(c->Exec("BEGIN").ok);
  ASSERT_TRUE(c->Exec("UPDATE deferred SET balance = 1 WHERE id = 1").ok);
  refused(c->Exec("COMMIT"), "deferred trigger");
  // A column default that calls a function.
  Sql("CREATE TABLE numbered (id int PRIMARY KEY, n int DEFAULT log_it('default'))");
  refused(c->Exec("INSERT INTO numbered (id) VALUES (1)"), "column default");
  EXPECT_EQ(Sql("SELECT count(*) FROM audit").Value(), "0");
  EXPECT_EQ(Sql("SELECT count(*) FROM numbered").Value(), "0");
  EXPECT_EQ(Sql("SELECT balance FROM deferred").Value(), "100");
  EXPECT_EQ(Snapshot("audited"), audited);

  // What passes: a function that only reads, a trigger that only changes its own row, and a
  // write of a table with a trigger that touched no row.
  Answer read = c->Exec("SELECT balance_of(4)");
  EXPECT_EQ(read.Value(), "100.00") << read.ok << " " << read.tag << " " << read.error;
  EXPECT_EQ(c->Params("SELECT balance_of($1)", {"4"}).Value(), "100.00");
  ASSERT_TRUE(c->Exec("BEGIN").ok);
  EXPECT_EQ(c->Exec("SELECT balance_of(5)").Value(), "100.00");
  ASSERT_TRUE(c->Exec("UPDATE acct SET balance = balance - 5 WHERE id = 5").ok);
  Answer committed = c->Exec("COMMIT");
  EXPECT_TRUE(committed.ok) << committed.error;
  Answer stamp = c->Exec("UPDATE stamped SET v = 2 WHERE id = 1");
  EXPECT_TRUE(stamp.ok) << stamp.error;
  EXPECT_EQ(Sql("SELECT changed IS NOT NULL FROM stamped").Value(), "t");
  Answer none = c->Exec("UPDATE audited SET balance = 0 WHERE id = 99");
  EXPECT_TRUE(none.ok) << none.error;
  EXPECT_EQ(Sql("SELECT count(*) FROM audit").Value(), "0");
  ExpectRolledBackToStart(*c, xid);
  // (The undo's own UPDATE fires the trigger again: `changed` is stamped anew.)
  EXPECT_EQ(Sql("SELECT v FROM stamped").Value(), "1");

  // With the audit table untracked, its rows stay after the global rollback; the rest is undone.
  StartProxy({"--untracked-tables", "other_table,audit"});
  auto u = Connect();
  const std::string xid2 = Begin(*u);
  Answer audited_write = u->Exec("UPDATE audited SET balance = balance - 1 WHERE id = 1");
  EXPECT_TRUE(audited_write.ok) << audited_write.error;
  Answer untracked = u->Exec("SELECT log_it('untracked')");
  EXPECT_TRUE(untracked.ok) << untracked.sqlstate << " " << untracked.error;
  EXPECT_EQ(Sql("SELECT count(*) FROM audit").Value(), "2");
  Answer rb = u->Exec("SELECT dtx.rollback('" + xid2 + "')");
  ASSERT_TRUE(rb.ok) << rb.error;
  EXPECT_TRUE(WaitStatus(xid2, "Rollbacked"));
  EXPECT_TRUE(WaitUndoEmpty());
  EXPECT_EQ(Snapshot("audited"), audited);
  // The two rows stay, and the undo's own UPDATE of `audited` was audited too.
  EXPECT_EQ(Sql("SELECT count(*) FROM audit").Value(), "3");
}

// A table's description is read again once older than --catalog-max-age-ms: a trigger created
// past the proxy after its first lookup is seen.
TEST_F(ProxyAtSafety, TriggersCreatedLaterAreSeenOnceTheCatalogEntryAges) {
  StartProxy({"--catalog-max-age-ms", "100"});
  Sql("CREATE TABLE audit (id bigserial PRIMARY KEY, acct int, delta numeric)");
  Sql("CREATE FUNCTION audit_row() RETURNS trigger LANGUAGE plpgsql AS "
      "$$BEGIN INSERT INTO audit (acct, delta) VALUES (NEW.id, NEW.balance - OLD.balance); RETURN NEW; END$$");
  auto c = Connect();
  const std::string xid = Begin(*c);
  ASSERT_TRUE(c->Exec("UPDATE acct SET balance = balance - 1 WHERE id = 1").ok);  // looked up: no trigger
  Sql("CREATE TRIGGER acct_audit AFTER UPDATE ON acct FOR EACH ROW EXECUTE FUNCTION audit_row()");
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  Answer r = c->Exec("UPDATE acct SET balance = balance - 1 WHERE id = 2");
  EXPECT_EQ(r.sqlstate, "0A000") << r.error;
  EXPECT_EQ(Sql("SELECT count(*) FROM audit").Value(), "0");
  Sql("DROP TRIGGER acct_audit ON acct");
  ExpectRolledBackToStart(*c, xid);
}

// --untracked-tables is read by the database at start: a malformed name stops the proxy with the
// reason; a name of no table is only logged.
TEST_F(ProxyAtSafety, UntrackedTablesAreCheckedAtStart) {
  const std::vector<std::string> base = {DTX_SQL_PROXY_BIN, "--port", "0", "--admin", "", "--server",
                                         pg_.host + ":" + std::to_string(pg_.port), "--coordinator",
                                         coordinator_->address(), "--resource", pg_.database + "=" + schema_->uri()};
  auto args = base;
  args.insert(args.end(), {"--untracked-tables", "audit,not a name.x.y.z"});
  ::dtx::testing::RunResult bad = ::dtx::testing::RunProgram(args, "", {}, std::chrono::seconds(20));
  EXPECT_EQ(bad.exit_code, 1) << bad.output;
  EXPECT_NE(bad.output.find("--untracked-tables"), std::string::npos) << bad.output;
  StartProxy({"--untracked-tables", "no_such_table"});
  auto c = Connect();
  EXPECT_TRUE(c->Exec("SELECT 1").ok);
}

// --check-writes-elsewhere false: no check, and a function's writes stay after a global rollback.
TEST_F(ProxyAtSafety, WritesElsewhereGoUncheckedWhenTurnedOff) {
  StartProxy({"--check-writes-elsewhere", "false"});
  Sql("CREATE TABLE audit (id bigserial PRIMARY KEY, note text)");
  Sql("CREATE FUNCTION log_it(t text) RETURNS int LANGUAGE sql AS $$INSERT INTO audit (note) VALUES (t) RETURNING 1$$");
  auto c = Connect();
  const std::string xid = Begin(*c);
  Answer logged = c->Exec("SELECT log_it('unchecked')");
  EXPECT_TRUE(logged.ok) << logged.error;
  ASSERT_TRUE(c->Exec("UPDATE acct SET balance = 0 WHERE id = 1").ok);
  ExpectRolledBackToStart(*c, xid);
  EXPECT_EQ(Sql("SELECT count(*) FROM audit").Value(), "1");
}

}  // namespace
}  // namespace dtx::at::testing
