#include "dtx/sdk/coordinator_client.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "dtx.pb.h"
#include "dtx/rpc/client.h"

namespace dtx::sdk {

namespace pb = ::dtx::v1;

namespace {

constexpr std::string_view kTc = "dtx.v1.TransactionCoordinator:1.0";
constexpr std::string_view kRm = "dtx.v1.ResourceManager:1.0";

Status FromCode(pb::Code code, const std::string& message) {
  std::string text = pb::Code_Name(code);
  if (text.empty()) text = "CODE_" + std::to_string(static_cast<int>(code));
  text += ": " + message;
  switch (code) {
    case pb::INVALID_ARGUMENT: return InvalidArgument(std::move(text));
    case pb::UNAUTHENTICATED: return Status(StatusCode::kUnauthenticated, std::move(text));
    case pb::XID_NOT_FOUND:
    case pb::BRANCH_NOT_FOUND: return NotFound(std::move(text));
    case pb::TIMED_OUT: return Timeout(std::move(text));
    case pb::LOCK_CONFLICT: return ResourceExhausted(std::move(text));
    case pb::LOG_UNAVAILABLE:
    case pb::SHUTTING_DOWN: return Unavailable(std::move(text));
    case pb::INTERNAL: return Internal(std::move(text));
    default: return FailedPrecondition(std::move(text));  // NOT_REGISTERED, NOT_ACTIVE, ALREADY_*
  }
}

// Worth sending again: the call may not have reached a coordinator, or that one cannot act now.
bool Transient(const Status& s) {
  return s.code() == StatusCode::kUnavailable || s.code() == StatusCode::kCancelled;
}

template <typename Resp>
TxState StateOf(const Resp& r) {
  TxState t;
  t.status = static_cast<GlobalStatus>(r.status());
  t.outcome = static_cast<Outcome>(r.outcome());
  return t;
}

}  // namespace

std::string_view GlobalStatusName(GlobalStatus s) {
  static const std::string_view names[] = {
      "Unknown", "Begin", "Committing", "CommitRetrying", "Rollbacking", "RollbackRetrying",
      "TimeoutRollbacking", "TimeoutRollbackRetrying", "AsyncCommitting", "Committed", "CommitFailed",
      "Rollbacked", "RollbackFailed", "TimeoutRollbacked", "TimeoutRollbackFailed"};
  const int i = static_cast<int>(s);
  return i >= 0 && i < 15 ? names[i] : "Unknown";
}

bool IsFinal(GlobalStatus s) {
  return s == GlobalStatus::kCommitted || s == GlobalStatus::kRollbacked || s == GlobalStatus::kTimeoutRollbacked;
}

bool IsLockConflict(const Status& s) {
  return s.code() == StatusCode::kResourceExhausted && s.message().rfind("LOCK_CONFLICT", 0) == 0;
}

struct CoordinatorClient::Impl : std::enable_shared_from_this<Impl> {
  CoordinatorOptions options;
  BranchHandler handler;
  std::unique_ptr<rpc::Client> client;

  mutable std::mutex mu;
  std::condition_variable cv;
  std::vector<std::string> resources;
  uint64_t version = 1;  // of `resources`
  struct Conn {
    std::weak_ptr<rpc::Channel> channel;
    uint64_t registered_version = 0;  // 0: not (yet) registered
  };
  std::vector<Conn> conns;

  bool participant() const { return handler != nullptr || !resources.empty(); }

  // Sends this participant's registration over `conn` (any thread, never blocks).
  void Register(const std::shared_ptr<rpc::Channel>& conn) {
    pb::RegisterParticipantRequest req;
    uint64_t v;
    {
      std::lock_guard lock(mu);
      req.set_application(options.application);
      for (const auto& r : resources) req.add_resource_ids(r);
      req.set_client_id(options.client_id);
      req.set_token(options.token);
      v = version;
    }
    rpc::CallOptions co;
    co.timeout = options.call_timeout;
    conn->Call<pb::RegisterParticipantResponse>(
        kTc, "RegisterParticipant", req, co,
        [weak = weak_from_this(), raw = conn.get(), v](Result<pb::RegisterParticipantResponse> r) {
          auto self = weak.lock();
          if (!self) return;
          if (!r.ok() || r->code() != pb::OK) {
            spdlog::error("dtx sdk: RegisterParticipant failed: {}",
                          r.ok() ? FromCode(r->code(), r->message()).ToString() : r.status().ToString());
            return;
          }
          std::lock_guard lock(self->mu);
          for (auto& c : self->conns) {
            auto ch = c.channel.lock();
            if (ch.get() == raw) c.registered_version = std::max(c.registered_version, v);
          }
          self->cv.notify_all();
        });
  }

  void OnConnect(const std::shared_ptr<rpc::Channel>& conn) {
    {
      std::lock_guard lock(mu);
      std::erase_if(conns, [](const Conn& c) { return c.channel.expired(); });
      conns.push_back({conn, 0});
      if (!participant()) return;
    }
    Register(conn);
  }

  bool RegisteredLocked() const {
    for (const auto& c : conns)
      if (c.registered_version == version && !c.channel.expired()) return true;
    return false;
  }

  template <typename Resp, typename Req>
  Result<Resp> Call(std::string_view method, const Req& req, bool resend_after_timeout = true) {
    Status last = Unavailable("no coordinator reachable at any address");
    for (int attempt = 0; attempt < std::max(1, options.attempts); ++attempt) {
      if (attempt > 0) std::this_thread::sleep_for(std::chrono::milliseconds(50 * attempt));
      if (client->live_connections() == 0 && !client->WaitConnected(options.connect_wait).ok()) {
        last = Unavailable("no coordinator reachable at any of " + std::to_string(options.addresses.size()) +
                           " address(es)");
        continue;
      }
      rpc::CallOptions co;
      co.timeout = options.call_timeout;
      auto r = client->CallSync<Resp>(kTc, method, req, co);
      if (!r.ok()) {
        last = r.status().WithContext(std::string(method));
        if (Transient(last) || (resend_after_timeout && last.code() == StatusCode::kTimeout)) continue;
        return last;
      }
      if (r->code() == pb::LOG_UNAVAILABLE || r->code() == pb::SHUTTING_DOWN) {
        last = FromCode(r->code(), r->message());
        continue;
      }
      return r;
    }
    return last;
  }
};

CoordinatorClient::CoordinatorClient(CoordinatorOptions options, BranchHandler handler)
    : impl_(std::make_shared<Impl>()) {
  impl_->options = std::move(options);
  impl_->handler = std::move(handler);
  impl_->resources = impl_->options.resource_ids;
  std::shared_ptr<rpc::ServiceRegistry> services;
  if (impl_->handler) {
    services = std::make_shared<rpc::ServiceRegistry>();
    for (bool commit : {true, false}) {
      services->AddMethod<pb::BranchRequest, pb::BranchResponse>(
          std::string(kRm), commit ? "BranchCommit" : "BranchRollback",
          [weak = std::weak_ptr<Impl>(impl_), commit](const rpc::CallContext&, pb::BranchRequest&& req,
                                                      rpc::TypedResponder<pb::BranchResponse> reply) {
            auto self = weak.lock();
            if (!self) return reply.Fail(Unavailable("participant is shutting down"));
            BranchCall call;
            call.commit = commit;
            call.xid = req.xid();
            call.branch_id = req.branch_id();
            call.resource_id = req.resource_id();
            call.type = static_cast<BranchType>(req.branch_type());
            call.application_data = std::move(*req.mutable_application_data());
            self->handler(std::move(call), [reply](BranchAnswer a) mutable {
              pb::BranchResponse resp;
              resp.set_status(static_cast<pb::BranchStatus>(a.status));
              resp.set_message(std::move(a.message));
              reply.Reply(resp);
            });
          });
    }
  }
  rpc::ClientOptions co;
  co.addresses = impl_->options.addresses;
  co.io_threads = std::max(1u, impl_->options.io_threads);
  co.reconnect_backoff_min = impl_->options.reconnect_backoff_min;
  co.reconnect_backoff_max = impl_->options.reconnect_backoff_max;
  co.on_connect = [weak = std::weak_ptr<Impl>(impl_)](const std::shared_ptr<rpc::Channel>& conn) {
    if (auto self = weak.lock()) self->OnConnect(conn);
  };
  impl_->client = std::make_unique<rpc::Client>(std::move(co), std::move(services));
}

CoordinatorClient::~CoordinatorClient() { Shutdown(); }

void CoordinatorClient::Shutdown() {
  if (impl_->client) impl_->client->Shutdown(std::chrono::milliseconds(0));
}

const CoordinatorOptions& CoordinatorClient::options() const { return impl_->options; }

Result<std::string> CoordinatorClient::Begin(std::string_view name, std::chrono::milliseconds timeout,
                                             std::string_view application_data) {
  pb::BeginRequest req;
  req.set_name(std::string(name));
  req.set_timeout_ms(timeout.count());
  req.set_application(impl_->options.application);
  req.set_token(impl_->options.token);
  req.set_application_data(std::string(application_data));
  auto r = impl_->Call<pb::BeginResponse>("Begin", req);
  if (!r.ok()) return r.status();
  if (r->code() != pb::OK) return FromCode(r->code(), r->message());
  return r->xid();
}

Result<TxState> CoordinatorClient::Commit(const std::string& xid) {
  pb::CommitRequest req;
  req.set_xid(xid);
  req.set_token(impl_->options.token);
  auto r = impl_->Call<pb::CommitResponse>("Commit", req);
  if (!r.ok()) return r.status();
  if (r->code() != pb::OK) return FromCode(r->code(), r->message());
  return StateOf(*r);
}

Result<TxState> CoordinatorClient::Rollback(const std::string& xid) {
  pb::RollbackRequest req;
  req.set_xid(xid);
  req.set_token(impl_->options.token);
  auto r = impl_->Call<pb::RollbackResponse>("Rollback", req);
  if (!r.ok()) return r.status();
  if (r->code() != pb::OK) return FromCode(r->code(), r->message());
  return StateOf(*r);
}

Result<TxState> CoordinatorClient::GetStatus(const std::string& xid) {
  pb::GetStatusRequest req;
  req.set_xid(xid);
  req.set_token(impl_->options.token);
  auto r = impl_->Call<pb::GetStatusResponse>("GetStatus", req);
  if (!r.ok()) return r.status();
  if (r->code() != pb::OK) return FromCode(r->code(), r->message());
  return StateOf(*r);
}

Result<TxState> CoordinatorClient::Report(const std::string& xid, GlobalStatus status) {
  pb::ReportRequest req;
  req.set_xid(xid);
  req.set_status(static_cast<pb::GlobalStatus>(status));
  req.set_token(impl_->options.token);
  auto r = impl_->Call<pb::ReportResponse>("Report", req);
  if (!r.ok()) return r.status();
  if (r->code() != pb::OK) return FromCode(r->code(), r->message());
  return StateOf(*r);
}

Status CoordinatorClient::AddResources(const std::vector<std::string>& resource_ids) {
  std::vector<std::shared_ptr<rpc::Channel>> live;
  {
    std::lock_guard lock(impl_->mu);
    bool added = false;
    for (const auto& r : resource_ids) {
      if (std::find(impl_->resources.begin(), impl_->resources.end(), r) != impl_->resources.end()) continue;
      impl_->resources.push_back(r);
      added = true;
    }
    if (!added) return Status::Ok();
    ++impl_->version;
    for (const auto& c : impl_->conns)
      if (auto ch = c.channel.lock()) live.push_back(std::move(ch));
  }
  for (const auto& ch : live) impl_->Register(ch);
  return WaitRegistered(impl_->options.connect_wait);
}

std::vector<std::string> CoordinatorClient::resources() const {
  std::lock_guard lock(impl_->mu);
  return impl_->resources;
}

Status CoordinatorClient::WaitRegistered(std::chrono::milliseconds timeout) {
  std::unique_lock lock(impl_->mu);
  if (!impl_->participant()) return Status::Ok();
  if (!impl_->cv.wait_for(lock, timeout, [&] { return impl_->RegisteredLocked(); })) {
    return Unavailable("not registered with any coordinator within " + std::to_string(timeout.count()) + " ms");
  }
  return Status::Ok();
}

Result<int64_t> CoordinatorClient::RegisterBranch(const BranchRegistration& branch) {
  pb::RegisterBranchRequest req;
  req.set_xid(branch.xid);
  req.set_resource_id(branch.resource_id);
  req.set_branch_type(static_cast<pb::BranchType>(branch.type));
  for (const auto& k : branch.lock_keys) req.add_lock_keys(k);
  req.set_application_data(branch.application_data);
  for (int round = 0; round < 2; ++round) {
    (void)WaitRegistered(impl_->options.connect_wait);
    // A registration whose answer was lost may have happened: never send it again after a
    // timeout (the coordinator would hold two branches for one Try).
    auto r = impl_->Call<pb::RegisterBranchResponse>("RegisterBranch", req, /*resend_after_timeout=*/false);
    if (!r.ok()) return r.status();
    if (r->code() == pb::NOT_REGISTERED && round == 0) continue;  // a reconnect raced the call
    if (r->code() == pb::LOCK_CONFLICT) {
      return FromCode(r->code(), r->message() + " (key " + r->conflict_key() + " held by " + r->conflict_xid() + ")");
    }
    if (r->code() != pb::OK) return FromCode(r->code(), r->message());
    return r->branch_id();
  }
  return FailedPrecondition("NOT_REGISTERED: the coordinator did not take this participant's registration");
}

Status CoordinatorClient::ReportBranch(const std::string& xid, int64_t branch_id, BranchStatus status,
                                       std::string_view application_data) {
  pb::ReportBranchRequest req;
  req.set_xid(xid);
  req.set_branch_id(branch_id);
  req.set_status(static_cast<pb::BranchStatus>(status));
  req.set_application_data(std::string(application_data));
  (void)WaitRegistered(impl_->options.connect_wait);
  auto r = impl_->Call<pb::ReportBranchResponse>("ReportBranch", req);
  if (!r.ok()) return r.status();
  if (r->code() != pb::OK) return FromCode(r->code(), r->message());
  return Status::Ok();
}

Result<LockQuery> CoordinatorClient::QueryLocks(const std::string& xid, const std::string& resource_id,
                                                const std::vector<std::string>& lock_keys) {
  pb::QueryLocksRequest req;
  req.set_xid(xid);
  req.set_resource_id(resource_id);
  for (const auto& k : lock_keys) req.add_lock_keys(k);
  (void)WaitRegistered(impl_->options.connect_wait);
  auto r = impl_->Call<pb::QueryLocksResponse>("QueryLocks", req);
  if (!r.ok()) return r.status();
  if (r->code() != pb::OK) return FromCode(r->code(), r->message());
  LockQuery q;
  q.free = r->free();
  q.conflict_key = r->conflict_key();
  q.conflict_xid = r->conflict_xid();
  return q;
}

}  // namespace dtx::sdk
