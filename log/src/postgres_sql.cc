#include "postgres_sql.h"

#include <fmt/format.h>
#include <poll.h>
#include <spdlog/spdlog.h>

#include <cstring>

#include "dtx/log/postgres_log_store.h"

namespace dtx::log::pg {

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

std::string Str(const PGresult* r, int row, int col) {
  return std::string(PQgetvalue(r, row, col), PQgetlength(r, row, col));
}
int64_t Int8(const PGresult* r, int row, int col) {
  return PQgetlength(r, row, col) == 8 ? static_cast<int64_t>(GetBigEndian(PQgetvalue(r, row, col), 8)) : 0;
}
int32_t Int4(const PGresult* r, int row, int col) {
  return PQgetlength(r, row, col) == 4 ? static_cast<int32_t>(GetBigEndian(PQgetvalue(r, row, col), 4)) : 0;
}

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
  // $1: the prefix; $2: the first text above every key with that prefix (the index's range).
  t[kFindLocksByPrefix] =
      f("SELECT {l} FROM {s}.dtx_row_lock WHERE row_key >= $1::text AND row_key < $2::text"
        " AND xid <> $3::text ORDER BY row_key LIMIT $4::int8");
  return t;
}

std::string QuoteIdentifier(const std::string& name) { return "\"" + name + "\""; }  // REQUIRES: no '"'

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
Result<PgResult> Exec(PGconn* c, const std::string& sql, const Params& p) {
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


}  // namespace dtx::log::pg
