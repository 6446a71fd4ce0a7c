// Pieces every LogStore implementation shares: error wording and filter matching.
#pragma once

#include <algorithm>
#include <string>

#include "dtx/log/log_store.h"

namespace dtx::log {

template <class... Ts>
struct Overloaded : Ts... {
  using Ts::operator()...;
};
template <class... Ts>
Overloaded(Ts...) -> Overloaded<Ts...>;

inline Status AlreadyExists(const std::string& what) { return {StatusCode::kAlreadyExists, what + " is already in the log"}; }
inline Status NoSuchTransaction(const std::string& xid) { return NotFound("no transaction " + xid + " in the log"); }
inline Status NoSuchBranch(const std::string& xid, int64_t branch_id) {
  return NotFound("no branch " + std::to_string(branch_id) + " of " + xid + " in the log");
}
inline WriteResult LockConflictResult(RowLock holder) {
  WriteResult r;
  r.status = FailedPrecondition("row lock " + holder.row_key + " is held by " + holder.xid);
  r.conflict = LockConflict{std::move(holder.row_key), std::move(holder.xid), holder.branch_id};
  return r;
}

inline bool Matches(const ListFilter& filter, const GlobalRecord& g) {
  if (!filter.statuses.empty() &&
      std::find(filter.statuses.begin(), filter.statuses.end(), g.status) == filter.statuses.end())
    return false;
  return filter.begun_before_ms == 0 || g.begin_time_ms < filter.begun_before_ms;
}

}  // namespace dtx::log
