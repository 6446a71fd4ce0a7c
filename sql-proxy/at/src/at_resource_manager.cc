#include "dtx/at/at_resource_manager.h"

#include <spdlog/spdlog.h>

namespace dtx::at {

AtResourceManager::AtResourceManager(AtResourceManagerOptions options) : options_(std::move(options)) {
  for (const auto& [resource, conninfo] : options_.databases) {
    executors_[resource] = std::make_unique<UndoExecutor>(conninfo, options_.undo_table);
  }
}

AtResourceManager::~AtResourceManager() { Stop(); }

Status AtResourceManager::Start() {
  for (auto& [resource, ex] : executors_) {
    Status s = ex->EnsureUndoTable();
    if (!s.ok()) return s.WithContext("undo log of " + resource);
    auto missing = ex->MissingTables(options_.untracked_tables);
    if (!missing.ok()) return missing.status().WithContext("--untracked-tables in " + resource);
    for (const auto& name : *missing) {
      spdlog::warn("--untracked-tables: {} names no table in {} (yet)", name, resource);
    }
  }
  if (!worker_.joinable()) worker_ = std::thread([this] { Run(); });
  return Status::Ok();
}

sdk::BranchHandler AtResourceManager::Handler() {
  return [this](sdk::BranchCall call, std::function<void(sdk::BranchAnswer)> answer) {
    OnCall(std::move(call), std::move(answer));
  };
}

void AtResourceManager::OnCall(sdk::BranchCall call, std::function<void(sdk::BranchAnswer)> answer) {
  if (executors_.find(call.resource_id) == executors_.end()) {
    answer({call.commit ? sdk::BranchStatus::kPhaseTwoCommitFailedRetryable
                        : sdk::BranchStatus::kPhaseTwoRollbackFailedRetryable,
            "this proxy does not serve resource " + call.resource_id});
    return;
  }
  if (call.commit) {
    bool first = false;
    {
      std::lock_guard lock(mu_);
      first = commits_.empty();
      commits_[call.resource_id].emplace_back(call.xid, call.branch_id);
    }
    // Only the first commit of a batch wakes the worker: it then waits commit_delay for more and
    // takes whatever is queued, so waking it for each one would only cost a thread switch.
    if (first) cv_.notify_all();
    // The undo rows only matter to a rollback, which can no longer come: answer now.
    answer({sdk::BranchStatus::kPhaseTwoCommitted, ""});
    return;
  }
  {
    std::lock_guard lock(mu_);
    rollbacks_.push_back({std::move(call), std::move(answer)});
  }
  cv_.notify_all();
}

sdk::BranchAnswer AtResourceManager::DoRollback(const sdk::BranchCall& call) {
  auto r = executors_.at(call.resource_id)->Rollback(call.xid, call.branch_id);
  if (!r.ok()) return {sdk::BranchStatus::kPhaseTwoRollbackFailedRetryable, r.status().ToString()};
  if (r->outcome == RollbackOutcome::kDirtyWrite) {
    return {sdk::BranchStatus::kPhaseTwoRollbackFailedUnretryable, r->message};
  }
  return {sdk::BranchStatus::kPhaseTwoRollbacked, r->outcome == RollbackOutcome::kMarked ? "no undo log: marked" : ""};
}

void AtResourceManager::Run() {
  std::unique_lock lock(mu_);
  while (true) {
    cv_.wait(lock, [&] { return stop_ || !rollbacks_.empty() || !commits_.empty(); });
    if (rollbacks_.empty() && commits_.empty() && stop_) return;
    if (!rollbacks_.empty()) {
      Rollback r = std::move(rollbacks_.front());
      rollbacks_.pop_front();
      lock.unlock();
      r.answer(DoRollback(r.call));
      lock.lock();
      continue;
    }
    // Commits: let a few more arrive, then delete their rows together.
    if (!stop_) cv_.wait_for(lock, options_.commit_delay, [&] { return stop_; });
    auto batch = std::move(commits_);
    commits_.clear();
    ++in_flight_;
    lock.unlock();
    std::map<std::string, std::vector<std::pair<std::string, int64_t>>> failed;
    for (auto& [resource, list] : batch) {
      for (size_t at = 0; at < list.size(); at += options_.commit_batch) {
        std::vector<std::pair<std::string, int64_t>> part(
            list.begin() + at, list.begin() + std::min(list.size(), at + options_.commit_batch));
        // A failed deletion leaves the rows: they are harmless (the branch is committed) and a
        // later batch tries them again.
        if (!executors_.at(resource)->DeleteUndo(part).ok() && !stop_) {
          failed[resource].insert(failed[resource].end(), part.begin(), part.end());
        }
      }
    }
    lock.lock();
    for (auto& [resource, list] : failed) {
      commits_[resource].insert(commits_[resource].end(), list.begin(), list.end());
    }
    --in_flight_;
    cv_.notify_all();
    if (!failed.empty() && !stop_) cv_.wait_for(lock, std::chrono::milliseconds(500), [&] { return stop_; });
  }
}

void AtResourceManager::Flush() {
  std::unique_lock lock(mu_);
  cv_.wait(lock, [&] { return (commits_.empty() && in_flight_ == 0) || !worker_.joinable(); });
}

void AtResourceManager::StartSweeping(UndoSweeper::StatusFn status) {
  if (sweeper_) return;
  sweeper_ = std::make_unique<UndoSweeper>(options_.databases, options_.undo_table, std::move(status), options_.sweep);
  sweeper_->Start();
}

void AtResourceManager::Stop() {
  if (sweeper_) sweeper_->Stop();
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (worker_.joinable()) worker_.join();
}

}  // namespace dtx::at
