#include "dtx/log/postgres_log_store.h"

#include <fmt/format.h>
#include <libpq-fe.h>
#include <poll.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cctype>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <random>
#include <thread>

#include "log_store_util.h"

namespace dtx::log {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// The SQLSTATEs that the schema's functions raise.
constexpr std::string_view kNotFoundState = "DTX01";
constexpr std::string_view kLockConflictState = "DTX02";

constexpr std::string_view kNotWritten = "; the batch was not written";
constexpr std::string_view kOutcomeUnknown = "; the outcome of the batch is unknown: it may be in the log";

struct ClearResult {
  void operator()(PGresult* r) const { PQclear(r); }
};
using PgResult = std::unique_ptr<PGresult, ClearResult>;
struct FinishConn {
  void operator()(PGconn* c) const { PQfinish(c); }
};
using PgConn = std::unique_ptr<PGconn, FinishConn>;

// libpq's messages end in a newline and may run over several lines.
std::string OneLine(std::string_view text) {
  std::string out;
  for (char ch : text) {
    if (ch == '\n' || ch == '\t' || ch == '\r') ch = ' ';
    if (ch == ' ' && (out.empty() || out.back() == ' ')) continue;
    out.push_back(ch);
  }
  while (!out.empty() && out.back() == ' ') out.pop_back();
  return out;
}

std::string ErrorOf(PGconn* c) { return OneLine(PQerrorMessage(c)); }

std::string ErrorOf(PGconn* c, const PGresult* r) {
  if (!r) return ErrorOf(c);
  const char* primary = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
  return OneLine(primary ? primary : PQresultErrorMessage(r));
}

std::string_view SqlState(const PGresult* r) {
  const char* state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : nullptr;
  return state ? state : "";
}

bool Succeeded(const PGresult* r) {
  return r && (PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK);
}

// Whether a statement's result shows the connection gone: no result where one was due, libpq's
// own errors (they carry no SQLSTATE), connection exceptions, and FATAL errors, after which the
// server hangs up.
bool ConnectionLost(PGconn* c, const PGresult* r) {
  if (Succeeded(r)) return false;
  if (!r || PQstatus(c) != CONNECTION_OK || SqlState(r).empty() || SqlState(r).starts_with("08")) return true;
  const char* severity = PQresultErrorField(r, PG_DIAG_SEVERITY_NONLOCALIZED);
  return severity && (std::strcmp(severity, "FATAL") == 0 || std::strcmp(severity, "PANIC") == 0);
}

// A group that PostgreSQL aborted because of another transaction: running it again may succeed.
bool Retryable(const PGresult* r) {
  const std::string_view state = SqlState(r);
  return state == "40001" || state == "40P01" || state == "55P03";
}

Status StatusOf(PGconn* c, const PGresult* r, std::string_view context) {
  const std::string_view state = SqlState(r);
  std::string message = std::string(context) + ErrorOf(c, r);
  if (!state.empty()) message += " (SQLSTATE " + std::string(state) + ")";
  if (state.starts_with("22") || state.starts_with("54")) return InvalidArgument(std::move(message));
  if (state.starts_with("53")) return ResourceExhausted(std::move(message));
  if (state == "42501") return {StatusCode::kPermissionDenied, std::move(message)};
  return IOError(std::move(message));
}

// The wire forms of values: every parameter and result goes in binary format, so nothing is
// escaped or parsed, bytea passes untouched, and text is never cut short at a zero byte (the
// server refuses such text instead).
void PutBigEndian(std::string& out, uint64_t v, int bytes) {
  for (int i = bytes - 1; i >= 0; --i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

uint64_t GetBigEndian(const char* p, int bytes) {
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

std::string Str(const PGresult* r, int row, int col) {
  return std::string(PQgetvalue(r, row, col), PQgetlength(r, row, col));
}
int64_t Int8(const PGresult* r, int row, int col) {
  return PQgetlength(r, row, col) == 8 ? static_cast<int64_t>(GetBigEndian(PQgetvalue(r, row, col), 8)) : 0;
}
int32_t Int4(const PGresult* r, int row, int col) {
  return PQgetlength(r, row, col) == 4 ? static_cast<int32_t>(GetBigEndian(PQgetvalue(r, row, col), 4)) : 0;
}

// The columns that the reads select, in this order.
constexpr const char* kGlobalColumns =
    "xid, status, name, application, timeout_ms, begin_time_ms, owner_node, application_data, updated_time_ms";
constexpr const char* kBranchColumns =
    "branch_id, xid, resource_id, branch_type, status, lock_keys, application_data, client_id, registered_time_ms";
constexpr const char* kLockColumns = "row_key, xid, branch_id";

GlobalRecord GlobalAt(const PGresult* r, int row) {
  GlobalRecord g;
  g.xid = Str(r, row, 0);
  g.status = static_cast<GlobalStatus>(Int4(r, row, 1));
  g.name = Str(r, row, 2);
  g.application = Str(r, row, 3);
  g.timeout_ms = Int8(r, row, 4);
  g.begin_time_ms = Int8(r, row, 5);
  g.owner_node = Str(r, row, 6);
  g.application_data = Str(r, row, 7);
  g.updated_time_ms = Int8(r, row, 8);
  return g;
}

BranchRecord BranchAt(const PGresult* r, int row) {
  BranchRecord b;
  b.branch_id = Int8(r, row, 0);
  b.xid = Str(r, row, 1);
  b.resource_id = Str(r, row, 2);
  b.type = static_cast<BranchType>(Int4(r, row, 3));
  b.status = static_cast<BranchStatus>(Int4(r, row, 4));
  b.lock_keys = Str(r, row, 5);
  b.application_data = Str(r, row, 6);
  b.client_id = Str(r, row, 7);
  b.registered_time_ms = Int8(r, row, 8);
  return b;
}

RowLock LockAt(const PGresult* r, int row) { return {Str(r, row, 0), Str(r, row, 1), Int8(r, row, 2)}; }

// Version 1 of the schema (docs/log-format.md). The functions raise DTX01 for a missing transaction or branch and
// DTX02 for a lock conflict, so that a failing batch stops the pipeline right where it fails.
// A row lock is taken with INSERT ... ON CONFLICT DO NOTHING and then read back: under READ
// COMMITTED each statement sees what other coordinators committed meanwhile, and a key that its
// holder released between the two statements is tried again.
constexpr const char* kSchemaV1 = R"sql(
CREATE TABLE {s}.dtx_meta (
  key text PRIMARY KEY,
  value text NOT NULL);

CREATE TABLE {s}.dtx_global (
  xid text COLLATE "C" PRIMARY KEY,
  status integer NOT NULL,
  name text NOT NULL,
  application text NOT NULL,
  timeout_ms bigint NOT NULL,
  begin_time_ms bigint NOT NULL,
  owner_node text NOT NULL,
  application_data bytea NOT NULL,
  updated_time_ms bigint NOT NULL);
CREATE INDEX dtx_global_status ON {s}.dtx_global (status, begin_time_ms);

CREATE TABLE {s}.dtx_branch (
  xid text COLLATE "C" NOT NULL REFERENCES {s}.dtx_global (xid) ON DELETE CASCADE,
  branch_id bigint NOT NULL,
  resource_id text NOT NULL,
  branch_type integer NOT NULL,
  status integer NOT NULL,
  lock_keys text NOT NULL,
  application_data bytea NOT NULL,
  client_id text NOT NULL,
  registered_time_ms bigint NOT NULL,
  PRIMARY KEY (xid, branch_id));

CREATE TABLE {s}.dtx_row_lock (
  row_key text COLLATE "C" PRIMARY KEY,
  xid text COLLATE "C" NOT NULL REFERENCES {s}.dtx_global (xid) ON DELETE CASCADE,
  branch_id bigint NOT NULL);
CREATE INDEX dtx_row_lock_xid ON {s}.dtx_row_lock (xid);

-- One row per group transaction, written by the group itself: a writer that lost the answer to
-- its COMMIT looks for the row to learn whether the group committed (see AskCommitted).
CREATE TABLE {s}.dtx_commit_token (
  token text COLLATE "C" PRIMARY KEY,
  created_at timestamptz NOT NULL DEFAULT now());

CREATE FUNCTION {s}.dtx_set_global_status(p_xid text, p_status integer, p_updated_time_ms bigint)
RETURNS void LANGUAGE plpgsql AS $fn$
BEGIN
  UPDATE {s}.dtx_global
     SET status = p_status,
         updated_time_ms = CASE WHEN p_updated_time_ms <> 0 THEN p_updated_time_ms ELSE updated_time_ms END
   WHERE xid = p_xid;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'no transaction % in the log', p_xid USING ERRCODE = 'DTX01';
  END IF;
END
$fn$;

CREATE FUNCTION {s}.dtx_set_branch_status(p_xid text, p_branch_id bigint, p_status integer)
RETURNS void LANGUAGE plpgsql AS $fn$
BEGIN
  UPDATE {s}.dtx_branch SET status = p_status WHERE xid = p_xid AND branch_id = p_branch_id;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'no branch % of % in the log', p_branch_id, p_xid USING ERRCODE = 'DTX01';
  END IF;
END
$fn$;

CREATE FUNCTION {s}.dtx_acquire_locks(p_xid text, p_branch_id bigint, p_keys text[])
RETURNS void LANGUAGE plpgsql AS $fn$
DECLARE
  held record;
BEGIN
  PERFORM 1 FROM {s}.dtx_global WHERE xid = p_xid;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'no transaction % in the log', p_xid USING ERRCODE = 'DTX01';
  END IF;
  LOOP
    -- In key order, so that transactions taking overlapping keys queue rather than deadlock.
    INSERT INTO {s}.dtx_row_lock (row_key, xid, branch_id)
      SELECT k, p_xid, p_branch_id FROM unnest(p_keys) AS k ORDER BY k COLLATE "C"
      ON CONFLICT (row_key) DO NOTHING;
    -- The first key, in the caller's order, that p_xid does not hold.
    SELECT k.n, l.xid, l.branch_id INTO held
      FROM unnest(p_keys) WITH ORDINALITY AS k(row_key, n)
      LEFT JOIN {s}.dtx_row_lock l ON l.row_key = k.row_key
     WHERE l.xid IS DISTINCT FROM p_xid
     ORDER BY k.n
     LIMIT 1;
    IF NOT FOUND THEN
      RETURN;
    END IF;
    IF held.xid IS NOT NULL THEN
      RAISE EXCEPTION 'row lock % is held by %', p_keys[held.n::integer], held.xid
        USING ERRCODE = 'DTX02', DETAIL = held.n || ' ' || held.branch_id || ' ' || held.xid;
    END IF;
    -- Its holder released it between the insert and the check: take it now.
  END LOOP;
END
$fn$;

INSERT INTO {s}.dtx_meta (key, value) VALUES ('schema_version', '1');
)sql";

// The steps from each older version to the next: kMigrations[0] takes version 1 to 2, and so on.
constexpr std::array<const char*, PostgresLogStore::kSchemaVersion - 1> kMigrations = {};

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
  kStmtCount,
};

// clang-format off
constexpr std::array<const char*, kStmtCount> kStmtNames = {
    "begin", "insert_token", "fence_token", "set_lock_timeout", "savepoint", "release", "rollback_to",
    "commit", "rollback", "insert_global", "set_global_status", "insert_branch", "set_branch_status",
    "acquire_locks", "release_locks", "remove_global", "read_begin", "get_global", "get_branches", "get_locks",
    "all_globals", "all_branches", "all_locks", "list", "find_locks",
};
// clang-format on

std::array<std::string, kStmtCount> StatementTexts(const std::string& s) {
  auto f = [&](const char* text) {
    return fmt::format(fmt::runtime(text), fmt::arg("s", s), fmt::arg("g", kGlobalColumns),
                       fmt::arg("b", kBranchColumns), fmt::arg("l", kLockColumns));
  };
  std::array<std::string, kStmtCount> t;
  t[kBegin] = "BEGIN ISOLATION LEVEL READ COMMITTED";
  // The group's token, and the tokens of groups that committed before it, which nobody needs now.
  t[kInsertToken] =
      f("WITH done AS (DELETE FROM {s}.dtx_commit_token WHERE token = ANY($2::text[]))"
        " INSERT INTO {s}.dtx_commit_token (token) VALUES ($1::text)");
  t[kFenceToken] = f("INSERT INTO {s}.dtx_commit_token (token) VALUES ($1::text) ON CONFLICT (token) DO NOTHING");
  t[kSetLockTimeout] = "SELECT set_config('lock_timeout', $1::text, false)";
  t[kSavepoint] = "SAVEPOINT batch";
  t[kRelease] = "RELEASE SAVEPOINT batch";
  t[kRollbackTo] = "ROLLBACK TO SAVEPOINT batch";
  t[kCommit] = "COMMIT";
  t[kRollback] = "ROLLBACK";
  t[kInsertGlobal] = f(
      "INSERT INTO {s}.dtx_global ({g}) VALUES ($1::text, $2::int4, $3::text, $4::text, $5::int8, $6::int8, $7::text, "
      "$8::bytea, $9::int8)");
  t[kSetGlobalStatus] = f("SELECT {s}.dtx_set_global_status($1::text, $2::int4, $3::int8)");
  t[kInsertBranch] =
      f("INSERT INTO {s}.dtx_branch ({b}) VALUES ($1::int8, $2::text, $3::text, $4::int4, $5::int4, $6::text, "
        "$7::bytea, $8::text, $9::int8)");
  t[kSetBranchStatus] = f("SELECT {s}.dtx_set_branch_status($1::text, $2::int8, $3::int4)");
  t[kAcquireLocks] = f("SELECT {s}.dtx_acquire_locks($1::text, $2::int8, $3::text[])");
  t[kReleaseLocks] = f("DELETE FROM {s}.dtx_row_lock WHERE xid = $1::text");
  t[kRemoveGlobal] = f("DELETE FROM {s}.dtx_global WHERE xid = $1::text");  // branches and locks cascade
  t[kReadBegin] = "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY";
  t[kGetGlobal] = f("SELECT {g} FROM {s}.dtx_global WHERE xid = $1::text");
  t[kGetBranches] = f("SELECT {b} FROM {s}.dtx_branch WHERE xid = $1::text ORDER BY branch_id");
  t[kGetLocks] = f("SELECT {l} FROM {s}.dtx_row_lock WHERE xid = $1::text ORDER BY row_key");
  t[kAllGlobals] = f("SELECT {g} FROM {s}.dtx_global ORDER BY xid");
  t[kAllBranches] = f("SELECT {b} FROM {s}.dtx_branch ORDER BY xid, branch_id");
  t[kAllLocks] = f("SELECT {l} FROM {s}.dtx_row_lock ORDER BY xid, row_key");
  t[kList] =
      f("SELECT {g} FROM {s}.dtx_global WHERE xid > $1::text"
        " AND (cardinality($2::int4[]) = 0 OR status = ANY($2::int4[]))"
        " AND ($3::int8 = 0 OR begin_time_ms < $3::int8) ORDER BY xid LIMIT $4::int8");
  t[kFindLocks] =
      f("SELECT l.row_key, l.xid, l.branch_id FROM unnest($1::text[]) WITH ORDINALITY AS k(row_key, n)"
        " JOIN {s}.dtx_row_lock l ON l.row_key = k.row_key ORDER BY k.n");
  return t;
}

std::string QuoteIdentifier(const std::string& name) { return "\"" + name + "\""; }  // REQUIRES: no '"'

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
bool Alive(PGconn* c) {
  if (PQstatus(c) != CONNECTION_OK) return false;
  pollfd p{PQsocket(c), POLLIN, 0};
  return poll(&p, 1, 0) == 0;
}

// Connects and sets the session up, outside pipeline mode.
Result<PgConn> Dial(const std::string& conninfo) {
  // Defaults come before the caller's conninfo (which dbname expands) so that it overrides them.
  const char* keys[] = {
      "connect_timeout",  "keepalives",       "keepalives_idle", "keepalives_interval", "keepalives_count",
      "tcp_user_timeout", "application_name", "dbname",          "client_encoding",     nullptr};
  const char* values[] = {"10", "1", "10", "5", "4", "30000", "dtx-coordinator", conninfo.c_str(), "UTF8", nullptr};
  PgConn c(PQconnectdbParams(keys, values, 1));
  if (!c) return Unavailable("cannot connect to PostgreSQL: out of memory");
  if (PQstatus(c.get()) != CONNECTION_OK) return Unavailable("cannot connect to PostgreSQL: " + ErrorOf(c.get()));
  // A coordinator cut off in the middle of a group must not hold its row locks for long; and an
  // acknowledged batch must be durable whatever the server's default.
  PgResult r(PQexec(c.get(),
                    "SET idle_in_transaction_session_timeout = '30s';"
                    "SELECT set_config('synchronous_commit', 'on', false)"
                    " WHERE current_setting('synchronous_commit') = 'off'"));
  if (!Succeeded(r.get()))
    return Unavailable("cannot connect to PostgreSQL: setting up the session: " + ErrorOf(c.get(), r.get()));
  return c;
}

// Prepares every statement and leaves the connection in pipeline mode; the last step of
// connecting, so a lost connection here is one that could not be made.
Status Prepare(PGconn* c, const std::array<std::string, kStmtCount>& texts) {
  auto lost = [&](const PGresult* r) {
    return Unavailable("cannot connect to PostgreSQL: preparing statements: " + ErrorOf(c, r));
  };
  if (PQenterPipelineMode(c) != 1) return lost(nullptr);
  for (int s = 0; s < kStmtCount; ++s) {
    if (PQsendPrepare(c, kStmtNames[s], texts[s].c_str(), 0, nullptr) != 1) return lost(nullptr);
  }
  if (PQpipelineSync(c) != 1) return lost(nullptr);
  Pipeline p(c);
  Status first_error;
  for (int s = 0; s < kStmtCount; ++s) {
    PgResult r = p.Next();
    if (!r || ConnectionLost(c, r.get())) return lost(r.get());
    if (!Succeeded(r.get()) && first_error.ok())
      first_error = StatusOf(c, r.get(), std::string("preparing ") + kStmtNames[s] + ": ");
  }
  if (!p.SkipToSync()) return lost(nullptr);
  return first_error;
}

// For the few statements run outside pipeline mode while the schema is set up.
Result<PgResult> Exec(PGconn* c, const std::string& sql, const Params& p = Params()) {
  PgResult r(PQexecParams(c, sql.c_str(), p.size(), nullptr, p.values(), p.lengths(), p.formats(), 1));
  if (ConnectionLost(c, r.get())) return Unavailable("lost connection to PostgreSQL: " + ErrorOf(c, r.get()));
  if (!Succeeded(r.get())) return StatusOf(c, r.get(), "");
  return r;
}

// Creates the schema, or checks and migrates it, in one transaction under an advisory lock so
// that coordinators starting together take turns.
Status Migrate(PGconn* c, const std::string& schema) {
  const std::string s = QuoteIdentifier(schema);
  auto run = [&]() -> Status {
    DTX_RETURN_IF_ERROR(Exec(c, "BEGIN").status());
    DTX_RETURN_IF_ERROR(
        Exec(c, "SELECT pg_advisory_xact_lock(1685354528 /* 'dtx ' */, hashtext($1::text))", Params().Bytes(schema))
            .status());
    auto meta = Exec(c, "SELECT to_regclass($1::text) IS NOT NULL", Params().Bytes(s + ".dtx_meta"));
    DTX_RETURN_IF_ERROR(meta.status());
    if (PQgetvalue(meta->get(), 0, 0)[0] == 0) {
      auto exists = Exec(c, "SELECT 1 FROM pg_namespace WHERE nspname = $1::text", Params().Bytes(schema));
      DTX_RETURN_IF_ERROR(exists.status());
      if (PQntuples(exists->get()) == 0) DTX_RETURN_IF_ERROR(Exec(c, "CREATE SCHEMA " + s).status());
      PgResult r(PQexec(c, fmt::format(fmt::runtime(kSchemaV1), fmt::arg("s", s)).c_str()));
      if (!Succeeded(r.get())) return StatusOf(c, r.get(), "");
      SPDLOG_INFO("log: created the PostgreSQL schema {} (version {})", schema, PostgresLogStore::kSchemaVersion);
    } else {
      auto version = Exec(c, "SELECT value FROM " + s + ".dtx_meta WHERE key = 'schema_version'");
      DTX_RETURN_IF_ERROR(version.status());
      if (PQntuples(version->get()) == 0) return Corruption(s + ".dtx_meta has no schema_version");
      const std::string v = Str(version->get(), 0, 0);
      char* end = nullptr;
      const long n = std::strtol(v.c_str(), &end, 10);
      if (v.empty() || end != v.c_str() + v.size() || n < 1)
        return Corruption("schema_version \"" + v + "\" is not a version");
      if (n > PostgresLogStore::kSchemaVersion)
        return FailedPrecondition("it has schema version " + v + ", newer than this build of dtx knows (" +
                                  std::to_string(PostgresLogStore::kSchemaVersion) + "): upgrade dtx");
      for (long from = n; from < PostgresLogStore::kSchemaVersion; ++from) {
        PgResult r(PQexec(c, fmt::format(fmt::runtime(kMigrations[from - 1]), fmt::arg("s", s)).c_str()));
        if (!Succeeded(r.get())) return StatusOf(c, r.get(), "migrating from version " + std::to_string(from) + ": ");
      }
      if (n < PostgresLogStore::kSchemaVersion) {
        DTX_RETURN_IF_ERROR(Exec(c, "UPDATE " + s + ".dtx_meta SET value = $1::text WHERE key = 'schema_version'",
                                 Params().Bytes(std::to_string(PostgresLogStore::kSchemaVersion)))
                                .status());
        SPDLOG_INFO("log: migrated the PostgreSQL schema {} from version {} to {}", schema, n,
                    PostgresLogStore::kSchemaVersion);
      }
    }
    // Tokens left by groups that nobody will ask after any more (a writer asks for seconds).
    DTX_RETURN_IF_ERROR(
        Exec(c, "DELETE FROM " + s + ".dtx_commit_token WHERE created_at < now() - interval '1 day'").status());
    return Exec(c, "COMMIT").status();
  };
  Status st = run();
  if (!st.ok()) PQclear(PQexec(c, "ROLLBACK"));
  return st.WithContext("opening the log schema " + schema);
}

// A lost connection's Status, from the connection and the result that showed it.
Status Lost(PGconn* c, const PGresult* r, std::string_view outcome) {
  return Unavailable("lost connection to PostgreSQL: " + ErrorOf(c, r) + std::string(outcome));
}

// Sends one operation of a batch.
bool SendOp(Pipeline& p, const Batch::Op& op) {
  return std::visit(Overloaded{
                        [&](const Batch::InsertGlobal& o) {
                          const GlobalRecord& g = o.record;
                          return p.Send(kInsertGlobal, Params()
                                                           .Bytes(g.xid)
                                                           .Int4(static_cast<int32_t>(g.status))
                                                           .Bytes(g.name)
                                                           .Bytes(g.application)
                                                           .Int8(g.timeout_ms)
                                                           .Int8(g.begin_time_ms)
                                                           .Bytes(g.owner_node)
                                                           .Bytes(g.application_data)
                                                           .Int8(g.updated_time_ms));
                        },
                        [&](const Batch::SetGlobalStatus& o) {
                          return p.Send(
                              kSetGlobalStatus,
                              Params().Bytes(o.xid).Int4(static_cast<int32_t>(o.status)).Int8(o.updated_time_ms));
                        },
                        [&](const Batch::InsertBranch& o) {
                          const BranchRecord& b = o.record;
                          return p.Send(kInsertBranch, Params()
                                                           .Int8(b.branch_id)
                                                           .Bytes(b.xid)
                                                           .Bytes(b.resource_id)
                                                           .Int4(static_cast<int32_t>(b.type))
                                                           .Int4(static_cast<int32_t>(b.status))
                                                           .Bytes(b.lock_keys)
                                                           .Bytes(b.application_data)
                                                           .Bytes(b.client_id)
                                                           .Int8(b.registered_time_ms));
                        },
                        [&](const Batch::SetBranchStatus& o) {
                          return p.Send(kSetBranchStatus,
                                        Params().Bytes(o.xid).Int8(o.branch_id).Int4(static_cast<int32_t>(o.status)));
                        },
                        [&](const Batch::AcquireLocks& o) {
                          return p.Send(kAcquireLocks, Params().Bytes(o.xid).Int8(o.branch_id).TextArray(o.row_keys));
                        },
                        [&](const Batch::ReleaseLocks& o) { return p.Send(kReleaseLocks, Params().Bytes(o.xid)); },
                        [&](const Batch::RemoveGlobal& o) { return p.Send(kRemoveGlobal, Params().Bytes(o.xid)); },
                    },
                    op);
}

// What a failed operation means for its batch, in the memory store's words.
WriteResult OpFailure(PGconn* c, const Batch::Op& op, const PGresult* r) {
  const std::string_view state = SqlState(r);
  std::optional<Status> status =
      std::visit(Overloaded{
                     [&](const Batch::InsertGlobal& o) -> std::optional<Status> {
                       if (state == "23505") return AlreadyExists(o.record.xid);
                       return std::nullopt;
                     },
                     [&](const Batch::SetGlobalStatus& o) -> std::optional<Status> {
                       if (state == kNotFoundState) return NoSuchTransaction(o.xid);
                       return std::nullopt;
                     },
                     [&](const Batch::InsertBranch& o) -> std::optional<Status> {
                       if (state == "23505") return AlreadyExists("branch " + std::to_string(o.record.branch_id));
                       if (state == "23503") return NoSuchTransaction(o.record.xid);
                       return std::nullopt;
                     },
                     [&](const Batch::SetBranchStatus& o) -> std::optional<Status> {
                       if (state == kNotFoundState) return NoSuchBranch(o.xid, o.branch_id);
                       return std::nullopt;
                     },
                     [&](const Batch::AcquireLocks& o) -> std::optional<Status> {
                       if (state == kNotFoundState || state == "23503") return NoSuchTransaction(o.xid);
                       return std::nullopt;
                     },
                     [&](const auto&) -> std::optional<Status> { return std::nullopt; },
                 },
                 op);
  if (status) return {*status, std::nullopt};
  const auto* lock = std::get_if<Batch::AcquireLocks>(&op);
  const char* detail = PQresultErrorField(r, PG_DIAG_MESSAGE_DETAIL);
  if (lock && state == kLockConflictState && detail) {
    // DETAIL is "<index of the key, from 1> <holder's branch id> <holder's xid>".
    char* end = nullptr;
    const long index = std::strtol(detail, &end, 10);
    const long long branch = std::strtoll(end, &end, 10);
    if (index >= 1 && static_cast<size_t>(index) <= lock->row_keys.size() && *end == ' ')
      return LockConflictResult(RowLock{lock->row_keys[index - 1], end + 1, branch});
  }
  return {StatusOf(c, r, "PostgreSQL rejected the batch: "), std::nullopt};
}

}  // namespace

struct PostgresLogStore::Impl {
  struct Pending {
    Batch batch;
    WriteCallback done;
    std::optional<WriteResult> failed;  // the batch failed alone and was rolled back to its savepoint
  };

  // How one attempt at a group ended.
  struct GroupEnd {
    enum Kind { kCommitted, kRetry, kFailed, kLost } kind;
    Status status;                   // kRetry, kFailed, kLost: why
    bool commit_maybe_sent = false;  // kLost: COMMIT may have run
  };

  PostgresOptions options;
  std::array<std::string, kStmtCount> statements;

  std::mutex mu;
  std::condition_variable queue_changed;
  std::deque<Pending> queue;  // guarded by mu
  bool closed = false;        // guarded by mu
  std::thread writer_thread;

  // Callbacks run on a thread of their own, group by group in commit order, so that the writer
  // sends the next group while the callbacks of the last one run.
  using Completions = std::vector<std::pair<WriteCallback, WriteResult>>;
  std::mutex done_mu;
  std::condition_variable done_changed;
  std::deque<Completions> done_queue;  // guarded by done_mu
  bool writer_finished = false;        // guarded by done_mu
  std::thread completer_thread;
  std::thread::id completer_id;  // set before the store is handed out

  std::mutex join_mu;  // one Close joins the threads

  // The writer thread's own.
  PgConn writer;
  milliseconds backoff{0};
  Clock::time_point next_connect{};
  std::string connect_error;
  std::mt19937_64 random{std::random_device{}()};
  std::vector<std::string> done_tokens;  // of groups that committed: the next group deletes them

  std::mutex reader_mu;
  PgConn reader;  // guarded by reader_mu

  std::atomic<uint64_t> commits{0}, batches{0}, failed_batches{0};

  Result<PgConn> Connect() {
    auto c = Dial(options.conninfo);
    if (!c.ok()) return c.status();
    DTX_RETURN_IF_ERROR(Prepare(c->get(), statements));
    return std::move(*c);
  }

  // ---- Writes, on the writer thread.

  void WriterLoop() {
    std::vector<Pending> group;
    while (true) {
      {
        std::unique_lock lock(mu);
        queue_changed.wait(lock, [&] { return !queue.empty() || closed; });
        if (queue.empty()) break;
        const size_t n = std::min(queue.size(), options.max_group);
        for (size_t i = 0; i < n; ++i) group.push_back(std::move(queue[i]));
        queue.erase(queue.begin(), queue.begin() + n);
      }
      Completions done = CommitGroup(group);
      group.clear();
      std::lock_guard lock(done_mu);
      done_queue.push_back(std::move(done));
      done_changed.notify_one();
    }
    writer.reset();
    std::lock_guard lock(done_mu);
    writer_finished = true;
    done_changed.notify_one();
  }

  void CompleterLoop() {
    while (true) {
      Completions done;
      {
        std::unique_lock lock(done_mu);
        done_changed.wait(lock, [&] { return !done_queue.empty() || writer_finished; });
        if (done_queue.empty()) return;
        done = std::move(done_queue.front());
        done_queue.pop_front();
      }
      for (const auto& [callback, result] : done) callback(result);
    }
  }

  // Commits the group; returns each batch's callback with its result, in queue order.
  Completions CommitGroup(std::vector<Pending>& group) {
    std::optional<Status> group_failure;  // every batch failed with it
    bool reconnected = false;
    for (int attempt = 0;; ++attempt) {
      for (auto& p : group) p.failed.reset();
      if (!WriterReady()) {
        group_failure = Unavailable("cannot connect to PostgreSQL: " + connect_error + std::string(kNotWritten));
        break;
      }
      const std::string token = fmt::format("{:016x}{:016x}", random(), random());
      GroupEnd end = RunGroup(group, token);
      if (end.kind == GroupEnd::kCommitted) {
        done_tokens = {token};
        break;
      }
      if (end.kind == GroupEnd::kRetry && attempt < options.max_group_retries) {
        SPDLOG_DEBUG("log: PostgreSQL aborted a group of {} batches ({}); retrying", group.size(),
                     end.status.message());
        std::this_thread::sleep_for(milliseconds(1 + random() % (2 << std::min(attempt, 6))));
        continue;
      }
      if (end.kind == GroupEnd::kRetry) {
        group_failure =
            Unavailable("PostgreSQL aborted the group commit " + std::to_string(attempt + 1) +
                        " times, the last for: " + std::string(end.status.message()) + std::string(kNotWritten));
        break;
      }
      if (end.kind == GroupEnd::kFailed) {
        group_failure = Status(end.status.code(), std::string(end.status.message()) + std::string(kNotWritten));
        break;
      }
      // Lost the connection.
      SPDLOG_WARN("log: {}", end.status.message());
      writer.reset();
      if (!end.commit_maybe_sent && !reconnected) {
        reconnected = true;  // nothing of the group landed: try it once more on a new connection
        continue;
      }
      const std::optional<bool> committed = end.commit_maybe_sent ? AskCommitted(token) : false;
      if (!committed) {
        group_failure = Unavailable(std::string(end.status.message()) + std::string(kOutcomeUnknown));
      } else if (!*committed) {
        group_failure = Unavailable(std::string(end.status.message()) + std::string(kNotWritten));
      } else {
        done_tokens = {token};
      }
      break;
    }
    Completions done;
    done.reserve(group.size());
    for (auto& p : group) {
      WriteResult r = group_failure ? WriteResult{*group_failure, std::nullopt} : p.failed.value_or(WriteResult{});
      ++(r.ok() ? batches : failed_batches);
      done.emplace_back(std::move(p.done), std::move(r));
    }
    if (!group_failure) ++commits;
    return done;
  }

  // Whether the writer has a live connection, making one if the backoff allows.
  bool WriterReady() {
    if (writer && Alive(writer.get())) return true;
    writer.reset();
    const auto now = Clock::now();
    if (now < next_connect) return false;
    auto c = Connect();
    if (!c.ok()) {
      backoff = std::clamp(backoff * 2, milliseconds(100), std::max(options.reconnect_backoff_max, milliseconds(100)));
      next_connect = now + backoff;
      constexpr std::string_view kPrefix = "cannot connect to PostgreSQL: ";
      connect_error = std::string(c.status().message());
      if (connect_error.starts_with(kPrefix)) connect_error.erase(0, kPrefix.size());
      SPDLOG_WARN("log: cannot connect to PostgreSQL: {}; next attempt in {} ms", connect_error, backoff.count());
      return false;
    }
    if (backoff.count()) SPDLOG_INFO("log: connected to PostgreSQL again");
    backoff = milliseconds(0);
    writer = std::move(*c);
    return true;
  }

  // Whether the group that wrote `token` committed, asked on new connections for up to
  // options.outcome_timeout; nullopt if PostgreSQL could not say.
  //
  // We insert the token ourselves. If the group committed, its row is there and our insert does
  // nothing; if the group is still open, the insert waits for it to end; if it never committed,
  // our row lands and fences it: were the old session ever to write the token, the unique key
  // would fail it, so it cannot commit after we have answered. (A transaction id would not do:
  // after a crash, a server reuses the ids of transactions that never reached its disk.)
  std::optional<bool> AskCommitted(const std::string& token) {
    const auto deadline = Clock::now() + options.outcome_timeout;
    milliseconds wait(50);
    while (true) {
      if (auto c = Connect(); c.ok()) {
        // A connection of its own: the lock timeout set here must not stay on the writer's.
        Pipeline p(c->get());
        const auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now());
        const std::string timeout = std::to_string(std::max<int64_t>(left.count(), 1)) + "ms";
        if (p.Send(kSetLockTimeout, Params().Bytes(timeout)) && p.Send(kFenceToken, Params().Bytes(token)) &&
            p.Sync()) {
          PgResult set = p.Next();
          PgResult fence = p.Next();
          if (Succeeded(fence.get()) && p.SkipToSync()) {
            const bool committed = std::string_view(PQcmdTuples(fence.get())) == "0";
            SPDLOG_INFO("log: the group whose COMMIT answer was lost {}", committed ? "committed" : "did not commit");
            return committed;
          }
        }
      }
      if (Clock::now() + wait > deadline) return std::nullopt;
      std::this_thread::sleep_for(wait);
      wait = std::min(wait * 2, milliseconds(1000));
    }
  }

  // One attempt at the group, in a single transaction: BEGIN, the group's token, then each
  // batch between SAVEPOINT and RELEASE, then COMMIT, all in one pipeline. An error stops the
  // pipeline where it occurs: the failing batch is rolled back to its savepoint and the batches
  // after it go out again.
  GroupEnd RunGroup(std::vector<Pending>& group, const std::string& token) {
    PGconn* c = writer.get();
    Pipeline p(c);
    GroupEnd lost{GroupEnd::kLost};
    // A broken connection while sending, or a result that shows it was lost.
    auto connection_lost = [&](const PGresult* r) {
      lost.status = Lost(c, r, "");
      return lost;
    };
    // Ends the attempt on an error outside a batch's own (or a deadlock inside one): the
    // transaction is rolled back; any COMMIT queued after the error was skipped.
    auto abort_group = [&](const PGresult* r, bool at_commit = false) {
      if (!r || ConnectionLost(c, r)) {
        // A server that said FATAL before COMMIT ran nothing after it; libpq's own errors tell us
        // nothing of how far the server got.
        if (r && !SqlState(r).empty() && !at_commit) lost.commit_maybe_sent = false;
        return connection_lost(r);
      }
      lost.commit_maybe_sent = false;
      GroupEnd end{Retryable(r) ? GroupEnd::kRetry : GroupEnd::kFailed,
                   StatusOf(c, r, "PostgreSQL failed the group commit: ")};
      if (!p.SkipToSync() || !p.Send(kRollback) || !p.Sync() || !p.SkipToSync()) return connection_lost(nullptr);
      return end;
    };

    size_t next = 0;  // the first batch of this round
    bool first = true, rollback_to = false;
    while (true) {
      bool sent = true;
      if (first) sent = p.Send(kBegin) && p.Send(kInsertToken, Params().Bytes(token).TextArray(done_tokens));
      if (rollback_to) sent = sent && p.Send(kRollbackTo) && p.Send(kRelease);
      for (size_t i = next; sent && i < group.size(); ++i) {
        sent = p.Send(kSavepoint);
        for (const auto& op : group[i].batch.ops()) sent = sent && SendOp(p, op);
        sent = sent && p.Send(kRelease);
      }
      if (sent) {
        lost.commit_maybe_sent = true;  // from here on the server may commit whatever we learn
        sent = p.Send(kCommit) && p.Sync();
      }
      if (!sent) return connection_lost(nullptr);

      for (int i = 0; i < (first ? 2 : 0) + (rollback_to ? 2 : 0); ++i) {
        PgResult r = p.Next();
        if (!Succeeded(r.get())) return abort_group(r.get());
      }
      first = rollback_to = false;

      std::optional<size_t> failed;
      for (size_t i = next; !failed && i < group.size(); ++i) {
        PgResult r = p.Next();  // SAVEPOINT
        if (!Succeeded(r.get())) return abort_group(r.get());
        for (const auto& op : group[i].batch.ops()) {
          r = p.Next();
          if (Succeeded(r.get())) continue;
          if (!r || ConnectionLost(c, r.get()) || Retryable(r.get())) return abort_group(r.get());
          group[i].failed = OpFailure(c, op, r.get());
          failed = i;
          break;
        }
        if (failed) break;
        r = p.Next();  // RELEASE
        if (!Succeeded(r.get())) return abort_group(r.get());
      }
      if (failed) {
        lost.commit_maybe_sent = false;  // the pipeline skips what follows an error, COMMIT too
        if (!p.SkipToSync()) return connection_lost(nullptr);
        next = *failed + 1;
        rollback_to = true;
        continue;
      }
      PgResult commit = p.Next();
      if (!Succeeded(commit.get())) return abort_group(commit.get(), true);
      if (!p.SkipToSync()) writer.reset();  // committed all the same; the next group reconnects
      return {GroupEnd::kCommitted};
    }
  }

  // ---- Reads, on the callers' threads, one at a time on the reader connection.

  // Runs `read` on the reader connection, connecting first if need be; if the connection turns
  // out lost, tries once more on a new one.
  template <class T>
  Result<T> Read(const std::function<Result<T>(PGconn*)>& read) {
    std::lock_guard lock(reader_mu);
    for (int attempt = 0;; ++attempt) {
      if (!reader || !Alive(reader.get())) {
        reader.reset();
        auto c = Connect();
        if (!c.ok()) return c.status();
        reader = std::move(*c);
      }
      Result<T> r = read(reader.get());
      if (r.ok() || r.status().code() != StatusCode::kUnavailable) return r;
      reader.reset();
      if (attempt == 1) return r;
    }
  }

  // Runs statements in one round trip; with `snapshot`, inside one REPEATABLE READ transaction.
  // Returns their results, or Unavailable if the connection was lost.
  static Result<std::vector<PgResult>> Query(PGconn* c, std::initializer_list<std::pair<Stmt, const Params*>> stmts,
                                             bool snapshot) {
    Pipeline p(c);
    bool sent = !snapshot || p.Send(kReadBegin);
    for (const auto& [s, params] : stmts) sent = sent && p.Send(s, *params);
    if (snapshot) sent = sent && p.Send(kCommit);
    if (!sent || !p.Sync()) return Lost(c, nullptr, "");
    std::vector<PgResult> results;
    for (size_t i = 0; i < stmts.size() + (snapshot ? 2 : 0); ++i) {
      PgResult r = p.Next();
      if (!r || ConnectionLost(c, r.get())) return Lost(c, r.get(), "");
      if (!Succeeded(r.get())) {
        Status st = StatusOf(c, r.get(), "reading the log: ");
        if (!p.SkipToSync() || (snapshot && (!p.Send(kRollback) || !p.Sync() || !p.SkipToSync())))
          return Lost(c, nullptr, "");
        return st;
      }
      const bool begin_or_commit = snapshot && (i == 0 || i == stmts.size() + 1);
      if (!begin_or_commit) results.push_back(std::move(r));
    }
    if (!p.SkipToSync()) return Lost(c, nullptr, "");
    return results;
  }
};

PostgresLogStore::PostgresLogStore(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Result<std::unique_ptr<PostgresLogStore>> PostgresLogStore::Open(const PostgresOptions& options) {
  const std::string& schema = options.schema;
  if (schema.empty() || schema.size() > 63 || !std::all_of(schema.begin(), schema.end(), [](char ch) {
        return std::isalnum(static_cast<unsigned char>(ch)) || ch == '_';
      }))
    return InvalidArgument("the log schema name \"" + schema + "\" is not 1 to 63 letters, digits and '_'");
  if (options.max_group == 0) return InvalidArgument("max_group must be at least 1");

  auto impl = std::make_unique<Impl>();
  impl->options = options;
  impl->statements = StatementTexts(QuoteIdentifier(schema));
  auto writer = Dial(options.conninfo);
  if (!writer.ok()) return writer.status();
  DTX_RETURN_IF_ERROR(Migrate(writer->get(), schema));
  DTX_RETURN_IF_ERROR(Prepare(writer->get(), impl->statements));
  impl->writer = std::move(*writer);
  auto reader = impl->Connect();
  if (!reader.ok()) return reader.status();
  impl->reader = std::move(*reader);
  Impl* raw = impl.get();
  impl->writer_thread = std::thread([raw] { raw->WriterLoop(); });
  impl->completer_thread = std::thread([raw] { raw->CompleterLoop(); });
  impl->completer_id = impl->completer_thread.get_id();
  return std::unique_ptr<PostgresLogStore>(new PostgresLogStore(std::move(impl)));
}

PostgresLogStore::~PostgresLogStore() {
  Close();
  std::lock_guard lock(impl_->join_mu);
  if (impl_->completer_thread.joinable()) impl_->completer_thread.join();  // closed from a callback before
}

void PostgresLogStore::Write(Batch batch, WriteCallback done) {
  {
    std::lock_guard lock(impl_->mu);
    if (!impl_->closed) {
      impl_->queue.push_back({std::move(batch), std::move(done), std::nullopt});
      impl_->queue_changed.notify_one();
      return;
    }
  }
  done(WriteResult{FailedPrecondition("the log store is closed"), std::nullopt});
}

LogStoreStats PostgresLogStore::Stats() const {
  return {impl_->commits.load(), impl_->batches.load(), impl_->failed_batches.load()};
}

void PostgresLogStore::Close() {
  {
    std::lock_guard lock(impl_->mu);
    impl_->closed = true;
  }
  impl_->queue_changed.notify_one();
  std::lock_guard lock(impl_->join_mu);
  if (impl_->writer_thread.joinable()) impl_->writer_thread.join();  // commits what is queued
  // From a write callback, the rest of the callbacks run once it returns.
  if (std::this_thread::get_id() != impl_->completer_id && impl_->completer_thread.joinable())
    impl_->completer_thread.join();
}

Result<std::vector<TransactionSnapshot>> PostgresLogStore::LoadAll() {
  return impl_->Read<std::vector<TransactionSnapshot>>([](PGconn* c) -> Result<std::vector<TransactionSnapshot>> {
    const Params none;
    auto rs = Impl::Query(c, {{kAllGlobals, &none}, {kAllBranches, &none}, {kAllLocks, &none}}, true);
    if (!rs.ok()) return rs.status();
    const PGresult* globals = (*rs)[0].get();
    const PGresult* branches = (*rs)[1].get();
    const PGresult* locks = (*rs)[2].get();
    std::vector<TransactionSnapshot> all(PQntuples(globals));
    std::map<std::string, size_t> by_xid;
    for (int i = 0; i < PQntuples(globals); ++i) {
      all[i].global = GlobalAt(globals, i);
      by_xid.emplace(all[i].global.xid, i);
    }
    for (int i = 0; i < PQntuples(branches); ++i) {
      BranchRecord b = BranchAt(branches, i);
      if (auto it = by_xid.find(b.xid); it != by_xid.end()) all[it->second].branches.push_back(std::move(b));
    }
    for (int i = 0; i < PQntuples(locks); ++i) {
      RowLock l = LockAt(locks, i);
      if (auto it = by_xid.find(l.xid); it != by_xid.end()) all[it->second].locks.push_back(std::move(l));
    }
    return all;
  });
}

Result<std::optional<TransactionSnapshot>> PostgresLogStore::Get(const std::string& xid) {
  using Found = std::optional<TransactionSnapshot>;
  return impl_->Read<Found>([&xid](PGconn* c) -> Result<Found> {
    Params key;
    key.Bytes(xid);
    auto rs = Impl::Query(c, {{kGetGlobal, &key}, {kGetBranches, &key}, {kGetLocks, &key}}, true);
    if (!rs.ok()) return rs.status();
    if (PQntuples((*rs)[0].get()) == 0) return Found();
    TransactionSnapshot snap;
    snap.global = GlobalAt((*rs)[0].get(), 0);
    for (int i = 0; i < PQntuples((*rs)[1].get()); ++i) snap.branches.push_back(BranchAt((*rs)[1].get(), i));
    for (int i = 0; i < PQntuples((*rs)[2].get()); ++i) snap.locks.push_back(LockAt((*rs)[2].get(), i));
    return Found(std::move(snap));
  });
}

Result<ListPage> PostgresLogStore::List(const ListFilter& filter) {
  if (filter.limit == 0) return ListPage{};
  return impl_->Read<ListPage>([&filter](PGconn* c) -> Result<ListPage> {
    std::vector<int32_t> statuses;
    for (GlobalStatus s : filter.statuses) statuses.push_back(static_cast<int32_t>(s));
    Params params;
    // One row more than the page holds tells whether another page follows.
    params.Bytes(filter.after_xid)
        .Int4Array(statuses)
        .Int8(filter.begun_before_ms)
        .Int8(static_cast<int64_t>(std::min<size_t>(filter.limit, INT32_MAX)) + 1);
    auto rs = Impl::Query(c, {{kList, &params}}, false);
    if (!rs.ok()) return rs.status();
    const PGresult* r = (*rs)[0].get();
    ListPage page;
    for (int i = 0; i < PQntuples(r) && page.transactions.size() < filter.limit; ++i)
      page.transactions.push_back(GlobalAt(r, i));
    if (static_cast<size_t>(PQntuples(r)) > filter.limit) page.next_after_xid = page.transactions.back().xid;
    return page;
  });
}

Result<std::vector<RowLock>> PostgresLogStore::FindLocks(const std::vector<std::string>& row_keys) {
  if (row_keys.empty()) return std::vector<RowLock>();
  return impl_->Read<std::vector<RowLock>>([&row_keys](PGconn* c) -> Result<std::vector<RowLock>> {
    Params keys;
    keys.TextArray(row_keys);
    auto rs = Impl::Query(c, {{kFindLocks, &keys}}, false);
    if (!rs.ok()) return rs.status();
    std::vector<RowLock> held;
    for (int i = 0; i < PQntuples((*rs)[0].get()); ++i) held.push_back(LockAt((*rs)[0].get(), i));
    return held;
  });
}

}  // namespace dtx::log
