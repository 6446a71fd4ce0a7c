// MemoryLogStore: the log in memory, for tests and for measuring the coordinator without a disk.
// Nothing survives the process. Writes apply at once and call back on the writing thread.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <unordered_map>

#include "dtx/log/log_store.h"

namespace dtx::log {

class MemoryLogStore final : public LogStore {
 public:
  MemoryLogStore() = default;

  void Write(Batch batch, WriteCallback done) override;
  // Applies `batch` now, all or nothing, and says how it went (Write without the callback). The
  // store takes the records out of `batch`: afterwards it holds unspecified values.
  WriteResult ApplyNow(Batch& batch);
  Result<std::vector<TransactionSnapshot>> LoadAll() override;
  Result<std::optional<TransactionSnapshot>> Get(const std::string& xid) override;
  Result<ListPage> List(const ListFilter& filter) override;
  Result<std::vector<RowLock>> FindLocks(const std::vector<std::string>& row_keys) override;
  Result<std::vector<RowLock>> FindLocksByPrefix(const std::string& prefix, const std::string& except_xid,
                                                 size_t limit) override;
  bool ReadsFromMemory() const override { return true; }
  void Close() override;

 private:
  struct Txn {
    GlobalRecord global;
    std::vector<BranchRecord> branches;
    std::set<std::string> lock_keys;
  };
  using TxnMap = std::unordered_map<std::string, Txn>;
  using LockMap = std::map<std::string, RowLock, std::less<>>;  // ordered: FindLocksByPrefix
  struct State {
    TxnMap txns;
    LockMap locks;
  };
  WriteResult Apply(State& state, Batch& batch);
  TransactionSnapshot Snapshot(const Txn& txn) const;

  std::mutex mu_;
  State state_;  // guarded by mu_
  bool closed_ = false;
};

}  // namespace dtx::log
