#include "test_participant.h"

#include <algorithm>
#include <future>
#include <thread>

namespace dtx::testing {

constexpr std::string_view kTc = "dtx.v1.TransactionCoordinator:1.0";
constexpr std::string_view kRm = "dtx.v1.ResourceManager:1.0";

namespace {
rpc::ClientOptions Options(const std::string& address) {
  rpc::ClientOptions o;
  o.addresses = {address};
  o.reconnect_backoff_min = std::chrono::milliseconds(20);
  o.reconnect_backoff_max = std::chrono::milliseconds(200);
  return o;
}
}  // namespace

TestParticipant::TestParticipant(const std::string& address, std::vector<std::string> resources,
                                 std::string client_id, std::string token) {
  auto services = std::make_shared<rpc::ServiceRegistry>();
  for (bool commit : {true, false}) {
    services->AddMethod<pb::BranchRequest, pb::BranchResponse>(
        std::string(kRm), commit ? "BranchCommit" : "BranchRollback",
        [this, commit](const rpc::CallContext&, pb::BranchRequest&& req, rpc::TypedResponder<pb::BranchResponse> r) {
          if ((commit ? commit_answer_ : rollback_answer_).load() == Answer::kNever) {
            std::lock_guard lock(mu_);
            calls_.push_back({commit, req.xid(), req.branch_id(), req.resource_id(), req.application_data()});
            parked_.push_back(std::move(r));  // answered only when the participant goes away
            return;
          }
          r.Reply(Handle(commit, req));
        });
  }
  // Registers on every connection, also after the coordinator restarts, as a real participant does.
  pb::RegisterParticipantRequest req;
  req.set_application("test-app");
  for (auto& r : resources) req.add_resource_ids(r);
  req.set_client_id(client_id);
  req.set_token(token);
  auto first = std::make_shared<std::promise<pb::Code>>();
  auto options = Options(address);
  options.on_connect = [req, first](const std::shared_ptr<rpc::Channel>& conn) {
    conn->Call<pb::RegisterParticipantResponse>(kTc, "RegisterParticipant", req, rpc::CallOptions{},
                                                [first](Result<pb::RegisterParticipantResponse> r) {
                                                  try {
                                                    first->set_value(r.ok() ? r->code() : pb::INTERNAL);
                                                  } catch (const std::future_error&) {
                                                    // registered again after a reconnect
                                                  }
                                                });
  };
  auto registered = first->get_future();
  client_ = std::make_unique<rpc::Client>(options, services);
  if (registered.wait_for(std::chrono::seconds(10)) == std::future_status::ready) registration_ = registered.get();
}

TestParticipant::~TestParticipant() {
  client_->Shutdown(std::chrono::milliseconds(0));
  std::lock_guard lock(mu_);
  parked_.clear();
}

pb::BranchResponse TestParticipant::Handle(bool commit, const pb::BranchRequest& req) {
  {
    std::lock_guard lock(mu_);
    calls_.push_back({commit, req.xid(), req.branch_id(), req.resource_id(), req.application_data()});
  }
  pb::BranchResponse resp;
  switch ((commit ? commit_answer_ : rollback_answer_).load()) {
    case Answer::kDone:
      resp.set_status(commit ? pb::PHASE_TWO_COMMITTED : pb::PHASE_TWO_ROLLBACKED);
      break;
    case Answer::kRetryable:
      resp.set_status(commit ? pb::PHASE_TWO_COMMIT_FAILED_RETRYABLE : pb::PHASE_TWO_ROLLBACK_FAILED_RETRYABLE);
      resp.set_message("try again later");
      break;
    default:
      resp.set_status(commit ? pb::PHASE_TWO_COMMIT_FAILED_UNRETRYABLE : pb::PHASE_TWO_ROLLBACK_FAILED_UNRETRYABLE);
      resp.set_message("the data is gone");
  }
  return resp;
}

std::vector<PhaseTwoCall> TestParticipant::calls() const {
  std::lock_guard lock(mu_);
  return calls_;
}

size_t TestParticipant::count(bool commit, const std::string& xid) const {
  std::lock_guard lock(mu_);
  return static_cast<size_t>(std::count_if(calls_.begin(), calls_.end(), [&](const PhaseTwoCall& c) {
    return c.commit == commit && (xid.empty() || c.xid == xid);
  }));
}

bool TestParticipant::WaitFor(bool commit, size_t n, const std::string& xid, std::chrono::milliseconds limit) const {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (count(commit, xid) < n) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

pb::RegisterBranchResponse TestParticipant::RegisterBranch(const std::string& xid, const std::string& resource,
                                                           std::vector<std::string> lock_keys, pb::BranchType type,
                                                           const std::string& data) {
  pb::RegisterBranchRequest req;
  req.set_xid(xid);
  req.set_resource_id(resource);
  req.set_branch_type(type);
  for (auto& k : lock_keys) req.add_lock_keys(k);
  req.set_application_data(data);
  auto r = client_->CallSync<pb::RegisterBranchResponse>(kTc, "RegisterBranch", req);
  if (!r.ok()) {
    pb::RegisterBranchResponse failed;
    failed.set_code(pb::INTERNAL);
    failed.set_message(r.status().ToString());
    return failed;
  }
  return *r;
}

TestTm::TestTm(const std::string& address, std::string token)
    : client_(std::make_unique<rpc::Client>(Options(address))), token_(std::move(token)) {
  (void)client_->WaitConnected(std::chrono::seconds(10));
}

Result<pb::BeginResponse> TestTm::Begin(int64_t timeout_ms, const std::string& name) {
  pb::BeginRequest req;
  req.set_name(name);
  req.set_timeout_ms(timeout_ms);
  req.set_token(token_);
  return client_->CallSync<pb::BeginResponse>(kTc, "Begin", req);
}

Result<pb::CommitResponse> TestTm::Commit(const std::string& xid) {
  pb::CommitRequest req;
  req.set_xid(xid);
  req.set_token(token_);
  return client_->CallSync<pb::CommitResponse>(kTc, "Commit", req);
}

Result<pb::RollbackResponse> TestTm::Rollback(const std::string& xid) {
  pb::RollbackRequest req;
  req.set_xid(xid);
  req.set_token(token_);
  return client_->CallSync<pb::RollbackResponse>(kTc, "Rollback", req);
}

Result<pb::GetStatusResponse> TestTm::GetStatus(const std::string& xid) {
  pb::GetStatusRequest req;
  req.set_xid(xid);
  req.set_token(token_);
  return client_->CallSync<pb::GetStatusResponse>(kTc, "GetStatus", req);
}

bool TestTm::WaitForStatus(const std::string& xid, pb::GlobalStatus status, std::chrono::milliseconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    auto r = GetStatus(xid);
    if (r.ok() && r->code() == pb::OK && r->status() == status) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

}  // namespace dtx::testing
