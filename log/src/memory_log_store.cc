#include "dtx/log/memory_log_store.h"

#include <algorithm>
#include <functional>

#include "log_store_util.h"

namespace dtx::log {

// Applies the batch in place; on failure, undoes what it had applied, newest first. Undo steps
// look records up again by key: a later step of the batch may have moved them.
WriteResult MemoryLogStore::Apply(State& s, const Batch& batch) {
  // The last operation needs no undo step: nothing comes after it that could fail.
  struct Undo {
    std::vector<std::function<void()>> steps;
    bool last = false;
    void push_back(std::function<void()> step) {
      if (!last) steps.push_back(std::move(step));
    }
  } undo;
  WriteResult r;
  for (const auto& op : batch.ops()) {
    undo.last = &op == &batch.ops().back();
    std::visit(
        Overloaded{
            [&](const Batch::InsertGlobal& o) {
              auto [it, inserted] = s.txns.try_emplace(o.record.xid);
              if (!inserted) {
                r.status = AlreadyExists(o.record.xid);
                return;
              }
              it->second.global = o.record;
              undo.push_back([&s, xid = o.record.xid] { s.txns.erase(xid); });
            },
            [&](const Batch::SetGlobalStatus& o) {
              auto it = s.txns.find(o.xid);
              if (it == s.txns.end()) {
                r.status = NoSuchTransaction(o.xid);
                return;
              }
              auto& g = it->second.global;
              undo.push_back([&s, xid = o.xid, old = g.status, old_time = g.updated_time_ms] {
                auto& g = s.txns.at(xid).global;
                g.status = old;
                g.updated_time_ms = old_time;
              });
              g.status = o.status;
              if (o.updated_time_ms) g.updated_time_ms = o.updated_time_ms;
            },
            [&](const Batch::InsertBranch& o) {
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
              branches.push_back(o.record);
              undo.push_back([&s, xid = o.record.xid] { s.txns.at(xid).branches.pop_back(); });
            },
            [&](const Batch::SetBranchStatus& o) {
              auto it = s.txns.find(o.xid);
              if (it != s.txns.end()) {
                for (auto& b : it->second.branches) {
                  if (b.branch_id == o.branch_id) {
                    undo.push_back([&s, xid = o.xid, id = o.branch_id, old = b.status] {
                      for (auto& branch : s.txns.at(xid).branches)
                        if (branch.branch_id == id) branch.status = old;
                    });
                    b.status = o.status;
                    return;
                  }
                }
              }
              r.status = NoSuchBranch(o.xid, o.branch_id);
            },
            [&](const Batch::AcquireLocks& o) {
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
              for (const auto& key : o.row_keys) {
                if (!s.locks.emplace(key, RowLock{key, o.xid, o.branch_id}).second) continue;
                mine.insert(key);
                undo.push_back([&s, xid = o.xid, key] {
                  s.locks.erase(key);
                  s.txns.at(xid).lock_keys.erase(key);
                });
              }
            },
            [&](const Batch::ReleaseLocks& o) {
              auto it = s.txns.find(o.xid);
              if (it == s.txns.end()) return;
              auto& mine = it->second.lock_keys;
              std::vector<RowLock> released;
              for (const auto& key : mine) {
                released.push_back(s.locks.at(key));
                s.locks.erase(key);
              }
              mine.clear();
              undo.push_back([&s, xid = o.xid, released = std::move(released)] {
                for (const auto& l : released) {
                  s.locks.emplace(l.row_key, l);
                  s.txns.at(xid).lock_keys.insert(l.row_key);
                }
              });
            },
            [&](const Batch::RemoveGlobal& o) {
              auto it = s.txns.find(o.xid);
              if (it == s.txns.end()) return;
              std::vector<RowLock> released;
              for (const auto& key : it->second.lock_keys) {
                released.push_back(s.locks.at(key));
                s.locks.erase(key);
              }
              Txn removed = std::move(it->second);
              s.txns.erase(it);
              undo.push_back([&s, xid = o.xid, removed = std::move(removed), released = std::move(released)] {
                s.txns.emplace(xid, removed);
                for (const auto& l : released) s.locks.emplace(l.row_key, l);
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

WriteResult MemoryLogStore::ApplyNow(const Batch& batch) {
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
  std::vector<TransactionSnapshot> all;
  for (const auto& [xid, txn] : state_.txns) all.push_back(Snapshot(txn));
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
  for (auto it = state_.txns.upper_bound(filter.after_xid); it != state_.txns.end(); ++it) {
    if (!Matches(filter, it->second.global)) continue;
    if (page.transactions.size() == filter.limit) {
      page.next_after_xid = page.transactions.back().xid;
      break;
    }
    page.transactions.push_back(it->second.global);
  }
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

void MemoryLogStore::Close() {
  std::lock_guard lock(mu_);
  closed_ = true;
}

}  // namespace dtx::log
