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
#include <utility>

#include <pthread.h>

#include "batch_codec.h"
#include "dtx/log/memory_log_store.h"
#include "log_store_util.h"

namespace dtx::log {
namespace {

// Version 2: the journal of batches, one per row. Version 3: the same journal, where a row may
// also hold a group of batches. Version 1 kept one row per transaction, branch and lock; Open
// migrates it.
constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS dtx_meta (
  key   TEXT PRIMARY KEY,
  value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS dtx_journal (
  seq   INTEGER PRIMARY KEY,
  batch BLOB NOT NULL
);
)sql";

// Errors that mean the database, not the batch, is in trouble.
bool IsFatal(int rc) {
  const int primary = rc & 0xff;
  return primary != SQLITE_OK && primary != SQLITE_ROW && primary != SQLITE_DONE;
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
  Stmt& Int(int i, int64_t v) {
    sqlite3_bind_int64(stmt_, i, v);
    return *this;
  }
  Stmt& Blob(int i, std::string_view s) {
    sqlite3_bind_blob(stmt_, i, s.data(), static_cast<int>(s.size()), SQLITE_STATIC);
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
  std::string_view ColView(int i) const {
    auto* p = reinterpret_cast<const char*>(sqlite3_column_blob(stmt_, i));
    return p ? std::string_view(p, static_cast<size_t>(sqlite3_column_bytes(stmt_, i))) : std::string_view();
  }
  int64_t ColInt(int i) const { return sqlite3_column_int64(stmt_, i); }

 private:
  sqlite3_stmt* stmt_ = nullptr;
};

int Exec(sqlite3* db, const char* sql) { return sqlite3_exec(db, sql, nullptr, nullptr, nullptr); }

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

// The batch that recreates one transaction as it stands: for compaction and migration.
Batch SnapshotBatch(const TransactionSnapshot& snap) {
  Batch b;
  b.Insert(snap.global);
  std::map<int64_t, std::vector<std::string>> locks;
  for (const auto& l : snap.locks) locks[l.branch_id].push_back(l.row_key);
  for (const auto& branch : snap.branches) b.Insert(branch);
  for (auto& [branch_id, keys] : locks) b.Lock(snap.global.xid, branch_id, std::move(keys));
  return b;
}

bool TableExists(sqlite3* db, const char* name) {
  Stmt s;
  s.Prepare(db, std::string("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '") + name + "'");
  return s.Step() == SQLITE_ROW;
}

// Reads a version-1 database (a row per transaction, branch and lock) into snapshots.
Result<std::vector<TransactionSnapshot>> ReadVersion1(sqlite3* db) {
  std::vector<TransactionSnapshot> all;
  std::map<std::string, size_t> index;
  Stmt s;
  s.Prepare(db,
            "SELECT xid, status, name, application, timeout_ms, begin_time_ms, owner_node, application_data, "
            "updated_time_ms FROM dtx_global ORDER BY xid");
  int rc;
  while ((rc = s.Step()) == SQLITE_ROW) {
    GlobalRecord g{s.ColText(0), static_cast<GlobalStatus>(s.ColInt(1)), s.ColText(2), s.ColText(3), s.ColInt(4),
                   s.ColInt(5),  s.ColText(6), s.ColText(7), s.ColInt(8)};
    index.emplace(g.xid, all.size());
    all.push_back({std::move(g), {}, {}});
  }
  if (rc != SQLITE_DONE) return SqliteError(db, rc, "read version-1 transactions");
  s.Prepare(db,
            "SELECT branch_id, xid, resource_id, branch_type, status, lock_keys, application_data, client_id, "
            "registered_time_ms FROM dtx_branch ORDER BY xid, branch_id");
  while ((rc = s.Step()) == SQLITE_ROW) {
    BranchRecord b{s.ColInt(0),  s.ColText(1), s.ColText(2), static_cast<BranchType>(s.ColInt(3)),
                   static_cast<BranchStatus>(s.ColInt(4)), s.ColText(5), s.ColText(6), s.ColText(7), s.ColInt(8)};
    if (auto it = index.find(b.xid); it != index.end()) all[it->second].branches.push_back(std::move(b));
  }
  if (rc != SQLITE_DONE) return SqliteError(db, rc, "read version-1 branches");
  s.Prepare(db, "SELECT row_key, xid, branch_id FROM dtx_row_lock ORDER BY row_key");
  while ((rc = s.Step()) == SQLITE_ROW) {
    RowLock l{s.ColText(0), s.ColText(1), s.ColInt(2)};
    if (auto it = index.find(l.xid); it != index.end()) all[it->second].locks.push_back(std::move(l));
  }
  if (rc != SQLITE_DONE) return SqliteError(db, rc, "read version-1 row locks");
  return all;
}

}  // namespace

struct SqliteLogStore::Impl {
  SqliteOptions options;
  sqlite3* db = nullptr;  // the writer thread's, once it runs
  MemoryLogStore state;   // every transaction in the journal, as it stands
  Stmt begin, commit, rollback, append, purge, set_start;
  uint64_t journal_entries = 0;  // batches in the live part of the journal; writer thread only
  GroupEncoder entry;             // writer thread only
  static constexpr size_t kCompactionGroup = 256;  // transactions per entry when compacting
  uint64_t compact_at = 0;  // writer thread only
  // Entries before the live part (seq < purge_to, from purge_from on) are left over from before
  // the last compaction: each group commit deletes up to kPurgeChunk of them. Writer thread only.
  static constexpr int64_t kPurgeChunk = 32;
  int64_t purge_from = 0, purge_to = 0;

  struct Queued {
    Batch batch;
    WriteCallback done;
    bool unsynced = false;  // WriteUnsynced and WriteLazy: called back once committed, before the fsync
    bool lazy = false;      // WriteLazy: waits for the next eager batch or options.lazy_delay
  };
  std::mutex mu;
  std::condition_variable wake;
  std::vector<Queued> queue;  // guarded by mu
  // Lazy batches wake nobody while the store is busy: the writer takes them with the next eager
  // one, or once the oldest has waited options.lazy_delay (it waits with that timeout while
  // writes came in the last second). A lazy batch wakes a writer that sleeps without a timeout.
  // All guarded by mu.
  size_t eager_queued = 0;
  size_t durable_queued = 0;  // batches that wait for the fsync (Write)
  std::chrono::steady_clock::time_point lazy_deadline, busy_until;
  bool writer_asleep = false;
  double eager_per_group = 1;  // a moving average, for options.gather; writer thread only
  // A moving average of the fsync's duration: the gather never waits longer (writer thread only).
  // A batch that arrives while its group gathers then waits no longer than it would have waited
  // for the next group, which goes after this group's fsync.
  double sync_avg_us = 0;
  bool closing = false;       // guarded by mu
  Status failed;              // guarded by mu: set once a commit or fsync fails; refuses writes after
  std::thread thread;
  std::atomic<uint64_t> commits{0}, batches{0}, failed_batches{0}, syncs{0};
  std::atomic<uint64_t> commit_micros{0}, sync_micros{0}, gather_micros{0};
  static uint64_t MicrosSince(std::chrono::steady_clock::time_point t) {
    return static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t).count());
  }

  void Enqueue(Batch batch, WriteCallback done, bool unsynced, bool lazy = false);

  ~Impl() {
    sqlite3_close_v2(db);
    sqlite3_close_v2(checkpoint_db);
  }

  Status PrepareAll() {
    struct {
      Stmt* stmt;
      const char* sql;
    } const statements[] = {
        {&begin, "BEGIN IMMEDIATE"},
        {&commit, "COMMIT"},
        {&rollback, "ROLLBACK"},
        {&append, "INSERT INTO dtx_journal (batch) VALUES (?1)"},
        {&purge, "DELETE FROM dtx_journal WHERE seq < ?1"},
        {&set_start,
         "INSERT INTO dtx_meta (key, value) VALUES ('journal_start', ?1) "
         "ON CONFLICT (key) DO UPDATE SET value = excluded.value"},
    };
    for (const auto& s : statements) {
      if (int rc = s.stmt->Prepare(db, s.sql); rc != SQLITE_OK) return SqliteError(db, rc, std::string("prepare ") + s.sql);
    }
    return Status::Ok();
  }

  // Replays the live part of the journal into `state`. Every entry applied when it was written,
  // so one that does not apply now means the file is damaged.
  Status Replay() {
    Stmt s;
    s.Prepare(db, "SELECT CAST(value AS INTEGER) FROM dtx_meta WHERE key = 'journal_start'");
    const int64_t start = s.Step() == SQLITE_ROW ? s.ColInt(0) : 0;
    s.Prepare(db, "SELECT min(seq) FROM dtx_journal");
    purge_from = s.Step() == SQLITE_ROW ? s.ColInt(0) : 0;
    purge_to = start;
    s.Prepare(db, "SELECT seq, batch FROM dtx_journal WHERE seq >= ?1 ORDER BY seq");
    s.Int(1, start);
    int rc;
    while ((rc = s.Step()) == SQLITE_ROW) {
      const std::string entry = "journal entry " + std::to_string(s.ColInt(0));
      auto batches = DecodeEntry(s.ColView(1));
      if (!batches.ok()) return Corruption(entry + ": " + batches.status().ToString());
      for (size_t i = 0; i < batches->size(); ++i) {
        if (auto r = state.ApplyNow((*batches)[i]); !r.ok()) {
          return Corruption(entry + (batches->size() > 1 ? ", batch " + std::to_string(i) : std::string()) +
                            " does not apply: " + r.status.ToString());
        }
      }
      journal_entries += batches->size();
    }
    if (rc != SQLITE_DONE) return SqliteError(db, rc, "read the journal");
    return Status::Ok();
  }

  // Appends every transaction as it stands and makes that the start of the journal, in one
  // transaction: a crash leaves the old start or the new one. The entries before the new start
  // are deleted a chunk at a time by the group commits that follow (deleting them all at once
  // stalled the writer for tens of milliseconds).
  Status Compact() {
    auto all = state.LoadAll();
    if (!all.ok()) return all.status();
    if (int rc = begin.Run(); IsFatal(rc)) return SqliteError(db, rc, "begin compaction");
    int rc = SQLITE_DONE;
    int64_t start = 0;
    GroupEncoder entry;  // at least one entry, empty if nothing is live: the start is a real row
    for (size_t i = 0; i <= all->size() && !IsFatal(rc); ++i) {
      if (i < all->size()) entry.Add(SnapshotBatch((*all)[i]));
      if (entry.count() == kCompactionGroup || i == all->size()) {
        if (entry.count() == 0 && start != 0) break;
        rc = append.Blob(1, entry.bytes()).Run();
        if (start == 0) start = sqlite3_last_insert_rowid(db);
        entry.Clear();
      }
    }
    if (!IsFatal(rc)) rc = set_start.Int(1, start).Run();
    if (!IsFatal(rc)) rc = commit.Run();
    if (IsFatal(rc)) {
      Status s = SqliteError(db, rc, "compact the journal");
      (void)rollback.Run();
      return s;
    }
    purge_to = start;
    journal_entries = all->size();
    compact_at = std::max<uint64_t>(options.compact_min, 4 * journal_entries);
    return Status::Ok();
  }

  // Commits one group: each batch applies to `state` (all or nothing; a lock conflict, say,
  // fails it alone) and the ones that applied go into the journal, together in one entry.
  // Returns each batch's result; a fatal error fails them all.
  std::vector<WriteResult> CommitGroup(std::vector<Queued>& group, Status& fatal) {
    std::vector<WriteResult> results(group.size());
    entry.Clear();
    for (size_t i = 0; i < group.size(); ++i) {
      entry.Add(group[i].batch);  // first: applying takes the records out of the batch
      results[i] = state.ApplyNow(group[i].batch);
      if (!results[i].ok()) entry.DropLast();
    }
    const uint64_t appended = entry.count();
    if (appended == 0) return results;
    int rc = begin.Run();
    if (!IsFatal(rc)) rc = append.Blob(1, entry.bytes()).Run();
    const int64_t purged_to = std::min(purge_from + kPurgeChunk, purge_to);
    if (!IsFatal(rc) && purge_from < purge_to) rc = purge.Int(1, purged_to).Run();
    if (!IsFatal(rc)) rc = commit.Run();
    if (!IsFatal(rc) && purge_from < purge_to) purge_from = purged_to;
    if (IsFatal(rc)) {
      fatal = SqliteError(db, rc, "commit");
      (void)rollback.Run();  // may fail if SQLite rolled back already; the store is failed either way
    } else {
      journal_entries += appended;
    }
    return results;
  }

  // With synchronous=FULL callbacks run on the writer, after the fsync that made their group
  // durable (below); otherwise on the completer thread, so that the writer commits the next group
  // while the callbacks of the last one run. Groups complete in commit order.
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
  // with PRAGMA synchronous=NORMAL): the writer fsyncs the WAL file after the commit, when a
  // batch of the group waits for it, and then runs the group's callbacks. Whatever is queued
  // meanwhile goes into the next group, so one commit and one fsync serve every batch that
  // arrived during the last fsync. (A second thread that fsynced while the writer committed the
  // next group cost a thread hand-off per group and a commit per arrival, for as many fsyncs.)
  sqlite3_file* wal_file = nullptr;  // set with synchronous=FULL

  // Checkpoints (copying the WAL into the database file, then fsyncing it) run on a thread and
  // a connection of their own, so that the writer never stalls on one: the WAL hook of the
  // writer's connection says how long the WAL has grown, and past kCheckpointFrames the
  // checkpointer runs a PASSIVE checkpoint beside the writer.
  //
  // SQLite starts the WAL over (writes it again from its first frame, so that it stops growing
  // and an fsync no longer allocates blocks and writes the inode) only when a write transaction
  // begins while every frame has been copied. Beside a busy writer the checkpointer never quite
  // gets there, so once it has copied all but at most kRestartFrames frames the writer copies
  // that rest itself, between two groups (a short stall: a few frames and two fsyncs, once per
  // kCheckpointFrames or more). A writer that outruns the checkpointer (no fsyncs, a slow disk)
  // copies everything itself once the WAL is kWalFramesMax long, every kCheckpointFrames more
  // frames until the WAL starts over: the WAL stays a few MB long.
  static constexpr int kCheckpointFrames = 1000;
  static constexpr int kRestartFrames = 256;
  static constexpr int kWalFramesMax = 4 * kCheckpointFrames;
  int next_writer_checkpoint_at = kWalFramesMax;  // writer thread only
  std::mutex checkpoint_pass_mu;  // held through each pass, so that the writer's never meets one
  std::atomic<int> checkpointed_frames{-1};  // checkpointer -> writer: frames its last pass copied
  bool writer_checkpoint_due = false;        // writer thread only
  sqlite3* checkpoint_db = nullptr;
  std::mutex checkpoint_mu;
  std::condition_variable checkpoint_wake;
  bool checkpoint_due = false;       // guarded by checkpoint_mu
  bool checkpoint_closing = false;   // guarded by checkpoint_mu
  std::thread checkpointer;

  // The WAL keeps growing until a checkpoint has copied all of it and a commit starts it over,
  // so `frames` stays past the mark for a while: a checkpoint is asked for once per
  // kCheckpointFrames new frames, not at every commit. Writer thread only.
  int next_checkpoint_at = kCheckpointFrames;
  std::atomic<int> wal_frames{0};  // the WAL's length after the last commit
  static int OnWalCommit(void* arg, sqlite3*, const char*, int frames) {
    auto* self = static_cast<Impl*>(arg);
    self->wal_frames.store(frames, std::memory_order_relaxed);
    if (frames < kWalFramesMax) self->next_writer_checkpoint_at = kWalFramesMax;
    if (frames >= self->next_writer_checkpoint_at) {
      self->next_writer_checkpoint_at = frames + kCheckpointFrames;
      self->writer_checkpoint_due = true;
    }
    if (const int copied = self->checkpointed_frames.load(); copied >= 0) {
      if (frames < copied) {
        self->checkpointed_frames = -1;  // started over meanwhile
      } else if (frames - copied <= kRestartFrames) {
        self->checkpointed_frames = -1;
        self->writer_checkpoint_due = true;
      }
    }
    if (frames < self->next_checkpoint_at - kCheckpointFrames) self->next_checkpoint_at = kCheckpointFrames;  // started over
    if (frames >= self->next_checkpoint_at) {
      self->next_checkpoint_at = frames + kCheckpointFrames;
      std::lock_guard lock(self->checkpoint_mu);
      self->checkpoint_due = true;
      self->checkpoint_wake.notify_one();
    }
    return SQLITE_OK;
  }

  void CheckpointerLoop() {
    while (true) {
      {
        std::unique_lock lock(checkpoint_mu);
        checkpoint_wake.wait(lock, [&] { return checkpoint_due || checkpoint_closing; });
        if (checkpoint_closing) return;
        checkpoint_due = false;
      }
      // Passes until the writer is at most kRestartFrames ahead (a few at most: each copies what
      // was added during the one before), then the writer copies the rest and starts over.
      for (int pass = 0; pass < 4; ++pass) {
        int log_frames = 0, done_frames = 0;
        int rc;
        {
          std::lock_guard pass_lock(checkpoint_pass_mu);
          rc = sqlite3_wal_checkpoint_v2(checkpoint_db, "main", SQLITE_CHECKPOINT_PASSIVE, &log_frames, &done_frames);
        }
        if (rc != SQLITE_OK) {
          // The next commit's own I/O reports a failing disk; a checkpoint only keeps the WAL short.
          if ((rc & 0xff) != SQLITE_BUSY) SPDLOG_WARN("log: checkpoint failed: {}", sqlite3_errmsg(checkpoint_db));
          break;
        }
        if (log_frames <= 0 || done_frames < log_frames) break;
        if (wal_frames.load(std::memory_order_relaxed) - log_frames <= kRestartFrames) {
          checkpointed_frames = log_frames;
          break;
        }
      }
    }
  }

  // Writer thread, between groups: copies the last frames so that the next commit starts the
  // WAL over.
  void CheckpointOnWriter() {
    if (!writer_checkpoint_due) return;
    writer_checkpoint_due = false;
    int log_frames = 0, done_frames = 0;
    std::lock_guard pass_lock(checkpoint_pass_mu);  // waits out a pass of the checkpointer's
    int rc = sqlite3_wal_checkpoint_v2(db, "main", SQLITE_CHECKPOINT_PASSIVE, &log_frames, &done_frames);
    if ((rc & 0xff) == SQLITE_BUSY) {
      writer_checkpoint_due = true;  // after the next group
    } else if (rc != SQLITE_OK) {
      SPDLOG_WARN("log: checkpoint failed: {}", sqlite3_errmsg(db));
    }
  }

  void Refuse(const Status& cause) {
    std::lock_guard lock(mu);
    if (failed.ok()) {
      failed = Status(cause.code(), "the log store failed and refuses writes until it is reopened: " +
                                        std::string(cause.message()));
    }
  }

  // The writer's hand-off of a group it committed, or failed.
  void Committed(std::vector<Queued> group, std::vector<WriteResult> results) {
    if (!wal_file) return Complete(std::move(group), std::move(results));
    SyncAndComplete(Completed{std::move(group), std::move(results)});
  }

  Status sync_failed;  // writer thread only
  void SyncAndComplete(Completed c) {
    // Only a group with a durable batch that committed needs the fsync: unsynced and lazy ones
    // were answered already, and a later fsync (the next durable batch's, or Close's) covers them.
    bool any_waiting = false;
    for (size_t i = 0; i < c.results.size(); ++i)
      if (c.results[i].ok() && c.group[i].done) any_waiting = true;
    if (any_waiting && sync_failed.ok()) {
      ++syncs;
      const auto t0 = std::chrono::steady_clock::now();
      const int rc = wal_file->pMethods->xSync(wal_file, SQLITE_SYNC_NORMAL);
      const uint64_t took = MicrosSince(t0);
      sync_micros += took;
      sync_avg_us += (static_cast<double>(took) - sync_avg_us) / 8;
      if (rc != SQLITE_OK) {
        sync_failed = SqliteError(nullptr, rc, "fsync of the write-ahead log");
        SPDLOG_ERROR("log: {}; refusing further writes until reopened", sync_failed.ToString());
        Refuse(sync_failed);
      }
    }
    if (!sync_failed.ok()) {
      // Committed but perhaps not on disk: never acknowledged as durable.
      for (size_t i = 0; i < c.results.size(); ++i) {
        auto& r = c.results[i];
        if (!r.ok() || !c.group[i].done) continue;  // failed already, or answered unsynced
        --batches;
        ++failed_batches;
        r = WriteResult{sync_failed, std::nullopt};
      }
    }
    for (size_t i = 0; i < c.group.size(); ++i) {
      if (c.group[i].done) c.group[i].done(c.results[i]);
    }
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
      for (size_t i = 0; i < c.group.size(); ++i) {
        if (c.group[i].done) c.group[i].done(c.results[i]);
      }
    }
  }

  void WriterLoop() {
    while (true) {
      std::vector<Queued> group;
      Status refuse;
      {
        std::unique_lock lock(mu);
        while (!closing && eager_queued == 0) {
          const auto now = std::chrono::steady_clock::now();
          if (!queue.empty()) {
            if (now >= lazy_deadline) break;  // lazy batches that waited long enough
            wake.wait_until(lock, lazy_deadline);
          } else if (now < busy_until) {
            wake.wait_until(lock, now + options.lazy_delay);
          } else {
            writer_asleep = true;
            wake.wait(lock);
            writer_asleep = false;
          }
        }
        if (queue.empty()) break;  // closing and drained
        // Gathering pays only when others write too: a lone client's next batch waits for this
        // one's answer. So only while groups carry more than one eager batch on average, and
        // only while fewer than that are queued (when every writer already waits, waiting longer
        // brings nobody), and only for a group that needs an fsync at all.
        const auto gather = std::min(options.gather, std::chrono::microseconds(static_cast<int64_t>(sync_avg_us)));
        if (gather.count() > 0 && wal_file && !closing && durable_queued > 0 &&
            queue.size() < options.max_group && eager_per_group >= 1.1 &&
            static_cast<double>(eager_queued) < eager_per_group) {
          const auto t0 = std::chrono::steady_clock::now();
          wake.wait_for(lock, gather, [&] { return closing; });
          gather_micros += MicrosSince(t0);
        }
        if (queue.size() <= options.max_group) {
          group.swap(queue);
          eager_queued = 0;
          durable_queued = 0;
        } else {
          group.assign(std::make_move_iterator(queue.begin()), std::make_move_iterator(queue.begin() + options.max_group));
          queue.erase(queue.begin(), queue.begin() + options.max_group);
          eager_queued = std::count_if(queue.begin(), queue.end(), [](const Queued& q) { return !q.lazy; });
          durable_queued = std::count_if(queue.begin(), queue.end(), [](const Queued& q) { return !q.unsynced; });
          lazy_deadline = std::chrono::steady_clock::now();  // what is left goes next
        }
        busy_until = std::chrono::steady_clock::now() + std::chrono::seconds(1);
        refuse = failed;
        const auto eager = std::count_if(group.begin(), group.end(), [](const Queued& q) { return !q.lazy; });
        eager_per_group += (static_cast<double>(eager) - eager_per_group) / 8;
      }
      if (!refuse.ok()) {
        failed_batches += group.size();
        std::vector<WriteResult> results(group.size(), WriteResult{refuse, std::nullopt});
        Committed(std::move(group), std::move(results));
        continue;
      }
      Status fatal;
      const auto commit_start = std::chrono::steady_clock::now();
      auto results = CommitGroup(group, fatal);
      commit_micros += MicrosSince(commit_start);
      if (fatal.ok() && journal_entries >= compact_at) {
        const auto t0 = std::chrono::steady_clock::now();
        const uint64_t before = journal_entries;
        fatal = Compact();
        spdlog::debug("log: compacted the journal from {} to {} batches in {} us", before, journal_entries,
                    std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0).count());
      }
      if (!fatal.ok()) {
        SPDLOG_ERROR("log: SQLite commit failed, refusing further writes until reopened: {}", fatal.ToString());
        Refuse(fatal);
        failed_batches += group.size();
        results.assign(group.size(), WriteResult{fatal, std::nullopt});
      } else {
        ++commits;
        for (const auto& r : results) r.ok() ? ++batches : ++failed_batches;
        if (wal_file) {
          // WriteUnsynced and WriteLazy: committed is enough (the fsync comes after).
          for (size_t i = 0; i < group.size(); ++i) {
            if (!group[i].unsynced || !results[i].ok()) continue;
            std::exchange(group[i].done, nullptr)(results[i]);
          }
        }
      }
      Committed(std::move(group), std::move(results));
      CheckpointOnWriter();
    }
    if (wal_file) {
      // The last groups may have held only unsynced and lazy batches, which no fsync covered yet.
      if (sync_failed.ok()) {
        if (int rc = wal_file->pMethods->xSync(wal_file, SQLITE_SYNC_NORMAL); rc != SQLITE_OK)
          SPDLOG_WARN("log: the last fsync of the write-ahead log failed: {}", sqlite3_errstr(rc));
      }
      return;
    }
    std::lock_guard lock(done_mu);
    writer_finished = true;
    done_wake.notify_one();
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
  auto opened = OpenConnection(options);
  if (!opened.ok()) return opened.status();
  impl->db = *opened;
  sqlite3* db = impl->db;

  // FULL: commits run at NORMAL and the writer fsyncs each group before it acknowledges it.
  const bool sync_behind = options.synchronous == "FULL";
  const std::string pragmas = "PRAGMA journal_mode=WAL; PRAGMA synchronous=" +
                              std::string(sync_behind ? "NORMAL" : options.synchronous) + ";";
  if (int rc = Exec(db, pragmas.c_str()); rc != SQLITE_OK) return SqliteError(db, rc, "set up " + options.path);
  if (int rc = Exec(db, "BEGIN IMMEDIATE"); rc != SQLITE_OK) return SqliteError(db, rc, "lock " + options.path);
  auto abandon = [db](Status s) {
    Exec(db, "ROLLBACK");
    return s;
  };
  if (int rc = Exec(db, kSchema); rc != SQLITE_OK) return abandon(SqliteError(db, rc, "create the log schema"));
  {
    Stmt version;
    version.Prepare(db, "SELECT value FROM dtx_meta WHERE key = 'schema_version'");
    const int found = version.Step() == SQLITE_ROW ? std::stoi(version.ColText(0)) : 0;
    version.Reset();
    if (found > kSchemaVersion) {
      return abandon(FailedPrecondition(options.path + " has log schema version " + std::to_string(found) +
                                        ", newer than this build's " + std::to_string(kSchemaVersion) +
                                        ": run a newer dtx-coordinator"));
    }
    if (found == 1 && TableExists(db, "dtx_global")) {
      // Version 1 to 2: each transaction becomes one journal entry.
      auto all = ReadVersion1(db);
      if (!all.ok()) return abandon(all.status());
      Stmt append;
      append.Prepare(db, "INSERT INTO dtx_journal (batch) VALUES (?1)");
      for (const auto& snap : *all) {
        if (int rc = append.Blob(1, EncodeBatch(SnapshotBatch(snap))).Run(); IsFatal(rc))
          return abandon(SqliteError(db, rc, "migrate the log to version 2"));
      }
      if (int rc = Exec(db, "DROP TABLE dtx_row_lock; DROP TABLE dtx_branch; DROP TABLE dtx_global;"); rc != SQLITE_OK)
        return abandon(SqliteError(db, rc, "migrate the log to version 2"));
      SPDLOG_INFO("log: migrated {} transactions of {} to log schema version 2", all->size(), options.path);
    }
  }
  const std::string set_version =
      "INSERT INTO dtx_meta (key, value) VALUES ('schema_version', '" + std::to_string(kSchemaVersion) +
      "') ON CONFLICT (key) DO UPDATE SET value = excluded.value";
  if (int rc = Exec(db, set_version.c_str()); rc != SQLITE_OK)
    return abandon(SqliteError(db, rc, "record the schema version"));
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
  if (auto s = impl->PrepareAll(); !s.ok()) return s;
  if (auto s = impl->Replay(); !s.ok()) return Status(s.code(), options.path + ": " + std::string(s.message()));
  impl->compact_at = std::max<uint64_t>(options.compact_min, 4 * impl->journal_entries);

  auto checkpoint_db = OpenConnection(options);
  if (!checkpoint_db.ok()) return checkpoint_db.status();
  impl->checkpoint_db = *checkpoint_db;
  // A connection checkpoints only once it has read the database (before that its pager has not
  // opened the WAL, and a checkpoint silently does nothing).
  if (int rc = Exec(impl->checkpoint_db, "SELECT count(*) FROM dtx_meta"); rc != SQLITE_OK)
    return SqliteError(impl->checkpoint_db, rc, "open the checkpoint connection to " + options.path);
  Impl* raw = impl.get();
  sqlite3_wal_hook(db, &Impl::OnWalCommit, raw);  // and no automatic checkpoints on the writer
  impl->checkpointer = std::thread([raw] {
    pthread_setname_np(pthread_self(), "dtx-log-ckpt");
    raw->CheckpointerLoop();
  });
  impl->thread = std::thread([raw] {
    pthread_setname_np(pthread_self(), "dtx-log-write");
    raw->WriterLoop();
  });
  if (!impl->wal_file) {
    impl->completer = std::thread([raw] {
      pthread_setname_np(pthread_self(), "dtx-log-done");
      raw->CompleterLoop();
    });
  }
  SPDLOG_INFO("log: SQLite log at {} (synchronous={}, {} journal entries)", options.path, options.synchronous,
              impl->journal_entries);
  return std::unique_ptr<SqliteLogStore>(new SqliteLogStore(std::move(impl)));
}

void SqliteLogStore::Write(Batch batch, WriteCallback done) { impl_->Enqueue(std::move(batch), std::move(done), false); }
void SqliteLogStore::WriteUnsynced(Batch batch, WriteCallback done) {
  impl_->Enqueue(std::move(batch), std::move(done), true);
}
void SqliteLogStore::WriteLazy(Batch batch, WriteCallback done) {
  impl_->Enqueue(std::move(batch), std::move(done), true, true);
}

void SqliteLogStore::Impl::Enqueue(Batch batch, WriteCallback done, bool unsynced, bool lazy) {
  {
    std::lock_guard lock(mu);
    if (!closing) {
      if (lazy && queue.empty()) lazy_deadline = std::chrono::steady_clock::now() + options.lazy_delay;
      queue.push_back({std::move(batch), std::move(done), unsynced, lazy});
      if (!unsynced) ++durable_queued;
      if (lazy ? writer_asleep : eager_queued++ == 0) wake.notify_one();
      return;
    }
  }
  done(WriteResult{FailedPrecondition("the log store is closed"), std::nullopt});
}

LogStoreStats SqliteLogStore::Stats() const {
  return {impl_->commits.load(),       impl_->batches.load(),     impl_->failed_batches.load(), impl_->syncs.load(),
          impl_->commit_micros.load(), impl_->sync_micros.load(), impl_->gather_micros.load()};
}

namespace {
// Joins a thread that runs write callbacks, unless this is that thread (the store was closed from
// a write callback): its loop then ends by itself.
void JoinCallbackThread(std::thread& t) {
  if (!t.joinable()) return;
  if (t.get_id() == std::this_thread::get_id()) {
    t.detach();
  } else {
    t.join();
  }
}
}  // namespace

void SqliteLogStore::Close() {
  {
    std::lock_guard lock(impl_->mu);
    if (impl_->closing) return;
    impl_->closing = true;
    impl_->wake.notify_one();
  }
  JoinCallbackThread(impl_->thread);  // commits and syncs what is queued (by itself if this is it)
  {
    std::lock_guard lock(impl_->checkpoint_mu);
    impl_->checkpoint_closing = true;
    impl_->checkpoint_wake.notify_one();
  }
  if (impl_->checkpointer.joinable()) impl_->checkpointer.join();
  JoinCallbackThread(impl_->completer);
}

// Reads come from the replayed state: what the store has accepted (once a commit fails, until
// the store is reopened, that may be more than what is on disk).
Result<std::optional<TransactionSnapshot>> SqliteLogStore::Get(const std::string& xid) { return impl_->state.Get(xid); }
Result<std::vector<TransactionSnapshot>> SqliteLogStore::LoadAll() { return impl_->state.LoadAll(); }
Result<ListPage> SqliteLogStore::List(const ListFilter& filter) { return impl_->state.List(filter); }
Result<std::vector<RowLock>> SqliteLogStore::FindLocks(const std::vector<std::string>& row_keys) {
  return impl_->state.FindLocks(row_keys);
}

Result<std::vector<RowLock>> SqliteLogStore::FindLocksByPrefix(const std::string& prefix, const std::string& except_xid,
                                                               size_t limit) {
  return impl_->state.FindLocksByPrefix(prefix, except_xid, limit);
}

}  // namespace dtx::log
