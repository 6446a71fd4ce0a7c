#include "dtx/log/sqlite_log_store.h"

#include <spdlog/spdlog.h>
#include <sqlite3.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <thread>

#include "log_store_util.h"

namespace dtx::log {
namespace {

constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS dtx_meta (
  key   TEXT PRIMARY KEY,
  value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS dtx_global (
  xid              TEXT PRIMARY KEY,
  status           INTEGER NOT NULL,
  name             TEXT NOT NULL,
  application      TEXT NOT NULL,
  timeout_ms       INTEGER NOT NULL,
  begin_time_ms    INTEGER NOT NULL,
  owner_node       TEXT NOT NULL,
  application_data BLOB NOT NULL,
  updated_time_ms  INTEGER NOT NULL
) WITHOUT ROWID;
DROP INDEX IF EXISTS dtx_global_status;
CREATE TABLE IF NOT EXISTS dtx_branch (
  xid                TEXT NOT NULL,
  branch_id          INTEGER NOT NULL,
  resource_id        TEXT NOT NULL,
  branch_type        INTEGER NOT NULL,
  status             INTEGER NOT NULL,
  lock_keys          TEXT NOT NULL,
  application_data   BLOB NOT NULL,
  client_id          TEXT NOT NULL,
  registered_time_ms INTEGER NOT NULL,
  PRIMARY KEY (xid, branch_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dtx_row_lock (
  row_key   TEXT PRIMARY KEY,
  xid       TEXT NOT NULL,
  branch_id INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS dtx_row_lock_xid ON dtx_row_lock (xid);
)sql";

constexpr const char* kGlobalColumns =
    "xid, status, name, application, timeout_ms, begin_time_ms, owner_node, application_data, updated_time_ms";
constexpr const char* kBranchColumns =
    "branch_id, xid, resource_id, branch_type, status, lock_keys, application_data, client_id, registered_time_ms";

// Errors that mean the database, not the batch, is in trouble.
bool IsFatal(int rc) {
  const int primary = rc & 0xff;
  return primary != SQLITE_OK && primary != SQLITE_ROW && primary != SQLITE_DONE && primary != SQLITE_CONSTRAINT;
}

Status SqliteError(sqlite3* db, int rc, std::string_view what) {
  std::string m(what);
  m += ": ";
  m += db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
  const int primary = rc & 0xff;
  if (primary == SQLITE_FULL) return ResourceExhausted(m + " (disk full)");
  if (primary == SQLITE_CORRUPT || primary == SQLITE_NOTADB) return Corruption(m);
  return IOError(m);
}

// A prepared statement, reset after each use.
class Stmt {
 public:
  Stmt() = default;
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;
  ~Stmt() { sqlite3_finalize(stmt_); }

  int Prepare(sqlite3* db, const std::string& sql) {
    sqlite3_finalize(stmt_);
    return sqlite3_prepare_v3(db, sql.c_str(), -1, SQLITE_PREPARE_PERSISTENT, &stmt_, nullptr);
  }
  Stmt& Text(int i, std::string_view s) {
    sqlite3_bind_text(stmt_, i, s.data(), static_cast<int>(s.size()), SQLITE_STATIC);
    return *this;
  }
  Stmt& Blob(int i, std::string_view s) {
    sqlite3_bind_blob(stmt_, i, s.data(), static_cast<int>(s.size()), SQLITE_STATIC);
    return *this;
  }
  Stmt& Null(int i) {
    sqlite3_bind_null(stmt_, i);
    return *this;
  }
  Stmt& Int(int i, int64_t v) {
    sqlite3_bind_int64(stmt_, i, v);
    return *this;
  }
  int Step() { return sqlite3_step(stmt_); }
  // Runs to completion; the final code (SQLITE_DONE on success).
  int Run() {
    int rc;
    while ((rc = sqlite3_step(stmt_)) == SQLITE_ROW) {
    }
    Reset();
    return rc;
  }
  void Reset() { sqlite3_reset(stmt_); }  // every use binds every parameter again
  std::string ColText(int i) const {
    auto* p = reinterpret_cast<const char*>(sqlite3_column_blob(stmt_, i));
    return p ? std::string(p, static_cast<size_t>(sqlite3_column_bytes(stmt_, i))) : std::string();
  }
  int64_t ColInt(int i) const { return sqlite3_column_int64(stmt_, i); }

 private:
  sqlite3_stmt* stmt_ = nullptr;
};

int Exec(sqlite3* db, const char* sql) { return sqlite3_exec(db, sql, nullptr, nullptr, nullptr); }

GlobalRecord ReadGlobal(const Stmt& s) {
  GlobalRecord g;
  g.xid = s.ColText(0);
  g.status = static_cast<GlobalStatus>(s.ColInt(1));
  g.name = s.ColText(2);
  g.application = s.ColText(3);
  g.timeout_ms = s.ColInt(4);
  g.begin_time_ms = s.ColInt(5);
  g.owner_node = s.ColText(6);
  g.application_data = s.ColText(7);
  g.updated_time_ms = s.ColInt(8);
  return g;
}

BranchRecord ReadBranch(const Stmt& s) {
  BranchRecord b;
  b.branch_id = s.ColInt(0);
  b.xid = s.ColText(1);
  b.resource_id = s.ColText(2);
  b.type = static_cast<BranchType>(s.ColInt(3));
  b.status = static_cast<BranchStatus>(s.ColInt(4));
  b.lock_keys = s.ColText(5);
  b.application_data = s.ColText(6);
  b.client_id = s.ColText(7);
  b.registered_time_ms = s.ColInt(8);
  return b;
}

Result<sqlite3*> OpenConnection(const SqliteOptions& options) {
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(options.path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                           options.vfs.empty() ? nullptr : options.vfs.c_str());
  if (rc != SQLITE_OK) {
    Status s = SqliteError(db, rc, "cannot open " + options.path);
    sqlite3_close(db);
    return s;
  }
  sqlite3_extended_result_codes(db, 1);
  sqlite3_busy_timeout(db, 10'000);
  return db;
}

}  // namespace

struct SqliteLogStore::Impl {
  SqliteOptions options;
  sqlite3* writer = nullptr;  // used by the writer thread only
  sqlite3* reader = nullptr;  // guarded by read_mu

  // The writer's statements.
  Stmt begin, commit, rollback, savepoint, release, rollback_to;
  Stmt insert_global, set_global_status, global_exists, insert_branch, set_branch_status;
  Stmt insert_lock, lock_holder, release_locks, remove_branches, remove_global;
  Stmt release_locks_many, remove_branches_many, remove_global_many;

  std::mutex read_mu;
  Stmt get_global, get_branches, get_locks, find_lock;

  struct Queued {
    Batch batch;
    WriteCallback done;
  };
  std::mutex mu;
  std::condition_variable wake;
  std::vector<Queued> queue;  // guarded by mu
  bool closing = false;       // guarded by mu
  Status failed;              // guarded by mu: set once a commit fails; refuses writes after
  std::thread thread;
  std::atomic<uint64_t> commits{0}, batches{0}, failed_batches{0};

  ~Impl() {
    sqlite3_close_v2(writer);
    sqlite3_close_v2(reader);
  }

  Status PrepareAll() {
    struct {
      Stmt* stmt;
      std::string sql;
    } const statements[] = {
        {&begin, "BEGIN IMMEDIATE"},
        {&commit, "COMMIT"},
        {&rollback, "ROLLBACK"},
        {&savepoint, "SAVEPOINT batch"},
        {&release, "RELEASE batch"},
        {&rollback_to, "ROLLBACK TO batch"},
        {&insert_global, std::string("INSERT INTO dtx_global (") + kGlobalColumns + ") VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9)"},
        {&set_global_status,
         "UPDATE dtx_global SET status = ?2, updated_time_ms = CASE WHEN ?3 <> 0 THEN ?3 ELSE updated_time_ms END "
         "WHERE xid = ?1"},
        {&global_exists, "SELECT 1 FROM dtx_global WHERE xid = ?1"},
        // Inserts nothing when the global transaction is not there: one statement, not two.
        {&insert_branch, std::string("INSERT INTO dtx_branch (") + kBranchColumns +
                             ") SELECT ?1,?2,?3,?4,?5,?6,?7,?8,?9 WHERE EXISTS (SELECT 1 FROM dtx_global WHERE xid = ?2)"},
        {&set_branch_status, "UPDATE dtx_branch SET status = ?3 WHERE xid = ?1 AND branch_id = ?2"},
        {&insert_lock, "INSERT INTO dtx_row_lock (row_key, xid, branch_id) VALUES (?1,?2,?3) ON CONFLICT (row_key) DO NOTHING"},
        {&lock_holder, "SELECT xid, branch_id FROM dtx_row_lock WHERE row_key = ?1"},
        {&release_locks, "DELETE FROM dtx_row_lock WHERE xid = ?1"},
        {&remove_branches, "DELETE FROM dtx_branch WHERE xid = ?1"},
        {&remove_global, "DELETE FROM dtx_global WHERE xid = ?1"},
    };
    for (const auto& s : statements) {
      if (int rc = s.stmt->Prepare(writer, s.sql); rc != SQLITE_OK) return SqliteError(writer, rc, "prepare " + s.sql);
    }
    std::string in_list = "(?1";
    for (int i = 2; i <= kRemoveMany; ++i) in_list += ",?" + std::to_string(i);
    in_list += ")";
    for (auto [stmt, table] : {std::pair{&release_locks_many, "dtx_row_lock"}, std::pair{&remove_branches_many, "dtx_branch"},
                               std::pair{&remove_global_many, "dtx_global"}}) {
      const std::string sql = std::string("DELETE FROM ") + table + " WHERE xid IN " + in_list;
      if (int rc = stmt->Prepare(writer, sql); rc != SQLITE_OK) return SqliteError(writer, rc, "prepare " + sql);
    }
    struct {
      Stmt* stmt;
      std::string sql;
    } const reads[] = {
        {&get_global, std::string("SELECT ") + kGlobalColumns + " FROM dtx_global WHERE xid = ?1"},
        {&get_branches, std::string("SELECT ") + kBranchColumns + " FROM dtx_branch WHERE xid = ?1 ORDER BY branch_id"},
        {&get_locks, "SELECT row_key, xid, branch_id FROM dtx_row_lock WHERE xid = ?1 ORDER BY row_key"},
        {&find_lock, "SELECT row_key, xid, branch_id FROM dtx_row_lock WHERE row_key = ?1"},
    };
    for (const auto& s : reads) {
      if (int rc = s.stmt->Prepare(reader, s.sql); rc != SQLITE_OK) return SqliteError(reader, rc, "prepare " + s.sql);
    }
    return Status::Ok();
  }

  // Runs one statement of a batch. Logical failures come back in `result`; a fatal SQLite error
  // comes back as the returned status.
  Status Check(int rc, std::string_view what) {
    if (IsFatal(rc)) return SqliteError(writer, rc, what);
    return Status::Ok();
  }

  // Applies one batch inside the open transaction. Returns a fatal error, or OK with the batch's
  // own outcome in `result`.
  // Removes many finished transactions with a few statements: kRemoveMany xids a statement.
  static constexpr int kRemoveMany = 32;
  static bool OnlyRemovals(const Batch& batch) {
    return batch.ops().size() > 1 && std::all_of(batch.ops().begin(), batch.ops().end(), [](const auto& op) {
             return std::holds_alternative<Batch::RemoveGlobal>(op);
           });
  }
  Status RemoveMany(const Batch& batch) {
    const auto& ops = batch.ops();
    for (size_t first = 0; first < ops.size(); first += kRemoveMany) {
      for (Stmt* stmt : {&release_locks_many, &remove_branches_many, &remove_global_many}) {
        for (int i = 0; i < kRemoveMany; ++i) {
          if (first + i < ops.size()) {
            stmt->Text(i + 1, std::get<Batch::RemoveGlobal>(ops[first + i]).xid);
          } else {
            stmt->Null(i + 1);
          }
        }
        if (auto fatal = Check(stmt->Run(), "remove finished transactions"); !fatal.ok()) return fatal;
      }
    }
    return Status::Ok();
  }

  Status ApplyBatch(const Batch& batch, WriteResult& result) {
    if (OnlyRemovals(batch)) return RemoveMany(batch);
    const std::string* known_xid = nullptr;  // a global transaction this batch has seen exist
    for (const auto& op : batch.ops()) {
      Status fatal;
      std::visit(
          Overloaded{
              [&](const Batch::InsertGlobal& o) {
                const auto& g = o.record;
                int rc = insert_global.Text(1, g.xid)
                             .Int(2, static_cast<int64_t>(g.status))
                             .Text(3, g.name)
                             .Text(4, g.application)
                             .Int(5, g.timeout_ms)
                             .Int(6, g.begin_time_ms)
                             .Text(7, g.owner_node)
                             .Blob(8, g.application_data)
                             .Int(9, g.updated_time_ms)
                             .Run();
                if ((rc & 0xff) == SQLITE_CONSTRAINT) result.status = AlreadyExists(g.xid);
                fatal = Check(rc, "insert global transaction");
                if (fatal.ok() && result.ok()) known_xid = &g.xid;
              },
              [&](const Batch::SetGlobalStatus& o) {
                int rc = set_global_status.Text(1, o.xid).Int(2, static_cast<int64_t>(o.status)).Int(3, o.updated_time_ms).Run();
                fatal = Check(rc, "update global status");
                if (fatal.ok() && sqlite3_changes(writer) == 0) result.status = NoSuchTransaction(o.xid);
              },
              [&](const Batch::InsertBranch& o) {
                const auto& b = o.record;
                int rc = insert_branch.Int(1, b.branch_id)
                             .Text(2, b.xid)
                             .Text(3, b.resource_id)
                             .Int(4, static_cast<int64_t>(b.type))
                             .Int(5, static_cast<int64_t>(b.status))
                             .Text(6, b.lock_keys)
                             .Blob(7, b.application_data)
                             .Text(8, b.client_id)
                             .Int(9, b.registered_time_ms)
                             .Run();
                if ((rc & 0xff) == SQLITE_CONSTRAINT) result.status = AlreadyExists("branch " + std::to_string(b.branch_id));
                fatal = Check(rc, "insert branch");
                if (fatal.ok() && result.ok()) {
                  if (sqlite3_changes(writer) == 0) {
                    result.status = NoSuchTransaction(b.xid);
                  } else {
                    known_xid = &b.xid;
                  }
                }
              },
              [&](const Batch::SetBranchStatus& o) {
                int rc = set_branch_status.Text(1, o.xid).Int(2, o.branch_id).Int(3, static_cast<int64_t>(o.status)).Run();
                fatal = Check(rc, "update branch status");
                if (fatal.ok() && sqlite3_changes(writer) == 0) result.status = NoSuchBranch(o.xid, o.branch_id);
              },
              [&](const Batch::AcquireLocks& o) {
                if ((!known_xid || *known_xid != o.xid) && !GlobalExists(o.xid, fatal, result)) return;
                for (const auto& key : o.row_keys) {
                  int rc = insert_lock.Text(1, key).Text(2, o.xid).Int(3, o.branch_id).Run();
                  if (fatal = Check(rc, "insert row lock"); !fatal.ok()) return;
                  if (sqlite3_changes(writer) != 0) continue;
                  lock_holder.Text(1, key);
                  rc = lock_holder.Step();
                  RowLock holder{key, rc == SQLITE_ROW ? lock_holder.ColText(0) : std::string(),
                                 rc == SQLITE_ROW ? lock_holder.ColInt(1) : 0};
                  lock_holder.Reset();
                  if (fatal = Check(rc, "read row lock"); !fatal.ok()) return;
                  if (holder.xid != o.xid) {
                    result = LockConflictResult(std::move(holder));
                    return;
                  }
                }
              },
              [&](const Batch::ReleaseLocks& o) { fatal = Check(release_locks.Text(1, o.xid).Run(), "release row locks"); },
              [&](const Batch::RemoveGlobal& o) {
                if (fatal = Check(release_locks.Text(1, o.xid).Run(), "remove row locks"); !fatal.ok()) return;
                if (fatal = Check(remove_branches.Text(1, o.xid).Run(), "remove branches"); !fatal.ok()) return;
                fatal = Check(remove_global.Text(1, o.xid).Run(), "remove global transaction");
              },
          },
          op);
      if (!fatal.ok()) return fatal;
      if (!result.ok()) return Status::Ok();
    }
    return Status::Ok();
  }

  bool GlobalExists(const std::string& xid, Status& fatal, WriteResult& result) {
    global_exists.Text(1, xid);
    int rc = global_exists.Step();
    global_exists.Reset();
    fatal = Check(rc, "look up global transaction");
    if (!fatal.ok()) return false;
    if (rc != SQLITE_ROW) {
      result.status = NoSuchTransaction(xid);
      return false;
    }
    return true;
  }

  // Whether a failure of the batch could leave part of it applied: an operation that can fail
  // after one that changed something, or a lock set of several keys. A statement that fails
  // changes nothing by itself, so other batches need no savepoint (most batches: begin, decide,
  // remove).
  static bool NeedsSavepoint(const Batch& batch) {
    bool changed = false;
    for (const auto& op : batch.ops()) {
      const bool can_fail = !std::holds_alternative<Batch::ReleaseLocks>(op) && !std::holds_alternative<Batch::RemoveGlobal>(op);
      if (can_fail && changed) return true;
      if (auto* locks = std::get_if<Batch::AcquireLocks>(&op); locks && locks->row_keys.size() > 1) return true;
      changed = true;
    }
    return false;
  }

  // Commits one group. Returns each batch's result; a fatal error fails them all.
  std::vector<WriteResult> CommitGroup(const std::vector<Queued>& group, Status& fatal) {
    std::vector<WriteResult> results(group.size());
    if (fatal = Check(begin.Run(), "begin"); !fatal.ok()) return results;
    for (size_t i = 0; i < group.size() && fatal.ok(); ++i) {
      const bool guard = NeedsSavepoint(group[i].batch);
      if (guard && (fatal = Check(savepoint.Run(), "savepoint"), !fatal.ok())) break;
      fatal = ApplyBatch(group[i].batch, results[i]);
      if (!guard) continue;
      if (fatal.ok() && !results[i].ok()) fatal = Check(rollback_to.Run(), "rollback to savepoint");
      if (fatal.ok()) fatal = Check(release.Run(), "release savepoint");
    }
    if (fatal.ok()) fatal = Check(commit.Run(), "commit");
    if (!fatal.ok()) {
      (void)rollback.Run();  // may fail if SQLite rolled back already; the store is failed either way
    }
    return results;
  }

  // Callbacks run on a thread of their own, so that the writer commits the next group while the
  // callbacks of the last one run (they answer calls and start more work). Groups complete in
  // commit order.
  struct Completed {
    std::vector<Queued> group;
    std::vector<WriteResult> results;
  };
  std::mutex done_mu;
  std::condition_variable done_wake;
  std::deque<Completed> done_queue;  // guarded by done_mu
  bool writer_finished = false;      // guarded by done_mu
  std::thread completer;

  // With synchronous=FULL the commit itself does not wait for the disk (the connection runs
  // with PRAGMA synchronous=NORMAL). The syncer thread fsyncs the WAL file after each commit
  // instead and only then hands the group on to be acknowledged, so that the writer executes the
  // next group while the disk syncs the last one. One fsync covers every group committed before
  // it started; a group is acknowledged only after an fsync that began after its commit. Every
  // group, failed ones too, passes through here, so that groups complete in commit order.
  sqlite3_file* wal_file = nullptr;  // set when the syncer is used
  std::mutex sync_mu;
  std::condition_variable sync_wake;
  std::deque<Completed> sync_queue;  // guarded by sync_mu
  bool writer_done = false;          // guarded by sync_mu
  std::thread syncer;

  // The writer's hand-off of a group it committed, or failed.
  void Committed(std::vector<Queued> group, std::vector<WriteResult> results) {
    if (!wal_file) return Complete(std::move(group), std::move(results));
    std::lock_guard lock(sync_mu);
    sync_queue.push_back({std::move(group), std::move(results)});
    sync_wake.notify_one();
  }

  void SyncerLoop() {
    Status sync_failed;
    while (true) {
      std::deque<Completed> synced;
      {
        std::unique_lock lock(sync_mu);
        sync_wake.wait(lock, [&] { return !sync_queue.empty() || writer_done; });
        if (sync_queue.empty()) break;
        synced.swap(sync_queue);
      }
      const bool any_ok = std::any_of(synced.begin(), synced.end(), [](const Completed& c) {
        return std::any_of(c.results.begin(), c.results.end(), [](const WriteResult& r) { return r.ok(); });
      });
      if (any_ok && sync_failed.ok()) {
        if (int rc = wal_file->pMethods->xSync(wal_file, SQLITE_SYNC_NORMAL); rc != SQLITE_OK) {
          sync_failed = SqliteError(nullptr, rc, "fsync of the write-ahead log");
          SPDLOG_ERROR("log: {}; refusing further writes until reopened", sync_failed.ToString());
          std::lock_guard lock(mu);
          failed = Status(sync_failed.code(), "the log store failed and refuses writes until it is reopened: " +
                                                  std::string(sync_failed.message()));
        }
      }
      for (auto& c : synced) {
        if (!sync_failed.ok()) {
          // Committed but perhaps not on disk: never acknowledged as durable.
          for (auto& r : c.results) {
            if (!r.ok()) continue;
            --batches;
            ++failed_batches;
            r = WriteResult{sync_failed, std::nullopt};
          }
        }
        Complete(std::move(c.group), std::move(c.results));
      }
    }
    std::lock_guard lock(done_mu);
    writer_finished = true;
    done_wake.notify_one();
  }

  void Complete(std::vector<Queued> group, std::vector<WriteResult> results) {
    std::lock_guard lock(done_mu);
    done_queue.push_back({std::move(group), std::move(results)});
    done_wake.notify_one();
  }

  void CompleterLoop() {
    while (true) {
      Completed c;
      {
        std::unique_lock lock(done_mu);
        done_wake.wait(lock, [&] { return !done_queue.empty() || writer_finished; });
        if (done_queue.empty()) return;
        c = std::move(done_queue.front());
        done_queue.pop_front();
      }
      for (size_t i = 0; i < c.group.size(); ++i) c.group[i].done(c.results[i]);
    }
  }

  void WriterLoop() {
    while (true) {
      std::vector<Queued> group;
      Status refuse;
      {
        std::unique_lock lock(mu);
        wake.wait(lock, [&] { return !queue.empty() || closing; });
        if (queue.empty()) break;  // closing and drained
        if (queue.size() <= options.max_group) {
          group.swap(queue);
        } else {
          group.assign(std::make_move_iterator(queue.begin()), std::make_move_iterator(queue.begin() + options.max_group));
          queue.erase(queue.begin(), queue.begin() + options.max_group);
        }
        refuse = failed;
      }
      if (!refuse.ok()) {
        failed_batches += group.size();
        std::vector<WriteResult> results(group.size(), WriteResult{refuse, std::nullopt});
        Committed(std::move(group), std::move(results));
        continue;
      }
      Status fatal;
      auto results = CommitGroup(group, fatal);
      if (!fatal.ok()) {
        SPDLOG_ERROR("log: SQLite commit failed, refusing further writes until reopened: {}", fatal.ToString());
        Status refusal(fatal.code(), "the log store failed and refuses writes until it is reopened: " +
                                         std::string(fatal.message()));
        {
          std::lock_guard lock(mu);
          failed = refusal;
        }
        failed_batches += group.size();
        results.assign(group.size(), WriteResult{fatal, std::nullopt});
      } else {
        ++commits;
        for (const auto& r : results) r.ok() ? ++batches : ++failed_batches;
      }
      Committed(std::move(group), std::move(results));
    }
    if (wal_file) {
      std::lock_guard lock(sync_mu);
      writer_done = true;
      sync_wake.notify_one();
      return;  // the syncer tells the completer when it is done
    }
    std::lock_guard lock(done_mu);
    writer_finished = true;
    done_wake.notify_one();
  }

  Result<std::vector<RowLock>> ReadLocks(Stmt& stmt, const std::string& key) {
    std::vector<RowLock> out;
    stmt.Text(1, key);
    int rc;
    while ((rc = stmt.Step()) == SQLITE_ROW) out.push_back(RowLock{stmt.ColText(0), stmt.ColText(1), stmt.ColInt(2)});
    stmt.Reset();
    if (rc != SQLITE_DONE) return SqliteError(reader, rc, "read row locks");
    return out;
  }

  Result<std::optional<TransactionSnapshot>> ReadOne(const std::string& xid) {
    get_global.Text(1, xid);
    int rc = get_global.Step();
    if (rc != SQLITE_ROW) {
      get_global.Reset();
      if (rc == SQLITE_DONE) return std::optional<TransactionSnapshot>();
      return SqliteError(reader, rc, "read global transaction");
    }
    TransactionSnapshot snap;
    snap.global = ReadGlobal(get_global);
    get_global.Reset();
    get_branches.Text(1, xid);
    while ((rc = get_branches.Step()) == SQLITE_ROW) snap.branches.push_back(ReadBranch(get_branches));
    get_branches.Reset();
    if (rc != SQLITE_DONE) return SqliteError(reader, rc, "read branches");
    auto locks = ReadLocks(get_locks, xid);
    if (!locks.ok()) return locks.status();
    snap.locks = std::move(*locks);
    return std::optional<TransactionSnapshot>(std::move(snap));
  }
};

SqliteLogStore::SqliteLogStore(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

SqliteLogStore::~SqliteLogStore() { Close(); }

Result<std::unique_ptr<SqliteLogStore>> SqliteLogStore::Open(const SqliteOptions& options) {
  if (options.max_group == 0) return InvalidArgument("max_group must be at least 1");
  if (options.synchronous != "FULL" && options.synchronous != "NORMAL" && options.synchronous != "OFF")
    return InvalidArgument("synchronous must be FULL, NORMAL or OFF, not '" + options.synchronous + "'");
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  auto writer = OpenConnection(options);
  if (!writer.ok()) return writer.status();
  impl->writer = *writer;
  sqlite3* db = impl->writer;

  // 64 MiB of page cache: the hot end of every table stays in memory between commits.
  // FULL: commits run at NORMAL and the syncer makes each one durable before it is acknowledged.
  const bool sync_behind = options.synchronous == "FULL";
  const std::string pragmas = "PRAGMA journal_mode=WAL; PRAGMA synchronous=" +
                              std::string(sync_behind ? "NORMAL" : options.synchronous) +
                              "; PRAGMA cache_size=-65536;";
  if (int rc = Exec(db, pragmas.c_str()); rc != SQLITE_OK) return SqliteError(db, rc, "set up " + options.path);
  if (int rc = Exec(db, "BEGIN IMMEDIATE"); rc != SQLITE_OK) return SqliteError(db, rc, "lock " + options.path);
  if (int rc = Exec(db, kSchema); rc != SQLITE_OK) {
    Exec(db, "ROLLBACK");
    return SqliteError(db, rc, "create the log schema");
  }
  {
    Stmt version;
    version.Prepare(db, "SELECT value FROM dtx_meta WHERE key = 'schema_version'");
    int rc = version.Step();
    if (rc == SQLITE_ROW) {
      const int found = std::stoi(version.ColText(0));
      if (found > kSchemaVersion) {
        version.Reset();
        Exec(db, "ROLLBACK");
        return FailedPrecondition(options.path + " has log schema version " + std::to_string(found) +
                                  ", newer than this build's " + std::to_string(kSchemaVersion) +
                                  ": run a newer dtx-coordinator");
      }
      // Migrations from older versions go here, one step per version.
    }
    version.Reset();
  }
  const std::string set_version =
      "INSERT INTO dtx_meta (key, value) VALUES ('schema_version', '" + std::to_string(kSchemaVersion) +
      "') ON CONFLICT (key) DO UPDATE SET value = excluded.value";
  if (int rc = Exec(db, set_version.c_str()); rc != SQLITE_OK) {
    Exec(db, "ROLLBACK");
    return SqliteError(db, rc, "record the schema version");
  }
  if (int rc = Exec(db, "COMMIT"); rc != SQLITE_OK) return SqliteError(db, rc, "commit the log schema");
  if (sync_behind) {
    sqlite3_file* wal = nullptr;
    if (sqlite3_file_control(db, "main", SQLITE_FCNTL_JOURNAL_POINTER, &wal) != SQLITE_OK || !wal || !wal->pMethods) {
      return Internal("cannot reach the write-ahead log of " + options.path);
    }
    // The first sync also syncs the folder (a new WAL's directory entry); do it here, on this thread.
    if (int rc = wal->pMethods->xSync(wal, SQLITE_SYNC_NORMAL); rc != SQLITE_OK) {
      return SqliteError(db, rc, "fsync of the write-ahead log of " + options.path);
    }
    impl->wal_file = wal;
  }

  auto reader = OpenConnection(options);
  if (!reader.ok()) return reader.status();
  impl->reader = *reader;
  if (auto s = impl->PrepareAll(); !s.ok()) return s;

  Impl* raw = impl.get();
  impl->thread = std::thread([raw] { raw->WriterLoop(); });
  impl->completer = std::thread([raw] { raw->CompleterLoop(); });
  if (impl->wal_file) impl->syncer = std::thread([raw] { raw->SyncerLoop(); });
  SPDLOG_INFO("log: SQLite log at {} (synchronous={})", options.path, options.synchronous);
  return std::unique_ptr<SqliteLogStore>(new SqliteLogStore(std::move(impl)));
}

void SqliteLogStore::Write(Batch batch, WriteCallback done) {
  {
    std::lock_guard lock(impl_->mu);
    if (!impl_->closing) {
      impl_->queue.push_back({std::move(batch), std::move(done)});
      impl_->wake.notify_one();
      return;
    }
  }
  done(WriteResult{FailedPrecondition("the log store is closed"), std::nullopt});
}

LogStoreStats SqliteLogStore::Stats() const {
  return {impl_->commits.load(), impl_->batches.load(), impl_->failed_batches.load()};
}

void SqliteLogStore::Close() {
  {
    std::lock_guard lock(impl_->mu);
    if (impl_->closing) return;
    impl_->closing = true;
    impl_->wake.notify_one();
  }
  if (impl_->thread.joinable()) impl_->thread.join();  // commits what is queued
  if (impl_->syncer.joinable()) impl_->syncer.join();  // syncs what was committed
  if (impl_->completer.joinable()) {
    if (impl_->completer.get_id() == std::this_thread::get_id()) {
      impl_->completer.detach();  // closed from a write callback: the loop ends by itself
    } else {
      impl_->completer.join();
    }
  }
}

Result<std::optional<TransactionSnapshot>> SqliteLogStore::Get(const std::string& xid) {
  std::lock_guard lock(impl_->read_mu);
  Exec(impl_->reader, "BEGIN");
  auto r = impl_->ReadOne(xid);
  Exec(impl_->reader, "COMMIT");
  return r;
}

Result<std::vector<TransactionSnapshot>> SqliteLogStore::LoadAll() {
  std::lock_guard lock(impl_->read_mu);
  sqlite3* db = impl_->reader;
  Exec(db, "BEGIN");
  std::vector<TransactionSnapshot> all;
  std::map<std::string, size_t> index;
  Status status;
  {
    Stmt s;
    s.Prepare(db, std::string("SELECT ") + kGlobalColumns + " FROM dtx_global ORDER BY xid");
    int rc;
    while ((rc = s.Step()) == SQLITE_ROW) {
      all.push_back({ReadGlobal(s), {}, {}});
      index.emplace(all.back().global.xid, all.size() - 1);
    }
    if (rc != SQLITE_DONE) status = SqliteError(db, rc, "read global transactions");
  }
  if (status.ok()) {
    Stmt s;
    s.Prepare(db, std::string("SELECT ") + kBranchColumns + " FROM dtx_branch ORDER BY xid, branch_id");
    int rc;
    while ((rc = s.Step()) == SQLITE_ROW) {
      BranchRecord b = ReadBranch(s);
      if (auto it = index.find(b.xid); it != index.end()) all[it->second].branches.push_back(std::move(b));
    }
    if (rc != SQLITE_DONE) status = SqliteError(db, rc, "read branches");
  }
  if (status.ok()) {
    Stmt s;
    s.Prepare(db, "SELECT row_key, xid, branch_id FROM dtx_row_lock ORDER BY row_key");
    int rc;
    while ((rc = s.Step()) == SQLITE_ROW) {
      RowLock l{s.ColText(0), s.ColText(1), s.ColInt(2)};
      if (auto it = index.find(l.xid); it != index.end()) all[it->second].locks.push_back(std::move(l));
    }
    if (rc != SQLITE_DONE) status = SqliteError(db, rc, "read row locks");
  }
  Exec(db, "COMMIT");
  if (!status.ok()) return status;
  return all;
}

Result<ListPage> SqliteLogStore::List(const ListFilter& filter) {
  std::string sql = std::string("SELECT ") + kGlobalColumns + " FROM dtx_global WHERE xid > ?1";
  if (!filter.statuses.empty()) {
    sql += " AND status IN (";
    for (size_t i = 0; i < filter.statuses.size(); ++i)
      sql += (i ? "," : "") + std::to_string(static_cast<int>(filter.statuses[i]));
    sql += ")";
  }
  if (filter.begun_before_ms) sql += " AND begin_time_ms < ?2";
  sql += " ORDER BY xid LIMIT ?3";
  std::lock_guard lock(impl_->read_mu);
  Stmt s;
  if (int rc = s.Prepare(impl_->reader, sql); rc != SQLITE_OK) return SqliteError(impl_->reader, rc, "list");
  s.Text(1, filter.after_xid).Int(2, filter.begun_before_ms).Int(3, static_cast<int64_t>(filter.limit) + 1);
  ListPage page;
  int rc;
  while ((rc = s.Step()) == SQLITE_ROW) page.transactions.push_back(ReadGlobal(s));
  if (rc != SQLITE_DONE) return SqliteError(impl_->reader, rc, "list");
  if (page.transactions.size() > filter.limit) {
    page.transactions.pop_back();
    page.next_after_xid = page.transactions.back().xid;
  }
  return page;
}

Result<std::vector<RowLock>> SqliteLogStore::FindLocks(const std::vector<std::string>& row_keys) {
  std::lock_guard lock(impl_->read_mu);
  std::vector<RowLock> held;
  for (const auto& key : row_keys) {
    auto r = impl_->ReadLocks(impl_->find_lock, key);
    if (!r.ok()) return r.status();
    held.insert(held.end(), r->begin(), r->end());
  }
  return held;
}

}  // namespace dtx::log
