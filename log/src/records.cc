#include "dtx/log/records.h"

namespace dtx::log {

std::string_view GlobalStatusName(GlobalStatus s) {
  switch (s) {
    case GlobalStatus::kUnknown: return "Unknown";
    case GlobalStatus::kBegin: return "Begin";
    case GlobalStatus::kCommitting: return "Committing";
    case GlobalStatus::kCommitRetrying: return "CommitRetrying";
    case GlobalStatus::kRollbacking: return "Rollbacking";
    case GlobalStatus::kRollbackRetrying: return "RollbackRetrying";
    case GlobalStatus::kTimeoutRollbacking: return "TimeoutRollbacking";
    case GlobalStatus::kTimeoutRollbackRetrying: return "TimeoutRollbackRetrying";
    case GlobalStatus::kAsyncCommitting: return "AsyncCommitting";
    case GlobalStatus::kCommitted: return "Committed";
    case GlobalStatus::kCommitFailed: return "CommitFailed";
    case GlobalStatus::kRollbacked: return "Rollbacked";
    case GlobalStatus::kRollbackFailed: return "RollbackFailed";
    case GlobalStatus::kTimeoutRollbacked: return "TimeoutRollbacked";
    case GlobalStatus::kTimeoutRollbackFailed: return "TimeoutRollbackFailed";
  }
  return "Invalid";
}

std::string_view BranchStatusName(BranchStatus s) {
  switch (s) {
    case BranchStatus::kUnknown: return "Unknown";
    case BranchStatus::kRegistered: return "Registered";
    case BranchStatus::kPhaseOneDone: return "PhaseOneDone";
    case BranchStatus::kPhaseOneFailed: return "PhaseOneFailed";
    case BranchStatus::kPhaseTwoCommitted: return "PhaseTwoCommitted";
    case BranchStatus::kPhaseTwoCommitFailedRetryable: return "PhaseTwoCommitFailedRetryable";
    case BranchStatus::kPhaseTwoCommitFailedUnretryable: return "PhaseTwoCommitFailedUnretryable";
    case BranchStatus::kPhaseTwoRollbacked: return "PhaseTwoRollbacked";
    case BranchStatus::kPhaseTwoRollbackFailedRetryable: return "PhaseTwoRollbackFailedRetryable";
    case BranchStatus::kPhaseTwoRollbackFailedUnretryable: return "PhaseTwoRollbackFailedUnretryable";
  }
  return "Invalid";
}

std::string_view BranchTypeName(BranchType t) {
  switch (t) {
    case BranchType::kAT: return "AT";
    case BranchType::kTCC: return "TCC";
    case BranchType::kSAGA: return "SAGA";
    case BranchType::kXA: return "XA";
  }
  return "Invalid";
}

}  // namespace dtx::log
