// What the PostgreSQL log store says to PostgreSQL, and how: libpq helpers (errors, binary
// parameters and results, pipeline mode), the schema and its migrations, and the prepared
// statements. Internal to log/; the store itself (groups, retries, reads) is in
// postgres_log_store.cc.
//
// Thread-safety: free functions are thread-safe; a PGconn, Params or Pipeline is used by one
// thread at a time.
#pragma once

#include <libpq-fe.h>

#include <array>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "dtx/common/status.h"
#include "dtx/log/records.h"

namespace dtx::log::pg {

// The SQLSTATEs that the schema's functions raise.
constexpr std::string_view kNotFoundState = "DTX01";
constexpr std::string_view kLockConflictState = "DTX02";

struct ClearResult {
  void operator()(PGresult* r) const { PQclear(r); }
};
using PgResult = std::unique_ptr<PGresult, ClearResult>;
struct FinishConn {
  void operator()(PGconn* c) const { PQfinish(c); }
};
using PgConn = std::unique_ptr<PGconn, FinishConn>;

// libpq's messages end in a newline and may run over several lines.
std::string OneLine(std::string_view text);
std::string ErrorOf(PGconn* c);
std::string ErrorOf(PGconn* c, const PGresult* r);
std::string_view SqlState(const PGresult* r);
bool Succeeded(const PGresult* r);
// Whether a statement's result shows the connection gone: no result where one was due, libpq's
// own errors (they carry no SQLSTATE), connection exceptions, and FATAL errors, after which the
// server hangs up.
bool ConnectionLost(PGconn* c, const PGresult* r);
// A group that PostgreSQL aborted because of another transaction: running it again may succeed.
bool Retryable(const PGresult* r);
Status StatusOf(PGconn* c, const PGresult* r, std::string_view context);

// The wire forms of values: every parameter and result goes in binary format, so nothing is
// escaped or parsed, bytea passes untouched, and text is never cut short at a zero byte (the
// server refuses such text instead).
inline void PutBigEndian(std::string& out, uint64_t v, int bytes) {
  for (int i = bytes - 1; i >= 0; --i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

inline uint64_t GetBigEndian(const char* p, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v = (v << 8) | static_cast<uint8_t>(p[i]);
  return v;
}

constexpr uint32_t kInt4Oid = 23, kTextOid = 25;

// The parameters of one statement. The values it points at must outlive the statement's send.
class Params {
 public:
  Params() = default;
  Params(const Params&) = delete;
  Params& operator=(const Params&) = delete;

  Params& Bytes(std::string_view v) { return Add(v.data() ? v.data() : "", v.size()); }
  Params& Int4(int32_t v) { return Own(Encode(static_cast<uint32_t>(v), 4)); }
  Params& Int8(int64_t v) { return Own(Encode(static_cast<uint64_t>(v), 8)); }
  Params& TextArray(const std::vector<std::string>& v) {
    std::string a = ArrayHeader(kTextOid, v.size());
    for (const auto& s : v) {
      PutBigEndian(a, s.size(), 4);
      a += s;
    }
    return Own(std::move(a));
  }
  Params& Int4Array(const std::vector<int32_t>& v) {
    std::string a = ArrayHeader(kInt4Oid, v.size());
    for (int32_t i : v) {
      PutBigEndian(a, 4, 4);
      PutBigEndian(a, static_cast<uint32_t>(i), 4);
    }
    return Own(std::move(a));
  }

  int size() const { return static_cast<int>(values_.size()); }
  const char* const* values() const { return values_.data(); }
  const int* lengths() const { return lengths_.data(); }
  const int* formats() const { return formats_.data(); }

 private:
  static std::string Encode(uint64_t v, int bytes) {
    std::string s;
    PutBigEndian(s, v, bytes);
    return s;
  }
  // One dimension, no NULLs, lower bound 1 (an empty array has no dimension).
  static std::string ArrayHeader(uint32_t element_oid, size_t n) {
    std::string a;
    PutBigEndian(a, n ? 1 : 0, 4);
    PutBigEndian(a, 0, 4);
    PutBigEndian(a, element_oid, 4);
    if (n) {
      PutBigEndian(a, n, 4);
      PutBigEndian(a, 1, 4);
    }
    return a;
  }
  Params& Own(std::string s) {
    owned_.push_back(std::move(s));  // a deque never moves its elements
    return Add(owned_.back().data(), owned_.back().size());
  }
  Params& Add(const char* data, size_t n) {
    values_.push_back(data);
    lengths_.push_back(static_cast<int>(n));
    formats_.push_back(1);
    return *this;
  }

  std::deque<std::string> owned_;
  std::vector<const char*> values_;
  std::vector<int> lengths_, formats_;
};

std::string Str(const PGresult* r, int row, int col);
int64_t Int8(const PGresult* r, int row, int col);
int32_t Int4(const PGresult* r, int row, int col);

// The columns that the reads select, in this order.
inline constexpr const char* kGlobalColumns =
    "xid, status, name, application, timeout_ms, begin_time_ms, owner_node, application_data, updated_time_ms";
inline constexpr const char* kBranchColumns =
    "branch_id, xid, resource_id, branch_type, status, lock_keys, application_data, client_id, registered_time_ms";
inline constexpr const char* kLockColumns = "row_key, xid, branch_id";
GlobalRecord GlobalAt(const PGresult* r, int row);
BranchRecord BranchAt(const PGresult* r, int row);
RowLock LockAt(const PGresult* r, int row);

// The prepared statements, by name; both connections prepare them all.
enum Stmt {
  kBegin,
  kInsertToken,
  kFenceToken,
  kSetLockTimeout,
  kSavepoint,
  kRelease,
  kRollbackTo,
  kCommit,
  kRollback,
  kInsertGlobal,
  kSetGlobalStatus,
  kInsertBranch,
  kSetBranchStatus,
  kAcquireLocks,
  kReleaseLocks,
  kRemoveGlobal,
  kReadBegin,
  kGetGlobal,
  kGetBranches,
  kGetLocks,
  kAllGlobals,
  kAllBranches,
  kAllLocks,
  kList,
  kFindLocks,
  kFindLocksByPrefix,
  kStmtCount,
};

// clang-format off
inline constexpr std::array<const char*, kStmtCount> kStmtNames = {
    "begin", "insert_token", "fence_token", "set_lock_timeout", "savepoint", "release", "rollback_to",
    "commit", "rollback", "insert_global", "set_global_status", "insert_branch", "set_branch_status",
    "acquire_locks", "release_locks", "remove_global", "read_begin", "get_global", "get_branches", "get_locks",
    "all_globals", "all_branches", "all_locks", "list", "find_locks", "find_locks_by_prefix",
};
// clang-format on

std::array<std::string, kStmtCount> StatementTexts(const std::string& schema);
std::string QuoteIdentifier(const std::string& name);  // REQUIRES: no '"'

// Statements sent in one go and answered in order (libpq pipeline mode): a round trip per Sync.
class Pipeline {
 public:
  explicit Pipeline(PGconn* c) : c_(c) {}

  // Queues a prepared statement; false when the connection failed.
  bool Send(Stmt s, const Params& p = Params()) {
    return PQsendQueryPrepared(c_, kStmtNames[s], p.size(), p.values(), p.lengths(), p.formats(), 1) == 1;
  }
  bool Sync() { return PQpipelineSync(c_) == 1; }

  // The next statement's result: OK, an error, or PGRES_PIPELINE_ABORTED after an earlier error.
  // Null when the connection failed.
  PgResult Next() {
    PgResult r(PQgetResult(c_));
    if (r && PQresultStatus(r.get()) != PGRES_PIPELINE_SYNC) {
      for (int i = 0; i < 8; ++i) {  // a statement's results end with a null
        PgResult extra(PQgetResult(c_));
        if (!extra) break;
      }
    }
    return r;
  }
  // Skips the answers left up to and including the next Sync; false when the connection failed.
  bool SkipToSync() {
    for (int nulls = 0; nulls < 2;) {
      PgResult r(PQgetResult(c_));
      if (!r) {
        if (PQstatus(c_) != CONNECTION_OK) return false;
        ++nulls;
        continue;
      }
      nulls = 0;
      if (PQresultStatus(r.get()) == PGRES_PIPELINE_SYNC) return true;
      if (PQstatus(c_) != CONNECTION_OK) return false;
    }
    return false;  // no Sync was due: the pipeline is out of step
  }

 private:
  PGconn* c_;
};

// Whether an idle connection is still usable. A server that shut down or restarted has closed
// it or said FATAL on it; anything readable on an idle connection means it must be replaced.
bool Alive(PGconn* c);
// Connects and sets the session up, outside pipeline mode.
Result<PgConn> Dial(const std::string& conninfo);
// Prepares every statement and leaves the connection in pipeline mode; the last step of
// connecting, so a lost connection here is one that could not be made.
Status Prepare(PGconn* c, const std::array<std::string, kStmtCount>& texts);
// For the few statements run outside pipeline mode while the schema is set up.
Result<PgResult> Exec(PGconn* c, const std::string& sql, const Params& p = Params());
// Creates the schema, or checks and migrates it, in one transaction under an advisory lock so
// that coordinators starting together take turns.
Status Migrate(PGconn* c, const std::string& schema);

}  // namespace dtx::log::pg
