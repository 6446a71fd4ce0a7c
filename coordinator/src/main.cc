// dtx-coordinator: the Transaction Coordinator server.
//
//   dtx-coordinator                          # Bolt on 8091, SQLite in ./dtx-data, admin on 127.0.0.1:7091
//   dtx-coordinator --store postgres://user@db/dtx --node-id tc-2
//   dtx-coordinator --config dtx.toml        # the same options in a TOML file
#include <CLI/CLI.hpp>

#include <algorithm>
#include <csignal>
#include <iostream>

#include "dtx/common/logging.h"
#include "dtx/coordinator/admin_server.h"
#include "dtx/coordinator/coordinator.h"
#include "dtx/log/open_log_store.h"
#include "dtx/rpc/server.h"

using namespace dtx;

namespace {

bool ParseHostPort(const std::string& s, std::string& host, uint16_t& port) {
  auto colon = s.rfind(':');
  if (colon == std::string::npos) return false;
  host = s.substr(0, colon);
  try {
    int p = std::stoi(s.substr(colon + 1));
    if (p < 0 || p > 65535) return false;
    port = static_cast<uint16_t>(p);
  } catch (...) {
    return false;
  }
  return !host.empty();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"dtx-coordinator: the dtx Transaction Coordinator"};
  rpc::ServerOptions rpc_options;
  rpc_options.port = 8091;
  std::string admin = "127.0.0.1:7091";
  log::LogStoreConfig store_config;
  coordinator::CoordinatorOptions options;
  std::string log_level = "info";
  int64_t default_timeout_ms = options.default_timeout.count();
  int64_t retry_min_ms = options.retry_backoff_min.count();
  int64_t retry_max_ms = options.retry_backoff_max.count();
  int64_t branch_timeout_ms = options.branch_call_timeout.count();
  int64_t shutdown_grace_ms = 10'000;
  int64_t sqlite_gather_us = 0;  // measured: waiting cost latency and saved no CPU (bench/at/README.md)

  app.add_option("--host", rpc_options.host, "Address for Bolt RPC")->capture_default_str();
  app.add_option("--port", rpc_options.port, "Port for Bolt RPC (0: any free port)")->capture_default_str();
  app.add_option("--admin", admin, "host:port of the HTTP admin (port 0: any free port; empty: none)")
      ->capture_default_str();
  app.add_option("--data-dir", store_config.data_dir, "Folder for the SQLite log")->capture_default_str();
  app.add_option("--store", store_config.store, "sqlite (default), sqlite:<file>, or a postgres:// URI");
  app.add_option("--pg-schema", store_config.pg_schema, "PostgreSQL schema for the log")->capture_default_str();
  app.add_option("--synchronous", store_config.synchronous, "SQLite durability: FULL, NORMAL or OFF")
      ->capture_default_str();
  app.add_option("--sqlite-gather-us", sqlite_gather_us,
                 "SQLite, synchronous=FULL: how long a commit waits for more batches to share its fsync, "
                 "while several clients write, at most as long as an fsync takes (0: never)")
      ->capture_default_str();
  app.add_option("--node-id", options.node_id, "This coordinator's name, unique in a cluster; part of every XID")
      ->capture_default_str();
  app.add_option("--token", options.token, "Shared token participants and TMs must present (empty: none)");
  app.add_option("--default-timeout-ms", default_timeout_ms, "Timeout of a transaction that names none")
      ->capture_default_str();
  app.add_option("--retry-min-ms", retry_min_ms, "First phase-2 retry delay")->capture_default_str();
  app.add_option("--retry-max-ms", retry_max_ms, "Longest phase-2 retry delay")->capture_default_str();
  app.add_option("--max-retries", options.max_retries, "Phase-2 retries per branch before giving up (0: forever)")
      ->capture_default_str();
  app.add_option("--branch-call-timeout-ms", branch_timeout_ms, "Timeout of a BranchCommit/BranchRollback call")
      ->capture_default_str();
  app.add_option("--io-threads", rpc_options.io_threads, "RPC I/O threads (0: one per core)")->capture_default_str();
  int64_t busy_poll_us = 0;
  app.add_option("--busy-poll-us", busy_poll_us,
                 "How long an RPC I/O thread with nothing to do polls before it sleeps, in microseconds (0: never "
                 "polls). For I/O threads on cores of their own: it saves a wake-up per call, and keeps those cores busy")
      ->capture_default_str()
      ->check(CLI::Range(0, 10'000));
  app.add_option("--shutdown-grace-ms", shutdown_grace_ms, "How long SIGTERM waits for calls in flight")
      ->capture_default_str();
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error")->capture_default_str();
  app.set_config("--config", "", "A TOML file with any of these options");
  CLI11_PARSE(app, argc, argv);

  if (auto s = InitLogging(log_level); !s.ok()) {
    std::cerr << s.ToString() << "\n";
    return 2;
  }
  options.default_timeout = std::chrono::milliseconds(default_timeout_ms);
  store_config.sqlite_gather = std::chrono::microseconds(std::clamp<int64_t>(sqlite_gather_us, 0, 100'000));
  options.retry_backoff_min = std::chrono::milliseconds(retry_min_ms);
  options.retry_backoff_max = std::chrono::milliseconds(retry_max_ms);
  options.branch_call_timeout = std::chrono::milliseconds(branch_timeout_ms);
  rpc_options.busy_poll = std::chrono::microseconds(busy_poll_us);

  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);  // every thread started below inherits the mask

  spdlog::info("opening the transaction log: {}", log::DescribeLogStore(store_config));
  auto store = log::OpenLogStore(store_config);
  if (!store.ok()) {
    spdlog::critical("{}", store.status().ToString());
    return 1;
  }
  std::shared_ptr<log::LogStore> shared_store = std::move(*store);
  auto metrics = std::make_shared<coordinator::Metrics>();
  metrics->AddGauge("dtx_log_commits_total", "Durable log commits (each carries a group of batches).",
                    [shared_store] { return static_cast<double>(shared_store->Stats().commits); }, true);
  metrics->AddGauge("dtx_log_batches_total", "Log batches committed; divided by commits, the mean group size.",
                    [shared_store] { return static_cast<double>(shared_store->Stats().batches); }, true);
  metrics->AddGauge("dtx_log_syncs_total", "fsyncs of the log (SQLite with synchronous=FULL; one covers many commits).",
                    [shared_store] { return static_cast<double>(shared_store->Stats().syncs); }, true);
  metrics->AddGauge("dtx_log_commit_seconds_total", "Time the log's writer spent committing groups.",
                    [shared_store] { return static_cast<double>(shared_store->Stats().commit_micros) / 1e6; }, true);
  metrics->AddGauge("dtx_log_sync_seconds_total", "Time the log's writer spent in fsyncs.",
                    [shared_store] { return static_cast<double>(shared_store->Stats().sync_micros) / 1e6; }, true);
  metrics->AddGauge("dtx_log_gather_seconds_total",
                    "Time the log's writer waited for more batches to share a commit (--sqlite-gather-us).",
                    [shared_store] { return static_cast<double>(shared_store->Stats().gather_micros) / 1e6; }, true);
  coordinator::Coordinator tc(options, shared_store, metrics);
  if (auto s = tc.Recover(); !s.ok()) {
    spdlog::critical("{}", s.ToString());
    return 1;
  }

  auto registry = std::make_shared<rpc::ServiceRegistry>();
  tc.AddServices(*registry);
  rpc_options.on_disconnect = [&tc](const std::shared_ptr<rpc::Channel>& peer, const std::string&) {
    tc.OnDisconnect(peer);
  };
  rpc::Server server(rpc_options, registry);
  if (auto s = server.Start(); !s.ok()) {
    spdlog::critical("{}", s.ToString());
    return 1;
  }

  std::unique_ptr<coordinator::AdminServer> admin_server;
  if (!admin.empty()) {
    coordinator::AdminOptions admin_options;
    if (!ParseHostPort(admin, admin_options.host, admin_options.port)) {
      spdlog::critical("--admin wants host:port, not '{}'", admin);
      return 2;
    }
    admin_server = std::make_unique<coordinator::AdminServer>(admin_options, tc, *metrics);
    if (auto s = admin_server->Start(); !s.ok()) {
      spdlog::critical("{}", s.ToString());
      return 1;
    }
    spdlog::info("admin on http://{}:{} (/healthz /readyz /metrics /api/v1/transactions)", admin_options.host,
                 admin_server->port());
  }
  spdlog::info("dtx-coordinator {} ready: Bolt on {}:{}", options.node_id, rpc_options.host, server.port());
  std::cout << "LISTENING " << server.port() << std::endl;
  if (admin_server) std::cout << "ADMIN " << admin_server->port() << std::endl;

  int sig = 0;
  sigwait(&signals, &sig);
  spdlog::info("signal {}: shutting down (in-flight calls get {} ms)", sig, shutdown_grace_ms);
  server.Shutdown(std::chrono::milliseconds(shutdown_grace_ms));
  if (admin_server) admin_server->Stop();
  tc.Shutdown();
  shared_store->Close();
  spdlog::info("stopped");
  return 0;
}
