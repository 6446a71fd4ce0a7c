#include "statement_splice.h"

#include <google/protobuf/io/coded_stream.h>
#include <pg_query.h>

#include <algorithm>
#include <map>
#include <set>

namespace dtx::at {

namespace pq = ::pg_query;
using google::protobuf::FieldDescriptor;
using google::protobuf::Message;

bool ReadTree(const void* data, size_t len, Message* out) {
  google::protobuf::io::CodedInputStream in(static_cast<const uint8_t*>(data), static_cast<int>(len));
  in.SetRecursionLimit(kMaxTreeDepth);
  return out->ParseFromCodedStream(&in) && in.ConsumedEntireMessage();
}

Status TooDeepError() {
  return SqlError(sqlstate::kStatementTooComplex,
                  "statement too complex: its parse tree nests deeper than " + std::to_string(kMaxTreeDepth) +
                      " levels, more than the proxy analyzes",
                  StatusCode::kInvalidArgument);
}

Result<pq::ParseResult> ParseSql(const std::string& sql) {
  PgQueryProtobufParseResult r = pg_query_parse_protobuf(sql.c_str());
  if (r.error) {
    std::string m = std::string("syntax error: ") + (r.error->message ? r.error->message : "");
    if (r.error->cursorpos > 0) m += " at character " + std::to_string(r.error->cursorpos);
    pg_query_free_protobuf_parse_result(r);
    return SqlError(sqlstate::kSyntaxError, m, StatusCode::kInvalidArgument);
  }
  pq::ParseResult tree;
  bool ok = ReadTree(r.parse_tree.data, r.parse_tree.len, &tree);
  pg_query_free_protobuf_parse_result(r);
  // libpg_query's own output is well-formed, so the only way to fail reading it is its depth.
  if (!ok) return TooDeepError();
  return tree;
}

Result<pq::ScanResult> ScanSql(const std::string& sql) {
  PgQueryScanResult r = pg_query_scan(sql.c_str());
  if (r.error) {
    std::string m = std::string("cannot scan the statement: ") + (r.error->message ? r.error->message : "");
    pg_query_free_scan_result(r);
    return SqlError(sqlstate::kSyntaxError, m, StatusCode::kInvalidArgument);
  }
  pq::ScanResult out;
  bool ok = out.ParseFromArray(r.pbuf.data, static_cast<int>(r.pbuf.len));
  pg_query_free_scan_result(r);
  if (!ok) return SqlError(sqlstate::kInternal, "cannot read the statement's tokens");
  return out;
}

bool LiteralsAreTokens(const pq::ScanResult& scan, const std::string& sql, const std::vector<ShapeLiteral>& literals) {
  int t = 0;
  const int n = scan.tokens_size();
  for (const auto& l : literals) {
    while (t < n && scan.tokens(t).start() < static_cast<int>(l.begin)) ++t;
    if (t == n) return false;
    const auto& tok = scan.tokens(t);
    if (tok.start() != static_cast<int>(l.begin) || tok.end() != static_cast<int>(l.begin + l.len)) return false;
    const std::string_view text(sql.data() + l.begin, l.len);
    const pq::Token want = text[0] == '\'' ? pq::SCONST : text.find('.') != std::string_view::npos ? pq::FCONST : pq::ICONST;
    if (tok.token() != want) return false;
  }
  return true;
}

namespace {

bool ScalarEqual(const Message& a, const Message& b, const FieldDescriptor* f, int i) {
  const auto* ra = a.GetReflection();
  const auto* rb = b.GetReflection();
  const bool rep = f->is_repeated();
#define DTX_SAME(T) \
  return rep ? ra->GetRepeated##T(a, f, i) == rb->GetRepeated##T(b, f, i) : ra->Get##T(a, f) == rb->Get##T(b, f)
  switch (f->cpp_type()) {
    case FieldDescriptor::CPPTYPE_INT32: DTX_SAME(Int32);
    case FieldDescriptor::CPPTYPE_INT64: DTX_SAME(Int64);
    case FieldDescriptor::CPPTYPE_UINT32: DTX_SAME(UInt32);
    case FieldDescriptor::CPPTYPE_UINT64: DTX_SAME(UInt64);
    case FieldDescriptor::CPPTYPE_DOUBLE: DTX_SAME(Double);
    case FieldDescriptor::CPPTYPE_FLOAT: DTX_SAME(Float);
    case FieldDescriptor::CPPTYPE_BOOL: DTX_SAME(Bool);
    case FieldDescriptor::CPPTYPE_ENUM: DTX_SAME(EnumValue);
    case FieldDescriptor::CPPTYPE_STRING: DTX_SAME(String);
    case FieldDescriptor::CPPTYPE_MESSAGE: return false;
  }
#undef DTX_SAME
  return false;
}

int MappedParam(const Message& m, const std::vector<int>* map) {
  const int k = static_cast<const pq::ParamRef&>(m).number();
  if (!map) return k;
  if (k < 1 || static_cast<size_t>(k) > map->size()) return -1;
  return (*map)[k - 1];
}

}  // namespace

bool SameTree(const Message& a, const Message& b, const std::vector<int>* map_a, const std::vector<int>* map_b) {
  const auto* d = a.GetDescriptor();
  if (d != b.GetDescriptor()) return false;
  if (d == pq::ParamRef::descriptor()) {
    const int x = MappedParam(a, map_a);
    return x >= 0 && x == MappedParam(b, map_b);
  }
  const auto* ra = a.GetReflection();
  const auto* rb = b.GetReflection();
  // The fields set (proto3: non-default), locations aside, must be the same ones with equal values.
  std::vector<const FieldDescriptor*> fa, fb;
  ra->ListFields(a, &fa);
  rb->ListFields(b, &fb);
  auto drop_locations = [](std::vector<const FieldDescriptor*>* v) {
    v->erase(std::remove_if(v->begin(), v->end(), [](const FieldDescriptor* f) { return f->name() == "location"; }), v->end());
  };
  drop_locations(&fa);
  drop_locations(&fb);
  if (fa != fb) return false;
  for (const FieldDescriptor* f : fa) {
    if (f->is_repeated()) {
      const int n = ra->FieldSize(a, f);
      if (n != rb->FieldSize(b, f)) return false;
      for (int j = 0; j < n; ++j) {
        if (f->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
          if (!SameTree(ra->GetRepeatedMessage(a, f, j), rb->GetRepeatedMessage(b, f, j), map_a, map_b)) return false;
        } else if (!ScalarEqual(a, b, f, j)) {
          return false;
        }
      }
    } else if (f->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
      if (!SameTree(ra->GetMessage(a, f), rb->GetMessage(b, f), map_a, map_b)) return false;
    } else if (!ScalarEqual(a, b, f, -1)) {
      return false;
    }
  }
  return true;
}

namespace {

// A piece cut out of a span: a literal (a hole) or a parameter (renumbered).
struct Cut {
  size_t begin = 0, end = 0;
  int literal = -1;
  int param = 0;
};

// Appends sql[a, b) to `t`, with holes for the literals and the parameters renumbered.
bool AddSpan(TextTemplate* t, const std::string& sql, size_t a, size_t b, const std::vector<ShapeLiteral>& literals,
             const std::vector<Cut>& params) {
  if (a > b || b > sql.size()) return false;
  std::vector<Cut> cuts;
  for (size_t i = 0; i < literals.size(); ++i) {
    const size_t lb = literals[i].begin, le = lb + literals[i].len;
    if (le <= a || lb >= b) continue;
    if (lb < a || le > b) return false;
    cuts.push_back(Cut{lb, le, static_cast<int>(i), 0});
  }
  for (const auto& p : params) {
    if (p.end <= a || p.begin >= b) continue;
    if (p.begin < a || p.end > b) return false;
    cuts.push_back(p);
  }
  std::sort(cuts.begin(), cuts.end(), [](const Cut& x, const Cut& y) { return x.begin < y.begin; });
  size_t at = a;
  for (const auto& c : cuts) {
    if (c.begin < at) return false;
    t->AppendFixed(std::string_view(sql).substr(at, c.begin - at));
    if (c.literal >= 0) t->AppendLiteral(static_cast<uint32_t>(c.literal));
    else t->AppendFixed("$" + std::to_string(c.param));
    at = c.end;
  }
  t->AppendFixed(std::string_view(sql).substr(at, b - at));
  return true;
}

bool Opens(int tok) { return tok == pq::ASCII_40 || tok == pq::ASCII_91; }
bool Closes(int tok) { return tok == pq::ASCII_41 || tok == pq::ASCII_93; }

// Whether a top-level token ends the WHERE condition of `kind`.
bool EndsWhere(StatementKind kind, int tok) {
  if (kind != StatementKind::kSelectForUpdate) return tok == pq::RETURNING;
  switch (tok) {
    case pq::GROUP_P:
    case pq::HAVING:
    case pq::WINDOW:
    case pq::ORDER:
    case pq::LIMIT:
    case pq::OFFSET:
    case pq::FETCH:
    case pq::FOR:
    case pq::UNION:
    case pq::INTERSECT:
    case pq::EXCEPT: return true;
    default: return false;
  }
}

std::string RelationText(const pq::RangeVar& rv) {
  std::string s = rv.inh() ? "" : "ONLY ";
  if (!rv.catalogname().empty()) s += QuoteIdent(rv.catalogname()) + ".";
  if (!rv.schemaname().empty()) s += QuoteIdent(rv.schemaname()) + ".";
  s += QuoteIdent(rv.relname());
  if (rv.has_alias()) s += " AS " + QuoteIdent(rv.alias().aliasname());
  return s;
}

// Whether an A_Const under `field` of `parent` stands where an expression's value goes, so that a
// parameter of the constant's own type means the same (see StatementShape::parametrizable).
bool ValuePosition(const google::protobuf::Descriptor* parent, const std::string& field) {
  if (parent == pq::A_Expr::descriptor()) return field == "lexpr" || field == "rexpr";
  if (parent == pq::ResTarget::descriptor()) return field == "val";
  if (parent == pq::SelectStmt::descriptor()) return field == "values_lists";
  if (parent == pq::FuncCall::descriptor() || parent == pq::RowExpr::descriptor() ||
      parent == pq::CoalesceExpr::descriptor() || parent == pq::MinMaxExpr::descriptor()) {
    return field == "args";
  }
  if (parent == pq::TypeCast::descriptor()) return field == "arg";
  if (parent == pq::A_ArrayExpr::descriptor()) return field == "elements";
  return false;
}

// The locations of the A_Const nodes of `m` that stand in value positions. A List passes on the
// position it stands in.
void ValueConstants(const Message& m, bool list_in_value, std::set<int>* out) {
  const auto* d = m.GetDescriptor();
  const auto* r = m.GetReflection();
  std::vector<const FieldDescriptor*> fields;
  r->ListFields(m, &fields);
  for (const FieldDescriptor* f : fields) {
    if (f->cpp_type() != FieldDescriptor::CPPTYPE_MESSAGE) continue;
    const bool value = d == pq::List::descriptor() ? list_in_value : ValuePosition(d, f->name());
    const int n = f->is_repeated() ? r->FieldSize(m, f) : 1;
    for (int i = 0; i < n; ++i) {
      const Message& child = f->is_repeated() ? r->GetRepeatedMessage(m, f, i) : r->GetMessage(m, f);
      if (child.GetDescriptor() == pq::Node::descriptor()) {
        const auto& node = static_cast<const pq::Node&>(child);
        if (node.has_a_const()) {
          if (value) out->insert(node.a_const().location());
          continue;
        }
        if (node.has_list()) {
          ValueConstants(node.list(), value, out);
          continue;
        }
      }
      ValueConstants(child, value, out);
    }
  }
}

// StatementShape::parametrizable for the statement `stmt` spanning toks (no comments).
bool Parametrizable(const pq::Node& stmt, const std::string& sql, const std::vector<const pq::ScanToken*>& toks,
                    const std::vector<ShapeLiteral>& literals) {
  if (literals.empty()) return false;  // nothing would change between statements of the shape
  for (const auto* t : toks) {
    if (t->token() == pq::PARAM) return false;
  }
  std::set<int> values;
  ValueConstants(stmt, false, &values);
  for (const auto& l : literals) {
    if (sql[l.begin] == '\'') return false;  // a string's type depends on where it stands
    int at = static_cast<int>(l.begin);
    if (values.count(at)) continue;
    // A negative number: the grammar folds the minus into the constant, located at the '-'.
    size_t p = l.begin;
    while (p > 0 && (sql[p - 1] == ' ' || sql[p - 1] == '\t' || sql[p - 1] == '\n' || sql[p - 1] == '\r')) --p;
    if (p == 0 || sql[p - 1] != '-' || !values.count(static_cast<int>(p - 1))) return false;
  }
  return true;
}

// Whether a RETURNING list has a `*` item (of any table): with a FROM added, `*` would take its
// columns too.
bool ReturnsStar(const google::protobuf::RepeatedPtrField<pq::Node>& items) {
  for (const auto& item : items) {
    if (!item.has_res_target() || !item.res_target().has_val() || !item.res_target().val().has_column_ref()) continue;
    const auto& fields = item.res_target().val().column_ref().fields();
    if (!fields.empty() && fields.rbegin()->has_a_star()) return true;
  }
  return false;
}

// The UPDATE cut where a FROM may go (StatementShape::update_head ...), checked to parse back, with
// a FROM and key join added, to the statement's own table, SET list, WITH, WHERE and RETURNING.
// `w` is the top-level WHERE's token index (toks.size() when none).
void BuildMergedUpdate(const pq::UpdateStmt& u, const std::string& sql, const std::vector<const pq::ScanToken*>& toks,
                       size_t main, size_t w, const std::vector<ShapeLiteral>& literals, StatementShape* shape) {
  if (u.from_clause_size() > 0 || ReturnsStar(u.returning_list())) return;
  size_t r = toks.size();  // the top-level RETURNING
  int depth = 0;
  for (size_t i = main + 1; i < toks.size(); ++i) {
    const int tok = toks[i]->token();
    if (Opens(tok)) ++depth;
    else if (Closes(tok)) --depth;
    else if (depth == 0 && tok == pq::RETURNING) {
      r = i;
      break;
    }
  }
  if (r < w && w < toks.size()) return;
  const size_t head_end = w < toks.size() ? w : r;  // FROM goes before this token
  if (head_end <= main + 1 || head_end > toks.size()) return;
  TextTemplate head, where, tail;
  const size_t head_to = head_end < toks.size() ? static_cast<size_t>(toks[head_end]->start()) : toks.back()->end();
  if (!AddSpan(&head, sql, static_cast<size_t>(toks[0]->start()), head_to, literals, {})) return;
  if (w < toks.size()) {
    const size_t cond_end = r < toks.size() ? r : toks.size();
    if (w + 1 >= cond_end) return;
    where.AppendFixed(" WHERE ");
    if (!AddSpan(&where, sql, toks[w + 1]->start(), toks[cond_end - 1]->end(), literals, {})) return;
  }
  if (r < toks.size() && !AddSpan(&tail, sql, toks[r]->start(), toks.back()->end(), literals, {})) return;

  // The check, with a stand-in key column.
  std::string q;
  head.AppendTo(&q, sql, literals);
  q += " FROM (SELECT 1 AS dtx_at_k1 FROM " + RelationText(u.relation());
  where.AppendTo(&q, sql, literals);
  q += " FOR UPDATE) AS dtx_at_old WHERE dtx_at_old.dtx_at_k1 = 1 ";
  tail.AppendTo(&q, sql, literals);
  auto back = ParseSql(q);
  if (!back.ok() || back->stmts_size() != 1 || !back->stmts(0).stmt().has_update_stmt()) return;
  const auto& b = back->stmts(0).stmt().update_stmt();
  if (!SameTree(b.relation(), u.relation(), nullptr, nullptr)) return;
  if (b.target_list_size() != u.target_list_size() || b.returning_list_size() != u.returning_list_size()) return;
  for (int i = 0; i < u.target_list_size(); ++i) {
    if (!SameTree(b.target_list(i), u.target_list(i), nullptr, nullptr)) return;
  }
  for (int i = 0; i < u.returning_list_size(); ++i) {
    if (!SameTree(b.returning_list(i), u.returning_list(i), nullptr, nullptr)) return;
  }
  if (b.has_with_clause() != u.has_with_clause() ||
      (u.has_with_clause() && !SameTree(b.with_clause(), u.with_clause(), nullptr, nullptr))) {
    return;
  }
  if (b.from_clause_size() != 1 || !b.from_clause(0).has_range_subselect()) return;
  const auto& sub = b.from_clause(0).range_subselect().subquery();
  if (!sub.has_select_stmt() || sub.select_stmt().locking_clause_size() != 1) return;
  const auto& s = sub.select_stmt();
  if (s.has_where_clause() != u.has_where_clause() ||
      (u.has_where_clause() && !SameTree(s.where_clause(), u.where_clause(), nullptr, nullptr))) {
    return;
  }
  shape->update_head = std::move(head);
  shape->update_where = std::move(where);
  shape->update_tail = std::move(tail);
  shape->merged_update = true;
}

}  // namespace

void BuildSplice(const pq::ParseResult& tree, const std::string& sql, const pq::ScanResult& scan,
                 const std::vector<ShapeLiteral>& literals, StatementShape* shape) {
  shape->spliced = false;
  if (tree.stmts_size() != 1) return;
  const auto& raw = tree.stmts(0);
  const size_t begin = static_cast<size_t>(std::max(0, raw.stmt_location()));
  const size_t end = raw.stmt_len() > 0 ? begin + static_cast<size_t>(raw.stmt_len()) : sql.size();
  TextTemplate statement;
  if (!AddSpan(&statement, sql, begin, end, literals, {})) return;
  const StatementKind kind = shape->analysis.kind;
  const pq::Node& n = raw.stmt();
  if (kind == StatementKind::kInsert) {
    if (!n.has_insert_stmt()) return;
    const auto& rv = n.insert_stmt().relation();
    shape->qualifier = rv.has_alias() ? rv.alias().aliasname() : rv.relname();
    shape->statement = std::move(statement);
    shape->spliced = true;
    std::vector<const pq::ScanToken*> toks;
    for (const auto& t : scan.tokens()) {
      if (t.start() >= static_cast<int>(begin) && t.end() <= static_cast<int>(end)) toks.push_back(&t);
    }
    shape->parametrizable = Parametrizable(n, sql, toks, literals);
    return;
  }
  const pq::RangeVar* rv = nullptr;
  const pq::Node* where = nullptr;
  const pq::WithClause* with = nullptr;
  int keyword = 0;
  if (kind == StatementKind::kUpdate && n.has_update_stmt()) {
    const auto& u = n.update_stmt();
    rv = &u.relation(), keyword = pq::UPDATE;
    if (u.has_where_clause()) where = &u.where_clause();
    if (u.has_with_clause()) with = &u.with_clause();
  } else if (kind == StatementKind::kDelete && n.has_delete_stmt()) {
    const auto& d = n.delete_stmt();
    rv = &d.relation(), keyword = pq::DELETE_P;
    if (d.has_where_clause()) where = &d.where_clause();
    if (d.has_with_clause()) with = &d.with_clause();
  } else if (kind == StatementKind::kSelectForUpdate && n.has_select_stmt() && n.select_stmt().from_clause_size() == 1 &&
             n.select_stmt().from_clause(0).has_range_var()) {
    const auto& s = n.select_stmt();
    rv = &s.from_clause(0).range_var(), keyword = pq::SELECT;
    if (s.has_where_clause()) where = &s.where_clause();
    if (s.has_with_clause()) with = &s.with_clause();
  } else {
    return;
  }
  if (rv->has_alias() && rv->alias().colnames_size() > 0) return;

  // The statement's tokens, without comments and the trailing ';'.
  std::vector<const pq::ScanToken*> toks;
  for (const auto& t : scan.tokens()) {
    if (t.token() == pq::SQL_COMMENT || t.token() == pq::C_COMMENT) continue;
    if (t.start() < static_cast<int>(begin) || t.end() > static_cast<int>(end)) continue;
    toks.push_back(&t);
  }
  while (!toks.empty() && toks.back()->token() == pq::ASCII_59) toks.pop_back();
  if (toks.empty()) return;
  // The statement's own keyword: the first token, or the first top-level one after its WITH.
  size_t main = 0;
  int depth = 0;
  if (with) {
    if (toks[0]->token() != pq::WITH) return;
    for (main = 1; main < toks.size(); ++main) {
      const int tok = toks[main]->token();
      if (Opens(tok)) ++depth;
      else if (Closes(tok) && --depth < 0) return;
      else if (depth == 0 && tok == keyword) break;
    }
    if (main == toks.size() || depth != 0) return;
  } else if (toks[0]->token() != keyword) {
    return;
  }
  // The one top-level WHERE, and the end of its condition.
  size_t w = toks.size(), e = toks.size();
  int wheres = 0;
  for (size_t i = main + 1; i < toks.size(); ++i) {
    const int tok = toks[i]->token();
    if (Opens(tok)) ++depth;
    else if (Closes(tok) && --depth < 0) return;
    else if (depth == 0 && tok == pq::WHERE && ++wheres == 1) w = i;
    else if (depth == 0 && w < toks.size() && e == toks.size() && EndsWhere(kind, tok)) e = i;
  }
  if (depth != 0 || wheres != (where ? 1 : 0)) return;
  if (where && w + 1 >= e) return;

  // Parameters of the spliced spans, numbered $1..$k in order of first use.
  std::vector<Cut> params;
  std::vector<int> extra;
  std::map<int, int> seen;
  auto collect = [&](size_t from, size_t to) {
    for (size_t i = from; i < to; ++i) {
      if (toks[i]->token() != pq::PARAM) continue;
      const int number = std::atoi(sql.c_str() + toks[i]->start() + 1);
      auto [it, fresh] = seen.emplace(number, static_cast<int>(extra.size()) + 1);
      if (fresh) extra.push_back(number);
      params.push_back(Cut{static_cast<size_t>(toks[i]->start()), static_cast<size_t>(toks[i]->end()), -1, it->second});
    }
  };
  if (with) collect(0, main);
  if (where) collect(w + 1, e);

  TextTemplate with_t, where_t;
  if (with && !AddSpan(&with_t, sql, toks[0]->start(), toks[main - 1]->end(), literals, params)) return;
  if (where) {
    where_t.AppendFixed(" WHERE ");
    if (!AddSpan(&where_t, sql, toks[w + 1]->start(), toks[e - 1]->end(), literals, params)) return;
  }
  const std::string relation = RelationText(*rv);

  // The check: the spliced query must parse back to the statement's own pieces.
  std::string q;
  with_t.AppendTo(&q, sql, literals);
  if (!q.empty()) q += ' ';
  q += "SELECT 1 FROM " + relation;
  where_t.AppendTo(&q, sql, literals);
  q += " FOR UPDATE";
  auto back = ParseSql(q);
  if (!back.ok() || back->stmts_size() != 1 || !back->stmts(0).stmt().has_select_stmt()) return;
  const auto& s = back->stmts(0).stmt().select_stmt();
  if (s.from_clause_size() != 1 || !s.from_clause(0).has_range_var() || s.locking_clause_size() != 1) return;
  if (!SameTree(s.from_clause(0).range_var(), *rv, nullptr, nullptr)) return;
  if (s.has_where_clause() != (where != nullptr) || (where && !SameTree(s.where_clause(), *where, &extra, nullptr))) return;
  if (s.has_with_clause() != (with != nullptr) || (with && !SameTree(s.with_clause(), *with, &extra, nullptr))) return;

  shape->statement = std::move(statement);
  shape->with = std::move(with_t);
  shape->where = std::move(where_t);
  shape->relation = relation;
  shape->qualifier = rv->has_alias() ? rv->alias().aliasname() : rv->relname();
  shape->extra_params = std::move(extra);
  shape->spliced = true;
  if (kind == StatementKind::kUpdate) BuildMergedUpdate(n.update_stmt(), sql, toks, main, w, literals, shape);
  // An UPDATE runs prepared only in its merged form (its before image apart would need its own).
  if (kind == StatementKind::kDelete || (kind == StatementKind::kUpdate && shape->merged_update)) {
    shape->parametrizable = Parametrizable(n, sql, toks, literals);
  }
}

}  // namespace dtx::at
