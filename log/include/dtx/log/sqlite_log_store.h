// SqliteLogStore: the embedded default. One SQLite file in WAL mode, holding a journal of
// batches; every transaction is also kept in memory, where batches are checked and reads are
// answered. One writer thread commits every queued batch in one transaction (group commit).
// With synchronous=FULL the writer then fsyncs the write-ahead log and only then runs the
// group's callbacks; batches queued meanwhile form the next group, so one commit and one fsync
// serve them all. WriteUnsynced and WriteLazy batches are answered once committed and need no
// fsync of their own; WriteLazy ones wait (up to lazy_delay) to go with the next other batch.
// With NORMAL or OFF a completer thread runs the callbacks, in commit order.
//
// A batch that fails (a lock conflict, say) fails alone while the rest of its group commits. If
// the commit itself fails (I/O error, full disk, failed fsync) every batch of the group fails
// and the store refuses all further writes with the first error until it is reopened: it never
// acknowledges what may not be durable.
//
// A checkpointer thread with a connection of its own copies the WAL into the database file
// beside the writer; the writer copies the last few frames itself so that the WAL starts over
// and stays a few MB long. Thread-safety: as LogStore.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "dtx/log/log_store.h"

namespace dtx::log {

struct SqliteOptions {
  std::string path;                    // the database file; its folder must exist
  std::string synchronous = "FULL";    // FULL (durable before acknowledged), NORMAL or OFF (PRAGMA synchronous)
  size_t max_group = 4096;             // most batches one commit carries
  std::string vfs;                     // a registered SQLite VFS by name (tests inject faults); empty: default
  // The journal is rewritten once it holds this many entries and four times as many as there
  // are transactions in it.
  uint64_t compact_min = 65'536;
  // The longest a WriteLazy batch waits for an eager one to go with before it is committed alone.
  std::chrono::milliseconds lazy_delay{5};
  // With synchronous=FULL: how long the writer waits, once a batch that needs the fsync is
  // queued, for more to go into the same commit and fsync, while groups carry more than one
  // eager batch on average (others are writing too) and fewer than that are queued, and never
  // longer than the fsync takes (a moving average of the last ones). 0: never.
  std::chrono::microseconds gather{0};
};

class SqliteLogStore final : public LogStore {
 public:
  // Opens or creates the log, creating or migrating its schema.
  static Result<std::unique_ptr<SqliteLogStore>> Open(const SqliteOptions& options);
  ~SqliteLogStore() override;

  void Write(Batch batch, WriteCallback done) override;
  Result<std::vector<TransactionSnapshot>> LoadAll() override;
  Result<std::optional<TransactionSnapshot>> Get(const std::string& xid) override;
  Result<ListPage> List(const ListFilter& filter) override;
  Result<std::vector<RowLock>> FindLocks(const std::vector<std::string>& row_keys) override;
  Result<std::vector<RowLock>> FindLocksByPrefix(const std::string& prefix, const std::string& except_xid,
                                                 size_t limit) override;
  void Close() override;
  LogStoreStats Stats() const override;
  void WriteUnsynced(Batch batch, WriteCallback done) override;
  void WriteLazy(Batch batch, WriteCallback done) override;
  bool DefersLazyWrites() const override { return true; }
  bool ReadsFromMemory() const override { return true; }

  // The schema version this build writes (the `schema_version` row of dtx_meta).
  static constexpr int kSchemaVersion = 3;

 private:
  struct Impl;
  explicit SqliteLogStore(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace dtx::log
