// UndoExecutor: phase 2 of AT branches on one backend database.
//
// Commit: DeleteUndo() removes the undo rows of many branches in one statement.
// Rollback: in a transaction of its own, reads the branch's undo row (FOR UPDATE), then, from
// the last statement to the first, locks each row, compares it with the after image (compared
// as row_to_json of the row and of the image read back, so both sides are formatted by the same
// session) and restores the before image: inserted rows are deleted, deleted rows inserted again,
// updated columns set back. Then it deletes the undo row and commits. A row changed by someone
// else since phase one (a dirty write) stops it: the transaction is rolled back, the data and
// the undo row stay, and the outcome names the rows. No undo row: a marker row (log_status 1)
// is inserted so that a late phase-one commit of the branch fails on the undo-log key.
//
// Thread-safety: one thread at a time (one connection, reopened after a failure).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "dtx/at/catalog.h"
#include "dtx/at/pg_connection.h"
#include "dtx/at/sql_state.h"

namespace dtx::at {

enum class RollbackOutcome {
  kRolledBack,  // the before images are back
  kMarked,      // no undo row: nothing was done in phase one (a marker now blocks a late one)
  kDirtyWrite,  // rows changed since phase one: nothing touched, an operator must look
};

struct RollbackResult {
  RollbackOutcome outcome = RollbackOutcome::kRolledBack;
  std::string message;  // kDirtyWrite: the rows, their current and expected images
};

class UndoExecutor {
 public:
  UndoExecutor(std::string conninfo, std::string undo_table);

  Status EnsureUndoTable();
  // `names` (SQL table names) as the database reads them: an error for a malformed one; the ones
  // it has no table of.
  Result<std::vector<std::string>> MissingTables(const std::vector<std::string>& names);
  // An error is retryable (connection lost, lock timeout, ...).
  Result<RollbackResult> Rollback(const std::string& xid, int64_t branch_id);
  Status DeleteUndo(const std::vector<std::pair<std::string, int64_t>>& branches);

 private:
  Status Connect();
  Result<RollbackResult> RollbackInTransaction(const std::string& xid, int64_t branch_id);

  std::string conninfo_;
  std::string undo_table_;
  std::unique_ptr<PgConnection> conn_;
  Catalog catalog_;
};

}  // namespace dtx::at
