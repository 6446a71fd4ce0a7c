// AT branches end to end with a real dtx-coordinator process: phase one through AtBranch on a
// real PostgreSQL, registration with lock keys, and phase 2 through AtResourceManager.
#include <gtest/gtest.h>

#include <future>
#include <mutex>
#include <thread>

#include "at_harness.h"
#include "coordinator_process.h"
#include "dtx/at/at_resource_manager.h"

namespace dtx::at::testing {
namespace {

using namespace std::chrono_literals;

class AtPhase2Test : public AtTest {
 protected:
  void SetUp() override {
    AtTest::SetUp();
    if (IsSkipped() || HasFailure()) return;
    Exec("CREATE TABLE accounts (id int PRIMARY KEY, owner text, balance numeric(12,2), updated timestamptz)");
    Exec("INSERT INTO accounts SELECT g, 'owner ' || g, 100.00, '2024-01-01 00:00:00+00' FROM generate_series(1, 5) g");
    coordinator_ = std::make_unique<::dtx::testing::CoordinatorProcess>();
    AtResourceManagerOptions rm;
    rm.databases = {{options_.resource_id, schema_->uri()}};
    rm_ = std::make_unique<AtResourceManager>(rm);
    ASSERT_TRUE(rm_->Start().ok());
    sdk::CoordinatorOptions co;
    co.addresses = {coordinator_->address()};
    co.application = "at-test";
    co.client_id = "at-test-proxy";
    co.resource_ids = {options_.resource_id};
    // The resource manager's answers are what the coordinator records; keep them to check.
    auto handler = rm_->Handler();
    client_ = std::make_unique<sdk::CoordinatorClient>(
        co, [this, handler](sdk::BranchCall call, std::function<void(sdk::BranchAnswer)> answer) {
          handler(std::move(call), [this, answer](sdk::BranchAnswer a) {
            {
              std::lock_guard lock(answers_mu_);
              answers_.push_back(a);
            }
            answer(std::move(a));
          });
        });
    ASSERT_TRUE(client_->WaitRegistered(10s).ok());
  }
  void TearDown() override {
    client_.reset();
    rm_.reset();
    coordinator_.reset();
  }

  std::string Begin() {
    auto xid = client_->Begin("at-test", 30s);
    EXPECT_TRUE(xid.ok()) << xid.status();
    return xid.ok() ? *xid : "";
  }
  sdk::GlobalStatus WaitFinal(const std::string& xid) {
    sdk::GlobalStatus last = sdk::GlobalStatus::kUnknown;
    for (auto end = std::chrono::steady_clock::now() + 15s; std::chrono::steady_clock::now() < end;) {
      auto s = client_->GetStatus(xid);
      if (s.ok()) {
        last = s->status;
        if (sdk::IsFinal(last) || last == sdk::GlobalStatus::kRollbackFailed) return last;
      }
      std::this_thread::sleep_for(20ms);
    }
    return last;
  }
  // One global transaction's local part: `sql` in a branch, committed through the coordinator.
  Status Write(const std::string& xid, const std::vector<std::string>& sql, AtOptions options) {
    auto c = Connect();
    if (!c) return Internal("no connection");
    DTX_RETURN_IF_ERROR(c->Run("BEGIN").status());
    AtBranch branch(options, catalog_, xid);
    for (const auto& s : sql) {
      auto r = RunStatement(*c, branch, s, {}, client_.get());
      if (!r.ok()) {
        (void)c->Run("ROLLBACK");
        return r.status();
      }
    }
    return CommitBranch(*c, branch, *client_);
  }
  Status Write(const std::string& xid, const std::vector<std::string>& sql) { return Write(xid, sql, options_); }

  std::unique_ptr<::dtx::testing::CoordinatorProcess> coordinator_;
  std::unique_ptr<AtResourceManager> rm_;
  std::unique_ptr<sdk::CoordinatorClient> client_;
  std::mutex answers_mu_;
  std::vector<sdk::BranchAnswer> answers_;
};

TEST_F(AtPhase2Test, GlobalRollbackRestoresEveryRow) {
  auto before = Snapshot("accounts");
  std::string xid = Begin();
  ASSERT_TRUE(Write(xid, {"UPDATE accounts SET balance = balance - 30, updated = now() WHERE id = 1",
                          "UPDATE accounts SET balance = balance + 30, updated = now() WHERE id = 2",
                          "INSERT INTO accounts VALUES (9, 'new', 0, now())", "DELETE FROM accounts WHERE id = 5"})
                  .ok());
  EXPECT_NE(Snapshot("accounts"), before);
  auto r = client_->Rollback(xid);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(WaitFinal(xid), sdk::GlobalStatus::kRollbacked);
  EXPECT_EQ(Snapshot("accounts"), before);
  EXPECT_EQ(Count("SELECT count(*) FROM dtx_undo_log"), 0);
}

TEST_F(AtPhase2Test, GlobalCommitKeepsDataAndDeletesUndoRows) {
  std::vector<std::string> xids;
  for (int i = 0; i < 3; ++i) {
    xids.push_back(Begin());
    ASSERT_TRUE(Write(xids.back(), {"UPDATE accounts SET balance = balance + 1 WHERE id = " + std::to_string(i + 1)}).ok());
  }
  EXPECT_EQ(Count("SELECT count(*) FROM dtx_undo_log"), 3);
  for (const auto& xid : xids) {
    auto r = client_->Commit(xid);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(WaitFinal(xid), sdk::GlobalStatus::kCommitted);
  }
  int64_t left = -1;
  for (auto end = std::chrono::steady_clock::now() + 10s; std::chrono::steady_clock::now() < end && left != 0;) {
    rm_->Flush();
    left = Count("SELECT count(*) FROM dtx_undo_log");
    if (left) std::this_thread::sleep_for(20ms);
  }
  EXPECT_EQ(left, 0);
  EXPECT_EQ(Count("SELECT count(*) FROM accounts WHERE balance = 101.00"), 3);
}

TEST_F(AtPhase2Test, LockConflictBetweenGlobalTransactionsFailsTheLaterCommit) {
  std::string first = Begin();
  ASSERT_TRUE(Write(first, {"UPDATE accounts SET owner = 'first' WHERE id = 1"}).ok());

  AtOptions quick = options_;
  quick.lock_retry_for = 300ms;
  std::string second = Begin();
  Status s = Write(second, {"UPDATE accounts SET owner = 'second' WHERE id = 1"}, quick);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(SqlStateOf(s), "55P03") << s;
  EXPECT_NE(s.message().find("global row locks"), std::string_view::npos) << s;
  EXPECT_EQ(Count("SELECT count(*) FROM accounts WHERE owner = 'first'"), 1) << "the second local transaction is rolled back";
  // Rows of other keys are free.
  EXPECT_TRUE(Write(second, {"UPDATE accounts SET owner = 'second' WHERE id = 2"}, quick).ok());

  // SELECT ... FOR UPDATE checks the global locks too (global read-committed).
  {
    auto c = Connect();
    ASSERT_TRUE(c->Run("BEGIN").ok());
    AtBranch branch(quick, catalog_, second);
    auto r = RunStatement(*c, branch, "SELECT owner FROM accounts WHERE id = $1 FOR UPDATE", [] {
      QueryParams p;
      p.values = {"1"};
      return p;
    }(), client_.get());
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(SqlStateOf(r.status()), "55P03") << r.status();
    EXPECT_NE(r.status().message().find(first), std::string_view::npos) << "names the holder: " << r.status();
    auto free = RunStatement(*c, branch, "SELECT owner FROM accounts WHERE id = 3 FOR UPDATE", {}, client_.get());
    ASSERT_TRUE(free.ok()) << free.status();
    EXPECT_EQ(free->rows.size(), 1u);
    ASSERT_TRUE(c->Run("ROLLBACK").ok());
  }

  // A commit that waits while the holder commits gets the lock. (Had the holder rolled back
  // instead, its undo would wait for the row the waiter holds locally: the waiter gives up at
  // lock_retry_for, its local rollback frees the row, and the coordinator retries the undo.)
  AtOptions patient = options_;
  patient.lock_retry_for = 10s;
  auto waiting = std::async(std::launch::async, [&] {
    return Write(second, {"UPDATE accounts SET owner = 'second' WHERE id = 1"}, patient);
  });
  std::this_thread::sleep_for(200ms);
  ASSERT_TRUE(client_->Commit(first).ok());
  EXPECT_EQ(WaitFinal(first), sdk::GlobalStatus::kCommitted);
  Status late = waiting.get();
  EXPECT_TRUE(late.ok()) << late;
  ASSERT_TRUE(client_->Commit(second).ok());
  EXPECT_EQ(Count("SELECT count(*) FROM accounts WHERE owner = 'second'"), 2);
}

TEST_F(AtPhase2Test, LocalWriteIsBlockedByGlobalLock) {
  std::string xid = Begin();
  ASSERT_TRUE(Write(xid, {"UPDATE accounts SET owner = 'global' WHERE id = 1"}).ok());

  // A session bound to no global transaction.
  AtOptions quick = options_;
  quick.lock_retry_for = 200ms;
  AtBranch unbound(quick, catalog_, "");
  auto c = Connect();
  // As the proxy runs it: the write with its hidden key column, then the check of the keys it
  // returned, in one transaction that a conflict rolls back.
  int checked = 0;
  auto run = [&](const std::string& sql) {
    auto st = unbound.PrepareLocal(sql);
    if (!st.ok()) return st.status();
    Status s = c->Run("BEGIN").status();
    while (s.ok()) {
      auto step = (*st)->Next();
      if (!step) break;
      if (step->check_global_locks) {
        ++checked;
        s = (*st)->CheckGlobalLocks(*client_);
        continue;
      }
      auto r = c->Run(step->query);
      s = r.ok() ? (*st)->OnResult(*r) : r.status();
    }
    EXPECT_TRUE(c->Run(s.ok() ? "COMMIT" : "ROLLBACK").ok());
    return s;
  };
  Status blocked = run("UPDATE accounts SET owner = 'local' WHERE id IN (1, 2)");
  ASSERT_FALSE(blocked.ok());
  EXPECT_EQ(SqlStateOf(blocked), "55P03") << blocked;
  EXPECT_NE(blocked.message().find(xid), std::string_view::npos) << blocked;
  EXPECT_EQ(SqlStateOf(run("DELETE FROM accounts WHERE id = 1")), "55P03");
  // An insert, or an upsert, that reaches a held row is checked too.
  EXPECT_EQ(SqlStateOf(run("INSERT INTO accounts VALUES (1, 'local', 1, now()) ON CONFLICT (id) DO UPDATE SET "
                           "owner = excluded.owner")),
            "55P03");
  EXPECT_EQ(SqlStateOf(run("UPDATE accounts a SET owner = 'local' FROM (VALUES (1)) v(k) WHERE a.id = v.k")), "55P03");
  EXPECT_EQ(Count("SELECT count(*) FROM accounts WHERE owner = 'local'"), 0);
  // What cannot be checked is refused before it runs.
  EXPECT_EQ(SqlStateOf(run("WITH d AS (DELETE FROM accounts WHERE id = 1 RETURNING id) SELECT * FROM d")), "0A000");
  // Other rows, and statements AT does not handle, run as they are.
  checked = 0;
  EXPECT_TRUE(run("UPDATE accounts SET owner = 'local' WHERE id = 2").ok());
  EXPECT_TRUE(run("INSERT INTO accounts VALUES (7, 'local', 1, now())").ok());
  EXPECT_EQ(checked, 2);
  EXPECT_TRUE(run("CREATE TABLE scratch (a int)").ok());
  EXPECT_TRUE(run("UPDATE scratch SET a = 1").ok()) << "no primary key: nothing to check";
  EXPECT_TRUE(run("UPDATE accounts SET owner = 'nobody' WHERE id = -1").ok()) << "no rows: nothing to check";
  EXPECT_EQ(checked, 2);
  EXPECT_FALSE(unbound.has_writes());
  // Once the global transaction is over, its rows are free.
  ASSERT_TRUE(client_->Commit(xid).ok());
  EXPECT_EQ(WaitFinal(xid), sdk::GlobalStatus::kCommitted);
  EXPECT_TRUE(run("UPDATE accounts SET owner = 'local' WHERE id = 1").ok());
  EXPECT_EQ(Count("SELECT count(*) FROM accounts WHERE owner = 'local'"), 3);
}

TEST_F(AtPhase2Test, DirtyWriteEndsAsRollbackFailedWithTheRowsNamed) {
  std::string xid = Begin();
  ASSERT_TRUE(Write(xid, {"UPDATE accounts SET balance = 0 WHERE id IN (3, 4)"}).ok());
  Exec("UPDATE accounts SET balance = 55.55 WHERE id = 4");  // a write outside the global transaction
  auto tampered = Snapshot("accounts");
  (void)client_->Rollback(xid);  // the outcome is read below
  EXPECT_EQ(WaitFinal(xid), sdk::GlobalStatus::kRollbackFailed);
  EXPECT_EQ(Snapshot("accounts"), tampered);
  EXPECT_EQ(Count("SELECT count(*) FROM dtx_undo_log WHERE xid = '" + xid + "'"), 1);
  // The coordinator was told why, with the row's current content as evidence.
  std::lock_guard lock(answers_mu_);
  ASSERT_FALSE(answers_.empty());
  const auto& a = answers_.back();
  EXPECT_EQ(a.status, sdk::BranchStatus::kPhaseTwoRollbackFailedUnretryable);
  EXPECT_NE(a.message.find("\"accounts\" key [\"4\"] was changed"), std::string::npos) << a.message;
  EXPECT_NE(a.message.find("55.55"), std::string::npos) << a.message;
  EXPECT_EQ(a.message.find("key [\"3\"]"), std::string::npos) << "row 3 is not dirty: " << a.message;
}

TEST_F(AtPhase2Test, RollbackBeforeTheUndoLogMakesTheLatePhaseOneFail) {
  auto before = Snapshot("accounts");
  std::string xid = Begin();
  auto c = Connect();
  ASSERT_TRUE(c->Run("BEGIN").ok());
  AtBranch branch(options_, catalog_, xid);
  ASSERT_TRUE(RunStatement(*c, branch, "UPDATE accounts SET owner = 'late' WHERE id = 1").ok());
  auto undo = branch.Register(*client_);
  ASSERT_TRUE(undo.ok()) << undo.status();
  ASSERT_TRUE(undo->has_value());
  // The global transaction is rolled back while the branch's local transaction is still open.
  ASSERT_TRUE(client_->Rollback(xid).ok());
  EXPECT_EQ(WaitFinal(xid), sdk::GlobalStatus::kRollbacked);
  auto w = c->Run(**undo);
  ASSERT_FALSE(w.ok()) << "the undo-log insert must conflict with the rollback's marker";
  Status e = branch.UndoWriteFailed(SqlStateOf(w.status()), SqlTextOf(w.status()));
  EXPECT_EQ(SqlStateOf(e), "40001");
  ASSERT_TRUE(c->Run("ROLLBACK").ok());
  (void)branch.Finish(*client_, false);  // the global transaction is over: the coordinator may refuse the report
  EXPECT_EQ(Snapshot("accounts"), before);
}

}  // namespace
}  // namespace dtx::at::testing
