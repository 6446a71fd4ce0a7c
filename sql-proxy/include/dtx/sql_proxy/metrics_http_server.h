// MetricsHttpServer: a small HTTP/1.1 server for monitoring dtx-sql-proxy:
//   GET /metrics   the Prometheus text format, from the `render` callback
//   GET /healthz   200 "ok" while the process serves
// anything else is 404 (405 for another method). It runs on one thread of its own, so a slow
// scraper never holds up a session. No authentication: it listens on loopback by default.
//
// Thread-safety: Start and Stop from one thread; port() from any. `render` is called on the
// server's thread and must be safe to call from there.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "dtx/common/status.h"

namespace dtx::sql_proxy {

class MetricsHttpServer {
 public:
  MetricsHttpServer(std::string host, uint16_t port, std::function<std::string()> render);
  ~MetricsHttpServer();  // Stops.
  MetricsHttpServer(const MetricsHttpServer&) = delete;
  MetricsHttpServer& operator=(const MetricsHttpServer&) = delete;

  Status Start();
  uint16_t port() const;  // the chosen one when asked for port 0; 0 before Start
  void Stop();            // idempotent

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace dtx::sql_proxy
