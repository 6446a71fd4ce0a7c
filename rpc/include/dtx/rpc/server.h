// Server: accepts Bolt connections and answers SOFARPC calls from a ServiceRegistry.
//
// Connections are spread over a pool of I/O threads; each connection lives on one thread.
// A malformed, truncated or oversized frame closes that connection alone, with a log line.
// A connection that sends nothing (not even a heartbeat) for idle_timeout is closed.
//
// Thread-safety: Start and Shutdown from one controlling thread; the rest from any thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "dtx/common/status.h"
#include "dtx/rpc/bolt_codec.h"
#include "dtx/rpc/channel.h"
#include "dtx/rpc/service_registry.h"

namespace dtx::rpc {

struct ServerOptions {
  std::string host = "0.0.0.0";
  uint16_t port = 0;        // 0: an ephemeral port, see Server::port()
  unsigned io_threads = 0;  // 0: one per core
  // How long an I/O thread with nothing ready polls before it sleeps (see RunPolling); for a
  // server whose I/O threads have cores of their own.
  std::chrono::microseconds busy_poll{0};
  size_t max_frame_size = kDefaultMaxFrameSize;
  std::chrono::milliseconds idle_timeout{90'000};  // 0: never
  // Output queued for a peer that does not read; past this the connection is closed.
  size_t max_pending_output = 64 * 1024 * 1024;
  // Told of every connection as it opens and closes (on its I/O thread; must not block).
  std::function<void(const std::shared_ptr<Channel>& peer, const std::string& address)> on_connect;
  std::function<void(const std::shared_ptr<Channel>& peer, const std::string& address)> on_disconnect;
};

class Server {
 public:
  Server(ServerOptions options, std::shared_ptr<const ServiceRegistry> services);
  ~Server();  // Shutdown(0) if still running
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds, listens and starts the I/O threads.
  Status Start();
  // The bound port. REQUIRES: Start() succeeded.
  uint16_t port() const;
  size_t connection_count() const;

  // Stops accepting; requests already received run to their answer and are written out, new
  // requests on open connections are refused with an error; then every connection is closed.
  // Waits at most `grace` for in-flight calls.
  void Shutdown(std::chrono::milliseconds grace = std::chrono::seconds(10));

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace dtx::rpc
