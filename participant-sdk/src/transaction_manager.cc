#include "dtx/sdk/transaction_manager.h"

#include <spdlog/spdlog.h>

#include <thread>

namespace dtx::sdk {

GlobalTx::GlobalTx(std::shared_ptr<CoordinatorClient> client, std::string xid, std::string name, bool joined)
    : client_(std::move(client)), xid_(std::move(xid)), name_(std::move(name)), joined_(joined), finished_(joined) {}

GlobalTx::GlobalTx(GlobalTx&& o) noexcept
    : client_(std::move(o.client_)), xid_(std::move(o.xid_)), name_(std::move(o.name_)), joined_(o.joined_),
      finished_(o.finished_) {
  o.finished_ = true;
}

GlobalTx& GlobalTx::operator=(GlobalTx&& o) noexcept {
  if (this != &o) {
    if (!finished_) (void)Rollback();
    client_ = std::move(o.client_);
    xid_ = std::move(o.xid_);
    name_ = std::move(o.name_);
    joined_ = o.joined_;
    finished_ = o.finished_;
    o.finished_ = true;
  }
  return *this;
}

GlobalTx::~GlobalTx() {
  if (!finished_) {
    spdlog::warn("dtx sdk: global transaction {} ({}) left unfinished; rolling it back", xid_, name_);
    (void)Rollback();
  }
}

Status GlobalTx::Commit() {
  if (joined_) return Status::Ok();
  if (finished_) return FailedPrecondition("global transaction " + xid_ + " is already finished");
  auto r = client_->Commit(xid_);
  if (!r.ok() && (r.status().code() == StatusCode::kUnavailable || r.status().code() == StatusCode::kTimeout) &&
      r.status().message().rfind("TIMED_OUT", 0) != 0) {
    // The answer was lost: Commit is idempotent, ask once more after a pause, then ask the status.
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    r = client_->Commit(xid_);
  }
  if (!r.ok()) {
    const bool unknown = r.status().code() == StatusCode::kUnavailable ||
                         (r.status().code() == StatusCode::kTimeout && r.status().message().rfind("TIMED_OUT", 0) != 0);
    if (!unknown) finished_ = true;  // the coordinator answered: it rolled the transaction back
    return r.status().WithContext("commit of " + xid_);
  }
  finished_ = true;
  if (r->outcome == Outcome::kRolledBack) {
    return FailedPrecondition("global transaction " + xid_ + " was rolled back (" +
                              std::string(GlobalStatusName(r->status)) + ")");
  }
  return Status::Ok();
}

Status GlobalTx::Rollback() {
  if (joined_) return Status::Ok();
  if (finished_) return Status::Ok();
  auto r = client_->Rollback(xid_);
  if (!r.ok()) {
    // Asked once: if no coordinator could be reached, it rolls the transaction back at its timeout.
    finished_ = true;
    spdlog::warn("dtx sdk: rollback of {}: {}", xid_, r.status().ToString());
    return r.status().WithContext("rollback of " + xid_);
  }
  finished_ = true;
  return Status::Ok();
}

Result<TxState> GlobalTx::State() const { return client_->GetStatus(xid_); }

TransactionManager::TransactionManager(CoordinatorOptions options)
    : client_(std::make_shared<CoordinatorClient>(std::move(options))) {}

TransactionManager::TransactionManager(std::shared_ptr<CoordinatorClient> client) : client_(std::move(client)) {}

Result<GlobalTx> TransactionManager::Begin(const TxOptions& options) {
  auto xid = client_->Begin(options.name, options.timeout);
  if (!xid.ok()) return xid.status().WithContext("begin " + options.name);
  return GlobalTx(client_, std::move(*xid), options.name, false);
}

GlobalTx TransactionManager::Join(std::string xid) { return GlobalTx(client_, std::move(xid), "", true); }

}  // namespace dtx::sdk
