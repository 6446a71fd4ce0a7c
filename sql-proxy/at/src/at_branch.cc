#include "dtx/at/at_branch.h"

#include <algorithm>
#include <map>
#include <set>
#include <thread>

#include <nlohmann/json.hpp>

#include "dtx/sdk/coordinator_client.h"

namespace dtx::at {

namespace {

bool Writes(StatementKind k) {
  return k == StatementKind::kInsert || k == StatementKind::kUpdate || k == StatementKind::kDelete;
}

// The text values of a json_build_array(...)::text column.
Result<std::vector<std::string>> KeyValues(const std::optional<std::string>& text) {
  if (!text) return SqlError(sqlstate::kInternal, "AT query returned a NULL key");
  auto j = nlohmann::json::parse(*text, nullptr, false);
  if (!j.is_array()) return SqlError(sqlstate::kInternal, "AT query returned a malformed key");
  std::vector<std::string> out;
  for (const auto& v : j) {
    if (!v.is_string()) return SqlError(sqlstate::kInternal, "AT query returned a malformed key");
    out.push_back(v.get<std::string>());
  }
  return out;
}

std::string KeyText(const std::vector<std::string>& key) { return nlohmann::json(key).dump(); }

}  // namespace

AtStatement::AtStatement(AtBranch& branch, ParsedStatement parsed, QueryParams params, std::string sql, bool local)
    : branch_(branch), parsed_(std::move(parsed)), params_(std::move(params)), sql_(std::move(sql)), local_(local) {}

Status AtStatement::Planned(const TableInfo& table) {
  if (local_) {
    table_ = table;
    plan_ = PlanLocalWrite(local_write_, table, sql_);
    SetState(State::kStatement);
    return Status::Ok();
  }
  auto plan = Plan(parsed_, table);
  if (!plan.ok()) {
    SetState(State::kDone);
    return plan.status();
  }
  table_ = table;
  plan_ = std::move(*plan);
  if (Writes(parsed_.kind)) branch_.written_tables_.insert(table.QualifiedName());
  if (Writes(parsed_.kind) && table.side_effects && !branch_.may_write_elsewhere_) {
    branch_.may_write_elsewhere_ = true;
    branch_.elsewhere_cause_ = "a write of " + table.QualifiedName() +
                               ", which has triggers, rules or ON UPDATE foreign-key actions";
  }
  if (parsed_.kind == StatementKind::kUpdate && !plan_.before_image_sql.empty()) SetState(State::kBeforeImage);
  else if (parsed_.kind == StatementKind::kSelectForUpdate) SetState(State::kLockKeys);
  else SetState(State::kStatement);
  return Status::Ok();
}

std::optional<AtStep> AtStatement::Next() {
  AtStep step;
  switch (state_) {
    case State::kCatalog:
      step.query = Catalog::LookupQuery(parsed_.table);
      return step;
    case State::kBeforeImage:
      step.query = AtQuery{QueryRole::kBeforeImage, plan_.before_image_sql, SelectParams(params_, plan_.extra_params), 0};
      return step;
    case State::kLockKeys:
      step.query = AtQuery{QueryRole::kLockKeys, plan_.lock_keys_sql, SelectParams(params_, plan_.extra_params), 0};
      return step;
    case State::kCheckLocks:
      step.check_global_locks = true;
      return step;
    case State::kStatement:
      step.query = StatementQuery();
      return step;
    case State::kDone: return std::nullopt;
  }
  return std::nullopt;
}

AtQuery AtStatement::StatementQuery() const {
  if (!plan_.prepared_sql.empty() && params_.values.empty() && parsed_.recurring && branch_.options_.keep_prepared) {
    // The shape's one text, its literals as parameters: kept prepared by the session.
    AtQuery q{QueryRole::kStatement, plan_.prepared_sql, plan_.prepared_params, plan_.hidden_columns};
    q.keep = true;
    return q;
  }
  return AtQuery{QueryRole::kStatement, plan_.statement_sql, params_, plan_.hidden_columns};
}

std::optional<AtQuery> AtStatement::StatementBehindBeforeImage() const {
  if (state_ != State::kBeforeImage) return std::nullopt;
  return StatementQuery();
}

void AtStatement::OnError() { SetState(State::kDone); }

Status AtStatement::OnResult(const QueryResult& result) {
  switch (state_) {
    case State::kCatalog: {
      auto info = branch_.catalog_->Store(parsed_.table, result);
      if (!info.ok() && local_) {
        // Not a table AT knows (missing, a view...): the server gives its own answer.
        plan_.statement_sql = sql_;
        SetState(State::kStatement);
        return Status::Ok();
      }
      if (!info.ok()) {
        SetState(State::kDone);
        return info.status();
      }
      return Planned(*info);
    }
    case State::kBeforeImage:
      for (const auto& row : result.rows) {
        if (row.size() < 2 || !row[1]) return SqlError(sqlstate::kInternal, "malformed before image");
        auto key = KeyValues(row[0]);
        if (!key.ok()) return key.status();
        before_keys_.push_back(std::move(*key));
        before_images_.push_back(*row[1]);
      }
      SetState(State::kStatement);
      return Status::Ok();
    case State::kLockKeys:
      for (const auto& row : result.rows) {
        if (row.empty()) continue;
        auto key = KeyValues(row[0]);
        if (!key.ok()) return key.status();
        lock_keys_.push_back(LockKey(branch_.options_.resource_id, table_->schema, table_->name, *key));
      }
      SetState(lock_keys_.empty() ? State::kStatement : State::kCheckLocks);
      return Status::Ok();
    case State::kCheckLocks: return SqlError(sqlstate::kInternal, "CheckGlobalLocks expected, not a query result");
    case State::kStatement: break;
    case State::kDone: return SqlError(sqlstate::kInternal, "the statement is already done");
  }
  SetState(State::kDone);
  if (local_) {
    // Write-then-check: the keys of the rows the statement wrote, for CheckLocks / OnLocks.
    if (plan_.hidden_columns == 0) return Status::Ok();
    for (const auto& row : result.rows) {
      if (row.empty()) return SqlError(sqlstate::kInternal, "malformed RETURNING key");
      auto key = KeyValues(row.back());
      if (!key.ok()) return key.status();
      lock_keys_.push_back(LockKey(branch_.options_.resource_id, table_->schema, table_->name, *key));
    }
    if (!lock_keys_.empty()) SetState(State::kCheckLocks);
    return Status::Ok();
  }
  const TransactionOp op = parsed_.transaction_op;
  if (!local_ && (op == TransactionOp::kSavepoint || op == TransactionOp::kRelease || op == TransactionOp::kRollbackTo)) {
    branch_.OnSavepoint(op, parsed_.savepoint);
  }
  if (local_ || !Writes(parsed_.kind) || result.rows.empty()) return Status::Ok();

  UndoEntry e;
  e.kind = parsed_.kind == StatementKind::kInsert   ? UndoKind::kInsert
           : parsed_.kind == StatementKind::kUpdate ? UndoKind::kUpdate
                                                    : UndoKind::kDelete;
  e.schema = table_->schema;
  e.table = table_->name;
  e.primary_key = table_->primary_key;
  std::map<std::string, size_t> before_at;
  for (size_t i = 0; i < before_keys_.size(); ++i) before_at[KeyText(before_keys_[i])] = i;
  // The hidden columns: key, image [, before image of an UPDATE that took it itself].
  const size_t h = static_cast<size_t>(plan_.hidden_columns);
  const bool merged = h == 3;
  for (const auto& row : result.rows) {
    if (h < 2 || row.size() < h || !row[row.size() - h + 1] || (merged && !row.back())) {
      return SqlError(sqlstate::kInternal, "malformed RETURNING image");
    }
    auto key = KeyValues(row[row.size() - h]);
    if (!key.ok()) return key.status();
    const std::string& image = *row[row.size() - h + 1];
    if (merged) {
      e.before.push_back(*row.back());
      e.after.push_back(image);
    } else if (e.kind == UndoKind::kUpdate) {
      auto it = before_at.find(KeyText(*key));
      if (it == before_at.end()) {
        return SqlError(sqlstate::kSerializationFailure,
                        "a row of " + table_->QualifiedName() + " with key " + KeyText(*key) +
                            " was changed by the UPDATE without a before image (concurrent insert); retry the transaction");
      }
      e.before.push_back(before_images_[it->second]);
      e.after.push_back(image);
    } else if (e.kind == UndoKind::kInsert) {
      e.after.push_back(image);
    } else {
      e.before.push_back(image);  // DELETE ... RETURNING gives the deleted row itself
    }
    e.keys.push_back(std::move(*key));
  }
  branch_.entries_.push_back(std::move(e));
  return Status::Ok();
}

Status AtStatement::CheckGlobalLocks(sdk::CoordinatorClient& client) {
  const auto deadline = std::chrono::steady_clock::now() + branch_.options_.lock_retry_for;
  while (true) {
    bool retry = false;
    Status s = OnLocks(client.QueryLocks(branch_.xid_, branch_.options_.resource_id, lock_keys_),
                       std::chrono::steady_clock::now() < deadline, retry);
    if (!retry) return s;
    std::this_thread::sleep_for(branch_.options_.lock_retry_interval);
  }
}

Status AtStatement::OnLocks(const Result<sdk::LockQuery>& r, bool time_left, bool& retry) {
  Status s = branch_.LockAnswer(r, time_left, retry);
  if (s.ok() && !retry) LocksChecked();
  return s;
}

void AtStatement::LocksChecked() { SetState(local_ ? State::kDone : State::kStatement); }

Status AtBranch::LockAnswer(const Result<sdk::LockQuery>& r, bool time_left, bool& retry) const {
  const auto& o = options_;
  retry = false;
  if (!r.ok()) return SqlError(sqlstate::kConnectionFailure, "dtx coordinator: " + r.status().ToString(), r.status().code());
  if (!r->free) {
    if (time_left) {
      retry = true;
      return Status::Ok();
    }
    return SqlError(sqlstate::kLockNotAvailable, "row " + r->conflict_key + " is locked by global transaction " +
                                                     r->conflict_xid + " (waited " +
                                                     std::to_string(o.lock_retry_for.count()) + " ms)");
  }
  return Status::Ok();
}

AtBranch::AtBranch(AtOptions options, std::shared_ptr<Catalog> catalog, std::string xid)
    : options_(std::move(options)), catalog_(std::move(catalog)), xid_(std::move(xid)) {}

Result<std::unique_ptr<AtStatement>> AtBranch::Prepare(std::string_view sql, QueryParams params) {
  auto parsed = Analyze(sql);
  if (!parsed.ok()) return parsed.status();
  const StatementKind kind = parsed->kind;
  if (parsed->calls_unknown_functions && !may_write_elsewhere_) {
    may_write_elsewhere_ = true;
    elsewhere_cause_ = "a call of " + parsed->unknown_function + "()";
  }
  std::unique_ptr<AtStatement> st(new AtStatement(*this, std::move(*parsed), std::move(params), std::string(sql), false));
  if (Writes(kind) || kind == StatementKind::kSelectForUpdate) {
    if (auto info = catalog_->Find(st->parsed_.table)) {
      DTX_RETURN_IF_ERROR(st->Planned(*info));
    } else {
      st->SetState(AtStatement::State::kCatalog);
    }
  } else {
    st->plan_.statement_sql = std::string(sql);
    st->SetState(AtStatement::State::kStatement);
  }
  return st;
}

Result<std::unique_ptr<AtStatement>> AtBranch::PrepareLocal(std::string_view sql, QueryParams params,
                                                            std::optional<LocalWrite> analyzed) {
  LocalWrite write = analyzed ? std::move(*analyzed) : AnalyzeLocal(sql);
  if (write.check == LocalWrite::Check::kRefuse) return *write.refusal;
  ParsedStatement p;
  p.kind = StatementKind::kOther;
  p.table = write.table;
  std::unique_ptr<AtStatement> st(new AtStatement(*this, std::move(p), std::move(params), std::string(sql), true));
  st->local_write_ = std::move(write);
  if (st->local_write_.check != LocalWrite::Check::kKeys) {
    st->plan_.statement_sql = std::string(sql);
    st->SetState(AtStatement::State::kStatement);
  } else if (auto info = catalog_->Find(st->parsed_.table)) {
    DTX_RETURN_IF_ERROR(st->Planned(*info));
  } else {
    st->SetState(AtStatement::State::kCatalog);
  }
  return st;
}

void AtBranch::OnSavepoint(TransactionOp op, const std::string& name) {
  if (op == TransactionOp::kSavepoint) {
    savepoints_.emplace_back(name, entries_.size());
    return;
  }
  // The most recent savepoint of that name, as PostgreSQL resolves it.
  size_t i = savepoints_.size();
  while (i > 0 && savepoints_[i - 1].first != name) --i;
  if (i == 0) return;  // the server accepted it, so it was set before the branch began
  --i;
  if (op == TransactionOp::kRollbackTo) {
    entries_.resize(std::min(entries_.size(), savepoints_[i].second));
    savepoints_.resize(i + 1);  // ROLLBACK TO keeps the savepoint itself
  } else {
    savepoints_.resize(i);
  }
}

std::vector<std::string> AtBranch::LockKeys() const {
  std::vector<std::string> out;
  std::set<std::string> seen;
  for (const auto& e : entries_) {
    for (const auto& k : e.keys) {
      std::string key = LockKey(options_.resource_id, e.schema, e.table, k);
      if (seen.insert(key).second) out.push_back(std::move(key));
    }
  }
  return out;
}

Result<std::optional<AtQuery>> AtBranch::Register(sdk::CoordinatorClient& client) {
  if (entries_.empty()) return std::optional<AtQuery>();
  const sdk::BranchRegistration reg = Registration();
  const auto deadline = std::chrono::steady_clock::now() + options_.lock_retry_for;
  while (true) {
    bool retry = false;
    auto undo = OnRegistered(client.RegisterBranch(reg), std::chrono::steady_clock::now() < deadline, retry);
    if (!retry) return undo;
    std::this_thread::sleep_for(options_.lock_retry_interval);
  }
}

sdk::BranchRegistration AtBranch::Registration() const {
  sdk::BranchRegistration reg;
  reg.xid = xid_;
  reg.resource_id = options_.resource_id;
  reg.type = sdk::BranchType::kAT;
  reg.lock_keys = LockKeys();
  return reg;
}

Result<std::optional<AtQuery>> AtBranch::OnRegistered(const Result<int64_t>& id, bool time_left, bool& retry) {
  retry = false;
  if (entries_.empty()) return std::optional<AtQuery>();
  if (!id.ok()) {
    if (sdk::IsLockConflict(id.status())) {
      if (time_left) {
        retry = true;
        return std::optional<AtQuery>();
      }
      return SqlError(sqlstate::kLockNotAvailable,
                      "could not obtain the global row locks of " + xid_ + " within " +
                          std::to_string(options_.lock_retry_for.count()) + " ms: " + std::string(id.status().message()),
                      StatusCode::kResourceExhausted);
    }
    if (id.status().code() == StatusCode::kUnavailable) {
      return SqlError(sqlstate::kConnectionFailure, "dtx coordinator unavailable: " + std::string(id.status().message()),
                      StatusCode::kUnavailable);
    }
    return SqlError(sqlstate::kSerializationFailure,
                    "the global transaction " + xid_ + " cannot take this branch: " + std::string(id.status().message()),
                    id.status().code());
  }
  branch_id_ = *id;
  try {
    return std::optional<AtQuery>(InsertUndoQuery(options_.undo_table, xid_, branch_id_, entries_));
  } catch (const nlohmann::json::exception& ex) {
    // Row images that are not UTF-8 (a session whose client_encoding is not UTF8) cannot be
    // written to the undo log; the session refuses such writes earlier, this is the backstop.
    return SqlError("22021", std::string("the row images are not valid UTF-8 and cannot be kept in the undo log "
                                         "(AT mode needs client_encoding UTF8): ") + ex.what());
  }
}

Status AtBranch::UndoWriteFailed(std::string_view state, std::string_view message) const {
  if (state == "23505") {
    return SqlError(sqlstate::kSerializationFailure,
                    "global transaction " + xid_ + " was already rolled back (branch " + std::to_string(branch_id_) +
                        " found no undo log and left its marker); the local transaction is rolled back");
  }
  return SqlError(state, "writing the undo log: " + std::string(message));
}

Status AtBranch::Finish(sdk::CoordinatorClient& client, bool committed) {
  if (!Reports(committed)) return Status::Ok();
  return client.ReportBranch(xid_, branch_id_,
                             committed ? sdk::BranchStatus::kPhaseOneDone : sdk::BranchStatus::kPhaseOneFailed);
}

AtQuery AtBranch::WritesElsewhereQuery() const {
  // The tables the local transaction holds write locks on (pg_locks lists the fast-path ones
  // too), less those the branch's own writes named or options_.untracked_tables lists, itself or through a
  // table it inherits from (a partition written through its parent). Temporary tables are the
  // session's own scratch space and do not count.
  AtQuery q;
  q.sql =
      "WITH RECURSIVE locked(relid) AS (SELECT DISTINCT l.relation FROM pg_catalog.pg_locks l WHERE l.locktype = "
      "'relation' AND l.pid = pg_catalog.pg_backend_pid() AND l.granted AND l.mode IN ('RowExclusiveLock', "
      "'ShareRowExclusiveLock', 'ExclusiveLock', 'AccessExclusiveLock')), "
      "covered(relid) AS (SELECT pg_catalog.to_regclass(x)::oid FROM pg_catalog.json_array_elements_text($1::json) x), "
      "up(relid, anc) AS (SELECT relid, relid FROM locked UNION SELECT u.relid, i.inhparent FROM up u "
      "JOIN pg_catalog.pg_inherits i ON i.inhrelid = u.anc) "
      "SELECT n.nspname::text, c.relname::text FROM locked k JOIN pg_catalog.pg_class c ON c.oid = k.relid "
      "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p') AND "
      "c.relpersistence <> 't' AND NOT EXISTS (SELECT 1 FROM up u JOIN covered v ON v.relid = u.anc "
      "WHERE u.relid = k.relid) ORDER BY 1, 2";
  nlohmann::json names = nlohmann::json::array();
  for (const auto& t : written_tables_) names.push_back(t);
  for (const auto& t : options_.untracked_tables) names.push_back(t);
  q.params.values = {names.dump()};
  return q;
}

Status AtBranch::OnWritesElsewhere(const QueryResult& result) const {
  std::string tables;
  for (const auto& row : result.rows) {
    if (row.size() != 2 || !row[0] || !row[1]) continue;
    if (!tables.empty()) tables += ", ";
    tables += TableInfo{*row[0], *row[1], {}, {}, {}, false, false}.QualifiedName();
  }
  if (tables.empty()) return Status::Ok();
  return SqlError(sqlstate::kFeatureNotSupported,
                  "this transaction wrote to " + tables + " beside its own statements' rows (after " + elsewhere_cause_ +
                      "): a trigger, rule or function wrote there, and a rollback of global transaction " + xid_ +
                      " could not undo it, so the local transaction is rolled back. Tables whose writes may stay "
                      "after a global rollback can be listed in dtx-sql-proxy's --untracked-tables");
}

}  // namespace dtx::at
