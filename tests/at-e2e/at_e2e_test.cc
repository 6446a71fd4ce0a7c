// AT mode end to end, every part real: a dtx-coordinator process, a dtx-sql-proxy process in AT
// mode, two PostgreSQL databases of the DTX_TEST_PG_URI server (two resources), and worker
// threads moving money between accounts of the two databases through the proxy with libpq.
//
// Each transfer is one global transaction: `SELECT dtx.begin()` on the source's session; there,
// in one local transaction, the debit (refused when the balance is short) and a row in the
// `transfers` ledger; `SET dtx.xid` and the credit (a one-statement local transaction) on the
// destination's session; then `SELECT dtx.commit()`, or `dtx.rollback()` for one transfer in five
// and for every one that failed on the way. Half the workers use the extended query protocol.
// Beside them, local workers move money between two accounts of one database in plain local
// transactions of sessions bound to no global transaction (a string of three statements, or a
// block through the extended protocol): the proxy checks those writes against the global locks,
// so they never overwrite a row that a global transaction may still undo (were they let through,
// that rollback would stop at a dirty write and the balances would not match).
//
// What is checked, once the workers stop, the coordinator lists nothing unfinished and the undo
// logs are empty:
// - money is conserved (the sum of all balances);
// - every account's balance is its initial one plus what the ledger rows of both databases say
//   came in and went out (the debit, the ledger row and the credit survived together or not at all);
// - every transfer the client saw Committed is in the ledger; none it rolled back (or never asked
//   to commit) is; the same for the local moves and their own ledger table;
// - no undo-log row is left (log_status 0) in either database.
// The second test kills -9 the proxy (whose restarted instance sweeps the undo rows of committed
// branches the kill left), then the coordinator, while transfers run, restarts them
// and checks the same, plus that transfers commit again after each restart.
//
// DTX_AT_E2E_SECONDS (default 4) sets the length of each phase, for longer soaks
// (bench/at/run_at_soak.sh).
#include <gtest/gtest.h>

#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdlib>
#include <iostream>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include "coordinator_process.h"
#include "pg_client.h"
#include "proxy_harness.h"
#include "sdk_harness.h"

using namespace std::chrono_literals;

namespace dtx::at::e2e {
namespace {

constexpr int kAccounts = 40;  // per database
constexpr int64_t kInitial = 1000;
constexpr int kWorkers = 6;
constexpr int kLocalWorkers = 2;

enum class Outcome {
  kNoEffect,    // dtx.begin() failed: nothing was written
  kRolledBack,  // dtx.commit() was never asked, or it answered rolled back
  kCommitted,   // dtx.commit() answered Committed
  kUnknown,     // dtx.commit() was asked and its answer lost (a process was killed)
};

struct Transfer {
  int64_t id = 0;
  int from_db = 0;  // 0 or 1; the destination is the other database
  int from = 0, to = 0;
  int64_t amount = 0;
  Outcome outcome = Outcome::kNoEffect;
  std::string xid;
};

// A local move: `amount` from account `from` to account `to` of database `db`, unbound.
struct Move {
  int64_t id = 0;
  int db = 0;
  int from = 0, to = 0;
  int64_t amount = 0;
  Outcome outcome = Outcome::kNoEffect;  // kCommitted, kRolledBack (an error), or kUnknown
};

std::chrono::milliseconds PhaseLength() {
  const char* s = std::getenv("DTX_AT_E2E_SECONDS");
  return std::chrono::milliseconds(static_cast<int64_t>((s ? std::atof(s) : 4.0) * 1000));
}

class AtE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto pg = ::dtx::testing::SharedPostgres();
    if (!pg) {
      if (std::getenv("DTX_REQUIRE_POSTGRES")) FAIL() << "DTX_TEST_PG_URI is not set";
      GTEST_SKIP() << "DTX_TEST_PG_URI is not set (run under scripts/with-postgres.sh)";
    }
    pg_ = *pg;
    std::string error;
    server_ = PgClient::Connect(ServerUri("postgres"), &error);
    ASSERT_TRUE(server_) << error;
    static int counter = 0;
    const std::string base = "at_e2e_" + std::to_string(getpid()) + "_" + std::to_string(counter++);
    dbs_ = {base + "_a", base + "_b"};
    for (const auto& db : dbs_) {
      ASSERT_TRUE(server_->Exec("DROP DATABASE IF EXISTS " + db).ok);
      auto created = server_->Exec("CREATE DATABASE " + db);
      ASSERT_TRUE(created.ok) << created.error;
      auto c = PgClient::Connect(ServerUri(db), &error);
      ASSERT_TRUE(c) << error;
      for (const std::string& sql : std::vector<std::string>{
               "CREATE TABLE accounts (id integer PRIMARY KEY, balance bigint NOT NULL CHECK (balance >= 0))",
            "CREATE TABLE transfers (id bigint PRIMARY KEY, from_db integer NOT NULL, from_id integer NOT NULL,"
            " to_id integer NOT NULL, amount bigint NOT NULL)",
            "CREATE TABLE moves (id bigint PRIMARY KEY, from_id integer NOT NULL, to_id integer NOT NULL,"
            " amount bigint NOT NULL)",
            "INSERT INTO accounts SELECT g, " + std::to_string(kInitial) + " FROM generate_series(0, " +
                std::to_string(kAccounts - 1) + ") g"}) {
        auto a = c->Exec(sql);
        ASSERT_TRUE(a.ok) << sql << ": " << a.error;
      }
    }
    coordinator_ = std::make_unique<::dtx::testing::CoordinatorProcess>();
    ASSERT_GT(coordinator_->port(), 0);
    ASSERT_GT(coordinator_->admin_port(), 0);
    StartProxy();
  }

  void TearDown() override {
    StopWorkers();
    proxy_.reset();
    coordinator_.reset();
    if (server_) {
      for (const auto& db : dbs_) server_->Exec("DROP DATABASE IF EXISTS " + db + " WITH (FORCE)");
    }
  }

  std::string ServerUri(const std::string& db) const {
    return "postgresql://" + pg_.user + "@" + pg_.host + ":" + std::to_string(pg_.port) + "/" + db +
           "?connect_timeout=5";
  }
  std::string ProxyUri(const std::string& db) const {
    return "postgresql://" + pg_.user + "@127.0.0.1:" + std::to_string(proxy_port_.load()) + "/" + db +
           "?connect_timeout=5";
  }

  void StartProxy() {
    proxy_ = std::make_unique<::dtx::testing::ProxyProcess>(std::vector<std::string>{
        "--server", pg_.host + ":" + std::to_string(pg_.port), "--coordinator", coordinator_->address(),
        "--resource", dbs_[0] + "=" + ServerUri(dbs_[0]), "--resource", dbs_[1] + "=" + ServerUri(dbs_[1]),
        "--lock-retry-ms", "500", "--undo-sweep-interval-ms", "500"});
    ASSERT_GT(proxy_->port(), 0) << "dtx-sql-proxy did not start";
    proxy_port_ = proxy_->port();
  }
  void KillProxy() {
    proxy_killed_at_ = server_->Exec("SELECT clock_timestamp()::text").Value();
    proxy_->process().Stop(SIGKILL);
    proxy_.reset();
  }

  // --- the workers -------------------------------------------------------------------------

  void StartWorkers() {
    stop_ = false;
    for (int w = 0; w < kWorkers; ++w) workers_.emplace_back([this, w] { Work(w, /*extended=*/w % 2 == 1); });
    for (int w = 0; w < kLocalWorkers; ++w) workers_.emplace_back([this, w] { WorkLocally(w, /*extended=*/w % 2 == 1); });
  }
  void StopWorkers() {
    stop_ = true;
    for (auto& t : workers_) t.join();
    workers_.clear();
  }

  void Work(int w, bool extended) {
    std::mt19937_64 rng(1000 + w);
    std::unique_ptr<PgClient> session[2];
    int64_t seq = 0;
    while (!stop_) {
      for (int d = 0; d < 2; ++d) {
        if (!session[d] || !session[d]->alive()) session[d] = PgClient::Connect(ProxyUri(dbs_[d]));
      }
      if (!session[0] || !session[1]) {
        session[0].reset(), session[1].reset();
        std::this_thread::sleep_for(50ms);
        continue;
      }
      Transfer t;
      t.id = (w + 1) * 10'000'000LL + seq++;
      t.from_db = static_cast<int>(rng() % 2);
      t.from = static_cast<int>(rng() % kAccounts);
      t.to = static_cast<int>(rng() % kAccounts);
      t.amount = 1 + static_cast<int64_t>(rng() % 300);
      const bool cancel = rng() % 5 == 0;
      const bool clean = Run(*session[t.from_db], *session[1 - t.from_db], t, cancel, extended);
      {
        std::lock_guard lock(mu_);
        transfers_.push_back(t);
      }
      if (t.outcome == Outcome::kCommitted) ++committed_in_phase_[phase_.load()];
      if (!clean) session[0].reset(), session[1].reset();  // a session in an unknown state: start afresh
    }
  }

  void WorkLocally(int w, bool extended) {
    std::mt19937_64 rng(2000 + w);
    std::unique_ptr<PgClient> session[2];
    int64_t seq = 0;
    while (!stop_) {
      Move m;
      m.id = (w + 1) * 10'000'000LL + seq++;
      m.db = static_cast<int>(rng() % 2);
      m.from = static_cast<int>(rng() % kAccounts);
      m.to = static_cast<int>(rng() % kAccounts);
      m.amount = 1 + static_cast<int64_t>(rng() % 300);
      auto& c = session[m.db];
      if (!c || !c->alive()) c = PgClient::Connect(ProxyUri(dbs_[m.db]));
      if (!c) {
        std::this_thread::sleep_for(50ms);
        continue;
      }
      m.outcome = MoveLocally(*c, m, extended);
      std::lock_guard lock(mu_);
      moves_.push_back(m);
      ++move_results_[m.outcome];
    }
  }

  // One local move (the CHECK constraint refuses an overdraft); how it ended for the client.
  Outcome MoveLocally(PgClient& c, const Move& m, bool extended) {
    const std::string amount = std::to_string(m.amount), from = std::to_string(m.from), to = std::to_string(m.to);
    auto failed = [&](const Answer& a) {
      std::lock_guard lock(mu_);
      ++local_errors_[a.sqlstate];
      return c.alive() && !a.sqlstate.empty() ? Outcome::kRolledBack : Outcome::kUnknown;
    };
    if (!extended) {
      // One string: PostgreSQL runs it as one transaction; the proxy checks each write.
      Answer a = c.Exec("UPDATE accounts SET balance = balance - " + amount + " WHERE id = " + from +
                        "; UPDATE accounts SET balance = balance + " + amount + " WHERE id = " + to +
                        "; INSERT INTO moves VALUES (" + std::to_string(m.id) + ", " + from + ", " + to + ", " + amount + ")");
      return a.ok ? Outcome::kCommitted : failed(a);
    }
    Answer begin = c.Exec("BEGIN");
    if (!begin.ok) return failed(begin);
    for (const auto& [sql, params] : std::vector<std::pair<std::string, std::vector<std::optional<std::string>>>>{
             {"UPDATE accounts SET balance = balance - $1 WHERE id = $2", {amount, from}},
             {"UPDATE accounts SET balance = balance + $1 WHERE id = $2", {amount, to}},
             {"INSERT INTO moves VALUES ($1, $2, $3, $4)", {std::to_string(m.id), from, to, amount}}}) {
      Answer a = c.Params(sql, params);
      if (!a.ok) {
        const Outcome o = failed(a);
        if (c.alive()) c.Exec("ROLLBACK");
        return o;
      }
    }
    Answer commit = c.Exec("COMMIT");
    if (commit.ok && commit.tag == "COMMIT") return Outcome::kCommitted;
    return commit.ok ? Outcome::kRolledBack : failed(commit);
  }

  // One transfer; false when its sessions should not be used again.
  bool Run(PgClient& src, PgClient& dst, Transfer& t, bool cancel, bool extended) {
    auto note = [&](const Answer& a) {
      std::lock_guard lock(mu_);
      ++errors_[a.sqlstate];
      if (first_error_.count(a.sqlstate) == 0) first_error_[a.sqlstate] = a.error;
    };
    // A statement: simple protocol, or extended with the numbers as parameters.
    auto run = [&](PgClient& c, const std::string& simple, const std::string& with_params,
                   std::vector<std::optional<std::string>> params) {
      Answer a = extended ? c.Params(with_params, params) : c.Exec(simple);
      if (!a.ok) note(a);
      return a;
    };
    const std::string amount = std::to_string(t.amount), from = std::to_string(t.from), to = std::to_string(t.to);

    Answer begin = src.Exec("SELECT dtx.begin('transfer', 5000)");
    if (!begin.ok || begin.Value().empty()) {
      note(begin);
      return false;
    }
    const std::string xid = begin.Value();
    t.xid = xid;
    t.outcome = Outcome::kRolledBack;  // from here on only dtx.commit() can make it count
    bool ok = true, clean = true;

    // The source: debit and ledger row in one local transaction.
    ok = src.Exec("BEGIN").ok;
    if (ok) {
      Answer debit = run(src, "UPDATE accounts SET balance = balance - " + amount + " WHERE id = " + from +
                                  " AND balance >= " + amount,
                         "UPDATE accounts SET balance = balance - $1 WHERE id = $2 AND balance >= $1", {amount, from});
      ok = debit.ok && debit.tag == "UPDATE 1";  // UPDATE 0: not enough money
    }
    if (ok) {
      ok = run(src,
               "INSERT INTO transfers VALUES (" + std::to_string(t.id) + ", " + std::to_string(t.from_db) + ", " +
                   from + ", " + to + ", " + amount + ")",
               "INSERT INTO transfers VALUES ($1, $2, $3, $4, $5)",
               {std::to_string(t.id), std::to_string(t.from_db), from, to, amount})
               .ok;
    }
    if (ok) {
      Answer commit = src.Exec("COMMIT");
      if (!commit.ok) note(commit);
      ok = commit.ok && commit.tag == "COMMIT";
    } else if (src.alive()) {
      src.Exec("ROLLBACK");
    }

    // The destination: the credit, alone (a one-statement local transaction).
    if (ok) {
      Answer bind = dst.Exec("SET dtx.xid = '" + xid + "'");
      if (!bind.ok) note(bind);
      ok = bind.ok;
      if (ok) {
        Answer credit = run(dst, "UPDATE accounts SET balance = balance + " + amount + " WHERE id = " + to,
                            "UPDATE accounts SET balance = balance + $1 WHERE id = $2", {amount, to});
        ok = credit.ok && credit.tag == "UPDATE 1";
      }
      if (!dst.Exec("RESET dtx.xid").ok) clean = false;
    }

    if (ok && !cancel) {
      Answer end = src.Exec("SELECT dtx.commit()");
      if (end.ok && end.Value() == "Committed") {
        t.outcome = Outcome::kCommitted;
      } else if (!end.ok && end.sqlstate == "40000") {
        note(end);
        clean = false;  // rolled back (timed out); the session's binding is not ours to guess
      } else {
        note(end);
        t.outcome = Outcome::kUnknown;
        clean = false;
      }
    } else {
      Answer end = src.Exec("SELECT dtx.rollback()");
      if (!end.ok || end.Value().find("Rollbacked") == std::string::npos) {
        if (!end.ok) note(end);
        clean = false;
      }
    }
    return clean && src.alive() && dst.alive();
  }

  // --- the checks --------------------------------------------------------------------------

  int64_t UndoRows(const std::string& db, int status) {
    auto c = PgClient::Connect(ServerUri(db));
    if (!c) return -1;
    auto a = c->Exec("SELECT count(*) FROM dtx_undo_log WHERE log_status = " + std::to_string(status));
    return a.ok ? std::stoll(a.Value()) : -1;
  }

  // Waits for phase 2 to finish everywhere, then checks the data against what the client saw.
  void Verify() {
    ASSERT_TRUE(sdk::testing::WaitNoneUnfinished(coordinator_->admin_port(), 60s));
    // Commit cleanup of the undo log is asynchronous and batched: wait for it. Rows of committed
    // branches written before the proxy's kill -9 (answered, not yet deleted) are deleted by the
    // restarted proxy's undo sweep (every 500 ms here, docs/undo-log.md "Sweeping"). Every row
    // still there at the deadline is a failure.
    std::map<std::string, Outcome> outcome_of;
    {
      std::lock_guard lock(mu_);
      for (const auto& t : transfers_) outcome_of[t.xid] = t.outcome;
    }
    const auto deadline = std::chrono::steady_clock::now() + 20s;
    std::vector<std::string> left;
    while (true) {
      left.clear();
      for (const auto& db : dbs_) {
        auto c = PgClient::Connect(ServerUri(db));
        ASSERT_TRUE(c);
        const std::string killed = proxy_killed_at_.empty() ? "NULL" : "'" + proxy_killed_at_ + "'";
        auto rows = c->Exec("SELECT xid, branch_id, created_at::text, coalesce(created_at < " + killed +
                            "::timestamptz, false) FROM dtx_undo_log WHERE log_status = 0");
        ASSERT_TRUE(rows.ok) << rows.error;
        for (const auto& r : rows.rows) {
          const auto o = outcome_of.find(*r[0]);
          const bool committed = o != outcome_of.end() &&
                                 (o->second == Outcome::kCommitted || o->second == Outcome::kUnknown);
          left.push_back(db + ": xid " + *r[0] + " branch " + *r[1] + " written " + *r[2] +
                         (*r[3] == "t" ? " (before the proxy's kill)" : "") +
                         (committed ? ", committed as far as the client knows" : ""));
        }
      }
      if (left.empty() || std::chrono::steady_clock::now() > deadline) break;
      std::this_thread::sleep_for(100ms);
    }
    for (const auto& u : left) ADD_FAILURE() << "undo-log row left after its transaction finished: " << u;

    std::map<std::pair<int, int>, int64_t> balance, expected;
    std::map<int64_t, Transfer> ledger;
    std::set<std::pair<int, int64_t>> moved;  // (database, move id) in the moves tables
    for (int d = 0; d < 2; ++d) {
      auto c = PgClient::Connect(ServerUri(dbs_[d]));
      ASSERT_TRUE(c);
      auto accounts = c->Exec("SELECT id, balance FROM accounts");
      ASSERT_TRUE(accounts.ok) << accounts.error;
      ASSERT_EQ(accounts.rows.size(), static_cast<size_t>(kAccounts));
      for (const auto& r : accounts.rows) {
        balance[{d, std::stoi(*r[0])}] = std::stoll(*r[1]);
        expected[{d, std::stoi(*r[0])}] = kInitial;
      }
      auto moves = c->Exec("SELECT id, from_id, to_id, amount FROM moves");
      ASSERT_TRUE(moves.ok) << moves.error;
      for (const auto& r : moves.rows) {
        const int64_t amount = std::stoll(*r[3]);
        expected[{d, std::stoi(*r[1])}] -= amount;
        expected[{d, std::stoi(*r[2])}] += amount;
        moved.insert({d, std::stoll(*r[0])});
      }
      auto rows = c->Exec("SELECT id, from_db, from_id, to_id, amount FROM transfers");
      ASSERT_TRUE(rows.ok) << rows.error;
      for (const auto& r : rows.rows) {
        Transfer t{.id = std::stoll(*r[0]), .from_db = std::stoi(*r[1]), .from = std::stoi(*r[2]),
                   .to = std::stoi(*r[3]), .amount = std::stoll(*r[4])};
        EXPECT_EQ(t.from_db, d) << "ledger row " << t.id << " in the wrong database";
        ledger[t.id] = t;
      }
    }
    int64_t total = 0;
    for (const auto& [k, v] : balance) total += v;
    EXPECT_EQ(total, 2 * kAccounts * kInitial) << "money was created or destroyed";
    for (const auto& [id, t] : ledger) {
      expected[{t.from_db, t.from}] -= t.amount;
      expected[{1 - t.from_db, t.to}] += t.amount;
    }
    for (const auto& [k, v] : balance) {
      EXPECT_EQ(v, expected[k]) << "account " << k.second << " of database " << k.first
                                << " does not match the ledger (a branch of a transfer survived without the others)";
    }
    std::lock_guard lock(mu_);
    std::set<int64_t> known;
    for (const auto& t : transfers_) {
      known.insert(t.id);
      const bool in_ledger = ledger.count(t.id) > 0;
      if (t.outcome == Outcome::kCommitted) {
        EXPECT_TRUE(in_ledger) << "transfer " << t.id << " committed, but is gone";
      }
      if (t.outcome == Outcome::kRolledBack || t.outcome == Outcome::kNoEffect) {
        EXPECT_FALSE(in_ledger) << "transfer " << t.id << " was rolled back, but is in the ledger";
      }
    }
    for (const auto& [id, t] : ledger) EXPECT_TRUE(known.count(id)) << "ledger row " << id << " of no transfer";
    for (const auto& m : moves_) {
      const bool in_ledger = moved.count({m.db, m.id}) > 0;
      if (m.outcome == Outcome::kCommitted) EXPECT_TRUE(in_ledger) << "local move " << m.id << " committed, but is gone";
      if (m.outcome == Outcome::kRolledBack) EXPECT_FALSE(in_ledger) << "local move " << m.id << " failed, but is in the ledger";
    }
  }

  std::string LocalSummary() {
    std::lock_guard lock(mu_);
    std::string s = "local moves: committed " + std::to_string(move_results_[Outcome::kCommitted]) + ", failed " +
                    std::to_string(move_results_[Outcome::kRolledBack]) + ", unknown " +
                    std::to_string(move_results_[Outcome::kUnknown]) + "\n";
    for (const auto& [state, n] : local_errors_) s += "  " + (state.empty() ? "(no SQLSTATE)" : state) + " x" + std::to_string(n) + "\n";
    return s;
  }

  std::map<Outcome, int> Outcomes() {
    std::lock_guard lock(mu_);
    std::map<Outcome, int> n;
    for (const auto& t : transfers_) ++n[t.outcome];
    return n;
  }
  std::string ErrorSummary() {
    std::lock_guard lock(mu_);
    std::string s;
    for (const auto& [state, n] : errors_) s += "  " + state + " x" + std::to_string(n) + ": " + first_error_[state] + "\n";
    return s;
  }

  ::dtx::testing::PgTarget pg_;
  std::unique_ptr<PgClient> server_;
  std::vector<std::string> dbs_;
  std::unique_ptr<::dtx::testing::CoordinatorProcess> coordinator_;
  std::unique_ptr<::dtx::testing::ProxyProcess> proxy_;
  std::atomic<int> proxy_port_{0};
  std::string proxy_killed_at_;  // the server's clock when the proxy was killed ("" if never)

  std::atomic<bool> stop_{false};
  std::atomic<int> phase_{0};
  std::atomic<int> committed_in_phase_[3] = {0, 0, 0};
  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::vector<Transfer> transfers_;
  std::map<std::string, int> errors_;  // by SQLSTATE
  std::map<std::string, std::string> first_error_;
  std::vector<Move> moves_;
  std::map<Outcome, int> move_results_;
  std::map<std::string, int> local_errors_;  // by SQLSTATE: 55P03 a global lock, 23514 an overdraft
};

TEST_F(AtE2eTest, ConcurrentTransfersConserveMoney) {
  StartWorkers();
  std::this_thread::sleep_for(PhaseLength());
  StopWorkers();
  auto n = Outcomes();
  RecordProperty("committed", n[Outcome::kCommitted]);
  std::cout << "committed " << n[Outcome::kCommitted] << ", rolled back " << n[Outcome::kRolledBack]
            << ", not begun " << n[Outcome::kNoEffect] << ", unknown " << n[Outcome::kUnknown] << "\n"
            << ErrorSummary();
  EXPECT_GE(n[Outcome::kCommitted], 20) << ErrorSummary();
  EXPECT_GE(n[Outcome::kRolledBack], 5);
  EXPECT_EQ(n[Outcome::kUnknown], 0) << "with no fault, every commit gets its answer";
  EXPECT_EQ(n[Outcome::kNoEffect], 0) << "with no fault, every dtx.begin() succeeds";
  std::cout << LocalSummary();
  {
    std::lock_guard lock(mu_);
    EXPECT_GE(move_results_[Outcome::kCommitted], 10);
    EXPECT_EQ(move_results_[Outcome::kUnknown], 0);
  }
  Verify();
}

TEST_F(AtE2eTest, SurvivesKillOfProxyAndOfCoordinator) {
  StartWorkers();
  std::this_thread::sleep_for(PhaseLength());

  KillProxy();  // sessions, their local transactions and the proxy's queued phase-2 work are gone
  std::this_thread::sleep_for(300ms);
  phase_ = 1;
  StartProxy();
  std::this_thread::sleep_for(PhaseLength());

  coordinator_->Kill();  // the proxy's calls fail until it is back
  std::this_thread::sleep_for(300ms);
  phase_ = 2;
  coordinator_->Start();
  ASSERT_GT(coordinator_->port(), 0);
  std::this_thread::sleep_for(PhaseLength() + 2s);  // the proxy reconnects first
  StopWorkers();

  auto n = Outcomes();
  std::cout << "committed " << n[Outcome::kCommitted] << " (" << committed_in_phase_[0] << " before the proxy's kill, "
            << committed_in_phase_[1] << " after it, " << committed_in_phase_[2]
            << " after the coordinator's), rolled back " << n[Outcome::kRolledBack] << ", not begun "
            << n[Outcome::kNoEffect] << ", unknown " << n[Outcome::kUnknown] << "\n"
            << ErrorSummary() << LocalSummary();
  EXPECT_GT(committed_in_phase_[0], 0);
  EXPECT_GT(committed_in_phase_[1], 0) << "no transfer committed after the proxy came back\n" << ErrorSummary();
  EXPECT_GT(committed_in_phase_[2], 0) << "no transfer committed after the coordinator came back\n" << ErrorSummary();
  Verify();
}

}  // namespace
}  // namespace dtx::at::e2e
