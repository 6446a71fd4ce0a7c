// UndoSweeper against a real PostgreSQL and a real dtx-coordinator process: which undo rows and
// rollback markers a sweep deletes (committed or forgotten xids; old markers of finished or
// forgotten xids) and which it keeps (live xids, xids rolling back, young markers, anything
// while the coordinator cannot be asked).
#include <gtest/gtest.h>

#include <thread>

#include "at_harness.h"
#include "coordinator_process.h"
#include "dtx/at/at_resource_manager.h"
#include "dtx/at/undo_log.h"
#include "dtx/at/undo_sweeper.h"

namespace dtx::at::testing {
namespace {

using namespace std::chrono_literals;

constexpr const char* kFailingResource = "sweep-test-failing";

class UndoSweepTest : public AtTest {
 protected:
  void SetUp() override {
    AtTest::SetUp();
    if (IsSkipped() || HasFailure()) return;
    Exec(CreateUndoTableSql(kDefaultUndoTable));
    coordinator_ = std::make_unique<::dtx::testing::CoordinatorProcess>();
    sdk::CoordinatorOptions co;
    co.addresses = {coordinator_->address()};
    co.application = "sweep-test";
    co.client_id = "sweep-test-rm";
    co.resource_ids = {kFailingResource};
    co.connect_wait = 500ms;
    co.call_timeout = 2s;
    co.attempts = 2;
    // A resource whose rollback always fails retryably: its transactions stay RollbackRetrying.
    client_ = std::make_unique<sdk::CoordinatorClient>(
        co, [](sdk::BranchCall call, std::function<void(sdk::BranchAnswer)> answer) {
          answer({call.commit ? sdk::BranchStatus::kPhaseTwoCommitted
                              : sdk::BranchStatus::kPhaseTwoRollbackFailedRetryable,
                  "test resource keeps failing"});
        });
    ASSERT_TRUE(client_->WaitRegistered(10s).ok());
  }
  void TearDown() override {
    client_.reset();
    coordinator_.reset();
  }

  std::unique_ptr<UndoSweeper> Sweeper(UndoSweepOptions options = {}) {
    return std::make_unique<UndoSweeper>(std::map<std::string, std::string>{{options_.resource_id, schema_->uri()}},
                                         std::string(kDefaultUndoTable),
                                         [this](const std::string& xid) { return client_->GetStatus(xid); }, options);
  }
  std::string Begin() {
    auto xid = client_->Begin("sweep-test", 60s);
    EXPECT_TRUE(xid.ok()) << xid.status();
    return xid.ok() ? *xid : "";
  }
  // An undo row as phase one writes it (log_status 0) or a rollback marker (1), `age_s` old.
  void Row(const std::string& xid, int64_t branch_id, int status, int age_s = 0) {
    auto r = conn_->Run("INSERT INTO dtx_undo_log (xid, branch_id, log_status, statements, created_at)"
                        " VALUES ($1, $2::bigint, $3::smallint, '[]', now() - $4::int * interval '1 second')",
                        {xid, std::to_string(branch_id), std::to_string(status), std::to_string(age_s)});
    ASSERT_TRUE(r.ok()) << r.status();
  }
  int64_t Rows(const std::string& xid, int status) {
    auto r = conn_->Run("SELECT count(*) FROM dtx_undo_log WHERE xid = $1 AND log_status = $2::smallint",
                        {xid, std::to_string(status)});
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? std::stoll(*r->rows[0][0]) : -1;
  }
  sdk::GlobalStatus WaitStatus(const std::string& xid, std::function<bool(sdk::GlobalStatus)> want) {
    sdk::GlobalStatus last = sdk::GlobalStatus::kUnknown;
    for (auto end = std::chrono::steady_clock::now() + 15s; std::chrono::steady_clock::now() < end;) {
      auto s = client_->GetStatus(xid);
      if (s.ok()) {
        last = s->status;
        if (want(last)) return last;
      }
      std::this_thread::sleep_for(20ms);
    }
    return last;
  }
  // A transaction whose rollback keeps failing: RollbackRetrying (phase two will come again).
  std::string RollingBack() {
    const std::string xid = Begin();
    sdk::BranchRegistration reg{.xid = xid, .resource_id = kFailingResource, .type = sdk::BranchType::kAT};
    auto branch = client_->RegisterBranch(reg);
    EXPECT_TRUE(branch.ok()) << branch.status();
    (void)client_->Rollback(xid);
    auto s = WaitStatus(xid, [](sdk::GlobalStatus s) {
      return s == sdk::GlobalStatus::kRollbackRetrying || s == sdk::GlobalStatus::kRollbacking;
    });
    EXPECT_TRUE(s == sdk::GlobalStatus::kRollbackRetrying || s == sdk::GlobalStatus::kRollbacking)
        << sdk::GlobalStatusName(s);
    return xid;
  }

  std::unique_ptr<::dtx::testing::CoordinatorProcess> coordinator_;
  std::unique_ptr<sdk::CoordinatorClient> client_;
};

TEST_F(UndoSweepTest, DeletesRowsOfCommittedAndForgottenXidsKeepsLiveAndRollingBack) {
  const std::string committed = Begin();
  auto c = client_->Commit(committed);
  ASSERT_TRUE(c.ok()) << c.status();
  const std::string live = Begin();
  const std::string rolling_back = RollingBack();
  const std::string unknown = coordinator_->address() + ":424242424242";
  ASSERT_EQ(client_->GetStatus(unknown).status().code(), StatusCode::kNotFound);

  for (const auto& xid : {committed, live, rolling_back, unknown}) {
    Row(xid, 1, 0);
    Row(xid, 2, 0);
  }
  auto sweeper = Sweeper();
  UndoSweepStats stats = sweeper->SweepOnce();
  EXPECT_EQ(stats.rows_deleted, 4u);
  EXPECT_EQ(stats.status_errors, 0u);
  EXPECT_EQ(stats.xids_seen, 4u);
  EXPECT_EQ(Rows(committed, 0), 0);
  EXPECT_EQ(Rows(unknown, 0), 0);
  EXPECT_EQ(Rows(live, 0), 2);
  EXPECT_EQ(Rows(rolling_back, 0), 2);
  EXPECT_EQ(sweeper->swept_rows(), 4u);
  // A second round finds nothing more to delete.
  EXPECT_EQ(sweeper->SweepOnce().rows_deleted, 0u);
  EXPECT_EQ(Count("SELECT count(*) FROM dtx_undo_log"), 4);
}

TEST_F(UndoSweepTest, DeletesOnlyOldMarkersOfFinishedOrForgottenXids) {
  const std::string rolled_back = Begin();
  auto r = client_->Rollback(rolled_back);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->status, sdk::GlobalStatus::kRollbacked);  // no branch: finished at once
  const std::string unknown_old = coordinator_->address() + ":424242424243";
  const std::string unknown_young = coordinator_->address() + ":424242424244";
  const std::string live = Begin();
  const std::string rolling_back = RollingBack();

  Row(rolled_back, 1, 1, 3600);
  Row(unknown_old, 1, 1, 3600);
  Row(unknown_young, 1, 1, 5);
  Row(live, 1, 1, 3600);
  Row(rolling_back, 1, 1, 3600);
  UndoSweepOptions options;
  options.marker_age = 10min;
  auto sweeper = Sweeper(options);
  UndoSweepStats stats = sweeper->SweepOnce();
  EXPECT_EQ(stats.markers_deleted, 2u);
  EXPECT_EQ(stats.rows_deleted, 0u);
  EXPECT_EQ(Rows(rolled_back, 1), 0);
  EXPECT_EQ(Rows(unknown_old, 1), 0);
  EXPECT_EQ(Rows(unknown_young, 1), 1);  // a phase one registered before the rollback may still commit
  EXPECT_EQ(Rows(live, 1), 1);
  EXPECT_EQ(Rows(rolling_back, 1), 1);
}

TEST_F(UndoSweepTest, DeletesNothingWhileTheCoordinatorIsDown) {
  const std::string committed = Begin();
  ASSERT_TRUE(client_->Commit(committed).ok());
  const std::string unknown = coordinator_->address() + ":424242424245";
  Row(committed, 1, 0);
  Row(unknown, 1, 0);
  Row(unknown, 2, 1, 3600);
  coordinator_->Kill();
  auto sweeper = Sweeper();
  UndoSweepStats stats = sweeper->SweepOnce();
  EXPECT_EQ(stats.rows_deleted + stats.markers_deleted, 0u);
  EXPECT_GE(stats.status_errors, 1u);
  EXPECT_EQ(Count("SELECT count(*) FROM dtx_undo_log"), 3);
}

TEST_F(UndoSweepTest, PagesThroughManyXidsInBatches) {
  // More xids than one page, the live ones first (oldest): they must not hide the rest.
  std::vector<std::string> live;
  for (int i = 0; i < 3; ++i) {
    live.push_back(Begin());
    Row(live.back(), 1, 0, 100);
  }
  for (int i = 0; i < 7; ++i) Row(coordinator_->address() + ":5000000" + std::to_string(i), 1, 0, 10);
  UndoSweepOptions options;
  options.batch = 2;
  auto sweeper = Sweeper(options);
  UndoSweepStats stats = sweeper->SweepOnce();
  EXPECT_EQ(stats.xids_seen, 10u);
  EXPECT_EQ(stats.rows_deleted, 7u);
  EXPECT_EQ(Count("SELECT count(*) FROM dtx_undo_log"), 3);
  for (const auto& xid : live) EXPECT_EQ(Rows(xid, 0), 1);
}

TEST_F(UndoSweepTest, ResourceManagerSweepsAtStart) {
  const std::string unknown = coordinator_->address() + ":424242424246";
  Row(unknown, 1, 0);
  AtResourceManagerOptions rm;
  rm.databases = {{options_.resource_id, schema_->uri()}};
  rm.sweep.interval = 50ms;
  AtResourceManager manager(rm);
  ASSERT_TRUE(manager.Start().ok());
  manager.StartSweeping([this](const std::string& xid) { return client_->GetStatus(xid); });
  for (auto end = std::chrono::steady_clock::now() + 10s;
       manager.swept_rows() < 1 && std::chrono::steady_clock::now() < end;) {
    std::this_thread::sleep_for(20ms);
  }
  EXPECT_EQ(manager.swept_rows(), 1u);
  EXPECT_EQ(Rows(unknown, 0), 0);
  manager.Stop();
}

}  // namespace
}  // namespace dtx::at::testing
