// Building a statement shape's splice spec from libpg_query's tree and tokens (private to dtx_at).
//
// The spans Plan() copies out of the client's text (its WITH clause, its WHERE condition, the
// statement itself) are found among the tokens of libpg_query's own scanner and checked: the
// spliced "[WITH ...] SELECT 1 FROM <table> [WHERE ...] FOR UPDATE" must parse back to the
// statement's own table, WITH and WHERE trees (locations aside, parameters renumbered). A shape
// whose spans cannot be found or do not check out gets no spec, and Plan() builds its queries
// from the tree instead (pg_query_deparse_protobuf).
//
// Thread-safety: pure functions.
#pragma once

#include <string>
#include <vector>

#include "dtx/at/statement_shape.h"
#include "pg_query.pb.h"

namespace dtx::at {

// The parse tree of `sql`, or the grammar's error (SQLSTATE 42601).
// A statement nested deeper than kMaxTreeDepth protobuf levels (about half as many operator
// levels: `a + b + ... ` with some 1000 terms) is refused with 54001, as the engine's tree walkers
// recurse once per level. Protobuf's own default, 100, refused sums of some 50 terms.
Result<pg_query::ParseResult> ParseSql(const std::string& sql);
inline constexpr int kMaxTreeDepth = 2000;
// Reads a serialized parse tree with kMaxTreeDepth as its recursion limit.
bool ReadTree(const void* data, size_t len, google::protobuf::Message* out);
Status TooDeepError();
// The tokens of `sql` (comments included), or the scanner's error.
Result<pg_query::ScanResult> ScanSql(const std::string& sql);

// Whether each literal is exactly one constant token of the scanner: an integer, a decimal or a
// string constant, as the key scanner classed it.
bool LiteralsAreTokens(const pg_query::ScanResult& scan, const std::string& sql, const std::vector<ShapeLiteral>& literals);

// Fills shape->statement and, for UPDATE/DELETE/SELECT FOR UPDATE, the with/where/relation spec,
// with holes for `literals`; sets shape->spliced when it all checked out. shape->analysis.kind
// must be set. `sql` is the text the grammar saw.
void BuildSplice(const pg_query::ParseResult& tree, const std::string& sql, const pg_query::ScanResult& scan,
                 const std::vector<ShapeLiteral>& literals, StatementShape* shape);

// Whether two trees are equal, locations aside, where a ParamRef $k of `a` stands for
// (*map_a)[k-1] (likewise for b; a null map keeps the numbers).
bool SameTree(const google::protobuf::Message& a, const google::protobuf::Message& b, const std::vector<int>* map_a,
              const std::vector<int>* map_b);

}  // namespace dtx::at
