// UndoSweeper: deletes undo rows that no phase 2 will ever need (docs/undo-log.md, "Sweeping").
//
// A commit's undo rows are deleted after PhaseTwoCommitted is answered, so a crash in between
// leaves them; rollback markers (log_status 1) are never deleted by phase 2. A sweep round reads,
// per database, the xids of the undo table (distinct, oldest first, at most `max_xids` per
// round, `batch` per query), asks the coordinator for each xid's status and deletes:
//   - normal rows (log_status 0) of an xid whose outcome is commit (Committing, CommitRetrying,
//     AsyncCommitting, Committed) or that the coordinator does not know (XID_NOT_FOUND);
//   - markers (log_status 1) older than `marker_age` of an xid that is finished or unknown.
// Any other answer keeps the rows; a failed status call (coordinator unreachable ...) ends the
// round for that database with nothing more deleted.
//
// Thread-safety: SweepOnce() runs on one thread at a time (it owns one connection per database);
// Start() runs it on a thread of its own, at once and then every `interval`; Stop() joins it.
// swept_rows() may be read from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "dtx/at/pg_connection.h"
#include "dtx/at/sql_state.h"
#include "dtx/sdk/coordinator_client.h"

namespace dtx::at {

struct UndoSweepOptions {
  std::chrono::milliseconds interval{60'000};   // between rounds (the first runs at Start())
  std::chrono::milliseconds marker_age{600'000};  // a younger marker is kept
  size_t batch = 200;                            // xids read and rows deleted per statement
  size_t max_xids = 2000;                        // xids looked at per database per round
};

// What one round did.
struct UndoSweepStats {
  uint64_t xids_seen = 0;
  uint64_t rows_deleted = 0;    // normal rows
  uint64_t markers_deleted = 0;
  uint64_t status_errors = 0;   // status calls that failed (the round stopped there)
};

class UndoSweeper {
 public:
  // The coordinator's status of an xid (sdk::CoordinatorClient::GetStatus; kNotFound when it
  // does not know the xid).
  using StatusFn = std::function<Result<sdk::TxState>(const std::string& xid)>;

  UndoSweeper(std::map<std::string, std::string> databases, std::string undo_table, StatusFn status,
              UndoSweepOptions options);
  ~UndoSweeper();
  UndoSweeper(const UndoSweeper&) = delete;
  UndoSweeper& operator=(const UndoSweeper&) = delete;

  // One round over every database. Errors of one database are logged and do not stop the others.
  UndoSweepStats SweepOnce();
  void Start();
  void Stop();
  // Rows (normal and markers) deleted since construction.
  uint64_t swept_rows() const { return swept_rows_.load(); }
  // Rounds finished since construction.
  uint64_t rounds() const { return rounds_.load(); }

 private:
  Status SweepDatabase(const std::string& resource, const std::string& conninfo, UndoSweepStats& stats);

  std::map<std::string, std::string> databases_;
  std::string undo_table_;
  StatusFn status_;
  UndoSweepOptions options_;
  std::map<std::string, std::unique_ptr<PgConnection>> conns_;  // SweepOnce() only
  std::atomic<uint64_t> swept_rows_{0};
  std::atomic<uint64_t> rounds_{0};
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace dtx::at
