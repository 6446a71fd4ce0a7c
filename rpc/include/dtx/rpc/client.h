// Client: keeps connections to a list of servers and sends calls over them.
//
// Each address gets `connections_per_address` connections, made at construction and remade
// with exponential backoff whenever one fails or closes. A call goes to the next live
// connection in turn; with none live it fails at once with Unavailable. Idle connections send
// heartbeats; one that misses `heartbeat_failures` of them in a row is closed and remade.
//
// The Client can also answer calls its servers make back over the same connections: pass a
// ServiceRegistry (the coordinator pushes phase 2 to participants this way).
//
// Thread-safety: all methods may be called from any thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "dtx/common/status.h"
#include "dtx/rpc/bolt_codec.h"
#include "dtx/rpc/channel.h"
#include "dtx/rpc/service_registry.h"
#include "dtx/rpc/sofa_message.h"

namespace dtx::rpc {

class IoPool;

struct ClientOptions {
  std::vector<std::string> addresses;  // "host:port"
  WireFormat wire;                      // Bolt v1, or v2 with or without CRC
  unsigned connections_per_address = 1;
  unsigned io_threads = 1;
  // Share the I/O threads of another Client instead of starting io_threads of its own.
  std::shared_ptr<IoPool> io_pool;
  size_t max_frame_size = kDefaultMaxFrameSize;
  std::chrono::milliseconds connect_timeout{3000};
  std::chrono::milliseconds heartbeat_interval{15'000};  // 0: no heartbeats
  unsigned heartbeat_failures = 3;
  std::chrono::milliseconds reconnect_backoff_min{100};
  std::chrono::milliseconds reconnect_backoff_max{10'000};
  size_t max_pending_output = 64 * 1024 * 1024;
  // Runs on the I/O thread each time a connection is (re)established, with that connection, so
  // that per-connection state (a participant's registration, say) can be sent over it first.
  // Must not block.
  std::function<void(const std::shared_ptr<Channel>& connection)> on_connect;
};

class Client : public Channel {
 public:
  explicit Client(ClientOptions options, std::shared_ptr<const ServiceRegistry> services = nullptr);
  ~Client() override;  // Shutdown(0)
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  void CallRaw(std::string_view service, std::string_view method, std::string body,
               const CallOptions& options, RawCallback done) override;

  // Waits until at least one connection is up; Unavailable after `timeout`.
  Status WaitConnected(std::chrono::milliseconds timeout);
  size_t live_connections() const;
  // The I/O threads, to share with other Clients.
  std::shared_ptr<IoPool> io_pool() const;

  // Stops reconnecting, waits at most `grace` for calls in flight, then closes every connection
  // (failing what is still pending with Cancelled).
  void Shutdown(std::chrono::milliseconds grace = std::chrono::seconds(5));

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace dtx::rpc
