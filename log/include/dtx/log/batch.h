// Batch: changes to the log that apply atomically, all or none, once durable.
//
// Operations apply in order. A batch fails as a whole, changing nothing, when one of its
// operations cannot apply: a row lock held by another transaction (a LockConflict), a status
// change for a transaction or branch that is not there (NotFound), a transaction inserted twice
// (AlreadyExists).
#pragma once

#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "dtx/common/status.h"
#include "dtx/log/records.h"

namespace dtx::log {

class Batch {
 public:
  struct InsertGlobal { GlobalRecord record; };
  struct SetGlobalStatus { std::string xid; GlobalStatus status; int64_t updated_time_ms; };
  struct InsertBranch { BranchRecord record; };
  struct SetBranchStatus { std::string xid; int64_t branch_id; BranchStatus status; };
  // Takes every key for xid/branch_id; a key the same xid holds already is fine.
  struct AcquireLocks { std::string xid; int64_t branch_id; std::vector<std::string> row_keys; };
  // Releases every lock of xid.
  struct ReleaseLocks { std::string xid; };
  // Removes a finished transaction with its branches and locks.
  struct RemoveGlobal { std::string xid; };
  using Op = std::variant<InsertGlobal, SetGlobalStatus, InsertBranch, SetBranchStatus, AcquireLocks, ReleaseLocks,
                          RemoveGlobal>;

  Batch& Insert(GlobalRecord record) { return Add(InsertGlobal{std::move(record)}); }
  Batch& SetStatus(std::string xid, GlobalStatus status, int64_t updated_time_ms = 0) {
    return Add(SetGlobalStatus{std::move(xid), status, updated_time_ms});
  }
  Batch& Insert(BranchRecord record) { return Add(InsertBranch{std::move(record)}); }
  Batch& SetStatus(std::string xid, int64_t branch_id, BranchStatus status) {
    return Add(SetBranchStatus{std::move(xid), branch_id, status});
  }
  Batch& Lock(std::string xid, int64_t branch_id, std::vector<std::string> row_keys) {
    return Add(AcquireLocks{std::move(xid), branch_id, std::move(row_keys)});
  }
  Batch& Unlock(std::string xid) { return Add(ReleaseLocks{std::move(xid)}); }
  Batch& Remove(std::string xid) { return Add(RemoveGlobal{std::move(xid)}); }

  const std::vector<Op>& ops() const { return ops_; }
  // For a store that takes the records when it applies the batch (see MemoryLogStore::ApplyNow).
  std::vector<Op>& mutable_ops() { return ops_; }
  bool empty() const { return ops_.empty(); }

 private:
  Batch& Add(Op op) {
    ops_.push_back(std::move(op));
    return *this;
  }
  std::vector<Op> ops_;
};

struct LockConflict {
  std::string row_key;
  std::string holder_xid;
  int64_t holder_branch_id = 0;
};

// The outcome of a batch: OK once durable; a LockConflict (status FailedPrecondition, with
// `conflict` naming the holder); or another error, which changed nothing.
struct WriteResult {
  Status status;
  std::optional<LockConflict> conflict;

  bool ok() const { return status.ok(); }
};

}  // namespace dtx::log
