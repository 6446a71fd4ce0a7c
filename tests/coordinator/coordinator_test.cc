// dtx-coordinator as users run it: a real process, real sockets, participants built on rpc/.
#include <gtest/gtest.h>
#include <signal.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>

#include <thread>

#include "coordinator_process.h"
#include "test_participant.h"

namespace dtx::testing {
namespace {

using namespace std::chrono_literals;
using Answer = TestParticipant::Answer;

class CoordinatorTest : public ::testing::Test {
 protected:
  CoordinatorProcess tc_;
};

TEST_F(CoordinatorTest, CommitDrivesEveryBranchOfEveryParticipant) {
  ASSERT_NE(tc_.port(), 0);
  TestParticipant orders(tc_.address(), {"orders-db"}, "orders-1");
  TestParticipant stock(tc_.address(), {"stock-db"}, "stock-1");
  ASSERT_EQ(orders.registration(), pb::OK);
  ASSERT_EQ(stock.registration(), pb::OK);
  TestTm tm(tc_.address());
  auto begin = tm.Begin();
  ASSERT_TRUE(begin.ok() && begin->code() == pb::OK) << begin.status();
  const std::string xid = begin->xid();
  EXPECT_NE(xid.find("tc-1:"), std::string::npos);
  auto b1 = orders.RegisterBranch(xid, "orders-db", {"orders-db:orders:1"}, pb::AT, "order-data");
  auto b2 = stock.RegisterBranch(xid, "stock-db", {"stock-db:stock:7"});
  auto b3 = stock.RegisterBranch(xid, "stock-db", {"stock-db:stock:8"});
  ASSERT_EQ(b1.code(), pb::OK) << b1.message();
  ASSERT_EQ(b2.code(), pb::OK) << b2.message();
  ASSERT_EQ(b3.code(), pb::OK) << b3.message();
  EXPECT_LT(b2.branch_id(), b3.branch_id());

  auto commit = tm.Commit(xid);
  ASSERT_TRUE(commit.ok()) << commit.status();
  EXPECT_EQ(commit->code(), pb::OK) << commit->message();
  EXPECT_EQ(commit->outcome(), pb::COMMITTED_OUTCOME);
  ASSERT_TRUE(orders.WaitFor(true, 1, xid));
  ASSERT_TRUE(stock.WaitFor(true, 2, xid));
  EXPECT_TRUE(tm.WaitForStatus(xid, pb::COMMITTED));
  EXPECT_EQ(orders.calls().at(0).application_data, "order-data");
  EXPECT_EQ(orders.count(false), 0u);
  EXPECT_EQ(stock.count(false), 0u);
}

// A commit of AT branches only is final once decided: the branches get one BranchCommit notice,
// which is not retried (a participant that does not take it leaves undo rows to its sweep), and
// the row locks are free as soon as the TM has its answer.
TEST_F(CoordinatorTest, AtOnlyCommitIsFinalAtTheDecision) {
  TestParticipant rm(tc_.address(), {"db"}, "rm-1");
  ASSERT_EQ(rm.registration(), pb::OK);
  rm.SetAnswer(true, Answer::kRetryable);  // would keep a driven branch in CommitRetrying
  TestTm tm(tc_.address());
  const std::string xid = tm.Begin()->xid();
  ASSERT_EQ(rm.RegisterBranch(xid, "db", {"db:acct:1"}, pb::AT).code(), pb::OK);
  ASSERT_EQ(rm.RegisterBranch(xid, "db", {"db:acct:2"}, pb::AT).code(), pb::OK);
  auto commit = tm.Commit(xid);
  ASSERT_TRUE(commit.ok()) << commit.status();
  EXPECT_EQ(commit->code(), pb::OK) << commit->message();
  EXPECT_EQ(commit->outcome(), pb::COMMITTED_OUTCOME);
  const std::string next = tm.Begin()->xid();
  EXPECT_EQ(rm.RegisterBranch(next, "db", {"db:acct:1", "db:acct:2"}, pb::AT).code(), pb::OK) << "locks go with the decision";
  ASSERT_TRUE(rm.WaitFor(true, 2, xid));
  std::this_thread::sleep_for(300ms);  // a retry would come within the backoff
  EXPECT_EQ(rm.count(true), 2u);
  auto status = tm.GetStatus(xid);
  ASSERT_TRUE(status.ok()) << status.status();
  EXPECT_EQ(status->status(), pb::COMMITTED);

  // With a TCC branch beside them, the commit is driven as before: it waits for every branch.
  rm.SetAnswer(true, Answer::kDone);
  const std::string mixed = tm.Begin()->xid();
  ASSERT_EQ(rm.RegisterBranch(mixed, "db", {"db:acct:3"}, pb::AT).code(), pb::OK);
  ASSERT_EQ(rm.RegisterBranch(mixed, "db", {}, pb::TCC).code(), pb::OK);
  ASSERT_EQ(tm.Commit(mixed)->code(), pb::OK);
  EXPECT_TRUE(tm.WaitForStatus(mixed, pb::COMMITTED));
  EXPECT_TRUE(rm.WaitFor(true, 2, mixed));
}

TEST_F(CoordinatorTest, RollbackGoesInReverseOrderPerResource) {
  TestParticipant rm(tc_.address(), {"db"}, "rm-1");
  TestTm tm(tc_.address());
  auto begin = tm.Begin();
  ASSERT_TRUE(begin.ok());
  const std::string xid = begin->xid();
  std::vector<int64_t> ids;
  for (int i = 0; i < 3; ++i) {
    auto b = rm.RegisterBranch(xid, "db", {"db:t:" + std::to_string(i)});
    ASSERT_EQ(b.code(), pb::OK);
    ids.push_back(b.branch_id());
  }
  auto rollback = tm.Rollback(xid);
  ASSERT_TRUE(rollback.ok());
  EXPECT_EQ(rollback->code(), pb::OK);
  EXPECT_EQ(rollback->outcome(), pb::ROLLED_BACK_OUTCOME);
  ASSERT_TRUE(rm.WaitFor(false, 3, xid));
  auto calls = rm.calls();
  ASSERT_EQ(calls.size(), 3u);
  EXPECT_EQ(calls[0].branch_id, ids[2]);
  EXPECT_EQ(calls[1].branch_id, ids[1]);
  EXPECT_EQ(calls[2].branch_id, ids[0]);
  EXPECT_TRUE(tm.WaitForStatus(xid, pb::ROLLBACKED));
}

TEST_F(CoordinatorTest, LockConflictNamesTheHolderAndEndsWithIt) {
  TestParticipant rm(tc_.address(), {"db"}, "rm-1");
  TestTm tm(tc_.address());
  const std::string first = tm.Begin()->xid();
  const std::string second = tm.Begin()->xid();
  ASSERT_EQ(rm.RegisterBranch(first, "db", {"db:acct:1", "db:acct:2"}).code(), pb::OK);
  auto conflict = rm.RegisterBranch(second, "db", {"db:acct:3", "db:acct:2"});
  EXPECT_EQ(conflict.code(), pb::LOCK_CONFLICT);
  EXPECT_EQ(conflict.conflict_key(), "db:acct:2");
  EXPECT_EQ(conflict.conflict_xid(), first);
  // Nothing of the refused registration stayed: acct:3 is free.
  auto third = tm.Begin()->xid();
  EXPECT_EQ(rm.RegisterBranch(third, "db", {"db:acct:3"}).code(), pb::OK);
  ASSERT_EQ(tm.Commit(first)->code(), pb::OK);
  ASSERT_TRUE(tm.WaitForStatus(first, pb::COMMITTED));
  EXPECT_EQ(rm.RegisterBranch(second, "db", {"db:acct:2"}).code(), pb::OK) << "released at the end of phase 2";
}

TEST_F(CoordinatorTest, TimedOutTransactionIsRolledBack) {
  TestParticipant rm(tc_.address(), {"db"}, "rm-1");
  TestTm tm(tc_.address());
  const std::string xid = tm.Begin(300)->xid();
  ASSERT_EQ(rm.RegisterBranch(xid, "db", {"db:t:1"}).code(), pb::OK);
  ASSERT_TRUE(rm.WaitFor(false, 1, xid, 5s)) << "the timeout should roll it back";
  EXPECT_TRUE(tm.WaitForStatus(xid, pb::TIMEOUT_ROLLBACKED));
  auto commit = tm.Commit(xid);
  ASSERT_TRUE(commit.ok());
  EXPECT_EQ(commit->code(), pb::TIMED_OUT);
  EXPECT_EQ(commit->outcome(), pb::ROLLED_BACK_OUTCOME);
  EXPECT_EQ(rm.RegisterBranch(xid, "db").code(), pb::XID_NOT_FOUND);
}

TEST_F(CoordinatorTest, CommitAfterTheTimeoutRollsBackAndSaysSo) {
  TestParticipant rm(tc_.address(), {"db"}, "rm-1");
  TestTm tm(tc_.address());
  const std::string xid = tm.Begin(150)->xid();
  ASSERT_EQ(rm.RegisterBranch(xid, "db").code(), pb::OK);
  std::this_thread::sleep_for(200ms);
  auto commit = tm.Commit(xid);
  ASSERT_TRUE(commit.ok());
  EXPECT_EQ(commit->code(), pb::TIMED_OUT) << commit->message();
  EXPECT_EQ(commit->outcome(), pb::ROLLED_BACK_OUTCOME);
  ASSERT_TRUE(rm.WaitFor(false, 1, xid));
  EXPECT_EQ(rm.count(true, xid), 0u);
}

TEST_F(CoordinatorTest, ParticipantDownThenBackGetsPhaseTwo) {
  TestTm tm(tc_.address());
  std::string xid;
  {
    TestParticipant rm(tc_.address(), {"db"}, "rm-1");
    xid = tm.Begin()->xid();
    ASSERT_EQ(rm.RegisterBranch(xid, "db").code(), pb::OK);
  }  // the participant goes away
  auto commit = tm.Commit(xid);
  ASSERT_TRUE(commit.ok());
  EXPECT_EQ(commit->outcome(), pb::COMMITTED_OUTCOME);
  std::this_thread::sleep_for(300ms);
  auto status = tm.GetStatus(xid);
  ASSERT_TRUE(status.ok());
  EXPECT_TRUE(status->status() == pb::COMMITTING || status->status() == pb::COMMIT_RETRYING) << status->status();
  TestParticipant back(tc_.address(), {"db"}, "rm-1");
  ASSERT_TRUE(back.WaitFor(true, 1, xid)) << "phase 2 reaches the participant once it is back";
  EXPECT_TRUE(tm.WaitForStatus(xid, pb::COMMITTED));
}

TEST_F(CoordinatorTest, RetryableAnswersAreRetried) {
  TestParticipant rm(tc_.address(), {"db"}, "rm-1");
  rm.SetAnswer(true, Answer::kRetryable);
  TestTm tm(tc_.address());
  const std::string xid = tm.Begin()->xid();
  ASSERT_EQ(rm.RegisterBranch(xid, "db").code(), pb::OK);
  ASSERT_EQ(tm.Commit(xid)->code(), pb::OK);
  ASSERT_TRUE(rm.WaitFor(true, 3, xid)) << "asked again and again";
  EXPECT_TRUE(tm.WaitForStatus(xid, pb::COMMIT_RETRYING));
  rm.SetAnswer(true, Answer::kDone);
  EXPECT_TRUE(tm.WaitForStatus(xid, pb::COMMITTED));
}

TEST_F(CoordinatorTest, UnretryableAnswerLeavesCommitFailedForAnOperator) {
  TestParticipant rm(tc_.address(), {"db"}, "rm-1");
  rm.SetAnswer(true, Answer::kUnretryable);
  TestTm tm(tc_.address());
  const std::string xid = tm.Begin()->xid();
  auto branch = rm.RegisterBranch(xid, "db", {"db:t:9"});
  ASSERT_EQ(branch.code(), pb::OK);
  ASSERT_EQ(tm.Commit(xid)->code(), pb::OK);
  EXPECT_TRUE(tm.WaitForStatus(xid, pb::COMMIT_FAILED));
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(rm.count(true, xid), 1u) << "an unretryable answer is not asked again";
  // A late phase-one report does not overwrite what phase 2 recorded.
  pb::ReportBranchRequest report;
  report.set_xid(xid);
  report.set_branch_id(branch.branch_id());
  report.set_status(pb::PHASE_ONE_DONE);
  auto late = rm.client().CallSync<pb::ReportBranchResponse>("dtx.v1.TransactionCoordinator:1.0", "ReportBranch", report);
  ASSERT_TRUE(late.ok()) << late.status();
  EXPECT_EQ(late->code(), pb::NOT_ACTIVE) << late->message();
  // Its locks stay held until an operator acts.
  const std::string other = tm.Begin()->xid();
  EXPECT_EQ(rm.RegisterBranch(other, "db", {"db:t:9"}).code(), pb::LOCK_CONFLICT);
}

// POST to the coordinator's admin API as operator "test"; the HTTP status code.
int AdminPost(int port, const std::string& target) {
  boost::asio::io_context io;
  boost::asio::ip::tcp::socket socket(io);
  boost::system::error_code ec;
  socket.connect({boost::asio::ip::make_address("127.0.0.1"), static_cast<uint16_t>(port)}, ec);
  if (ec) return -1;
  const std::string request = "POST " + target +
                              " HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Operator: test\r\nContent-Length: 0\r\n"
                              "Connection: close\r\n\r\n";
  boost::asio::write(socket, boost::asio::buffer(request), ec);
  std::string response;
  char buf[1024];
  size_t n;
  while ((n = socket.read_some(boost::asio::buffer(buf), ec)) > 0) response.append(buf, n);
  return response.size() > 12 ? std::stoi(response.substr(9, 3)) : -1;
}

TEST_F(CoordinatorTest, OperatorRetryDoesNotRepeatACallStillPending) {
  TestParticipant slow(tc_.address(), {"db1"}, "rm-1");
  TestParticipant failing(tc_.address(), {"db2"}, "rm-2");
  slow.SetAnswer(true, Answer::kNever);  // its BranchCommit stays pending (the call timeout is 10 s)
  failing.SetAnswer(true, Answer::kUnretryable);
  TestTm tm(tc_.address());
  const std::string xid = tm.Begin()->xid();
  ASSERT_EQ(slow.RegisterBranch(xid, "db1").code(), pb::OK);
  ASSERT_EQ(failing.RegisterBranch(xid, "db2").code(), pb::OK);
  ASSERT_EQ(tm.Commit(xid)->code(), pb::OK);
  ASSERT_TRUE(tm.WaitForStatus(xid, pb::COMMIT_FAILED));
  ASSERT_TRUE(slow.WaitFor(true, 1, xid));

  failing.SetAnswer(true, Answer::kDone);  // an operator fixed it
  ASSERT_EQ(AdminPost(tc_.admin_port(), "/api/v1/transactions/" + xid + "/retry"), 200);
  ASSERT_TRUE(failing.WaitFor(true, 2, xid));
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(slow.count(true, xid), 1u) << "the pending call is not sent a second time";
  auto status = tm.GetStatus(xid);
  ASSERT_TRUE(status.ok());
  EXPECT_EQ(status->status(), pb::COMMITTING) << "waits for the pending call";
}

TEST_F(CoordinatorTest, RepeatedAndOutOfOrderCallsAreAnsweredNotRepeated) {
  TestParticipant rm(tc_.address(), {"db"}, "rm-1");
  TestTm tm(tc_.address());
  const std::string xid = tm.Begin()->xid();
  ASSERT_EQ(rm.RegisterBranch(xid, "db").code(), pb::OK);
  ASSERT_EQ(tm.Commit(xid)->code(), pb::OK);
  auto again = tm.Commit(xid);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->code(), pb::OK);
  EXPECT_EQ(again->outcome(), pb::COMMITTED_OUTCOME);
  auto rollback = tm.Rollback(xid);
  ASSERT_TRUE(rollback.ok());
  EXPECT_EQ(rollback->code(), pb::ALREADY_COMMITTED);
  EXPECT_EQ(rollback->outcome(), pb::COMMITTED_OUTCOME);
  auto late = rm.RegisterBranch(xid, "db");
  EXPECT_TRUE(late.code() == pb::NOT_ACTIVE || late.code() == pb::XID_NOT_FOUND) << late.code();
  ASSERT_TRUE(tm.WaitForStatus(xid, pb::COMMITTED));
  std::this_thread::sleep_for(200ms);
  EXPECT_EQ(rm.count(true, xid), 1u) << "a repeated Commit does not start phase 2 again";
  auto after = tm.Commit(xid);
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->outcome(), pb::COMMITTED_OUTCOME) << "finished, and still answered";
}

TEST_F(CoordinatorTest, UnknownXidsAreAnsweredClearly) {
  TestParticipant rm(tc_.address(), {"db"}, "rm-1");
  TestTm tm(tc_.address());
  EXPECT_EQ(tm.Commit("tc-1:404")->code(), pb::XID_NOT_FOUND);
  EXPECT_EQ(tm.Rollback("nonsense")->code(), pb::XID_NOT_FOUND);
  EXPECT_EQ(tm.GetStatus("")->code(), pb::XID_NOT_FOUND);
  EXPECT_EQ(rm.RegisterBranch("tc-1:404", "db").code(), pb::XID_NOT_FOUND);
}

TEST_F(CoordinatorTest, BranchCallsNeedARegisteredParticipant) {
  TestTm tm(tc_.address());
  const std::string xid = tm.Begin()->xid();
  pb::RegisterBranchRequest req;
  req.set_xid(xid);
  req.set_resource_id("db");
  auto r = tm.Call<pb::RegisterBranchResponse>("RegisterBranch", req);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->code(), pb::NOT_REGISTERED);
}

TEST(CoordinatorRetryLimit, GivingUpLeavesTheTransactionForAnOperator) {
  CoordinatorProcess tc({"--max-retries", "2"});
  TestParticipant rm(tc.address(), {"db"}, "rm-1");
  rm.SetAnswer(false, Answer::kRetryable);
  TestTm tm(tc.address());
  const std::string xid = tm.Begin()->xid();
  ASSERT_EQ(rm.RegisterBranch(xid, "db").code(), pb::OK);
  ASSERT_EQ(tm.Rollback(xid)->code(), pb::OK);
  EXPECT_TRUE(tm.WaitForStatus(xid, pb::ROLLBACK_FAILED));
  EXPECT_EQ(rm.count(false, xid), 3u) << "the first call and two retries";
}

TEST_F(CoordinatorTest, ReportFinishesATransactionWithoutPhaseTwo) {
  TestTm tm(tc_.address());
  const std::string xid = tm.Begin()->xid();
  pb::ReportRequest req;
  req.set_xid(xid);
  req.set_status(pb::COMMITTED);
  auto r = tm.Call<pb::ReportResponse>("Report", req);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->code(), pb::OK) << r->message();
  EXPECT_EQ(r->outcome(), pb::COMMITTED_OUTCOME);
  EXPECT_TRUE(tm.WaitForStatus(xid, pb::COMMITTED));
  req.set_status(pb::COMMITTING);
  auto bad = tm.Call<pb::ReportResponse>("Report", req);
  ASSERT_TRUE(bad.ok());
  EXPECT_EQ(bad->code(), pb::INVALID_ARGUMENT);

  // A transaction with branches waiting for phase 2 is finished with Commit or Rollback only.
  TestParticipant rm(tc_.address(), {"db"}, "rm-1");
  const std::string with_branch = tm.Begin()->xid();
  ASSERT_EQ(rm.RegisterBranch(with_branch, "db").code(), pb::OK);
  req.set_xid(with_branch);
  req.set_status(pb::ROLLBACKED);
  auto refused = tm.Call<pb::ReportResponse>("Report", req);
  ASSERT_TRUE(refused.ok()) << refused.status();
  EXPECT_EQ(refused->code(), pb::INVALID_ARGUMENT);
  ASSERT_EQ(tm.Rollback(with_branch)->code(), pb::OK);
  EXPECT_TRUE(rm.WaitFor(false, 1, with_branch)) << "the branch still gets its phase 2";
}

TEST(CoordinatorAuth, TokenIsRequiredWhenConfigured) {
  CoordinatorProcess tc({"--token", "s3cret"});
  TestTm anonymous(tc.address());
  auto begin = anonymous.Begin();
  ASSERT_TRUE(begin.ok());
  EXPECT_EQ(begin->code(), pb::UNAUTHENTICATED);
  EXPECT_NE(begin->message().find("token"), std::string::npos);
  TestParticipant intruder(tc.address(), {"db"}, "x", "wrong");
  EXPECT_EQ(intruder.registration(), pb::UNAUTHENTICATED);

  TestTm tm(tc.address(), "s3cret");
  TestParticipant rm(tc.address(), {"db"}, "rm-1", "s3cret");
  ASSERT_EQ(rm.registration(), pb::OK);
  auto ok = tm.Begin();
  ASSERT_EQ(ok->code(), pb::OK);
  ASSERT_EQ(rm.RegisterBranch(ok->xid(), "db").code(), pb::OK);
  EXPECT_EQ(intruder.RegisterBranch(ok->xid(), "db").code(), pb::UNAUTHENTICATED);
  EXPECT_EQ(tm.Commit(ok->xid())->code(), pb::OK);
  EXPECT_TRUE(rm.WaitFor(true, 1, ok->xid()));
}

TEST(CoordinatorRestart, KilledCoordinatorResumesFromItsLog) {
  CoordinatorProcess tc;
  TestTm tm(tc.address());
  TestParticipant rm(tc.address(), {"db"}, "rm-1");
  rm.SetAnswer(true, Answer::kRetryable);  // phase 2 cannot finish before the kill
  const std::string committed = tm.Begin()->xid();
  ASSERT_EQ(rm.RegisterBranch(committed, "db", {"db:r:1"}).code(), pb::OK);
  ASSERT_EQ(tm.Commit(committed)->code(), pb::OK);
  const std::string undecided = tm.Begin(1500)->xid();
  ASSERT_EQ(rm.RegisterBranch(undecided, "db", {"db:r:2"}).code(), pb::OK);

  const size_t asked_before = rm.count(true, committed);
  tc.Restart();  // SIGKILL, then start on the same port and log
  rm.SetAnswer(true, Answer::kDone);
  // The participant reconnects and registers again by itself.
  EXPECT_TRUE(rm.WaitFor(true, asked_before + 1, committed)) << "the acknowledged commit completes after the restart";
  EXPECT_TRUE(rm.WaitFor(false, 1, undecided, 10s)) << "the undecided one rolls back once timed out";
  EXPECT_EQ(rm.count(false, committed), 0u);
  EXPECT_EQ(rm.count(true, undecided), 0u);
  EXPECT_TRUE(tm.WaitForStatus(committed, pb::COMMITTED));
}

TEST(CoordinatorShutdown, SigtermExitsCleanly) {
  CoordinatorProcess tc;
  TestTm tm(tc.address());
  ASSERT_EQ(tm.Begin()->code(), pb::OK);
  const int status = tc.Terminate();
  EXPECT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

}  // namespace
}  // namespace dtx::testing
