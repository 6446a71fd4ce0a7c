// PostgresLogStore beyond the LogStore contract: several coordinators sharing one database, the
// schema's life, and connections lost or servers crashing under load. Needs a server: run through
// scripts/with-postgres.sh (the crash test also needs DTX_TEST_PG_BIN and DTX_TEST_PG_DATA).
#include "dtx/log/postgres_log_store.h"

#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <thread>

namespace dtx::log {
namespace {

using namespace std::chrono_literals;

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

#define DTX_NEED_POSTGRES()                                                               \
  do {                                                                                    \
    if (Env("DTX_TEST_PG_URI").empty()) {                                                 \
      if (!Env("DTX_REQUIRE_POSTGRES").empty()) FAIL() << "DTX_TEST_PG_URI is not set";   \
      GTEST_SKIP() << "DTX_TEST_PG_URI is not set: run through scripts/with-postgres.sh"; \
    }                                                                                     \
  } while (0)

// Runs one SQL command on a connection of its own; returns the first value, or the error.
Result<std::string> Sql(const std::string& sql) {
  PGconn* c = PQconnectdb(Env("DTX_TEST_PG_URI").c_str());
  Result<std::string> out = Unavailable(PQerrorMessage(c));
  if (PQstatus(c) == CONNECTION_OK) {
    PGresult* r = PQexec(c, sql.c_str());
    if (PQresultStatus(r) == PGRES_TUPLES_OK || PQresultStatus(r) == PGRES_COMMAND_OK) {
      out = std::string(PQntuples(r) && PQnfields(r) ? PQgetvalue(r, 0, 0) : "");
    } else {
      out = IOError(PQresultErrorMessage(r));
    }
    PQclear(r);
  }
  PQfinish(c);
  return out;
}

// A uri with one more connection parameter.
std::string WithParam(const std::string& uri, const std::string& key, const std::string& value) {
  if (uri.starts_with("postgres://") || uri.starts_with("postgresql://"))
    return uri + (uri.find('?') == std::string::npos ? "?" : "&") + key + "=" + value;
  return uri + " " + key + "=" + value;
}

// A schema of the test's own, dropped at the end.
class ScratchSchema {
 public:
  ScratchSchema() {
    static std::atomic<int> counter{0};
    name_ = "dtx_pgtest_" + std::to_string(getpid()) + "_" + std::to_string(counter++) + "_" +
            std::to_string(std::random_device{}() % 1000000);
  }
  ~ScratchSchema() {
    auto r = Sql("SET client_min_messages = warning; DROP SCHEMA IF EXISTS " + name_ + " CASCADE");
    if (!r.ok()) ADD_FAILURE() << r.status();
  }
  const std::string& name() const { return name_; }
  PostgresOptions Options(const std::string& application_name = "") const {
    PostgresOptions o;
    o.conninfo = Env("DTX_TEST_PG_URI");
    if (!application_name.empty()) o.conninfo = WithParam(o.conninfo, "application_name", application_name);
    o.schema = name_;
    return o;
  }

 private:
  std::string name_;
};

std::unique_ptr<PostgresLogStore> MustOpen(const PostgresOptions& options) {
  auto store = PostgresLogStore::Open(options);
  EXPECT_TRUE(store.ok()) << store.status();
  return store.ok() ? std::move(*store) : nullptr;
}

GlobalRecord Global(const std::string& xid) {
  GlobalRecord g;
  g.xid = xid;
  g.name = "transfer";
  g.application = "bank";
  g.begin_time_ms = 1000;
  g.owner_node = "node-1";
  return g;
}

BranchRecord Branch(const std::string& xid, int64_t id) {
  BranchRecord b;
  b.branch_id = id;
  b.xid = xid;
  b.resource_id = "jdbc:orders";
  b.type = BranchType::kAT;
  return b;
}

bool WaitFor(const std::function<bool()>& condition, std::chrono::seconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!condition()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(10ms);
  }
  return true;
}

// Collects asynchronous write results and waits for them all.
class Outcomes {
 public:
  LogStore::WriteCallback Expect(std::string key) {
    std::lock_guard lock(mu_);
    ++expected_;
    return [this, key = std::move(key)](const WriteResult& r) {
      std::lock_guard lock(mu_);
      results_.emplace(key, r);
      if (results_.size() == expected_) all_done_.notify_all();
    };
  }
  // REQUIRES: every expected write was issued.
  bool Wait(std::chrono::seconds timeout) {
    std::unique_lock lock(mu_);
    return all_done_.wait_for(lock, timeout, [&] { return results_.size() == expected_; });
  }
  const std::multimap<std::string, WriteResult>& results() const { return results_; }

 private:
  std::mutex mu_;
  std::condition_variable all_done_;
  size_t expected_ = 0;
  std::multimap<std::string, WriteResult> results_;
};

// Two coordinators on one database, each with its own store, race for the same row locks from
// many threads: every key goes to exactly one transaction, and every loser is told who won.
TEST(PostgresLogStore, TwoCoordinatorsRacingForRowLocksExcludeEachOther) {
  DTX_NEED_POSTGRES();
  ScratchSchema schema;
  auto a = MustOpen(schema.Options());
  auto b = MustOpen(schema.Options());
  ASSERT_TRUE(a && b);
  LogStore* coordinators[] = {a.get(), b.get()};

  constexpr int kKeys = 20, kRacers = 10, kThreads = 8;
  auto xid_of = [](int key, int racer) { return "race:" + std::to_string(key) + ":" + std::to_string(racer); };
  auto branch_of = [](int key, int racer) { return int64_t{1000} * key + racer; };
  for (int k = 0; k < kKeys; ++k) {
    for (int r = 0; r < kRacers; ++r) {
      WriteResult w = coordinators[r % 2]->WriteSync(
          std::move(Batch().Insert(Global(xid_of(k, r))).Insert(Branch(xid_of(k, r), branch_of(k, r)))));
      ASSERT_TRUE(w.ok()) << w.status;
    }
  }

  // Every racer asks for its key (and one key of its own), through either coordinator.
  Outcomes outcomes;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int k = 0; k < kKeys; ++k) {
        for (int r = t; r < kRacers; r += kThreads) {
          const std::string xid = xid_of(k, r);
          coordinators[(r + k) % 2]->Write(
              std::move(Batch().Lock(xid, branch_of(k, r), {"own:" + xid, "hot:" + std::to_string(k)})),
              outcomes.Expect(xid));
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  ASSERT_TRUE(outcomes.Wait(60s));

  for (int k = 0; k < kKeys; ++k) {
    const std::string key = "hot:" + std::to_string(k);
    auto held = a->FindLocks({key});
    ASSERT_TRUE(held.ok()) << held.status();
    ASSERT_EQ(held->size(), 1u) << key;
    const RowLock winner = (*held)[0];
    int winners = 0;
    for (int r = 0; r < kRacers; ++r) {
      const std::string xid = xid_of(k, r);
      const WriteResult& w = outcomes.results().find(xid)->second;
      if (w.ok()) {
        ++winners;
        EXPECT_EQ(winner.xid, xid);
        EXPECT_EQ(winner.branch_id, branch_of(k, r));
        continue;
      }
      EXPECT_EQ(w.status.code(), StatusCode::kFailedPrecondition) << w.status;
      ASSERT_TRUE(w.conflict.has_value()) << xid << ": " << w.status;
      EXPECT_EQ(w.conflict->row_key, key);
      EXPECT_EQ(w.conflict->holder_xid, winner.xid);
      EXPECT_EQ(w.conflict->holder_branch_id, winner.branch_id);
      EXPECT_EQ(w.status.message(), "row lock " + key + " is held by " + winner.xid);
      auto loser = b->Get(xid);
      ASSERT_TRUE(loser.ok() && loser->has_value());
      EXPECT_TRUE((*loser)->locks.empty()) << xid << " kept part of a failed batch";
    }
    EXPECT_EQ(winners, 1) << key;
  }
}

// Deadlocks between coordinators: for each pair of keys, one coordinator's transaction takes
// them in the order (a, b) and the other's in the order (b, a), one key per batch, the second
// going through the pairs from the other end; their group transactions meet in the middle and
// wait on each other inside PostgreSQL. PostgreSQL aborts one group; the store
// retries it, and every batch still ends in a clean answer: its key, or a conflict naming the
// key's holder.
TEST(PostgresLogStore, DeadlocksBetweenCoordinatorsAreRetriedIntoCleanAnswers) {
  DTX_NEED_POSTGRES();
  ScratchSchema schema;
  auto a = MustOpen(schema.Options());
  auto b = MustOpen(schema.Options());
  ASSERT_TRUE(a && b);

  constexpr int kPairs = 100;
  auto key = [](int pair, char which) { return "k:" + std::to_string(pair) + which; };
  for (int i = 0; i < kPairs; ++i) {
    Batch both;
    both.Insert(Global("ab:" + std::to_string(i))).Insert(Branch("ab:" + std::to_string(i), 1));
    both.Insert(Global("ba:" + std::to_string(i))).Insert(Branch("ba:" + std::to_string(i), 2));
    ASSERT_TRUE(a->WriteSync(std::move(both)).ok());
  }
  auto deadlocks = [] {
    return std::stol(Sql("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()").value_or("0"));
  };
  const long deadlocks_before = deadlocks();

  // A gate: both coordinators' first batches wait for a row the test holds, so that the groups
  // behind them start together once it lets go.
  PGconn* gate = PQconnectdb(Env("DTX_TEST_PG_URI").c_str());
  auto exec = [&](const std::string& sql) {
    PGresult* r = PQexec(gate, sql.c_str());
    EXPECT_TRUE(PQresultStatus(r) == PGRES_TUPLES_OK || PQresultStatus(r) == PGRES_COMMAND_OK) << PQerrorMessage(gate);
    PQclear(r);
  };
  exec("BEGIN; SELECT 1 FROM " + schema.name() + ".dtx_global WHERE xid = 'ab:0' FOR UPDATE");
  Outcomes outcomes;
  a->Write(std::move(Batch().Lock("ab:0", 1, {"gate:a"})), outcomes.Expect("ab:0 gate:a"));
  b->Write(std::move(Batch().Lock("ab:0", 1, {"gate:b"})), outcomes.Expect("ab:0 gate:b"));
  std::this_thread::sleep_for(100ms);
  std::thread ab([&] {
    for (int i = 0; i < kPairs; ++i) {
      const std::string xid = "ab:" + std::to_string(i);
      a->Write(std::move(Batch().Lock(xid, 1, {key(i, 'a')})), outcomes.Expect(xid + " " + key(i, 'a')));
      a->Write(std::move(Batch().Lock(xid, 1, {key(i, 'b')})), outcomes.Expect(xid + " " + key(i, 'b')));
    }
  });
  std::thread ba([&] {
    for (int i = kPairs - 1; i >= 0; --i) {  // from the other end: the two groups meet in the middle
      const std::string xid = "ba:" + std::to_string(i);
      b->Write(std::move(Batch().Lock(xid, 2, {key(i, 'b')})), outcomes.Expect(xid + " " + key(i, 'b')));
      b->Write(std::move(Batch().Lock(xid, 2, {key(i, 'a')})), outcomes.Expect(xid + " " + key(i, 'a')));
    }
  });
  ab.join();
  ba.join();
  std::this_thread::sleep_for(100ms);
  exec("COMMIT");
  PQfinish(gate);
  ASSERT_TRUE(outcomes.Wait(120s));

  for (const auto& [what, w] : outcomes.results()) {
    const std::string xid = what.substr(0, what.find(' ')), wanted = what.substr(what.find(' ') + 1);
    auto held = a->FindLocks({wanted});
    ASSERT_TRUE(held.ok()) << held.status();
    ASSERT_EQ(held->size(), 1u) << wanted << " was taken by nobody";
    if (w.ok()) {
      EXPECT_EQ((*held)[0].xid, xid) << what;
      continue;
    }
    ASSERT_TRUE(w.conflict.has_value()) << what << ": " << w.status;
    EXPECT_NE((*held)[0].xid, xid) << what;
    EXPECT_EQ(w.conflict->holder_xid, (*held)[0].xid) << what;
  }
  // PostgreSQL counts a deadlock once the victim's session reports its statistics, at the latest
  // when it ends.
  a.reset();
  b.reset();
  EXPECT_TRUE(WaitFor([&] { return deadlocks() > deadlocks_before; }, 10s))
      << "no deadlock happened: the test proved nothing";
}

// PostgreSQL text holds no zero byte and no broken UTF-8: such a batch fails alone, saying so,
// and the batches committed with it are unharmed.
TEST(PostgresLogStore, ABatchPostgresRejectsFailsAlone) {
  DTX_NEED_POSTGRES();
  ScratchSchema schema;
  auto store = MustOpen(schema.Options());
  ASSERT_TRUE(store);
  ASSERT_TRUE(store->WriteSync(std::move(Batch().Insert(Global("x:1")).Insert(Branch("x:1", 1)))).ok());
  Outcomes outcomes;
  store->Write(std::move(Batch().Lock("x:1", 1, {"r:before"})), outcomes.Expect("before"));
  store->Write(std::move(Batch().Lock("x:1", 1, {"r:ok", std::string("r:\0zero", 8)})), outcomes.Expect("zero"));
  store->Write(std::move(Batch().Insert(Global("x:\xff\xfe"))), outcomes.Expect("utf8"));
  store->Write(std::move(Batch().Lock("x:1", 1, {"r:after"})), outcomes.Expect("after"));
  ASSERT_TRUE(outcomes.Wait(30s));
  auto result = [&](const std::string& key) { return outcomes.results().find(key)->second; };
  EXPECT_TRUE(result("before").ok()) << result("before").status;
  EXPECT_TRUE(result("after").ok()) << result("after").status;
  for (const char* bad : {"zero", "utf8"}) {
    EXPECT_EQ(result(bad).status.code(), StatusCode::kInvalidArgument) << result(bad).status;
    EXPECT_TRUE(result(bad).status.message().starts_with("PostgreSQL rejected the batch: ")) << result(bad).status;
  }
  auto held = store->FindLocks({"r:before", "r:ok", "r:after"});
  ASSERT_TRUE(held.ok()) << held.status();
  ASSERT_EQ(held->size(), 2u);
  EXPECT_EQ((*held)[0].row_key, "r:before");
  EXPECT_EQ((*held)[1].row_key, "r:after");
}

// A coordinator may shut its log from a write callback (on a fatal answer, say): the queue is
// still committed and answered, and later writes are refused.
TEST(PostgresLogStore, ClosingFromAWriteCallbackFinishesTheQueue) {
  DTX_NEED_POSTGRES();
  ScratchSchema schema;
  auto store = MustOpen(schema.Options());
  ASSERT_TRUE(store);
  Outcomes outcomes;
  auto first = outcomes.Expect("first");
  store->Write(std::move(Batch().Insert(Global("x:1"))), [&](const WriteResult& r) {
    store->Close();
    first(r);
  });
  for (int i = 2; i < 50; ++i) {
    const std::string xid = "x:" + std::to_string(i);
    store->Write(std::move(Batch().Insert(Global(xid))), outcomes.Expect(xid));
  }
  ASSERT_TRUE(outcomes.Wait(30s));
  int ok = 0;
  for (const auto& [xid, r] : outcomes.results()) {
    if (r.ok()) {
      ++ok;
      continue;
    }
    EXPECT_EQ(r.status.message(), "the log store is closed") << xid;
  }
  EXPECT_GE(ok, 1);
  auto all = store->LoadAll();
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_EQ(all->size(), static_cast<size_t>(ok)) << "every batch told OK is there, and no other";
  EXPECT_EQ(store->WriteSync(std::move(Batch().Insert(Global("late")))).status.code(), StatusCode::kFailedPrecondition);
}

TEST(PostgresLogStore, CoordinatorsStartingTogetherShareOneSchema) {
  DTX_NEED_POSTGRES();
  ScratchSchema schema;
  std::vector<std::unique_ptr<PostgresLogStore>> stores(6);
  std::vector<Status> errors(stores.size());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < stores.size(); ++i) {
    threads.emplace_back([&, i] {
      auto s = PostgresLogStore::Open(schema.Options());
      if (s.ok())
        stores[i] = std::move(*s);
      else
        errors[i] = s.status();
    });
  }
  for (auto& t : threads) t.join();
  for (size_t i = 0; i < stores.size(); ++i) {
    ASSERT_TRUE(stores[i]) << errors[i];
    const std::string xid = "start:" + std::to_string(i);
    EXPECT_TRUE(stores[i]->WriteSync(std::move(Batch().Insert(Global(xid)))).ok());
  }
  auto all = stores[0]->LoadAll();
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->size(), stores.size());
  EXPECT_EQ(Sql("SELECT value FROM " + schema.name() + ".dtx_meta WHERE key = 'schema_version'").value_or(""), "1");
}

TEST(PostgresLogStore, RefusesASchemaNewerThanItKnows) {
  DTX_NEED_POSTGRES();
  ScratchSchema schema;
  MustOpen(schema.Options())->Close();
  ASSERT_TRUE(Sql("UPDATE " + schema.name() + ".dtx_meta SET value = '2' WHERE key = 'schema_version'").ok());
  auto store = PostgresLogStore::Open(schema.Options());
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(store.status().message().find("schema version 2, newer than this build of dtx knows (1)"),
            std::string_view::npos)
      << store.status();
}

TEST(PostgresLogStore, OpenSaysWhyItCannotConnect) {
  auto store = PostgresLogStore::Open({.conninfo = "postgresql://postgres@127.0.0.1:1/dtx_test?connect_timeout=2"});
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), StatusCode::kUnavailable);
  EXPECT_TRUE(store.status().message().starts_with("cannot connect to PostgreSQL: ")) << store.status();
  EXPECT_EQ(PostgresLogStore::Open({.conninfo = "", .schema = "x; DROP TABLE y"}).status().code(),
            StatusCode::kInvalidArgument);
}

// Writers that keep going while their connections fail underneath, recording what each batch was
// told; afterwards the log must hold every batch told OK and none told "not written".
class Workload {
 public:
  explicit Workload(LogStore& store, int threads = 4) : store_(store) {
    for (int t = 0; t < threads; ++t) {
      threads_.emplace_back([this, t] {
        for (int i = 0; !stop_; ++i) {
          const std::string xid = "w:" + std::to_string(t) + ":" + std::to_string(i);
          WriteResult r = store_.WriteSync(std::move(Batch().Insert(Global(xid)).Insert(Branch(xid, t * 1000000 + i))));
          std::lock_guard lock(mu_);
          if (r.ok()) {
            ok_.push_back(xid);
            continue;
          }
          errors_.emplace_back(xid, r.status);
          if (r.status.message().ends_with("the batch was not written")) not_written_.push_back(xid);
          if (r.status.message().find("outcome of the batch is unknown") != std::string_view::npos) ++unknown_;
          std::this_thread::sleep_for(5ms);  // the server is away: do not spin
        }
      });
    }
  }
  ~Workload() { Stop(); }
  void Stop() {
    stop_ = true;
    for (auto& t : threads_)
      if (t.joinable()) t.join();
  }
  size_t oks() {
    std::lock_guard lock(mu_);
    return ok_.size();
  }
  size_t errors() {
    std::lock_guard lock(mu_);
    return errors_.size();
  }
  int unknown() {
    std::lock_guard lock(mu_);
    return unknown_;
  }

  // REQUIRES: stopped.
  void CheckTheLogAgreesWithWhatWasSaid(LogStore& store) {
    auto all = store.LoadAll();
    ASSERT_TRUE(all.ok()) << all.status();
    std::set<std::string> present;
    for (const auto& s : *all) present.insert(s.global.xid);
    for (const auto& xid : ok_) EXPECT_TRUE(present.count(xid)) << xid << " was acknowledged but is gone";
    for (const auto& xid : not_written_)
      EXPECT_FALSE(present.count(xid)) << xid << " was said not written but is there";
    for (const auto& [xid, status] : errors_) {
      EXPECT_EQ(status.code(), StatusCode::kUnavailable) << status;
      EXPECT_TRUE(status.message().starts_with("lost connection to PostgreSQL: ") ||
                  status.message().starts_with("cannot connect to PostgreSQL: "))
          << status;
    }
    std::cout << ok_.size() << " acknowledged, " << not_written_.size() << " not written, " << unknown_
              << " of unknown outcome\n";
  }

 private:
  LogStore& store_;
  std::atomic<bool> stop_{false};
  std::vector<std::thread> threads_;
  std::mutex mu_;
  std::vector<std::string> ok_, not_written_;
  std::vector<std::pair<std::string, Status>> errors_;
  int unknown_ = 0;
};

// Connections killed under the store (pg_terminate_backend, as an operator or a pooler might):
// the store reconnects by itself, finds out what became of a group whose COMMIT answer was lost,
// and never reports a batch OK that is not in the log, or "not written" for one that is.
TEST(PostgresLogStore, KilledConnectionsNeverTurnIntoFalseAnswers) {
  DTX_NEED_POSTGRES();
  ScratchSchema schema;
  const std::string app = "dtx-kill-" + schema.name();
  PostgresOptions options = schema.Options(app);
  options.reconnect_backoff_max = 50ms;
  auto store = MustOpen(options);
  ASSERT_TRUE(store);
  Workload work(*store);
  ASSERT_TRUE(WaitFor([&] { return work.oks() > 100; }, 30s));
  int killed = 0;
  for (int i = 0; i < 40; ++i) {
    auto n =
        Sql("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = '" + app + "'");
    ASSERT_TRUE(n.ok()) << n.status();
    killed += std::stoi(*n);
    std::this_thread::sleep_for(std::chrono::milliseconds(20 + i % 7 * 5));
  }
  const size_t before = work.oks();
  ASSERT_TRUE(WaitFor([&] { return work.oks() > before + 100; }, 30s)) << "writes did not come back";
  work.Stop();
  EXPECT_GT(killed, 20) << "connections were not killed: the test proved nothing";
  // The server was up all along, so the store could always find out what became of a group.
  EXPECT_EQ(work.unknown(), 0);
  work.CheckTheLogAgreesWithWhatWasSaid(*store);
}

// Runs pg_ctl on the test server, as the user that owns it.
int PgCtl(const std::string& args) {
  std::string user = Env("DTX_TEST_PG_USER");
  if (user.empty() && geteuid() == 0) user = "postgres";
  const std::string command = "cd /tmp && " + (user.empty() ? "" : "runuser -u " + user + " -- ") +
                              Env("DTX_TEST_PG_BIN") + "/pg_ctl -D '" + Env("DTX_TEST_PG_DATA") + "' " + args;
  return std::system(command.c_str());
}

// The server dies (pg_ctl stop -m immediate: no checkpoint, crash recovery at the next start)
// while writers keep writing. During the outage writes fail with a clear error; once the server
// is back, the same store writes again, and every batch acknowledged before the crash is there.
// Restarts the shared test server: ctest must run it alone (RUN_SERIAL).
TEST(PostgresLogStoreCrash, WritesFailDuringAnOutageAndResumeAfterIt) {
  DTX_NEED_POSTGRES();
  if (Env("DTX_TEST_PG_BIN").empty() || Env("DTX_TEST_PG_DATA").empty())
    GTEST_SKIP() << "DTX_TEST_PG_BIN and DTX_TEST_PG_DATA are not set: run through scripts/with-postgres.sh";
  ScratchSchema schema;
  PostgresOptions options = schema.Options();
  options.reconnect_backoff_max = 200ms;
  options.outcome_timeout = 500ms;
  auto store = MustOpen(options);
  ASSERT_TRUE(store);
  Workload work(*store);
  ASSERT_TRUE(WaitFor([&] { return work.oks() > 200; }, 30s));

  ASSERT_EQ(PgCtl("-m immediate -w stop"), 0);
  WriteResult during = store->WriteSync(std::move(Batch().Insert(Global("during-the-outage"))));
  EXPECT_EQ(during.status.code(), StatusCode::kUnavailable) << during.status;
  EXPECT_TRUE(during.status.message().starts_with("cannot connect to PostgreSQL: ") ||
              during.status.message().starts_with("lost connection to PostgreSQL: "))
      << during.status;
  std::this_thread::sleep_for(1s);
  const size_t errors_during = work.errors();
  ASSERT_EQ(PgCtl("-w -l '" + Env("DTX_TEST_PG_LOG") + "' start"), 0);

  const size_t before = work.oks();
  ASSERT_TRUE(WaitFor([&] { return work.oks() > before + 200; }, 30s)) << "writes did not resume after the restart";
  work.Stop();
  EXPECT_GT(errors_during, 0u);
  WriteResult after = store->WriteSync(std::move(Batch().Insert(Global("after-the-outage"))));
  EXPECT_TRUE(after.ok()) << after.status;
  work.CheckTheLogAgreesWithWhatWasSaid(*store);
  auto gone = store->Get("during-the-outage");
  ASSERT_TRUE(gone.ok()) << gone.status();
  EXPECT_FALSE(gone->has_value());
}

// The same crash with the writer allowed to wait out the outage: the group whose COMMIT answer
// the crash cut off learns its fate from the restarted server, so no batch is left in doubt.
TEST(PostgresLogStoreCrash, AGroupCutOffByACrashLearnsItsOutcomeFromTheRestartedServer) {
  DTX_NEED_POSTGRES();
  if (Env("DTX_TEST_PG_BIN").empty() || Env("DTX_TEST_PG_DATA").empty())
    GTEST_SKIP() << "DTX_TEST_PG_BIN and DTX_TEST_PG_DATA are not set: run through scripts/with-postgres.sh";
  ScratchSchema schema;
  PostgresOptions options = schema.Options();
  options.reconnect_backoff_max = 200ms;
  options.outcome_timeout = 30s;
  auto store = MustOpen(options);
  ASSERT_TRUE(store);
  Workload work(*store);
  ASSERT_TRUE(WaitFor([&] { return work.oks() > 200; }, 30s));
  ASSERT_EQ(PgCtl("-m immediate -w stop"), 0);
  std::this_thread::sleep_for(1s);
  ASSERT_EQ(PgCtl("-w -l '" + Env("DTX_TEST_PG_LOG") + "' start"), 0);
  const size_t before = work.oks();
  ASSERT_TRUE(WaitFor([&] { return work.oks() > before + 200; }, 30s)) << "writes did not resume after the restart";
  work.Stop();
  EXPECT_EQ(work.unknown(), 0);
  work.CheckTheLogAgreesWithWhatWasSaid(*store);
}

}  // namespace
}  // namespace dtx::log
