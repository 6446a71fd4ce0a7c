// AT mode end to end, per column type and statement kind: a global rollback puts back exactly
// the rows there were (compared as row_to_json of every row), through the simple and the
// extended query protocol; composite keys. (A json value's whitespace inside the value is kept;
// whitespace before or after it is not: see docs/undo-log.md.)
#include "proxy_at_harness.h"

namespace dtx::at::testing {
namespace {

class ProxyAtTypes : public ProxyAtTest {
 protected:
  void SetUp() override {
    ProxyAtTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    Sql("CREATE TABLE typed (id bigint PRIMARY KEY, i int, n numeric(20,6), t text, ts timestamp, tz timestamptz,"
        " b boolean, raw bytea, j json, jb jsonb, d date, f float8, u uuid, arr int[])");
    Sql("INSERT INTO typed VALUES"
        " (1, 1, 1.5, 'one', '2024-01-01 10:00:00.123456', '2024-01-01 10:00:00+02', true, '\\x00ff10', '{\"a\": 1}',"
        "  '{\"b\": [1, 2]}', '2024-02-29', 0.1, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{1,2,3}'),"
        " (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),"
        " (3, -7, 123456789.000001, 'quote '' and \\ backslash, é, 中', 'infinity', '-infinity', false, '', 'null',"
        "  '[]', '1999-12-31', 'NaN', '00000000-0000-0000-0000-000000000000', '{}'),"
        " (4, 2147483647, -0.000001, E'tab\\tnewline\\n', '1970-01-01', '1970-01-01 00:00:00+00', true, '\\xdeadbeef',"
        "  '{\"spaced\" :  true }', '{\"z\": null}', '2000-01-01', 1e300, NULL, '{NULL,1}')");
    Sql("CREATE TABLE pair (region text, num int, qty int NOT NULL, note text, PRIMARY KEY (region, num))");
    Sql("INSERT INTO pair SELECT r, g, g * 10, NULL FROM unnest(array['eu', 'us', 'a:b,c.d\\e']) r, generate_series(1, 3) g");
  }

  std::string Begin(Client& c) {
    Answer a = c.Exec("SELECT dtx.begin()");
    EXPECT_TRUE(a.ok) << a.sqlstate << " " << a.error;
    return a.Value();
  }

  void RollBackAndCompare(Client& c, const std::string& xid, const std::vector<std::string>& typed,
                          const std::vector<std::string>& pair) {
    Answer rb = c.Exec("SELECT dtx.rollback()");
    ASSERT_TRUE(rb.ok) << rb.sqlstate << " " << rb.error;
    EXPECT_TRUE(WaitStatus(xid, "Rollbacked")) << AdminTransaction(xid);
    EXPECT_TRUE(WaitUndoEmpty());
    EXPECT_EQ(Snapshot("typed"), typed);
    EXPECT_EQ(Snapshot("pair"), pair);
  }
};

TEST_F(ProxyAtTypes, SimpleProtocolUpdateEveryType) {
  const auto typed = Snapshot("typed"), pair = Snapshot("pair");
  auto c = Connect();
  const std::string xid = Begin(*c);
  Answer u = c->Exec(
      "UPDATE typed SET i = coalesce(i, 0) - 1, n = 2.25, t = 'changed', ts = now(), tz = now(), b = NOT coalesce(b, false),"
      " raw = '\\x01', j = '{\"x\": 2}', jb = '{\"y\": 3}', d = current_date, f = 2.5, u = NULL, arr = '{9}'");
  ASSERT_TRUE(u.ok) << u.error;
  EXPECT_EQ(u.tag, "UPDATE 4");
  EXPECT_NE(Snapshot("typed"), typed);
  RollBackAndCompare(*c, xid, typed, pair);
}

TEST_F(ProxyAtTypes, SimpleProtocolInsertDeleteEveryType) {
  const auto typed = Snapshot("typed"), pair = Snapshot("pair");
  auto c = Connect();
  const std::string xid = Begin(*c);
  ASSERT_TRUE(c->Exec("BEGIN").ok);
  Answer d = c->Exec("DELETE FROM typed WHERE id IN (1, 3, 4) RETURNING id");
  ASSERT_TRUE(d.ok) << d.error;
  EXPECT_EQ(d.rows.size(), 3u);
  ASSERT_TRUE(c->Exec("INSERT INTO typed SELECT id + 100, i, n, t, ts, tz, b, raw, j, jb, d, f, u, arr FROM "
                      "(SELECT * FROM typed WHERE id = 2) s").ok);
  ASSERT_TRUE(c->Exec("INSERT INTO typed (id, t, raw, j) VALUES (200, 'new', '\\xabcd', '[1, \"two\"]')").ok);
  ASSERT_TRUE(c->Exec("COMMIT").ok);
  EXPECT_EQ(Sql("SELECT count(*) FROM typed").Value(), "3");
  RollBackAndCompare(*c, xid, typed, pair);
}

TEST_F(ProxyAtTypes, CompositeKeys) {
  const auto typed = Snapshot("typed"), pair = Snapshot("pair");
  auto c = Connect();
  const std::string xid = Begin(*c);
  ASSERT_TRUE(c->Exec("UPDATE pair SET qty = qty + 1, note = 'x' WHERE num >= 2").ok);
  ASSERT_TRUE(c->Exec("DELETE FROM pair WHERE region = 'a:b,c.d\\e' AND num = 1").ok);
  ASSERT_TRUE(c->Exec("INSERT INTO pair VALUES ('eu', 4, 40, 'new'), ('a:b', 1, 1, NULL)").ok);
  // The lock keys keep the separators of the key parts apart.
  const std::string view = AdminTransaction(xid);
  EXPECT_NE(view.find("a\\\\:b\\\\,c\\\\.d"), std::string::npos) << view;
  RollBackAndCompare(*c, xid, typed, pair);
}

TEST_F(ProxyAtTypes, ExtendedProtocolWithParameters) {
  const auto typed = Snapshot("typed"), pair = Snapshot("pair");
  auto c = Connect();
  const std::string xid = Begin(*c);
  Answer u = c->Params("UPDATE typed SET t = $1, raw = $2::bytea, n = $3 WHERE id = $4 RETURNING id, t",
                       {"param text", "\\x0102", std::nullopt, "1"});
  ASSERT_TRUE(u.ok) << u.sqlstate << " " << u.error;
  ASSERT_EQ(u.rows.size(), 1u);
  ASSERT_EQ(u.rows[0].size(), 2u);
  EXPECT_EQ(u.rows[0][1], "param text");
  EXPECT_EQ(Sql("SELECT t FROM typed WHERE id = 1").Value(), "param text");  // committed as its own branch
  Answer i = c->Params("INSERT INTO pair VALUES ($1, $2, $3, $4)", {"us", "9", "90", std::nullopt});
  ASSERT_TRUE(i.ok) << i.error;
  EXPECT_EQ(i.tag, "INSERT 0 1");
  ASSERT_TRUE(c->Exec("BEGIN").ok);
  ASSERT_TRUE(c->Prepare("del", "DELETE FROM pair WHERE region = $1 AND num = $2", 2).ok);
  for (const char* n : {"1", "2", "3"}) {
    Answer d = c->ExecPrepared("del", {"eu", n});
    ASSERT_TRUE(d.ok) << d.error;
    EXPECT_EQ(d.tag, "DELETE 1");
  }
  Answer commit = c->Params("COMMIT", {});
  ASSERT_TRUE(commit.ok) << commit.error;
  EXPECT_EQ(Sql("SELECT count(*) FROM pair WHERE region = 'eu'").Value(), "0");
  EXPECT_GE(UndoRows(), 3);
  RollBackAndCompare(*c, xid, typed, pair);
}

TEST_F(ProxyAtTypes, ExtendedProtocolDtxFunctionsAndXidStatements) {
  auto c = Connect();
  Answer begun = c->Params("SELECT dtx.begin('ext')", {});
  ASSERT_TRUE(begun.ok) << begun.error;
  const std::string xid = begun.Value();
  ASSERT_FALSE(xid.empty());
  Answer show = c->Params("SHOW dtx.xid", {});
  ASSERT_TRUE(show.ok) << show.error;
  EXPECT_EQ(show.Value(), xid);
  ASSERT_TRUE(c->Params("UPDATE pair SET qty = 0 WHERE region = $1", {"us"}).ok);
  ASSERT_TRUE(c->Params("RESET dtx.xid", {}).ok);
  EXPECT_EQ(c->Params("SHOW dtx.xid", {}).Value(), "");
  ASSERT_TRUE(c->Params("SET dtx.xid = '" + xid + "'", {}).ok);
  EXPECT_EQ(c->Exec("SHOW dtx.xid").Value(), xid);
  Answer done = c->Params("SELECT dtx.rollback()", {});
  ASSERT_TRUE(done.ok) << done.error;
  EXPECT_EQ(done.Value(), "Rollbacked");
  EXPECT_TRUE(WaitUndoEmpty());
  EXPECT_EQ(Sql("SELECT count(*) FROM pair WHERE qty = 0").Value(), "0");
  // A refusal through the extended protocol, and the session goes on.
  Begin(*c);
  Answer refused = c->Params("TRUNCATE pair", {});
  EXPECT_EQ(refused.sqlstate, "0A000") << refused.error;
  EXPECT_EQ(c->Params("SELECT $1::int + 1", {"1"}).Value(), "2");
  ASSERT_TRUE(c->Exec("SELECT dtx.commit()").ok);
  // Parameters as arguments, as node's pg sends them.
  Answer named = c->Params("SELECT dtx.begin($1, $2)", {"by-param", "30000"});
  ASSERT_TRUE(named.ok) << named.error;
  // The admin API reads the log, where a Begin lands with the coordinator's next commit (a few ms).
  EXPECT_TRUE(WaitStatus(named.Value(), "Begin", std::chrono::seconds(5))) << AdminTransaction(named.Value());
  EXPECT_NE(AdminTransaction(named.Value()).find("\"name\":\"by-param\""), std::string::npos);
  auto other = Connect();
  Answer by_xid = other->Params("SELECT dtx.rollback($1)", {named.Value()});
  ASSERT_TRUE(by_xid.ok) << by_xid.error;
  EXPECT_EQ(by_xid.Value(), "Rollbacked");
  EXPECT_EQ(other->Exec("SELECT dtx.begin($1)").sqlstate, "42P02");
}

// The queries the proxy runs for a statement the client prepared under a name (its rewritten
// statement, a before image taken apart, the catalog query) and the undo-row insert are prepared once per session; a client's
// DEALLOCATE ALL or Close of a named statement drops them, and they are prepared again.
TEST_F(ProxyAtTypes, QueriesOfNamedStatementsArePreparedOnce) {
  auto c = Connect();
  auto kept = [&] {
    return c->Exec("SELECT count(*) FROM pg_prepared_statements WHERE name LIKE 'dtx\\_at\\_%'").Value();
  };
  ASSERT_TRUE(c->Prepare("move", "UPDATE pair SET qty = qty + $1 WHERE region = $2 AND num = $3", 3).ok);
  for (int round = 0; round < 3; ++round) {
    SCOPED_TRACE(round);
    const std::string xid = Begin(*c);
    ASSERT_TRUE(c->Exec("BEGIN").ok);
    Answer a = c->ExecPrepared("move", {"1", "eu", "1"});
    ASSERT_TRUE(a.ok) << a.error;
    EXPECT_EQ(a.tag, "UPDATE 1");
    ASSERT_TRUE(c->Exec("COMMIT").ok);
    // The statement with its hidden columns (the UPDATE takes its before image itself), the
    // catalog query that read the table's key on the first round, and the undo-row insert of the
    // simple-protocol COMMIT.
    EXPECT_EQ(kept(), "3");
    ASSERT_EQ(c->Exec("SELECT dtx.rollback()").Value(), "Rollbacked");
    ASSERT_TRUE(c->Exec("RESET dtx.xid").ok);
  }
  EXPECT_TRUE(WaitUndoEmpty());
  ASSERT_TRUE(c->Exec("DEALLOCATE ALL").ok);
  EXPECT_EQ(kept(), "0");
  ASSERT_TRUE(c->Prepare("move", "UPDATE pair SET qty = qty + $1 WHERE region = $2 AND num = $3", 3).ok);
  const std::string xid = Begin(*c);
  // Outside a block: its own branch, whose undo row is written by the extended path too (the
  // table's key is known by now: no catalog query).
  Answer again = c->ExecPrepared("move", {"1", "eu", "1"});
  ASSERT_TRUE(again.ok) << again.error;
  EXPECT_EQ(kept(), "3");  // the statement, the undo-row insert and the COMMIT sent with it
  ASSERT_EQ(c->Exec("SELECT dtx.commit()").Value(), "Committed");
  EXPECT_EQ(Sql("SELECT qty FROM pair WHERE region = 'eu' AND num = 1").Value(), "11");
}

TEST_F(ProxyAtTypes, ExtendedProtocolUnboundWriteChecked) {
  auto g = Connect();
  auto local = Connect();
  const std::string xid = Begin(*g);
  ASSERT_TRUE(g->Params("UPDATE pair SET qty = 1 WHERE region = $1 AND num = $2", {"eu", "1"}).ok);
  Answer blocked = local->Params("UPDATE pair SET qty = 2 WHERE region = $1 AND num = $2", {"eu", "1"});
  EXPECT_EQ(blocked.sqlstate, "55P03") << blocked.error;
  Answer free = local->Params("UPDATE pair SET qty = 2 WHERE region = $1 AND num = $2", {"eu", "2"});
  EXPECT_TRUE(free.ok) << free.error;
  EXPECT_EQ(free.tag, "UPDATE 1");
  // In the client's block, the writes' keys are checked once, before an Execute that may commit
  // the block: the COMMIT fails, and the block is rolled back.
  ASSERT_TRUE(local->Exec("BEGIN").ok);
  ASSERT_TRUE(local->Params("UPDATE pair SET qty = 3 WHERE region = $1 AND num = $2", {"eu", "1"}).ok);
  ASSERT_TRUE(local->Params("UPDATE pair SET qty = 3 WHERE region = $1 AND num = $2", {"eu", "2"}).ok);
  Answer read = local->Params("SELECT qty FROM pair WHERE region = $1 AND num = $2", {"eu", "1"});
  ASSERT_TRUE(read.ok) << read.error;  // not a COMMIT: nothing checked yet
  EXPECT_EQ(local->TxStatus(), 'T');
  Answer commit = local->Params("COMMIT", {});
  EXPECT_EQ(commit.sqlstate, "55P03") << commit.error;
  EXPECT_NE(commit.error.find(xid), std::string::npos) << commit.error;
  EXPECT_EQ(local->TxStatus(), 'I');
  // A write and its COMMIT in one pipeline.
  ASSERT_TRUE(local->Exec("BEGIN").ok);
  auto piped = local->Pipeline({"UPDATE pair SET qty = 4 WHERE region = 'eu' AND num = 1", "COMMIT"});
  ASSERT_EQ(piped.size(), 2u);
  EXPECT_TRUE(piped[0].ok) << piped[0].error;
  EXPECT_EQ(piped[1].sqlstate, "55P03") << piped[1].error;
  EXPECT_EQ(local->TxStatus(), 'I');
  EXPECT_EQ(Sql("SELECT string_agg(qty::text, ',' ORDER BY num) FROM pair WHERE region = 'eu' AND num IN (1, 2)").Value(),
            "1,2");

  ASSERT_TRUE(g->Exec("SELECT dtx.commit()").ok);
  EXPECT_TRUE(local->Params("UPDATE pair SET qty = 2 WHERE region = $1 AND num = $2", {"eu", "1"}).ok);
  // Free rows: the block commits, after one check.
  const auto checks = proxy_->Metric("dtx_sql_proxy_at_unbound_checks_total");
  ASSERT_TRUE(local->Exec("BEGIN").ok);
  ASSERT_TRUE(local->Params("UPDATE pair SET qty = 5 WHERE region = $1 AND num = $2", {"eu", "1"}).ok);
  ASSERT_TRUE(local->Params("UPDATE pair SET qty = 5 WHERE region = $1 AND num = $2", {"eu", "2"}).ok);
  Answer done = local->Params("COMMIT", {});
  ASSERT_TRUE(done.ok) << done.error;
  EXPECT_EQ(done.tag, "COMMIT");
  EXPECT_EQ(proxy_->Metric("dtx_sql_proxy_at_unbound_checks_total"), checks + 1);
  EXPECT_EQ(Sql("SELECT string_agg(qty::text, ',' ORDER BY num) FROM pair WHERE region = 'eu' AND num IN (1, 2)").Value(),
            "5,5");
}

}  // namespace
}  // namespace dtx::at::testing

namespace dtx::at::testing {
namespace {

// A bound simple-protocol write whose literals are all plain numbers runs as its shape's one
// prepared text with the numbers as parameters typed as the literals are (int4, numeric), from the
// second statement of its shape on: the server keeps one statement per shape and session. Each statement still means what its text
// means (integer division, a negative number, a decimal's scale, a number in a function call),
// and is rolled back like any other. Strings, and numbers where they mean a position (ORDER BY),
// keep the statement's own text.
TEST_F(ProxyAtTypes, SimpleWritesWithNumbersRunPreparedOncePerShape) {
  const auto typed = Snapshot("typed"), pair = Snapshot("pair");
  auto c = Connect();
  auto kept = [&] {
    return c->Exec("SELECT count(*) FROM pg_prepared_statements WHERE name LIKE 'dtx\\_at\\_%'").Value();
  };
  std::string xid = Begin(*c);
  ASSERT_TRUE(c->Exec("BEGIN").ok);
  for (int k = 1; k <= 3; ++k) {
    const std::string n = std::to_string(k);
    Answer a = c->Exec("UPDATE typed SET i = 7 / 2 + -" + n + ", n = 1.50 * " + n + ", f = power(2, 3) + 0." + n +
                       " WHERE id = " + n);
    ASSERT_TRUE(a.ok) << a.error;
    EXPECT_EQ(a.tag, "UPDATE 1");
    EXPECT_EQ(kept(), k == 1 ? "0" : "1");  // its first statement ran as written
  }
  EXPECT_EQ(c->Exec("SELECT i || ' ' || n || ' ' || f FROM typed WHERE id = 2").Value(), "1 3.000000 8.2");
  EXPECT_EQ(c->Exec("SELECT i || ' ' || n || ' ' || f FROM typed WHERE id = 3").Value(), "0 4.500000 8.3");
  ASSERT_TRUE(c->Exec("INSERT INTO typed (id, i, n) VALUES (99, 4, 0.5)").ok);
  ASSERT_TRUE(c->Exec("INSERT INTO typed (id, i, n) VALUES (100, 5, 0.25)").ok);
  Answer ins = c->Exec("INSERT INTO typed (id, i, n) VALUES (101, -6, 1.125) RETURNING id, i * 2");
  ASSERT_TRUE(ins.ok) << ins.error;
  ASSERT_EQ(ins.rows.size(), 1u);
  ASSERT_EQ(ins.rows[0].size(), 2u);
  EXPECT_EQ(ins.rows[0][0].value_or("NULL"), "101");
  EXPECT_EQ(ins.rows[0][1].value_or("NULL"), "-12");
  ASSERT_TRUE(c->Exec("DELETE FROM typed WHERE id = 99").ok);
  Answer del = c->Exec("DELETE FROM typed WHERE id = 4");
  ASSERT_TRUE(del.ok) << del.error;
  EXPECT_EQ(del.tag, "DELETE 1");
  EXPECT_EQ(kept(), "3");  // the UPDATE, the INSERT, the DELETE (not the INSERT with RETURNING)
  // Not prepared: a string among the literals; a number that means a column position.
  ASSERT_TRUE(c->Exec("INSERT INTO pair (region, num, qty) VALUES ('zz', 10, 5)").ok);
  Answer ordered = c->Exec("UPDATE typed SET b = NOT b WHERE id IN (SELECT id FROM typed ORDER BY i, 1 LIMIT 1)");
  ASSERT_TRUE(ordered.ok) << ordered.error;
  EXPECT_EQ(kept(), "3");
  ASSERT_TRUE(c->Exec("COMMIT").ok);
  EXPECT_EQ(kept(), "4");  // and the undo-row insert
  RollBackAndCompare(*c, xid, typed, pair);
  ASSERT_TRUE(c->Exec("RESET dtx.xid").ok);

  // The next global transaction runs from the same statements, also outside a block.
  xid = Begin(*c);
  Answer again = c->Exec("UPDATE typed SET i = 7 / 2 + -9, n = 1.50 * 9, f = power(2, 3) + 0.9 WHERE id = 1");
  ASSERT_TRUE(again.ok) << again.error;
  EXPECT_EQ(Sql("SELECT i || ' ' || n || ' ' || f FROM typed WHERE id = 1").Value(), "-6 13.500000 8.9");
  EXPECT_EQ(kept(), "4");
  // A client's DEALLOCATE ALL drops them; they are prepared again, and nothing fails.
  ASSERT_TRUE(c->Exec("DEALLOCATE ALL").ok);
  EXPECT_EQ(kept(), "0");
  ASSERT_TRUE(c->Exec("BEGIN").ok);
  Answer after = c->Exec("UPDATE typed SET i = 7 / 2 + -8, n = 1.50 * 8, f = power(2, 3) + 0.8 WHERE id = 2");
  ASSERT_TRUE(after.ok) << after.error;
  ASSERT_TRUE(c->Exec("COMMIT").ok);
  EXPECT_EQ(kept(), "2");
  RollBackAndCompare(*c, xid, typed, pair);
}

}  // namespace
}  // namespace dtx::at::testing
