// The global and branch state machines, in one place: which moves are allowed.
#pragma once

#include "dtx/log/records.h"

namespace dtx::coordinator {

using log::BranchStatus;
using log::GlobalStatus;

enum class Family { kBegin, kCommit, kRollback, kTimeoutRollback };

Family FamilyOf(GlobalStatus s);
// Phase 2 is over: nothing more to drive (successfully or not).
bool IsFinal(GlobalStatus s);
bool IsFailed(GlobalStatus s);
// The move `from` -> `to` is one the coordinator may make. Never across the commit and rollback
// families; failed states go back only to their own family (operator retry or force).
bool CanMove(GlobalStatus from, GlobalStatus to);

// The status a family moves to when phase 2 needs a retry, succeeds, or fails for good.
GlobalStatus RetryingOf(Family f);
GlobalStatus DoneOf(Family f);
GlobalStatus FailedOf(Family f);
GlobalStatus DrivingOf(Family f);  // Committing / Rollbacking / TimeoutRollbacking

}  // namespace dtx::coordinator
