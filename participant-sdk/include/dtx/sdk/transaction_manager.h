// TransactionManager and GlobalTx: begin, commit and roll back global transactions (the TM role),
// by hand or in the scoped form GlobalTransactional, which commits when the business code
// returns OK and rolls back when it returns an error or throws:
//
//   dtx::sdk::TransactionManager tm({.addresses = {"127.0.0.1:8091"}, .application = "shop"});
//   Status s = dtx::sdk::GlobalTransactional(tm, {.name = "transfer", .timeout = 10s},
//       [&](dtx::sdk::GlobalTx& tx) -> Status {
//         DTX_RETURN_IF_ERROR(debit(...));   // TCC actions and remote calls join tx.xid()
//         return credit(...);
//       });
//
// Propagation: while the body runs, the XID is bound to the thread (CurrentXid()). A scoped
// form entered on a thread that already has an XID (a nested call, or a callee that received
// one) joins that transaction instead of beginning one: it neither commits nor rolls back, its
// result goes back to the code that began the transaction.
//
// A GlobalTx that began its transaction and is destroyed without Commit or Rollback rolls it
// back (RAII guard).
//
// Thread-safety: TransactionManager may be shared by any number of threads. A GlobalTx belongs
// to one thread at a time; its XID may be handed to others.
#pragma once

#include <chrono>
#include <exception>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>

#include "dtx/common/status.h"
#include "dtx/sdk/coordinator_client.h"
#include "dtx/sdk/xid_context.h"

namespace dtx::sdk {

struct TxOptions {
  std::string name = "global-tx";
  std::chrono::milliseconds timeout{0};  // 0: the coordinator's default (60 s)
};

class TransactionManager;

class GlobalTx {
 public:
  GlobalTx(GlobalTx&& other) noexcept;
  GlobalTx& operator=(GlobalTx&& other) noexcept;
  GlobalTx(const GlobalTx&) = delete;
  GlobalTx& operator=(const GlobalTx&) = delete;
  ~GlobalTx();  // rolls back a transaction this object began and did not finish

  const std::string& xid() const { return xid_; }
  const std::string& name() const { return name_; }
  // True when this object joined a transaction begun elsewhere (it will not commit or roll back).
  bool joined() const { return joined_; }

  // OK once the coordinator has durably decided to commit (phase 2 then runs in the background).
  // An error when it ended rolled back instead (timed out, say) or its outcome is unknown.
  // No-op for a joined transaction.
  Status Commit();
  Status Rollback();
  // The coordinator's view of the transaction now.
  Result<TxState> State() const;

 private:
  friend class TransactionManager;
  GlobalTx(std::shared_ptr<CoordinatorClient> client, std::string xid, std::string name, bool joined);

  std::shared_ptr<CoordinatorClient> client_;
  std::string xid_;
  std::string name_;
  bool joined_ = false;
  bool finished_ = false;
};

class TransactionManager {
 public:
  explicit TransactionManager(CoordinatorOptions options);
  // Shares a client (with a Participant in the same process, say).
  explicit TransactionManager(std::shared_ptr<CoordinatorClient> client);

  // Begins a new global transaction.
  Result<GlobalTx> Begin(const TxOptions& options);
  // A handle on a transaction begun elsewhere (an XID received from a caller).
  GlobalTx Join(std::string xid);

  CoordinatorClient& coordinator() { return *client_; }
  const std::shared_ptr<CoordinatorClient>& shared_coordinator() const { return client_; }

 private:
  std::shared_ptr<CoordinatorClient> client_;
};

// Runs `body(GlobalTx&) -> Status` inside a global transaction: in the thread's current one if
// it has one (joined), else in a new one that is committed when body returns OK and rolled back
// when it returns an error or throws (the exception is then rethrown). Returns body's error, the
// error of Begin or Commit, or OK.
template <typename Body>
Status GlobalTransactional(TransactionManager& tm, const TxOptions& options, Body&& body) {
  static_assert(std::is_invocable_r_v<Status, Body&, GlobalTx&>, "body must be callable as Status(GlobalTx&)");
  if (!CurrentXid().empty()) {
    GlobalTx joined = tm.Join(CurrentXid());
    return body(joined);
  }
  auto begun = tm.Begin(options);
  if (!begun.ok()) return begun.status();
  GlobalTx& tx = *begun;
  Status result;
  {
    XidScope scope(tx.xid());
    try {
      result = body(tx);
    } catch (...) {
      (void)tx.Rollback();  // logged inside; the exception says what went wrong
      throw;
    }
  }
  if (!result.ok()) {
    (void)tx.Rollback();
    return result;
  }
  return tx.Commit();
}

}  // namespace dtx::sdk
