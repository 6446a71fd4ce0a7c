#include "dtx/sql_proxy/proxy_server.h"

#include <spdlog/spdlog.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>

#include <condition_variable>
#include <mutex>
#include <thread>
#include <unordered_set>

#include <sys/un.h>

#include "cancel_registry.h"
#include "dtx/rpc/io_pool.h"
#include "dtx/sdk/coordinator_client.h"
#include "session.h"

namespace dtx::sql_proxy {

namespace {

Result<BackendAddress> CheckSocketPath(BackendAddress address) {
  if (!address.unix_socket()) return address;
  while (address.host.size() > 1 && address.host.back() == '/') address.host.pop_back();
  if (address.SocketPath().size() >= sizeof(sockaddr_un::sun_path)) {
    return InvalidArgument("socket path too long: " + address.SocketPath());
  }
  return address;
}

}  // namespace

Result<BackendAddress> ParseBackendAddress(const std::string& text) {
  const auto colon = text.rfind(':');
  BackendAddress out;
  if (!text.empty() && text.front() == '/' && (colon == std::string::npos || text.find('/', colon) != std::string::npos)) {
    out.host = text;  // a socket folder without a port
    return CheckSocketPath(std::move(out));
  }
  if (colon == std::string::npos || colon == 0) {
    return InvalidArgument("want host:port or a socket folder /path[:port], not '" + text + "'");
  }
  out.host = text.substr(0, colon);
  if (out.host.size() > 2 && out.host.front() == '[' && out.host.back() == ']') {
    out.host = out.host.substr(1, out.host.size() - 2);
  }
  const std::string port = text.substr(colon + 1);
  if (port.empty() || port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos ||
      std::stoi(port) == 0 || std::stoi(port) > 65535) {
    return InvalidArgument("bad port in '" + text + "'");
  }
  out.port = static_cast<uint16_t>(std::stoi(port));
  return CheckSocketPath(std::move(out));
}

// A worker: one io_context on one thread, and the sessions living there.
struct Worker {
  std::unordered_set<Session*> sessions;  // touched on `thread` only; outlives `io` and its sessions
  asio::io_context io{1};
  asio::executor_work_guard<asio::io_context::executor_type> guard = asio::make_work_guard(io);
  std::thread thread;
  // AT mode: the coordinator client living on `io` (AtServices::worker_coordinator); shut down
  // while `io` still runs, destroyed before it.
  std::shared_ptr<sdk::CoordinatorClient> coordinator;
};

class ProxyServer::Impl {
 public:
  explicit Impl(ProxyOptions options)
      : options_(std::move(options)), context_{options_, metrics_, cancels_, options_.at.get()} {}
  ~Impl() {
    Shutdown(std::chrono::milliseconds(0));
    acceptor_.reset();
    workers_.clear();  // sessions still held by stopped handlers go now, while mu_ exists
  }

  Status Start() {
    unsigned n = options_.workers ? options_.workers : std::max(1u, std::thread::hardware_concurrency());
    for (unsigned k = 0; k < n; ++k) workers_.push_back(std::make_unique<Worker>());
    acceptor_ = std::make_unique<tcp::acceptor>(workers_[0]->io);
    boost::system::error_code ec;
    auto address = asio::ip::make_address(options_.host, ec);
    if (ec) return InvalidArgument("bad listen host '" + options_.host + "': " + ec.message());
    tcp::endpoint endpoint(address, options_.port);
    acceptor_->open(endpoint.protocol(), ec);
    if (!ec) acceptor_->set_option(tcp::acceptor::reuse_address(true), ec);
    if (!ec) acceptor_->bind(endpoint, ec);
    if (!ec) acceptor_->listen(asio::socket_base::max_listen_connections, ec);
    if (ec) {
      return Unavailable("cannot listen on " + options_.host + ":" + std::to_string(options_.port) + ": " + ec.message());
    }
    port_ = acceptor_->local_endpoint().port();
    for (auto& w : workers_) {
      Worker* worker = w.get();
      worker->thread = std::thread([worker, poll = options_.busy_poll] { rpc::RunPolling(worker->io, poll); });
      if (options_.at && options_.at->worker_coordinator) {
        worker->coordinator =
            options_.at->worker_coordinator(std::make_shared<rpc::IoPool>(std::vector<asio::io_context*>{&worker->io}));
      }
    }
    asio::post(workers_[0]->io, [this] { Accept(); });
    running_ = true;
    return Status::Ok();
  }

  size_t Shutdown(std::chrono::milliseconds grace) {
    if (!running_) return 0;
    running_ = false;
    asio::post(workers_[0]->io, [this] {
      boost::system::error_code ignored;
      acceptor_->close(ignored);
    });
    const auto deadline = std::chrono::steady_clock::now() + grace;
    size_t ended = 0;
    {
      std::unique_lock lock(mu_);
      if (!idle_.wait_until(lock, deadline, [this] { return live_ == 0; })) ended = live_;
    }
    if (ended > 0) {
      spdlog::info("shutdown: ending {} session(s) still open after {} ms", ended, grace.count());
      for (auto& w : workers_) {
        Worker* worker = w.get();
        asio::post(worker->io, [worker] {
          std::vector<std::shared_ptr<Session>> alive;
          for (Session* s : worker->sessions) {
            if (auto held = s->weak_from_this().lock()) alive.push_back(std::move(held));
          }
          for (auto& s : alive) s->Terminate();
        });
      }
      std::unique_lock lock(mu_);
      idle_.wait_for(lock, std::chrono::seconds(5), [this] { return live_ == 0; });
    }
    for (auto& w : workers_) {
      if (w->coordinator) w->coordinator->Shutdown();  // its calls end on the still running worker
    }
    for (auto& w : workers_) w->guard.reset();
    for (auto& w : workers_) {
      w->io.stop();
      if (w->thread.joinable()) w->thread.join();
    }
    return ended;
  }

  uint16_t port() const { return port_; }
  const ProxyMetrics& metrics() const { return metrics_; }
  bool running() const { return running_; }

 private:
  void Accept() {
    Worker* target = workers_[next_++ % workers_.size()].get();
    acceptor_->async_accept(target->io, [this, target](boost::system::error_code ec, tcp::socket socket) {
      if (ec == asio::error::operation_aborted || !acceptor_->is_open()) return;
      if (ec) {
        // Out of descriptors and the like: try again shortly rather than spin.
        spdlog::warn("accept: {}", ec.message());
        auto timer = std::make_shared<asio::steady_timer>(workers_[0]->io, std::chrono::milliseconds(100));
        timer->async_wait([this, timer](boost::system::error_code) {
          if (acceptor_->is_open()) Accept();
        });
        return;
      }
      metrics_.connections_total.fetch_add(1, std::memory_order_relaxed);
      {
        std::lock_guard lock(mu_);
        ++live_;
      }
      asio::post(target->io, [this, target, s = std::move(socket)]() mutable {
        auto session = std::make_shared<Session>(std::move(s), context_, target->coordinator.get(),
                                                 [this, target](Session* ended) {
          target->sessions.erase(ended);
          std::lock_guard lock(mu_);
          if (--live_ == 0) idle_.notify_all();
        });
        target->sessions.insert(session.get());
        session->Start();
      });
      Accept();
    });
  }

  ProxyOptions options_;
  ProxyMetrics metrics_;
  CancelRegistry cancels_;
  SessionContext context_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::unique_ptr<tcp::acceptor> acceptor_;
  size_t next_ = 0;
  uint16_t port_ = 0;
  bool running_ = false;
  std::mutex mu_;
  std::condition_variable idle_;
  size_t live_ = 0;  // sessions not yet destroyed
};

ProxyServer::ProxyServer(ProxyOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {}
ProxyServer::~ProxyServer() = default;
Status ProxyServer::Start() { return impl_->Start(); }
uint16_t ProxyServer::port() const { return impl_->port(); }
const ProxyMetrics& ProxyServer::metrics() const { return impl_->metrics(); }
size_t ProxyServer::Shutdown(std::chrono::milliseconds grace) { return impl_->Shutdown(grace); }

}  // namespace dtx::sql_proxy
