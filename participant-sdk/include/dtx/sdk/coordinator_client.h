// CoordinatorClient: one application's connection to the dtx coordinators, for a transaction
// manager (Begin / Commit / Rollback / GetStatus / Report) and for a resource manager
// (RegisterParticipant, RegisterBranch, ReportBranch, QueryLocks, and phase 2 served back over
// the same connections). The TCC participant and the SQL proxy both build on it.
//
// Failover: the client keeps a connection to every address; a call goes to a live one, and a
// call that fails because a coordinator is unreachable, shutting down or cannot write its log
// is sent again (to the next live address) up to `attempts` times. Commit, Rollback, GetStatus
// and Report are idempotent; a Begin repeated after a lost answer leaves at most an empty
// transaction that the coordinator rolls back at its timeout.
//
// Participant registration is sent on every (re)connection, with the resources known then;
// AddResources registers more at any time.
//
// Errors: a coordinator answer other than OK is a Status whose message starts with the wire
// code's name ("LOCK_CONFLICT: ...", see dtx.proto) and whose code is mapped as: request errors
// -> kInvalidArgument / kUnauthenticated / kFailedPrecondition, XID_NOT_FOUND -> kNotFound,
// TIMED_OUT -> kTimeout, LOCK_CONFLICT -> kResourceExhausted, other state errors ->
// kFailedPrecondition, LOG_UNAVAILABLE / SHUTTING_DOWN -> kUnavailable, INTERNAL -> kInternal.
//
// Every call comes in two forms. The *Async form never blocks its caller: it sends the call,
// waits for a first connection, for the participant's registration and between retries on
// timers of the client's own I/O threads, and calls `done` exactly once with the result. The
// blocking form waits for the *Async one (one implementation, the same semantics).
//
// Thread-safety: every method may be called from any thread. The blocking forms (and
// AddResources / WaitRegistered) must not be called on an rpc I/O thread: they would wait on
// themselves. `done` of an *Async call runs on an rpc I/O thread of this client and must not
// block (hand blocking work to a thread of your own); it is never run inside the *Async call
// itself. At Shutdown every call still in flight gets `done` with Unavailable (on an I/O thread
// when they still run, otherwise on the thread calling Shutdown); a call made after Shutdown
// gets Unavailable at once. The BranchHandler also runs on an rpc I/O thread and must not block:
// hand the work to a thread of your own and answer from there.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "dtx/common/status.h"

namespace dtx::rpc {
class IoPool;  // dtx/rpc/io_pool.h
}

namespace dtx::sdk {

// The wire enums of dtx.proto, with the same numbers (Seata's numbering).
enum class GlobalStatus : int {
  kUnknown = 0, kBegin = 1, kCommitting = 2, kCommitRetrying = 3, kRollbacking = 4,
  kRollbackRetrying = 5, kTimeoutRollbacking = 6, kTimeoutRollbackRetrying = 7,
  kAsyncCommitting = 8, kCommitted = 9, kCommitFailed = 10, kRollbacked = 11,
  kRollbackFailed = 12, kTimeoutRollbacked = 13, kTimeoutRollbackFailed = 14,
};
enum class BranchStatus : int {
  kUnknown = 0, kRegistered = 1, kPhaseOneDone = 2, kPhaseOneFailed = 3,
  kPhaseTwoCommitted = 5, kPhaseTwoCommitFailedRetryable = 6, kPhaseTwoCommitFailedUnretryable = 7,
  kPhaseTwoRollbacked = 8, kPhaseTwoRollbackFailedRetryable = 9, kPhaseTwoRollbackFailedUnretryable = 10,
};
enum class BranchType : int { kAT = 0, kTCC = 1, kSaga = 2, kXA = 3 };
enum class Outcome : int { kUndecided = 0, kCommitted = 1, kRolledBack = 2 };

std::string_view GlobalStatusName(GlobalStatus s);
// Finished: Committed, Rollbacked, TimeoutRollbacked (and the failed states need an operator).
bool IsFinal(GlobalStatus s);

// What the coordinator said of a transaction.
struct TxState {
  GlobalStatus status = GlobalStatus::kUnknown;
  Outcome outcome = Outcome::kUndecided;
};

// Phase 2 of one branch, as the coordinator asks for it.
struct BranchCall {
  bool commit = false;  // BranchCommit (true) or BranchRollback
  std::string xid;
  int64_t branch_id = 0;
  std::string resource_id;
  BranchType type = BranchType::kTCC;
  std::string application_data;
};
struct BranchAnswer {
  BranchStatus status = BranchStatus::kUnknown;  // a PhaseTwo* status
  std::string message;
};
// Answers one phase-2 call: call `answer` exactly once, from any thread.
using BranchHandler = std::function<void(BranchCall call, std::function<void(BranchAnswer)> answer)>;

struct BranchRegistration {
  std::string xid;
  std::string resource_id;
  BranchType type = BranchType::kTCC;
  std::vector<std::string> lock_keys;  // "resource:table:pk"
  std::string application_data;
};

struct LockQuery {
  bool free = true;
  std::string conflict_key;
  std::string conflict_xid;
};

struct CoordinatorOptions {
  std::vector<std::string> addresses = {"127.0.0.1:8091"};  // "host:port", one per coordinator
  std::string token;        // the coordinators' --token, if any
  std::string application;  // this application's name, shown by the coordinator
  std::string client_id;    // stable name of this participant instance; default: the connection's address
  std::vector<std::string> resource_ids;  // served from the start (more: AddResources)
  std::chrono::milliseconds call_timeout{10'000};
  // How long a call waits for a first connection (at start, or after all coordinators went away).
  std::chrono::milliseconds connect_wait{5'000};
  int attempts = 3;  // tries per call when a coordinator is unreachable or unavailable
  std::chrono::milliseconds reconnect_backoff_min{50};
  std::chrono::milliseconds reconnect_backoff_max{2'000};
  unsigned io_threads = 1;
  // Run on these I/O threads instead of io_threads of the client's own: e.g. an IoPool borrowing
  // the application's own io_context, so that *Async calls made on that context's thread and
  // their `done` stay on it (no hand-over between threads). The blocking forms must then not be
  // called on that thread. The pool's contexts must run until Shutdown returns.
  std::shared_ptr<rpc::IoPool> io_pool;
};

class CoordinatorClient {
 public:
  // Starts connecting at once. `handler` answers phase 2 (null: a TM-only client).
  explicit CoordinatorClient(CoordinatorOptions options, BranchHandler handler = nullptr);
  ~CoordinatorClient();  // Shutdown()
  CoordinatorClient(const CoordinatorClient&) = delete;
  CoordinatorClient& operator=(const CoordinatorClient&) = delete;

  // ---- transaction manager ----
  // timeout 0: the coordinator's default. Returns the XID.
  Result<std::string> Begin(std::string_view name, std::chrono::milliseconds timeout,
                            std::string_view application_data = {});
  // The outcome once durable; a transaction that ended rolled back (timed out, say) is an error
  // (kTimeout for TIMED_OUT, kFailedPrecondition for ALREADY_ROLLED_BACK).
  Result<TxState> Commit(const std::string& xid);
  Result<TxState> Rollback(const std::string& xid);
  Result<TxState> GetStatus(const std::string& xid);
  Result<TxState> Report(const std::string& xid, GlobalStatus status);

  // Non-blocking forms of the above (see the file comment for where `done` runs).
  using XidDone = std::function<void(Result<std::string>)>;
  using StateDone = std::function<void(Result<TxState>)>;
  void BeginAsync(std::string name, std::chrono::milliseconds timeout, std::string application_data, XidDone done);
  void CommitAsync(std::string xid, StateDone done);
  void RollbackAsync(std::string xid, StateDone done);
  void GetStatusAsync(std::string xid, StateDone done);
  void ReportAsync(std::string xid, GlobalStatus status, StateDone done);

  // ---- resource manager ----
  // Registers more resources on every connection; waits (connect_wait) for the first answer.
  Status AddResources(const std::vector<std::string>& resource_ids);
  std::vector<std::string> resources() const;
  // Waits until at least one connection has registered this participant (or none is needed).
  Status WaitRegistered(std::chrono::milliseconds timeout);
  Result<int64_t> RegisterBranch(const BranchRegistration& branch);
  Status ReportBranch(const std::string& xid, int64_t branch_id, BranchStatus status,
                      std::string_view application_data = {});
  // Whether `lock_keys`, and every key starting with one of `key_prefixes` (a whole table:
  // "resource:schema.table:"), are free of locks held by transactions other than `xid`.
  Result<LockQuery> QueryLocks(const std::string& xid, const std::string& resource_id,
                               const std::vector<std::string>& lock_keys,
                               const std::vector<std::string>& key_prefixes = {});

  // Non-blocking forms: they wait (on timers, connect_wait) for the registration as the
  // blocking ones do.
  void RegisterBranchAsync(BranchRegistration branch, std::function<void(Result<int64_t>)> done);
  void ReportBranchAsync(std::string xid, int64_t branch_id, BranchStatus status, std::string application_data,
                         std::function<void(Status)> done);
  void QueryLocksAsync(std::string xid, std::string resource_id, std::vector<std::string> lock_keys,
                       std::vector<std::string> key_prefixes, std::function<void(Result<LockQuery>)> done);

  const CoordinatorOptions& options() const;
  // Fails every call in flight with Unavailable (their `done` runs before this returns, unless
  // one is still running on an I/O thread after a grace of 2 s), stops reconnecting and closes
  // every connection; later calls fail with Unavailable.
  void Shutdown();

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

// True when `s` came from a LOCK_CONFLICT answer (the message names the key and its holder).
bool IsLockConflict(const Status& s);

}  // namespace dtx::sdk
