#include "dtx/rpc/server.h"

#include <spdlog/spdlog.h>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>

#include <mutex>
#include <thread>
#include <unordered_set>

#include "connection.h"
#include "dtx/rpc/io_pool.h"

namespace dtx::rpc {
namespace asio = boost::asio;
using asio::ip::tcp;

struct Server::Impl {
  ServerOptions options;
  std::shared_ptr<const ServiceRegistry> services;
  std::unique_ptr<IoPool> pool;
  std::unique_ptr<tcp::acceptor> acceptor;
  uint16_t port = 0;
  bool running = false;

  mutable std::mutex mu;
  std::unordered_set<std::shared_ptr<Connection>> connections;  // guarded by mu
  bool accepting = false;                                        // guarded by mu

  void Accept() {
    auto& io = pool->Next();
    auto conn = std::make_shared<Connection>(
        io,
        Connection::Options{.max_frame_size = options.max_frame_size,
                            .max_pending_output = options.max_pending_output,
                            .idle_timeout = options.idle_timeout,
                            .heartbeat_interval = {},
                            .heartbeat_failures = 0,
                            .wire = {},
                            .learn_wire = true},
        services, [this](const std::shared_ptr<Connection>& c, const Status& reason) { OnClosed(c, reason); });
    acceptor->async_accept(conn->socket(), [this, conn](const boost::system::error_code& ec) {
      {
        std::lock_guard lock(mu);
        if (!accepting) return;
      }
      if (ec) {
        // Out of file descriptors, say: wait a little rather than spin.
        SPDLOG_WARN("rpc: accept failed: {}; trying again in 100 ms", ec.message());
        auto timer = std::make_shared<asio::steady_timer>(acceptor->get_executor(), std::chrono::milliseconds(100));
        timer->async_wait([this, timer](const boost::system::error_code&) {
          {
            std::lock_guard lock(mu);
            if (!accepting) return;
          }
          Accept();
        });
        return;
      } else {
        {
          std::lock_guard lock(mu);
          connections.insert(conn);
        }
        asio::post(conn->io(), [this, conn] {
          conn->Start();
          if (options.on_connect && conn->state() != Connection::State::kClosed)
            options.on_connect(conn, conn->peer_address());
        });
      }
      Accept();
    });
  }

  void OnClosed(const std::shared_ptr<Connection>& conn, const Status& reason) {
    SPDLOG_DEBUG("rpc: connection from {} closed: {}", conn->peer_address(), reason.ToString());
    if (options.on_disconnect) options.on_disconnect(conn, conn->peer_address());
    std::lock_guard lock(mu);
    connections.erase(conn);
  }
};

Server::Server(ServerOptions options, std::shared_ptr<const ServiceRegistry> services) : impl_(std::make_unique<Impl>()) {
  impl_->options = std::move(options);
  impl_->services = std::move(services);
}

Server::~Server() { Shutdown(std::chrono::milliseconds(0)); }

Status Server::Start() {
  auto& im = *impl_;
  if (im.running) return FailedPrecondition("server already started");
  im.pool = std::make_unique<IoPool>(im.options.io_threads, im.options.busy_poll);
  boost::system::error_code ec;
  auto address = asio::ip::make_address(im.options.host, ec);
  if (ec) return InvalidArgument("bad listen address '" + im.options.host + "': " + ec.message());
  tcp::endpoint endpoint(address, im.options.port);
  im.acceptor = std::make_unique<tcp::acceptor>(im.pool->At(0));
  if (im.acceptor->open(endpoint.protocol(), ec); ec) return IOError("socket: " + ec.message());
  im.acceptor->set_option(tcp::acceptor::reuse_address(true), ec);
  if (im.acceptor->bind(endpoint, ec); ec) {
    return IOError("cannot listen on " + im.options.host + ":" + std::to_string(im.options.port) + ": " + ec.message());
  }
  if (im.acceptor->listen(asio::socket_base::max_listen_connections, ec); ec) return IOError("listen: " + ec.message());
  im.port = im.acceptor->local_endpoint().port();
  {
    std::lock_guard lock(im.mu);
    im.accepting = true;
  }
  im.running = true;
  asio::post(im.pool->At(0), [&im] { im.Accept(); });
  SPDLOG_INFO("rpc: listening on {}:{} with {} I/O threads", im.options.host, im.port, im.pool->size());
  return Status::Ok();
}

uint16_t Server::port() const { return impl_->port; }

size_t Server::connection_count() const {
  std::lock_guard lock(impl_->mu);
  return impl_->connections.size();
}

void Server::Shutdown(std::chrono::milliseconds grace) {
  auto& im = *impl_;
  if (!im.running) return;
  im.running = false;
  std::vector<std::shared_ptr<Connection>> open;
  {
    std::lock_guard lock(im.mu);
    im.accepting = false;
    open.assign(im.connections.begin(), im.connections.end());
  }
  asio::post(im.pool->At(0), [&im] {
    boost::system::error_code ignored;
    im.acceptor->close(ignored);
  });
  for (auto& c : open) c->Drain();
  const auto deadline = std::chrono::steady_clock::now() + grace;
  while (connection_count() > 0 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  {
    std::lock_guard lock(im.mu);
    open.assign(im.connections.begin(), im.connections.end());
  }
  if (!open.empty()) SPDLOG_WARN("rpc: closing {} connections with calls still in flight", open.size());
  for (auto& c : open) c->Close(Cancelled("server shut down"));
  // Let the closes run, then stop the threads.
  const auto hard_deadline = std::chrono::steady_clock::now() + std::chrono::seconds(1);
  while (connection_count() > 0 && std::chrono::steady_clock::now() < hard_deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  im.pool->Stop();
  im.acceptor.reset();
  std::lock_guard lock(im.mu);
  im.connections.clear();
}

}  // namespace dtx::rpc
