// The TCC participant in this process against a real dtx-coordinator: Try / Confirm / Cancel
// with the fence, phase 2 replayed, retryable and final failures, phase 2 reaching a new
// instance, running without a database.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <stdexcept>

#include "dtx/sdk/participant.h"
#include "dtx/sdk/transaction_manager.h"
#include "sdk_harness.h"

namespace dtx::sdk::testing {
namespace {

using ::dtx::testing::CoordinatorProcess;
using namespace std::chrono_literals;

struct Points {
  std::string user;
  int64_t points = 0;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(Points, user, points)

// A loyalty service: Try reserves points, Confirm grants them, Cancel drops the reservation.
struct Loyalty {
  std::atomic<int> tries{0}, confirms{0}, cancels{0};
  std::atomic<int> confirm_failures_left{0};
  std::atomic<int> confirm_throws_left{0};
  std::atomic<bool> confirm_final{false};
  std::atomic<int64_t> last_branch{0};

  Status Try(TccContext& ctx, const Points& p) {
    ++tries;
    last_branch = ctx.branch_id();
    if (p.points <= 0) return InvalidArgument("points must be positive");
    if (!ctx.local()) return Status::Ok();
    return ctx.local()->Exec("INSERT INTO reserved (xid, usr, points) VALUES (?, ?, ?)", {ctx.xid(), p.user, p.points})
        .status();
  }
  Status Confirm(TccContext& ctx, const Points& p) {
    if (confirm_final) throw FinalError("the account is closed");
    if (confirm_failures_left.fetch_sub(1) > 0) return Unavailable("ledger busy");
    if (confirm_throws_left.fetch_sub(1) > 0) throw std::runtime_error("ledger crashed");
    ++confirms;
    if (!ctx.local()) return Status::Ok();
    DTX_RETURN_IF_ERROR(ctx.local()->Exec("DELETE FROM reserved WHERE xid = ?", {ctx.xid()}).status());
    return ctx.local()->Exec("INSERT INTO granted (xid, usr, points) VALUES (?, ?, ?)", {ctx.xid(), p.user, p.points})
        .status();
  }
  Status Cancel(TccContext& ctx, const Points&) {
    ++cancels;
    if (!ctx.local()) return Status::Ok();
    return ctx.local()->Exec("DELETE FROM reserved WHERE xid = ?", {ctx.xid()}).status();
  }
};

class ParticipantTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto db = OpenLocalDatabase("sqlite:" + dir_.file("loyalty.db"));
    ASSERT_TRUE(db.ok());
    db_ = *db;
    ASSERT_TRUE(InLocalTx(*db_, [](LocalTx& tx) -> Status {
                  DTX_RETURN_IF_ERROR(tx.Exec("CREATE TABLE reserved (xid TEXT, usr TEXT, points BIGINT)").status());
                  return tx.Exec("CREATE TABLE granted (xid TEXT, usr TEXT, points BIGINT)").status();
                }).ok());
  }

  std::unique_ptr<Participant> MakeParticipant(Loyalty& svc, bool with_db = true,
                                               std::chrono::milliseconds cleanup_interval = std::chrono::minutes(10)) {
    ParticipantOptions o;
    o.fence_cleanup_interval = cleanup_interval;
    o.fence_retention = cleanup_interval;
    o.coordinator.addresses = {tc_.address()};
    o.coordinator.application = "loyalty";
    o.database = with_db ? db_ : nullptr;
    o.fence = with_db;
    auto rm = std::make_unique<Participant>(o);
    action_ = std::make_unique<TccAction<Points>>(rm->Tcc<Points>("loyalty.points")
                                                      .Try(&Loyalty::Try, &svc)
                                                      .Confirm(&Loyalty::Confirm, &svc)
                                                      .Cancel(&Loyalty::Cancel, &svc));
    EXPECT_TRUE(rm->Start().ok());
    return rm;
  }

  int64_t Count(const char* table) {
    auto tx = db_->Begin();
    EXPECT_TRUE(tx.ok());
    return AsInt((*(*tx)->Query(std::string("SELECT COUNT(*) FROM ") + table))[0][0]);
  }

  static bool WaitFor(const std::function<bool()>& cond, std::chrono::milliseconds limit = 10s) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (!cond()) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      std::this_thread::sleep_for(10ms);
    }
    return true;
  }

  TempDir dir_;
  CoordinatorProcess tc_;
  std::shared_ptr<LocalDatabase> db_;
  std::unique_ptr<TccAction<Points>> action_;
};

TEST_F(ParticipantTest, CommitConfirmsOnceAndAReplayedDeliveryChangesNothing) {
  Loyalty svc;
  auto rm = MakeParticipant(svc);
  TransactionManager tm(rm->coordinator());  // one connection for both roles
  std::string xid;
  Status s = GlobalTransactional(tm, {.name = "grant"}, [&](GlobalTx& tx) {
    xid = tx.xid();
    return (*action_)({.user = "ann", .points = 30});
  });
  ASSERT_TRUE(s.ok()) << s;
  ASSERT_TRUE(WaitFor([&] { return svc.confirms == 1; }));
  ASSERT_TRUE(WaitNoneUnfinished(tc_.admin_port()));
  EXPECT_EQ(Count("granted"), 1);
  EXPECT_EQ(Count("reserved"), 0);

  // The coordinator delivers the same Confirm again (as after its own crash).
  BranchCall again{.commit = true, .xid = xid, .branch_id = svc.last_branch, .resource_id = "loyalty.points",
                   .type = BranchType::kTCC,
                   .application_data = detail::EncodeApplicationData("loyalty.points", Points{"ann", 30})};
  EXPECT_EQ(rm->RunPhaseTwo(again).status, BranchStatus::kPhaseTwoCommitted);
  EXPECT_EQ(svc.confirms, 1);
  EXPECT_EQ(Count("granted"), 1);
  again.commit = false;
  EXPECT_EQ(rm->RunPhaseTwo(again).status, BranchStatus::kPhaseTwoRollbackFailedUnretryable)
      << "a confirmed branch is never cancelled";
}

TEST_F(ParticipantTest, RollbackCancelsAndAFailedTryNeedsNoCancel) {
  Loyalty svc;
  auto rm = MakeParticipant(svc);
  TransactionManager tm(rm->coordinator());
  Status s = GlobalTransactional(tm, {.name = "grant"}, [&](GlobalTx&) -> Status {
    DTX_RETURN_IF_ERROR((*action_)({.user = "bob", .points = 5}));
    return FailedPrecondition("the order was refused");
  });
  EXPECT_EQ(s.message(), "the order was refused");
  ASSERT_TRUE(WaitFor([&] { return svc.cancels == 1; }));
  EXPECT_EQ(Count("reserved"), 0);

  // A Try that fails rolls back its local transaction and is reported failed: no Cancel comes.
  s = GlobalTransactional(tm, {.name = "grant"}, [&](GlobalTx&) { return (*action_)({.user = "bob", .points = -1}); });
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  ASSERT_TRUE(WaitNoneUnfinished(tc_.admin_port()));
  EXPECT_EQ(svc.cancels, 1);
  EXPECT_EQ(svc.confirms, 0);
}

TEST_F(ParticipantTest, CallingAnActionOutsideATransactionIsRefused) {
  Loyalty svc;
  auto rm = MakeParticipant(svc);
  Status s = (*action_)({.user = "cy", .points = 1});
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition) << s;
  EXPECT_EQ(svc.tries, 0);
  EXPECT_EQ(action_->Call("not an xid", {.user = "cy", .points = 1}).code(), StatusCode::kInvalidArgument);
}

TEST_F(ParticipantTest, AFailingConfirmIsRetriedUntilItSucceeds) {
  Loyalty svc;
  svc.confirm_failures_left = 2;  // two error statuses, then an exception: all "retry later"
  svc.confirm_throws_left = 1;
  auto rm = MakeParticipant(svc);
  TransactionManager tm(rm->coordinator());
  ASSERT_TRUE(GlobalTransactional(tm, {.name = "grant"}, [&](GlobalTx&) {
                return (*action_)({.user = "dee", .points = 2});
              }).ok());
  ASSERT_TRUE(WaitFor([&] { return svc.confirms == 1; }));
  ASSERT_TRUE(WaitNoneUnfinished(tc_.admin_port()));
  EXPECT_LE(svc.confirm_failures_left, 0);
  EXPECT_LE(svc.confirm_throws_left, 0);
  EXPECT_EQ(Count("granted"), 1);
}

TEST_F(ParticipantTest, AFinalFailureStopsTheRetries) {
  Loyalty svc;
  svc.confirm_final = true;
  auto rm = MakeParticipant(svc);
  TransactionManager tm(rm->coordinator());
  std::string xid;
  ASSERT_TRUE(GlobalTransactional(tm, {.name = "grant"}, [&](GlobalTx& tx) {
                xid = tx.xid();
                return (*action_)({.user = "eve", .points = 2});
              }).ok());
  ASSERT_TRUE(WaitFor([&] {
    auto st = tm.coordinator().GetStatus(xid);
    return st.ok() && st->status == GlobalStatus::kCommitFailed;
  })) << "an unretryable answer leaves the transaction to an operator";
  EXPECT_EQ(svc.confirms, 0);
  EXPECT_EQ(Count("granted"), 0) << "the failed Confirm's local transaction rolled back";
}

TEST_F(ParticipantTest, PhaseTwoReachesANewInstanceWithTheSameArguments) {
  Loyalty first_svc, second_svc;
  auto first = MakeParticipant(first_svc);
  CoordinatorOptions tm_options;
  tm_options.addresses = {tc_.address()};
  TransactionManager tm(tm_options);
  auto tx = tm.Begin({.name = "grant", .timeout = 30s});
  ASSERT_TRUE(tx.ok());
  {
    XidScope scope(tx->xid());
    ASSERT_TRUE((*action_)({.user = "fay", .points = 11}).ok());
  }
  first->Stop();
  first.reset();  // the instance that ran the Try is gone
  auto second = MakeParticipant(second_svc);
  ASSERT_TRUE(tx->Commit().ok());
  ASSERT_TRUE(WaitFor([&] { return second_svc.confirms == 1; }));
  auto tr = db_->Begin();
  auto rows = (*tr)->Query("SELECT usr, points FROM granted");
  ASSERT_TRUE(rows.ok());
  ASSERT_EQ(rows->size(), 1u);
  EXPECT_EQ(std::get<std::string>((*rows)[0][0]), "fay");
  EXPECT_EQ(AsInt((*rows)[0][1]), 11);
}

TEST_F(ParticipantTest, WithoutADatabaseTheActionsRunUnfenced) {
  Loyalty svc;
  auto rm = MakeParticipant(svc, /*with_db=*/false);
  TransactionManager tm(rm->coordinator());
  ASSERT_TRUE(GlobalTransactional(tm, {.name = "grant"}, [&](GlobalTx&) {
                return (*action_)({.user = "gus", .points = 1});
              }).ok());
  ASSERT_TRUE(WaitFor([&] { return svc.confirms == 1; }));
  ParticipantOptions fenced_without_db;
  fenced_without_db.coordinator.addresses = {tc_.address()};
  Participant bad(fenced_without_db);
  EXPECT_EQ(bad.Start().code(), StatusCode::kInvalidArgument) << "the fence is on by default and needs a database";
}

TEST_F(ParticipantTest, OldFenceRowsAreCleanedUpInTheBackground) {
  Loyalty svc;
  auto rm = MakeParticipant(svc, true, /*cleanup_interval (and retention)=*/200ms);
  TransactionManager tm(rm->coordinator());
  ASSERT_TRUE(GlobalTransactional(tm, {.name = "grant"}, [&](GlobalTx&) {
                return (*action_)({.user = "hal", .points = 3});
              }).ok());
  ASSERT_TRUE(WaitFor([&] { return svc.confirms == 1; }));
  EXPECT_TRUE(WaitFor([&] { return Count("dtx_tcc_fence") == 0; })) << "the Committed row goes after its retention";
  EXPECT_EQ(Count("granted"), 1);
}

TEST_F(ParticipantTest, DamagedApplicationDataIsAFinalFailureNotACrash) {
  Loyalty svc;
  auto rm = MakeParticipant(svc);
  for (const std::string& data : {std::string("{not json"), std::string("[1,2]"), std::string("{\"dtx_tcc\":9}"),
                                  std::string("{\"dtx_tcc\":1,\"args\":{\"user\":5}}")}) {
    BranchCall call{.commit = true, .xid = "tc:1", .branch_id = 1, .resource_id = "loyalty.points",
                    .type = BranchType::kTCC, .application_data = data};
    EXPECT_EQ(rm->RunPhaseTwo(call).status, BranchStatus::kPhaseTwoCommitFailedUnretryable) << data;
  }
  BranchCall unknown{.commit = false, .xid = "tc:1", .branch_id = 2, .resource_id = "nobody.here",
                     .type = BranchType::kTCC,
                     .application_data = detail::EncodeApplicationData("nobody.here", Points{"x", 1})};
  EXPECT_EQ(rm->RunPhaseTwo(unknown).status, BranchStatus::kPhaseTwoRollbackFailedRetryable);
  EXPECT_EQ(svc.confirms + svc.cancels, 0);
}

}  // namespace
}  // namespace dtx::sdk::testing
