// dtx-at-analyzer-bench: the CPU the AT engine spends per statement of a bound session, without
// any I/O: AtBranch::Prepare (Analyze + Plan, the table already in the catalog), the steps'
// queries (Next) and the answers (OnResult) of the TPC-B-like statements of tpcb-global.sql.
// Forms: literals that change every time (pgbench -M simple), $n parameters with the same text
// every time (the extended protocol), and the simple form again with the shape cache off
// (every statement analysed by the grammar, as a first statement of its shape is). Prints
// microseconds per statement and the shape cache's hits and misses.
#include <chrono>
#include <ctime>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "dtx/at/at_branch.h"
#include "dtx/at/statement_shape.h"

using namespace dtx::at;

namespace {

// This thread's CPU time: steadier than the wall clock on a machine shared with compilers.
double ThreadCpuMicros() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

void Store(Catalog& c, const std::string& name, const std::string& pk) {
  QueryResult r;
  r.rows.push_back({"public", name, "r", "[\"" + pk + "\"]", "[]", "[]", "false"});
  (void)c.Store(TableRef{"", name}, r);
}

// Runs one statement through its steps, answering each query with one plausible row.
bool RunStatement(AtBranch& branch, const std::string& sql, QueryParams params) {
  auto st = branch.Prepare(sql, std::move(params));
  if (!st.ok()) {
    std::fprintf(stderr, "refused: %s: %s\n", sql.c_str(), st.status().ToString().c_str());
    return false;
  }
  while (auto step = (*st)->Next()) {
    QueryResult r;
    switch (step->query.role) {
      case QueryRole::kBeforeImage: r.rows.push_back({"[\"7\"]", "{\"aid\":7,\"abalance\":1}"}); break;
      case QueryRole::kStatement:
        if (step->query.hidden_columns == 2) r.rows.push_back({"[\"7\"]", "{\"aid\":7,\"abalance\":2}"});
        else r.rows.push_back({"1"});
        break;
      default: break;
    }
    auto s = (*st)->OnResult(r);
    if (!s.ok()) {
      std::fprintf(stderr, "OnResult: %s: %s\n", sql.c_str(), s.ToString().c_str());
      return false;
    }
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"CPU per statement of dtx-sql-proxy's AT engine (no I/O)"};
  int transactions = 20000;
  app.add_option("-n,--transactions", transactions, "TPC-B-like transactions (5 statements each) per form");
  std::string only;
  app.add_option("--form", only, "run one form only: simple, extended or nocache");
  CLI11_PARSE(app, argc, argv);

  auto catalog = std::make_shared<Catalog>();
  Store(*catalog, "pgbench_accounts", "aid");
  Store(*catalog, "pgbench_tellers", "tid");
  Store(*catalog, "pgbench_branches", "bid");
  Store(*catalog, "pgbench_history", "hid");  // pgbench's table has none; the bench adds one (run_at_bench.sh)

  std::mt19937 rng(42);
  auto rnd = [&](int lo, int hi) { return std::to_string(std::uniform_int_distribution<int>(lo, hi)(rng)); };
  const char* const kForms[] = {"simple", "extended", "simple, cache off"};
  for (int form = 0; form < 3; ++form) {
    const bool simple = form != 1;
    if (!only.empty() && only != (form == 0 ? "simple" : form == 1 ? "extended" : "nocache")) continue;
    ClearShapeCache();
    if (form == 2) SetShapeCacheLimits(0, 0);
    long statements = 0;
    auto t0 = std::chrono::steady_clock::now();
    const double cpu0 = ThreadCpuMicros();
    for (int i = 0; i < transactions; ++i) {
      AtOptions o;
      o.resource_id = "bench";
      AtBranch branch(o, catalog, "xid-bench");
      const std::string aid = rnd(1, 1000000), bid = rnd(1, 1000), tid = rnd(1, 10000), delta = rnd(-5000, 5000);
      std::vector<std::pair<std::string, QueryParams>> sts;
      if (simple) {
        sts = {{"UPDATE pgbench_accounts SET abalance = abalance + " + delta + " WHERE aid = " + aid, {}},
               {"SELECT abalance FROM pgbench_accounts WHERE aid = " + aid, {}},
               {"UPDATE pgbench_tellers SET tbalance = tbalance + " + delta + " WHERE tid = " + tid, {}},
               {"UPDATE pgbench_branches SET bbalance = bbalance + " + delta + " WHERE bid = " + bid, {}},
               {"INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (" + tid + ", " + bid + ", " + aid +
                    ", " + delta + ", CURRENT_TIMESTAMP)",
                {}}};
      } else {
        auto p = [](std::vector<std::string> v) {
          QueryParams q;
          for (auto& s : v) q.values.push_back(s);
          return q;
        };
        sts = {{"UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2", p({delta, aid})},
               {"SELECT abalance FROM pgbench_accounts WHERE aid = $1", p({aid})},
               {"UPDATE pgbench_tellers SET tbalance = tbalance + $1 WHERE tid = $2", p({delta, tid})},
               {"UPDATE pgbench_branches SET bbalance = bbalance + $1 WHERE bid = $2", p({delta, bid})},
               {"INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES ($1, $2, $3, $4, CURRENT_TIMESTAMP)",
                p({tid, bid, aid, delta})}};
      }
      for (auto& [sql, params] : sts) {
        if (!RunStatement(branch, sql, std::move(params))) return 1;
        ++statements;
      }
      if (branch.entries().size() != 4) {
        std::fprintf(stderr, "expected 4 undo entries, got %zu\n", branch.entries().size());
        return 1;
      }
    }
    const double cpu = ThreadCpuMicros() - cpu0;
    const double us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count();
    const auto stats = ShapeCacheStatistics();
    std::printf("%-18s %ld statements  CPU %.1f us/statement  wall %.1f us/statement  (shape cache: %llu hits, %llu misses)\n",
                kForms[form], statements, cpu / statements, us / statements,
                static_cast<unsigned long long>(stats.hits), static_cast<unsigned long long>(stats.misses));
  }
  return 0;
}
