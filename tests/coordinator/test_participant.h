// A test participant (RM) and transaction manager built on rpc/: registers with a coordinator,
// registers branches, and answers BranchCommit / BranchRollback as a test tells it to, recording
// every phase-2 call it gets.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "dtx.pb.h"
#include "dtx/rpc/client.h"

namespace dtx::testing {

namespace pb = ::dtx::v1;

struct PhaseTwoCall {
  bool commit;
  std::string xid;
  int64_t branch_id;
  std::string resource_id;
  std::string application_data;
};

class TestParticipant {
 public:
  enum class Answer { kDone, kRetryable, kUnretryable, kNever };

  // Connects to `address` (host:port) and registers for `resources`.
  TestParticipant(const std::string& address, std::vector<std::string> resources, std::string client_id,
                  std::string token = "");
  ~TestParticipant();

  // Status of RegisterParticipant (set once connected).
  pb::Code registration() const { return registration_; }

  void SetAnswer(bool commit, Answer answer) { (commit ? commit_answer_ : rollback_answer_) = answer; }
  std::vector<PhaseTwoCall> calls() const;
  size_t count(bool commit, const std::string& xid = "") const;
  // Waits until `n` phase-2 calls of that kind (for xid, if given) have arrived.
  bool WaitFor(bool commit, size_t n, const std::string& xid = "", std::chrono::milliseconds limit = std::chrono::seconds(10)) const;

  pb::RegisterBranchResponse RegisterBranch(const std::string& xid, const std::string& resource,
                                            std::vector<std::string> lock_keys = {}, pb::BranchType type = pb::TCC,
                                            const std::string& data = "");
  rpc::Client& client() { return *client_; }

 private:
  pb::BranchResponse Handle(bool commit, const pb::BranchRequest& req);

  std::unique_ptr<rpc::Client> client_;
  pb::Code registration_ = pb::INTERNAL;
  std::atomic<Answer> commit_answer_{Answer::kDone};
  std::atomic<Answer> rollback_answer_{Answer::kDone};
  mutable std::mutex mu_;
  std::vector<PhaseTwoCall> calls_;
  std::vector<rpc::TypedResponder<pb::BranchResponse>> parked_;  // kNever: never answered
};

// A transaction manager: Begin / Commit / Rollback / GetStatus.
class TestTm {
 public:
  explicit TestTm(const std::string& address, std::string token = "");
  Result<pb::BeginResponse> Begin(int64_t timeout_ms = 0, const std::string& name = "test");
  Result<pb::CommitResponse> Commit(const std::string& xid);
  Result<pb::RollbackResponse> Rollback(const std::string& xid);
  Result<pb::GetStatusResponse> GetStatus(const std::string& xid);
  // Any coordinator call, over this TM's connection (not registered as a participant).
  template <typename Resp, typename Req>
  Result<Resp> Call(std::string_view method, const Req& request) {
    return client_->CallSync<Resp>("dtx.v1.TransactionCoordinator:1.0", method, request);
  }
  // Polls GetStatus until it says `status` (true) or `limit` passes (false).
  bool WaitForStatus(const std::string& xid, pb::GlobalStatus status,
                     std::chrono::milliseconds limit = std::chrono::seconds(10));

 private:
  std::unique_ptr<rpc::Client> client_;
  std::string token_;
};

}  // namespace dtx::testing
