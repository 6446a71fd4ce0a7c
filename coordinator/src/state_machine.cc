#include "state_machine.h"

namespace dtx::coordinator {

Family FamilyOf(GlobalStatus s) {
  switch (s) {
    case GlobalStatus::kBegin:
    case GlobalStatus::kUnknown:
      return Family::kBegin;
    case GlobalStatus::kCommitting:
    case GlobalStatus::kCommitRetrying:
    case GlobalStatus::kAsyncCommitting:
    case GlobalStatus::kCommitted:
    case GlobalStatus::kCommitFailed:
      return Family::kCommit;
    case GlobalStatus::kRollbacking:
    case GlobalStatus::kRollbackRetrying:
    case GlobalStatus::kRollbacked:
    case GlobalStatus::kRollbackFailed:
      return Family::kRollback;
    case GlobalStatus::kTimeoutRollbacking:
    case GlobalStatus::kTimeoutRollbackRetrying:
    case GlobalStatus::kTimeoutRollbacked:
    case GlobalStatus::kTimeoutRollbackFailed:
      return Family::kTimeoutRollback;
  }
  return Family::kBegin;
}

bool IsFailed(GlobalStatus s) {
  return s == GlobalStatus::kCommitFailed || s == GlobalStatus::kRollbackFailed ||
         s == GlobalStatus::kTimeoutRollbackFailed;
}

bool IsFinal(GlobalStatus s) {
  return IsFailed(s) || s == GlobalStatus::kCommitted || s == GlobalStatus::kRollbacked ||
         s == GlobalStatus::kTimeoutRollbacked;
}

GlobalStatus RetryingOf(Family f) {
  switch (f) {
    case Family::kCommit: return GlobalStatus::kCommitRetrying;
    case Family::kRollback: return GlobalStatus::kRollbackRetrying;
    case Family::kTimeoutRollback: return GlobalStatus::kTimeoutRollbackRetrying;
    case Family::kBegin: break;
  }
  return GlobalStatus::kUnknown;
}

GlobalStatus DoneOf(Family f) {
  switch (f) {
    case Family::kCommit: return GlobalStatus::kCommitted;
    case Family::kRollback: return GlobalStatus::kRollbacked;
    case Family::kTimeoutRollback: return GlobalStatus::kTimeoutRollbacked;
    case Family::kBegin: break;
  }
  return GlobalStatus::kUnknown;
}

GlobalStatus FailedOf(Family f) {
  switch (f) {
    case Family::kCommit: return GlobalStatus::kCommitFailed;
    case Family::kRollback: return GlobalStatus::kRollbackFailed;
    case Family::kTimeoutRollback: return GlobalStatus::kTimeoutRollbackFailed;
    case Family::kBegin: break;
  }
  return GlobalStatus::kUnknown;
}

GlobalStatus DrivingOf(Family f) {
  switch (f) {
    case Family::kCommit: return GlobalStatus::kCommitting;
    case Family::kRollback: return GlobalStatus::kRollbacking;
    case Family::kTimeoutRollback: return GlobalStatus::kTimeoutRollbacking;
    case Family::kBegin: break;
  }
  return GlobalStatus::kUnknown;
}

bool CanMove(GlobalStatus from, GlobalStatus to) {
  const Family f = FamilyOf(from), t = FamilyOf(to);
  if (from == GlobalStatus::kBegin) {
    // Decide (or, with no branches or a TM's report, finish at once).
    return to != GlobalStatus::kBegin && t != Family::kBegin && !IsFailed(to);
  }
  if (f != t || t == Family::kBegin) return false;  // never across families
  if (IsFailed(from)) return to == DrivingOf(f) || to == DoneOf(f);  // operator: retry or force
  if (IsFinal(from)) return false;
  // Driving or retrying: retry, finish, or fail.
  return to == RetryingOf(f) || to == DoneOf(f) || to == FailedOf(f) || to == from;
}

}  // namespace dtx::coordinator
