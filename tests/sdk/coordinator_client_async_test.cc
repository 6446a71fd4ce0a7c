// The non-blocking calls of CoordinatorClient against real dtx-coordinator processes: every
// call answered on an rpc I/O thread (never inside the call), failover when a coordinator is
// killed, Shutdown with calls in flight, `done` exactly once under many concurrent calls, a
// call made before any coordinator is up, and clients living on an application's own io_context.
#include <gtest/gtest.h>
#include <pthread.h>

#include <atomic>
#include <chrono>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>

#include "dtx/rpc/io_pool.h"
#include "dtx/sdk/coordinator_client.h"
#include "sdk_harness.h"

namespace dtx::sdk::testing {
namespace {

using ::dtx::testing::CoordinatorProcess;
using namespace std::chrono_literals;

CoordinatorOptions Options(std::vector<std::string> addresses) { return TestClientOptions(std::move(addresses), "async-test"); }

std::string ThreadName() {
  char name[32] = {};
  pthread_getname_np(pthread_self(), name, sizeof name);
  return name;
}

// What one `done` saw: its result, how often it ran, on which thread, and whether it ran
// inside the *Async call.
template <typename T>
struct Seen {
  std::promise<T> promise;
  std::future<T> future = promise.get_future();
  std::atomic<int> calls{0};
  std::thread::id caller = std::this_thread::get_id();
  std::atomic<bool> inline_call{false};
  std::string thread;
};

// Starts one *Async call through `launch` and returns its result (fails the test after 20 s).
template <typename T, typename Launch>
T Await(Launch launch) {
  auto seen = std::make_shared<Seen<T>>();
  launch([seen](T r) {
    if (std::this_thread::get_id() == seen->caller) seen->inline_call = true;
    seen->thread = ThreadName();
    if (seen->calls.fetch_add(1) == 0) seen->promise.set_value(std::move(r));
  });
  if (seen->future.wait_for(20s) != std::future_status::ready) {
    ADD_FAILURE() << "done was not called within 20 s";
    std::abort();
  }
  T r = seen->future.get();
  std::this_thread::sleep_for(10ms);  // a second call of done would show here
  EXPECT_EQ(seen->calls.load(), 1);
  EXPECT_FALSE(seen->inline_call.load()) << "done ran inside the *Async call";
  EXPECT_EQ(seen->thread.rfind("dtx-io-", 0), 0u) << "done ran on " << seen->thread;
  return r;
}

TEST(CoordinatorClientAsync, EveryCallIsAnswered) {
  CoordinatorProcess tc;
  CoordinatorClient tm(Options({tc.address()}));
  std::atomic<int> phase2{0};
  CoordinatorOptions rm_options = Options({tc.address()});
  rm_options.resource_ids = {"res-async"};
  CoordinatorClient rm(rm_options, [&](BranchCall call, std::function<void(BranchAnswer)> answer) {
    ++phase2;
    answer({call.commit ? BranchStatus::kPhaseTwoCommitted : BranchStatus::kPhaseTwoRollbacked, ""});
  });

  auto xid = Await<Result<std::string>>([&](auto done) { tm.BeginAsync("async", 10s, "data", done); });
  ASSERT_TRUE(xid.ok()) << xid.status();
  auto st = Await<Result<TxState>>([&](auto done) { tm.GetStatusAsync(*xid, done); });
  ASSERT_TRUE(st.ok()) << st.status();
  EXPECT_EQ(st->status, GlobalStatus::kBegin);

  BranchRegistration reg{.xid = *xid, .resource_id = "res-async", .type = BranchType::kAT,
                         .lock_keys = {"res-async:t:1"}, .application_data = ""};
  auto branch = Await<Result<int64_t>>([&](auto done) { rm.RegisterBranchAsync(reg, done); });
  ASSERT_TRUE(branch.ok()) << branch.status();
  EXPECT_GT(*branch, 0);

  // Another transaction sees the lock, and cannot take it.
  auto other = Await<Result<std::string>>([&](auto done) { tm.BeginAsync("other", 10s, "", done); });
  ASSERT_TRUE(other.ok()) << other.status();
  auto q = Await<Result<LockQuery>>(
      [&](auto done) { rm.QueryLocksAsync(*other, "res-async", {"res-async:t:1", "res-async:t:2"}, {}, done); });
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_FALSE(q->free);
  EXPECT_EQ(q->conflict_key, "res-async:t:1");
  EXPECT_EQ(q->conflict_xid, *xid);
  // A whole table: any key under the prefix counts; the holder's own keys do not.
  auto table = Await<Result<LockQuery>>([&](auto done) { rm.QueryLocksAsync(*other, "res-async", {}, {"res-async:t:"}, done); });
  ASSERT_TRUE(table.ok()) << table.status();
  EXPECT_FALSE(table->free);
  EXPECT_EQ(table->conflict_key, "res-async:t:1");
  EXPECT_EQ(table->conflict_xid, *xid);
  auto other_table = Await<Result<LockQuery>>(
      [&](auto done) { rm.QueryLocksAsync(*other, "res-async", {"res-async:t:2"}, {"res-async:u:", "res-async:t:10"}, done); });
  ASSERT_TRUE(other_table.ok()) << other_table.status();
  EXPECT_TRUE(other_table->free);
  auto own = Await<Result<LockQuery>>([&](auto done) { rm.QueryLocksAsync(*xid, "res-async", {}, {"res-async:t:"}, done); });
  ASSERT_TRUE(own.ok()) << own.status();
  EXPECT_TRUE(own->free);
  auto bad = Await<Result<LockQuery>>([&](auto done) { rm.QueryLocksAsync(*other, "res-async", {}, {"res-async:\xc3\xa9"}, done); });
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("ASCII"), std::string::npos) << bad.status();
  auto conflict = Await<Result<int64_t>>([&](auto done) {
    rm.RegisterBranchAsync({.xid = *other, .resource_id = "res-async", .type = BranchType::kAT,
                            .lock_keys = {"res-async:t:1"}, .application_data = ""},
                           done);
  });
  ASSERT_FALSE(conflict.ok());
  EXPECT_TRUE(IsLockConflict(conflict.status())) << conflict.status();

  Status reported = Await<Status>([&](auto done) {
    rm.ReportBranchAsync(*xid, *branch, BranchStatus::kPhaseOneDone, "", done);
  });
  EXPECT_TRUE(reported.ok()) << reported;

  auto committed = Await<Result<TxState>>([&](auto done) { tm.CommitAsync(*xid, done); });
  ASSERT_TRUE(committed.ok()) << committed.status();
  EXPECT_EQ(committed->outcome, Outcome::kCommitted);
  auto rolled = Await<Result<TxState>>([&](auto done) { tm.RollbackAsync(*other, done); });
  ASSERT_TRUE(rolled.ok()) << rolled.status();
  EXPECT_EQ(rolled->outcome, Outcome::kRolledBack);

  // The TM's own report of an outcome.
  auto third = Await<Result<std::string>>([&](auto done) { tm.BeginAsync("report", 10s, "", done); });
  ASSERT_TRUE(third.ok()) << third.status();
  auto rep = Await<Result<TxState>>([&](auto done) { tm.ReportAsync(*third, GlobalStatus::kCommitted, done); });
  ASSERT_TRUE(rep.ok()) << rep.status();
  EXPECT_EQ(rep->status, GlobalStatus::kCommitted);

  // Errors come back the same way: an unknown XID.
  auto missing = Await<Result<TxState>>([&](auto done) { tm.GetStatusAsync("127.0.0.1:1:42", done); });
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound) << missing.status();

  // Phase 2 reached the participant.
  for (int i = 0; i < 200 && phase2 == 0; ++i) std::this_thread::sleep_for(10ms);
  EXPECT_GE(phase2.load(), 1);
}

TEST(CoordinatorClientAsync, FailsOverWhenACoordinatorIsKilled) {
  CoordinatorProcess first, second;
  CoordinatorOptions o = Options({first.address(), second.address()});
  o.attempts = 3;
  CoordinatorClient tm(o);
  ASSERT_TRUE(Await<Result<std::string>>([&](auto done) { tm.BeginAsync("warm", 10s, "", done); }).ok());
  first.Kill();
  // Every call lands on the second coordinator (those picked for the dead one go again).
  for (int i = 0; i < 10; ++i) {
    auto xid = Await<Result<std::string>>([&](auto done) { tm.BeginAsync("after-kill", 10s, "", done); });
    ASSERT_TRUE(xid.ok()) << xid.status();
    auto st = Await<Result<TxState>>([&](auto done) { tm.CommitAsync(*xid, done); });
    ASSERT_TRUE(st.ok()) << st.status();
    EXPECT_EQ(st->outcome, Outcome::kCommitted);
  }
}

TEST(CoordinatorClientAsync, ShutdownAnswersEveryCallInFlight) {
  CoordinatorProcess tc;
  const std::string live = tc.address();
  // A second client whose only coordinator is down: its calls wait for a connection.
  CoordinatorProcess gone;
  const std::string dead = gone.address();
  gone.Kill();

  CoordinatorOptions waiting_options = Options({dead});
  waiting_options.connect_wait = 30s;
  auto waiting = std::make_unique<CoordinatorClient>(waiting_options);
  auto busy = std::make_unique<CoordinatorClient>(Options({live}));

  constexpr int kCalls = 200;
  std::vector<std::atomic<int>> waiting_done(kCalls), busy_done(kCalls);
  std::atomic<int> waiting_unavailable{0}, busy_answered{0}, busy_unavailable{0};
  for (int i = 0; i < kCalls; ++i) {
    waiting->BeginAsync("w", 10s, "", [&, i](Result<std::string> r) {
      ++waiting_done[i];
      if (!r.ok() && r.status().code() == StatusCode::kUnavailable) ++waiting_unavailable;
    });
    busy->BeginAsync("b", 10s, "", [&, i](Result<std::string> r) {
      ++busy_done[i];
      if (r.ok()) ++busy_answered;
      else if (r.status().code() == StatusCode::kUnavailable) ++busy_unavailable;
    });
  }
  std::this_thread::sleep_for(100ms);
  const auto before = std::chrono::steady_clock::now();
  waiting->Shutdown();
  busy->Shutdown();
  EXPECT_LT(std::chrono::steady_clock::now() - before, 10s) << "Shutdown waited for connect_wait";
  // Every done has run once Shutdown returned.
  for (int i = 0; i < kCalls; ++i) {
    EXPECT_EQ(waiting_done[i].load(), 1) << i;
    EXPECT_EQ(busy_done[i].load(), 1) << i;
  }
  EXPECT_EQ(waiting_unavailable.load(), kCalls);
  EXPECT_EQ(busy_answered.load() + busy_unavailable.load(), kCalls);

  // After Shutdown: Unavailable at once, still exactly once.
  std::atomic<int> after{0};
  Status after_status;
  busy->CommitAsync("127.0.0.1:1:1", [&](Result<TxState> r) {
    after_status = r.status();
    ++after;
  });
  EXPECT_EQ(after.load(), 1);
  EXPECT_EQ(after_status.code(), StatusCode::kUnavailable) << after_status;
  auto blocking = busy->Begin("after", 1s);
  EXPECT_EQ(blocking.status().code(), StatusCode::kUnavailable) << blocking.status();
  waiting.reset();
  busy.reset();
  for (int i = 0; i < kCalls; ++i) {
    EXPECT_EQ(waiting_done[i].load(), 1) << i;
    EXPECT_EQ(busy_done[i].load(), 1) << i;
  }
}

TEST(CoordinatorClientAsync, DoneRunsExactlyOnceUnderManyConcurrentCalls) {
  CoordinatorProcess tc;  // one: a transaction is known to the coordinator that began it
  CoordinatorOptions o = Options({tc.address()});
  o.io_threads = 2;
  CoordinatorClient tm(o);
  constexpr int kThreads = 4, kPerThread = 250;
  std::vector<std::atomic<int>> begun(kThreads * kPerThread), ended(kThreads * kPerThread);
  std::atomic<int> ok{0}, failed{0}, outstanding{kThreads * kPerThread};
  std::mutex mu;
  std::vector<std::string> errors;
  std::promise<void> all_done;
  auto finish = [&] {
    if (--outstanding == 0) all_done.set_value();
  };
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        const int n = t * kPerThread + i;
        tm.BeginAsync("many", 10s, "", [&, n](Result<std::string> xid) {
          ++begun[n];
          if (!xid.ok()) {
            std::lock_guard lock(mu);
            errors.push_back(xid.status().ToString());
            ++failed;
            return finish();
          }
          // Chained from inside done: the next call starts on the I/O thread.
          (n % 2 ? tm.CommitAsync(*xid, [&, n](Result<TxState> s) {
             ++ended[n];
             s.ok() && s->outcome == Outcome::kCommitted ? ++ok : ++failed;
             finish();
           })
                 : tm.RollbackAsync(*xid, [&, n](Result<TxState> s) {
                     ++ended[n];
                     s.ok() && s->outcome == Outcome::kRolledBack ? ++ok : ++failed;
                     finish();
                   }));
        });
      }
    });
  }
  for (auto& th : threads) th.join();
  ASSERT_EQ(all_done.get_future().wait_for(60s), std::future_status::ready) << outstanding.load() << " calls unanswered";
  std::this_thread::sleep_for(50ms);  // a late second call of done would show here
  for (int n = 0; n < kThreads * kPerThread; ++n) {
    EXPECT_EQ(begun[n].load(), 1) << n;
    EXPECT_EQ(ended[n].load(), 1) << n;
  }
  EXPECT_EQ(ok.load(), kThreads * kPerThread) << (errors.empty() ? "" : errors.front());
  EXPECT_EQ(failed.load(), 0);
}

TEST(CoordinatorClientAsync, CallBeforeAnyCoordinatorIsUpWaitsForOne) {
  CoordinatorProcess tc;
  tc.Kill();  // keeps its port for Start()
  CoordinatorOptions o = Options({tc.address()});
  o.connect_wait = 5s;
  o.attempts = 1;
  o.reconnect_backoff_min = 20ms;
  o.reconnect_backoff_max = 100ms;
  CoordinatorClient tm(o);
  auto seen = std::make_shared<std::promise<Result<std::string>>>();
  auto result = seen->get_future();
  tm.BeginAsync("early", 10s, "", [seen](Result<std::string> r) { seen->set_value(std::move(r)); });
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(result.wait_for(0s), std::future_status::timeout) << "answered with no coordinator up";
  tc.Start();
  ASSERT_EQ(result.wait_for(20s), std::future_status::ready);
  auto xid = result.get();
  ASSERT_TRUE(xid.ok()) << xid.status();
  EXPECT_TRUE(Await<Result<TxState>>([&](auto done) { tm.CommitAsync(*xid, done); }).ok());
}

TEST(CoordinatorClientAsync, CallFailsWithUnavailableAfterConnectWait) {
  CoordinatorProcess tc;
  tc.Kill();
  CoordinatorOptions o = Options({tc.address()});
  o.connect_wait = 400ms;
  o.attempts = 2;
  CoordinatorClient tm(o);
  const auto start = std::chrono::steady_clock::now();
  auto r = Await<Result<TxState>>([&](auto done) { tm.GetStatusAsync("127.0.0.1:1:1", done); });
  const auto waited = std::chrono::steady_clock::now() - start;
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable) << r.status();
  // Each of the two attempts waited connect_wait for a connection.
  EXPECT_GE(waited, 800ms);
  // The blocking form is the same call.
  auto b = tm.Begin("blocking", 1s);
  EXPECT_EQ(b.status().code(), StatusCode::kUnavailable) << b.status();
}

}  // namespace
}  // namespace dtx::sdk::testing

namespace dtx::sdk::testing {
namespace {

// Clients on an IoPool that borrows the application's own io_context: calls made on its thread
// are answered on that same thread (no other thread involved), phase 2 arrives there too, and
// shutting the clients and the pool down leaves the application's context running.
TEST(CoordinatorClientAsync, ClientsOnABorrowedIoContextStayOnItsThread) {
  CoordinatorProcess tc;
  boost::asio::io_context app_io(1);
  auto guard = boost::asio::make_work_guard(app_io);
  std::thread app([&] {
    pthread_setname_np(pthread_self(), "app-io");
    app_io.run();
  });
  auto pool = std::make_shared<rpc::IoPool>(std::vector<boost::asio::io_context*>{&app_io});
  CoordinatorOptions tm_options = Options({tc.address()});
  tm_options.io_pool = pool;
  CoordinatorOptions rm_options = Options({tc.address()});
  rm_options.resource_ids = {"res-borrowed"};
  rm_options.io_pool = pool;
  std::promise<std::string> phase2_thread;
  std::atomic<int> phase2{0};
  auto tm = std::make_unique<CoordinatorClient>(tm_options);
  auto rm = std::make_unique<CoordinatorClient>(rm_options, [&](BranchCall call, std::function<void(BranchAnswer)> answer) {
    if (phase2++ == 0) phase2_thread.set_value(ThreadName());
    answer({call.commit ? BranchStatus::kPhaseTwoCommitted : BranchStatus::kPhaseTwoRollbacked, ""});
  });

  // Begin, register a branch and commit, each call made on the application's thread; `done`
  // must run there as well, and not inside the call.
  struct Step {
    std::string thread;
    bool inline_call = false;
  };
  auto on_app = [&](auto launch) {
    auto seen = std::make_shared<std::promise<Step>>();
    auto future = seen->get_future();
    boost::asio::post(app_io, [&, seen] {
      auto in_call = std::make_shared<std::atomic<bool>>(true);
      launch([seen, in_call] { seen->set_value({ThreadName(), in_call->load()}); });
      *in_call = false;
    });
    EXPECT_EQ(future.wait_for(20s), std::future_status::ready);
    return future.get();
  };
  std::string xid;
  Step begun = on_app([&](auto finished) {
    tm->BeginAsync("borrowed", 10s, "", [&xid, finished](Result<std::string> r) {
      EXPECT_TRUE(r.ok()) << r.status();
      if (r.ok()) xid = *r;
      finished();
    });
  });
  EXPECT_EQ(begun.thread, "app-io");
  EXPECT_FALSE(begun.inline_call) << "done ran inside the *Async call";
  ASSERT_FALSE(xid.empty());
  Step registered = on_app([&](auto finished) {
    rm->RegisterBranchAsync({.xid = xid, .resource_id = "res-borrowed", .type = BranchType::kAT,
                             .lock_keys = {"res-borrowed:t:1"}, .application_data = ""},
                            [finished](Result<int64_t> r) {
                              EXPECT_TRUE(r.ok()) << r.status();
                              finished();
                            });
  });
  EXPECT_EQ(registered.thread, "app-io");
  Step committed = on_app([&](auto finished) {
    tm->CommitAsync(xid, [finished](Result<TxState> r) {
      EXPECT_TRUE(r.ok()) << r.status();
      if (r.ok()) EXPECT_EQ(r->outcome, Outcome::kCommitted);
      finished();
    });
  });
  EXPECT_EQ(committed.thread, "app-io");
  auto phase2_future = phase2_thread.get_future();
  ASSERT_EQ(phase2_future.wait_for(20s), std::future_status::ready) << "phase 2 never reached the participant";
  EXPECT_EQ(phase2_future.get(), "app-io");

  // Shut down from another thread while the context runs; then the pool goes, and the
  // application's context still runs what it is given.
  tm->Shutdown();
  rm->Shutdown();
  tm.reset();
  rm.reset();
  pool->Stop();
  pool.reset();
  std::promise<std::string> after;
  boost::asio::post(app_io, [&] { after.set_value(ThreadName()); });
  auto after_future = after.get_future();
  ASSERT_EQ(after_future.wait_for(5s), std::future_status::ready) << "the pool stopped the application's context";
  EXPECT_EQ(after_future.get(), "app-io");
  guard.reset();
  app.join();
}

}  // namespace
}  // namespace dtx::sdk::testing
