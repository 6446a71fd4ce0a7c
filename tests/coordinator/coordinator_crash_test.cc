// kill -9 of the coordinator at random points of a stream of transactions (begin, two branches,
// a phase-one report, commit or rollback), then restart: every transaction ends in the outcome its
// client was told, every branch of one told committed gets phase 2, and no branch is both
// committed and rolled back. Runs on SQLite and, under scripts/test.sh, on PostgreSQL.
// DTX_CRASH_ROUNDS sets the number of kills (default 4).
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <map>
#include <random>
#include <set>
#include <thread>

#include "coordinator_process.h"
#include "test_participant.h"

namespace dtx::testing {
namespace {

using namespace std::chrono_literals;

int Rounds() {
  const char* env = std::getenv("DTX_CRASH_ROUNDS");
  return env ? std::atoi(env) : 4;
}

enum class Told { kNothing, kCommitted, kRolledBack };

struct Txn {
  std::string xid;
  std::vector<int64_t> branches;
  Told told = Told::kNothing;
};

class CoordinatorCrash : public ::testing::TestWithParam<std::string> {};

TEST_P(CoordinatorCrash, EveryTransactionEndsAsItsClientWasTold) {
  std::vector<std::string> flags = {"--default-timeout-ms", "2000"};
  if (GetParam() == "postgres") {
    const char* uri = std::getenv("DTX_TEST_PG_URI");
    if (!uri) {
      if (std::getenv("DTX_REQUIRE_POSTGRES")) FAIL() << "DTX_TEST_PG_URI is not set";
      GTEST_SKIP() << "DTX_TEST_PG_URI is not set: run through scripts/test.sh for a PostgreSQL server";
    }
    flags.insert(flags.end(), {"--store", uri, "--pg-schema", "crash_" + std::to_string(getpid())});
  }
  CoordinatorProcess tc(flags);
  ASSERT_NE(tc.port(), 0);
  TestParticipant rm(tc.address(), {"db"}, "rm-1");
  ASSERT_EQ(rm.registration(), pb::OK);

  std::mutex mu;
  std::vector<Txn> txns;
  std::atomic<bool> stop{false};
  std::vector<std::thread> clients;
  for (int c = 0; c < 4; ++c) {
    clients.emplace_back([&, c] {
      TestTm tm(tc.address());
      std::mt19937 rng(c * 7919 + 1);
      while (!stop) {
        auto begin = tm.Begin();
        if (!begin.ok() || begin->code() != pb::OK) {
          std::this_thread::sleep_for(20ms);  // the coordinator is down: try again
          continue;
        }
        Txn t;
        t.xid = begin->xid();
        for (int b = 0; b < 2; ++b) {
          auto r = rm.RegisterBranch(t.xid, "db", {"db:row:" + t.xid + ":" + std::to_string(b)});
          if (r.code() != pb::OK) continue;
          t.branches.push_back(r.branch_id());
          if (b == 0) {
            // Phase one done (answered before it is logged): a report lost by a kill must not
            // change the outcome or keep phase 2 from the branch.
            pb::ReportBranchRequest report;
            report.set_xid(t.xid);
            report.set_branch_id(r.branch_id());
            report.set_status(pb::PHASE_ONE_DONE);
            (void)rm.client().CallSync<pb::ReportBranchResponse>("dtx.v1.TransactionCoordinator:1.0", "ReportBranch",
                                                                 report);
          }
        }
        if (rng() % 3) {
          auto r = tm.Commit(t.xid);
          if (r.ok() && r->code() == pb::OK) t.told = Told::kCommitted;
          if (r.ok() && r->code() == pb::TIMED_OUT) t.told = Told::kRolledBack;
        } else {
          auto r = tm.Rollback(t.xid);
          if (r.ok() && r->code() == pb::OK) t.told = Told::kRolledBack;
        }
        std::lock_guard lock(mu);
        txns.push_back(std::move(t));
      }
    });
  }
  std::mt19937 rng(std::random_device{}());
  for (int round = 0; round < Rounds(); ++round) {
    std::this_thread::sleep_for(std::chrono::milliseconds(std::uniform_int_distribution<int>(200, 700)(rng)));
    tc.Restart();
    ASSERT_NE(tc.port(), 0) << "the coordinator did not come back";
  }
  std::this_thread::sleep_for(300ms);
  stop = true;
  for (auto& t : clients) t.join();

  size_t committed = 0, rolled_back = 0, untold = 0;
  for (const auto& t : txns) {
    SCOPED_TRACE(t.xid);
    if (t.told == Told::kCommitted) {
      ++committed;
      ASSERT_TRUE(rm.WaitFor(true, t.branches.size(), t.xid, 15s)) << "told committed, phase 2 never came";
      EXPECT_EQ(rm.count(false, t.xid), 0u) << "told committed, yet rolled back";
    } else if (t.told == Told::kRolledBack) {
      ++rolled_back;
      EXPECT_EQ(rm.count(true, t.xid), 0u) << "told rolled back, yet committed";
    } else {
      ++untold;
    }
  }
  // Whatever was decided, no transaction went both ways.
  std::map<std::string, std::set<bool>> ways;
  for (const auto& call : rm.calls()) ways[call.xid].insert(call.commit);
  for (const auto& [xid, w] : ways) EXPECT_EQ(w.size(), 1u) << xid << " was both committed and rolled back";
  std::cout << GetParam() << ": " << Rounds() << " kills, " << txns.size() << " transactions: " << committed
            << " told committed, " << rolled_back << " told rolled back, " << untold << " cut off by a kill\n";
  EXPECT_GT(committed, 0u);
}

INSTANTIATE_TEST_SUITE_P(Stores, CoordinatorCrash, ::testing::Values("sqlite", "postgres"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace dtx::testing
