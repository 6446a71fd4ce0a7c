// libFuzzer target: arbitrary SQL text into the AT engine of dtx-sql-proxy (sql-proxy/at), the
// way a bound session's statement goes through it: Analyze(), then Plan() for a table whose shape
// the input chooses, and the error a refusal becomes on the wire; and AnalyzeLocal() /
// PlanLocalWrite(), the way an unbound session's statement goes.
//
// Input: one option byte, then the SQL text. Option bits: 0-1 the number of primary-key columns
// (0..3: "id", "k2", "k3"), 2 the table's deletes cascade, 3 the first column the statement sets
// is part of the key, 4-6 a column count for the message-body checks.
//
// Properties checked (each can fail; a failure aborts):
// - no crash or sanitizer report;
// - every error carries a SQLSTATE ("XXXXX: text"), and a refusal of an analysable statement is
//   0A000 / 42601 / 42P01, never the engine's internal XX000;
// - the error's RaiseErrorSql() is one DO statement for the grammar, whose body carries the
//   SQLSTATE and the text (with only the dollar-quote tag defused);
// - a planned write's rewritten statement parses again and analyses as the same kind of write to
//   the same table, with the client's RETURNING items plus the hidden ones, the same assigned
//   columns and the same parameters;
// - the before-image and lock-keys queries parse, analyse as SELECT ... FOR UPDATE of the same
//   table, and use exactly $1..$k, with extra_params naming distinct parameters of the client's;
// - a table without a key, an UPDATE of a key column, a DELETE that cascades are refused;
// - lock keys split back, through their escaping, into the parts they were made of;
// - the undo log's JSON decodes and re-encodes to a fixed point;
// - trailing-column stripping of a DataRow / RowDescription body gives back the body when the
//   kept part and the stripped values are put together again.
#include <pg_query.h>

#include <cstdint>
#include <cstdlib>
#include <google/protobuf/io/coded_stream.h>

#include <algorithm>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "dtx/at/hidden_columns.h"
#include "dtx/at/statement_analyzer.h"
#include "dtx/at/undo_log.h"
#include "pg_query.pb.h"
#include "statement_splice.h"

using namespace dtx::at;

namespace {

void Check(bool ok) {
  if (!ok) std::abort();
}

// Whether `s` is well-formed UTF-8 (no overlongs, surrogates or code points past U+10FFFF).
bool IsUtf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    size_t n;
    uint32_t cp;
    if (c < 0x80) n = 1, cp = c;
    else if ((c & 0xE0) == 0xC0) n = 2, cp = c & 0x1F;
    else if ((c & 0xF0) == 0xE0) n = 3, cp = c & 0x0F;
    else if ((c & 0xF8) == 0xF0) n = 4, cp = c & 0x07;
    else return false;
    if (i + n > s.size()) return false;
    for (size_t k = 1; k < n; ++k) {
      const auto d = static_cast<unsigned char>(s[i + k]);
      if ((d & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (d & 0x3F);
    }
    static const uint32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < kMin[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += n;
  }
  return true;
}

bool IsStateChar(char c) { return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z'); }

// The error names its SQLSTATE in the agreed form.
void CheckCarriesState(const dtx::Status& s) {
  Check(!s.ok());
  std::string_view m = s.message();
  Check(m.size() >= 7 && m[5] == ':' && m[6] == ' ');
  for (int i = 0; i < 5; ++i) Check(IsStateChar(m[i]));
  Check(SqlStateOf(s) == m.substr(0, 5));
  Check(SqlTextOf(s) == m.substr(7));
}

// One statement's parse tree, or nullopt when the grammar refuses it. `too_deep`, when given, is
// set when the grammar took it but its tree nests deeper than even the oracle reads (twice the
// engine's kMaxTreeDepth, so that the oracle sees what the engine refuses); else that is a failure.
std::optional<pg_query::ParseResult> ParseTree(const std::string& sql, bool* too_deep = nullptr) {
  PgQueryProtobufParseResult r = pg_query_parse_protobuf(sql.c_str());
  if (r.error) {
    pg_query_free_protobuf_parse_result(r);
    return std::nullopt;
  }
  google::protobuf::io::CodedInputStream in(reinterpret_cast<const uint8_t*>(r.parse_tree.data), static_cast<int>(r.parse_tree.len));
  in.SetRecursionLimit(2 * kMaxTreeDepth);
  pg_query::ParseResult tree;
  bool ok = tree.ParseFromCodedStream(&in);
  pg_query_free_protobuf_parse_result(r);
  if (!ok && too_deep) {
    *too_deep = true;
    return std::nullopt;
  }
  Check(ok);
  return tree;
}

int TreeDepth(const google::protobuf::Message& m) {
  const auto* refl = m.GetReflection();
  std::vector<const google::protobuf::FieldDescriptor*> fields;
  refl->ListFields(m, &fields);
  int deepest = 0;
  for (const auto* f : fields) {
    if (f->cpp_type() != google::protobuf::FieldDescriptor::CPPTYPE_MESSAGE) continue;
    if (f->is_repeated()) {
      for (int i = 0; i < refl->FieldSize(m, f); ++i) deepest = std::max(deepest, TreeDepth(refl->GetRepeatedMessage(m, f, i)));
    } else {
      deepest = std::max(deepest, TreeDepth(refl->GetMessage(m, f)));
    }
  }
  return deepest + 1;
}

// Whether the grammar takes `sql` and its tree nests at least as deep as the engine reads, give
// or take the few levels its own queries wrap around the client's expressions (so that reading
// them back may be refused, 54001, while the statement itself was not).
bool NearDepthLimit(const std::string& sql) {
  bool too_deep = false;
  auto tree = ParseTree(sql, &too_deep);
  return too_deep || (tree && TreeDepth(*tree) > kMaxTreeDepth - 32);
}

void CollectParams(const google::protobuf::Message& m, std::set<int>* out) {
  if (const auto* p = dynamic_cast<const pg_query::ParamRef*>(&m)) {
    out->insert(p->number());
    return;
  }
  const auto* refl = m.GetReflection();
  std::vector<const google::protobuf::FieldDescriptor*> fields;
  refl->ListFields(m, &fields);
  for (const auto* f : fields) {
    if (f->cpp_type() != google::protobuf::FieldDescriptor::CPPTYPE_MESSAGE) continue;
    if (f->is_repeated()) {
      for (int i = 0; i < refl->FieldSize(m, f); ++i) CollectParams(refl->GetRepeatedMessage(m, f, i), out);
    } else {
      CollectParams(refl->GetMessage(m, f), out);
    }
  }
}

// The $n numbers a statement uses; the statement must parse.
std::set<int> ParamsOf(const std::string& sql) {
  auto tree = ParseTree(sql);
  Check(tree.has_value());
  std::set<int> out;
  CollectParams(*tree, &out);
  return out;
}

// RaiseErrorSql() is one DO block raising exactly this error.
void CheckRaise(const dtx::Status& error) {
  const std::string sql = RaiseErrorSql(error);
  if (!IsUtf8(sql)) {
    // The parse tree's strings must be UTF-8; the grammar alone still has to accept it.
    PgQueryParseResult r = pg_query_parse(sql.c_str());
    Check(r.error == nullptr);
    pg_query_free_parse_result(r);
    return;
  }
  auto tree = ParseTree(sql);
  Check(tree.has_value() && tree->stmts_size() == 1 && tree->stmts(0).stmt().has_do_stmt());
  std::string body;
  for (const auto& a : tree->stmts(0).stmt().do_stmt().args()) {
    if (a.has_def_elem() && a.def_elem().defname() == "as") body = a.def_elem().arg().string().sval();
  }
  std::string text = SqlTextOf(error);
  for (size_t p; (p = text.find("$dtx$")) != std::string::npos;) text.replace(p, 5, "$ dtx $");
  Check(body == " BEGIN RAISE EXCEPTION USING ERRCODE = " + QuoteLiteral(SqlStateOf(error)) +
                    ", MESSAGE = " + QuoteLiteral(text) + "; END ");
}

// A refusal: carries its state, is never internal for a statement the grammar accepted, and
// becomes a well-formed error statement. `utf8`: the statement was valid UTF-8 (the engine
// cannot read a parse tree holding anything else and answers XX000, a known limit for clients
// whose client_encoding is not UTF8).
void CheckRefusal(const dtx::Status& s, bool utf8) {
  CheckCarriesState(s);
  const std::string state = SqlStateOf(s);
  Check(state == sqlstate::kFeatureNotSupported || state == sqlstate::kSyntaxError ||
        state == sqlstate::kUndefinedTable || state == "42P02" || state == sqlstate::kStatementTooComplex || (!utf8 && (state == "22021" || state == sqlstate::kInternal)));
  CheckRaise(s);
}

// An extra query (before image, lock keys): a SELECT ... FOR UPDATE of the written table using
// exactly $1..$k, where extra_params maps them to distinct parameters of the client's statement.
void CheckExtraQuery(const std::string& sql, const ParsedStatement& parsed, const std::vector<int>& extra_params,
                     const std::set<int>& client_params) {
  auto a = Analyze(sql);
  if (!a.ok() && SqlStateOf(a.status()) == sqlstate::kStatementTooComplex) {
    Check(NearDepthLimit(parsed.sql));
  } else {
    Check(a.ok());
    Check(a->kind == StatementKind::kSelectForUpdate);
    Check(a->table.schema == parsed.table.schema && a->table.name == parsed.table.name);
  }
  std::set<int> used = ParamsOf(sql);
  Check(used.size() == extra_params.size());
  int expect = 1;
  for (int n : used) Check(n == expect++);
  std::set<int> named(extra_params.begin(), extra_params.end());
  Check(named.size() == extra_params.size());
  for (int n : extra_params) Check(client_params.count(n) == 1);
}

TableInfo TableFor(const ParsedStatement& parsed, uint8_t opts) {
  TableInfo t;
  t.schema = parsed.table.schema.empty() ? "public" : parsed.table.schema;
  t.name = parsed.table.name;
  static const char* const kKeys[] = {"id", "k2", "k3"};
  for (int i = 0; i < (opts & 3); ++i) t.primary_key.push_back(kKeys[i]);
  if ((opts & 8) && !parsed.set_columns.empty() && !t.primary_key.empty()) t.primary_key[0] = parsed.set_columns[0];
  t.columns = t.primary_key;
  t.columns.push_back("v");
  t.delete_cascades = (opts & 4) != 0;
  return t;
}

void CheckPlans(const std::string& sql, const ParsedStatement& parsed, uint8_t opts) {
  const TableInfo table = TableFor(parsed, opts);
  const std::set<int> client_params = ParamsOf(sql);
  Check(client_params.count(0) == 0);  // Analyze refuses $0 (42P02)
  auto plan = Plan(parsed, table);
  const bool keyless = table.primary_key.empty();
  bool sets_key = false;
  for (const auto& c : parsed.set_columns) {
    for (const auto& k : table.primary_key) sets_key |= (c == k);
  }
  const bool must_refuse = keyless || (parsed.kind == StatementKind::kUpdate && sets_key) ||
                           (parsed.kind == StatementKind::kDelete && table.delete_cascades);
  if (must_refuse) Check(!plan.ok() && SqlStateOf(plan.status()) == sqlstate::kFeatureNotSupported);
  if (plan.ok() && !plan->prepared_sql.empty()) {
    // The prepared form: one statement using exactly $1..$k, one per literal, each a plain number
    // given as its own text, typed int4 (no '.') or numeric; the client had no parameters.
    Check(client_params.empty() && parsed.literals.size() == plan->prepared_params.values.size());
    auto tree = ParseTree(plan->prepared_sql);
    if (!tree) {
      Check(NearDepthLimit(sql));
    } else {
      Check(tree->stmts_size() == 1);
      std::set<int> used;
      CollectParams(*tree, &used);
      Check(used.size() == parsed.literals.size() && (used.empty() || *used.rbegin() == static_cast<int>(used.size())));
    }
    for (size_t i = 0; i < parsed.literals.size(); ++i) {
      const std::string text = parsed.sql.substr(parsed.literals[i].begin, parsed.literals[i].len);
      Check(text[0] != '\'' && plan->prepared_params.values[i] == text);
      Check(plan->prepared_params.types[i] == (text.find('.') == std::string::npos ? 23u : 1700u));
    }
  }
  if (!plan.ok()) {
    CheckRefusal(plan.status(), true);
  } else if (plan->hidden_columns == 3) {
    // An UPDATE that takes its before image itself: it must mean what the tree path's before
    // image and statement mean together.
    Check(parsed.kind == StatementKind::kUpdate && plan->before_image_sql.empty() && plan->lock_keys_sql.empty());
    Check(ParamsOf(plan->statement_sql) == client_params);
    auto fresh = AnalyzeUncached(parsed.sql);
    Check(fresh.ok());
    fresh->shape.reset();
    auto apart = Plan(*fresh, table);
    if (!apart.ok() && SqlStateOf(apart.status()) == sqlstate::kStatementTooComplex) {
      Check(NearDepthLimit(sql));
      return;
    }
    Check(apart.ok() && apart->hidden_columns == 2);
    Check(SameMergedUpdate(plan->statement_sql, apart->statement_sql, apart->before_image_sql, apart->extra_params));
  } else {
    // The rewritten statement: the same write, the client's RETURNING items then the hidden ones.
    auto again = Analyze(plan->statement_sql);
    if (!again.ok() && SqlStateOf(again.status()) == sqlstate::kStatementTooComplex) {
      Check(NearDepthLimit(sql));
      return;
    }
    Check(again.ok());
    Check(again->kind == parsed.kind);
    Check(again->table.schema == parsed.table.schema && again->table.name == parsed.table.name);
    Check(ParamsOf(plan->statement_sql) == client_params);
    if (parsed.kind == StatementKind::kSelectForUpdate) {
      Check(plan->hidden_columns == 0 && plan->before_image_sql.empty());
      CheckExtraQuery(plan->lock_keys_sql, parsed, plan->extra_params, client_params);
    } else {
      Check(plan->hidden_columns == 2 && plan->lock_keys_sql.empty());
      Check(again->returning_items == parsed.returning_items + plan->hidden_columns);
      Check(again->set_columns == parsed.set_columns);
      if (parsed.kind == StatementKind::kUpdate) {
        CheckExtraQuery(plan->before_image_sql, parsed, plan->extra_params, client_params);
      } else {
        Check(plan->before_image_sql.empty() && plan->extra_params.empty());
      }
    }
  }

}

// The same text from a session bound to no global transaction (every input, refused or not by
// Analyze): a checked write becomes the client's text plus one hidden RETURNING item, parsing back
// as the same write; several statements split into pieces that are single statements; what is
// checked table by table is consistent about being a COPY or a TRUNCATE.
void CheckLocal(const std::string& sql, uint8_t opts) {
  const LocalWrite w = AnalyzeLocal(sql);
  switch (w.check) {
    case LocalWrite::Check::kNone: return;
    case LocalWrite::Check::kRefuse:
      Check(w.refusal.has_value() && (SqlStateOf(*w.refusal) == sqlstate::kFeatureNotSupported ||
                                      (SqlStateOf(*w.refusal) == sqlstate::kStatementTooComplex && NearDepthLimit(sql))));
      CheckCarriesState(*w.refusal);
      return;
    case LocalWrite::Check::kSeveral: {
      auto pieces = SplitStatements(sql);
      Check(pieces.ok() && pieces->size() > 1);
      for (std::string_view piece : *pieces) Check(AnalyzeLocal(piece).check != LocalWrite::Check::kSeveral);
      return;
    }
    case LocalWrite::Check::kTables:
      // Checked table by table after it ran: a TRUNCATE is no COPY, a COPY FROM is a COPY.
      Check(!(w.truncates && w.copies));
      Check(!w.copies_in || w.copies);
      return;
    case LocalWrite::Check::kKeys: break;
  }
  Check(w.tail <= sql.size());
  TableInfo table;
  table.schema = w.table.schema.empty() ? "public" : w.table.schema;
  table.name = w.table.name;
  static const char* const kKeys[] = {"id", "k2", "k3"};
  for (int i = 0; i < std::max(1, opts & 3); ++i) table.primary_key.push_back(kKeys[i]);
  table.columns = table.primary_key;
  const StatementPlan plan = PlanLocalWrite(w, table, sql);
  Check(plan.hidden_columns == 1 && plan.before_image_sql.empty() && plan.lock_keys_sql.empty());
  Check(plan.statement_sql.compare(0, sql.size() - w.tail, sql, 0, sql.size() - w.tail) == 0);
  Check(ParamsOf(plan.statement_sql) == ParamsOf(sql));
  const LocalWrite again = AnalyzeLocal(plan.statement_sql);
  Check(again.check == LocalWrite::Check::kKeys);
  Check(again.table.schema == w.table.schema && again.table.name == w.table.name && again.qualifier == w.qualifier);
  Check(again.returning_items == w.returning_items + 1);
}

// Splits a lock key back into its parts at the separators no '\' escapes.
struct KeyParts {
  std::string resource, schema, table;
  std::vector<std::string> values;
};
std::optional<KeyParts> SplitLockKey(std::string_view k) {
  KeyParts out;
  std::string cur;
  int part = 0;  // 0 resource, 1 schema, 2 table, 3 values
  for (size_t i = 0; i < k.size(); ++i) {
    char c = k[i];
    if (c == '\\') {
      if (++i == k.size()) return std::nullopt;
      cur += k[i];
      continue;
    }
    if (part == 0 && c == ':') out.resource = std::move(cur), cur.clear(), part = 1;
    else if (part == 1 && c == '.') out.schema = std::move(cur), cur.clear(), part = 2;
    else if (part == 2 && c == ':') out.table = std::move(cur), cur.clear(), part = 3;
    else if (part == 3 && c == ',') out.values.push_back(std::move(cur)), cur.clear();
    else if (c == ':' || c == ',' || c == '.') return std::nullopt;  // unescaped where it cannot be
    else cur += c;
  }
  if (part != 3) return std::nullopt;
  out.values.push_back(std::move(cur));
  return out;
}

void CheckLockKey(std::string_view resource, std::string_view schema, std::string_view table,
                  const std::vector<std::string>& values) {
  auto parts = SplitLockKey(LockKey(resource, schema, table, values));
  Check(parts.has_value());
  Check(parts->resource == resource && parts->schema == schema && parts->table == table && parts->values == values);
}

// A DataRow / RowDescription body put back together from what was kept and what was stripped.
void CheckHiddenColumns(std::string_view body, int n) {
  auto kept_t = DropTrailingColumns('T', body, n);
  if (kept_t.ok()) Check(kept_t->size() <= body.size() && body.substr(2).starts_with(std::string_view(*kept_t).substr(2)));
  auto kept = DropTrailingColumns('D', body, n);
  auto values = TrailingValues(body, n);
  Check(kept.ok() == values.ok());
  if (!kept.ok()) return;
  Check(values->size() == static_cast<size_t>(n));
  std::string whole = *kept;
  const size_t count = ((size_t(uint8_t(whole[0])) << 8) | uint8_t(whole[1])) + n;
  whole[0] = char((count >> 8) & 0xFF);
  whole[1] = char(count & 0xFF);
  for (const auto& v : *values) {
    uint32_t len = v ? static_cast<uint32_t>(v->size()) : 0xFFFFFFFFu;
    for (int s = 24; s >= 0; s -= 8) whole += char((len >> s) & 0xFF);
    if (v) whole += *v;
  }
  Check(whole == body);
}

void CheckUndoJson(std::string_view text) {
  auto d = DecodeUndo(text);
  if (!d.ok()) return;
  std::string once = EncodeUndo(*d);
  auto d2 = DecodeUndo(once);
  Check(d2.ok());
  Check(EncodeUndo(*d2) == once);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0 || size > 4096) return 0;
  const uint8_t opts = data[0];
  // The client sends a C string: the SQL ends at the first NUL.
  std::string sql(reinterpret_cast<const char*>(data) + 1, size - 1);
  const std::string raw = sql;
  if (auto z = sql.find('\0'); z != std::string::npos) sql.resize(z);

  CheckHiddenColumns(raw, (opts >> 4) & 7);
  CheckUndoJson(sql);

  CheckLocal(sql, opts);
  auto parsed = Analyze(sql);
  if (!parsed.ok()) {
    CheckRefusal(parsed.status(), IsUtf8(sql));
    if (SqlStateOf(parsed.status()) == "42P02") Check(sql.find("$0") != std::string::npos);
    return 0;
  }
  switch (parsed->kind) {
    case StatementKind::kInsert:
    case StatementKind::kUpdate:
    case StatementKind::kDelete:
    case StatementKind::kSelectForUpdate: {
      Check(!parsed->table.name.empty() && parsed->tree != nullptr && parsed->sql == sql);
      CheckPlans(sql, *parsed, opts);
      std::vector<std::string> values = parsed->set_columns;
      values.push_back(sql);
      CheckLockKey(parsed->table.name, parsed->table.schema, parsed->table.name, values);
      // Row images are JSON text, which holds UTF-8 only (the encoder throws on other bytes).
      if (IsUtf8(raw)) {
        UndoEntry e{.kind = UndoKind::kUpdate, .schema = parsed->table.schema, .table = parsed->table.name,
                    .primary_key = parsed->set_columns, .keys = {values}, .before = {sql}, .after = {raw}};
        CheckUndoJson(EncodeUndo({e}));
      }
      break;
    }
    case StatementKind::kTransactionControl:
      Check(parsed->tree != nullptr);
      break;
    case StatementKind::kEmpty:
      Check(parsed->tree == nullptr);
      break;
    default:
      break;
  }
  return 0;
}
