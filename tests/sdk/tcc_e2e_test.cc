// End to end: the example banks as real processes (each its own SQLite database, or PostgreSQL),
// a real dtx-coordinator, the SDK's TM in this process. Participants and the coordinator are
// killed with SIGKILL at the worst moments; after each scenario every transaction is finished
// (the admin API lists none) and the money adds up.
#include <gtest/gtest.h>

#include <thread>

#include "bank.pb.h"
#include "dtx/rpc/client.h"
#include "dtx/sdk/tcc_action.h"
#include "dtx/sdk/transaction_manager.h"
#include "sdk_harness.h"

namespace dtx::sdk::testing {
namespace {

using ::dtx::testing::CoordinatorProcess;
using ::dtx::testing::Subprocess;
using namespace std::chrono_literals;
namespace bank = ::dtx::examples;

constexpr const char* kBank = "dtx.examples.Bank:1.0";
constexpr int64_t kStart = 10 * 1000;  // 10 accounts of 1000 per bank

struct Money {
  int64_t held = 0;       // balance + frozen
  int64_t in_flight = 0;  // frozen + incoming
};

class TccE2E : public ::testing::Test {
 protected:
  void StartBanks(std::vector<std::string> extra_a = {}, std::vector<std::string> extra_b = {},
                  std::string db_b = "") {
    a_ = std::make_unique<BankProcess>("bank-a", dir_.file("a.db"), tc_.address(), extra_a);
    b_ = std::make_unique<BankProcess>("bank-b", db_b.empty() ? dir_.file("b.db") : db_b, tc_.address(), extra_b);
    rpc::ClientOptions o;
    o.reconnect_backoff_min = 20ms;
    o.reconnect_backoff_max = 200ms;
    o.addresses = {a_->address()};
    ca_ = std::make_unique<rpc::Client>(o);
    o.addresses = {b_->address()};
    cb_ = std::make_unique<rpc::Client>(o);
    ASSERT_TRUE(ca_->WaitConnected(5s).ok());
    ASSERT_TRUE(cb_->WaitConnected(5s).ok());
  }

  Status Leg(rpc::Client& c, const char* method, int64_t account, int64_t amount,
             std::chrono::milliseconds timeout = 5s) {
    bank::LegRequest req;
    req.set_account(account);
    req.set_amount(amount);
    rpc::CallOptions o;
    o.timeout = timeout;
    auto r = c.CallSync<bank::LegResponse>(kBank, method, req, WithXid(o));
    if (!r.ok()) return r.status();
    if (r->code() != 0) return FailedPrecondition(r->message());
    return Status::Ok();
  }

  // Moves `amount` from account 1 of bank A to account 1 of bank B in one global transaction.
  Status Transfer(int64_t amount, bool fail_after = false, std::chrono::milliseconds leg_timeout = 5s,
                  std::chrono::milliseconds tx_timeout = 30s, std::string* xid = nullptr) {
    return GlobalTransactional(tm_, {.name = "transfer", .timeout = tx_timeout}, [&](GlobalTx& tx) -> Status {
      if (xid) *xid = tx.xid();
      DTX_RETURN_IF_ERROR(Leg(*ca_, "Debit", 1, amount, leg_timeout));
      DTX_RETURN_IF_ERROR(Leg(*cb_, "Credit", 1, amount, leg_timeout));
      if (fail_after) return Cancelled("the client changed its mind");
      return Status::Ok();
    });
  }

  Result<Money> MoneyOf(rpc::Client& c) {
    auto r = c.CallSync<bank::SummaryResponse>(kBank, "Summary", bank::SummaryRequest(), rpc::CallOptions{});
    if (!r.ok()) return r.status();
    return Money{r->total_balance() + r->total_frozen(), r->total_frozen() + r->total_incoming()};
  }

  // Every transaction finished, nothing frozen or incoming, and A and B hold what they should.
  void ExpectSettled(int64_t a_held, int64_t b_held) {
    EXPECT_TRUE(WaitNoneUnfinished(tc_.admin_port(), 30s));
    Money a, b;
    const auto deadline = std::chrono::steady_clock::now() + 15s;
    while (true) {
      auto ra = MoneyOf(*ca_), rb = MoneyOf(*cb_);
      if (ra.ok() && rb.ok()) {
        a = *ra;
        b = *rb;
        if (a.in_flight == 0 && b.in_flight == 0) break;
      }
      if (std::chrono::steady_clock::now() > deadline) break;
      std::this_thread::sleep_for(50ms);
    }
    EXPECT_EQ(a.in_flight, 0);
    EXPECT_EQ(b.in_flight, 0);
    if (a_held >= 0) {  // -1: moved at random, only the total counts
      EXPECT_EQ(a.held, a_held);
    }
    if (b_held >= 0) {
      EXPECT_EQ(b.held, b_held);
    }
    EXPECT_EQ(a.held + b.held, 2 * kStart) << "money was made or lost";
  }

  // The fence rows of a bank's SQLite database, as their states.
  std::vector<int64_t> FenceStates(const std::string& db) {
    std::vector<int64_t> states;
    auto opened = OpenLocalDatabase("sqlite:" + db);
    EXPECT_TRUE(opened.ok());
    if (!opened.ok()) return states;
    auto tx = (*opened)->Begin();
    auto rows = (*tx)->Query("SELECT state FROM dtx_tcc_fence ORDER BY xid, branch_id");
    EXPECT_TRUE(rows.ok()) << rows.status();
    if (rows.ok())
      for (const auto& r : *rows) states.push_back(AsInt(r[0]));
    return states;
  }

  TempDir dir_;
  CoordinatorProcess tc_;
  TransactionManager tm_{CoordinatorOptions{.addresses = {tc_.address()}, .application = "e2e"}};
  std::unique_ptr<BankProcess> a_, b_;
  std::unique_ptr<rpc::Client> ca_, cb_;
};

constexpr int64_t kTried = 1, kCommitted = 2, kRollbacked = 3, kSuspended = 4;

TEST_F(TccE2E, CommitMovesTheMoney) {
  StartBanks();
  ASSERT_TRUE(Transfer(100).ok());
  ASSERT_TRUE(Transfer(50).ok());
  ExpectSettled(kStart - 150, kStart + 150);
  EXPECT_EQ(FenceStates(a_->db()), (std::vector<int64_t>{kCommitted, kCommitted}));
}

TEST_F(TccE2E, RollbackGivesTheMoneyBack) {
  StartBanks();
  Status s = Transfer(100, /*fail_after=*/true);
  EXPECT_EQ(s.code(), StatusCode::kCancelled);
  // Not enough money: the debit's Try refuses, the transaction rolls back.
  s = Transfer(5000);
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition) << s;
  ExpectSettled(kStart, kStart);
  EXPECT_EQ(FenceStates(a_->db()), (std::vector<int64_t>{kRollbacked})) << "the refused Try left no row";
  EXPECT_EQ(FenceStates(b_->db()), (std::vector<int64_t>{kRollbacked}));
}

TEST_F(TccE2E, ParticipantKilledDuringTry) {
  StartBanks({"--hang-in", "try"});
  Status s = Transfer(100, false, /*leg_timeout=*/1500ms);
  EXPECT_FALSE(s.ok()) << "the debit never answered";
  ASSERT_TRUE(a_->WaitForLine("HANG try", 5s));
  a_->Restart();  // SIGKILL in the middle of the Try's local transaction, then start again
  ExpectSettled(kStart, kStart);
  EXPECT_EQ(FenceStates(a_->db()), (std::vector<int64_t>{kSuspended})) << "the Cancel found no Try: empty rollback";
}

TEST_F(TccE2E, ParticipantKilledDuringConfirm) {
  StartBanks({}, {"--hang-in", "confirm"});
  ASSERT_TRUE(Transfer(100).ok());
  ASSERT_TRUE(b_->WaitForLine("HANG confirm", 10s));
  b_->Restart();
  ExpectSettled(kStart - 100, kStart + 100);
  EXPECT_EQ(FenceStates(b_->db()), (std::vector<int64_t>{kCommitted}));
}

TEST_F(TccE2E, ParticipantKilledDuringCancel) {
  StartBanks({"--hang-in", "cancel"});
  EXPECT_FALSE(Transfer(100, /*fail_after=*/true).ok());
  ASSERT_TRUE(a_->WaitForLine("HANG cancel", 10s));
  a_->Restart();
  ExpectSettled(kStart, kStart);
  EXPECT_EQ(FenceStates(a_->db()), (std::vector<int64_t>{kRollbacked}));
}

TEST_F(TccE2E, CoordinatorKilledBetweenTryAndCommit) {
  StartBanks();
  auto tx = tm_.Begin({.name = "transfer", .timeout = 60s});
  ASSERT_TRUE(tx.ok());
  {
    XidScope scope(tx->xid());
    ASSERT_TRUE(Leg(*ca_, "Debit", 1, 100).ok());
    ASSERT_TRUE(Leg(*cb_, "Credit", 1, 100).ok());
  }
  tc_.Restart();
  ASSERT_TRUE(tx->Commit().ok());
  ExpectSettled(kStart - 100, kStart + 100);
}

TEST_F(TccE2E, CoordinatorKilledDuringPhaseTwoRedeliversAndTheFenceKeepsItOnce) {
  StartBanks({}, {"--slow-confirm-ms", "1500"});
  ASSERT_TRUE(Transfer(100).ok());
  std::this_thread::sleep_for(300ms);  // B is inside its Confirm
  tc_.Restart();
  ExpectSettled(kStart - 100, kStart + 100);
  EXPECT_EQ(FenceStates(b_->db()), (std::vector<int64_t>{kCommitted}));
}

TEST_F(TccE2E, DuplicatePhaseTwoDeliveriesConfirmOnce) {
  // B's first Confirm outlasts the coordinator's 1 s branch-call timeout: it asks again while
  // the first is still running.
  StartBanks({}, {"--slow-confirm-ms", "2500"});
  const int64_t retries_before = Metric(tc_.admin_port(), "dtx_phase_two_retries_total");
  ASSERT_TRUE(Transfer(100).ok());
  ExpectSettled(kStart - 100, kStart + 100);
  EXPECT_GT(Metric(tc_.admin_port(), "dtx_phase_two_retries_total"), retries_before)
      << "the coordinator delivered the Confirm more than once";
}

TEST_F(TccE2E, EmptyRollbackSucceedsAndIsRecorded) {
  StartBanks();
  // A branch of bank A's debit registered by someone else, whose Try never runs.
  CoordinatorOptions o{.addresses = {tc_.address()}, .application = "e2e-rm", .resource_ids = {"e2e.dummy"}};
  CoordinatorClient rm(o, [](BranchCall, std::function<void(BranchAnswer)> answer) {
    answer({BranchStatus::kPhaseTwoRollbacked, ""});
  });
  auto tx = tm_.Begin({.name = "empty-rollback"});
  ASSERT_TRUE(tx.ok());
  auto branch = rm.RegisterBranch({.xid = tx->xid(), .resource_id = "bank-a.debit", .type = BranchType::kTCC,
                                   .application_data = detail::EncodeApplicationData(
                                       "bank-a.debit", nlohmann::json{{"account", 1}, {"amount", 100}})});
  ASSERT_TRUE(branch.ok()) << branch.status();
  ASSERT_TRUE(tx->Rollback().ok());
  ExpectSettled(kStart, kStart);  // a Cancel that ran its business code would have added 100
  EXPECT_EQ(FenceStates(a_->db()), (std::vector<int64_t>{kSuspended}));
}

TEST_F(TccE2E, TryAfterItsCancelIsRefused) {
  // A waits 4 s between registering a branch and its Try; the transaction times out after
  // 1 s, its Cancel arrives first (empty rollback), and the late Try must do nothing.
  StartBanks({"--delay-after-register-ms", "4000"});
  std::string xid;
  Status s = Transfer(100, false, /*leg_timeout=*/10s, /*tx_timeout=*/1000ms, &xid);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("suspended"), std::string_view::npos) << s;
  ExpectSettled(kStart, kStart);
  EXPECT_EQ(FenceStates(a_->db()), (std::vector<int64_t>{kSuspended}));
}

TEST_F(TccE2E, ExampleClientKeepsTheTotal) {
  StartBanks();
  Subprocess client({DTX_TCC_TRANSFER_BIN, "--coordinator", tc_.address(), "--bank-a", a_->address(), "--bank-b",
                     b_->address(), "--transfers", "300", "--concurrency", "4", "--accounts", "10", "--max-amount",
                     "400"});
  auto done = client.WaitForLine("DONE ", 120s);
  ASSERT_TRUE(done) << "the client did not finish";
  auto check = client.WaitForLine("CHECK ", 90s);
  ASSERT_TRUE(check);
  EXPECT_EQ(check->rfind("CHECK OK", 0), 0u) << *check;
  EXPECT_NE(done->find("failed=0"), std::string::npos) << *done;
  EXPECT_TRUE(WaitNoneUnfinished(tc_.admin_port()));
}

TEST_F(TccE2E, BankOnPostgresWithConcurrentTransfers) {
  auto base = PostgresUri();
  if (!base) {
    if (std::getenv("DTX_REQUIRE_POSTGRES")) FAIL() << "DTX_TEST_PG_URI is not set";
    GTEST_SKIP() << "DTX_TEST_PG_URI is not set";
  }
  PgSchema schema(*base);
  StartBanks({}, {"--slow-confirm-ms", "1500"}, schema.uri());
  ASSERT_TRUE(Transfer(100).ok());  // B's first Confirm is slow and delivered twice
  ASSERT_TRUE(Transfer(20, true).code() == StatusCode::kCancelled);
  ExpectSettled(kStart - 100, kStart + 100);
  Subprocess client({DTX_TCC_TRANSFER_BIN, "--coordinator", tc_.address(), "--bank-a", a_->address(), "--bank-b",
                     b_->address(), "--transfers", "200", "--concurrency", "4", "--accounts", "10"});
  auto check = client.WaitForLine("CHECK ", 120s);
  ASSERT_TRUE(check);
  EXPECT_EQ(check->rfind("CHECK OK", 0), 0u) << *check;
  ExpectSettled(-1, -1);
}

}  // namespace
}  // namespace dtx::sdk::testing
