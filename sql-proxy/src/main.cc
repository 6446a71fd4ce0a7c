// dtx-sql-proxy: a PostgreSQL wire-protocol proxy that binds sessions to dtx global transactions.
//
//   dtx-sql-proxy                                   # 0.0.0.0:6433 -> 127.0.0.1:5432, metrics on 127.0.0.1:9433
//   dtx-sql-proxy --server db1:5432 --backend orders=db2:5432
//   dtx-sql-proxy --server /var/run/postgresql      # a local server through its Unix-domain socket
//   dtx-sql-proxy --config proxy.toml               # the same options in a TOML file
#include <CLI/CLI.hpp>

#include <algorithm>
#include <csignal>
#include <iostream>

#include "dtx/at/at_resource_manager.h"
#include "dtx/rpc/io_pool.h"
#include "dtx/common/logging.h"
#include "dtx/sql_proxy/at_services.h"
#include "dtx/sql_proxy/metrics_http_server.h"
#include "dtx/sql_proxy/proxy_server.h"

using namespace dtx;
using namespace dtx::sql_proxy;

int main(int argc, char** argv) {
  CLI::App app{"dtx-sql-proxy: a PostgreSQL wire-protocol proxy for dtx"};
  ProxyOptions options;
  std::string server = "127.0.0.1:5432";
  std::vector<std::string> backends;
  std::string admin = "127.0.0.1:9433";
  std::string log_level = "info";
  int64_t connect_timeout_ms = options.connect_timeout.count();
  int64_t busy_poll_us = options.busy_poll.count();
  int64_t shutdown_grace_ms = 30'000;
  std::string tls_cert, tls_key;
  std::string server_tls = "disable", server_tls_ca, server_tls_cert, server_tls_key;
  // AT mode.
  std::string coordinator;
  std::string coordinator_token;
  std::string application = "dtx-sql-proxy";
  std::vector<std::string> resources;
  int64_t lock_retry_ms = 2000;
  bool check_unbound_writes = true;
  bool report_phase_one_done = false;
  bool at_keep_prepared = true;
  int64_t undo_sweep_interval_ms = 60'000, undo_marker_age_ms = 600'000;

  app.add_option("--host", options.host, "Address to listen on")->capture_default_str();
  app.add_option("--port", options.port, "Port to listen on (0: any free port)")->capture_default_str();
  app.add_option("--server", server, "The PostgreSQL server for databases not named by --backend: host:port, or the folder of its "
                 "Unix-domain socket, /path[:port]")
      ->capture_default_str();
  app.add_option("--backend", backends,
                 "database=host:port or database=/socket/folder[:port]: the server of one database (repeat, or a "
                 "list in the config file)");
  app.add_option("--admin", admin, "host:port of the HTTP /metrics endpoint (port 0: any free port; empty: none)")
      ->capture_default_str();
  app.add_option("--workers", options.workers, "I/O threads (0: one per core)")->capture_default_str();
  app.add_option("--busy-poll-us", busy_poll_us,
                 "How long a worker with nothing to do polls before it sleeps, in microseconds (0: never polls). "
                 "For workers on cores of their own: it saves a wake-up per message, and keeps those cores busy")
      ->capture_default_str()
      ->check(CLI::Range(0, 10'000));
  app.add_option("--max-message-size", options.max_message_size,
                 "Largest client message accepted, in bytes; a larger length ends the session")
      ->capture_default_str();
  app.add_option("--connect-timeout-ms", connect_timeout_ms, "How long to wait for a PostgreSQL server to accept")
      ->capture_default_str();
  app.add_option("--defer-begin", options.defer_begin,
                 "A bare BEGIN in an idle session is answered by the proxy and sent with the session's next "
                 "statement (one round trip less per transaction)")
      ->capture_default_str();
  app.add_option("--tls-cert", tls_cert,
                 "PEM certificate chain (the proxy's own first): clients that ask for TLS (sslmode=prefer, require, "
                 "verify-full) get it; with --tls-key");
  app.add_option("--tls-key", tls_key, "PEM private key of --tls-cert");
  app.add_option("--tls-required", options.tls_required,
                 "Refuse sessions that did not set up TLS (FATAL 28000); needs --tls-cert")
      ->capture_default_str();
  app.add_option("--server-tls", server_tls,
                 "TLS toward the PostgreSQL servers, as libpq's sslmode: disable, prefer (when the server offers it), "
                 "require, verify-ca (its certificate signed by a trusted CA), verify-full (and issued for the host "
                 "the proxy connects to)")
      ->capture_default_str();
  app.add_option("--server-tls-ca", server_tls_ca,
                 "PEM certificates of the CAs trusted by --server-tls verify-ca and verify-full (default: the "
                 "system's)");
  app.add_option("--server-tls-cert", server_tls_cert,
                 "PEM certificate chain the proxy presents to servers that ask for a client certificate; with "
                 "--server-tls-key");
  app.add_option("--server-tls-key", server_tls_key, "PEM private key of --server-tls-cert");
  app.add_option("--shutdown-grace-ms", shutdown_grace_ms,
                 "How long SIGTERM waits for open sessions to end before ending them")
      ->capture_default_str();
  app.add_option("--coordinator", coordinator,
                 "host:port[,host:port...] of the dtx coordinators: turns AT mode on (writes of bound sessions "
                 "become AT branches; SELECT dtx.begin()/commit()/rollback())");
  app.add_option("--coordinator-token", coordinator_token, "The coordinators' shared token, if they want one");
  app.add_option("--application", application, "This proxy's application name at the coordinator")
      ->capture_default_str();
  app.add_option("--resource", resources,
                 "database=conninfo: AT for that database; conninfo is the libpq URI the proxy uses for phase 2 "
                 "(repeat, or a list in the config file)");
  app.add_option("--lock-retry-ms", lock_retry_ms, "How long a global lock conflict is retried before 55P03")
      ->capture_default_str();
  app.add_option("--check-unbound-writes", check_unbound_writes,
                 "Writes of sessions bound to no global transaction are checked against the global locks")
      ->capture_default_str();
  app.add_option("--at-keep-prepared", at_keep_prepared,
                 "AT mode: run a bound simple-protocol write whose literals are plain numbers as one prepared "
                 "statement per shape and session, its numbers as parameters")
      ->capture_default_str();
  int64_t catalog_max_age_ms = at::Catalog::kDefaultMaxAge.count();
  app.add_option("--catalog-max-age-ms", catalog_max_age_ms,
                 "AT mode: how long a table's description (primary key, columns, triggers) read from the catalog "
                 "is used before it is read again, so that DDL made past the proxy is seen")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{0}, int64_t{86'400'000}));
  bool check_writes_elsewhere = true;
  app.add_option("--check-writes-elsewhere", check_writes_elsewhere,
                 "AT mode: a bound transaction that called a function PostgreSQL does not own, or wrote a table with "
                 "triggers, rules or ON UPDATE foreign-key actions, is checked at its COMMIT for writes to tables its "
                 "statements did not name (which a global rollback could not undo); false skips that check")
      ->capture_default_str();
  std::vector<std::string> untracked_tables;
  app.add_option("--untracked-tables", untracked_tables,
                 "AT mode: tables (comma-separated SQL names) that triggers, rules or functions of a bound "
                 "session may write although a global rollback leaves those writes in place (an audit log); "
                 "a bound transaction's writes to any other table its statements did not name fail its COMMIT")
      ->delimiter(',');
  app.add_option("--report-phase-one-done", report_phase_one_done,
                 "A branch whose local COMMIT succeeded reports PhaseOneDone to the coordinator (one more call; "
                 "the coordinator treats a Registered branch the same)")
      ->capture_default_str();
  app.add_option("--undo-sweep-interval-ms", undo_sweep_interval_ms,
                 "How often undo rows no phase 2 needs are swept (also once at start)")->capture_default_str();
  app.add_option("--undo-marker-age-ms", undo_marker_age_ms,
                 "Rollback markers younger than this are never swept")->capture_default_str();
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error")->capture_default_str();
  app.set_config("--config", "", "A TOML file with any of these options");
  CLI11_PARSE(app, argc, argv);

  if (auto s = InitLogging(log_level); !s.ok()) {
    std::cerr << s.ToString() << "\n";
    return 2;
  }
  auto parsed = ParseBackendAddress(server);
  if (!parsed.ok()) {
    std::cerr << "--server: " << parsed.status().message() << "\n";
    return 2;
  }
  options.default_backend = *parsed;
  for (const auto& entry : backends) {
    const auto eq = entry.find('=');
    auto address = eq == std::string::npos ? Result<BackendAddress>(InvalidArgument("want database=host:port"))
                                           : ParseBackendAddress(entry.substr(eq + 1));
    if (eq == 0 || !address.ok()) {
      std::cerr << "--backend '" << entry << "': " << address.status().message() << "\n";
      return 2;
    }
    options.backends[entry.substr(0, eq)] = *address;
  }
  if (options.max_message_size < 1024) {
    std::cerr << "--max-message-size must be at least 1024\n";
    return 2;
  }
  options.connect_timeout = std::chrono::milliseconds(connect_timeout_ms);
  if (!tls_cert.empty() || !tls_key.empty()) {
    auto tls = LoadTlsServerContext(tls_cert, tls_key);
    if (!tls.ok()) {
      std::cerr << "--tls-cert/--tls-key: " << tls.status().message() << "\n";
      return 2;
    }
    options.tls = *tls;
  } else if (options.tls_required) {
    std::cerr << "--tls-required needs --tls-cert and --tls-key\n";
    return 2;
  }
  if (auto mode = ParseServerTlsMode(server_tls); !mode.ok()) {
    std::cerr << "--server-tls: " << mode.status().message() << "\n";
    return 2;
  } else if (*mode != ServerTlsMode::kDisable) {
    if (!server_tls_ca.empty() && *mode != ServerTlsMode::kVerifyCa && *mode != ServerTlsMode::kVerifyFull) {
      spdlog::warn("--server-tls-ca is not used with --server-tls {}: the server's certificate is not checked",
                   ServerTlsModeName(*mode));
    }
    auto context = LoadTlsClientContext(*mode, server_tls_ca, server_tls_cert, server_tls_key);
    if (!context.ok()) {
      std::cerr << "--server-tls-ca/--server-tls-cert/--server-tls-key: " << context.status().message() << "\n";
      return 2;
    }
    options.server_tls = *context;
  } else if (!server_tls_ca.empty() || !server_tls_cert.empty() || !server_tls_key.empty()) {
    std::cerr << "--server-tls-ca, --server-tls-cert and --server-tls-key need --server-tls\n";
    return 2;
  }
  options.busy_poll = std::chrono::microseconds(busy_poll_us);

  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);  // every thread started below inherits the mask
  signal(SIGPIPE, SIG_IGN);

  std::shared_ptr<AtServices> at_services;
  std::unique_ptr<at::AtResourceManager> resource_manager;
  if (!coordinator.empty()) {
    if (lock_retry_ms < 0) {
      std::cerr << "--lock-retry-ms must not be negative\n";
      return 2;
    }
    at_services = std::make_shared<AtServices>();
    at_services->check_unbound_writes = check_unbound_writes;
    at::AtResourceManagerOptions rm_options;
    rm_options.untracked_tables = untracked_tables;
    rm_options.sweep.interval = std::chrono::milliseconds(std::max<int64_t>(1, undo_sweep_interval_ms));
    rm_options.sweep.marker_age = std::chrono::milliseconds(std::max<int64_t>(0, undo_marker_age_ms));
    for (const auto& entry : resources) {
      const auto eq = entry.find('=');
      if (eq == std::string::npos || eq == 0 || eq + 1 == entry.size()) {
        std::cerr << "--resource '" << entry << "': want database=conninfo\n";
        return 2;
      }
      const std::string database = entry.substr(0, eq);
      AtResource resource;
      resource.options.resource_id = database;
      resource.options.lock_retry_for = std::chrono::milliseconds(lock_retry_ms);
      resource.options.report_phase_one_done = report_phase_one_done;
      resource.options.keep_prepared = at_keep_prepared;
      resource.options.untracked_tables = untracked_tables;
      resource.options.check_writes_elsewhere = check_writes_elsewhere;
      resource.catalog = std::make_shared<at::Catalog>(std::chrono::milliseconds(catalog_max_age_ms));
      at_services->resources[database] = std::move(resource);
      rm_options.databases[database] = entry.substr(eq + 1);
    }
    resource_manager = std::make_unique<at::AtResourceManager>(rm_options);
    if (auto s = resource_manager->Start(); !s.ok()) {
      spdlog::critical("AT mode: {}", s.ToString());
      return 1;
    }
    sdk::CoordinatorOptions co;
    co.addresses.clear();
    for (size_t start = 0; start <= coordinator.size();) {
      size_t comma = coordinator.find(',', start);
      if (comma == std::string::npos) comma = coordinator.size();
      if (comma > start) co.addresses.push_back(coordinator.substr(start, comma - start));
      start = comma + 1;
    }
    for (const auto& address : co.addresses) {
      if (auto parsed = ParseBackendAddress(address); !parsed.ok() || parsed->unix_socket()) {
        std::cerr << "--coordinator: want host:port[,host:port...], not '" << coordinator << "'\n";
        return 2;
      }
    }
    co.token = coordinator_token;
    co.application = application;
    for (const auto& [database, r] : at_services->resources) co.resource_ids.push_back(database);
    co.connect_wait = std::chrono::milliseconds(2000);
    co.call_timeout = std::chrono::milliseconds(10'000);
    at_services->coordinator = std::make_shared<sdk::CoordinatorClient>(co, resource_manager->Handler());
    // Each worker's sessions call through a client on the worker's own thread (see AtServices).
    at_services->worker_coordinator = [co, handler = resource_manager->Handler()](std::shared_ptr<rpc::IoPool> pool) {
      sdk::CoordinatorOptions options = co;
      options.io_pool = std::move(pool);
      return std::make_shared<sdk::CoordinatorClient>(std::move(options), handler);
    };
    resource_manager->StartSweeping(
        [client = at_services->coordinator](const std::string& xid) { return client->GetStatus(xid); });
    options.at = at_services;
    spdlog::info("AT mode: coordinator {}, {} resource(s), lock retry {} ms, unbound writes {}checked", coordinator,
                 at_services->resources.size(), lock_retry_ms, check_unbound_writes ? "" : "not ");
  } else if (!resources.empty()) {
    spdlog::warn("--resource has no effect without --coordinator");
  }


  ProxyServer proxy(options);
  if (auto s = proxy.Start(); !s.ok()) {
    spdlog::critical("{}", s.ToString());
    return 1;
  }
  std::unique_ptr<MetricsHttpServer> metrics_server;
  if (!admin.empty()) {
    auto address = ParseBackendAddress(admin);
    if (!address.ok() && admin.ends_with(":0")) address = BackendAddress{admin.substr(0, admin.size() - 2), 0};
    if (!address.ok()) {
      spdlog::critical("--admin wants host:port, not '{}'", admin);
      return 2;
    }
    metrics_server = std::make_unique<MetricsHttpServer>(address->host, address->port,
                                                         [&proxy] { return proxy.metrics().Render(); });
    if (auto s = metrics_server->Start(); !s.ok()) {
      spdlog::critical("{}", s.ToString());
      return 1;
    }
  }
  spdlog::info("dtx-sql-proxy ready on {}:{}{}, forwarding to {} ({} database(s) routed apart){}", options.host,
               proxy.port(), !options.tls ? "" : options.tls_required ? " (TLS required)" : " (TLS offered)",
               options.default_backend.ToString(), options.backends.size(),
               metrics_server ? ", metrics on http://" + admin.substr(0, admin.rfind(':')) + ":" +
                                    std::to_string(metrics_server->port()) + "/metrics"
                              : std::string());
  std::cout << "LISTENING " << proxy.port() << std::endl;
  if (metrics_server) std::cout << "ADMIN " << metrics_server->port() << std::endl;

  int sig = 0;
  sigwait(&signals, &sig);
  spdlog::info("signal {}: no new sessions; open ones get {} ms to finish", sig, shutdown_grace_ms);
  const size_t ended = proxy.Shutdown(std::chrono::milliseconds(shutdown_grace_ms));
  if (metrics_server) metrics_server->Stop();
  if (at_services) {
    at_services->coordinator->Shutdown();
    resource_manager->Stop();
  }
  spdlog::info("stopped ({} session(s) ended by the shutdown)", ended);
  return 0;
}
