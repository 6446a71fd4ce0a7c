// AtBranch: phase one of an AT branch, for one local transaction of an XID-bound proxy session.
//
// The engine never touches a socket: it says which queries to run on the session's backend
// connection (inside the client's transaction) and takes their results, so the proxy's
// coroutines, a libpq test driver, or anything else can drive it. Per statement:
//
//   auto st = branch.Prepare(sql, params);          // refusal: SqlError status (relay it)
//   while (auto step = (*st)->Next()) {
//     if (step->check_global_locks) { status = (*st)->CheckGlobalLocks(client); continue; }  // blocking
//     run step->query on the backend; then (*st)->OnResult(result), or (*st)->OnError() if it failed
//   }
// An AtStatement refers to its branch: it must not outlive it.
//
// SAVEPOINT, RELEASE and ROLLBACK TO go through Prepare like any statement: once the server
// has accepted one (OnResult), the branch drops the undo entries a ROLLBACK TO undid.
//
// At the client's COMMIT:
//   auto undo = branch.Register(client);   // blocking: RegisterBranch with the lock keys,
//                                          // lock conflicts retried for options.lock_retry_for
//   run *undo (the undo-log insert); then let the COMMIT through; branch.Finish(client, committed)
//
// Thread-safety: an AtBranch and its AtStatements belong to one session (one thread at a time).
// The Catalog is shared and thread-safe. Register/Finish/CheckGlobalLocks block on the
// coordinator: call them off an I/O thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "dtx/at/catalog.h"
#include "dtx/at/sql_state.h"
#include "dtx/at/statement_analyzer.h"
#include "dtx/at/undo_log.h"
#include "dtx/sdk/coordinator_client.h"  // plain declarations, no generated code

namespace dtx::at {

struct AtOptions {
  std::string resource_id;                                 // the backend database, as registered
  std::string undo_table = std::string(kDefaultUndoTable);  // SQL name of the undo-log table
  std::chrono::milliseconds lock_retry_for{2000};          // lock conflicts: keep trying this long
  std::chrono::milliseconds lock_retry_interval{25};
  // Whether a branch whose local COMMIT succeeded reports PhaseOneDone. The coordinator gives a
  // Registered branch the same phase 2, so the report only shows in its listings; off by
  // default, it saves one coordinator call per branch. PhaseOneFailed is always reported.
  bool report_phase_one_done = false;
  // Whether a simple-protocol write whose literals are all plain numbers runs as the shape's one
  // prepared text with its literals as parameters (StatementPlan::prepared_sql), kept prepared by
  // the session, so that the server plans it once per session instead of once per statement.
  bool keep_prepared = true;
  // Tables (SQL names, resolved by the search_path) whose writes by triggers, rules or functions
  // a global rollback may leave in place (an audit log, say): MayWriteElsewhere's check lets them be.
  std::vector<std::string> untracked_tables;
  // Whether branches are checked for writes beside their own rows at all (MayWriteElsewhere).
  // Off, such writes escape the undo log unseen, and no COMMIT pays the check.
  bool check_writes_elsewhere = true;
};

class AtBranch;

// One step of a statement: run `query`, or (check_global_locks) call CheckGlobalLocks.
struct AtStep {
  AtQuery query;
  bool check_global_locks = false;
};

// One statement of a bound session, from analysis to its undo entry.
class AtStatement {
 public:
  StatementKind kind() const { return parsed_.kind; }
  // It calls a function PostgreSQL does not own (ParsedStatement::calls_unknown_functions).
  bool CallsUnknownFunctions() const { return parsed_.calls_unknown_functions; }
  // kTransactionControl: which one (COMMIT is the session's cue to call AtBranch::Register).
  TransactionOp transaction_op() const { return parsed_.transaction_op; }
  // The next step, or nullopt when the statement is done (or failed).
  std::optional<AtStep> Next();
  // While the next step is the before image: the statement's own query, which needs nothing from
  // the before image's answer, so that a session may send both at once (one round trip). The
  // answers are still given in order: OnResult(before image), then Next() is that statement and
  // OnResult(its answer). nullopt in any other state.
  std::optional<AtQuery> StatementBehindBeforeImage() const;
  // The statement's own query: its prepared form when it has one and the session sent no
  // parameters (AtOptions::keep_prepared), else its text with the client's parameters.
  AtQuery StatementQuery() const;
  // The answer to the query of the last step. An error status (also after the statement itself
  // ran, e.g. rows changed under the statement) means: the local transaction must fail; run
  // RaiseErrorSql(status) on the backend and relay that error.
  Status OnResult(const QueryResult& result);
  // The query failed on the backend: the statement is over and records nothing (the backend's
  // error goes to the client as it is).
  void OnError();
  // SELECT ... FOR UPDATE: are the locked rows free of other global transactions' locks?
  // Retries for lock_retry_for, then 55P03.
  Status CheckGlobalLocks(sdk::CoordinatorClient& client);
  // The same for a caller that makes the QueryLocks calls itself (non-blocking): the keys to
  // ask about, then each answer. `time_left`: whether lock_retry_for has not run out yet; when
  // the rows are held and time is left, `retry` is set (ask again after lock_retry_interval).
  const std::vector<std::string>& lock_keys() const { return lock_keys_; }
  // A statement of PrepareLocal that is (or may turn out, once its table is known) a checked
  // write; false: it runs unchanged.
  const LocalWrite& local_write() const { return local_write_; }
  bool MayCheckLocks() const { return local_ && (state_ == State::kCatalog || plan_.hidden_columns > 0); }
  Status OnLocks(const Result<sdk::LockQuery>& answer, bool time_left, bool& retry);
  // The caller checked lock_keys() itself (AtBranch::LockAnswer said they are free), or took
  // them to check later, before the block can commit: the statement goes on.
  void LocksChecked();

 private:
  friend class AtBranch;
  enum class State { kCatalog, kBeforeImage, kLockKeys, kCheckLocks, kStatement, kDone };
  AtStatement(AtBranch& branch, ParsedStatement parsed, QueryParams params, std::string sql, bool local);
  Status Planned(const TableInfo& table);
  void SetState(State s) { state_ = s; }

  AtBranch& branch_;
  ParsedStatement parsed_;
  QueryParams params_;
  std::string sql_;     // as the client sent it
  bool local_ = false;  // a write of an unbound session: lock check only, no undo
  LocalWrite local_write_;  // local_: how it is checked
  std::optional<TableInfo> table_;
  StatementPlan plan_;
  State state_ = State::kStatement;
  std::vector<std::vector<std::string>> before_keys_;  // UPDATE: from the before image
  std::vector<std::string> before_images_;
  std::vector<std::string> lock_keys_;  // SELECT FOR UPDATE: the locked rows; local_: the written ones
};

class AtBranch {
 public:
  AtBranch(AtOptions options, std::shared_ptr<Catalog> catalog, std::string xid);

  // Analyzes a statement; SqlError for a refusal, before anything ran.
  Result<std::unique_ptr<AtStatement>> Prepare(std::string_view sql, QueryParams params = {});

  // A statement of a session bound to NO global transaction, through a branch made with an
  // empty xid (see LocalWrite): a write of a table with a primary key runs with a hidden
  // RETURNING of its rows' keys (the kStatement step, inside a transaction the caller holds
  // open), then the keys are checked (a check_global_locks step: CheckLocks / OnLocks, 55P03
  // after lock_retry_for), and the caller fails that transaction on an error. Nothing is
  // recorded. A statement that cannot be checked is refused (0A000) before anything ran;
  // anything else runs unchanged.
  // `analyzed`: AnalyzeLocal(sql), when the caller has it already.
  Result<std::unique_ptr<AtStatement>> PrepareLocal(std::string_view sql, QueryParams params = {},
                                                    std::optional<LocalWrite> analyzed = std::nullopt);

  bool has_writes() const { return !entries_.empty(); }
  // Whether a statement of this branch may have written rows the undo log does not hold: it
  // called a function PostgreSQL does not own (ParsedStatement::calls_unknown_functions), or
  // wrote a table with triggers, rules or ON UPDATE foreign-key actions (TableInfo::side_effects).
  // Then, before the branch registers (even with no writes of its own), the session runs
  // WritesElsewhereQuery() in the local transaction and gives its answer to OnWritesElsewhere():
  // a write-locked table that none of its own writes named (nor options.untracked_tables) fails the
  // COMMIT (0A000), and the session rolls the local transaction back.
  bool MayWriteElsewhere() const { return may_write_elsewhere_ && options_.check_writes_elsewhere; }
  AtQuery WritesElsewhereQuery() const;
  Status OnWritesElsewhere(const QueryResult& result) const;
  const std::vector<UndoEntry>& entries() const { return entries_; }
  // "resource:schema.table:pk" of every row written so far, each once.
  std::vector<std::string> LockKeys() const;

  // COMMIT, first step: registers the branch with its lock keys; a lock conflict is retried
  // for lock_retry_for, then 55P03 (the session then rolls the local transaction back).
  // Returns the undo-log insert to run before the COMMIT, or nullopt when nothing was written
  // (no branch is registered then).
  Result<std::optional<AtQuery>> Register(sdk::CoordinatorClient& client);
  // The same for a caller that makes the RegisterBranch calls itself: what to send, then each
  // answer (`retry` as for AtStatement::OnLocks, on a lock conflict).
  sdk::BranchRegistration Registration() const;
  Result<std::optional<AtQuery>> OnRegistered(const Result<int64_t>& answer, bool time_left, bool& retry);
  // The undo-log insert failed with `sqlstate`: the error for the client. A unique violation
  // means the branch was already rolled back by the coordinator (its marker row is there).
  Status UndoWriteFailed(std::string_view sqlstate, std::string_view message) const;
  // After the local COMMIT (or the rollback that replaced it): reports PhaseOneDone (if
  // options.report_phase_one_done), or PhaseOneFailed when the local transaction is known rolled back. An unknown outcome (the
  // connection broke during COMMIT) reports nothing: phase 2 finds the undo row or leaves a marker.
  Status Finish(sdk::CoordinatorClient& client, bool committed);

  // Whether Finish(committed) has anything to report (a registered branch; success only if
  // options.report_phase_one_done).
  bool Reports(bool committed) const { return branch_id_ != 0 && (!committed || options_.report_phase_one_done); }

  int64_t branch_id() const { return branch_id_; }
  const std::string& xid() const { return xid_; }
  const AtOptions& options() const { return options_; }
  // What a QueryLocks answer means for keys of this branch's resource: an error (08006 without
  // an answer, 55P03 for rows still held once time ran out), or free; `retry` is set when the
  // rows are held and `time_left`.
  Status LockAnswer(const Result<sdk::LockQuery>& answer, bool time_left, bool& retry) const;

 private:
  friend class AtStatement;
  AtOptions options_;
  std::shared_ptr<Catalog> catalog_;
  std::string xid_;
  // Applies a SAVEPOINT / RELEASE / ROLLBACK TO that the server accepted.
  void OnSavepoint(TransactionOp op, const std::string& name);

  std::vector<UndoEntry> entries_;
  std::set<std::string> written_tables_;  // the tables its writes named (QualifiedName), rows or not
  bool may_write_elsewhere_ = false;
  std::string elsewhere_cause_;  // what set may_write_elsewhere_ first, for the error
  std::vector<std::pair<std::string, size_t>> savepoints_;  // name, entries_.size() when set
  int64_t branch_id_ = 0;
};

}  // namespace dtx::at
