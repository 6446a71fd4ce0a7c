// TccFence: the table `dtx_tcc_fence` in the participant's own database that makes TCC phase 2
// safe against the three anomalies of a distributed system (format in docs/participant-sdk.md):
//
//   - idempotence: Confirm or Cancel delivered again does nothing the second time;
//   - empty rollback: a Cancel whose Try never ran (or never committed) succeeds, runs no
//     business Cancel, and records the branch as suspended;
//   - suspension: a Try that arrives after its Cancel finds that record and is refused.
//
// Every method works inside the caller's LocalTx, the same local transaction as the business
// change, so the fence row and the business change commit or vanish together. On PostgreSQL the
// row is locked (SELECT ... FOR UPDATE, INSERT ... ON CONFLICT waits for a concurrent insert);
// on SQLite the LocalTx already holds the database's write lock.
//
// Rows of finished branches are deleted by Clean after a retention period; a Tried row (its
// branch waits for phase 2) is never deleted.
//
// Thread-safety: the methods may be called from any thread, each with its own LocalTx.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "dtx/common/status.h"
#include "dtx/sdk/local_database.h"

namespace dtx::sdk {

enum class FenceState : int { kTried = 1, kCommitted = 2, kRollbacked = 3, kSuspended = 4 };

// What phase 2 should do, once the fence has been consulted.
enum class FenceDecision {
  kRun,       // run the business Confirm/Cancel, then Finish
  kDone,      // already done (or an empty rollback, now recorded): answer success
  kRefused,   // the branch went the other way (Confirm of a cancelled branch): can never succeed
};

class TccFence {
 public:
  // `now_ms`: wall-clock milliseconds (tests pass a fake clock).
  explicit TccFence(std::shared_ptr<LocalDatabase> db, std::function<int64_t()> now_ms = {});

  // Creates the table and its index if missing.
  Status CreateTable();

  // Try: records the branch as Tried. FailedPrecondition ("suspended") when a row exists: its
  // Cancel already ran (or it was tried before); the Try must then do nothing.
  Status BeginTry(LocalTx& tx, const std::string& xid, int64_t branch_id, const std::string& action);
  // Confirm / Cancel: decides, and records an empty rollback. `why` says why on kRefused.
  Result<FenceDecision> BeginPhaseTwo(LocalTx& tx, bool commit, const std::string& xid, int64_t branch_id,
                                      const std::string& action, std::string* why);
  // After the business Confirm/Cancel ran in `tx`: Committed or Rollbacked.
  Status Finish(LocalTx& tx, bool commit, const std::string& xid, int64_t branch_id);

  // Deletes up to `limit` rows of finished branches last changed more than `retention` ago;
  // returns how many went.
  Result<int64_t> Clean(std::chrono::milliseconds retention, int64_t limit = 1000);
  // The state recorded for a branch (none when no row), in its own transaction.
  Result<std::optional<FenceState>> Lookup(const std::string& xid, int64_t branch_id);

  LocalDatabase& database() { return *db_; }

 private:
  Result<std::optional<FenceState>> Read(LocalTx& tx, const std::string& xid, int64_t branch_id, bool lock);
  Result<bool> Insert(LocalTx& tx, const std::string& xid, int64_t branch_id, const std::string& action,
                      FenceState state);

  std::shared_ptr<LocalDatabase> db_;
  std::function<int64_t()> now_ms_;
};

}  // namespace dtx::sdk
