// PostgresLogStore: the log in a PostgreSQL database that several coordinators share.
//
// The tables live in one schema (options.schema), which the store creates and migrates itself,
// under a transaction-scoped advisory lock so that coordinators may start together. A database
// whose schema is newer than this build fails to open. The stored form is in docs/log-format.md.
//
// Writes: one writer thread with a connection of its own commits every queued batch (up to
// max_group) in one transaction, each batch inside a SAVEPOINT so that a batch that fails (a lock
// conflict, say) is rolled back alone. The statements of a group go out in libpq pipeline mode:
// a group in which no batch fails costs one round trip, COMMIT included; each failing batch costs
// one more. Callbacks run on a thread of their own, in commit order, once COMMIT has returned,
// while the writer sends the next group. A row lock is a row keyed by row_key, so coordinators
// sharing the database exclude one another; when PostgreSQL aborts a group for a deadlock or a
// serialization failure between coordinators, the whole group is retried (nothing of it was
// acknowledged yet).
//
// A lost connection never turns into a false OK, and never stops the store for good:
// - Batches that had visibly not reached COMMIT (nothing sent yet, or the server's last word came
//   before COMMIT) are sent again once on a new connection; if that fails too they fail with
//   Unavailable "lost connection to PostgreSQL: ...; the batch was not written" and may be
//   retried.
// - When COMMIT may have run, its answer may be lost while the commit landed. Each group writes a
//   random token row in its transaction; the writer reconnects (for up to outcome_timeout) and
//   inserts that token itself: a conflict means the group committed; a new row means it did not,
//   and fences it so that it never can (this holds across a crash and a failover, where
//   transaction ids do not). The batches then complete with what really happened. If PostgreSQL
//   cannot be reached in time they fail with Unavailable "lost connection to PostgreSQL: ...;
//   the outcome of the batch is unknown: it may be in the log". Such a batch may or may not be
//   in the log: read it back (Get) before acting on either belief.
// - Later batches reconnect, with exponential backoff up to reconnect_backoff_max; while
//   PostgreSQL cannot be reached they fail at once with Unavailable
//   "cannot connect to PostgreSQL: ...; the batch was not written".
//
// Reads use a second connection, one read at a time, reconnecting (once per call) when it was
// lost. LoadAll and Get read one consistent snapshot.
//
// Thread-safety: as LogStore. The store owns its two connections and its two threads.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "dtx/log/log_store.h"

namespace dtx::log {

struct PostgresOptions {
  // A libpq connection string or URI. Unless it says otherwise, connect_timeout is 10 s and TCP
  // keepalives notice a dead server within about 30 s.
  std::string conninfo;
  std::string schema = "dtx";  // letters, digits and '_'; created if missing
  size_t max_group = 256;      // most batches one transaction carries (more would overflow
                               // PostgreSQL's cache of 64 subtransactions many times over)
  std::chrono::milliseconds reconnect_backoff_max{5000};
  // How long the writer keeps trying to learn whether a commit whose answer was lost landed.
  std::chrono::milliseconds outcome_timeout{5000};
  int max_group_retries = 10;  // retries of a group that PostgreSQL aborted (deadlock, serialization)
};

class PostgresLogStore final : public LogStore {
 public:
  // Connects, then creates or migrates the schema.
  static Result<std::unique_ptr<PostgresLogStore>> Open(const PostgresOptions& options);
  // Closes (see Close) and disconnects. REQUIRES: not called from a write callback.
  ~PostgresLogStore() override;

  void Write(Batch batch, WriteCallback done) override;
  Result<std::vector<TransactionSnapshot>> LoadAll() override;
  Result<std::optional<TransactionSnapshot>> Get(const std::string& xid) override;
  Result<ListPage> List(const ListFilter& filter) override;
  Result<std::vector<RowLock>> FindLocks(const std::vector<std::string>& row_keys) override;
  Result<std::vector<RowLock>> FindLocksByPrefix(const std::string& prefix, const std::string& except_xid,
                                                 size_t limit) override;
  // Refuses writes from now on, and waits until every queued batch is committed (or has failed)
  // and its callback has run; reads go on working. Called from a write callback, it returns once
  // the queue is committed, and the callbacks left run after the calling one.
  void Close() override;
  LogStoreStats Stats() const override;

  // The schema version this build writes (the `schema_version` row of <schema>.dtx_meta).
  static constexpr int kSchemaVersion = 1;

 private:
  struct Impl;
  explicit PostgresLogStore(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace dtx::log
