// ProxyMetrics: what dtx-sql-proxy counts, rendered in the Prometheus text format for /metrics.
// Sessions add their byte and message counts once per socket read, not per message.
//
// Thread-safety: every member is a relaxed atomic; Render() may run beside updates.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>

namespace dtx::sql_proxy {

struct ProxyMetrics {
  std::atomic<uint64_t> connections_total{0};      // TCP connections accepted (sessions and cancel requests)
  std::atomic<uint64_t> sessions_total{0};         // startup messages relayed to a server
  std::atomic<uint64_t> sessions_tls{0};           // client connections that set up TLS
  std::atomic<uint64_t> sessions_server_tls{0};    // server connections that set up TLS (--server-tls)
  std::atomic<int64_t> sessions_active{0};         // client connections open now
  std::atomic<uint64_t> bytes_client_to_server{0};
  std::atomic<uint64_t> bytes_server_to_client{0};
  std::atomic<uint64_t> messages_client_to_server{0};
  std::atomic<uint64_t> messages_server_to_client{0};
  std::atomic<uint64_t> server_error_responses{0};  // ErrorResponse messages relayed from PostgreSQL
  std::atomic<uint64_t> auth_failures{0};           // sessions whose server refused the startup
  std::atomic<uint64_t> cancel_requests{0};
  std::atomic<uint64_t> cancel_requests_unmatched{0};  // no session with that key
  std::atomic<uint64_t> xid_commands{0};            // SET/RESET/SHOW dtx.xid answered by the proxy
  std::atomic<uint64_t> xid_comment_statements{0};  // statements bound by a leading dtx.xid comment
  std::atomic<uint64_t> begins_held{0};             // BEGINs answered by the proxy, sent with the next message
  // Errors that ended a session or refused it.
  std::atomic<uint64_t> errors_client_protocol{0};  // malformed or oversized messages from a client
  std::atomic<uint64_t> errors_tls{0};  // failed TLS handshakes, and clients without TLS when it is required
  std::atomic<uint64_t> errors_backend_connect{0};  // the server could not be reached
  std::atomic<uint64_t> errors_backend_lost{0};     // the server closed a session's connection unexpectedly
  std::atomic<uint64_t> errors_client_lost{0};      // a client went away in the middle of a message
  // AT mode (--coordinator).
  std::atomic<uint64_t> at_global_begins{0};        // SELECT dtx.begin() answered
  std::atomic<uint64_t> at_global_commits{0};       // dtx.commit() that committed
  std::atomic<uint64_t> at_global_rollbacks{0};     // dtx.rollback(), and dtx.commit() that ended rolled back
  std::atomic<uint64_t> at_statements{0};           // writes of bound sessions recorded for undo
  std::atomic<uint64_t> at_branches_committed{0};   // local transactions committed as AT branches
  std::atomic<uint64_t> at_branches_failed{0};      // ... rolled back at COMMIT (lock conflict, coordinator down)
  std::atomic<uint64_t> at_refusals{0};             // statements refused or failed by the proxy
  std::atomic<uint64_t> at_unbound_checks{0};       // unbound writes checked against the global locks

  std::string Render() const;
};

}  // namespace dtx::sql_proxy
