// The LogStore contract, run against every store: memory, SQLite and PostgreSQL.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <thread>

#include "store_harness.h"

namespace dtx::log {
namespace {

using testing::StoreHarness;

GlobalRecord Global(const std::string& xid, GlobalStatus status = GlobalStatus::kBegin, int64_t begin_ms = 1000) {
  GlobalRecord g;
  g.xid = xid;
  g.status = status;
  g.name = "transfer";
  g.application = "bank";
  g.timeout_ms = 60'000;
  g.begin_time_ms = begin_ms;
  g.owner_node = "node-1";
  g.application_data = std::string("app\0data", 8);
  g.updated_time_ms = begin_ms;
  return g;
}

BranchRecord Branch(const std::string& xid, int64_t id, BranchType type = BranchType::kAT) {
  BranchRecord b;
  b.branch_id = id;
  b.xid = xid;
  b.resource_id = "jdbc:orders";
  b.type = type;
  b.status = BranchStatus::kRegistered;
  b.lock_keys = "orders:t:1;orders:t:2";
  b.application_data = "{\"amount\":10}";
  b.client_id = "orders-svc:127.0.0.1:5000";
  b.registered_time_ms = 1001;
  return b;
}

class LogStoreContract : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    const std::string& kind = GetParam();
    if (kind == "memory") harness_ = testing::MakeMemoryHarness();
    if (kind == "sqlite") harness_ = testing::MakeSqliteHarness();
    if (kind == "postgres") {
      harness_ = testing::MakePostgresHarness();
      if (!harness_) {
        if (std::getenv("DTX_REQUIRE_POSTGRES")) FAIL() << "DTX_TEST_PG_URI is not set";
        GTEST_SKIP() << "DTX_TEST_PG_URI is not set: run through scripts/test.sh for a PostgreSQL server";
      }
    }
    ASSERT_TRUE(harness_) << kind;
    store_ = harness_->Open();
    ASSERT_TRUE(store_);
  }
  void TearDown() override {
    if (store_) store_->Close();
  }

  void MustWrite(Batch b) {
    WriteResult r = store_->WriteSync(std::move(b));
    ASSERT_TRUE(r.ok()) << r.status;
  }
  TransactionSnapshot MustGet(const std::string& xid) {
    auto r = store_->Get(xid);
    EXPECT_TRUE(r.ok()) << r.status();
    EXPECT_TRUE(r.ok() && r->has_value()) << xid << " missing";
    return r.ok() && r->has_value() ? **r : TransactionSnapshot{};
  }

  std::unique_ptr<StoreHarness> harness_;
  std::unique_ptr<LogStore> store_;
};

TEST_P(LogStoreContract, KeepsATransactionWithBranchesAndLocks) {
  Batch b;
  b.Insert(Global("x:1")).Insert(Branch("x:1", 11)).Lock("x:1", 11, {"orders:t:2", "orders:t:1"});
  b.Insert(Branch("x:1", 12, BranchType::kTCC));
  MustWrite(std::move(b));
  TransactionSnapshot s = MustGet("x:1");
  EXPECT_EQ(s.global, Global("x:1"));
  ASSERT_EQ(s.branches.size(), 2u);
  EXPECT_EQ(s.branches[0], Branch("x:1", 11));
  EXPECT_EQ(s.branches[1], Branch("x:1", 12, BranchType::kTCC));
  ASSERT_EQ(s.locks.size(), 2u);
  EXPECT_EQ(s.locks[0], (RowLock{"orders:t:1", "x:1", 11}));
  EXPECT_EQ(s.locks[1], (RowLock{"orders:t:2", "x:1", 11}));
}

TEST_P(LogStoreContract, UnknownXidIsAbsentNotAnError) {
  auto r = store_->Get("no:such");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_FALSE(r->has_value());
}

TEST_P(LogStoreContract, LockConflictFailsTheWholeBatchAndNamesTheHolder) {
  MustWrite(std::move(Batch().Insert(Global("x:1")).Insert(Branch("x:1", 11)).Lock("x:1", 11, {"r:t:1"})));
  MustWrite(std::move(Batch().Insert(Global("x:2"))));
  Batch b;
  b.Insert(Branch("x:2", 21)).Lock("x:2", 21, {"r:t:0", "r:t:1"}).SetStatus("x:2", GlobalStatus::kCommitting);
  WriteResult r = store_->WriteSync(std::move(b));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status.code(), StatusCode::kFailedPrecondition);
  ASSERT_TRUE(r.conflict.has_value());
  EXPECT_EQ(r.conflict->row_key, "r:t:1");
  EXPECT_EQ(r.conflict->holder_xid, "x:1");
  EXPECT_EQ(r.conflict->holder_branch_id, 11);
  // Nothing of the failed batch landed: no branch, no lock on r:t:0, status unchanged.
  TransactionSnapshot s = MustGet("x:2");
  EXPECT_TRUE(s.branches.empty());
  EXPECT_TRUE(s.locks.empty());
  EXPECT_EQ(s.global.status, GlobalStatus::kBegin);
  auto held = store_->FindLocks({"r:t:0", "r:t:1"});
  ASSERT_TRUE(held.ok());
  ASSERT_EQ(held->size(), 1u);
  EXPECT_EQ((*held)[0], (RowLock{"r:t:1", "x:1", 11}));
}

TEST_P(LogStoreContract, AFailingBatchUndoesEveryKindOfStepBeforeIt) {
  MustWrite(std::move(Batch().Insert(Global("x:1")).Insert(Branch("x:1", 11)).Lock("x:1", 11, {"r:t:1"})));
  MustWrite(std::move(Batch().Insert(Global("x:2")).Insert(Branch("x:2", 21)).Lock("x:2", 21, {"r:t:2"})));
  MustWrite(std::move(Batch().Insert(Global("x:3")).Insert(Branch("x:3", 31)).Lock("x:3", 31, {"r:t:3", "r:t:4"})));
  MustWrite(std::move(Batch().Insert(Global("x:4")).Insert(Branch("x:4", 41)).Lock("x:4", 41, {"r:t:held"})));
  Batch b;
  b.SetStatus("x:1", 11, BranchStatus::kPhaseOneDone)
      .Insert(Branch("x:1", 12))  // may grow the vector the status change points into
      .Insert(Branch("x:1", 13))
      .Insert(Branch("x:1", 14))
      .SetStatus("x:1", GlobalStatus::kCommitting, 7)
      .Unlock("x:2")
      .Remove("x:3")
      .Insert(Global("x:5"))
      .Lock("x:5", 0, {"r:t:5"})
      .Remove("x:5")
      .Insert(Global("x:5"))
      .Lock("x:1", 12, {"r:t:new", "r:t:held"});  // held by x:4: the whole batch fails
  WriteResult r = store_->WriteSync(std::move(b));
  ASSERT_FALSE(r.ok());
  ASSERT_TRUE(r.conflict.has_value()) << r.status;
  EXPECT_EQ(r.conflict->holder_xid, "x:4");

  TransactionSnapshot one = MustGet("x:1");
  EXPECT_EQ(one.global, Global("x:1"));
  ASSERT_EQ(one.branches.size(), 1u);
  EXPECT_EQ(one.branches[0], Branch("x:1", 11));
  EXPECT_EQ(MustGet("x:2").locks.size(), 1u);
  TransactionSnapshot three = MustGet("x:3");
  EXPECT_EQ(three.branches.size(), 1u);
  EXPECT_EQ(three.locks.size(), 2u);
  auto five = store_->Get("x:5");
  ASSERT_TRUE(five.ok());
  EXPECT_FALSE(five->has_value());
  auto held = store_->FindLocks({"r:t:1", "r:t:2", "r:t:3", "r:t:4", "r:t:5", "r:t:new", "r:t:held"});
  ASSERT_TRUE(held.ok()) << held.status();
  ASSERT_EQ(held->size(), 5u);
  // And the store goes on: the same changes without the conflicting key apply.
  MustWrite(std::move(Batch().Unlock("x:2").Remove("x:3").Insert(Branch("x:1", 12)).Lock("x:1", 12, {"r:t:new"})));
  EXPECT_EQ(MustGet("x:1").branches.size(), 2u);
  EXPECT_TRUE(MustGet("x:2").locks.empty());
}

TEST_P(LogStoreContract, ATransactionMayRetakeItsOwnLocks) {
  MustWrite(std::move(Batch().Insert(Global("x:1")).Insert(Branch("x:1", 11)).Lock("x:1", 11, {"r:t:1"})));
  MustWrite(std::move(Batch().Insert(Branch("x:1", 12)).Lock("x:1", 12, {"r:t:1", "r:t:2"})));
  TransactionSnapshot s = MustGet("x:1");
  ASSERT_EQ(s.locks.size(), 2u);
  EXPECT_EQ(s.locks[0], (RowLock{"r:t:1", "x:1", 11}));  // the first taker keeps it
  EXPECT_EQ(s.locks[1], (RowLock{"r:t:2", "x:1", 12}));
}

TEST_P(LogStoreContract, ReleasedLocksCanBeTakenByOthers) {
  MustWrite(std::move(Batch().Insert(Global("x:1")).Insert(Branch("x:1", 11)).Lock("x:1", 11, {"r:t:1"})));
  MustWrite(std::move(Batch().Insert(Global("x:2")).Insert(Branch("x:2", 21))));
  EXPECT_FALSE(store_->WriteSync(std::move(Batch().Lock("x:2", 21, {"r:t:1"}))).ok());
  MustWrite(std::move(Batch().Unlock("x:1").SetStatus("x:1", GlobalStatus::kCommitted)));
  MustWrite(std::move(Batch().Lock("x:2", 21, {"r:t:1"})));
  EXPECT_TRUE(MustGet("x:1").locks.empty());
  EXPECT_EQ(MustGet("x:2").locks.size(), 1u);
}

TEST_P(LogStoreContract, FindsLocksByPrefixInKeyOrder) {
  MustWrite(std::move(Batch().Insert(Global("x:1")).Insert(Branch("x:1", 11)).Lock("x:1", 11, {"r:t:2", "r:t:1", "r:tu:1"})));
  MustWrite(std::move(Batch().Insert(Global("x:2")).Insert(Branch("x:2", 21)).Lock("x:2", 21, {"r:t:3", "r:t;", "r:s:1"})));
  auto all = store_->FindLocksByPrefix("r:t:", "", 10);
  ASSERT_TRUE(all.ok()) << all.status();
  ASSERT_EQ(all->size(), 3u);  // not r:tu:1, r:t; (just above the range) or r:s:1
  EXPECT_EQ((*all)[0], (RowLock{"r:t:1", "x:1", 11}));
  EXPECT_EQ((*all)[1], (RowLock{"r:t:2", "x:1", 11}));
  EXPECT_EQ((*all)[2], (RowLock{"r:t:3", "x:2", 21}));
  auto others = store_->FindLocksByPrefix("r:t:", "x:1", 10);
  ASSERT_TRUE(others.ok()) << others.status();
  ASSERT_EQ(others->size(), 1u);
  EXPECT_EQ((*others)[0].xid, "x:2");
  auto first = store_->FindLocksByPrefix("r:", "", 1);
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_EQ(first->size(), 1u);
  EXPECT_EQ((*first)[0].row_key, "r:s:1");
  auto none = store_->FindLocksByPrefix("r:v:", "", 10);
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_TRUE(none->empty());
  MustWrite(std::move(Batch().Unlock("x:2")));
  auto after = store_->FindLocksByPrefix("r:t:", "x:1", 10);
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_TRUE(after->empty());
}

TEST_P(LogStoreContract, RemoveTakesBranchesAndLocksAlong) {
  MustWrite(std::move(Batch().Insert(Global("x:1")).Insert(Branch("x:1", 11)).Lock("x:1", 11, {"r:t:1"})));
  MustWrite(std::move(Batch().Remove("x:1")));
  auto r = store_->Get("x:1");
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->has_value());
  auto held = store_->FindLocks({"r:t:1"});
  ASSERT_TRUE(held.ok());
  EXPECT_TRUE(held->empty());
  // The XID and branch id can be written again (no leftovers).
  MustWrite(std::move(Batch().Insert(Global("x:1")).Insert(Branch("x:1", 11))));
}

TEST_P(LogStoreContract, OneBatchRemovesManyTransactions) {
  // More than one statement's worth in the SQLite store, and a part-filled last one.
  constexpr int kCount = 70;
  for (int i = 0; i < kCount; ++i) {
    const std::string xid = "x:" + std::to_string(i);
    MustWrite(std::move(Batch().Insert(Global(xid)).Insert(Branch(xid, 100 + i)).Lock(xid, 100 + i, {"r:t:" + std::to_string(i)})));
  }
  MustWrite(std::move(Batch().Insert(Global("x:keep")).Insert(Branch("x:keep", 1)).Lock("x:keep", 1, {"r:t:keep"})));
  Batch remove;
  for (int i = 0; i < kCount; ++i) remove.Remove("x:" + std::to_string(i));
  remove.Remove("x:never-was");
  MustWrite(std::move(remove));
  auto all = store_->LoadAll();
  ASSERT_TRUE(all.ok()) << all.status();
  ASSERT_EQ(all->size(), 1u);
  EXPECT_EQ(all->front().global.xid, "x:keep");
  EXPECT_EQ(all->front().branches.size(), 1u);
  EXPECT_EQ(all->front().locks.size(), 1u);
  auto locks = store_->FindLocks({"r:t:0", "r:t:69", "r:t:keep"});
  ASSERT_TRUE(locks.ok()) << locks.status();
  ASSERT_EQ(locks->size(), 1u);
  EXPECT_EQ(locks->front().xid, "x:keep");
}

TEST_P(LogStoreContract, StatusChangesAndTheirErrors) {
  MustWrite(std::move(Batch().Insert(Global("x:1")).Insert(Branch("x:1", 11))));
  MustWrite(std::move(Batch()
                          .SetStatus("x:1", GlobalStatus::kCommitting, 5000)
                          .SetStatus("x:1", 11, BranchStatus::kPhaseTwoCommitted)));
  TransactionSnapshot s = MustGet("x:1");
  EXPECT_EQ(s.global.status, GlobalStatus::kCommitting);
  EXPECT_EQ(s.global.updated_time_ms, 5000);
  EXPECT_EQ(s.branches.at(0).status, BranchStatus::kPhaseTwoCommitted);

  WriteResult missing = store_->WriteSync(
      std::move(Batch().SetStatus("x:1", GlobalStatus::kCommitted).SetStatus("x:9", GlobalStatus::kCommitted)));
  EXPECT_EQ(missing.status.code(), StatusCode::kNotFound);
  EXPECT_EQ(MustGet("x:1").global.status, GlobalStatus::kCommitting) << "the failed batch changed nothing";
  EXPECT_EQ(store_->WriteSync(std::move(Batch().SetStatus("x:1", 99, BranchStatus::kPhaseOneDone))).status.code(),
            StatusCode::kNotFound);
  EXPECT_EQ(store_->WriteSync(std::move(Batch().Insert(Global("x:1")))).status.code(), StatusCode::kAlreadyExists);
  EXPECT_EQ(store_->WriteSync(std::move(Batch().Insert(Branch("x:9", 91)))).status.code(), StatusCode::kNotFound);
}

TEST_P(LogStoreContract, LoadAllReturnsEveryTransaction) {
  for (int i = 0; i < 20; ++i) {
    const std::string xid = "x:" + std::to_string(100 + i);
    Batch b;
    b.Insert(Global(xid));
    if (i % 2) b.Insert(Branch(xid, 1000 + i)).Lock(xid, 1000 + i, {"r:t:" + std::to_string(i)});
    MustWrite(std::move(b));
  }
  auto all = store_->LoadAll();
  ASSERT_TRUE(all.ok()) << all.status();
  ASSERT_EQ(all->size(), 20u);
  for (const auto& s : *all) {
    const int i = std::stoi(s.global.xid.substr(2)) - 100;
    EXPECT_EQ(s.branches.size(), i % 2 ? 1u : 0u) << s.global.xid;
    EXPECT_EQ(s.locks.size(), i % 2 ? 1u : 0u) << s.global.xid;
  }
}

TEST_P(LogStoreContract, ListFiltersByStatusAndAgeAndPages) {
  for (int i = 0; i < 25; ++i) {
    const auto status = i % 5 == 0 ? GlobalStatus::kCommitFailed : GlobalStatus::kBegin;
    char xid[16];
    std::snprintf(xid, sizeof xid, "x:%03d", i);
    MustWrite(std::move(Batch().Insert(Global(xid, status, 1000 + i))));
  }
  ListFilter failed;
  failed.statuses = {GlobalStatus::kCommitFailed};
  auto page = store_->List(failed);
  ASSERT_TRUE(page.ok()) << page.status();
  ASSERT_EQ(page->transactions.size(), 5u);
  EXPECT_EQ(page->transactions[0].xid, "x:000");
  EXPECT_EQ(page->transactions[4].xid, "x:020");
  EXPECT_TRUE(page->next_after_xid.empty());

  ListFilter old;
  old.begun_before_ms = 1010;
  old.limit = 4;
  std::vector<std::string> seen;
  while (true) {
    auto p = store_->List(old);
    ASSERT_TRUE(p.ok());
    for (const auto& g : p->transactions) seen.push_back(g.xid);
    if (p->next_after_xid.empty()) break;
    old.after_xid = p->next_after_xid;
  }
  ASSERT_EQ(seen.size(), 10u);
  EXPECT_EQ(seen.front(), "x:000");
  EXPECT_EQ(seen.back(), "x:009");
}

TEST_P(LogStoreContract, BinaryApplicationDataRoundTrips) {
  std::string blob;
  for (int i = 0; i < 256 * 1024; ++i) blob.push_back(static_cast<char>(i * 7));
  GlobalRecord g = Global("x:bin");
  g.application_data = blob;
  BranchRecord b = Branch("x:bin", 5);
  b.application_data = blob;
  MustWrite(std::move(Batch().Insert(g).Insert(b)));
  TransactionSnapshot s = MustGet("x:bin");
  EXPECT_EQ(s.global.application_data, blob);
  EXPECT_EQ(s.branches.at(0).application_data, blob);
}

TEST_P(LogStoreContract, ConcurrentWritersAreAllAcknowledged) {
  constexpr int kThreads = 8, kPerThread = 100;
  std::atomic<int> ok{0}, failed{0}, done{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        const std::string xid = "c:" + std::to_string(t) + ":" + std::to_string(i);
        const int64_t branch = t * 100000 + i;
        store_->Write(std::move(Batch().Insert(Global(xid)).Insert(Branch(xid, branch)).Lock(xid, branch, {"r:" + xid})),
                      [&](const WriteResult& r) {
                        r.ok() ? ++ok : ++failed;
                        ++done;
                      });
      }
    });
  }
  for (auto& t : threads) t.join();
  for (int i = 0; i < 3000 && done < kThreads * kPerThread; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_EQ(ok.load(), kThreads * kPerThread);
  EXPECT_EQ(failed.load(), 0);
  auto all = store_->LoadAll();
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->size(), static_cast<size_t>(kThreads * kPerThread));
}

TEST_P(LogStoreContract, RacingForOneLockExactlyOneWins) {
  constexpr int kRacers = 8;
  for (int i = 0; i < kRacers; ++i) {
    const std::string xid = "race:" + std::to_string(i);
    MustWrite(std::move(Batch().Insert(Global(xid)).Insert(Branch(xid, 500 + i))));
  }
  std::atomic<int> winners{0}, conflicts{0}, done{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < kRacers; ++i) {
    threads.emplace_back([&, i] {
      const std::string xid = "race:" + std::to_string(i);
      store_->Write(std::move(Batch().Lock(xid, 500 + i, {"hot:row:1", "hot:row:" + std::to_string(10 + i)})),
                    [&](const WriteResult& r) {
                      if (r.ok()) ++winners;
                      if (r.conflict && r.conflict->row_key == "hot:row:1") ++conflicts;
                      ++done;
                    });
    });
  }
  for (auto& t : threads) t.join();
  for (int i = 0; i < 1000 && done < kRacers; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_EQ(winners.load(), 1);
  EXPECT_EQ(conflicts.load(), kRacers - 1);
  auto held = store_->FindLocks({"hot:row:1"});
  ASSERT_TRUE(held.ok());
  ASSERT_EQ(held->size(), 1u);
  // The loser's other key was not taken either.
  auto loser_keys = store_->LoadAll();
  ASSERT_TRUE(loser_keys.ok());
  size_t locks = 0;
  for (const auto& s : *loser_keys) locks += s.locks.size();
  EXPECT_EQ(locks, 2u);
}

TEST_P(LogStoreContract, WritesAfterCloseAreRefused) {
  MustWrite(std::move(Batch().Insert(Global("x:1"))));
  store_->Close();
  WriteResult r = store_->WriteSync(std::move(Batch().Insert(Global("x:2"))));
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(r.status.code(), StatusCode::kFailedPrecondition);
}

// The durable stores only: the memory store keeps nothing across opens, by design.
class DurableLogStore : public LogStoreContract {};

TEST_P(DurableLogStore, ReopeningKeepsWhatWasAcknowledged) {
  MustWrite(std::move(Batch().Insert(Global("x:1")).Insert(Branch("x:1", 11)).Lock("x:1", 11, {"r:t:1"})));
  MustWrite(std::move(Batch().SetStatus("x:1", GlobalStatus::kCommitting, 7)));
  store_->Close();
  store_ = harness_->Open();
  ASSERT_TRUE(store_);
  TransactionSnapshot s = MustGet("x:1");
  EXPECT_EQ(s.global.status, GlobalStatus::kCommitting);
  EXPECT_EQ(s.branches.size(), 1u);
  EXPECT_EQ(s.locks.size(), 1u);
}

INSTANTIATE_TEST_SUITE_P(Stores, LogStoreContract, ::testing::Values("memory", "sqlite", "postgres"),
                         [](const auto& info) { return info.param; });
INSTANTIATE_TEST_SUITE_P(Stores, DurableLogStore, ::testing::Values("sqlite", "postgres"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace dtx::log
