// ProxyServer: dtx-sql-proxy's listener. Every client connection gets one session with one
// connection of its own to the PostgreSQL server chosen by the startup's database name; the
// session relays the v3 protocol both ways (authentication included, so the proxy never sees a
// password), answers the dtx.xid statements itself, and forwards CancelRequests to the right
// server by the key it handed out. With ProxyOptions::at (AT mode) the writes of sessions bound
// to a global transaction become AT branches (see session.h and docs/sql-proxy.md).
//
// Threads: `workers` I/O threads, each running its own io_context; a session lives on one of them
// for its whole life (no locks on the relay path).
// Thread-safety: Start, Shutdown from one thread; port() and metrics() from any.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "dtx/common/status.h"
#include "dtx/sql_proxy/pg_message.h"
#include "dtx/sql_proxy/proxy_metrics.h"
#include "dtx/sql_proxy/tls.h"

namespace dtx::sql_proxy {

struct AtServices;  // dtx/sql_proxy/at_services.h

// A PostgreSQL server: a TCP host and port, or, when `host` is an absolute path, the folder of
// the server's Unix-domain socket (libpq's convention: the socket is <host>/.s.PGSQL.<port>).
// A proxy on the database's own machine relays much cheaper through the Unix socket.
struct BackendAddress {
  std::string host = "127.0.0.1";
  uint16_t port = 5432;
  bool unix_socket() const { return !host.empty() && host.front() == '/'; }
  std::string SocketPath() const { return host + "/.s.PGSQL." + std::to_string(port); }
  std::string ToString() const { return unix_socket() ? SocketPath() : host + ":" + std::to_string(port); }
};

// "host:port" (IPv6 as "[::1]:5432"), or a socket folder "/path" or "/path:port" (port 5432 if
// not given); an error says why not.
Result<BackendAddress> ParseBackendAddress(const std::string& text);

struct ProxyOptions {
  std::string host = "0.0.0.0";
  uint16_t port = 6433;  // 0: an ephemeral port, see port()
  BackendAddress default_backend;                  // for databases not in `backends`
  std::map<std::string, BackendAddress> backends;  // database name -> server
  unsigned workers = 0;                            // 0: one per core
  // How long a worker with nothing ready polls its sockets before it sleeps (0: it sleeps at once).
  // For a proxy whose workers have cores of their own: it saves the wake-up per relayed message,
  // at the price of a busy core; on cores shared with the server it takes CPU the server needs.
  std::chrono::microseconds busy_poll{0};
  size_t max_message_size = kDefaultMaxMessage;    // a client message over this ends its session
  std::chrono::milliseconds connect_timeout{5000};
  // A bare BEGIN in an idle session (IsPlainBegin; through the extended protocol, a run of
  // Parse/Bind/Describe/Execute/Sync that only does that) is answered by the proxy and goes to the
  // server in front of the session's next message, in the same write: one round trip less per
  // transaction block. (Such a BEGIN cannot fail; if the server refuses it all the same, the
  // session ends with FATAL.)
  bool defer_begin = true;
  // AT mode (--coordinator): shared by the sessions; null turns it off.
  std::shared_ptr<AtServices> at;
  // TLS for clients that ask for it (SSLRequest); null: they are answered 'N' and go on in the
  // clear. tls_required: a session that did not set up TLS is refused (FATAL 28000).
  std::shared_ptr<TlsServerContext> tls;
  bool tls_required = false;
  // TLS toward the PostgreSQL servers (LoadTlsClientContext); null: none (ServerTlsMode::kDisable).
  std::shared_ptr<TlsClientContext> server_tls;
};

class ProxyServer {
 public:
  explicit ProxyServer(ProxyOptions options);
  ~ProxyServer();  // Shutdown(0) if still running.
  ProxyServer(const ProxyServer&) = delete;
  ProxyServer& operator=(const ProxyServer&) = delete;

  // Binds, listens and starts the workers; an error (port taken, bad host) leaves it stopped.
  Status Start();
  // The port it listens on (the chosen one when ProxyOptions::port is 0); 0 before Start.
  uint16_t port() const;
  const ProxyMetrics& metrics() const;

  // Stops accepting at once, waits up to `grace` for the open sessions to end by themselves, then
  // ends the rest (each gets FATAL 57P01 when it sits between messages) and stops the workers.
  // Returns the number of sessions that had to be ended. Idempotent.
  size_t Shutdown(std::chrono::milliseconds grace);

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace dtx::sql_proxy
