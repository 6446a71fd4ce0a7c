// AtResourceManager: answers the coordinator's phase-2 calls for AT branches of the proxy's
// backend databases (resource id -> libpq connection string).
//
// Pass Handler() to the sdk::CoordinatorClient the proxy registers its resources with. A commit
// is answered PhaseTwoCommitted at once and its undo row deleted later, in batches, by the
// worker thread; a rollback runs on the worker thread (UndoExecutor) and is answered from there:
// PhaseTwoRollbacked, PhaseTwoRollbackFailedRetryable (database unreachable, lock timeout...), or
// PhaseTwoRollbackFailedUnretryable with the dirty rows named.
//
// StartSweeping() adds the UndoSweeper (undo rows left by a crash between a commit's answer and
// its deletion, old rollback markers), at once and then every sweep.interval.
//
// Thread-safety: Handler() may be called from any thread (it only queues); one worker thread
// does the database work. Stop() (or the destructor) finishes queued work and joins it.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "dtx/at/undo_executor.h"
#include "dtx/at/undo_sweeper.h"
#include "dtx/sdk/coordinator_client.h"

namespace dtx::at {

struct AtResourceManagerOptions {
  std::map<std::string, std::string> databases;  // resource id -> conninfo
  std::string undo_table = std::string("dtx_undo_log");
  size_t commit_batch = 256;                      // undo rows deleted per statement at most
  std::chrono::milliseconds commit_delay{20};     // a commit waits this long for company
  UndoSweepOptions sweep;                         // see StartSweeping()
  // AtOptions::untracked_tables: checked by Start (a malformed name fails it; a table missing
  // from a database is logged).
  std::vector<std::string> untracked_tables;
};

class AtResourceManager {
 public:
  explicit AtResourceManager(AtResourceManagerOptions options);
  ~AtResourceManager();
  AtResourceManager(const AtResourceManager&) = delete;
  AtResourceManager& operator=(const AtResourceManager&) = delete;

  // Creates the undo-log table where it is missing; starts the worker.
  Status Start();
  sdk::BranchHandler Handler();
  // Waits until every queued commit deletion has been tried.
  void Flush();
  // Sweeps the undo tables now and then every options.sweep.interval on a thread of its own,
  // asking `status` (the coordinator's GetStatus) about each xid. Call once, after Start().
  void StartSweeping(UndoSweeper::StatusFn status);
  // Undo rows and markers the sweeps deleted; rounds of sweeping finished.
  uint64_t swept_rows() const { return sweeper_ ? sweeper_->swept_rows() : 0; }
  uint64_t sweep_rounds() const { return sweeper_ ? sweeper_->rounds() : 0; }
  void Stop();

 private:
  struct Rollback {
    sdk::BranchCall call;
    std::function<void(sdk::BranchAnswer)> answer;
  };
  void OnCall(sdk::BranchCall call, std::function<void(sdk::BranchAnswer)> answer);
  void Run();
  sdk::BranchAnswer DoRollback(const sdk::BranchCall& call);

  AtResourceManagerOptions options_;
  std::map<std::string, std::unique_ptr<UndoExecutor>> executors_;  // worker thread only
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Rollback> rollbacks_;
  std::map<std::string, std::vector<std::pair<std::string, int64_t>>> commits_;  // by resource
  size_t in_flight_ = 0;  // commit deletions taken by the worker, not yet done
  bool stop_ = false;
  std::thread worker_;
  std::unique_ptr<UndoSweeper> sweeper_;
};

}  // namespace dtx::at
