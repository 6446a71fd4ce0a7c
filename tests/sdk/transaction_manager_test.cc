// The TM API against a real dtx-coordinator: scoped commit / rollback / throw, joining, the
// RAII guard, timeouts, failover across addresses and a coordinator restart.
#include <gtest/gtest.h>

#include <stdexcept>
#include <thread>

#include "dtx/sdk/transaction_manager.h"
#include "sdk_harness.h"

namespace dtx::sdk::testing {
namespace {

using ::dtx::testing::CoordinatorProcess;
using namespace std::chrono_literals;

CoordinatorOptions Options(std::vector<std::string> addresses) { return TestClientOptions(std::move(addresses), "tm-test"); }

GlobalStatus StatusOf(TransactionManager& tm, const std::string& xid) {
  auto s = tm.coordinator().GetStatus(xid);
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? s->status : GlobalStatus::kUnknown;
}

class TmTest : public ::testing::Test {
 protected:
  CoordinatorProcess tc_;
  TransactionManager tm_{Options({tc_.address()})};
};

TEST_F(TmTest, ScopedFormCommitsOnSuccess) {
  std::string xid;
  Status s = GlobalTransactional(tm_, {.name = "ok", .timeout = 10s}, [&](GlobalTx& tx) -> Status {
    xid = tx.xid();
    EXPECT_EQ(CurrentXid(), tx.xid()) << "the XID is bound to the thread in the body";
    EXPECT_EQ(StatusOf(tm_, xid), GlobalStatus::kBegin);
    return Status::Ok();
  });
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_TRUE(ParseXid(xid).ok()) << xid;
  EXPECT_EQ(CurrentXid(), "");
  EXPECT_EQ(StatusOf(tm_, xid), GlobalStatus::kCommitted);
}

TEST_F(TmTest, ScopedFormRollsBackOnErrorAndReturnsIt) {
  std::string xid;
  Status s = GlobalTransactional(tm_, {.name = "fails"}, [&](GlobalTx& tx) -> Status {
    xid = tx.xid();
    return FailedPrecondition("out of stock");
  });
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(s.message(), "out of stock");
  EXPECT_EQ(StatusOf(tm_, xid), GlobalStatus::kRollbacked);
}

TEST_F(TmTest, ScopedFormRollsBackWhenTheBodyThrows) {
  std::string xid;
  EXPECT_THROW((void)GlobalTransactional(tm_, {.name = "throws"},
                                         [&](GlobalTx& tx) -> Status {
                                           xid = tx.xid();
                                           throw std::runtime_error("boom");
                                         }),
               std::runtime_error);
  EXPECT_EQ(CurrentXid(), "") << "the binding is undone on the way out";
  EXPECT_EQ(StatusOf(tm_, xid), GlobalStatus::kRollbacked);
}

TEST_F(TmTest, NestedScopedFormJoinsTheOuterTransaction) {
  std::string outer, inner;
  Status s = GlobalTransactional(tm_, {.name = "outer"}, [&](GlobalTx& tx) -> Status {
    outer = tx.xid();
    Status in = GlobalTransactional(tm_, {.name = "inner"}, [&](GlobalTx& joined) -> Status {
      inner = joined.xid();
      EXPECT_TRUE(joined.joined());
      return Status::Ok();
    });
    EXPECT_TRUE(in.ok());
    EXPECT_EQ(StatusOf(tm_, outer), GlobalStatus::kBegin) << "the joined scope does not commit";
    return Status::Ok();
  });
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(inner, outer);
  EXPECT_EQ(StatusOf(tm_, outer), GlobalStatus::kCommitted);
}

TEST_F(TmTest, GuardRollsBackWhatWasNotFinished) {
  std::string xid;
  {
    auto tx = tm_.Begin({.name = "forgotten"});
    ASSERT_TRUE(tx.ok()) << tx.status();
    xid = tx->xid();
  }
  EXPECT_EQ(StatusOf(tm_, xid), GlobalStatus::kRollbacked);
  auto tx = tm_.Begin({.name = "manual"});
  ASSERT_TRUE(tx.ok());
  ASSERT_TRUE(tx->Commit().ok());
  EXPECT_FALSE(tx->Commit().ok()) << "a finished transaction says so";
  EXPECT_TRUE(tx->Rollback().ok()) << "and rolling it back after is a no-op";
  EXPECT_EQ(StatusOf(tm_, tx->xid()), GlobalStatus::kCommitted);
}

TEST_F(TmTest, CommitAfterTheTimeoutReportsTheRollback) {
  std::string xid;
  Status s = GlobalTransactional(tm_, {.name = "slow", .timeout = 200ms}, [&](GlobalTx& tx) -> Status {
    xid = tx.xid();
    std::this_thread::sleep_for(600ms);
    return Status::Ok();
  });
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("TIMED_OUT"), std::string_view::npos) << s;
  auto st = StatusOf(tm_, xid);
  EXPECT_TRUE(st == GlobalStatus::kTimeoutRollbacked || st == GlobalStatus::kTimeoutRollbacking) << static_cast<int>(st);
}

TEST_F(TmTest, FailsOverToTheAddressThatAnswers) {
  // The first address has nothing listening.
  TransactionManager tm(Options({"127.0.0.1:1", tc_.address()}));
  for (int i = 0; i < 5; ++i) {
    Status s = GlobalTransactional(tm, {.name = "failover"}, [](GlobalTx&) { return Status::Ok(); });
    EXPECT_TRUE(s.ok()) << s;
  }
}

TEST_F(TmTest, NoCoordinatorIsAClearError) {
  auto o = Options({"127.0.0.1:1"});
  o.connect_wait = 300ms;
  o.attempts = 2;
  TransactionManager tm(o);
  auto tx = tm.Begin({.name = "nowhere"});
  ASSERT_FALSE(tx.ok());
  EXPECT_EQ(tx.status().code(), StatusCode::kUnavailable) << tx.status();
}

TEST_F(TmTest, CommitAfterACoordinatorRestartSucceeds) {
  auto tx = tm_.Begin({.name = "across-restart", .timeout = 30s});
  ASSERT_TRUE(tx.ok());
  tc_.Restart();  // SIGKILL, same port and log
  ASSERT_TRUE(tx->Commit().ok());
  EXPECT_EQ(StatusOf(tm_, tx->xid()), GlobalStatus::kCommitted);
}

TEST(TmAuth, AWrongTokenIsRefused) {
  CoordinatorProcess tc({"--token", "s3cret"});
  TransactionManager bad(Options({tc.address()}));
  auto tx = bad.Begin({.name = "x"});
  EXPECT_EQ(tx.status().code(), StatusCode::kUnauthenticated) << tx.status();
  auto o = Options({tc.address()});
  o.token = "s3cret";
  TransactionManager good(o);
  EXPECT_TRUE(GlobalTransactional(good, {.name = "y"}, [](GlobalTx&) { return Status::Ok(); }).ok());
}

}  // namespace
}  // namespace dtx::sdk::testing
