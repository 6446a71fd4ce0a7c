// What the crash test and its writer agree on: how to open the store and what a batch holds.
#pragma once

#include <memory>
#include <string>

#include "dtx/log/log_store.h"

namespace dtx::log::testing {

// SQLite when `sqlite_path` is set, else PostgreSQL.
Result<std::unique_ptr<LogStore>> OpenCrashStore(const std::string& sqlite_path, const std::string& pg_conninfo,
                                                 const std::string& pg_schema);

// A global transaction `xid` with branches branch and branch+1, each holding one row lock.
inline Batch CrashBatch(const std::string& xid, int64_t branch) {
  Batch b;
  GlobalRecord g;
  g.xid = xid;
  g.name = "crash";
  g.begin_time_ms = 1;
  b.Insert(g);
  for (int64_t id : {branch, branch + 1}) {
    BranchRecord br;
    br.xid = xid;
    br.branch_id = id;
    br.resource_id = "db";
    br.lock_keys = "db:t:" + std::to_string(id);
    b.Insert(br).Lock(xid, id, {br.lock_keys});
  }
  return b;
}

}  // namespace dtx::log::testing
