#include "dtx/rpc/client.h"

#include <spdlog/spdlog.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>

#include <condition_variable>
#include <mutex>
#include <random>
#include <thread>

#include "connection.h"
#include "dtx/rpc/io_pool.h"

namespace dtx::rpc {
namespace asio = boost::asio;
using asio::ip::tcp;

namespace {
bool SplitAddress(const std::string& address, std::string& host, std::string& port) {
  auto colon = address.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == address.size()) return false;
  host = address.substr(0, colon);
  port = address.substr(colon + 1);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  return true;
}
}  // namespace

// One connection that the client keeps up: remade with backoff whenever it fails.
struct Slot {
  explicit Slot(asio::io_context& io) : io(io), reconnect_timer(io), connect_timer(io), resolver(io) {}
  asio::io_context& io;
  std::string address, host, port;
  asio::steady_timer reconnect_timer;
  asio::steady_timer connect_timer;
  tcp::resolver resolver;
  std::chrono::milliseconds backoff{0};
  std::shared_ptr<Connection> conn;  // guarded by Impl::mu
};

struct Client::Impl : std::enable_shared_from_this<Impl> {
  ClientOptions options;
  std::shared_ptr<const ServiceRegistry> services;
  std::shared_ptr<IoPool> pool;
  std::vector<std::unique_ptr<Slot>> slots;
  std::atomic<size_t> next{0};
  std::atomic<bool> stopping{false};

  mutable std::mutex mu;
  std::condition_variable live_changed;
  size_t live = 0;  // guarded by mu

  Connection::Options ConnectionOptions() const {
    return {.max_frame_size = options.max_frame_size,
            .max_pending_output = options.max_pending_output,
            .idle_timeout = {},
            .heartbeat_interval = options.heartbeat_interval,
            .heartbeat_failures = options.heartbeat_failures,
            .wire = options.wire,
            .learn_wire = false};
  }

  // On the slot's I/O thread.
  void Connect(Slot& slot) {
    if (stopping) return;
    auto self = shared_from_this();
    auto conn = std::make_shared<Connection>(
        slot.io, ConnectionOptions(), services,
        [self, &slot](const std::shared_ptr<Connection>& c, const Status& reason) { self->OnClosed(slot, c, reason); });
    {
      // Shutdown sets `stopping` before it collects the slots' connections under `mu`: checked
      // here under `mu`, a connection is either collected by it or never made.
      std::lock_guard lock(mu);
      if (stopping) return;
      slot.conn = conn;
    }
    slot.resolver.async_resolve(
        slot.host, slot.port, [self, &slot, conn](const boost::system::error_code& ec, tcp::resolver::results_type results) {
          if (conn->state() == Connection::State::kClosed) return;
          if (ec) return conn->Close(Unavailable("cannot resolve " + slot.address + ": " + ec.message()));
          slot.connect_timer.expires_after(self->options.connect_timeout);
          slot.connect_timer.async_wait([conn, &slot](const boost::system::error_code& ec) {
            if (!ec && conn->state() == Connection::State::kConnecting)
              conn->Close(Timeout("connecting to " + slot.address + " timed out"));
          });
          asio::async_connect(conn->socket(), results,
                              [self, &slot, conn](const boost::system::error_code& ec, const tcp::endpoint&) {
                                slot.connect_timer.cancel();
                                if (conn->state() == Connection::State::kClosed) return;
                                if (ec) return conn->Close(Unavailable("cannot connect to " + slot.address + ": " + ec.message()));
                                self->OnConnected(slot, conn);
                              });
        });
  }

  void OnConnected(Slot& slot, const std::shared_ptr<Connection>& conn) {
    slot.backoff = std::chrono::milliseconds(0);
    conn->Start();
    SPDLOG_DEBUG("rpc: connected to {}", slot.address);
    if (options.on_connect) options.on_connect(conn);
    std::lock_guard lock(mu);
    ++live;
    live_changed.notify_all();
  }

  void OnClosed(Slot& slot, const std::shared_ptr<Connection>& conn, const Status& reason) {
    {
      std::lock_guard lock(mu);
      if (slot.conn == conn) slot.conn = nullptr;
      if (conn->peer_address().size() > 0 && live > 0) --live;  // it had been started
      live_changed.notify_all();
    }
    if (stopping) return;
    const auto ceiling = std::max(options.reconnect_backoff_min, options.reconnect_backoff_max);
    slot.backoff = std::clamp(slot.backoff * 2, options.reconnect_backoff_min, ceiling);
    thread_local std::minstd_rand rng(std::random_device{}());
    auto delay = slot.backoff / 2 + std::chrono::milliseconds(rng() % (slot.backoff.count() / 2 + 1));
    SPDLOG_INFO("rpc: connection to {} lost ({}); reconnecting in {} ms", slot.address, reason.ToString(), delay.count());
    slot.reconnect_timer.expires_after(delay);
    slot.reconnect_timer.async_wait([self = shared_from_this(), &slot](const boost::system::error_code& ec) {
      if (!ec) self->Connect(slot);
    });
  }

  std::shared_ptr<Connection> Pick() {
    std::lock_guard lock(mu);
    const size_t n = slots.size();
    const size_t start = next.fetch_add(1, std::memory_order_relaxed);
    std::shared_ptr<Connection> connecting;
    for (size_t i = 0; i < n; ++i) {
      auto& c = slots[(start + i) % n]->conn;
      if (!c) continue;
      auto state = c->state();
      if (state == Connection::State::kOpen) return c;
      if (state == Connection::State::kConnecting && !connecting) connecting = c;
    }
    return connecting;  // a call on it waits in its buffer until it connects or fails
  }
};

Client::Client(ClientOptions options, std::shared_ptr<const ServiceRegistry> services) : impl_(std::make_shared<Impl>()) {
  auto& im = *impl_;
  im.options = std::move(options);
  im.services = std::move(services);
  im.pool = im.options.io_pool ? im.options.io_pool : std::make_shared<IoPool>(std::max(1u, im.options.io_threads));
  for (const auto& address : im.options.addresses) {
    for (unsigned i = 0; i < std::max(1u, im.options.connections_per_address); ++i) {
      auto slot = std::make_unique<Slot>(im.pool->Next());
      slot->address = address;
      if (!SplitAddress(address, slot->host, slot->port)) {
        SPDLOG_ERROR("rpc: ignoring bad address '{}' (want host:port)", address);
        continue;
      }
      im.slots.push_back(std::move(slot));
    }
  }
  for (auto& slot : im.slots) asio::post(slot->io, [self = impl_, s = slot.get()] { self->Connect(*s); });
}

Client::~Client() { Shutdown(std::chrono::milliseconds(0)); }

void Client::CallRaw(std::string_view service, std::string_view method, std::string body, const CallOptions& options,
                     RawCallback done) {
  if (impl_->stopping) return done(Cancelled("client is shut down"));
  auto conn = impl_->Pick();
  if (!conn) return done(Unavailable("no connection to any of the servers"));
  conn->CallRaw(service, method, std::move(body), options, std::move(done));
}

Status Client::WaitConnected(std::chrono::milliseconds timeout) {
  std::unique_lock lock(impl_->mu);
  if (impl_->live_changed.wait_for(lock, timeout, [&] { return impl_->live > 0; })) return Status::Ok();
  return Unavailable("no connection to any server after " + std::to_string(timeout.count()) + " ms");
}

size_t Client::live_connections() const {
  std::lock_guard lock(impl_->mu);
  return impl_->live;
}

std::shared_ptr<IoPool> Client::io_pool() const { return impl_->pool; }

void Client::Shutdown(std::chrono::milliseconds grace) {
  auto& im = *impl_;
  if (im.stopping.exchange(true)) return;
  std::vector<std::shared_ptr<Connection>> conns;
  {
    std::lock_guard lock(im.mu);
    for (auto& s : im.slots)
      if (s->conn) conns.push_back(s->conn);
  }
  for (auto& c : conns) c->Drain();
  const auto deadline = std::chrono::steady_clock::now() + grace;
  auto all_closed = [&] {
    for (auto& c : conns)
      if (c->state() != Connection::State::kClosed) return false;
    return true;
  };
  while (!all_closed() && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  for (auto& c : conns) c->Close(Cancelled("client shut down"));
  for (auto& s : im.slots) {
    asio::post(s->io, [self = impl_, s = s.get()] {
      s->reconnect_timer.cancel();
      s->connect_timer.cancel();
      s->resolver.cancel();
    });
  }
  if (!im.options.io_pool) {
    // Our own threads: let the closes and cancels run, then stop them.
    const auto hard = std::chrono::steady_clock::now() + std::chrono::seconds(1);
    while (!all_closed() && std::chrono::steady_clock::now() < hard) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    im.pool->Stop();
  }
}

}  // namespace dtx::rpc
