#include "dtx/sdk/tcc_fence.h"

#include <spdlog/spdlog.h>

#include <thread>

namespace dtx::sdk {

namespace {

int64_t WallMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

constexpr const char* kCreateTable =
    "CREATE TABLE IF NOT EXISTS dtx_tcc_fence ("
    " xid TEXT NOT NULL,"
    " branch_id BIGINT NOT NULL,"
    " action TEXT NOT NULL,"
    " state INTEGER NOT NULL,"
    " created_ms BIGINT NOT NULL,"
    " updated_ms BIGINT NOT NULL,"
    " PRIMARY KEY (xid, branch_id))";
constexpr const char* kCreateIndex =
    "CREATE INDEX IF NOT EXISTS dtx_tcc_fence_updated ON dtx_tcc_fence (updated_ms)";

std::string_view StateName(FenceState s) {
  switch (s) {
    case FenceState::kTried: return "Tried";
    case FenceState::kCommitted: return "Committed";
    case FenceState::kRollbacked: return "Rollbacked";
    case FenceState::kSuspended: return "Suspended";
  }
  return "?";
}

}  // namespace

TccFence::TccFence(std::shared_ptr<LocalDatabase> db, std::function<int64_t()> now_ms)
    : db_(std::move(db)), now_ms_(now_ms ? std::move(now_ms) : std::function<int64_t()>(WallMs)) {}

Status TccFence::CreateTable() {
  // Two processes creating the table at once on PostgreSQL can collide on the catalog: retry.
  Status last;
  for (int attempt = 0; attempt < 3; ++attempt) {
    last = InLocalTx(*db_, [](LocalTx& tx) -> Status {
      for (const char* sql : {kCreateTable, kCreateIndex}) {
        auto r = tx.Exec(sql);
        if (!r.ok()) return r.status();
      }
      return Status::Ok();
    });
    if (last.ok()) return last;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return last.WithContext("creating dtx_tcc_fence");
}

Result<std::optional<FenceState>> TccFence::Read(LocalTx& tx, const std::string& xid, int64_t branch_id, bool lock) {
  const char* sql = lock && tx.dialect() == Dialect::kPostgres
                        ? "SELECT state FROM dtx_tcc_fence WHERE xid = ? AND branch_id = ? FOR UPDATE"
                        : "SELECT state FROM dtx_tcc_fence WHERE xid = ? AND branch_id = ?";
  auto rows = tx.Query(sql, {xid, branch_id});
  if (!rows.ok()) return rows.status();
  if (rows->empty()) return std::optional<FenceState>();
  return std::optional<FenceState>(static_cast<FenceState>(AsInt((*rows)[0][0])));
}

Result<bool> TccFence::Insert(LocalTx& tx, const std::string& xid, int64_t branch_id, const std::string& action,
                              FenceState state) {
  const int64_t now = now_ms_();
  auto n = tx.Exec(
      "INSERT INTO dtx_tcc_fence (xid, branch_id, action, state, created_ms, updated_ms) VALUES (?, ?, ?, ?, ?, ?)"
      " ON CONFLICT (xid, branch_id) DO NOTHING",
      {xid, branch_id, action, static_cast<int64_t>(state), now, now});
  if (!n.ok()) return n.status();
  return *n == 1;
}

Status TccFence::BeginTry(LocalTx& tx, const std::string& xid, int64_t branch_id, const std::string& action) {
  auto inserted = Insert(tx, xid, branch_id, action, FenceState::kTried);
  if (!inserted.ok()) return inserted.status().WithContext("tcc fence");
  if (*inserted) return Status::Ok();
  auto state = Read(tx, xid, branch_id, false);
  const std::string seen = state.ok() && *state ? std::string(StateName(**state)) : "present";
  return FailedPrecondition("suspended: branch " + std::to_string(branch_id) + " of " + xid + " (" + action +
                            ") is already " + seen + "; its Try must not run");
}

Result<FenceDecision> TccFence::BeginPhaseTwo(LocalTx& tx, bool commit, const std::string& xid, int64_t branch_id,
                                              const std::string& action, std::string* why) {
  for (int round = 0; round < 2; ++round) {
    auto state = Read(tx, xid, branch_id, /*lock=*/true);
    if (!state.ok()) return state.status().WithContext("tcc fence");
    if (!*state) {
      // No Try committed: an empty rollback (recorded, so that a late Try is refused), or a
      // Confirm of a branch whose Try never ran (nothing to confirm; recorded the same way).
      auto inserted = Insert(tx, xid, branch_id, action, commit ? FenceState::kCommitted : FenceState::kSuspended);
      if (!inserted.ok()) return inserted.status().WithContext("tcc fence");
      if (*inserted) {
        if (commit) spdlog::warn("dtx sdk: confirm of {} branch {} ({}) whose Try never ran: nothing to confirm", xid,
                                 branch_id, action);
        return FenceDecision::kDone;
      }
      continue;  // a Try committed its row meanwhile: read it
    }
    switch (**state) {
      case FenceState::kTried: return FenceDecision::kRun;
      case FenceState::kCommitted:
        if (commit) return FenceDecision::kDone;
        break;
      case FenceState::kRollbacked:
      case FenceState::kSuspended:
        if (!commit) return FenceDecision::kDone;
        break;
    }
    if (why) {
      *why = std::string(commit ? "confirm" : "cancel") + " of branch " + std::to_string(branch_id) + " of " + xid +
             ", which is already " + std::string(StateName(**state));
    }
    return FenceDecision::kRefused;
  }
  return Internal("tcc fence: row of branch " + std::to_string(branch_id) + " of " + xid + " vanished while read");
}

Status TccFence::Finish(LocalTx& tx, bool commit, const std::string& xid, int64_t branch_id) {
  auto n = tx.Exec("UPDATE dtx_tcc_fence SET state = ?, updated_ms = ? WHERE xid = ? AND branch_id = ? AND state = ?",
                   {static_cast<int64_t>(commit ? FenceState::kCommitted : FenceState::kRollbacked), now_ms_(), xid,
                    branch_id, static_cast<int64_t>(FenceState::kTried)});
  if (!n.ok()) return n.status().WithContext("tcc fence");
  if (*n != 1) return Internal("tcc fence: branch " + std::to_string(branch_id) + " of " + xid + " is no longer Tried");
  return Status::Ok();
}

Result<int64_t> TccFence::Clean(std::chrono::milliseconds retention, int64_t limit) {
  int64_t deleted = 0;
  Status s = InLocalTx(*db_, [&](LocalTx& tx) -> Status {
    auto n = tx.Exec(
        "DELETE FROM dtx_tcc_fence WHERE (xid, branch_id) IN (SELECT xid, branch_id FROM dtx_tcc_fence"
        " WHERE updated_ms < ? AND state <> ? LIMIT ?)",
        {now_ms_() - retention.count(), static_cast<int64_t>(FenceState::kTried), limit});
    if (!n.ok()) return n.status();
    deleted = *n;
    return Status::Ok();
  });
  if (!s.ok()) return s.WithContext("tcc fence clean-up");
  return deleted;
}

Result<std::optional<FenceState>> TccFence::Lookup(const std::string& xid, int64_t branch_id) {
  auto tx = db_->Begin();
  if (!tx.ok()) return tx.status();
  auto r = Read(**tx, xid, branch_id, false);
  (void)(*tx)->Rollback();
  return r;
}

}  // namespace dtx::sdk
