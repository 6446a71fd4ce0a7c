// Statement shapes: the key scanner, the cache, and the proof that the cached, spliced path
// plans exactly what the grammar plans for the same text (and what the deparse path means).
#include <gtest/gtest.h>

#include <random>

#include "at_harness.h"
#include "dtx/at/statement_shape.h"
#include "dtx/at/undo_executor.h"

namespace dtx::at {
namespace {

TableInfo Table(std::string name, std::vector<std::string> pk, bool cascades = false) {
  TableInfo t;
  t.schema = "public";
  t.name = std::move(name);
  t.primary_key = std::move(pk);
  t.delete_cascades = cascades;
  return t;
}

// Literal texts of `sql` as the key abstracted them.
std::vector<std::string> Literals(const std::string& sql) {
  auto k = ComputeShapeKey(sql);
  std::vector<std::string> out;
  for (const auto& l : k.literals) out.push_back(sql.substr(l.begin, l.len));
  return out;
}

TEST(StatementShape, KeyAbstractsPlainLiteralsWhereTheirValueCannotMatter) {
  auto a = ComputeShapeKey("UPDATE pgbench_accounts SET abalance = abalance + -4321 WHERE aid = 77");
  auto b = ComputeShapeKey("UPDATE pgbench_accounts SET abalance = abalance + -5 WHERE aid = 123456");
  ASSERT_TRUE(a.abstracted);
  EXPECT_EQ(a.key, b.key);
  EXPECT_EQ(Literals("UPDATE pgbench_accounts SET abalance = abalance + -4321 WHERE aid = 77"),
            (std::vector<std::string>{"4321", "77"}));
  EXPECT_EQ(Literals("INSERT INTO h (a, b, c) VALUES (1, 'it''s', 2.50, CURRENT_TIMESTAMP)"),
            (std::vector<std::string>{"1", "'it''s'", "2.50"}));
  EXPECT_EQ(Literals("SELECT * FROM t WHERE id IN (1, 2) AND (x = 3)"), (std::vector<std::string>{"1", "2", "3"}));
  // Kept in the key: calls and type modifiers, literals after keywords, long integers.
  EXPECT_TRUE(Literals("SELECT f(1) FROM t WHERE a = x::varchar(10) AND b = y::numeric(10, 2)").empty());
  EXPECT_TRUE(Literals("SELECT 1::float(5) FROM t LIMIT 5 OFFSET 2").empty());
  EXPECT_TRUE(Literals("SELECT date '2020-01-01', interval '1 day' FROM t WHERE a = 1234567890").empty());
  EXPECT_NE(ComputeShapeKey("UPDATE t SET a = 1 WHERE id = 1234567890").key,
            ComputeShapeKey("UPDATE t SET a = 1 WHERE id = 1234567891").key);
  // Comments and quoted identifiers are text, whatever they hold.
  EXPECT_EQ(Literals("UPDATE \"t 'x' 5\" SET a = 1 /* 'b' /* 2 */ */ -- 'c' 3\n WHERE id = 4"),
            (std::vector<std::string>{"1", "4"}));
}

TEST(StatementShape, KeyIsTheExactTextForWhatTheScannerDoesNotKnow) {
  for (const std::string& sql : std::vector<std::string>{
           "UPDATE t SET a = $$x$$ WHERE id = 1", "UPDATE t SET a = $q$x$q$", "UPDATE t SET a = E'x\\n' WHERE id = 1",
        "UPDATE t SET a = 'x\\' WHERE id = 1", "UPDATE t SET a = B'101'", "UPDATE t SET a = X'1F'", "UPDATE t SET a = U&'x'",
        "UPDATE t SET a = 1e5", "UPDATE t SET a = 0x1F", "UPDATE t SET a = 1_000", "UPDATE t SET a = .5", "UPDATE t SET a = 5.",
        "UPDATE t SET a = 'open", "UPDATE t SET a = 1 /* open", "UPDATE t SET a = (1", "UPDATE t SET a = 1)",
        "UPDATE t SET a = U&\"x\"", "UPDATE t SET a = {1}", std::string("UPDATE t SET a = 1\0 WHERE b", 26),
        "UPDATE t SET a = '\x01'", "UPDATE t SET a = $1x"}) {
    auto k = ComputeShapeKey(sql);
    EXPECT_FALSE(k.abstracted) << sql;
    EXPECT_TRUE(k.literals.empty()) << sql;
    EXPECT_EQ(k.key, "E" + sql);
  }
}

struct Corpus {
  const char* first;   // the statement that teaches the cache its shape
  const char* second;  // another of the same shape, planned from the cache
  bool shared;         // whether the second is expected to reuse the first's shape
};

// Statements of every kind AT plans, with what makes splicing hard.
const Corpus kCorpus[] = {
    {"UPDATE pgbench_accounts SET abalance = abalance + -17 WHERE aid = 3", "UPDATE pgbench_accounts SET abalance = abalance + -4000 WHERE aid = 999999", true},
    {"INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (1, 2, 3, 4, CURRENT_TIMESTAMP)",
     "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (10, 20, 30, 40, CURRENT_TIMESTAMP)", true},
    {"UPDATE t SET a = $1 WHERE id = $2", "UPDATE t SET a = $1 WHERE id = $2", true},
    {"UPDATE t SET a = 'x', b = 1.5 WHERE id = 7 AND name = 'bob' RETURNING id, a",
     "UPDATE t SET a = 'it''s', b = 22.25 WHERE id = 8 AND name = '' RETURNING id, a", true},
    {"UPDATE t AS x SET a = 1 WHERE x.id = 2 -- note 'q'", "UPDATE t AS x SET a = 3 WHERE x.id = 40 -- note 'q'", true},
    {"update ONLY s.t set a = a * 2 where (id = 5 or id = 6) and b <> 'z';",
     "update ONLY s.t set a = a * 2 where (id = 7 or id = 8) and b <> 'y';", true},
    {"UPDATE \"Odd \"\"T\"\"\" SET \"v\" = 1 WHERE \"k 1\" = 2", "UPDATE \"Odd \"\"T\"\"\" SET \"v\" = 3 WHERE \"k 1\" = 4", true},
    {"UPDATE t SET a = $3 WHERE id = $2 AND b IN (SELECT c FROM u WHERE u.d = $1 AND u.e = 5) RETURNING $3",
     "UPDATE t SET a = $3 WHERE id = $2 AND b IN (SELECT c FROM u WHERE u.d = $1 AND u.e = 6) RETURNING $3", true},
    {"WITH v AS (SELECT $2::int AS x, 1 AS y) UPDATE t SET a = v.y FROM v WHERE false", nullptr, false},  // refused
    {"WITH v AS (SELECT $2::int AS x, 1 AS y) DELETE FROM t WHERE id IN (SELECT x + 3 FROM v) AND a = $1",
     "WITH v AS (SELECT $2::int AS x, 1 AS y) DELETE FROM t WHERE id IN (SELECT x + 4 FROM v) AND a = $1", true},
    {"WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 3) UPDATE t SET a = 1 WHERE id IN (SELECT n FROM r)",
     "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 3) UPDATE t SET a = 2 WHERE id IN (SELECT n FROM r)", true},
    {"DELETE FROM t WHERE id = 1", "DELETE FROM t WHERE id = 2", true},
    {"DELETE FROM t", "DELETE FROM t", true},
    {"DELETE FROM t WHERE a = 'x' RETURNING *", "DELETE FROM t WHERE a = 'y' RETURNING *", true},
    {"UPDATE t SET a = 1", "UPDATE t SET a = 2", true},
    {"UPDATE t SET a = 1 WHERE b = ANY(ARRAY[1, 2]) AND c BETWEEN 1 AND 5", "UPDATE t SET a = 2 WHERE b = ANY(ARRAY[1, 2]) AND c BETWEEN 1 AND 5", true},
    {"UPDATE t SET a = 1 WHERE c = CASE WHEN d > 1 THEN 'a' ELSE 'b' END", "UPDATE t SET a = 9 WHERE c = CASE WHEN d > 2 THEN 'a' ELSE 'b' END", true},
    {"UPDATE t SET a = $$x$$ WHERE id = 1", "UPDATE t SET a = $$x$$ WHERE id = 1", true},
    {"UPDATE t SET a = E'\\n' WHERE id = 1 AND b = 'q'", "UPDATE t SET a = E'\\n' WHERE id = 1 AND b = 'q'", true},
    {"UPDATE t SET a = 'x'\n'y' WHERE id = 1", "UPDATE t SET a = 'z'\n'w' WHERE id = 2", false},  // one constant of two strings
    {"SELECT * FROM t WHERE id = 5 FOR UPDATE", "SELECT * FROM t WHERE id = 6 FOR UPDATE", true},
    {"SELECT a FROM t x WHERE x.id = $1 ORDER BY a LIMIT 3 FOR NO KEY UPDATE OF x", "SELECT a FROM t x WHERE x.id = $1 ORDER BY a LIMIT 3 FOR NO KEY UPDATE OF x", true},
    {"SELECT a FROM t WHERE a IS DISTINCT FROM 3 FOR UPDATE", "SELECT a FROM t WHERE a IS DISTINCT FROM 4 FOR UPDATE", false},  // a literal after a keyword is text
    {"SELECT * FROM t FOR UPDATE", "SELECT * FROM t FOR UPDATE", true},
    {"SELECT * FROM t AS x(p, q) WHERE p = 1 FOR UPDATE", "SELECT * FROM t AS x(p, q) WHERE p = 2 FOR UPDATE", false},  // column aliases
    {"(SELECT * FROM t WHERE id = 1 FOR UPDATE)", "(SELECT * FROM t WHERE id = 2 FOR UPDATE)", false},
    {"SELECT * FROM t WHERE a = (percentile_cont(0.5) WITHIN GROUP (ORDER BY b)) FOR UPDATE", nullptr, false},
    // GROUP at the top level of the WHERE: the span found stops there, the check sees it, the tree plans.
    {"SELECT * FROM t WHERE a = percentile_cont(0.5) WITHIN GROUP (ORDER BY b) FOR UPDATE", nullptr, false},
    {"SELECT * FROM t WHERE a = 1 FOR SHARE", "SELECT * FROM t WHERE a = 2 FOR SHARE", true},  // read-only
    {"SAVEPOINT s1", "SAVEPOINT s1", true},
    {"INSERT INTO t VALUES (1) ON CONFLICT DO NOTHING", "INSERT INTO t VALUES (2) ON CONFLICT DO NOTHING", true},  // refused
    {"UPDATE t SET a = 1 WHERE id = $0", "UPDATE t SET a = 2 WHERE id = $0", true},  // refused, 42P02
    {"SET LOCAL statement_timeout = 5", "SET LOCAL statement_timeout = 6", true},
    {"-- nothing", "-- nothing", true},
};

void ExpectSamePlans(const Result<StatementPlan>& a, const Result<StatementPlan>& b, const std::string& what) {
  ASSERT_EQ(a.ok(), b.ok()) << what << ": " << (a.ok() ? b.status() : a.status());
  if (!a.ok()) {
    EXPECT_EQ(a.status().message(), b.status().message()) << what;
    return;
  }
  EXPECT_EQ(a->statement_sql, b->statement_sql) << what;
  EXPECT_EQ(a->before_image_sql, b->before_image_sql) << what;
  EXPECT_EQ(a->lock_keys_sql, b->lock_keys_sql) << what;
  EXPECT_EQ(a->extra_params, b->extra_params) << what;
  EXPECT_EQ(a->hidden_columns, b->hidden_columns) << what;
}

// The queries mean the same: the spliced ones parse to the deparsed ones' trees, parameters mapped.
void ExpectSameMeaning(const Result<StatementPlan>& spliced, const Result<StatementPlan>& deparsed, const std::string& what) {
  ASSERT_EQ(spliced.ok(), deparsed.ok()) << what;
  if (!spliced.ok()) {
    EXPECT_EQ(spliced.status().message(), deparsed.status().message()) << what;
    return;
  }
  if (spliced->hidden_columns == 3) {
    // The spliced UPDATE takes its before image itself; the deparse path runs the two apart.
    EXPECT_EQ(deparsed->hidden_columns, 2) << what;
    EXPECT_TRUE(spliced->before_image_sql.empty()) << what;
    EXPECT_TRUE(SameMergedUpdate(spliced->statement_sql, deparsed->statement_sql, deparsed->before_image_sql,
                                 deparsed->extra_params))
        << what << "\n  spliced:  " << spliced->statement_sql << "\n  deparsed: " << deparsed->before_image_sql
        << "\n            " << deparsed->statement_sql;
    return;
  }
  EXPECT_EQ(spliced->statement_sql, deparsed->statement_sql) << what;
  EXPECT_EQ(spliced->hidden_columns, deparsed->hidden_columns) << what;
  EXPECT_EQ(spliced->before_image_sql.empty(), deparsed->before_image_sql.empty()) << what;
  EXPECT_EQ(spliced->lock_keys_sql.empty(), deparsed->lock_keys_sql.empty()) << what;
  // A query without parameters has no map: give both sides the identity of none.
  if (!spliced->before_image_sql.empty()) {
    EXPECT_TRUE(SameQuery(spliced->before_image_sql, spliced->extra_params, deparsed->before_image_sql, deparsed->extra_params))
        << what << "\n  spliced:  " << spliced->before_image_sql << "\n  deparsed: " << deparsed->before_image_sql;
  }
  if (!spliced->lock_keys_sql.empty()) {
    EXPECT_TRUE(SameQuery(spliced->lock_keys_sql, spliced->extra_params, deparsed->lock_keys_sql, deparsed->extra_params))
        << what << "\n  spliced:  " << spliced->lock_keys_sql << "\n  deparsed: " << deparsed->lock_keys_sql;
  }
}

void ExpectSameAnalysis(const Result<ParsedStatement>& a, const Result<ParsedStatement>& b, const std::string& what) {
  ASSERT_EQ(a.ok(), b.ok()) << what << ": " << (a.ok() ? b.status() : a.status());
  if (!a.ok()) {
    EXPECT_EQ(a.status().message(), b.status().message()) << what;
    return;
  }
  EXPECT_EQ(a->kind, b->kind) << what;
  EXPECT_EQ(a->transaction_op, b->transaction_op) << what;
  EXPECT_EQ(a->savepoint, b->savepoint) << what;
  EXPECT_EQ(a->table.schema, b->table.schema) << what;
  EXPECT_EQ(a->table.name, b->table.name) << what;
  EXPECT_EQ(a->set_columns, b->set_columns) << what;
  EXPECT_EQ(a->returning_items, b->returning_items) << what;
  EXPECT_EQ(a->sql, b->sql) << what;
  EXPECT_EQ(a->tree != nullptr, b->tree != nullptr) << what;
}

// The same write from a session bound to no global transaction (AnalyzeLocal, from the cached
// shape): the client's text as the bound plan keeps it, with the key item only.
void ExpectLocalPlan(const std::string& sql, const TableInfo& table, const Result<StatementPlan>& bound,
                     const std::string& what) {
  LocalWrite w = AnalyzeLocal(sql);
  ASSERT_EQ(w.check, LocalWrite::Check::kKeys) << what;
  StatementPlan local = PlanLocalWrite(w, table, sql);
  EXPECT_TRUE(local.before_image_sql.empty() && local.lock_keys_sql.empty()) << what;
  if (table.primary_key.empty()) {
    EXPECT_EQ(local.statement_sql, sql) << what;
    EXPECT_EQ(local.hidden_columns, 0) << what;
    return;
  }
  EXPECT_EQ(local.hidden_columns, 1) << what;
  if (!bound.ok()) return;  // refused for a bound session (a key column assigned, a cascade)
  if (bound->hidden_columns == 3) return;  // an UPDATE with its before image: no longer the client's text
  const size_t image = bound->statement_sql.rfind(", row_to_json(");
  ASSERT_NE(image, std::string::npos) << what;
  EXPECT_EQ(local.statement_sql, bound->statement_sql.substr(0, image)) << what;
}

bool Plans(StatementKind k) {
  return k == StatementKind::kInsert || k == StatementKind::kUpdate || k == StatementKind::kDelete ||
         k == StatementKind::kSelectForUpdate;
}

TEST(StatementShape, CachedSplicedAndDeparsedPathsAgreeOverACorpus) {
  const std::vector<TableInfo> tables = {Table("t", {"id"}), Table("t", {"id", "b"}), Table("t", {"a"}),
                                         Table("t", {"id"}, true), Table("t", {})};
  for (const auto& c : kCorpus) {
    ClearShapeCache();
    for (int i = 0; i < 2; ++i) {
      const char* sql = i == 0 ? c.first : c.second;
      if (!sql) continue;
      const auto before = ShapeCacheStatistics();
      auto cached = Analyze(sql);
      const bool hit = ShapeCacheStatistics().hits > before.hits;
      if (i == 1) {
        EXPECT_EQ(hit, c.shared) << sql;
      }
      auto fresh = AnalyzeUncached(sql);
      ExpectSameAnalysis(cached, fresh, sql);
      if (!cached.ok() || !Plans(cached->kind)) continue;
      // The deparse path: the same analysis with no splice spec, built from the tree.
      ParsedStatement deparse = *fresh;
      deparse.shape = nullptr;
      for (const auto& table : tables) {
        const std::string what = std::string(sql) + " [pk " + std::to_string(table.primary_key.size()) + "]";
        ExpectSamePlans(Plan(*cached, table), Plan(*fresh, table), what);
        ExpectSameMeaning(Plan(*fresh, table), Plan(deparse, table), what);
        if (cached->kind == StatementKind::kSelectForUpdate) continue;
        if (!table.primary_key.empty()) ExpectLocalPlan(sql, table, Plan(*cached, table), what + " local");
      }
    }
  }
}

// The table with a column named like the merged UPDATE's FROM item: an UPDATE of it takes its
// before image apart.
TableInfo Apart(TableInfo t) {
  t.columns = t.primary_key;
  t.columns.push_back("dtx_at_note");
  return t;
}

TEST(StatementShape, SplicedQueriesKeepTheClientsTextAndRenumberParameters) {
  ClearShapeCache();
  auto r = Analyze("UPDATE t AS x SET a = $1 WHERE x.id = $3 AND b > 'k' -- why");
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_TRUE(r->shape && r->shape->spliced && r->shape->merged_update);
  auto m = Plan(*r, Table("t", {"id"}));
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->statement_sql,
            "UPDATE t AS x SET a = $1  FROM (SELECT row_to_json(\"x\".*)::text AS dtx_at_before, \"x\".\"id\" AS dtx_at_k1 "
            "FROM \"t\" AS \"x\" WHERE x.id = $3 AND b > 'k' FOR UPDATE) AS dtx_at_old WHERE \"x\".\"id\" = "
            "dtx_at_old.dtx_at_k1\nRETURNING json_build_array(\"x\".\"id\"::text)::text AS dtx_pk, "
            "row_to_json(\"x\".*)::text AS dtx_image, dtx_at_old.dtx_at_before");
  auto p = Plan(*r, Apart(Table("t", {"id"})));
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->before_image_sql,
            "SELECT json_build_array(\"x\".\"id\"::text)::text AS dtx_pk, row_to_json(\"x\".*)::text AS dtx_image "
            "FROM \"t\" AS \"x\" WHERE x.id = $1 AND b > 'k' FOR UPDATE");
  EXPECT_EQ(p->extra_params, (std::vector<int>{3}));
  EXPECT_EQ(p->statement_sql,
            "UPDATE t AS x SET a = $1 WHERE x.id = $3 AND b > 'k' -- why\nRETURNING "
            "json_build_array(\"x\".\"id\"::text)::text AS dtx_pk, row_to_json(\"x\".*)::text AS dtx_image");
  // The next statement of the shape: its own literal, from the cache.
  auto again = Analyze("UPDATE t AS x SET a = $1 WHERE x.id = $3 AND b > 'it''s' -- why");
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->tree, r->tree);  // the shape's tree: parsed once
  EXPECT_NE(again->tree, nullptr);
  auto q = Plan(*again, Apart(Table("t", {"id"})));
  ASSERT_TRUE(q.ok());
  EXPECT_NE(q->before_image_sql.find("WHERE x.id = $1 AND b > 'it''s' FOR UPDATE"), std::string::npos) << q->before_image_sql;
  auto mq = Plan(*again, Table("t", {"id"}));
  ASSERT_TRUE(mq.ok());
  EXPECT_NE(mq->statement_sql.find("WHERE x.id = $3 AND b > 'it''s' FOR UPDATE) AS dtx_at_old"), std::string::npos)
      << mq->statement_sql;
}

TEST(StatementShape, RepeatedShapesAreAnalysedOnce) {
  ClearShapeCache();
  for (int i = 0; i < 50; ++i) {
    auto r = Analyze("UPDATE pgbench_tellers SET tbalance = tbalance + " + std::to_string(i + 1) + " WHERE tid = " +
                     std::to_string(i * 7));
    ASSERT_TRUE(r.ok());
    auto p = Plan(*r, Table("pgbench_tellers", {"tid"}));
    ASSERT_TRUE(p.ok());
    EXPECT_NE(p->statement_sql.find(" FROM \"pgbench_tellers\" WHERE tid = " + std::to_string(i * 7) +
                                    " FOR UPDATE) AS dtx_at_old WHERE"),
              std::string::npos)
        << p->statement_sql;
    EXPECT_EQ(p->statement_sql.find("UPDATE pgbench_tellers SET tbalance = tbalance + " + std::to_string(i + 1) + "  FROM ("), 0u)
        << p->statement_sql;
  }
  const auto s = ShapeCacheStatistics();
  EXPECT_EQ(s.misses, 1u);
  EXPECT_EQ(s.hits, 49u);
  EXPECT_EQ(s.entries, 1u);
}

TEST(StatementShape, CacheIsBounded) {
  ClearShapeCache();
  SetShapeCacheLimits(8, 1 << 20);
  for (int i = 0; i < 40; ++i) {
    ASSERT_TRUE(Analyze("UPDATE t" + std::to_string(i) + " SET a = 1 WHERE id = 2").ok());
    EXPECT_LE(ShapeCacheStatistics().entries, 8u);
  }
  // Evicted shapes are analysed again, correctly.
  auto r = Analyze("UPDATE t0 SET a = 5 WHERE id = 6");
  ASSERT_TRUE(r.ok());
  auto p = Plan(*r, Table("t0", {"id"}));
  ASSERT_TRUE(p.ok());
  EXPECT_NE(p->statement_sql.find("WHERE id = 6 FOR UPDATE) AS dtx_at_old"), std::string::npos) << p->statement_sql;
  SetShapeCacheLimits(1, 1 << 20);
  EXPECT_LE(ShapeCacheStatistics().entries, 1u);
  SetShapeCacheLimits(4096, 16u << 20);
  ClearShapeCache();
}

// Errors of the grammar carry positions of the very text: they are never served from the cache.
TEST(StatementShape, SyntaxErrorsAreNotCached) {
  ClearShapeCache();
  auto a = Analyze("UPDATE t SET a = 1 WHERE");
  auto b = Analyze("UPDATE t SET a = 12345 WHERE");
  ASSERT_FALSE(a.ok());
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(SqlStateOf(b.status()), "42601");
  EXPECT_NE(a.status().message(), b.status().message());
  EXPECT_EQ(ShapeCacheStatistics().entries, 0u);
}

}  // namespace
}  // namespace dtx::at

namespace dtx::at {
namespace {

// Which statements get a splice spec, and which fall back to the tree (and the deparse).
TEST(StatementShape, SpliceSpecIsBuiltOrRefusedAsExpected) {
  for (const char* sql : {"UPDATE t SET a = 1 WHERE id = 2", "INSERT INTO t VALUES (1)", "DELETE FROM t",
                          "UPDATE ONLY s.t AS x SET a = $1 WHERE x.id = $2 RETURNING *",
                          "WITH v AS (SELECT 1) UPDATE t SET a = 1 WHERE id IN (SELECT * FROM v)",
                          "SELECT * FROM t WHERE id = 1 ORDER BY a FOR UPDATE", "UPDATE t SET a = $$x$$ WHERE b = E'\\n'"}) {
    auto r = AnalyzeUncached(sql);
    ASSERT_TRUE(r.ok()) << sql;
    ASSERT_TRUE(r->shape) << sql;
    EXPECT_TRUE(r->shape->spliced) << sql;
  }
  for (const char* sql : {"SELECT * FROM t AS x(p, q) WHERE p = 1 FOR UPDATE", "(SELECT * FROM t WHERE id = 1 FOR UPDATE)",
                          "SELECT * FROM t WHERE a = percentile_cont(0.5) WITHIN GROUP (ORDER BY b) FOR UPDATE"}) {
    auto r = AnalyzeUncached(sql);
    ASSERT_TRUE(r.ok()) << sql;
    ASSERT_TRUE(r->shape) << sql;
    EXPECT_FALSE(r->shape->spliced) << sql;
    ASSERT_TRUE(r->tree) << sql;
  }
}

}  // namespace
}  // namespace dtx::at

namespace dtx::at {
namespace {

// Generated statements: pieces that make splicing hard, in random combinations, each planned
// twice with other constants (the second from the cache) and compared with the grammar's own
// analysis and with the deparse path.
TEST(StatementShape, GeneratedStatementsPlanAlikeOnEveryPath) {
  std::mt19937 rng(7);
  auto pick = [&](const std::vector<std::string>& v) { return v[std::uniform_int_distribution<size_t>(0, v.size() - 1)(rng)]; };
  const std::vector<std::string> tables = {"t", "s.t", "ONLY t", "\"T x\"", "t AS a", "t a", "public.t AS \"A b\""};
  // '#' becomes an integer, '%' a decimal, '@' a string: different values each time.
  const std::vector<std::string> conds = {
      "id = #", "id = $1", "v > -#", "name = @", "v BETWEEN # AND #", "id IN (#, #, $2)", "v = % /* c 'q' */",
      "(id = # OR id = #)", "v IS NOT NULL", "name LIKE @ ESCAPE @", "id = ANY($3::int[])", "v::numeric(10, 2) > %",
      "coalesce(v, #) = #", "exists (SELECT 1 FROM u WHERE u.id = # AND u.x = $2)", "v = (SELECT max(x) FROM u WHERE y < #)",
      "name = @ -- line comment 'x'\n", "CASE WHEN v > # THEN true ELSE false END", "id = $$lit$$::int", "name = E'a\\tb'",
      "v = 1e3", "d = date @"};
  const std::vector<std::string> sets = {"v = #", "v = v + #", "v = $4", "name = @", "v = DEFAULT", "name = name || @"};
  auto fill = [&](std::string s) {
    std::string out;
    for (char c : s) {
      if (c == '#') out += std::to_string(std::uniform_int_distribution<int>(0, 99999)(rng));
      else if (c == '%') out += std::to_string(std::uniform_int_distribution<int>(0, 999)(rng)) + ".5";
      else if (c == '@') out += std::uniform_int_distribution<int>(0, 1)(rng) ? "'x''y'" : "'" + std::to_string(rng() % 1000) + "'";
      else out += c;
    }
    return out;
  };
  const std::vector<TableInfo> infos = {Table("t", {"id"}), Table("t", {"id", "v"})};
  int spliced = 0, shared = 0, total = 0;
  for (int round = 0; round < 300; ++round) {
    std::string where;
    const int n = std::uniform_int_distribution<int>(0, 3)(rng);
    for (int i = 0; i < n; ++i) where += (i ? pick({" AND ", " OR ", "\n AND "}) : " WHERE ") + pick(conds);
    const std::string table = pick(tables);
    std::string shape;
    switch (rng() % 4) {
      case 0: shape = "UPDATE " + table + " SET " + pick(sets) + ", " + pick(sets) + where; break;
      case 1: shape = "DELETE FROM " + table + where; break;
      case 2: shape = "INSERT INTO t (id, v, name) VALUES (#, $1, @), (-#, %, @)"; break;
      default: shape = "SELECT * FROM " + table + where + pick({"", " ORDER BY id", " LIMIT #"}) + " FOR UPDATE"; break;
    }
    if (rng() % 3 == 0 && shape.rfind("SELECT", 0) != 0) shape += pick({" RETURNING id", " RETURNING *, #", ";", " -- end"});
    if (rng() % 5 == 0) shape = "WITH c AS (SELECT # AS k) " + shape;
    ClearShapeCache();
    for (int i = 0; i < 2; ++i) {
      const std::string sql = fill(shape);
      const auto before = ShapeCacheStatistics();
      auto cached = Analyze(sql);
      if (i == 1 && ShapeCacheStatistics().hits > before.hits) ++shared;
      auto fresh = AnalyzeUncached(sql);
      ExpectSameAnalysis(cached, fresh, sql);
      if (!cached.ok() || !Plans(cached->kind)) continue;
      ++total;
      if (fresh->shape && fresh->shape->spliced) ++spliced;
      ParsedStatement deparse = *fresh;
      deparse.shape = nullptr;
      for (const auto& info : infos) {
        ExpectSamePlans(Plan(*cached, info), Plan(*fresh, info), sql);
        ExpectSameMeaning(Plan(*fresh, info), Plan(deparse, info), sql);
        if (cached->kind == StatementKind::kSelectForUpdate) continue;
        if (!info.primary_key.empty()) ExpectLocalPlan(sql, info, Plan(*cached, info), sql + " local");
      }
    }
  }
  RecordProperty("spliced", spliced);
  RecordProperty("shared", shared);
  RecordProperty("planned", total);
  // The generator must exercise the spliced and the shared paths, not only the fallbacks.
  EXPECT_GT(spliced, total / 2);
  EXPECT_GT(shared, 50);
}

}  // namespace
}  // namespace dtx::at

namespace dtx::at::testing {
namespace {

// The spliced before images on a real server: statements of one shape, the second and later
// from the cache, each with its own constants; phase one then the rollback must restore the
// tables exactly, so every before image held exactly the rows its statement changed.
class StatementShapePg : public AtTest {
 protected:
  void SetUp() override {
    AtTest::SetUp();
    if (IsSkipped() || HasFailure()) return;
    Exec("CREATE TABLE acct (id int PRIMARY KEY, v int, name text)");
    Exec("CREATE TABLE aux (id int, x int)");
    Exec("INSERT INTO acct SELECT g, g * 10, 'n' || g FROM generate_series(1, 40) g");
    Exec("INSERT INTO aux SELECT g, g % 4 FROM generate_series(1, 40) g");
  }
};

TEST_F(StatementShapePg, StatementsOfOneShapeUndoExactlyWhatTheyChanged) {
  ClearShapeCache();
  UndoExecutor executor(schema_->uri(), std::string(kDefaultUndoTable));
  const auto before = Snapshot("acct");
  auto c = Connect();
  ASSERT_TRUE(c);
  ASSERT_TRUE(c->Run("BEGIN").ok());
  AtBranch branch(options_, catalog_, "xid-shapes");
  auto run = [&](const std::string& sql, QueryParams params = {}) {
    auto r = RunStatement(*c, branch, sql, std::move(params));
    EXPECT_TRUE(r.ok()) << sql << ": " << r.status();
  };
  for (int i = 1; i <= 3; ++i) {
    const std::string n = std::to_string(i);
    run("UPDATE acct SET v = v + " + n + " WHERE id = " + n);
    run("UPDATE acct AS a SET name = name || 'x' WHERE a.id IN (" + std::to_string(i + 10) + ", " + std::to_string(i + 20) +
        ") -- note 'q'");
    run("UPDATE acct SET v = -v WHERE id > " + std::to_string(30 + i) + " AND name <> 'n3' RETURNING id");
    run("WITH w AS (SELECT id FROM aux WHERE x = " + std::to_string(i % 4) +
        ") UPDATE acct SET v = v * 2 WHERE id IN (SELECT id FROM w) AND id < " + std::to_string(6 + i));
    run("DELETE FROM acct WHERE id = " + std::to_string(25 + i));
    run("INSERT INTO acct (id, v, name) VALUES (" + std::to_string(100 + i) + ", " + n + ", 'it''s')");
    QueryParams p;
    p.values = {std::to_string(i), std::to_string(15 + i)};
    run("UPDATE acct SET v = $1 WHERE id = $2 AND v IS NOT NULL", p);
  }
  // 7 shapes, the later two statements of each from the cache, except the WITH one: its CTE's
  // constant follows "AS (", which the key keeps (a parenthesis after a word may be a call).
  EXPECT_EQ(ShapeCacheStatistics().hits, 12u);
  ASSERT_TRUE(CommitWithoutCoordinator(*c, branch, 9).ok());
  EXPECT_NE(Snapshot("acct"), before);
  auto r = executor.Rollback(branch.xid(), 9);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->outcome, RollbackOutcome::kRolledBack) << r->message;
  EXPECT_EQ(Snapshot("acct"), before);
}

}  // namespace
}  // namespace dtx::at::testing
