// The TCC fence on SQLite and PostgreSQL: idempotent phase 2, empty rollback, suspension,
// a Cancel racing its Try, and the clean-up of old rows.
#include <gtest/gtest.h>

#include <atomic>
#include <future>
#include <thread>

#include "backends.h"
#include "dtx/sdk/tcc_fence.h"

namespace dtx::sdk::testing {
namespace {

class TccFenceTest : public BackendTest {
 protected:
  void SetUp() override {
    BackendTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    fence_ = std::make_unique<TccFence>(db_, [this] { return now_.load(); });
    ASSERT_TRUE(fence_->CreateTable().ok());
    ASSERT_TRUE(fence_->CreateTable().ok()) << "creating it again is harmless";
  }

  Status Try(const std::string& xid, int64_t branch) {
    return InLocalTx(*db_, [&](LocalTx& tx) { return fence_->BeginTry(tx, xid, branch, "act"); });
  }
  // Phase 2 as the participant runs it: decide, run (count), finish, commit.
  Result<FenceDecision> PhaseTwo(bool commit, const std::string& xid, int64_t branch) {
    auto tx = db_->Begin();
    if (!tx.ok()) return tx.status();
    auto d = fence_->BeginPhaseTwo(**tx, commit, xid, branch, "act", nullptr);
    if (!d.ok()) return d.status();
    if (*d == FenceDecision::kRun) {
      ++business_runs_;
      if (Status s = fence_->Finish(**tx, commit, xid, branch); !s.ok()) return s;
    }
    if (Status s = (*tx)->Commit(); !s.ok()) return s;
    return *d;
  }
  std::optional<FenceState> State(const std::string& xid, int64_t branch) {
    auto s = fence_->Lookup(xid, branch);
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? *s : std::nullopt;
  }

  std::atomic<int64_t> now_{1'000'000};
  std::unique_ptr<TccFence> fence_;
  int business_runs_ = 0;
};

TEST_P(TccFenceTest, ConfirmRunsOnceHoweverOftenDelivered) {
  ASSERT_TRUE(Try("tc:1", 1).ok());
  EXPECT_EQ(State("tc:1", 1), FenceState::kTried);
  EXPECT_EQ(*PhaseTwo(true, "tc:1", 1), FenceDecision::kRun);
  EXPECT_EQ(*PhaseTwo(true, "tc:1", 1), FenceDecision::kDone);
  EXPECT_EQ(*PhaseTwo(true, "tc:1", 1), FenceDecision::kDone);
  EXPECT_EQ(business_runs_, 1);
  EXPECT_EQ(State("tc:1", 1), FenceState::kCommitted);
  EXPECT_EQ(*PhaseTwo(false, "tc:1", 1), FenceDecision::kRefused) << "a committed branch cannot be cancelled";
}

TEST_P(TccFenceTest, CancelRunsOnceHoweverOftenDelivered) {
  ASSERT_TRUE(Try("tc:2", 1).ok());
  EXPECT_EQ(*PhaseTwo(false, "tc:2", 1), FenceDecision::kRun);
  EXPECT_EQ(*PhaseTwo(false, "tc:2", 1), FenceDecision::kDone);
  EXPECT_EQ(business_runs_, 1);
  EXPECT_EQ(State("tc:2", 1), FenceState::kRollbacked);
  EXPECT_EQ(*PhaseTwo(true, "tc:2", 1), FenceDecision::kRefused);
}

TEST_P(TccFenceTest, EmptyRollbackIsRecordedAndTheLateTryRefused) {
  EXPECT_EQ(*PhaseTwo(false, "tc:3", 7), FenceDecision::kDone) << "cancel before try: nothing to undo";
  EXPECT_EQ(business_runs_, 0);
  EXPECT_EQ(State("tc:3", 7), FenceState::kSuspended);
  Status late = Try("tc:3", 7);
  EXPECT_EQ(late.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(late.message().find("suspended"), std::string_view::npos) << late;
  EXPECT_EQ(State("tc:3", 7), FenceState::kSuspended);
  EXPECT_EQ(*PhaseTwo(false, "tc:3", 7), FenceDecision::kDone) << "the cancel delivered again";
  // Other branches of the same transaction are their own.
  EXPECT_TRUE(Try("tc:3", 8).ok());
}

TEST_P(TccFenceTest, TryRolledBackLeavesNoRow) {
  Status s = InLocalTx(*db_, [&](LocalTx& tx) -> Status {
    DTX_RETURN_IF_ERROR(fence_->BeginTry(tx, "tc:4", 1, "act"));
    return FailedPrecondition("business refused");
  });
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(State("tc:4", 1), std::nullopt);
  EXPECT_EQ(*PhaseTwo(false, "tc:4", 1), FenceDecision::kDone);
  EXPECT_EQ(business_runs_, 0);
}

TEST_P(TccFenceTest, CancelRacingAnUncommittedTryWaitsAndThenUndoesIt) {
  auto try_tx = db_->Begin();
  ASSERT_TRUE(try_tx.ok());
  ASSERT_TRUE(fence_->BeginTry(**try_tx, "tc:5", 1, "act").ok());
  auto cancel = std::async(std::launch::async, [&] { return PhaseTwo(false, "tc:5", 1); });
  EXPECT_EQ(cancel.wait_for(std::chrono::milliseconds(300)), std::future_status::timeout)
      << "the cancel waits for the Try's local transaction";
  ASSERT_TRUE((*try_tx)->Commit().ok());
  auto d = cancel.get();
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(*d, FenceDecision::kRun) << "the Try committed: its effect is undone";
  EXPECT_EQ(State("tc:5", 1), FenceState::kRollbacked);
}

TEST_P(TccFenceTest, CleanRemovesOnlyOldFinishedRows) {
  ASSERT_TRUE(Try("tc:6", 1).ok());                       // stays Tried
  ASSERT_TRUE(Try("tc:6", 2).ok());
  ASSERT_EQ(*PhaseTwo(true, "tc:6", 2), FenceDecision::kRun);  // Committed
  ASSERT_EQ(*PhaseTwo(false, "tc:6", 3), FenceDecision::kDone);  // Suspended
  now_ += 10'000;
  ASSERT_TRUE(Try("tc:7", 1).ok());
  ASSERT_EQ(*PhaseTwo(true, "tc:7", 1), FenceDecision::kRun);  // Committed, recent

  auto n = fence_->Clean(std::chrono::milliseconds(5'000));
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, 2);
  EXPECT_EQ(State("tc:6", 1), FenceState::kTried) << "a branch waiting for phase 2 keeps its row";
  EXPECT_EQ(State("tc:6", 2), std::nullopt);
  EXPECT_EQ(State("tc:6", 3), std::nullopt);
  EXPECT_EQ(State("tc:7", 1), FenceState::kCommitted);
  EXPECT_EQ(*fence_->Clean(std::chrono::milliseconds(5'000)), 0);

  // Batches: limit bounds one pass.
  for (int i = 0; i < 5; ++i) ASSERT_EQ(*PhaseTwo(false, "tc:8", 100 + i), FenceDecision::kDone);
  now_ += 100'000;
  EXPECT_EQ(*fence_->Clean(std::chrono::milliseconds(5'000), 4), 4);
  EXPECT_EQ(*fence_->Clean(std::chrono::milliseconds(5'000), 4), 2);
}

INSTANTIATE_TEST_SUITE_P(Backends, TccFenceTest, ::testing::Values(Dialect::kSqlite, Dialect::kPostgres),
                         BackendName);

}  // namespace
}  // namespace dtx::sdk::testing
