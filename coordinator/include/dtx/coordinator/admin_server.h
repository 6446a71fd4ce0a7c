// AdminServer: the coordinator's HTTP admin (HTTP/1.1, keep-alive), for operators and monitoring.
//
//   GET  /healthz                                   200 "ok" while the process runs
//   GET  /readyz                                    200 "ready" once recovered, else 503 "recovering"
//   GET  /metrics                                   Prometheus text format
//   GET  /api/v1/transactions?status=&begun_before_ms=&after=&limit=   a page of transactions
//   GET  /api/v1/transactions/{xid}                 one transaction with its branches and locks
//   POST /api/v1/transactions/{xid}/retry           operator actions on a failed transaction;
//   POST /api/v1/transactions/{xid}/force-commit    each needs an X-Operator header, which the
//   POST /api/v1/transactions/{xid}/force-rollback  coordinator's audit line names
//
// A transaction is {xid, status (a log::GlobalStatusName), status_code, name, application,
// timeout_ms, begin_time_ms, owner_node, updated_time_ms}; the list answers
// {"transactions": [...], "next_after": "<xid>" or "" on the last page}; one transaction adds
// "branches" [{branch_id, resource_id, type, status, status_code, lock_keys, client_id,
// registered_time_ms, application_data_size}] and "locks" [{row_key, branch_id}]. The list's
// status filter takes names (any case) or numbers, comma-separated; limit defaults to 100, at
// most 1000. Errors answer {"error": "..."}: 400 bad input or no X-Operator, 404 no such
// transaction or endpoint, 405 wrong method, 409 the action does not fit the transaction's status,
// 413 a body over 64 KiB, 503 still recovering, 500 the log failed.
//
// It serves on one thread of its own: the handlers that read the log block that thread while the
// store answers, never an RPC thread. It has no authentication, which is why it listens on
// loopback unless told otherwise.
//
// Thread-safety: Start and Stop from one thread at a time; port() from any.
// Ownership: `coordinator` and `metrics` are borrowed and must outlive this object. The
// constructor adds the gauge dtx_active_transactions to `metrics`, which reads `coordinator`, so
// `metrics` must not be rendered after `coordinator` is gone, and one AdminServer per Metrics.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "dtx/common/status.h"
#include "dtx/coordinator/coordinator.h"
#include "dtx/coordinator/metrics.h"

namespace dtx::coordinator {

struct AdminOptions {
  std::string host = "127.0.0.1";
  uint16_t port = 7091;  // 0: an ephemeral port, see port()
};

class AdminServer {
 public:
  // REQUIRES: called before `metrics` is rendered by anyone (it registers a gauge).
  AdminServer(AdminOptions options, Coordinator& coordinator, Metrics& metrics);
  ~AdminServer();  // Stops.
  AdminServer(const AdminServer&) = delete;
  AdminServer& operator=(const AdminServer&) = delete;

  // Binds, listens and starts serving; an error (the port is taken, a bad host) leaves it stopped.
  Status Start();
  // The port it listens on (the chosen one when AdminOptions::port is 0); 0 before Start.
  uint16_t port() const;
  // Stops accepting, lets requests being handled finish, closes every connection. Idempotent.
  void Stop();

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace dtx::coordinator
