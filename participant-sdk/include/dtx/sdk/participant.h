// Participant: the resource manager (RM) side of the SDK. It declares TCC actions, registers
// them with the coordinator as resources, runs their Try inside global transactions, and
// answers phase 2 (Confirm / Cancel) on its worker threads, with the TCC fence in the
// participant's own database:
//
//   auto db = dtx::sdk::OpenLocalDatabase("sqlite:bank-a.db");
//   dtx::sdk::Participant rm({.coordinator = {.addresses = {"127.0.0.1:8091"}, .application = "bank-a"},
//                             .database = *db});
//   auto debit = rm.Tcc<Transfer>("bank-a.debit").Try(...).Confirm(...).Cancel(...);
//   rm.Start();
//
// The fence is on by default and needs a database; with fence = false the actions' own code
// must be idempotent and handle empty rollback and suspension itself.
//
// Thread-safety: declare actions and Start from one thread; everything else from any thread.
// The Participant must outlive the actions declared on it.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "dtx/common/status.h"
#include "dtx/sdk/coordinator_client.h"
#include "dtx/sdk/local_database.h"
#include "dtx/sdk/tcc_action.h"
#include "dtx/sdk/tcc_fence.h"
#include "dtx/sdk/worker_pool.h"

namespace dtx::sdk {

struct ParticipantOptions {
  CoordinatorOptions coordinator;
  // The participant's own database: the fence lives here, and Try/Confirm/Cancel get a local
  // transaction of it (TccContext::local()).
  std::shared_ptr<LocalDatabase> database;
  bool fence = true;
  // Tell the coordinator when a Try has committed (ReportBranch PHASE_ONE_DONE). A Try that did
  // nothing (rolled back under the fence) is always reported PHASE_ONE_FAILED: it needs no Cancel.
  bool report_phase_one_done = true;
  unsigned workers = 4;  // threads that run Confirm / Cancel
  std::chrono::milliseconds fence_retention{std::chrono::hours(24)};
  std::chrono::milliseconds fence_cleanup_interval{std::chrono::minutes(10)};  // 0: never
  // Called after a branch is registered and before its Try runs (tracing, fault injection).
  std::function<void(const std::string& xid, int64_t branch_id, const std::string& action)> after_register;
};

class Participant {
 public:
  explicit Participant(ParticipantOptions options);
  ~Participant();  // Stop()
  Participant(const Participant&) = delete;
  Participant& operator=(const Participant&) = delete;

  // Declares a TCC action named `name` (its branches' resource id). REQUIRES: name not declared.
  template <typename Args>
  TccAction<Args> Tcc(std::string name) {
    return TccAction<Args>(this, Declare(std::move(name)));
  }

  // Creates the fence table, registers the declared actions with the coordinator and starts the
  // fence clean-up. An error when the fence cannot be set up. Not reaching a coordinator is not
  // an error: the participant registers once one answers.
  Status Start();
  // Stops answering phase 2 (the coordinator retries elsewhere or later), closes the coordinator
  // client (also for a TransactionManager that shares it) and stops the workers.
  void Stop();

  // Phase 2 of one branch, synchronously on the calling thread (the coordinator's calls come
  // through here on a worker thread; tools and tests may replay a delivery with it).
  BranchAnswer RunPhaseTwo(const BranchCall& call);

  const std::shared_ptr<CoordinatorClient>& coordinator() const { return client_; }
  WorkerPool& workers() { return *workers_; }
  TccFence* fence() { return fence_.get(); }
  const ParticipantOptions& options() const { return options_; }

 private:
  friend Status detail::RunTry(Participant&, const detail::ActionState&, const std::string&, const std::string&,
                               const std::function<Status(TccContext&)>&);

  std::shared_ptr<detail::ActionState> Declare(std::string name);
  std::shared_ptr<detail::ActionState> Find(const std::string& name) const;
  void CleanupLoop();

  ParticipantOptions options_;
  std::unique_ptr<WorkerPool> workers_;
  std::unique_ptr<TccFence> fence_;
  std::shared_ptr<CoordinatorClient> client_;
  mutable std::mutex mu_;
  std::map<std::string, std::shared_ptr<detail::ActionState>> actions_;
  std::atomic<bool> started_{false};
  bool stopping_ = false;
  std::condition_variable cleanup_cv_;
  std::thread cleanup_;
};

}  // namespace dtx::sdk
