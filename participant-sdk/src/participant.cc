#include "dtx/sdk/participant.h"

#include <spdlog/spdlog.h>

#include <algorithm>

namespace dtx::sdk {

namespace {

constexpr int kFormatVersion = 1;

// The business method, with exceptions turned into a Status. `final` is set when the method
// declared its failure final (FinalError, or a code in `final_codes`).
template <typename F>
Status Invoke(const std::string& action, const char* phase, const std::vector<StatusCode>& final_codes, bool* final,
              F&& f) {
  try {
    Status s = f();
    if (!s.ok() && final) {
      *final = std::find(final_codes.begin(), final_codes.end(), s.code()) != final_codes.end();
    }
    return s;
  } catch (const FinalError& e) {
    if (final) *final = true;
    return FailedPrecondition(action + " " + phase + ": " + e.what());
  } catch (const std::exception& e) {
    return Internal(action + " " + phase + " threw: " + e.what());
  } catch (...) {
    return Internal(action + " " + phase + " threw a non-standard exception");
  }
}

BranchAnswer Answer(bool commit, Status s, bool final) {
  BranchAnswer a;
  if (s.ok()) {
    a.status = commit ? BranchStatus::kPhaseTwoCommitted : BranchStatus::kPhaseTwoRollbacked;
    return a;
  }
  if (commit) {
    a.status = final ? BranchStatus::kPhaseTwoCommitFailedUnretryable : BranchStatus::kPhaseTwoCommitFailedRetryable;
  } else {
    a.status =
        final ? BranchStatus::kPhaseTwoRollbackFailedUnretryable : BranchStatus::kPhaseTwoRollbackFailedRetryable;
  }
  a.message = s.ToString();
  return a;
}

}  // namespace

namespace detail {

std::string EncodeApplicationData(const std::string& action, const nlohmann::json& args) {
  nlohmann::json j;
  j["dtx_tcc"] = kFormatVersion;
  j["action"] = action;
  j["args"] = args;
  return j.dump();
}

Status RunTry(Participant& p, const ActionState& action, const std::string& xid_in, const std::string& application_data,
              const std::function<Status(TccContext&)>& try_body) {
  if (xid_in.empty()) {
    return FailedPrecondition(action.name + ": not inside a global transaction (no XID bound to this thread)");
  }
  auto xid = ParseXid(xid_in);
  if (!xid.ok()) return xid.status().WithContext(action.name);
  if (!p.started_) return FailedPrecondition(action.name + ": the participant is not started");

  BranchRegistration reg;
  reg.xid = *xid;
  reg.resource_id = action.name;
  reg.type = BranchType::kTCC;
  reg.application_data = application_data;
  auto branch = p.client_->RegisterBranch(reg);
  if (!branch.ok()) return branch.status().WithContext(action.name + ": registering the branch");
  const int64_t branch_id = *branch;
  if (p.options_.after_register) p.options_.after_register(*xid, branch_id, action.name);

  auto report = [&](BranchStatus status) {
    if (status == BranchStatus::kPhaseOneDone && !p.options_.report_phase_one_done) return;
    Status s = p.client_->ReportBranch(*xid, branch_id, status);
    if (!s.ok()) spdlog::warn("dtx sdk: reporting branch {} of {}: {}", branch_id, *xid, s.ToString());
  };

  if (!p.options_.database) {
    TccContext ctx(*xid, branch_id, action.name, TccPhase::kTry, nullptr);
    Status s = Invoke(action.name, "Try", {}, nullptr, [&] { return try_body(ctx); });
    // Without the fence nothing says whether the Try left something behind: Cancel decides.
    if (s.ok()) report(BranchStatus::kPhaseOneDone);
    return s;
  }

  auto tx = p.options_.database->Begin();
  if (!tx.ok()) {
    report(BranchStatus::kPhaseOneFailed);
    return tx.status().WithContext(action.name + " Try");
  }
  if (p.fence_) {
    if (Status s = p.fence_->BeginTry(**tx, *xid, branch_id, action.name); !s.ok()) {
      (void)(*tx)->Rollback();
      if (p.fence_) report(BranchStatus::kPhaseOneFailed);
      return s.WithContext(action.name + " Try");
    }
  }
  TccContext ctx(*xid, branch_id, action.name, TccPhase::kTry, tx->get());
  Status s = Invoke(action.name, "Try", {}, nullptr, [&] { return try_body(ctx); });
  if (!s.ok()) {
    (void)(*tx)->Rollback();
    // Under the fence the Try left nothing: the branch needs no Cancel. Without it, Cancel decides.
    if (p.fence_) report(BranchStatus::kPhaseOneFailed);
    return s;
  }
  if (Status c = (*tx)->Commit(); !c.ok()) {
    // Whether the commit happened is unknown: leave the branch to phase 2 (Cancel is safe).
    return c.WithContext(action.name + " Try commit");
  }
  report(BranchStatus::kPhaseOneDone);
  return Status::Ok();
}

}  // namespace detail

Participant::Participant(ParticipantOptions options) : options_(std::move(options)) {
  workers_ = std::make_unique<WorkerPool>(options_.workers);
  if (options_.fence && options_.database) fence_ = std::make_unique<TccFence>(options_.database);
  auto coordinator = options_.coordinator;
  coordinator.resource_ids.clear();  // registered by Start
  client_ = std::make_shared<CoordinatorClient>(
      std::move(coordinator), [this](BranchCall call, std::function<void(BranchAnswer)> answer) {
        // On an rpc I/O thread: the business code runs on a worker.
        auto shared = std::make_shared<std::pair<BranchCall, std::function<void(BranchAnswer)>>>(std::move(call),
                                                                                                  std::move(answer));
        if (!started_ || !workers_->Post([this, shared] { shared->second(RunPhaseTwo(shared->first)); })) {
          shared->second(Answer(shared->first.commit, Unavailable("participant is stopping"), false));
        }
      });
}

Participant::~Participant() { Stop(); }

std::shared_ptr<detail::ActionState> Participant::Declare(std::string name) {
  auto state = std::make_shared<detail::ActionState>();
  state->name = name;
  {
    std::lock_guard lock(mu_);
    if (!actions_.emplace(name, state).second) {
      throw std::logic_error("dtx sdk: TCC action " + name + " is declared twice");
    }
  }
  if (started_) {
    if (Status s = client_->AddResources({name}); !s.ok()) {
      spdlog::warn("dtx sdk: registering action {}: {} (retried on reconnect)", name, s.ToString());
    }
  }
  return state;
}

std::shared_ptr<detail::ActionState> Participant::Find(const std::string& name) const {
  std::lock_guard lock(mu_);
  auto it = actions_.find(name);
  return it == actions_.end() ? nullptr : it->second;
}

Status Participant::Start() {
  if (started_) return Status::Ok();
  if (options_.fence && !options_.database) {
    return InvalidArgument("the TCC fence needs the participant's database (ParticipantOptions::database); "
                           "set fence = false to run without it");
  }
  if (fence_) DTX_RETURN_IF_ERROR(fence_->CreateTable());
  std::vector<std::string> names;
  {
    std::lock_guard lock(mu_);
    for (const auto& [name, _] : actions_) names.push_back(name);
  }
  started_ = true;
  if (Status s = client_->AddResources(names); !s.ok()) {
    spdlog::warn("dtx sdk: {} (registration goes out when a coordinator answers)", s.ToString());
  }
  if (fence_ && options_.fence_cleanup_interval.count() > 0) cleanup_ = std::thread([this] { CleanupLoop(); });
  return Status::Ok();
}

void Participant::Stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cleanup_cv_.notify_all();
  if (cleanup_.joinable()) cleanup_.join();
  started_ = false;
  client_->Shutdown();
  workers_->Stop();
}

void Participant::CleanupLoop() {
  std::unique_lock lock(mu_);
  while (!stopping_) {
    cleanup_cv_.wait_for(lock, options_.fence_cleanup_interval, [&] { return stopping_; });
    if (stopping_) break;
    lock.unlock();
    int64_t total = 0;
    while (true) {
      auto n = fence_->Clean(options_.fence_retention);
      if (!n.ok()) {
        spdlog::warn("dtx sdk: {}", n.status().ToString());
        break;
      }
      total += *n;
      if (*n < 1000) break;
    }
    if (total > 0) spdlog::info("dtx sdk: removed {} old rows from dtx_tcc_fence", total);
    lock.lock();
  }
}

BranchAnswer Participant::RunPhaseTwo(const BranchCall& call) {
  const char* phase = call.commit ? "Confirm" : "Cancel";
  nlohmann::json data;
  try {
    data = nlohmann::json::parse(call.application_data);
  } catch (const std::exception& e) {
    return Answer(call.commit, InvalidArgument("application data of branch " + std::to_string(call.branch_id) +
                                               " is not JSON: " + e.what()),
                  true);
  }
  if (!data.is_object() || data.value("dtx_tcc", 0) != kFormatVersion || !data.contains("args")) {
    return Answer(call.commit, InvalidArgument("application data of branch " + std::to_string(call.branch_id) +
                                               " is not a dtx TCC v1 record"),
                  true);
  }
  auto action = Find(call.resource_id);
  if (!action) {
    return Answer(call.commit, NotFound("no TCC action " + call.resource_id + " is declared in this process"), false);
  }
  const auto& method = call.commit ? action->confirm : action->cancel;
  if (!method) return Answer(call.commit, FailedPrecondition(action->name + ": no " + phase + " declared"), false);
  const auto& args = data["args"];
  if (action->check_args) {
    if (std::string why = action->check_args(args); !why.empty()) {
      return Answer(call.commit,
                    InvalidArgument(action->name + ": application data does not decode to the action's arguments: " + why),
                    true);
    }
  }

  bool final = false;
  if (!options_.database) {
    TccContext ctx(call.xid, call.branch_id, action->name, call.commit ? TccPhase::kConfirm : TccPhase::kCancel,
                   nullptr);
    Status s = Invoke(action->name, phase, action->final_codes, &final, [&] { return method(ctx, args); });
    return Answer(call.commit, s, final);
  }

  auto tx = options_.database->Begin();
  if (!tx.ok()) return Answer(call.commit, tx.status(), false);
  if (fence_) {
    std::string why;
    auto d = fence_->BeginPhaseTwo(**tx, call.commit, call.xid, call.branch_id, action->name, &why);
    if (!d.ok()) return Answer(call.commit, d.status(), false);
    if (*d == FenceDecision::kRefused) {
      (void)(*tx)->Rollback();
      return Answer(call.commit, FailedPrecondition(why), true);
    }
    if (*d == FenceDecision::kDone) return Answer(call.commit, (*tx)->Commit(), false);
  }
  TccContext ctx(call.xid, call.branch_id, action->name, call.commit ? TccPhase::kConfirm : TccPhase::kCancel,
                 tx->get());
  Status s = Invoke(action->name, phase, action->final_codes, &final, [&] { return method(ctx, args); });
  if (s.ok() && fence_) s = fence_->Finish(**tx, call.commit, call.xid, call.branch_id);
  if (!s.ok()) {
    (void)(*tx)->Rollback();
    return Answer(call.commit, s, final);
  }
  return Answer(call.commit, (*tx)->Commit(), false);
}

}  // namespace dtx::sdk
