// Coordinator: the Transaction Coordinator. It answers the dtx.v1.TransactionCoordinator calls,
// keeps every global transaction durable in a LogStore before it acknowledges or acts, drives
// phase 2 over the connections participants opened, retries, times out, and resumes every
// unfinished transaction after a restart (Recover).
//
// Promises: a Commit or Rollback is answered only once its outcome is durable; no transaction
// moves between the commit and rollback families; phase 2 of a branch is repeated until its
// participant says done (so participants must be idempotent, which the SDK's TCC fence and the
// proxy's undo log are), and after a crash it may be delivered again.
//
// Thread-safety: every public method may be called from any thread.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include "dtx/common/status.h"
#include "dtx/coordinator/metrics.h"
#include "dtx/log/log_store.h"
#include "dtx/rpc/channel.h"
#include "dtx/rpc/service_registry.h"

namespace dtx::coordinator {

inline constexpr std::string_view kCoordinatorService = "dtx.v1.TransactionCoordinator:1.0";
inline constexpr std::string_view kResourceManagerService = "dtx.v1.ResourceManager:1.0";

struct CoordinatorOptions {
  std::string node_id = "tc-1";  // names the node in every XID it begins
  std::chrono::milliseconds default_timeout{60'000};
  std::chrono::milliseconds max_timeout{24 * 3600'000};
  std::string token;  // when set, TMs and participants must present it
  std::chrono::milliseconds retry_backoff_min{200};
  std::chrono::milliseconds retry_backoff_max{30'000};
  int max_retries = 0;  // per branch and phase 2; 0: retry forever
  std::chrono::milliseconds branch_call_timeout{10'000};
};

// What an operator may do with a transaction that needs one.
enum class OperatorAction {
  kRetry,          // drive phase 2 again (CommitFailed -> Committing, RollbackFailed -> Rollbacking)
  kForceCommitted, // a human made the data right: record Committed and forget it
  kForceRolledBack,
};

class Coordinator {
 public:
  Coordinator(CoordinatorOptions options, std::shared_ptr<log::LogStore> store, std::shared_ptr<Metrics> metrics);
  ~Coordinator();
  Coordinator(const Coordinator&) = delete;
  Coordinator& operator=(const Coordinator&) = delete;

  // Loads every unfinished transaction from the log and resumes it. Call once, before serving.
  Status Recover();
  // Adds dtx.v1.TransactionCoordinator to `registry`.
  void AddServices(rpc::ServiceRegistry& registry);
  // A participant's connection closed: phase 2 for its resources waits for another one.
  void OnDisconnect(const std::shared_ptr<rpc::Channel>& peer);
  // Stops timers and phase 2; the log keeps where everything stood.
  void Shutdown();

  // For the admin API.
  Status Act(const std::string& xid, OperatorAction action, const std::string& who);
  size_t active_transactions() const;
  bool recovered() const;
  log::LogStore& store();

 private:
  class Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace dtx::coordinator
