// dtx-echo-server: the SOFARPC echo service over dtx's Bolt server, for interop tests and the
// RPC benchmark.
#include <CLI/CLI.hpp>

#include <csignal>
#include <iostream>

#include "dtx/common/logging.h"
#include "dtx/rpc/server.h"
#include "echo_service.h"

int main(int argc, char** argv) {
  CLI::App app{"dtx-echo-server: serves com.alipay.sofa.rpc.test.ProtoService:1.0 echoObj over SOFA Bolt"};
  dtx::rpc::ServerOptions options;
  options.port = 12200;
  std::string log_level = "info";
  unsigned idle_seconds = 90;
  app.add_option("--host", options.host, "Address to listen on")->capture_default_str();
  app.add_option("--port", options.port, "Port to listen on (0: any free port)")->capture_default_str();
  app.add_option("--io-threads", options.io_threads, "I/O threads (0: one per core)")->capture_default_str();
  app.add_option("--max-frame-size", options.max_frame_size, "Largest frame accepted, bytes")->capture_default_str();
  app.add_option("--idle-timeout", idle_seconds, "Close connections silent this long, seconds (0: never)")
      ->capture_default_str();
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error")->capture_default_str();
  app.set_config("--config", "", "A TOML file with any of these options");
  CLI11_PARSE(app, argc, argv);

  if (auto s = dtx::InitLogging(log_level); !s.ok()) {
    std::cerr << s.ToString() << "\n";
    return 2;
  }
  options.idle_timeout = std::chrono::seconds(idle_seconds);

  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);  // the I/O threads inherit this mask

  auto registry = std::make_shared<dtx::rpc::ServiceRegistry>();
  dtx::examples::AddEchoService(*registry);
  dtx::rpc::Server server(options, registry);
  if (auto s = server.Start(); !s.ok()) {
    spdlog::critical("{}", s.ToString());
    return 1;
  }
  std::cout << "LISTENING " << server.port() << std::endl;

  int sig = 0;
  sigwait(&signals, &sig);
  spdlog::info("signal {}: shutting down", sig);
  server.Shutdown(std::chrono::seconds(10));
  return 0;
}
