#include "dtx/log/memory_log_store.h"

#include <algorithm>
#include <functional>

#include "log_store_util.h"

namespace dtx::log {

// Applies the batch in place, taking its records; on failure, undoes what it had applied, newest
// first. Undo steps hold pointers into the maps' nodes, which stay valid while other entries come
// and go; a removal that may be undone extracts its nodes and the undo puts the same nodes back,
// so that the pointers earlier steps hold are valid again when their turn comes. (The common
// steps then fit in std::function without an allocation.)
WriteResult MemoryLogStore::Apply(State& s, Batch& batch) {
  // The last operation needs no undo step: nothing comes after it that could fail.
  struct Undo {
    std::vector<std::function<void()>> steps;
    bool last = false;
    void push_back(std::function<void()> step) {
      if (!last) steps.push_back(std::move(step));
    }
  } undo;
  WriteResult r;
  auto& ops = batch.mutable_ops();
  for (auto& op : ops) {
    undo.last = &op == &ops.back();
    std::visit(
        Overloaded{
            [&](Batch::InsertGlobal& o) {
              auto [it, inserted] = s.txns.try_emplace(o.record.xid);
              if (!inserted) {
                r.status = AlreadyExists(o.record.xid);
                return;
              }
              it->second.global = std::move(o.record);
              undo.push_back([&s, key = &it->first] { s.txns.erase(s.txns.find(*key)); });
            },
            [&](Batch::SetGlobalStatus& o) {
              auto it = s.txns.find(o.xid);
              if (it == s.txns.end()) {
                r.status = NoSuchTransaction(o.xid);
                return;
              }
              auto& g = it->second.global;
              undo.push_back([&g, old = g.status, old_time = g.updated_time_ms] {
                g.status = old;
                g.updated_time_ms = old_time;
              });
              g.status = o.status;
              if (o.updated_time_ms) g.updated_time_ms = o.updated_time_ms;
            },
            [&](Batch::InsertBranch& o) {
              auto it = s.txns.find(o.record.xid);
              if (it == s.txns.end()) {
                r.status = NoSuchTransaction(o.record.xid);
                return;
              }
              auto& branches = it->second.branches;
              for (const auto& b : branches) {
                if (b.branch_id == o.record.branch_id) {
                  r.status = AlreadyExists("branch " + std::to_string(b.branch_id));
                  return;
                }
              }
              branches.push_back(std::move(o.record));
              undo.push_back([&branches] { branches.pop_back(); });
            },
            [&](Batch::SetBranchStatus& o) {
              auto it = s.txns.find(o.xid);
              if (it != s.txns.end()) {
                auto& branches = it->second.branches;
                for (size_t i = 0; i < branches.size(); ++i) {
                  if (branches[i].branch_id == o.branch_id) {
                    // By index: a later step may grow the vector.
                    undo.push_back([&branches, i, old = branches[i].status] { branches[i].status = old; });
                    branches[i].status = o.status;
                    return;
                  }
                }
              }
              r.status = NoSuchBranch(o.xid, o.branch_id);
            },
            [&](Batch::AcquireLocks& o) {
              auto it = s.txns.find(o.xid);
              if (it == s.txns.end()) {
                r.status = NoSuchTransaction(o.xid);
                return;
              }
              for (const auto& key : o.row_keys) {
                auto held = s.locks.find(key);
                if (held != s.locks.end() && held->second.xid != o.xid) {
                  r = LockConflictResult(held->second);
                  return;
                }
              }
              auto& mine = it->second.lock_keys;
              std::vector<const std::string*> taken;
              for (auto& key : o.row_keys) {
                auto [lock, inserted] = s.locks.try_emplace(key, RowLock{key, o.xid, o.branch_id});
                if (!inserted) continue;
                mine.insert(std::move(key));
                if (!undo.last) taken.push_back(&lock->first);
              }
              undo.push_back([&s, &mine, taken = std::move(taken)] {
                for (const std::string* key : taken) {
                  mine.erase(*key);
                  s.locks.erase(s.locks.find(*key));
                }
              });
            },
            [&](Batch::ReleaseLocks& o) {
              auto it = s.txns.find(o.xid);
              if (it == s.txns.end()) return;
              auto& mine = it->second.lock_keys;
              if (undo.last) {
                for (const auto& key : mine) s.locks.erase(key);
                mine.clear();
                return;
              }
              auto held = std::make_shared<std::vector<LockMap::node_type>>();
              for (const auto& key : mine) held->push_back(s.locks.extract(key));
              auto keys = std::make_shared<std::set<std::string>>(std::move(mine));
              mine.clear();
              undo.push_back([&s, &mine, held, keys] {
                for (auto& node : *held) s.locks.insert(std::move(node));
                mine = std::move(*keys);
              });
            },
            [&](Batch::RemoveGlobal& o) {
              auto it = s.txns.find(o.xid);
              if (it == s.txns.end()) return;
              if (undo.last) {
                for (const auto& key : it->second.lock_keys) s.locks.erase(key);
                s.txns.erase(it);
                return;
              }
              auto held = std::make_shared<std::vector<LockMap::node_type>>();
              for (const auto& key : it->second.lock_keys) held->push_back(s.locks.extract(key));
              auto txn = std::make_shared<TxnMap::node_type>(s.txns.extract(it));
              undo.push_back([&s, held, txn] {
                s.txns.insert(std::move(*txn));
                for (auto& node : *held) s.locks.insert(std::move(node));
              });
            },
        },
        op);
    if (!r.ok()) {
      for (auto u = undo.steps.rbegin(); u != undo.steps.rend(); ++u) (*u)();
      return r;
    }
  }
  return r;
}

WriteResult MemoryLogStore::ApplyNow(Batch& batch) {
  std::lock_guard lock(mu_);
  return closed_ ? WriteResult{FailedPrecondition("the log store is closed"), std::nullopt} : Apply(state_, batch);
}

void MemoryLogStore::Write(Batch batch, WriteCallback done) { done(ApplyNow(batch)); }

TransactionSnapshot MemoryLogStore::Snapshot(const Txn& txn) const {
  TransactionSnapshot snap{txn.global, txn.branches, {}};
  for (const auto& key : txn.lock_keys) snap.locks.push_back(state_.locks.at(key));
  return snap;
}

Result<std::vector<TransactionSnapshot>> MemoryLogStore::LoadAll() {
  std::lock_guard lock(mu_);
  std::vector<const Txn*> txns;
  txns.reserve(state_.txns.size());
  for (const auto& [xid, txn] : state_.txns) txns.push_back(&txn);
  std::sort(txns.begin(), txns.end(), [](const Txn* a, const Txn* b) { return a->global.xid < b->global.xid; });
  std::vector<TransactionSnapshot> all;
  all.reserve(txns.size());
  for (const Txn* txn : txns) all.push_back(Snapshot(*txn));
  return all;
}

Result<std::optional<TransactionSnapshot>> MemoryLogStore::Get(const std::string& xid) {
  std::lock_guard lock(mu_);
  auto it = state_.txns.find(xid);
  if (it == state_.txns.end()) return std::optional<TransactionSnapshot>();
  return std::optional<TransactionSnapshot>(Snapshot(it->second));
}

Result<ListPage> MemoryLogStore::List(const ListFilter& filter) {
  std::lock_guard lock(mu_);
  ListPage page;
  if (filter.limit == 0) return page;
  // The map is unordered (its lookups are the hot path): one pass picks the matches after the
  // cursor, then only the first limit + 1 of them in XID order are sorted.
  std::vector<const GlobalRecord*> matches;
  for (const auto& [xid, txn] : state_.txns) {
    if (xid > filter.after_xid && Matches(filter, txn.global)) matches.push_back(&txn.global);
  }
  const size_t take = std::min(matches.size(), filter.limit + 1);
  std::partial_sort(matches.begin(), matches.begin() + static_cast<ptrdiff_t>(take), matches.end(),
                    [](const GlobalRecord* a, const GlobalRecord* b) { return a->xid < b->xid; });
  for (size_t i = 0; i < take && i < filter.limit; ++i) page.transactions.push_back(*matches[i]);
  if (take > filter.limit) page.next_after_xid = page.transactions.back().xid;
  return page;
}

Result<std::vector<RowLock>> MemoryLogStore::FindLocks(const std::vector<std::string>& row_keys) {
  std::lock_guard lock(mu_);
  std::vector<RowLock> held;
  for (const auto& key : row_keys) {
    auto it = state_.locks.find(key);
    if (it != state_.locks.end()) held.push_back(it->second);
  }
  return held;
}

Result<std::vector<RowLock>> MemoryLogStore::FindLocksByPrefix(const std::string& prefix, const std::string& except_xid,
                                                               size_t limit) {
  std::lock_guard lock(mu_);
  std::vector<RowLock> held;
  for (auto it = state_.locks.lower_bound(prefix);
       it != state_.locks.end() && held.size() < limit && it->first.starts_with(prefix); ++it) {
    if (it->second.xid != except_xid) held.push_back(it->second);
  }
  return held;
}

void MemoryLogStore::Close() {
  std::lock_guard lock(mu_);
  closed_ = true;
}

}  // namespace dtx::log
