// Fault injection for tests of the log and of what is built on it.
//
// FaultInjectionLogStore wraps any LogStore and fails writes on demand, before they reach it.
//
// SqliteFaultVfs is an SQLite VFS ("dtx-fault") over the default one that fails writes or fsyncs
// on demand and can simulate a power loss: everything written since each file's last fsync is
// dropped (leveldb's fault-injection environment, for SQLite). Open a SqliteLogStore with
// SqliteOptions::vfs = SqliteFaultVfs::kName to use it.
//
// Thread-safety: all methods may be called from any thread.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>

#include "dtx/log/log_store.h"

namespace dtx::log {

class FaultInjectionLogStore final : public LogStore {
 public:
  explicit FaultInjectionLogStore(std::unique_ptr<LogStore> inner) : inner_(std::move(inner)) {}

  // The n-th write from now on (1 = the next one) and every write after it fail with `error`,
  // until Heal().
  void FailWritesFrom(int n, Status error);
  void Heal();

  void Write(Batch batch, WriteCallback done) override;
  Result<std::vector<TransactionSnapshot>> LoadAll() override { return inner_->LoadAll(); }
  Result<std::optional<TransactionSnapshot>> Get(const std::string& xid) override { return inner_->Get(xid); }
  Result<ListPage> List(const ListFilter& filter) override { return inner_->List(filter); }
  Result<std::vector<RowLock>> FindLocks(const std::vector<std::string>& keys) override { return inner_->FindLocks(keys); }
  Result<std::vector<RowLock>> FindLocksByPrefix(const std::string& prefix, const std::string& except_xid,
                                                 size_t limit) override {
    return inner_->FindLocksByPrefix(prefix, except_xid, limit);
  }
  bool ReadsFromMemory() const override { return inner_->ReadsFromMemory(); }
  void Close() override { inner_->Close(); }

 private:
  std::unique_ptr<LogStore> inner_;
  std::mutex mu_;
  int countdown_ = 0;  // guarded by mu_: 0 = no fault armed
  Status error_;       // guarded by mu_
  bool failing_ = false;
};

class SqliteFaultVfs {
 public:
  static constexpr const char* kName = "dtx-fault";

  // Registers the VFS with SQLite (once per process) and returns its controller.
  static SqliteFaultVfs& Instance();

  // The n-th file write from now on (1 = the next) and every one after it fail with
  // SQLITE_FULL (`disk_full`) or SQLITE_IOERR_WRITE.
  void FailWritesFrom(int n, bool disk_full = false);
  // Every fsync fails with SQLITE_IOERR_FSYNC.
  void FailSyncs(bool on);
  // Power loss, part 1: from now on writes, truncations, syncs and deletes do nothing (and
  // report success), as if the machine had stopped. Close the store after this.
  void Freeze();
  // Power loss, part 2: puts every file back as it was at its last fsync, then works normally.
  void DropUnsyncedAndThaw();
  // Clears every fault and forgets what it tracked.
  void Reset();

  struct Impl;

 private:
  SqliteFaultVfs();
  std::unique_ptr<Impl> impl_;
};

}  // namespace dtx::log
