#include "dtx/sql_proxy/metrics_http_server.h"

#include "dtx/common/http_server.h"

namespace dtx::sql_proxy {

class MetricsHttpServer::Impl {
 public:
  Impl(std::string host, uint16_t port, std::function<std::string()> render)
      : render_(std::move(render)),
        server_({.host = std::move(host), .port = port, .name = "dtx-sql-proxy"},
                [this](const http::Request& req) { return Serve(req); }) {}

  http::Server& server() { return server_; }

 private:
  http::Response Serve(const http::Request& req) {
    if (req.method != "GET") return {405, "text/plain", "only GET\n", {{"Allow", "GET"}}};
    const std::string_view path = std::string_view(req.target).substr(0, req.target.find('?'));
    if (path == "/metrics") return {200, "text/plain; version=0.0.4", render_(), {}};
    if (path == "/healthz") return {200, "text/plain", "ok\n", {}};
    return {404, "text/plain", "not found: /metrics and /healthz are served\n", {}};
  }

  std::function<std::string()> render_;
  http::Server server_;  // last: stopped before render_ goes
};

MetricsHttpServer::MetricsHttpServer(std::string host, uint16_t port, std::function<std::string()> render)
    : impl_(std::make_unique<Impl>(std::move(host), port, std::move(render))) {}
MetricsHttpServer::~MetricsHttpServer() { impl_->server().Stop(); }
Status MetricsHttpServer::Start() { return impl_->server().Start(); }
uint16_t MetricsHttpServer::port() const { return impl_->server().port(); }
void MetricsHttpServer::Stop() { impl_->server().Stop(); }

}  // namespace dtx::sql_proxy
