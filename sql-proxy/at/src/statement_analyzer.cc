#include "dtx/at/statement_analyzer.h"

#include <pg_query.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <mutex>
#include <set>

#include "dtx/at/statement_shape.h"
#include "pg_query.pb.h"
#include "shape_cache.h"
#include "statement_splice.h"

namespace dtx::at {

namespace pq = ::pg_query;

std::string_view StatementKindName(StatementKind kind) {
  switch (kind) {
    case StatementKind::kInsert: return "INSERT";
    case StatementKind::kUpdate: return "UPDATE";
    case StatementKind::kDelete: return "DELETE";
    case StatementKind::kSelectForUpdate: return "SELECT FOR UPDATE";
    case StatementKind::kReadOnly: return "read-only";
    case StatementKind::kTransactionControl: return "transaction control";
    case StatementKind::kOther: return "other";
    case StatementKind::kEmpty: return "empty";
  }
  return "?";
}

namespace {

Status Refuse(std::string reason) {
  return SqlError(sqlstate::kFeatureNotSupported, "dtx AT mode cannot undo this statement: " + reason);
}

Result<pq::ParseResult> Parse(const std::string& sql) { return ParseSql(sql); }

Result<std::string> Deparse(const pq::ParseResult& tree) {
  std::string bytes = tree.SerializeAsString();
  PgQueryProtobuf buf{bytes.size(), bytes.data()};
  PgQueryDeparseResult r = pg_query_deparse_protobuf(buf);
  if (r.error) {
    std::string m = std::string("cannot build the AT query: ") + (r.error->message ? r.error->message : "");
    pg_query_free_deparse_result(r);
    return SqlError(sqlstate::kInternal, m);
  }
  std::string out = r.query;
  pg_query_free_deparse_result(r);
  return out;
}

bool IsWrite(const pq::Node& n) { return n.has_insert_stmt() || n.has_update_stmt() || n.has_delete_stmt() || n.has_merge_stmt(); }

// Refuses a WITH clause holding a data-modifying statement.
Status CheckWith(const pq::WithClause& with) {
  for (const auto& cte : with.ctes()) {
    if (cte.has_common_table_expr() && IsWrite(cte.common_table_expr().ctequery())) {
      return Refuse("a WITH clause holds a data-modifying statement (writable CTE \"" +
                    cte.common_table_expr().ctename() + "\")");
    }
  }
  return Status::Ok();
}

TableRef RefOf(const pq::RangeVar& rv) { return TableRef{rv.schemaname(), rv.relname()}; }

// The name the statement's own clauses use for its table.
std::string Qualifier(const pq::RangeVar& rv) { return rv.has_alias() ? rv.alias().aliasname() : rv.relname(); }

// "SELECT json_build_array(q.pk1::text, ...)::text AS dtx_pk, row_to_json(q.*)::text AS dtx_image"
std::string ImageTargets(const std::string& q, const std::vector<std::string>& pk, bool with_image) {
  std::string s = "SELECT json_build_array(";
  for (size_t i = 0; i < pk.size(); ++i) {
    if (i) s += ", ";
    s += QuoteIdent(q) + "." + QuoteIdent(pk[i]) + "::text";
  }
  s += ")::text AS dtx_pk";
  if (with_image) s += ", row_to_json(" + QuoteIdent(q) + ".*)::text AS dtx_image";
  return s;
}

// The parsed "SELECT ..." template. Templates repeat (one per table alias and key), so their
// trees are kept (a bounded map, cleared when full) instead of being parsed per statement.
Result<pq::SelectStmt> Template(const std::string& sql) {
  static std::mutex mu;
  static std::map<std::string, std::shared_ptr<const pq::SelectStmt>, std::less<>> cache;
  {
    std::lock_guard lock(mu);
    if (auto it = cache.find(sql); it != cache.end()) return *it->second;
  }
  auto t = Parse(sql);
  if (!t.ok()) return t.status();
  if (t->stmts_size() != 1 || !t->stmts(0).stmt().has_select_stmt()) return SqlError(sqlstate::kInternal, "bad template");
  auto stmt = std::make_shared<const pq::SelectStmt>(t->stmts(0).stmt().select_stmt());
  std::lock_guard lock(mu);
  if (cache.size() >= 1024) cache.clear();
  cache.emplace(sql, stmt);
  return *stmt;
}

// Whether `found` holds for `m` or any message within it (a walk by reflection).
template <class Found>
bool AnyWithin(const google::protobuf::Message& m, const Found& found) {
  if (found(m)) return true;
  const auto* refl = m.GetReflection();
  std::vector<const google::protobuf::FieldDescriptor*> fields;
  refl->ListFields(m, &fields);
  for (const auto* f : fields) {
    if (f->cpp_type() != google::protobuf::FieldDescriptor::CPPTYPE_MESSAGE) continue;
    if (f->is_repeated()) {
      for (int i = 0; i < refl->FieldSize(m, f); ++i) {
        if (AnyWithin(refl->GetRepeatedMessage(m, f, i), found)) return true;
      }
    } else if (AnyWithin(refl->GetMessage(m, f), found)) {
      return true;
    }
  }
  return false;
}

// Whether `m` holds a ParamRef numbered 0 (only walked when the text contains "$0").
bool HasParamZero(const google::protobuf::Message& m) {
  return AnyWithin(m, [](const google::protobuf::Message& n) {
    const auto* p = dynamic_cast<const pq::ParamRef*>(&n);
    return p && p->number() == 0;
  });
}

// Functions of PostgreSQL's own (and of common extensions) that write no table, by name: a call
// of any other function may write tables behind the statement's back.
bool KnownFunction(std::string_view name) {
  static const std::set<std::string_view> kKnown = {
      // aggregates and window functions
      "count", "sum", "avg", "min", "max", "array_agg", "string_agg", "json_agg", "jsonb_agg", "json_object_agg",
      "jsonb_object_agg", "bool_and", "bool_or", "every", "bit_and", "bit_or", "bit_xor", "stddev", "stddev_pop",
      "stddev_samp", "variance", "var_pop", "var_samp", "percentile_cont", "percentile_disc", "mode", "corr",
      "covar_pop", "covar_samp", "regr_avgx", "regr_avgy", "regr_count", "regr_intercept", "regr_r2", "regr_slope",
      "regr_sxx", "regr_sxy", "regr_syy", "row_number", "rank", "dense_rank", "percent_rank", "cume_dist", "ntile",
      "lag", "lead", "first_value", "last_value", "nth_value",
      // strings and bytes
      "lower", "upper", "initcap", "length", "char_length", "character_length", "octet_length", "bit_length",
      "substr", "substring", "trim", "btrim", "ltrim", "rtrim", "lpad", "rpad", "left", "right", "concat",
      "concat_ws", "replace", "split_part", "strpos", "position", "reverse", "repeat", "format", "md5", "sha224",
      "sha256", "sha384", "sha512", "encode", "decode", "to_hex", "ascii", "chr", "quote_ident", "quote_literal",
      "quote_nullable", "regexp_replace", "regexp_match", "regexp_matches", "regexp_split_to_array",
      "regexp_split_to_table", "regexp_like", "regexp_count", "regexp_instr", "regexp_substr", "starts_with",
      "translate", "string_to_array", "string_to_table", "array_to_string", "overlay", "convert_from", "convert_to",
      "normalize", "unistr", "like_escape", "get_byte", "set_byte", "get_bit", "set_bit",
      // numbers
      "abs", "ceil", "ceiling", "floor", "round", "trunc", "mod", "div", "power", "pow", "sqrt", "cbrt", "exp", "ln",
      "log", "log10", "sign", "pi", "degrees", "radians", "sin", "cos", "tan", "asin", "acos", "atan", "atan2",
      "width_bucket", "gcd", "lcm", "scale", "min_scale", "trim_scale", "random", "setseed", "factorial",
      // dates and times
      "now", "clock_timestamp", "statement_timestamp", "transaction_timestamp", "timeofday", "date_trunc",
      "date_part", "extract", "date_bin", "age", "make_date", "make_time", "make_timestamp", "make_timestamptz",
      "make_interval", "to_char", "to_date", "to_timestamp", "to_number", "justify_days", "justify_hours",
      "justify_interval", "isfinite", "timezone", "overlaps", "date", "time", "timestamp", "timestamptz", "interval",
      // casts written as calls
      "text", "varchar", "bpchar", "int2", "int4", "int8", "float4", "float8", "numeric", "bool", "uuid", "json",
      "jsonb", "bytea",
      // full-text search, ranges, similarity
      "to_tsvector", "to_tsquery", "plainto_tsquery", "phraseto_tsquery", "websearch_to_tsquery", "ts_rank",
      "ts_rank_cd", "ts_headline", "setweight", "strip", "numnode", "querytree", "array_to_tsvector", "tsvector_to_array",
      "int4range", "int8range", "numrange", "tsrange", "tstzrange", "daterange", "isempty", "lower_inc", "upper_inc",
      "lower_inf", "upper_inf", "range_merge", "similar_to_escape", "unaccent", "similarity", "word_similarity",
      "strict_word_similarity", "levenshtein", "soundex", "difference", "metaphone", "dmetaphone",
      // json
      "to_json", "to_jsonb", "row_to_json", "array_to_json", "json_build_object", "jsonb_build_object",
      "json_build_array", "jsonb_build_array", "json_object", "jsonb_object", "json_extract_path",
      "json_extract_path_text", "jsonb_extract_path", "jsonb_extract_path_text", "jsonb_set", "jsonb_set_lax",
      "jsonb_insert", "json_strip_nulls", "jsonb_strip_nulls", "jsonb_pretty", "json_typeof", "jsonb_typeof",
      "json_array_length", "jsonb_array_length", "json_each", "jsonb_each", "json_each_text", "jsonb_each_text",
      "json_array_elements", "jsonb_array_elements", "json_array_elements_text", "jsonb_array_elements_text",
      "json_object_keys", "jsonb_object_keys", "json_populate_record", "jsonb_populate_record",
      "json_populate_recordset", "jsonb_populate_recordset", "json_to_record", "jsonb_to_record",
      "json_to_recordset", "jsonb_to_recordset", "jsonb_path_query", "jsonb_path_exists", "jsonb_path_match",
      "jsonb_path_query_array", "jsonb_path_query_first",
      // arrays and sets
      "array_length", "cardinality", "array_append", "array_prepend", "array_cat", "array_remove", "array_replace",
      "array_position", "array_positions", "array_dims", "array_lower", "array_upper", "array_ndims", "array_fill",
      "unnest", "generate_series", "generate_subscripts", "num_nulls", "num_nonnulls",
      // identifiers, sessions, sequences (a sequence is not undone anyway: docs/undo-log.md)
      "gen_random_uuid", "uuid_generate_v1", "uuid_generate_v4", "nextval", "currval", "lastval", "setval",
      "current_setting", "set_config", "pg_backend_pid", "version", "current_database", "current_schema",
      "txid_current", "txid_current_if_assigned", "pg_current_xact_id", "pg_current_xact_id_if_assigned",
      "pg_typeof", "format_type", "to_regclass", "to_regtype", "hashtext", "pg_sleep", "pg_notify",
      "pg_advisory_xact_lock", "pg_advisory_xact_lock_shared", "pg_try_advisory_xact_lock",
      "pg_try_advisory_xact_lock_shared", "pg_advisory_lock", "pg_advisory_unlock", "pg_try_advisory_lock",
      "pg_advisory_lock_shared", "pg_advisory_unlock_shared", "pg_try_advisory_lock_shared", "pg_advisory_unlock_all",
      // catalog introspection (ORMs, drivers)
      "pg_get_expr", "pg_get_serial_sequence", "pg_get_indexdef", "pg_get_constraintdef", "pg_get_viewdef",
      "pg_get_triggerdef", "pg_get_functiondef", "col_description", "obj_description", "shobj_description",
      "pg_table_is_visible", "pg_type_is_visible", "pg_function_is_visible", "has_table_privilege",
      "has_schema_privilege", "has_column_privilege", "has_database_privilege", "has_sequence_privilege",
      "has_function_privilege", "pg_has_role", "pg_relation_size", "pg_total_relation_size", "pg_size_pretty",
      "pg_encoding_to_char", "to_regproc", "to_regprocedure", "to_regnamespace", "pg_postmaster_start_time",
      "inet_client_addr", "inet_server_addr", "pg_is_in_recovery",
      "host", "masklen", "netmask", "network", "inet_same_family", "digest", "hmac", "crypt", "gen_salt",
      "gen_random_bytes",
  };
  return kKnown.contains(name);
}

// The name of the first function `m` calls that KnownFunction does not know (unqualified or in
// pg_catalog), or "" when there is none.
std::string UnknownFunctionCalled(const google::protobuf::Message& m) {
  std::string called;
  AnyWithin(m, [&called](const google::protobuf::Message& n) {
    const auto* f = dynamic_cast<const pq::FuncCall*>(&n);
    if (!f) return false;
    const auto& name = f->funcname();
    const bool known =
        (name.size() == 1 && name[0].has_string() && KnownFunction(name[0].string().sval())) ||
        (name.size() == 2 && name[0].has_string() && name[0].string().sval() == "pg_catalog" && name[1].has_string() &&
         KnownFunction(name[1].string().sval()));
    if (known) return false;
    for (const auto& part : name) {
      if (!called.empty()) called += '.';
      called += part.has_string() ? part.string().sval() : "?";
    }
    return true;
  });
  return called;
}

// Renumbers the $n parameters of `m` densely in order of first use; returns the original
// numbers (1-based) in their new order. An extra query keeps only the parameters it uses, so
// the server never has to guess the type of one it does not see.
void Renumber(google::protobuf::Message* m, std::map<int, int>* seen, std::vector<int>* order) {
  if (auto* p = dynamic_cast<pq::ParamRef*>(m)) {
    auto [it, fresh] = seen->emplace(p->number(), static_cast<int>(order->size()) + 1);
    if (fresh) order->push_back(p->number());
    p->set_number(it->second);
    return;
  }
  const auto* refl = m->GetReflection();
  std::vector<const google::protobuf::FieldDescriptor*> fields;
  refl->ListFields(*m, &fields);
  for (const auto* f : fields) {
    if (f->cpp_type() != google::protobuf::FieldDescriptor::CPPTYPE_MESSAGE) continue;
    if (f->is_repeated()) {
      for (int i = 0; i < refl->FieldSize(*m, f); ++i) Renumber(refl->MutableRepeatedMessage(m, f, i), seen, order);
    } else {
      Renumber(refl->MutableMessage(m, f), seen, order);
    }
  }
}

// Renumber() of an extra query built from `sql`: a statement whose text has no '$' has no
// parameters, and the reflection walk is skipped.
void RenumberIfParams(std::string_view sql, google::protobuf::Message* m, std::vector<int>* order) {
  if (sql.find('$') == std::string_view::npos) return;
  std::map<int, int> seen;
  Renumber(m, &seen, order);
}

// The tree of a parsed statement: the kept one, or the deprecated serialized form.
Result<std::shared_ptr<const pq::ParseResult>> TreeOf(const ParsedStatement& parsed) {
  if (parsed.tree) {
    if (parsed.tree->stmts_size() != 1) return SqlError(sqlstate::kInternal, "bad parse tree");
    return parsed.tree;
  }
  if (parsed.parse_tree.empty() && !parsed.sql.empty()) {
    // From the shape cache, for a shape without a splice spec: the grammar again.
    auto again = Parse(parsed.sql);
    if (!again.ok()) return again.status();
    if (again->stmts_size() != 1) return SqlError(sqlstate::kInternal, "bad parse tree");
    return std::shared_ptr<const pq::ParseResult>(std::make_shared<pq::ParseResult>(std::move(*again)));
  }
  auto tree = std::make_shared<pq::ParseResult>();
  if (!ReadTree(parsed.parse_tree.data(), parsed.parse_tree.size(), tree.get())) return TooDeepError();
  if (tree->stmts_size() != 1) return SqlError(sqlstate::kInternal, "bad parse tree");
  return std::shared_ptr<const pq::ParseResult>(std::move(tree));
}

// The statement's own text (its RawStmt range, without the trailing ';'), or its deparse when
// the text is not known.
Result<std::string> StatementText(const ParsedStatement& parsed, const pq::ParseResult& tree) {
  if (parsed.sql.empty()) return Deparse(tree);
  const auto& raw = tree.stmts(0);
  const size_t at = static_cast<size_t>(std::max(0, raw.stmt_location()));
  if (at > parsed.sql.size()) return SqlError(sqlstate::kInternal, "bad statement location");
  const size_t len = raw.stmt_len() > 0 ? static_cast<size_t>(raw.stmt_len()) : std::string::npos;
  return parsed.sql.substr(at, len);
}

void SetForUpdate(pq::SelectStmt* s) {
  auto* lc = s->add_locking_clause()->mutable_locking_clause();
  lc->set_strength(pq::LCS_FORUPDATE);
  lc->set_wait_policy(pq::LockWaitBlock);
}

}  // namespace

QueryParams SelectParams(const QueryParams& params, const std::vector<int>& numbers) {
  QueryParams out;
  for (int n : numbers) {
    size_t i = static_cast<size_t>(n - 1);
    out.values.push_back(i < params.values.size() ? params.values[i] : std::nullopt);
    if (params.formats.size() > 1) out.formats.push_back(i < params.formats.size() ? params.formats[i] : 0);
    out.types.push_back(i < params.types.size() ? params.types[i] : 0);
  }
  if (params.formats.size() == 1) out.formats = params.formats;
  return out;
}

namespace {
// Whether `s` is well-formed UTF-8 (no overlongs, surrogates or code points past U+10FFFF).
bool ValidUtf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    int n = 0;
    uint32_t cp = 0;
    if ((c & 0xE0) == 0xC0) n = 1, cp = c & 0x1F;
    else if ((c & 0xF0) == 0xE0) n = 2, cp = c & 0x0F;
    else if ((c & 0xF8) == 0xF0) n = 3, cp = c & 0x07;
    else return false;
    if (s.size() - i <= static_cast<size_t>(n)) return false;
    for (int k = 1; k <= n; ++k) {
      const unsigned char d = static_cast<unsigned char>(s[i + k]);
      if ((d & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (d & 0x3F);
    }
    if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) || cp > 0x10FFFF ||
        (cp >= 0xD800 && cp <= 0xDFFF)) {
      return false;
    }
    i += n + 1;
  }
  return true;
}
}  // namespace

namespace {

// What the grammar's tree of `sql` says: the analysis, or the refusal.
Result<ParsedStatement> Classify(const std::shared_ptr<const pq::ParseResult>& tree, std::string sql) {
  ParsedStatement out;
  if (tree->stmts_size() == 0) return out;
  if (tree->stmts_size() > 1) {
    return Refuse("the string holds " + std::to_string(tree->stmts_size()) +
                  " statements; send one statement per query in a global transaction");
  }
  // The grammar takes "$0", but it names no parameter: refuse it as the server would.
  if (sql.find("$0") != std::string::npos && HasParamZero(*tree)) {
    return SqlError("42P02", "there is no parameter $0", StatusCode::kInvalidArgument);
  }
  const pq::Node& n = tree->stmts(0).stmt();
  out.tree = tree;
  // The text the grammar saw (it stops at a NUL byte), so that Plan splices nothing else.
  sql.resize(std::strlen(sql.c_str()));
  out.sql = std::move(sql);
  switch (n.node_case()) {
    case pq::Node::kInsertStmt: {
      const auto& s = n.insert_stmt();
      if (s.has_with_clause()) DTX_RETURN_IF_ERROR(CheckWith(s.with_clause()));
      if (s.has_on_conflict_clause()) return Refuse("INSERT ... ON CONFLICT");
      if (s.has_select_stmt() && s.select_stmt().has_select_stmt() && s.select_stmt().select_stmt().has_with_clause()) {
        DTX_RETURN_IF_ERROR(CheckWith(s.select_stmt().select_stmt().with_clause()));
      }
      out.kind = StatementKind::kInsert;
      out.table = RefOf(s.relation());
      out.returning_items = s.returning_list_size();
      return out;
    }
    case pq::Node::kUpdateStmt: {
      const auto& s = n.update_stmt();
      if (s.has_with_clause()) DTX_RETURN_IF_ERROR(CheckWith(s.with_clause()));
      if (s.from_clause_size() > 0) return Refuse("UPDATE ... FROM (a write that joins other tables)");
      if (s.has_where_clause() && s.where_clause().has_current_of_expr()) return Refuse("UPDATE ... WHERE CURRENT OF");
      out.kind = StatementKind::kUpdate;
      out.table = RefOf(s.relation());
      for (const auto& t : s.target_list()) {
        if (t.has_res_target()) out.set_columns.push_back(t.res_target().name());
      }
      out.returning_items = s.returning_list_size();
      return out;
    }
    case pq::Node::kDeleteStmt: {
      const auto& s = n.delete_stmt();
      if (s.has_with_clause()) DTX_RETURN_IF_ERROR(CheckWith(s.with_clause()));
      if (s.using_clause_size() > 0) return Refuse("DELETE ... USING (a write that joins other tables)");
      if (s.has_where_clause() && s.where_clause().has_current_of_expr()) return Refuse("DELETE ... WHERE CURRENT OF");
      out.kind = StatementKind::kDelete;
      out.table = RefOf(s.relation());
      out.returning_items = s.returning_list_size();
      return out;
    }
    case pq::Node::kMergeStmt: return Refuse("MERGE");
    case pq::Node::kSelectStmt: {
      const auto& s = n.select_stmt();
      if (s.has_with_clause()) DTX_RETURN_IF_ERROR(CheckWith(s.with_clause()));
      if (s.has_into_clause()) return Refuse("SELECT ... INTO (it creates a table)");
      out.kind = StatementKind::kReadOnly;
      bool for_update = false;
      for (const auto& l : s.locking_clause()) {
        auto st = l.locking_clause().strength();
        if (st == pq::LCS_FORUPDATE || st == pq::LCS_FORNOKEYUPDATE) for_update = true;
      }
      // A global read-committed check needs the keys of one table's locked rows.
      if (for_update && s.from_clause_size() == 1 && s.from_clause(0).has_range_var() && s.op() == pq::SETOP_NONE &&
          s.group_clause_size() == 0 && s.distinct_clause_size() == 0) {
        out.kind = StatementKind::kSelectForUpdate;
        out.table = RefOf(s.from_clause(0).range_var());
      }
      return out;
    }
    case pq::Node::kTransactionStmt: {
      const auto& t = n.transaction_stmt();
      switch (t.kind()) {
        case pq::TRANS_STMT_PREPARE:
        case pq::TRANS_STMT_COMMIT_PREPARED:
        case pq::TRANS_STMT_ROLLBACK_PREPARED:
          return Refuse("two-phase commit statements (PREPARE TRANSACTION, COMMIT/ROLLBACK PREPARED)");
        case pq::TRANS_STMT_BEGIN:
        case pq::TRANS_STMT_START: out.transaction_op = TransactionOp::kBegin; break;
        case pq::TRANS_STMT_COMMIT: out.transaction_op = TransactionOp::kCommit; break;
        case pq::TRANS_STMT_ROLLBACK: out.transaction_op = TransactionOp::kRollback; break;
        case pq::TRANS_STMT_SAVEPOINT: out.transaction_op = TransactionOp::kSavepoint; break;
        case pq::TRANS_STMT_RELEASE: out.transaction_op = TransactionOp::kRelease; break;
        case pq::TRANS_STMT_ROLLBACK_TO: out.transaction_op = TransactionOp::kRollbackTo; break;
        default: break;
      }
      out.savepoint = t.savepoint_name();
      out.chain = t.chain();
      out.kind = StatementKind::kTransactionControl;
      return out;
    }
    case pq::Node::kVariableShowStmt:
      out.kind = StatementKind::kReadOnly;
      return out;
    case pq::Node::kExplainStmt: {
      const auto& q = n.explain_stmt().query();
      if (IsWrite(q)) return Refuse("EXPLAIN of a data-modifying statement (EXPLAIN ANALYZE would run it)");
      out.kind = StatementKind::kReadOnly;
      return out;
    }
    case pq::Node::kCopyStmt:
      if (n.copy_stmt().is_from()) return Refuse("COPY ... FROM");
      if (n.copy_stmt().has_query() && IsWrite(n.copy_stmt().query())) return Refuse("COPY of a data-modifying statement");
      out.kind = StatementKind::kReadOnly;
      return out;
    case pq::Node::kVariableSetStmt:
    case pq::Node::kLockStmt:
    case pq::Node::kDeclareCursorStmt:
    case pq::Node::kFetchStmt:
    case pq::Node::kClosePortalStmt:
    case pq::Node::kListenStmt:
    case pq::Node::kUnlistenStmt:
    case pq::Node::kNotifyStmt:
    case pq::Node::kDiscardStmt:
    case pq::Node::kDeallocateStmt:
    case pq::Node::kConstraintsSetStmt:
      out.kind = StatementKind::kOther;
      return out;
    case pq::Node::kTruncateStmt: return Refuse("TRUNCATE");
    case pq::Node::kPrepareStmt:
    case pq::Node::kExecuteStmt: return Refuse("PREPARE/EXECUTE (use the extended query protocol instead)");
    case pq::Node::kDoStmt: return Refuse("DO blocks");
    case pq::Node::kCallStmt: return Refuse("CALL");
    default: {
      const auto* f = n.GetReflection()->GetOneofFieldDescriptor(n, n.GetDescriptor()->oneof_decl(0));
      return Refuse("DDL and utility statements (" + (f ? f->name() : std::string("unknown")) +
                    ") are not allowed in a global transaction");
    }
  }
}


Status RefuseLocal(const std::string& what) {
  return SqlError(sqlstate::kFeatureNotSupported,
                  "dtx-sql-proxy cannot check " + what +
                      " against the global locks (a session bound to no global transaction); send the writes as "
                      "plain INSERT/UPDATE/DELETE statements, or run the proxy with --check-unbound-writes false");
}

// The writable CTE of a WITH clause, if any.
const pq::CommonTableExpr* WritableCte(const pq::WithClause& with) {
  for (const auto& cte : with.ctes()) {
    if (cte.has_common_table_expr() && IsWrite(cte.common_table_expr().ctequery())) return &cte.common_table_expr();
  }
  return nullptr;
}

bool ExplainAnalyzes(const pq::ExplainStmt& e) {
  for (const auto& o : e.options()) {
    if (!o.has_def_elem() || o.def_elem().defname() != "analyze") continue;
    const auto& arg = o.def_elem().arg();
    if (arg.has_string() && (arg.string().sval() == "false" || arg.string().sval() == "off")) continue;
    if (arg.has_boolean() && !arg.boolean().boolval()) continue;
    if (arg.has_integer() && arg.integer().ival() == 0) continue;
    return true;
  }
  return false;
}

// LocalWrite of a parsed text (`text`: what the grammar saw).
LocalWrite LocalWriteOf(const pq::ParseResult& tree, std::string_view text) {
  LocalWrite out;
  if (tree.stmts_size() == 0) return out;
  if (tree.stmts_size() > 1) {
    out.check = LocalWrite::Check::kSeveral;
    return out;
  }
  const auto& raw = tree.stmts(0);
  const pq::Node& n = raw.stmt();
  auto refuse = [&](const std::string& what) {
    out.check = LocalWrite::Check::kRefuse;
    out.refusal = RefuseLocal(what);
    return out;
  };
  const pq::WithClause* with = nullptr;
  const pq::RangeVar* rv = nullptr;
  switch (n.node_case()) {
    case pq::Node::kInsertStmt: {
      const auto& s = n.insert_stmt();
      if (s.has_with_clause()) with = &s.with_clause();
      if (s.has_select_stmt() && s.select_stmt().has_select_stmt() && s.select_stmt().select_stmt().has_with_clause() &&
          WritableCte(s.select_stmt().select_stmt().with_clause())) {
        with = &s.select_stmt().select_stmt().with_clause();
      }
      rv = &s.relation();
      out.returning_items = s.returning_list_size();
      break;
    }
    case pq::Node::kUpdateStmt:
      if (n.update_stmt().has_with_clause()) with = &n.update_stmt().with_clause();
      rv = &n.update_stmt().relation();
      out.returning_items = n.update_stmt().returning_list_size();
      break;
    case pq::Node::kDeleteStmt:
      if (n.delete_stmt().has_with_clause()) with = &n.delete_stmt().with_clause();
      rv = &n.delete_stmt().relation();
      out.returning_items = n.delete_stmt().returning_list_size();
      break;
    case pq::Node::kSelectStmt:
      if (n.select_stmt().has_with_clause()) with = &n.select_stmt().with_clause();
      break;
    case pq::Node::kMergeStmt: return refuse("MERGE (it cannot return the keys of the rows it writes)");
    case pq::Node::kCopyStmt: {
      const auto& copy = n.copy_stmt();
      // A file or program on the server's side (no filename: the client's STDIN or STDOUT) sends
      // the client no data: it runs as any other statement.
      out.copies = copy.filename().empty();
      out.copies_in = out.copies && copy.is_from();
      bool writes = copy.is_from();
      if (copy.has_query()) {
        const pq::Node& q = copy.query();
        writes = writes || IsWrite(q) ||
                 (q.has_select_stmt() && q.select_stmt().has_with_clause() && WritableCte(q.select_stmt().with_clause()));
      }
      if (writes) out.check = LocalWrite::Check::kTables;
      return out;
    }
    case pq::Node::kTruncateStmt:
      out.check = LocalWrite::Check::kTables;
      out.truncates = true;
      return out;
    case pq::Node::kCallStmt:
    case pq::Node::kDoStmt:
      out.check = LocalWrite::Check::kTables;
      out.procedure = true;
      return out;
    case pq::Node::kExplainStmt:
      if (IsWrite(n.explain_stmt().query()) && ExplainAnalyzes(n.explain_stmt())) {
        return refuse("EXPLAIN ANALYZE of a data-modifying statement");
      }
      return out;
    case pq::Node::kPrepareStmt:
      if (IsWrite(n.prepare_stmt().query())) {
        return refuse("PREPARE of a data-modifying statement (its EXECUTE; the extended query protocol's Parse is checked)");
      }
      return out;
    default: return out;
  }
  if (with) {
    if (const auto* cte = WritableCte(*with)) return refuse("a data-modifying statement in WITH (\"" + cte->ctename() + "\")");
  }
  if (!rv) return out;
  out.check = LocalWrite::Check::kKeys;
  out.table = RefOf(*rv);
  out.qualifier = Qualifier(*rv);
  const size_t at = static_cast<size_t>(std::max(0, raw.stmt_location()));
  const size_t end = raw.stmt_len() > 0 ? at + static_cast<size_t>(raw.stmt_len()) : text.size();
  out.tail = end <= text.size() ? text.size() - end : 0;
  return out;
}

bool Writes(StatementKind k) {
  return k == StatementKind::kInsert || k == StatementKind::kUpdate || k == StatementKind::kDelete ||
         k == StatementKind::kSelectForUpdate;
}

// The grammar's analysis of `sql_view`, with its shape; the shape is cached under `key` (when
// `cache` is set) if the checks allow sharing it, or else under the exact text.
Result<ParsedStatement> AnalyzeWithGrammar(std::string_view sql_view, ShapeKey key, ShapeCache* cache,
                                           std::shared_ptr<const StatementShape>* shape_out = nullptr) {
  std::string sql(sql_view);
  auto parsed_tree = Parse(sql);
  if (!parsed_tree.ok()) return parsed_tree.status();  // not cached: the message has positions
  auto tree = std::make_shared<const pq::ParseResult>(std::move(*parsed_tree));
  // The text the grammar saw (it stops at a NUL byte).
  std::string text = sql.substr(0, std::strlen(sql.c_str()));
  auto result = Classify(tree, sql);
  // Once per shape: a walk of the tree (literals never name a function).
  std::string unknown_function;
  if (result.ok() && result->kind != StatementKind::kTransactionControl && result->kind != StatementKind::kEmpty) {
    unknown_function = UnknownFunctionCalled(*tree);
    const pq::Node& n = tree->stmts(0).stmt();
    constexpr int kCursorOptHold = 0x0020;  // CURSOR_OPT_HOLD
    if (!unknown_function.empty() && n.has_declare_cursor_stmt() && (n.declare_cursor_stmt().options() & kCursorOptHold)) {
      // The rest of its query runs inside the COMMIT, after any check of what it wrote.
      result = Refuse("a WITH HOLD cursor over a query that calls " + unknown_function +
                      "(): the function would run during the COMMIT, where its writes cannot be checked");
    }
  }
  auto shape = std::make_shared<StatementShape>();
  shape->local = LocalWriteOf(*tree, text);
  if (shape_out) *shape_out = shape;
  if (!result.ok()) {
    shape->refusal = result.status();
  } else {
    ParsedStatement& a = shape->analysis;
    a.kind = result->kind;
    a.transaction_op = result->transaction_op;
    a.savepoint = result->savepoint;
    a.chain = result->chain;
    a.table = result->table;
    a.set_columns = result->set_columns;
    a.returning_items = result->returning_items;
    a.unknown_function = unknown_function;
    a.calls_unknown_functions = !a.unknown_function.empty();
    result->calls_unknown_functions = a.calls_unknown_functions;
    result->unknown_function = a.unknown_function;
    if (result->tree) {
      shape->tree = result->tree;
      // An estimate (a walk of the tree by reflection would cost a tenth of the parse).
      shape->tree_bytes = 512 + 64 * text.size();
    }
  }
  bool shared = key.abstracted;
  const bool splice = result.ok() && Writes(result->kind);
  std::optional<pq::ScanResult> scan;
  if ((shared && !key.literals.empty()) || splice) {
    if (auto s = ScanSql(text); s.ok()) scan = std::move(*s);
  }
  // Each abstracted literal must be one constant token of the grammar's own scanner.
  if (shared && !key.literals.empty() && (!scan || !LiteralsAreTokens(*scan, text, key.literals))) shared = false;
  static const std::vector<ShapeLiteral> kNone;
  const std::vector<ShapeLiteral>& literals = shared ? key.literals : kNone;
  shape->literal_count = literals.size();
  if (splice && scan) BuildSplice(*tree, text, *scan, literals, shape.get());
  if (splice && !shape->spliced) shared = false;
  if (result.ok()) {
    result->shape = shape;
    result->literals = literals;
  }
  if (cache) {
    if (shared) {
      cache->Insert(std::move(key.key), std::move(shape));
    } else {
      if (key.abstracted) cache->Insert(std::move(key.key), nullptr);
      std::string exact = "E";
      exact.append(sql_view);
      cache->Insert(std::move(exact), std::move(shape));
    }
  }
  return result;
}

// The analysis of a cached shape for the statement `sql`.
Result<ParsedStatement> FromShape(std::shared_ptr<const StatementShape> shape, std::string_view sql,
                                  std::vector<ShapeLiteral> literals) {
  if (shape->refusal) return *shape->refusal;
  ParsedStatement out = shape->analysis;
  if (out.kind != StatementKind::kEmpty) out.sql.assign(sql.substr(0, std::min(sql.size(), sql.find('\0'))));
  out.literals = std::move(literals);
  out.tree = shape->tree;
  out.shape = std::move(shape);
  return out;
}

}  // namespace

namespace {

// The cached shape of `sql`, if any; `key` is left as the key it is (or would be) cached under.
std::shared_ptr<const StatementShape> CachedShape(std::string_view sql, ShapeKey& key) {
  key = ComputeShapeKey(sql);
  ShapeCache& cache = ShapeCache::Global();
  auto hit = cache.Find(key.key);
  if (hit.found && !hit.shape && key.abstracted) {
    // Statements of this shape are analysed by their exact text.
    key = ShapeKey{};
    key.key.reserve(sql.size() + 1);
    key.key.push_back('E');
    key.key.append(sql);
    hit = cache.Find(key.key);
  }
  return hit.found ? hit.shape : nullptr;
}

// Whether the scanner finds a keyword of a write (or of a PREPARE, which may hold one) in `sql`.
bool MayWrite(std::string_view sql) {
  const std::string text(sql.substr(0, std::min(sql.size(), sql.find('\0'))));
  auto scan = ScanSql(text);
  if (!scan.ok()) return true;
  for (const auto& t : scan->tokens()) {
    switch (t.token()) {
      case pq::INSERT:
      case pq::UPDATE:
      case pq::DELETE_P:
      case pq::MERGE:
      case pq::COPY:
      case pq::TRUNCATE:
      case pq::CALL:
      case pq::DO:
      case pq::PREPARE: return true;
      default: break;
    }
  }
  return false;
}

}  // namespace

Result<ParsedStatement> Analyze(std::string_view sql) {
  if (!ValidUtf8(sql)) {
    return SqlError("22021", "the statement is not valid UTF-8: AT mode needs client_encoding UTF8");
  }
  ShapeKey key;
  if (auto shape = CachedShape(sql, key)) {
    auto out = FromShape(std::move(shape), sql, key.abstracted ? std::move(key.literals) : std::vector<ShapeLiteral>{});
    if (out.ok()) out->recurring = true;
    return out;
  }
  return AnalyzeWithGrammar(sql, std::move(key), &ShapeCache::Global());
}

LocalWrite AnalyzeLocal(std::string_view sql) {
  if (!ValidUtf8(sql)) return LocalWrite{};  // the server decides; keys could not match anyway
  ShapeKey key;
  std::shared_ptr<const StatementShape> shape = CachedShape(sql, key);
  if (shape) return shape->local;
  auto analyzed = AnalyzeWithGrammar(sql, std::move(key), &ShapeCache::Global(), &shape);
  if (shape) return shape->local;
  if (SqlStateOf(analyzed.status()) == sqlstate::kStatementTooComplex && MayWrite(sql)) {
    // The grammar took it, so the server will run it, but its keys cannot be read: refuse it
    // rather than let an unchecked write through. Reads this deep still pass.
    LocalWrite refused;
    refused.check = LocalWrite::Check::kRefuse;
    refused.refusal = analyzed.status();
    return refused;
  }
  return LocalWrite{};
}

std::string TablesWrittenQuery(bool exclusive_only) {
  // pg_locks lists the fast-path locks too. The tables above a written one (partitioned parents,
  // INHERITS parents) count, since a global transaction's keys name the table its statement named.
  std::string modes = exclusive_only ? "'AccessExclusiveLock'"
                                     : "'RowExclusiveLock', 'ShareRowExclusiveLock', 'ExclusiveLock', 'AccessExclusiveLock'";
  return "WITH RECURSIVE written(relid) AS (SELECT l.relation FROM pg_catalog.pg_locks l "
         "WHERE l.locktype = 'relation' AND l.pid = pg_catalog.pg_backend_pid() AND l.granted AND l.mode IN (" +
         modes +
         ") UNION SELECT i.inhparent FROM pg_catalog.pg_inherits i JOIN written w ON i.inhrelid = w.relid) "
         "SELECT DISTINCT n.nspname::text, c.relname::text FROM written w JOIN pg_catalog.pg_class c ON c.oid = w.relid "
         "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p') ORDER BY 1, 2";
}

Result<std::vector<std::string_view>> SplitStatements(std::string_view sql) {
  const std::string text(sql.substr(0, std::min(sql.size(), sql.find('\0'))));
  auto tree = Parse(text);
  if (!tree.ok()) return tree.status();
  std::vector<std::string_view> out;
  for (const auto& raw : tree->stmts()) {
    const size_t at = static_cast<size_t>(std::max(0, raw.stmt_location()));
    const size_t len = raw.stmt_len() > 0 ? static_cast<size_t>(raw.stmt_len()) : text.size() - std::min(at, text.size());
    if (at + len > text.size()) return SqlError(sqlstate::kInternal, "bad statement location");
    out.push_back(sql.substr(at, len));
  }
  return out;
}

Result<ParsedStatement> AnalyzeUncached(std::string_view sql) {
  if (!ValidUtf8(sql)) {
    return SqlError("22021", "the statement is not valid UTF-8: AT mode needs client_encoding UTF8");
  }
  return AnalyzeWithGrammar(sql, ComputeShapeKey(sql), nullptr);
}

bool SameQuery(std::string_view a, const std::vector<int>& params_a, std::string_view b, const std::vector<int>& params_b) {
  auto ta = Parse(std::string(a));
  auto tb = Parse(std::string(b));
  if (!ta.ok() || !tb.ok()) return false;
  if (ta->stmts_size() != tb->stmts_size()) return false;
  for (int i = 0; i < ta->stmts_size(); ++i) {
    if (!SameTree(ta->stmts(i).stmt(), tb->stmts(i).stmt(), params_a.empty() ? nullptr : &params_a,
                  params_b.empty() ? nullptr : &params_b)) {
      return false;
    }
  }
  return true;
}

bool SameMergedUpdate(std::string_view merged, std::string_view statement, std::string_view before_image,
                      const std::vector<int>& extra_params) {
  auto tm = Parse(std::string(merged));
  auto ts = Parse(std::string(statement));
  auto tb = Parse(std::string(before_image));
  if (!tm.ok() || !ts.ok() || !tb.ok() || tm->stmts_size() != 1 || ts->stmts_size() != 1 || tb->stmts_size() != 1) return false;
  if (!tm->stmts(0).stmt().has_update_stmt() || !ts->stmts(0).stmt().has_update_stmt() ||
      !tb->stmts(0).stmt().has_select_stmt()) {
    return false;
  }
  const auto& m = tm->stmts(0).stmt().update_stmt();
  const auto& s = ts->stmts(0).stmt().update_stmt();
  const auto& b = tb->stmts(0).stmt().select_stmt();
  auto same = [](const auto& x, const auto& y) {
    if (x.size() != y.size()) return false;
    for (int i = 0; i < x.size(); ++i) {
      if (!SameTree(x.Get(i), y.Get(i), nullptr, nullptr)) return false;
    }
    return true;
  };
  if (!SameTree(m.relation(), s.relation(), nullptr, nullptr) || !same(m.target_list(), s.target_list())) return false;
  if (m.has_with_clause() != s.has_with_clause() || (m.has_with_clause() && !SameTree(m.with_clause(), s.with_clause(), nullptr, nullptr))) {
    return false;
  }
  // The statement's items and its two hidden ones, then the before image.
  if (m.returning_list_size() != s.returning_list_size() + 1) return false;
  for (int i = 0; i < s.returning_list_size(); ++i) {
    if (!SameTree(m.returning_list(i), s.returning_list(i), nullptr, nullptr)) return false;
  }
  if (s.from_clause_size() != 0 || m.from_clause_size() != 1 || !m.from_clause(0).has_range_subselect() || !m.has_where_clause()) {
    return false;
  }
  const auto& sub = m.from_clause(0).range_subselect().subquery();
  if (!sub.has_select_stmt()) return false;
  const auto& q = sub.select_stmt();
  // The subquery reads the before image query's table, condition and lock, with the client's own
  // parameter numbers.
  if (!same(q.from_clause(), b.from_clause()) || !same(q.locking_clause(), b.locking_clause())) return false;
  if (q.has_where_clause() != b.has_where_clause() ||
      (q.has_where_clause() && !SameTree(q.where_clause(), b.where_clause(), nullptr, &extra_params))) {
    return false;
  }
  return q.has_with_clause() == false && b.has_with_clause() == m.has_with_clause() &&
         (!b.has_with_clause() || SameTree(b.with_clause(), m.with_clause(), &extra_params, nullptr));
}

namespace {

// "[WITH ...] SELECT <targets> FROM <table> [WHERE ...] FOR UPDATE" from the shape's templates.
std::string SplicedExtraQuery(const ParsedStatement& parsed, const std::vector<std::string>& pk, bool with_image) {
  const StatementShape& s = *parsed.shape;
  std::string q;
  s.with.AppendTo(&q, parsed.sql, parsed.literals);
  if (!q.empty()) q += ' ';
  q += ImageTargets(s.qualifier, pk, with_image);
  q += " FROM ";
  q += s.relation;
  s.where.AppendTo(&q, parsed.sql, parsed.literals);
  q += " FOR UPDATE";
  return q;
}

bool Spliced(const ParsedStatement& parsed) {
  return parsed.shape && parsed.shape->spliced && parsed.shape->analysis.kind == parsed.kind &&
         parsed.literals.size() == parsed.shape->literal_count;
}

}  // namespace

StatementPlan PlanLocalWrite(const LocalWrite& write, const TableInfo& table, std::string_view sql) {
  StatementPlan plan;
  if (table.primary_key.empty() || write.check != LocalWrite::Check::kKeys || write.tail > sql.size()) {
    plan.statement_sql = std::string(sql);
    return plan;
  }
  // The client's statement as written, with the hidden item after its own RETURNING items
  // (RETURNING is the last clause of INSERT/UPDATE/DELETE). The new line ends a trailing "--"
  // comment.
  plan.statement_sql.assign(sql.substr(0, sql.size() - write.tail));
  plan.statement_sql += write.returning_items > 0 ? "\n, " : "\nRETURNING ";
  plan.statement_sql.append(ImageTargets(write.qualifier, table.primary_key, false), std::strlen("SELECT "));
  plan.hidden_columns = 1;
  return plan;
}

namespace {

// Refuses what the table makes impossible to undo: an UPDATE of a key column, a cascading DELETE.
Status CheckTable(const ParsedStatement& parsed, const TableInfo& table) {
  if (parsed.kind == StatementKind::kUpdate) {
    for (const auto& c : parsed.set_columns) {
      if (std::find(table.primary_key.begin(), table.primary_key.end(), c) != table.primary_key.end()) {
        return Refuse("the UPDATE assigns primary-key column \"" + c + "\" of " + table.QualifiedName());
      }
    }
  }
  if (parsed.kind == StatementKind::kDelete && table.delete_cascades) {
    return Refuse("a DELETE from " + table.QualifiedName() +
                  " cascades through foreign keys (ON DELETE CASCADE / SET NULL / SET DEFAULT) to rows the "
                  "undo log would not hold");
  }
  return Status::Ok();
}

// Whether an UPDATE can take its before image itself: its shape was cut for it, and no column of
// the table has a name of the FROM item's (an unqualified reference would become ambiguous).
bool MergesBeforeImage(const StatementShape& s, const TableInfo& table) {
  if (!s.merged_update) return false;
  for (const auto& c : table.columns) {
    if (c.rfind("dtx_at_", 0) == 0) return false;
  }
  return true;
}

// The UPDATE that returns the before image of each row it changes, beside its key and after image:
//   [WITH ...] UPDATE <table> SET ...
//   FROM (SELECT row_to_json(q.*)::text AS dtx_at_before, q.k1 AS dtx_at_k1, ... FROM <table>
//         [WHERE <its condition>] FOR UPDATE) AS dtx_at_old
//   WHERE q.k1 = dtx_at_old.dtx_at_k1 AND ...
//   RETURNING <its items>, <key>, <after image>, dtx_at_old.dtx_at_before
// The subquery locks the rows the statement's condition selects (re-checked on their newest
// versions, as the UPDATE itself would) before the UPDATE changes them, and each is joined to
// itself by its primary key, so the UPDATE changes exactly the rows whose before images it
// returns: one statement instead of a SELECT ... FOR UPDATE and the UPDATE.
// The literals of a parametrizable statement as the parameters of StatementPlan::prepared_sql:
// their texts, typed as the literals are (an integer of up to 9 digits is an int4, a decimal a
// numeric).
QueryParams LiteralParams(const ParsedStatement& parsed) {
  QueryParams p;
  for (const auto& l : parsed.literals) {
    std::string_view text = std::string_view(parsed.sql).substr(l.begin, l.len);
    p.values.emplace_back(std::string(text));
    p.types.push_back(text.find('.') == std::string_view::npos ? 23 : 1700);
  }
  return p;
}

void MergedUpdateText(const ParsedStatement& parsed, const TableInfo& table, bool params, std::string* out) {
  const StatementShape& s = *parsed.shape;
  auto append = [&](const TextTemplate& t) {
    if (params) t.AppendParamsTo(out);
    else t.AppendTo(out, parsed.sql, parsed.literals);
  };
  const std::string q = QuoteIdent(s.qualifier);
  std::string& sql = *out;
  append(s.update_head);
  sql += " FROM (SELECT row_to_json(" + q + ".*)::text AS dtx_at_before";
  for (size_t i = 0; i < table.primary_key.size(); ++i) {
    sql += ", " + q + "." + QuoteIdent(table.primary_key[i]) + " AS dtx_at_k" + std::to_string(i + 1);
  }
  sql += " FROM " + s.relation;
  append(s.update_where);
  sql += " FOR UPDATE) AS dtx_at_old WHERE ";
  for (size_t i = 0; i < table.primary_key.size(); ++i) {
    if (i) sql += " AND ";
    sql += q + "." + QuoteIdent(table.primary_key[i]) + " = dtx_at_old.dtx_at_k" + std::to_string(i + 1);
  }
  if (!s.update_tail.empty()) {
    sql += ' ';
    append(s.update_tail);
  }
  sql += parsed.returning_items > 0 ? "\n, " : "\nRETURNING ";
  sql.append(ImageTargets(s.qualifier, table.primary_key, true), std::strlen("SELECT "));
  sql += ", dtx_at_old.dtx_at_before";
}

Result<StatementPlan> MergedUpdatePlan(const ParsedStatement& parsed, const TableInfo& table) {
  StatementPlan plan;
  MergedUpdateText(parsed, table, false, &plan.statement_sql);
  if (parsed.shape->parametrizable && parsed.returning_items == 0) {
    MergedUpdateText(parsed, table, true, &plan.prepared_sql);
    plan.prepared_params = LiteralParams(parsed);
  }
  plan.hidden_columns = 3;
  return plan;
}

// Plan() from the shape's templates and this statement's literals.
Result<StatementPlan> SplicedPlan(const ParsedStatement& parsed, const TableInfo& table) {
  StatementPlan plan;
  const StatementShape& s = *parsed.shape;
  s.statement.AppendTo(&plan.statement_sql, parsed.sql, parsed.literals);
  if (parsed.kind == StatementKind::kSelectForUpdate) {
    plan.lock_keys_sql = SplicedExtraQuery(parsed, table.primary_key, false);
    plan.extra_params = s.extra_params;
    return plan;
  }
  DTX_RETURN_IF_ERROR(CheckTable(parsed, table));
  if (parsed.kind == StatementKind::kUpdate && MergesBeforeImage(s, table)) return MergedUpdatePlan(parsed, table);
  if (parsed.kind == StatementKind::kUpdate) {
    plan.before_image_sql = SplicedExtraQuery(parsed, table.primary_key, true);
    plan.extra_params = s.extra_params;
  }
  const std::string_view hidden = parsed.returning_items > 0 ? "\n, " : "\nRETURNING ";
  const std::string targets = ImageTargets(s.qualifier, table.primary_key, true);
  plan.statement_sql += hidden;
  plan.statement_sql.append(targets, std::strlen("SELECT "));
  plan.hidden_columns = 2;
  if (s.parametrizable && parsed.returning_items == 0 && plan.before_image_sql.empty()) {
    s.statement.AppendParamsTo(&plan.prepared_sql);
    plan.prepared_sql += hidden;
    plan.prepared_sql.append(targets, std::strlen("SELECT "));
    plan.prepared_params = LiteralParams(parsed);
  }
  return plan;
}

}  // namespace

Result<StatementPlan> Plan(const ParsedStatement& parsed, const TableInfo& table) {
  if (table.primary_key.empty()) {
    return Refuse("table " + table.QualifiedName() + " has no primary key");
  }
  if (Spliced(parsed)) return SplicedPlan(parsed, table);
  auto tree_or = TreeOf(parsed);
  if (!tree_or.ok()) return tree_or.status();
  const pq::ParseResult& tree = **tree_or;
  const pq::Node& n = tree.stmts(0).stmt();
  // Renumber() needs to know whether there may be parameters; without the text, assume so.
  const std::string_view text = parsed.sql.empty() ? std::string_view("$") : std::string_view(parsed.sql);
  StatementPlan plan;

  if (parsed.kind == StatementKind::kSelectForUpdate) {
    if (!n.has_select_stmt() || n.select_stmt().from_clause_size() != 1) return SqlError(sqlstate::kInternal, "bad parse tree");
    const auto& s = n.select_stmt();
    const auto& rv = s.from_clause(0).range_var();
    auto t = Template(ImageTargets(Qualifier(rv), table.primary_key, false) + " FROM dtx_placeholder");
    if (!t.ok()) return t.status();
    pq::SelectStmt q = std::move(*t);
    *q.mutable_from_clause(0) = s.from_clause(0);
    if (s.has_where_clause()) *q.mutable_where_clause() = s.where_clause();
    if (s.has_with_clause()) *q.mutable_with_clause() = s.with_clause();
    SetForUpdate(&q);
    RenumberIfParams(text, &q, &plan.extra_params);
    pq::ParseResult out;
    *out.add_stmts()->mutable_stmt()->mutable_select_stmt() = std::move(q);
    auto sql = Deparse(out);
    if (!sql.ok()) return sql.status();
    plan.lock_keys_sql = std::move(*sql);
    auto stmt = StatementText(parsed, tree);
    if (!stmt.ok()) return stmt.status();
    plan.statement_sql = std::move(*stmt);
    return plan;
  }

  const pq::RangeVar* rv = nullptr;
  int returning = 0;
  switch (parsed.kind) {
    case StatementKind::kInsert:
      if (!n.has_insert_stmt()) return SqlError(sqlstate::kInternal, "bad parse tree");
      rv = &n.insert_stmt().relation();
      returning = n.insert_stmt().returning_list_size();
      break;
    case StatementKind::kUpdate:
      if (!n.has_update_stmt()) return SqlError(sqlstate::kInternal, "bad parse tree");
      rv = &n.update_stmt().relation();
      returning = n.update_stmt().returning_list_size();
      for (const auto& c : parsed.set_columns) {
        if (std::find(table.primary_key.begin(), table.primary_key.end(), c) != table.primary_key.end()) {
          return Refuse("the UPDATE assigns primary-key column \"" + c + "\" of " + table.QualifiedName());
        }
      }
      break;
    case StatementKind::kDelete:
      if (table.delete_cascades) {
        return Refuse("a DELETE from " + table.QualifiedName() +
                      " cascades through foreign keys (ON DELETE CASCADE / SET NULL / SET DEFAULT) to rows the "
                      "undo log would not hold");
      }
      if (!n.has_delete_stmt()) return SqlError(sqlstate::kInternal, "bad parse tree");
      rv = &n.delete_stmt().relation();
      returning = n.delete_stmt().returning_list_size();
      break;
    default: return SqlError(sqlstate::kInternal, "Plan() of a statement that does not write");
  }
  const std::string q = Qualifier(*rv);
  const std::string targets = ImageTargets(q, table.primary_key, true);

  if (parsed.kind == StatementKind::kUpdate) {
    const auto& u = n.update_stmt();
    auto t = Template(targets + " FROM dtx_placeholder");
    if (!t.ok()) return t.status();
    pq::SelectStmt s = std::move(*t);
    *s.mutable_from_clause(0)->mutable_range_var() = u.relation();
    if (u.has_where_clause()) *s.mutable_where_clause() = u.where_clause();
    if (u.has_with_clause()) *s.mutable_with_clause() = u.with_clause();
    SetForUpdate(&s);
    RenumberIfParams(text, &s, &plan.extra_params);
    pq::ParseResult out;
    *out.add_stmts()->mutable_stmt()->mutable_select_stmt() = std::move(s);
    auto sql = Deparse(out);
    if (!sql.ok()) return sql.status();
    plan.before_image_sql = std::move(*sql);
  }
  // The client's statement as it was written, with the hidden items after its own RETURNING
  // items (RETURNING is the last clause of INSERT/UPDATE/DELETE). The new line ends a trailing
  // "--" comment.
  auto stmt = StatementText(parsed, tree);
  if (!stmt.ok()) return stmt.status();
  plan.statement_sql = std::move(*stmt);
  plan.statement_sql += returning > 0 ? "\n, " : "\nRETURNING ";
  plan.statement_sql.append(targets, std::strlen("SELECT "));
  plan.hidden_columns = 2;
  return plan;
}

}  // namespace dtx::at
