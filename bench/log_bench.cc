// dtx-log-bench: durable batches per second of a LogStore with K batches in flight, and beside
// it the rate of one fsync per write on the same disk, so the gain from group commit shows.
//   dtx-log-bench --sqlite DIR --writers 1,16,256 --seconds 5
//   dtx-log-bench --postgres CONNINFO --writers 1,16,256 --seconds 5
// The batches follow transactions through their life in the log (begin, two branches, decision,
// removal); each is at most "branch-sized": one record and one row lock.
#include <fcntl.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <mutex>
#include <sstream>
#include <string>
#include <vector>

#include "dtx/log/sqlite_log_store.h"
#include "dtx/log/postgres_log_store.h"

using namespace dtx::log;
using Clock = std::chrono::steady_clock;

namespace {

// Writes 4 KiB and fdatasyncs, over and over, for `seconds`: the rate of one fsync per batch.
double FsyncRate(const std::string& dir, double seconds) {
  const std::string path = dir + "/fsync-probe";
  int fd = open(path.c_str(), O_CREAT | O_WRONLY, 0600);
  if (fd < 0) return 0;
  std::string page(4096, 'x');
  const auto end = Clock::now() + std::chrono::duration<double>(seconds);
  long n = 0;
  auto start = Clock::now();
  while (Clock::now() < end) {
    if (pwrite(fd, page.data(), page.size(), 0) < 0 || fdatasync(fd) != 0) break;
    ++n;
  }
  const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  close(fd);
  unlink(path.c_str());
  return n / elapsed;
}

struct Run {
  double batches_per_second;
  double mean_group;  // batches per commit, estimated
};

// One step of a global transaction's life in the log, as the coordinator writes it: begin,
// register two branches (each with a row lock), decide, remove once phase 2 is done. Each step
// is one batch of at most one record and one lock: a "branch-sized" batch.
Batch Step(int step, const std::string& xid, int64_t branch) {
  Batch b;
  switch (step) {
    case 0: {
      GlobalRecord g;
      g.xid = xid;
      g.name = "place-order";
      g.application = "order-svc";
      g.begin_time_ms = 1;
      g.owner_node = "tc-1";
      b.Insert(g);
      break;
    }
    case 1:
    case 2: {
      BranchRecord r;
      r.xid = xid;
      r.branch_id = branch;
      r.resource_id = "orders-db";
      r.type = BranchType::kAT;
      r.lock_keys = "orders-db:orders:" + std::to_string(branch);
      r.application_data = R"({"sql":"UPDATE orders SET state = 2 WHERE id = ?"})";
      r.client_id = "orders-svc:10.0.0.7:41234";
      b.Insert(r).Lock(xid, branch, {r.lock_keys});
      break;
    }
    case 3:
      b.SetStatus(xid, GlobalStatus::kCommitting, 2);
      break;
    default:
      b.Remove(xid);
  }
  return b;
}
constexpr int kSteps = 5;

// Keeps `writers` transactions going, one batch in flight each, for `seconds`.
Run Measure(LogStore& store, int writers, double seconds, std::atomic<int64_t>& ids) {
  std::atomic<long> done{0}, failed{0};
  std::atomic<bool> stop{false};
  std::atomic<int> outstanding{0};
  struct Writer {
    std::string xid;
    int step = 0;
    int64_t branch = 0;
  };
  std::vector<Writer> state(static_cast<size_t>(writers));
  std::function<void(int)> issue = [&](int w) {
    Writer& me = state[static_cast<size_t>(w)];
    if (me.step == 0) {
      me.branch = ids.fetch_add(2);
      me.xid = "tc-1:" + std::to_string(me.branch);
    }
    Batch b = Step(me.step, me.xid, me.branch + (me.step == 2));
    me.step = (me.step + 1) % kSteps;
    ++outstanding;
    store.Write(std::move(b), [&, w](const WriteResult& r) {
      r.ok() ? ++done : ++failed;
      if (!stop) issue(w);
      --outstanding;
    });
  };
  const auto stats_before = store.Stats();
  const auto start = Clock::now();
  for (int w = 0; w < writers; ++w) issue(w);
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  stop = true;
  const long counted = done.load();
  const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  while (outstanding > 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  if (failed) std::fprintf(stderr, "%ld batches failed\n", failed.load());
  const auto stats = store.Stats();
  const double commits = static_cast<double>(stats.commits - stats_before.commits);
  return {counted / elapsed, commits > 0 ? (stats.batches - stats_before.batches) / commits : 0};
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"dtx-log-bench: durable log batches per second"};
  std::string sqlite_dir, pg_conninfo, pg_schema = "dtx_bench", writers_list = "1,16,256", synchronous = "FULL";
  double seconds = 5;
  bool fsync_probe = true;
  app.add_option("--sqlite", sqlite_dir, "a folder for the SQLite file");
  app.add_option("--postgres", pg_conninfo, "libpq connection string");
  app.add_option("--schema", pg_schema, "PostgreSQL schema to use");
  app.add_option("--writers", writers_list, "batches in flight, comma-separated");
  app.add_option("--seconds", seconds, "per measurement");
  app.add_option("--synchronous", synchronous, "SQLite: FULL, NORMAL or OFF");
  app.add_flag("!--no-fsync-probe", fsync_probe, "skip measuring the fsync rate of the disk");
  CLI11_PARSE(app, argc, argv);

  std::unique_ptr<LogStore> store;
  std::string kind;
  if (!sqlite_dir.empty()) {
    std::filesystem::create_directories(sqlite_dir);
    std::filesystem::remove(sqlite_dir + "/bench.db");
    auto s = SqliteLogStore::Open({.path = sqlite_dir + "/bench.db", .synchronous = synchronous});
    if (!s.ok()) {
      std::fprintf(stderr, "%s\n", s.status().ToString().c_str());
      return 1;
    }
    store = std::move(*s);
    kind = "sqlite(synchronous=" + synchronous + ")";
    if (fsync_probe)
      std::printf("fsync baseline: %.0f fdatasyncs/s on %s\n", FsyncRate(sqlite_dir, 3), sqlite_dir.c_str());
  } else {
    PostgresOptions options;
    options.conninfo = pg_conninfo;
    options.schema = pg_schema;
    auto s = PostgresLogStore::Open(options);
    if (!s.ok()) {
      std::fprintf(stderr, "%s\n", s.status().ToString().c_str());
      return 1;
    }
    store = std::move(*s);
    kind = "postgres";
  }
  std::atomic<int64_t> ids{1};
  std::stringstream list(writers_list);
  std::string item;
  while (std::getline(list, item, ',')) {
    const int writers = std::stoi(item);
    Run r = Measure(*store, writers, seconds, ids);
    std::printf("store=%s writers=%d durable_batches/s=%.0f batches_per_commit=%.1f\n", kind.c_str(), writers,
                r.batches_per_second, r.mean_group);
    std::fflush(stdout);
  }
  store->Close();
  return 0;
}
