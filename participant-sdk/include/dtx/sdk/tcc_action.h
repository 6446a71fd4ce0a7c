// TccAction<Args>: a TCC business action, declared once with its Try, Confirm and Cancel under
// an action name (the branch's resource id), and called like a function inside a global
// transaction:
//
//   auto debit = participant.Tcc<Transfer>("bank-a.debit")
//                    .Try(&Bank::TryDebit, &bank)
//                    .Confirm(&Bank::ConfirmDebit, &bank)
//                    .Cancel(&Bank::CancelDebit, &bank);
//   ...
//   Status s = debit(Transfer{.account = 7, .amount = 100});   // in the thread's transaction
//
// Each method is `Status (TccContext&, const Args&)` (a member function with its object, or any
// callable). Calling the action registers a TCC branch whose application data holds the
// arguments as JSON (Args needs nlohmann-json's to_json/from_json, e.g. through
// NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE), then runs Try in a local transaction of the
// participant's database together with the TCC fence. Phase 2 decodes the same arguments from
// the coordinator's request and runs Confirm or Cancel, in this process, a restarted one, or
// another instance that declared the same action.
//
// Phase-2 failures: an error Status or an exception answers "retry later"; a FinalError thrown,
// or an error whose code the action lists in FinalOn, answers "can never succeed" (the
// transaction then waits for an operator).
//
// Thread-safety: declare before Participant::Start (or accept a registration round trip after);
// calling the action and phase 2 may happen on any threads at once. Copies share one declaration.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "dtx/common/status.h"
#include "dtx/sdk/local_database.h"
#include "dtx/sdk/xid_context.h"

namespace dtx::sdk {

class Participant;

enum class TccPhase { kTry, kConfirm, kCancel };

// What a Try/Confirm/Cancel knows about its call.
class TccContext {
 public:
  TccContext(std::string xid, int64_t branch_id, std::string action, TccPhase phase, LocalTx* local)
      : xid_(std::move(xid)), branch_id_(branch_id), action_(std::move(action)), phase_(phase), local_(local) {}
  const std::string& xid() const { return xid_; }
  int64_t branch_id() const { return branch_id_; }
  const std::string& action() const { return action_; }
  TccPhase phase() const { return phase_; }
  // The local transaction of the participant's database that also holds the fence row: make the
  // business change here and it commits or rolls back with the fence. Null without a database.
  LocalTx* local() const { return local_; }

 private:
  std::string xid_;
  int64_t branch_id_;
  std::string action_;
  TccPhase phase_;
  LocalTx* local_;
};

// Thrown by a Confirm or Cancel that can never succeed: the coordinator stops retrying.
class FinalError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace detail {

using ErasedPhase = std::function<Status(TccContext&, const nlohmann::json& args)>;

struct ActionState {
  std::string name;
  ErasedPhase confirm;
  ErasedPhase cancel;
  // Empty when `args` decode to the action's argument type, else why not.
  std::function<std::string(const nlohmann::json& args)> check_args;
  std::vector<StatusCode> final_codes;
};

// Registers the branch and runs `try_body` under the fence (participant.cc).
Status RunTry(Participant& participant, const ActionState& action, const std::string& xid,
              const std::string& application_data, const std::function<Status(TccContext&)>& try_body);

// The application data of a TCC branch (format v1, docs/participant-sdk.md).
std::string EncodeApplicationData(const std::string& action, const nlohmann::json& args);

}  // namespace detail

template <typename Args>
class TccAction {
 public:
  using Method = std::function<Status(TccContext&, const Args&)>;

  TccAction(Participant* participant, std::shared_ptr<detail::ActionState> state)
      : participant_(participant), shared_(std::make_shared<Shared>()) {
    shared_->state = std::move(state);
    shared_->state->check_args = [](const nlohmann::json& j) -> std::string {
      try {
        (void)j.get<Args>();
        return {};
      } catch (const std::exception& e) {
        return e.what();
      }
    };
  }

  template <typename F>
  TccAction& Try(F&& f) {
    shared_->try_fn = Method(std::forward<F>(f));
    return *this;
  }
  template <typename C>
  TccAction& Try(Status (C::*m)(TccContext&, const Args&), C* object) {
    return Try(Bind(m, object));
  }
  template <typename F>
  TccAction& Confirm(F&& f) {
    shared_->state->confirm = Erase(Method(std::forward<F>(f)));
    return *this;
  }
  template <typename C>
  TccAction& Confirm(Status (C::*m)(TccContext&, const Args&), C* object) {
    return Confirm(Bind(m, object));
  }
  template <typename F>
  TccAction& Cancel(F&& f) {
    shared_->state->cancel = Erase(Method(std::forward<F>(f)));
    return *this;
  }
  template <typename C>
  TccAction& Cancel(Status (C::*m)(TccContext&, const Args&), C* object) {
    return Cancel(Bind(m, object));
  }
  // Errors with these codes from Confirm/Cancel are final (not retried).
  TccAction& FinalOn(std::initializer_list<StatusCode> codes) {
    shared_->state->final_codes.assign(codes.begin(), codes.end());
    return *this;
  }

  // Runs the Try in the transaction bound to this thread (CurrentXid()).
  Status operator()(const Args& args) const { return Call(CurrentXid(), args); }
  // Runs the Try in transaction `xid` (for code that carries the XID itself).
  Status Call(const std::string& xid, const Args& args) const {
    if (!shared_->try_fn) return FailedPrecondition(name() + ": no Try declared");
    std::string data;
    try {
      data = detail::EncodeApplicationData(name(), nlohmann::json(args));
    } catch (const std::exception& e) {
      return InvalidArgument(name() + ": arguments do not serialize to JSON: " + e.what());
    }
    auto try_fn = shared_->try_fn;
    return detail::RunTry(*participant_, *shared_->state, xid, data,
                          [&args, &try_fn](TccContext& ctx) { return try_fn(ctx, args); });
  }

  const std::string& name() const { return shared_->state->name; }

 private:
  struct Shared {
    std::shared_ptr<detail::ActionState> state;
    Method try_fn;
  };

  template <typename C>
  static Method Bind(Status (C::*m)(TccContext&, const Args&), C* object) {
    return [m, object](TccContext& ctx, const Args& a) { return (object->*m)(ctx, a); };
  }
  static detail::ErasedPhase Erase(Method m) {
    return [m = std::move(m)](TccContext& ctx, const nlohmann::json& j) -> Status {
      std::optional<Args> args;
      try {
        args.emplace(j.get<Args>());
      } catch (const std::exception& e) {
        throw FinalError(ctx.action() + ": application data does not decode to the action's arguments: " + e.what());
      }
      return m(ctx, *args);
    };
  }

  Participant* participant_;
  std::shared_ptr<Shared> shared_;
};

}  // namespace dtx::sdk
