// LogStore: the coordinator's durable transaction log.
//
// Promise: a batch's callback reports OK only after the batch is durable (WriteUnsynced and
// WriteLazy: once it is written); after a crash the reopened store holds every acknowledged batch
// and no part of any other. Implementations:
// SqliteLogStore (embedded default), PostgresLogStore (shared by a cluster of coordinators),
// MemoryLogStore (tests), FaultInjectionLogStore (tests: fails writes on demand).
//
// A batch whose write failed is never reported OK. The SQLite store, once a commit or fsync
// failed, refuses every later write until reopened (it cannot know what reached the disk). The
// PostgreSQL store reconnects; a batch whose COMMIT answer was lost and whose outcome it could not
// learn fails with Unavailable and says "the outcome of the batch is unknown".
//
// Thread-safety: every method may be called from any thread. Write callbacks run on a thread of
// the store's own and must not block it for long.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "dtx/common/status.h"
#include "dtx/log/batch.h"
#include "dtx/log/records.h"

namespace dtx::log {

struct ListFilter {
  std::vector<GlobalStatus> statuses;  // empty: any status
  int64_t begun_before_ms = 0;         // only transactions begun before this Unix time; 0: any
  std::string after_xid;               // paging: start after this XID (results are ordered by XID)
  size_t limit = 100;
};

struct ListPage {
  std::vector<GlobalRecord> transactions;
  std::string next_after_xid;  // empty when this is the last page
};

// Counters since the store was opened, for metrics.
struct LogStoreStats {
  uint64_t commits = 0;         // durable commits (each carries one group of batches)
  uint64_t batches = 0;         // batches that committed
  uint64_t failed_batches = 0;  // batches that failed (conflicts included)
  uint64_t syncs = 0;           // fsyncs of the log's files (SQLite with synchronous=FULL)
  // Time the SQLite writer spent, in microseconds: committing groups, in fsyncs, and waiting
  // for more batches to gather (SqliteOptions::gather) before a commit.
  uint64_t commit_micros = 0;
  uint64_t sync_micros = 0;
  uint64_t gather_micros = 0;
};

class LogStore {
 public:
  using WriteCallback = std::function<void(const WriteResult&)>;

  virtual ~LogStore() = default;

  // Queues `batch`; `done` runs once it is durable or has failed.
  virtual void Write(Batch batch, WriteCallback done) = 0;

  // Every transaction in the log with its branches and locks, for recovery after a restart.
  virtual Result<std::vector<TransactionSnapshot>> LoadAll() = 0;
  // One transaction, or nullopt if the log does not hold it.
  virtual Result<std::optional<TransactionSnapshot>> Get(const std::string& xid) = 0;
  // Transactions filtered by status and age, a page at a time.
  virtual Result<ListPage> List(const ListFilter& filter) = 0;
  // The holders of any of `row_keys`.
  virtual Result<std::vector<RowLock>> FindLocks(const std::vector<std::string>& row_keys) = 0;
  // Up to `limit` locks whose keys start with `prefix` and that `except_xid` does not hold, in
  // key order (a whole table's locks: "resource:schema.table:"). REQUIRES: `prefix` is not empty.
  virtual Result<std::vector<RowLock>> FindLocksByPrefix(const std::string& prefix, const std::string& except_xid,
                                                         size_t limit) = 0;
  // Whether the reads above are answered from memory without waiting on I/O (SQLite, memory),
  // so that a caller may make them on a thread that must not block.
  virtual bool ReadsFromMemory() const { return false; }

  virtual LogStoreStats Stats() const { return {}; }

  // Like Write, but `done` may run once the batch is written to the store's files, before it is
  // durable: it survives the process being killed, not the machine losing power. For a record
  // that matters only through later batches: in an ordered store (SQLite) a later batch is never
  // durable without it. Stores without that distinction call back once durable.
  virtual void WriteUnsynced(Batch batch, WriteCallback done) { Write(std::move(batch), std::move(done)); }

  // Like WriteUnsynced, and the store may hold the batch back to go with its next write (in the
  // same commit) or until a short delay (SqliteOptions::lazy_delay) has passed, whichever comes
  // first: for records whose loss in a crash is harmless or repaired (a finished transaction's
  // removal, a phase-one-done report). Every batch written after it applies after it and, in an
  // ordered store, is never durable without it. Stores that do not defer call WriteUnsynced.
  virtual void WriteLazy(Batch batch, WriteCallback done) { WriteUnsynced(std::move(batch), std::move(done)); }
  // Whether WriteLazy holds batches back (the SQLite store): a caller may then stop gathering its
  // own small batches, the store gathers them into its next commit.
  virtual bool DefersLazyWrites() const { return false; }

  // Waits for every queued batch, then stops accepting writes. Idempotent.
  virtual void Close() = 0;

  // Blocking convenience. REQUIRES: not called from a write callback.
  WriteResult WriteSync(Batch batch);
};

}  // namespace dtx::log
