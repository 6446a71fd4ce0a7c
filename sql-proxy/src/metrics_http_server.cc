#include "dtx/sql_proxy/metrics_http_server.h"

#include <spdlog/spdlog.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <atomic>
#include <thread>

namespace dtx::sql_proxy {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
constexpr auto kTuple = asio::as_tuple(asio::use_awaitable);
constexpr auto kIdleTimeout = std::chrono::seconds(30);

}  // namespace

class MetricsHttpServer::Impl {
 public:
  Impl(std::string host, uint16_t port, std::function<std::string()> render)
      : host_(std::move(host)), port_(port), render_(std::move(render)), acceptor_(io_) {}

  Status Start() {
    boost::system::error_code ec;
    auto address = asio::ip::make_address(host_, ec);
    if (ec) return InvalidArgument("bad metrics host '" + host_ + "'");
    tcp::endpoint endpoint(address, port_);
    acceptor_.open(endpoint.protocol(), ec);
    if (!ec) acceptor_.set_option(tcp::acceptor::reuse_address(true), ec);
    if (!ec) acceptor_.bind(endpoint, ec);
    if (!ec) acceptor_.listen(64, ec);
    if (ec) return Unavailable("cannot listen on " + host_ + ":" + std::to_string(port_) + ": " + ec.message());
    bound_port_ = acceptor_.local_endpoint().port();
    asio::co_spawn(io_, Accept(), asio::detached);
    thread_ = std::thread([this] { io_.run(); });
    return Status::Ok();
  }

  void Stop() {
    if (!thread_.joinable()) return;
    asio::post(io_, [this] {
      boost::system::error_code ignored;
      acceptor_.close(ignored);
    });
    io_.stop();
    thread_.join();
  }

  uint16_t port() const { return bound_port_; }

 private:
  asio::awaitable<void> Accept() {
    while (acceptor_.is_open()) {
      auto [ec, socket] = co_await acceptor_.async_accept(kTuple);
      if (ec) {
        if (ec == asio::error::operation_aborted) co_return;
        continue;
      }
      asio::co_spawn(io_, Serve(beast::tcp_stream(std::move(socket))), asio::detached);
    }
  }

  asio::awaitable<void> Serve(beast::tcp_stream stream) {
    beast::flat_buffer buffer;
    while (true) {
      http::request_parser<http::empty_body> parser;
      parser.header_limit(16 * 1024);
      stream.expires_after(kIdleTimeout);
      auto [ec, n] = co_await http::async_read(stream, buffer, parser, kTuple);
      if (ec) break;
      const auto& req = parser.get();
      http::response<http::string_body> res;
      res.version(req.version());
      res.keep_alive(req.keep_alive());
      res.set(http::field::server, "dtx-sql-proxy");
      if (req.method() != http::verb::get && req.method() != http::verb::head) {
        res.result(http::status::method_not_allowed);
        res.body() = "only GET\n";
      } else if (req.target() == "/metrics") {
        res.result(http::status::ok);
        res.set(http::field::content_type, "text/plain; version=0.0.4");
        res.body() = render_();
      } else if (req.target() == "/healthz") {
        res.result(http::status::ok);
        res.body() = "ok\n";
      } else {
        res.result(http::status::not_found);
        res.body() = "not found: /metrics and /healthz are served\n";
      }
      if (res.find(http::field::content_type) == res.end()) res.set(http::field::content_type, "text/plain");
      res.prepare_payload();
      if (req.method() == http::verb::head) res.body().clear();
      auto [wec, wn] = co_await http::async_write(stream, res, kTuple);
      if (wec || !res.keep_alive()) break;
    }
    boost::system::error_code ignored;
    stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
  }

  std::string host_;
  uint16_t port_;
  std::function<std::string()> render_;
  asio::io_context io_{1};
  tcp::acceptor acceptor_;
  std::thread thread_;
  std::atomic<uint16_t> bound_port_{0};
};

MetricsHttpServer::MetricsHttpServer(std::string host, uint16_t port, std::function<std::string()> render)
    : impl_(std::make_unique<Impl>(std::move(host), port, std::move(render))) {}
MetricsHttpServer::~MetricsHttpServer() { impl_->Stop(); }
Status MetricsHttpServer::Start() { return impl_->Start(); }
uint16_t MetricsHttpServer::port() const { return impl_->port(); }
void MetricsHttpServer::Stop() { impl_->Stop(); }

}  // namespace dtx::sql_proxy
