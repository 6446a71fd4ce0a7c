#include "dtx/at/undo_executor.h"

#include <nlohmann/json.hpp>

#include "dtx/at/undo_log.h"

namespace dtx::at {

namespace {

// "(t.a, t.b) = (SELECT r.a, r.b FROM json_populate_record(NULL::rel, $1::json) r)"
std::string KeyMatch(const std::string& rel, const std::vector<std::string>& pk) {
  std::string l = "(", r = "(SELECT ";
  for (size_t i = 0; i < pk.size(); ++i) {
    if (i) l += ", ", r += ", ";
    l += "t." + QuoteIdent(pk[i]);
    r += "r." + QuoteIdent(pk[i]);
  }
  return l + ") = " + r + " FROM json_populate_record(NULL::" + rel + ", $1::json) r)";
}

std::string ColumnList(const std::vector<std::string>& cols, const char* prefix) {
  std::string s;
  for (size_t i = 0; i < cols.size(); ++i) {
    if (i) s += ", ";
    s += prefix + QuoteIdent(cols[i]);
  }
  return s;
}

std::string RowName(const UndoEntry& e, size_t i) {
  return QuoteIdent(e.schema) + "." + QuoteIdent(e.table) + " key " + nlohmann::json(e.keys[i]).dump();
}

}  // namespace

UndoExecutor::UndoExecutor(std::string conninfo, std::string undo_table)
    : conninfo_(std::move(conninfo)), undo_table_(std::move(undo_table)) {}

Status UndoExecutor::Connect() {
  if (conn_ && conn_->ok()) return Status::Ok();
  conn_.reset();
  auto c = PgConnection::Open(conninfo_);
  if (!c.ok()) return c.status();
  conn_ = std::move(*c);
  return Status::Ok();
}

Status UndoExecutor::EnsureUndoTable() {
  DTX_RETURN_IF_ERROR(Connect());
  auto r = conn_->Run(CreateUndoTableSql(undo_table_));
  // Two creators at once: the loser fails on the catalog's unique index; the table is there.
  if (!r.ok() && SqlStateOf(r.status()) == "23505") r = conn_->Run(CreateUndoTableSql(undo_table_));
  return r.status();
}

Result<std::vector<std::string>> UndoExecutor::MissingTables(const std::vector<std::string>& names) {
  std::vector<std::string> missing;
  if (names.empty()) return missing;
  DTX_RETURN_IF_ERROR(Connect());
  // parse_ident fails on a malformed name; more than three parts is no table name either.
  auto r = conn_->Run(
      "SELECT x, cardinality(parse_ident(x)) <= 3, CASE WHEN cardinality(parse_ident(x)) <= 3 THEN "
      "to_regclass(x) IS NULL END FROM json_array_elements_text($1::json) x",
      {nlohmann::json(names).dump()});
  if (!r.ok()) return r.status();
  for (const auto& row : r->rows) {
    if (row.size() < 3 || !row[0]) continue;
    if (row[1] != std::optional<std::string>("t")) return InvalidArgument("\"" + *row[0] + "\" is not a table name");
    if (row[2] == std::optional<std::string>("t")) missing.push_back(*row[0]);
  }
  return missing;
}

Status UndoExecutor::DeleteUndo(const std::vector<std::pair<std::string, int64_t>>& branches) {
  if (branches.empty()) return Status::Ok();
  DTX_RETURN_IF_ERROR(Connect());
  nlohmann::json list = nlohmann::json::array();
  for (const auto& [xid, id] : branches) list.push_back({{"xid", xid}, {"branch_id", id}});
  auto r = conn_->Run("DELETE FROM " + undo_table_ +
                          " u USING json_to_recordset($1::json) AS d(xid text, branch_id bigint)"
                          " WHERE u.xid = d.xid AND u.branch_id = d.branch_id AND u.log_status = 0",
                      {list.dump()});
  return r.status();
}

Result<RollbackResult> UndoExecutor::Rollback(const std::string& xid, int64_t branch_id) {
  DTX_RETURN_IF_ERROR(Connect());
  auto begin = conn_->Run("BEGIN");
  if (!begin.ok()) return begin.status();
  auto r = RollbackInTransaction(xid, branch_id);
  const bool commit = r.ok() && r->outcome != RollbackOutcome::kDirtyWrite;
  auto end = conn_->Run(commit ? "COMMIT" : "ROLLBACK");
  if (!r.ok()) {
    catalog_.Invalidate();  // the table may have changed under a stale description
    return r;
  }
  if (!end.ok()) return end.status();
  return r;
}

Result<RollbackResult> UndoExecutor::RollbackInTransaction(const std::string& xid, int64_t branch_id) {
  // A row held by a local transaction: give up for now rather than block the phase-2 thread.
  DTX_RETURN_IF_ERROR(conn_->Run("SET LOCAL lock_timeout = '5s'").status());
  const std::string id = std::to_string(branch_id);
  std::optional<std::string> statements;
  for (int attempt = 0; attempt < 2 && !statements; ++attempt) {
    auto row = conn_->Run("SELECT log_status, statements::text FROM " + undo_table_ +
                              " WHERE xid = $1 AND branch_id = $2 FOR UPDATE",
                          {xid, id});
    if (!row.ok()) return row.status();
    if (!row->rows.empty()) {
      if (row->rows[0][0] == std::optional<std::string>("1")) return RollbackResult{RollbackOutcome::kMarked, ""};
      statements = row->rows[0][1].value_or("[]");
      break;
    }
    // No undo row: phase one is still running or never wrote. The marker makes its insert fail;
    // if that insert commits first, ON CONFLICT waited for it and the row is read again.
    auto mark = conn_->Run("INSERT INTO " + undo_table_ +
                               " (xid, branch_id, log_status, statements) VALUES ($1, $2, 1, '[]')"
                               " ON CONFLICT (xid, branch_id) DO NOTHING RETURNING 1",
                           {xid, id});
    if (!mark.ok()) return mark.status();
    if (!mark->rows.empty()) return RollbackResult{RollbackOutcome::kMarked, ""};
  }
  if (!statements) return Internal("undo row of " + xid + " branch " + id + " vanished while read");
  auto entries = DecodeUndo(*statements);
  if (!entries.ok()) return entries.status();

  std::vector<std::string> dirty;
  for (auto e = entries->rbegin(); e != entries->rend(); ++e) {
    auto info = catalog_.Find(TableRef{e->schema, e->table});
    if (!info) {
      auto look = conn_->Run(Catalog::LookupQuery(TableRef{e->schema, e->table}));
      if (!look.ok()) return look.status();
      auto stored = catalog_.Store(TableRef{e->schema, e->table}, *look);
      if (!stored.ok()) return stored.status();
      info = *stored;
    }
    const std::string rel = info->QualifiedName();
    const std::string match = KeyMatch(rel, e->primary_key);
    const std::string lock = "SELECT row_to_json(t.*)::text, row_to_json(json_populate_record(NULL::" + rel +
                             ", $1::json))::text FROM " + rel + " t WHERE " + match + " FOR UPDATE";
    std::vector<std::string> set_cols;
    for (const auto& c : info->columns) {
      bool key = std::find(e->primary_key.begin(), e->primary_key.end(), c) != e->primary_key.end();
      bool always = std::find(info->identity_always.begin(), info->identity_always.end(), c) != info->identity_always.end();
      if (!key && !always) set_cols.push_back(c);
    }
    for (size_t i = 0; i < e->keys.size(); ++i) {
      if (e->kind == UndoKind::kDelete) {
        auto cur = conn_->Run(lock, {e->before[i]});
        if (!cur.ok()) return cur.status();
        if (!cur->rows.empty()) {
          dirty.push_back(RowName(*e, i) + " was inserted again since it was deleted: now " +
                          cur->rows[0][0].value_or("NULL"));
          continue;
        }
        if (!dirty.empty()) continue;
        auto ins = conn_->Run("INSERT INTO " + rel + " (" + ColumnList(info->columns, "") +
                                  ") OVERRIDING SYSTEM VALUE SELECT " + ColumnList(info->columns, "r.") +
                                  " FROM json_populate_record(NULL::" + rel + ", $1::json) r",
                              {e->before[i]});
        if (!ins.ok()) return ins.status();
        continue;
      }
      auto cur = conn_->Run(lock, {e->after[i]});
      if (!cur.ok()) return cur.status();
      if (cur->rows.empty()) {
        dirty.push_back(RowName(*e, i) + " was deleted since phase one; expected " + e->after[i]);
        continue;
      }
      if (cur->rows[0][0] != cur->rows[0][1]) {
        dirty.push_back(RowName(*e, i) + " was changed since phase one: now " + cur->rows[0][0].value_or("NULL") +
                        ", expected " + cur->rows[0][1].value_or("NULL"));
        continue;
      }
      if (!dirty.empty()) continue;  // keep collecting evidence, change nothing
      Result<QueryResult> done = QueryResult{};
      if (e->kind == UndoKind::kInsert) {
        done = conn_->Run("DELETE FROM " + rel + " t WHERE " + match, {e->after[i]});
      } else if (!set_cols.empty()) {
        done = conn_->Run("UPDATE " + rel + " t SET (" + ColumnList(set_cols, "") + ") = (SELECT " +
                              ColumnList(set_cols, "r.") + " FROM json_populate_record(NULL::" + rel +
                              ", $1::json) r) WHERE " + match,
                          {e->before[i]});
      }
      if (!done.ok()) return done.status();
    }
  }
  if (!dirty.empty()) {
    std::string m = "dirty write: " + std::to_string(dirty.size()) + " row(s) of " + xid + " branch " + id +
                    " changed outside the global transaction; data left as is, undo log kept:";
    for (const auto& d : dirty) m += "\n  " + d;
    return RollbackResult{RollbackOutcome::kDirtyWrite, m};
  }
  auto del = conn_->Run("DELETE FROM " + undo_table_ + " WHERE xid = $1 AND branch_id = $2", {xid, id});
  if (!del.ok()) return del.status();
  return RollbackResult{RollbackOutcome::kRolledBack, ""};
}

}  // namespace dtx::at
