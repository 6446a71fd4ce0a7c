// Statement analysis with the PostgreSQL grammar: classification, refusals with their SQLSTATE,
// and the before-image / rewritten SQL (their behaviour on a real server is in at_rollback_test).
#include <gtest/gtest.h>

#include "dtx/at/statement_analyzer.h"
#include "dtx/at/statement_shape.h"

namespace dtx::at {
namespace {

TableInfo Table(std::string schema, std::string name, std::vector<std::string> pk) {
  TableInfo t;
  t.schema = std::move(schema);
  t.name = std::move(name);
  t.primary_key = std::move(pk);
  return t;
}

// The table with a column named like the merged UPDATE's FROM item: an UPDATE of it takes its
// before image apart, with a SELECT ... FOR UPDATE before the statement.
TableInfo Apart(TableInfo t) {
  t.columns = t.primary_key;
  t.columns.push_back("dtx_at_note");
  return t;
}

void ExpectRefused(const std::string& sql, const std::string& reason) {
  auto r = Analyze(sql);
  ASSERT_FALSE(r.ok()) << sql;
  EXPECT_EQ(SqlStateOf(r.status()), "0A000") << sql;
  EXPECT_NE(r.status().message().find(reason), std::string_view::npos) << r.status();
}

TEST(StatementAnalyzer, ClassifiesStatementKinds) {
  struct Case {
    const char* sql;
    StatementKind kind;
  } cases[] = {
      {"INSERT INTO t (a) VALUES (1), (2)", StatementKind::kInsert},
      {"insert into s.t select * from u", StatementKind::kInsert},
      {"UPDATE t SET a = a + 1 WHERE b > 3", StatementKind::kUpdate},
      {"DELETE FROM t", StatementKind::kDelete},
      {"SELECT * FROM t WHERE id = $1 FOR UPDATE", StatementKind::kSelectForUpdate},
      {"SELECT * FROM t WHERE id = 1 FOR NO KEY UPDATE", StatementKind::kSelectForUpdate},
      {"SELECT * FROM t WHERE id = 1 FOR SHARE", StatementKind::kReadOnly},
      {"SELECT 1", StatementKind::kReadOnly},
      {"WITH x AS (SELECT 1) SELECT * FROM x", StatementKind::kReadOnly},
      {"SHOW search_path", StatementKind::kReadOnly},
      {"EXPLAIN SELECT 1", StatementKind::kReadOnly},
      {"BEGIN", StatementKind::kTransactionControl},
      {"commit", StatementKind::kTransactionControl},
      {"SAVEPOINT a", StatementKind::kTransactionControl},
      {"SET LOCAL statement_timeout = 5", StatementKind::kOther},
      {"-- only a comment", StatementKind::kEmpty},
  };
  for (const auto& c : cases) {
    auto r = Analyze(c.sql);
    ASSERT_TRUE(r.ok()) << c.sql << ": " << r.status();
    EXPECT_EQ(r->kind, c.kind) << c.sql << " is " << StatementKindName(r->kind);
  }
}

// A call of a function PostgreSQL does not own may write tables the undo log never sees
// (AtBranch::MayWriteElsewhere); PostgreSQL's well-known functions write none.
TEST(StatementAnalyzer, FlagsCallsOfFunctionsItDoesNotKnow) {
  const std::pair<std::string, bool> cases[] = {
      {"SELECT balance FROM acct WHERE id = 1", false},
      {"SELECT count(*), max(balance), now(), lower(note) FROM acct", false},
      {"SELECT pg_catalog.now(), extract(year from current_date), coalesce(note, '')", false},
      {"UPDATE acct SET note = concat(note, 'x'), changed = clock_timestamp() WHERE id = 2", false},
      {"INSERT INTO acct (id, balance) VALUES (nextval('s'), round(1.5))", false},
      {"SELECT audit_it(1)", true},
      {"SELECT public.now()", true},
      {"SELECT * FROM acct WHERE id = (SELECT pick())", true},
      {"UPDATE acct SET balance = fee(balance) WHERE id = 3", true},
      {"INSERT INTO acct (id, balance) SELECT id, my.fn(balance) FROM acct", true},
      {"DELETE FROM acct WHERE id IN (SELECT id FROM expired())", true},
      {"BEGIN", false},
  };
  for (const auto& [sql, calls] : cases) {
    auto r = Analyze(sql);
    ASSERT_TRUE(r.ok()) << sql << ": " << r.status().ToString();
    EXPECT_EQ(r->calls_unknown_functions, calls) << sql;
  }
  // A statement of a cached shape (another literal) carries the flag too.
  auto first = Analyze("SELECT audit_it(41)");
  auto again = Analyze("SELECT audit_it(42)");
  ASSERT_TRUE(first.ok() && again.ok());
  EXPECT_TRUE(again->calls_unknown_functions);
  EXPECT_EQ(again->unknown_function, "audit_it");
  EXPECT_EQ(SqlStateOf(Analyze("DECLARE c CURSOR WITH HOLD FOR SELECT audit_it(1)").status()), "0A000");
  EXPECT_TRUE(Analyze("DECLARE c CURSOR WITH HOLD FOR SELECT lower(note) FROM acct").ok());
  EXPECT_TRUE(Analyze("DECLARE c CURSOR FOR SELECT audit_it(1)").ok());
  EXPECT_EQ(Analyze("SELECT lower(note), my.fn(1) FROM acct")->unknown_function, "my.fn");
}

TEST(StatementAnalyzer, NamesTransactionControl) {
  struct Case {
    const char* sql;
    TransactionOp op;
  } cases[] = {{"BEGIN", TransactionOp::kBegin},       {"START TRANSACTION ISOLATION LEVEL SERIALIZABLE", TransactionOp::kBegin},
               {"COMMIT", TransactionOp::kCommit},     {"END", TransactionOp::kCommit},
               {"commit and chain", TransactionOp::kCommit}, {"ABORT", TransactionOp::kRollback},
               {"ROLLBACK", TransactionOp::kRollback}, {"SAVEPOINT s1", TransactionOp::kSavepoint},
               {"RELEASE s1", TransactionOp::kRelease}, {"ROLLBACK TO SAVEPOINT s1", TransactionOp::kRollbackTo}};
  for (const auto& c : cases) {
    auto r = Analyze(c.sql);
    ASSERT_TRUE(r.ok()) << c.sql;
    EXPECT_EQ(r->kind, StatementKind::kTransactionControl) << c.sql;
    EXPECT_EQ(r->transaction_op, c.op) << c.sql;
  }
  EXPECT_TRUE(Analyze("COMMIT AND CHAIN")->chain);
  EXPECT_EQ(Analyze("ROLLBACK TO s1")->savepoint, "s1");
}

TEST(StatementAnalyzer, NamesTheWrittenTable) {
  auto r = Analyze(R"(UPDATE "My Schema"."Order Lines" AS ol SET qty = 1 WHERE ol."order id" = $1)");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->table.schema, "My Schema");
  EXPECT_EQ(r->table.name, "Order Lines");
  EXPECT_EQ(r->set_columns, std::vector<std::string>{"qty"});
  auto lower = Analyze("delete from Public.ACCOUNTS where id = 1");
  ASSERT_TRUE(lower.ok());
  EXPECT_EQ(lower->table.schema, "public");
  EXPECT_EQ(lower->table.name, "accounts");
}

TEST(StatementAnalyzer, RefusesWhatCannotBeUndone) {
  ExpectRefused("UPDATE t SET a = 1; DELETE FROM t", "2 statements");
  ExpectRefused("CREATE TABLE x (a int)", "DDL");
  ExpectRefused("ALTER TABLE t ADD COLUMN b int", "DDL");
  ExpectRefused("DROP TABLE t", "DDL");
  ExpectRefused("TRUNCATE t", "TRUNCATE");
  ExpectRefused("INSERT INTO t VALUES (1) ON CONFLICT DO NOTHING", "ON CONFLICT");
  ExpectRefused("INSERT INTO t VALUES (1) ON CONFLICT (id) DO UPDATE SET a = 2", "ON CONFLICT");
  ExpectRefused("UPDATE t SET a = u.a FROM u WHERE t.id = u.id", "UPDATE ... FROM");
  ExpectRefused("DELETE FROM t USING u WHERE t.id = u.id", "DELETE ... USING");
  ExpectRefused("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d", "writable CTE \"d\"");
  ExpectRefused("WITH d AS (UPDATE t SET a = 1 RETURNING *) INSERT INTO u SELECT * FROM d", "writable CTE");
  ExpectRefused("UPDATE t SET a = 1 WHERE CURRENT OF c", "CURRENT OF");
  ExpectRefused("EXPLAIN ANALYZE DELETE FROM t", "EXPLAIN");
  ExpectRefused("COPY t FROM STDIN", "COPY");
  ExpectRefused("DO $$ BEGIN DELETE FROM t; END $$", "DO");
  ExpectRefused("CALL p()", "CALL");
  ExpectRefused("EXECUTE s(1)", "PREPARE/EXECUTE");
  ExpectRefused("SELECT * INTO n FROM t", "INTO");
  ExpectRefused("PREPARE TRANSACTION 'x'", "two-phase commit");
  ExpectRefused("MERGE INTO t USING u ON t.id = u.id WHEN MATCHED THEN DELETE", "MERGE");
}

TEST(StatementAnalyzer, SyntaxErrorsAreSqlErrors) {
  auto r = Analyze("UPDATE t SET WHERE");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(SqlStateOf(r.status()), "42601");
  EXPECT_NE(r.status().message().find("syntax error"), std::string_view::npos);
}

TEST(StatementAnalyzer, RefusesTablesWithoutKeyAndKeyUpdates) {
  auto r = Analyze("UPDATE t SET a = 1");
  ASSERT_TRUE(r.ok());
  auto none = Plan(*r, Table("public", "t", {}));
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(SqlStateOf(none.status()), "0A000");
  EXPECT_NE(none.status().message().find("has no primary key"), std::string_view::npos);

  auto k = Analyze("UPDATE t SET id = id + 1, a = 2");
  ASSERT_TRUE(k.ok());
  auto key = Plan(*k, Table("public", "t", {"id"}));
  ASSERT_FALSE(key.ok());
  EXPECT_NE(key.status().message().find("primary-key column \"id\""), std::string_view::npos);
}

TEST(StatementAnalyzer, UpdateGetsBeforeImageWithItsOwnWhereAndParameters) {
  auto r = Analyze(R"(UPDATE "My Schema"."Order Lines" ol SET qty = $1 WHERE ol."order id" = $2 AND qty < $3)");
  ASSERT_TRUE(r.ok()) << r.status();
  auto p = Plan(*r, Apart(Table("My Schema", "Order Lines", {"order id", "line"})));
  ASSERT_TRUE(p.ok()) << p.status();
  const std::string& b = p->before_image_sql;
  EXPECT_NE(b.find("FROM \"My Schema\".\"Order Lines\" AS \"ol\""), std::string::npos) << b;
  // Only the WHERE's parameters, renumbered: $2 -> $1, $3 -> $2.
  EXPECT_NE(b.find("ol.\"order id\" = $1 AND qty < $2"), std::string::npos) << b;
  EXPECT_EQ(b.find("$3"), std::string::npos) << b;
  EXPECT_EQ(p->extra_params, (std::vector<int>{2, 3}));
  QueryParams client;
  client.values = {"5", "a", std::nullopt};
  client.formats = {0, 1, 0};
  client.types = {23, 25};
  auto sub = SelectParams(client, p->extra_params);
  EXPECT_EQ(sub.values, (std::vector<std::optional<std::string>>{"a", std::nullopt}));
  EXPECT_EQ(sub.formats, (std::vector<int16_t>{1, 0}));
  EXPECT_EQ(sub.types, (std::vector<uint32_t>{25, 0}));
  EXPECT_NE(b.find("FOR UPDATE"), std::string::npos) << b;
  EXPECT_NE(b.find("row_to_json(\"ol\".*)"), std::string::npos) << b;
  EXPECT_NE(b.find("ol.\"order id\""), std::string::npos) << b;
  EXPECT_EQ(p->hidden_columns, 2);
  EXPECT_NE(p->statement_sql.find("RETURNING"), std::string::npos) << p->statement_sql;
  EXPECT_NE(p->statement_sql.find("$1"), std::string::npos) << p->statement_sql;
}

// The same UPDATE takes its before image itself: one statement, the client's own parameter
// numbers, the rows joined to themselves by their (composite) key, three hidden columns.
TEST(StatementAnalyzer, UpdateTakesItsBeforeImageItself) {
  auto r = Analyze(R"(UPDATE "My Schema"."Order Lines" ol SET qty = $1 WHERE ol."order id" = $2 AND qty < $3)");
  ASSERT_TRUE(r.ok()) << r.status();
  auto p = Plan(*r, Table("My Schema", "Order Lines", {"order id", "line"}));
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_TRUE(p->before_image_sql.empty());
  EXPECT_TRUE(p->extra_params.empty());
  EXPECT_EQ(p->hidden_columns, 3);
  EXPECT_EQ(p->statement_sql,
            R"(UPDATE "My Schema"."Order Lines" ol SET qty = $1  FROM (SELECT row_to_json("ol".*)::text AS dtx_at_before, )"
            R"("ol"."order id" AS dtx_at_k1, "ol"."line" AS dtx_at_k2 FROM "My Schema"."Order Lines" AS "ol" )"
            R"(WHERE ol."order id" = $2 AND qty < $3 FOR UPDATE) AS dtx_at_old )"
            R"(WHERE "ol"."order id" = dtx_at_old.dtx_at_k1 AND "ol"."line" = dtx_at_old.dtx_at_k2)"
            "\nRETURNING json_build_array(\"ol\".\"order id\"::text, \"ol\".\"line\"::text)::text AS dtx_pk, "
            R"(row_to_json("ol".*)::text AS dtx_image, dtx_at_old.dtx_at_before)");
  auto apart = Plan(*r, Apart(Table("My Schema", "Order Lines", {"order id", "line"})));
  ASSERT_TRUE(apart.ok()) << apart.status();
  EXPECT_TRUE(SameMergedUpdate(p->statement_sql, apart->statement_sql, apart->before_image_sql, apart->extra_params));
  // A wrong pairing is told apart: another condition, another table.
  auto other = Analyze(R"(UPDATE "My Schema"."Order Lines" ol SET qty = $1 WHERE ol."order id" = $2 AND qty <= $3)");
  ASSERT_TRUE(other.ok());
  auto other_plan = Plan(*other, Apart(Table("My Schema", "Order Lines", {"order id", "line"})));
  ASSERT_TRUE(other_plan.ok());
  EXPECT_FALSE(SameMergedUpdate(p->statement_sql, other_plan->statement_sql, other_plan->before_image_sql,
                                other_plan->extra_params));

  // The client's RETURNING items stay first; `*` among them would take the FROM item's columns
  // too, so such an UPDATE takes its before image apart.
  auto items = Analyze("UPDATE t SET a = a + 1 WHERE id = $1 RETURNING a, id AS k");
  ASSERT_TRUE(items.ok());
  auto pi = Plan(*items, Table("public", "t", {"id"}));
  ASSERT_TRUE(pi.ok());
  EXPECT_EQ(pi->hidden_columns, 3);
  EXPECT_NE(pi->statement_sql.find(") AS dtx_at_old WHERE \"t\".\"id\" = dtx_at_old.dtx_at_k1 RETURNING a, id AS k\n, "),
            std::string::npos)
      << pi->statement_sql;
  for (const char* star : {"UPDATE t SET a = 1 WHERE id = 2 RETURNING *", "UPDATE t SET a = 1 RETURNING t.*, 1"}) {
    auto st = Analyze(star);
    ASSERT_TRUE(st.ok()) << star;
    auto ps = Plan(*st, Table("public", "t", {"id"}));
    ASSERT_TRUE(ps.ok());
    EXPECT_EQ(ps->hidden_columns, 2) << star;
    EXPECT_FALSE(ps->before_image_sql.empty()) << star;
  }
  // Without a WHERE every row is locked and joined.
  auto all = Analyze("UPDATE t SET a = 0");
  ASSERT_TRUE(all.ok());
  auto pa = Plan(*all, Table("public", "t", {"id"}));
  ASSERT_TRUE(pa.ok());
  EXPECT_NE(pa->statement_sql.find("FROM \"t\" FOR UPDATE) AS dtx_at_old WHERE"), std::string::npos) << pa->statement_sql;
}

// A write whose literals are all plain numbers standing for values gets a prepared form: the
// shape's one text with the numbers as parameters, typed as the literals are.
TEST(StatementAnalyzer, NumbersBecomeTypedParametersOfAPreparedForm) {
  auto u = Analyze("UPDATE t SET a = a + -42, b = 1.50 * 2 WHERE id = 7");
  ASSERT_TRUE(u.ok()) << u.status();
  auto pu = Plan(*u, Table("public", "t", {"id"}));
  ASSERT_TRUE(pu.ok()) << pu.status();
  EXPECT_EQ(pu->prepared_sql.substr(0, pu->prepared_sql.find(" FROM (")), "UPDATE t SET a = a + -$1, b = $2 * $3 ");
  EXPECT_NE(pu->prepared_sql.find("FROM \"t\" WHERE id = $4 FOR UPDATE) AS dtx_at_old"), std::string::npos) << pu->prepared_sql;
  EXPECT_EQ(pu->prepared_params.values, (std::vector<std::optional<std::string>>{"42", "1.50", "2", "7"}));
  EXPECT_EQ(pu->prepared_params.types, (std::vector<uint32_t>{23, 1700, 23, 23}));
  EXPECT_EQ(pu->hidden_columns, 3);
  // The statement's own text stays as it was.
  EXPECT_EQ(pu->statement_sql.find("UPDATE t SET a = a + -42, b = 1.50 * 2 "), 0u) << pu->statement_sql;

  auto i = Analyze("INSERT INTO t (id, a) VALUES (1, 2), (3, round(4.5))");
  ASSERT_TRUE(i.ok());
  auto pi = Plan(*i, Table("public", "t", {"id"}));
  ASSERT_TRUE(pi.ok());
  EXPECT_EQ(pi->prepared_sql.substr(0, pi->prepared_sql.find('\n')), "INSERT INTO t (id, a) VALUES ($1, $2), ($3, round(4.5))");
  auto d = Analyze("DELETE FROM t WHERE id IN (1, 2)");
  ASSERT_TRUE(d.ok());
  auto pd = Plan(*d, Table("public", "t", {"id"}));
  ASSERT_TRUE(pd.ok());
  EXPECT_EQ(pd->prepared_sql.substr(0, pd->prepared_sql.find('\n')), "DELETE FROM t WHERE id IN ($1, $2)");

  // No prepared form: a string literal, a number meaning a position, the client's own parameters,
  // a before image taken apart, no literal at all, RETURNING items of the client's (their types
  // could change under a kept statement).
  for (const char* sql : {"UPDATE t SET a = 'x' WHERE id = 1", "DELETE FROM t WHERE id IN (SELECT id FROM t ORDER BY a, 2)",
                          "INSERT INTO t SELECT id, 2 FROM s GROUP BY id, 2", "UPDATE t SET a = $1 WHERE id = 2",
                          "UPDATE t SET a = a + 1 WHERE id = 2 RETURNING *", "DELETE FROM t",
                          "INSERT INTO t (id, a) VALUES (1, 2) RETURNING a"}) {
    auto r = Analyze(sql);
    ASSERT_TRUE(r.ok()) << sql << ": " << r.status();
    auto p = Plan(*r, Table("public", "t", {"id"}));
    ASSERT_TRUE(p.ok()) << sql << ": " << p.status();
    EXPECT_TRUE(p->prepared_sql.empty()) << sql << ": " << p->prepared_sql;
    EXPECT_TRUE(p->prepared_params.values.empty()) << sql;
  }
  // The second statement of a shape is recurring: it comes from the cache.
  EXPECT_FALSE(Analyze("UPDATE t SET a = 17 WHERE id = 123457").value().recurring);
  EXPECT_TRUE(Analyze("UPDATE t SET a = 18 WHERE id = 123458").value().recurring);
}

TEST(StatementAnalyzer, ClientReturningItemsStayFirst) {
  auto r = Analyze("INSERT INTO t (a) VALUES ($1) RETURNING id, a AS x");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->returning_items, 2);
  auto p = Plan(*r, Table("public", "t", {"id"}));
  ASSERT_TRUE(p.ok());
  const auto& s = p->statement_sql;
  auto client = s.find("RETURNING id, a AS x\n, ");
  EXPECT_NE(client, std::string::npos) << s;
  EXPECT_TRUE(p->before_image_sql.empty());
}

TEST(StatementAnalyzer, SelectForUpdateGetsLockKeysQuery) {
  auto r = Analyze("SELECT balance FROM accounts a WHERE a.id = $1 FOR UPDATE");
  ASSERT_TRUE(r.ok());
  auto p = Plan(*r, Table("public", "accounts", {"id"}));
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_NE(p->lock_keys_sql.find("json_build_array(\"a\".\"id\"::text)"), std::string::npos) << p->lock_keys_sql;
  EXPECT_NE(p->lock_keys_sql.find("$1"), std::string::npos);
  EXPECT_EQ(p->hidden_columns, 0);
}

TEST(StatementAnalyzer, RaiseErrorSqlCarriesStateAndText) {
  std::string sql = RaiseErrorSql(SqlError("0A000", "it's $dtx$ odd"));
  EXPECT_NE(sql.find("ERRCODE = '0A000'"), std::string::npos) << sql;
  EXPECT_NE(sql.find("it''s"), std::string::npos) << sql;
  EXPECT_EQ(sql.find("$dtx$ odd"), std::string::npos) << sql;
}

TEST(StatementAnalyzer, OddInputIsAnErrorOrAPlanNeverACrash) {
  std::vector<std::string> inputs = {"", ";", ";;;", "\x01\x02", "UPDATE", "'unterminated", "$$", "/* open comment",
                                     "SELECT $999999999", "UPDATE t SET a = $0", std::string(1000, '('),
                                     "DELETE FROM t WHERE " + std::string(200, '(') + "1" + std::string(200, ')'),
                                     std::string("UPDATE t SET a = 1\0 WHERE b", 26)};
  std::string nested = "1";
  for (int i = 0; i < 2000; ++i) nested = "(" + nested + " + 1)";
  inputs.push_back("UPDATE t SET a = " + nested + " WHERE id = $1");
  for (const auto& in : inputs) {
    auto r = Analyze(in);
    if (r.ok() && (r->kind == StatementKind::kUpdate || r->kind == StatementKind::kDelete)) {
      auto p = Plan(*r, Table("public", "t", {"id"}));
      if (!p.ok()) {
        EXPECT_FALSE(SqlStateOf(p.status()).empty());
      }
    } else if (!r.ok()) {
      EXPECT_EQ(SqlStateOf(r.status()).size(), 5u) << r.status();
    }
  }
}

// Protobuf's default depth limit (100) made a sum of some 50 terms unreadable (XX000). Real
// statements nest that deep; only trees past kMaxTreeDepth are refused, with 54001.
TEST(StatementAnalyzer, DeepExpressionsArePlannedAndTooDeepOnesRefused) {
  std::string sum = "a";
  for (int i = 0; i < 300; ++i) sum += " + $1";
  auto r = Analyze("UPDATE t SET a = " + sum + " WHERE id = $2 AND b >= " + sum);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->kind, StatementKind::kUpdate);
  auto p = Plan(*r, Table("public", "t", {"id"}));
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_NE(p->statement_sql.find("WHERE id = $2 AND b >= a + $1 + $1"), std::string::npos) << p->statement_sql.substr(0, 200);
  auto apart = Plan(*r, Apart(Table("public", "t", {"id"})));
  ASSERT_TRUE(apart.ok()) << apart.status();
  EXPECT_NE(apart->before_image_sql.find("WHERE id = $1 AND b >= a + $2 + $2"), std::string::npos)
      << apart->before_image_sql.substr(0, 200);

  std::string deep = "a";
  for (int i = 0; i < 3000; ++i) deep += " + 1";
  auto too_deep = Analyze("UPDATE t SET a = " + deep + " WHERE id = 1");
  ASSERT_FALSE(too_deep.ok());
  EXPECT_EQ(SqlStateOf(too_deep.status()), "54001") << too_deep.status();
  EXPECT_NE(too_deep.status().message().find("nests deeper than"), std::string_view::npos) << too_deep.status();

  // From a session bound to no global transaction: a write whose keys cannot be read is refused,
  // a read passes.
  const LocalWrite w = AnalyzeLocal("UPDATE t SET a = " + deep + " WHERE id = 1");
  ASSERT_EQ(w.check, LocalWrite::Check::kRefuse);
  EXPECT_EQ(SqlStateOf(*w.refusal), "54001");
  EXPECT_EQ(AnalyzeLocal("SELECT " + deep + " FROM t").check, LocalWrite::Check::kNone);
  EXPECT_EQ(AnalyzeLocal("UPDATE t SET a = " + sum + " WHERE id = 1").check, LocalWrite::Check::kKeys);
}

}  // namespace
}  // namespace dtx::at

namespace dtx::at {
namespace {

TEST(StatementAnalyzer, ParameterZeroIsRefusedAsTheServerWould) {
  for (const char* sql : {"UPDATE t SET a = 1 WHERE id = $0", "SELECT $0", "INSERT INTO t VALUES ($1, $00)",
                          "DELETE FROM t WHERE id = $0 -- x"}) {
    auto r = Analyze(sql);
    ASSERT_FALSE(r.ok()) << sql;
    EXPECT_EQ(SqlStateOf(r.status()), "42P02") << sql;
    EXPECT_NE(r.status().message().find("there is no parameter $0"), std::string_view::npos) << r.status();
  }
  // "$0" that is not a parameter, and parameters whose number merely starts with 0 in text.
  for (const char* sql : {"UPDATE t SET a = '$0' WHERE id = $1", "SELECT 1 AS \"$0\"", "UPDATE t SET a = $10 WHERE id = $1",
                          "UPDATE t SET a = $$ $0 $$ WHERE id = 1"}) {
    auto r = Analyze(sql);
    EXPECT_TRUE(r.ok()) << sql << ": " << r.status();
  }
}

// The rewritten statement is the client's text with the hidden items appended: it must stay one
// statement with the same table, parameters and client items, whatever surrounds it.
TEST(StatementAnalyzer, RewrittenStatementKeepsTheClientsTextAndParsesBack) {
  struct Case {
    const char* sql;
    int client_items;
  } cases[] = {
      {"UPDATE t SET a = $1 WHERE id = $2 -- trailing comment", 0},
      {"UPDATE t SET a = 1 WHERE id = 2;", 0},
      {"  /* leading */ DELETE FROM t WHERE id = 2 ;  -- after", 0},
      {"INSERT INTO t (a) VALUES (1) RETURNING *", 1},
      {"INSERT INTO t (a) VALUES (1) RETURNING id, a -- note", 2},
      {"WITH v AS (SELECT 1 AS x) UPDATE t SET a = v.x FROM (SELECT 1) s WHERE false", -1},  // refused: FROM
      {"WITH v AS (SELECT 2 AS x) DELETE FROM t WHERE id IN (SELECT x FROM v) RETURNING id", 1},
      {"INSERT INTO t SELECT g FROM generate_series(1, 3) g ORDER BY 1 LIMIT 2", 0},
  };
  for (const auto& c : cases) {
    auto r = Analyze(c.sql);
    if (c.client_items < 0) {
      EXPECT_FALSE(r.ok()) << c.sql;
      continue;
    }
    ASSERT_TRUE(r.ok()) << c.sql << ": " << r.status();
    auto p = Plan(*r, Apart(Table("public", "t", {"id"})));
    ASSERT_TRUE(p.ok()) << c.sql << ": " << p.status();
    if (r->kind == StatementKind::kUpdate) {
      auto merged = Plan(*r, Table("public", "t", {"id"}));
      ASSERT_TRUE(merged.ok()) << c.sql << ": " << merged.status();
      EXPECT_EQ(merged->hidden_columns, 3) << c.sql;
      EXPECT_TRUE(SameMergedUpdate(merged->statement_sql, p->statement_sql, p->before_image_sql, p->extra_params))
          << merged->statement_sql;
    }
    auto again = Analyze(p->statement_sql);
    ASSERT_TRUE(again.ok()) << p->statement_sql << ": " << again.status();
    EXPECT_EQ(again->kind, r->kind) << p->statement_sql;
    EXPECT_EQ(again->table.name, "t");
    EXPECT_EQ(again->returning_items, c.client_items + 2) << p->statement_sql;
    EXPECT_EQ(p->hidden_columns, 2);
    EXPECT_NE(p->statement_sql.find("json_build_array(\"t\".\"id\"::text)::text AS dtx_pk, row_to_json(\"t\".*)::text AS dtx_image"),
              std::string::npos)
        << p->statement_sql;
  }
}

TEST(StatementAnalyzer, TextAfterANulByteIsNotSpliced) {
  auto r = Analyze(std::string("UPDATE t SET a = 1\0 WHERE b", 26));
  ASSERT_TRUE(r.ok()) << r.status();
  auto p = Plan(*r, Apart(Table("public", "t", {"id"})));
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->statement_sql.find('\0'), std::string::npos);
  EXPECT_EQ(p->statement_sql.find("WHERE b"), std::string::npos) << p->statement_sql;
  EXPECT_TRUE(Analyze(p->statement_sql).ok());
  auto merged = Plan(*r, Table("public", "t", {"id"}));
  ASSERT_TRUE(merged.ok()) << merged.status();
  EXPECT_EQ(merged->statement_sql.find('\0'), std::string::npos);
  EXPECT_EQ(merged->statement_sql.find("WHERE b"), std::string::npos) << merged->statement_sql;
  EXPECT_TRUE(SameMergedUpdate(merged->statement_sql, p->statement_sql, p->before_image_sql, p->extra_params));
}

// The parse tree is shared by copies and outlives the first ParsedStatement; the kept templates
// never give one table's (or alias's) target list to another.
TEST(StatementAnalyzer, CopiesPlanAloneAndTemplatesDoNotMix) {
  std::optional<ParsedStatement> copy;
  {
    auto r = Analyze("UPDATE a SET x = $1 WHERE k = $2");
    ASSERT_TRUE(r.ok());
    copy = *r;
  }
  for (int round = 0; round < 2; ++round) {
    auto pa = Plan(*copy, Apart(Table("public", "a", {"k"})));
    ASSERT_TRUE(pa.ok()) << pa.status();
    EXPECT_NE(pa->before_image_sql.find("json_build_array(\"a\".\"k\"::text)"), std::string::npos) << pa->before_image_sql;
    EXPECT_NE(pa->before_image_sql.find("k = $1"), std::string::npos) << pa->before_image_sql;
    EXPECT_EQ(pa->extra_params, (std::vector<int>{2}));
    auto rb = Analyze("UPDATE b AS bb SET y = 1 WHERE id1 = 3 AND id2 = 4");
    ASSERT_TRUE(rb.ok());
    auto pb = Plan(*rb, Apart(Table("public", "b", {"id1", "id2"})));
    ASSERT_TRUE(pb.ok()) << pb.status();
    EXPECT_NE(pb->before_image_sql.find("json_build_array(\"bb\".\"id1\"::text, \"bb\".\"id2\"::text)"), std::string::npos)
        << pb->before_image_sql;
    EXPECT_NE(pb->before_image_sql.find("FROM \"b\" AS \"bb\" WHERE id1 = 3 AND id2 = 4 FOR UPDATE"), std::string::npos)
        << pb->before_image_sql;
    EXPECT_TRUE(pb->extra_params.empty());
    EXPECT_EQ(pb->before_image_sql.find("\"a\".\"k\""), std::string::npos) << pb->before_image_sql;
    // And the merged form of each.
    auto ma = Plan(*copy, Table("public", "a", {"k"}));
    ASSERT_TRUE(ma.ok()) << ma.status();
    EXPECT_NE(ma->statement_sql.find("\"a\".\"k\" AS dtx_at_k1 FROM \"a\" WHERE k = $2 FOR UPDATE"), std::string::npos)
        << ma->statement_sql;
    auto mb = Plan(*rb, Table("public", "b", {"id1", "id2"}));
    ASSERT_TRUE(mb.ok()) << mb.status();
    EXPECT_NE(mb->statement_sql.find("WHERE \"bb\".\"id1\" = dtx_at_old.dtx_at_k1 AND \"bb\".\"id2\" = dtx_at_old.dtx_at_k2"),
              std::string::npos)
        << mb->statement_sql;
    EXPECT_EQ(mb->statement_sql.find("\"a\".\"k\""), std::string::npos) << mb->statement_sql;
  }
}

TEST(AnalyzeLocal, WritesGetAHiddenKeyColumnAfterTheirOwnText) {
  const TableInfo t = Table("public", "t", {"id", "b"});
  struct Case {
    std::string sql, statement;
  };
  const std::vector<Case> cases = {
      {"INSERT INTO t VALUES (1, 2)", "INSERT INTO t VALUES (1, 2)\nRETURNING json_build_array(\"t\".\"id\"::text, \"t\".\"b\"::text)::text AS dtx_pk"},
      {"update t as x set v = 1 from u where x.id = u.id returning x.v;  -- done",
       "update t as x set v = 1 from u where x.id = u.id returning x.v\n, json_build_array(\"x\".\"id\"::text, \"x\".\"b\"::text)::text AS dtx_pk"},
      {"DELETE FROM s.t USING u WHERE t.id = u.id -- why", "DELETE FROM s.t USING u WHERE t.id = u.id -- why\nRETURNING json_build_array(\"t\".\"id\"::text, \"t\".\"b\"::text)::text AS dtx_pk"},
      {"INSERT INTO t AS a VALUES ($1, 'x;y') ON CONFLICT (id, b) DO UPDATE SET v = excluded.v;",
       "INSERT INTO t AS a VALUES ($1, 'x;y') ON CONFLICT (id, b) DO UPDATE SET v = excluded.v\nRETURNING json_build_array(\"a\".\"id\"::text, \"a\".\"b\"::text)::text AS dtx_pk"},
  };
  for (const auto& c : cases) {
    for (int i = 0; i < 2; ++i) {  // the second time from the shape cache
      LocalWrite w = AnalyzeLocal(c.sql);
      ASSERT_EQ(w.check, LocalWrite::Check::kKeys) << c.sql;
      StatementPlan p = PlanLocalWrite(w, t, c.sql);
      EXPECT_EQ(p.statement_sql, c.statement) << c.sql;
      EXPECT_EQ(p.hidden_columns, 1);
      // A table without a key: nothing to check, the text as it is.
      StatementPlan keyless = PlanLocalWrite(w, Table("public", "t", {}), c.sql);
      EXPECT_EQ(keyless.statement_sql, c.sql);
      EXPECT_EQ(keyless.hidden_columns, 0);
    }
  }
  // The same shape with other literals keeps its own text.
  LocalWrite w = AnalyzeLocal("INSERT INTO t VALUES (123456, 7)");
  EXPECT_EQ(PlanLocalWrite(w, t, "INSERT INTO t VALUES (123456, 7)").statement_sql.substr(0, 33),
            "INSERT INTO t VALUES (123456, 7)\n");
}

TEST(AnalyzeLocal, WhatCannotBeCheckedIsRefusedAndTheRestLeftAlone) {
  for (const std::string sql : {"WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
                                "with d as (update t set v = 1 returning id) insert into u select id from d",
                                "MERGE INTO t USING u ON t.id = u.id WHEN MATCHED THEN DELETE",
                                "EXPLAIN ANALYZE DELETE FROM t", "explain (analyze, costs off) update t set v = 1",
                                "PREPARE p(int) AS DELETE FROM t WHERE id = $1"}) {
    LocalWrite w = AnalyzeLocal(sql);
    EXPECT_EQ(w.check, LocalWrite::Check::kRefuse) << sql;
    ASSERT_TRUE(w.refusal.has_value()) << sql;
    EXPECT_EQ(SqlStateOf(*w.refusal), "0A000");
    EXPECT_NE(w.refusal->message().find("--check-unbound-writes"), std::string_view::npos) << *w.refusal;
  }
  for (const std::string sql : {"SELECT 1", "WITH x AS (SELECT 1) SELECT * FROM x", "EXPLAIN DELETE FROM t",
                                "EXPLAIN (ANALYZE false) DELETE FROM t", "PREPARE p AS SELECT 1", "COPY t TO STDOUT",
                                "COPY (SELECT * FROM t) TO STDOUT", "SELEC oops", "CREATE TABLE z (a int)"}) {
    EXPECT_EQ(AnalyzeLocal(sql).check, LocalWrite::Check::kNone) << sql;
  }
  // What cannot name the rows it writes is checked table by table once it ran.
  for (const std::string sql : {"TRUNCATE t", "truncate only a, b cascade", "CALL p(1)", "DO $$ BEGIN NULL; END $$",
                                "COPY t FROM STDIN", "COPY (DELETE FROM t RETURNING *) TO STDOUT",
                                "COPY (WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d) TO STDOUT"}) {
    const LocalWrite w = AnalyzeLocal(sql);
    EXPECT_EQ(w.check, LocalWrite::Check::kTables) << sql;
    EXPECT_EQ(w.truncates, sql.starts_with("TRUNCATE") || sql.starts_with("truncate")) << sql;
    EXPECT_EQ(w.copies, sql.starts_with("COPY")) << sql;
    EXPECT_EQ(w.copies_in, sql == "COPY t FROM STDIN") << sql;
    EXPECT_EQ(w.procedure, sql.starts_with("CALL") || sql.starts_with("DO")) << sql;
  }
  EXPECT_TRUE(AnalyzeLocal("COPY t TO STDOUT").copies);
  EXPECT_EQ(AnalyzeLocal("SELECT 1; UPDATE t SET v = 1").check, LocalWrite::Check::kSeveral);
}

TEST(SplitStatements, EachStatementWithoutItsSemicolon) {
  auto s = SplitStatements("UPDATE t SET v = ';' WHERE id = 1;  /* two */ DELETE FROM t;\nSELECT 1 -- end");
  ASSERT_TRUE(s.ok()) << s.status();
  ASSERT_EQ(s->size(), 3u);
  EXPECT_EQ((*s)[0], "UPDATE t SET v = ';' WHERE id = 1");
  EXPECT_EQ((*s)[1], "  /* two */ DELETE FROM t");
  EXPECT_EQ((*s)[2], "\nSELECT 1 -- end");
  auto empty = SplitStatements("SELECT 1;;");
  ASSERT_TRUE(empty.ok());
  for (auto piece : *empty) EXPECT_NE(AnalyzeLocal(piece).check, LocalWrite::Check::kSeveral);
  EXPECT_FALSE(SplitStatements("SELECT (;").ok());
}

}  // namespace
}  // namespace dtx::at
