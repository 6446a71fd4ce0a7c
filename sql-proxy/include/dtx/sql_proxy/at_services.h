// AtServices: what the sessions of dtx-sql-proxy share in AT mode (--coordinator): the
// coordinator client (sessions use its non-blocking calls) and the AT settings and primary-key
// catalog of each --resource database.
//
// Ownership: main() builds it and hands a shared_ptr to ProxyOptions::at; it outlives the proxy.
// The proxy builds and shuts down the per-worker clients (worker_coordinator) itself.
// Thread-safety: every member may be used from any thread (the Catalog and CoordinatorClient are
// thread-safe; the maps are not changed after startup).
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "dtx/at/at_branch.h"
#include "dtx/at/catalog.h"
#include "dtx/sdk/coordinator_client.h"

namespace dtx::sql_proxy {

// One --resource database.
struct AtResource {
  at::AtOptions options;  // resource_id = the database name
  std::shared_ptr<at::Catalog> catalog = std::make_shared<at::Catalog>();
};

struct AtServices {
  std::shared_ptr<sdk::CoordinatorClient> coordinator;  // null: no --coordinator (dtx.* refused)
  // Builds a coordinator client on one proxy worker's io_context (the pool borrows it): the
  // sessions of that worker make their calls through it, so that a call and its answer stay on
  // the session's thread. Null: every session uses `coordinator`.
  std::function<std::shared_ptr<sdk::CoordinatorClient>(std::shared_ptr<rpc::IoPool>)> worker_coordinator;
  std::map<std::string, AtResource> resources;          // by database name
  bool check_unbound_writes = true;
  std::string default_tx_name = "sql";
  std::chrono::milliseconds default_tx_timeout{60'000};

  const AtResource* Find(const std::string& database) const {
    auto it = resources.find(database);
    return it == resources.end() ? nullptr : &it->second;
  }
};

}  // namespace dtx::sql_proxy
