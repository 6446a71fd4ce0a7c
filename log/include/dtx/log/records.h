// The records of the transaction log: global transactions, branches and global row locks,
// with the status vocabulary (and numbering) of Seata. Their stored form is in docs/log-format.md.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace dtx::log {

// Numbers are stable: they are stored and sent on the wire.
enum class GlobalStatus : int32_t {
  kUnknown = 0,
  kBegin = 1,
  kCommitting = 2,
  kCommitRetrying = 3,
  kRollbacking = 4,
  kRollbackRetrying = 5,
  kTimeoutRollbacking = 6,
  kTimeoutRollbackRetrying = 7,
  kAsyncCommitting = 8,
  kCommitted = 9,
  kCommitFailed = 10,
  kRollbacked = 11,
  kRollbackFailed = 12,
  kTimeoutRollbacked = 13,
  kTimeoutRollbackFailed = 14,
};

enum class BranchStatus : int32_t {
  kUnknown = 0,
  kRegistered = 1,
  kPhaseOneDone = 2,
  kPhaseOneFailed = 3,
  kPhaseTwoCommitted = 5,
  kPhaseTwoCommitFailedRetryable = 6,
  kPhaseTwoCommitFailedUnretryable = 7,
  kPhaseTwoRollbacked = 8,
  kPhaseTwoRollbackFailedRetryable = 9,
  kPhaseTwoRollbackFailedUnretryable = 10,
};

enum class BranchType : int32_t { kAT = 0, kTCC = 1, kSAGA = 2, kXA = 3 };

std::string_view GlobalStatusName(GlobalStatus s);
std::string_view BranchStatusName(BranchStatus s);
std::string_view BranchTypeName(BranchType t);

struct GlobalRecord {
  std::string xid;
  GlobalStatus status = GlobalStatus::kBegin;
  std::string name;
  std::string application;
  int64_t timeout_ms = 60'000;
  int64_t begin_time_ms = 0;  // Unix time
  std::string owner_node;     // the coordinator node that drives it
  std::string application_data;
  int64_t updated_time_ms = 0;

  bool operator==(const GlobalRecord&) const = default;
};

struct BranchRecord {
  int64_t branch_id = 0;  // unique across the cluster
  std::string xid;
  std::string resource_id;
  BranchType type = BranchType::kTCC;
  BranchStatus status = BranchStatus::kRegistered;
  std::string lock_keys;  // as registered: "resource:table:pk" entries joined by ';'
  std::string application_data;
  std::string client_id;  // the participant that registered it
  int64_t registered_time_ms = 0;

  bool operator==(const BranchRecord&) const = default;
};

// A global row lock: `row_key` ("resource:table:pk") held by a branch of a global transaction.
struct RowLock {
  std::string row_key;
  std::string xid;
  int64_t branch_id = 0;

  bool operator==(const RowLock&) const = default;
};

// A global transaction with everything that belongs to it, branches in registration order.
struct TransactionSnapshot {
  GlobalRecord global;
  std::vector<BranchRecord> branches;
  std::vector<RowLock> locks;  // ordered by row_key
};

}  // namespace dtx::log
