// Statement shapes: what lets the AT engine run the grammar once per statement shape.
//
// A shape is a statement text with its simple literal constants abstracted (ComputeShapeKey):
// "UPDATE t SET a = a + 5 WHERE id = 7" and "... + 9 WHERE id = 12" share one. Analyze() keeps,
// per shape, what libpg_query decided (kind, table, refusal) and the spans of the text that
// Plan() splices into the before-image / lock-keys queries and the rewritten statement
// (TextTemplate: fixed text with holes for the literals). A later statement of the same shape
// gets its analysis from the cache and its plan by filling the holes with its own literals.
//
// The key scanner is deliberately conservative. It abstracts only plain integers (up to 9
// digits), plain decimals and '...' strings without backslashes, and only where a literal's value
// cannot change what the grammar accepts: after an operator, a comma or an opening parenthesis
// that is not a function call or type modifier. Anything it does not fully understand (dollar
// quotes, E'' / B'' / X'' / U&'' strings, exponents, NUL or \x01 bytes, unbalanced brackets, very
// long texts) makes the key the exact text, so only identical texts share an analysis. On the
// first statement of a shape the engine checks that each abstracted literal is exactly one
// constant token of libpg_query's own scanner, and that the spliced queries parse back to the
// statement's own WHERE / WITH / table (statement_splice.cc); a shape that fails either check is
// kept for its exact text only.
//
// Thread-safety: ComputeShapeKey and TextTemplate are pure; the cache (Analyze's, reached through
// ClearShapeCache / ShapeCacheStatistics) is mutex-guarded and bounded (LRU by entries and bytes).
// Shapes are immutable once cached and shared by std::shared_ptr.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "dtx/at/statement_analyzer.h"

namespace dtx::at {

struct ShapeKey {
  // 'S' + the text with each abstracted literal replaced by "\x01" + its class (I, F or S), or
  // 'E' + the exact text when the scanner gave up (then `literals` is empty).
  std::string key;
  std::vector<ShapeLiteral> literals;  // the abstracted literals, in text order
  bool abstracted = false;
};
ShapeKey ComputeShapeKey(std::string_view sql);

// Text with holes, each filled with one literal of the statement being planned.
class TextTemplate {
 public:
  void AppendFixed(std::string_view s) { fixed_.append(s); }
  void AppendLiteral(uint32_t index) { holes_.emplace_back(static_cast<uint32_t>(fixed_.size()), index); }
  // REQUIRES: every hole's index < literals.size(), literals within sql.
  void AppendTo(std::string* out, std::string_view sql, const std::vector<ShapeLiteral>& literals) const;
  // The same with each hole written as the parameter $(its literal's index + 1).
  void AppendParamsTo(std::string* out) const;
  bool empty() const { return fixed_.empty() && holes_.empty(); }
  size_t ByteSize() const { return fixed_.size() + holes_.size() * 8; }

 private:
  std::string fixed_;
  std::vector<std::pair<uint32_t, uint32_t>> holes_;  // (offset in fixed_, literal index)
};

// What the grammar decided about a shape, and what Plan splices. Immutable once built.
struct StatementShape {
  std::optional<Status> refusal;  // Analyze's answer when it refused the statement
  ParsedStatement analysis;       // kind .. returning_items (no tree, sql, shape or literals)
  LocalWrite local;               // AnalyzeLocal's answer (for every statement that parsed)
  // Set for INSERT/UPDATE/DELETE/SELECT FOR UPDATE when the splice spec was built and checked;
  // otherwise Plan parses the text again and builds the queries from the tree.
  bool spliced = false;
  TextTemplate statement;           // the statement's own text (without the trailing ';')
  TextTemplate with;                // "WITH ..." of the statement, or empty
  TextTemplate where;               // " WHERE <its condition>" with $n renumbered, or empty
  std::string relation;             // [ONLY ] "schema"."table" [AS "alias"]
  std::string qualifier;            // the alias, or the table name
  std::vector<int> extra_params;    // the client's numbers of with/where's $1..$k
  // UPDATE only, when set: the statement cut where a FROM may go, so that Plan can take the
  // before image in the UPDATE itself (see Plan):
  //   <update_head> FROM (SELECT <image, keys> FROM <relation> <update_where> FOR UPDATE) AS dtx_at_old
  //   WHERE <keys equal> <update_tail>
  // update_head is "[WITH ...] UPDATE <table> SET ..." up to its WHERE (or RETURNING, or end),
  // update_where " WHERE <its condition>" with the client's own $n, update_tail "RETURNING ..." or
  // empty. Checked once per shape to parse back to the statement's own pieces.
  bool merged_update = false;
  // Set when the statement can run as a kept prepared statement with its literals as parameters
  // (StatementPlan::prepared_sql): it has no $n of its own, every literal is a number (typed int4
  // or numeric, as the literal itself is), and each stands where an expression's value goes (an
  // operand, an assigned or inserted value, a function argument, a cast), never where a number
  // means a position (ORDER BY 2, GROUP BY 2).
  bool parametrizable = false;
  TextTemplate update_head;
  TextTemplate update_where;
  TextTemplate update_tail;
  size_t literal_count = 0;         // the holes' literals: ParsedStatement::literals.size()
  // The first statement's tree (ParsedStatement::tree), and its size in memory.
  std::shared_ptr<const pg_query::ParseResult> tree;
  size_t tree_bytes = 0;
  size_t ByteSize() const;
};

// The cache behind Analyze (tests and benches).
struct ShapeCacheStats {
  uint64_t hits = 0;
  uint64_t misses = 0;
  size_t entries = 0;
  size_t bytes = 0;
};
ShapeCacheStats ShapeCacheStatistics();
void ClearShapeCache();
// Limits (defaults: 4096 entries, 16 MiB); shrinking evicts at once.
void SetShapeCacheLimits(size_t max_entries, size_t max_bytes);

// Analyze without the cache: always the grammar. The result carries a fresh shape (spliced when
// the checks pass), so Plan() splices; reset `shape` to make Plan() build from the tree instead.
Result<ParsedStatement> AnalyzeUncached(std::string_view sql);

// Whether two queries parse to the same tree, locations aside, where `a`'s $k stands for the
// client's $(params_a[k-1]) and likewise for `b` (empty: the numbers are the client's own).
bool SameQuery(std::string_view a, const std::vector<int>& params_a, std::string_view b, const std::vector<int>& params_b);
// Whether `merged`, an UPDATE that takes its before image itself (StatementPlan::hidden_columns 3),
// means the same as `statement` (the same UPDATE with the two hidden items) after `before_image`,
// whose $k stands for the client's $(extra_params[k-1]) (tests and the fuzz target).
bool SameMergedUpdate(std::string_view merged, std::string_view statement, std::string_view before_image,
                      const std::vector<int>& extra_params);

}  // namespace dtx::at
