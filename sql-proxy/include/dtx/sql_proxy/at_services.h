// AtServices: what the sessions of dtx-sql-proxy share in AT mode (--coordinator): the
// coordinator client, the AT settings and primary-key catalog of each --resource database, and
// a pool of threads for the blocking coordinator calls (Begin/Commit/Rollback, RegisterBranch,
// ReportBranch, QueryLocks), which never run on an I/O thread.
//
// Ownership: main() builds it and hands a shared_ptr to ProxyOptions::at; it outlives the proxy.
// Thread-safety: every member may be used from any thread (the Catalog and CoordinatorClient are
// thread-safe; the maps are not changed after startup).
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "dtx/at/at_branch.h"
#include "dtx/at/catalog.h"
#include "dtx/sdk/coordinator_client.h"

namespace dtx::sql_proxy {

// Threads for blocking calls, grown on demand: a task never waits behind others that block (a
// lock retry, a coordinator that is down) while a thread could run it. Up to `max_threads`; a
// thread idle for `idle` exits, down to `min_threads`.
class BlockingPool {
 public:
  BlockingPool(unsigned min_threads, unsigned max_threads,
               std::chrono::milliseconds idle = std::chrono::seconds(30));
  ~BlockingPool();  // runs what is queued, then joins
  BlockingPool(const BlockingPool&) = delete;
  BlockingPool& operator=(const BlockingPool&) = delete;
  void Post(std::function<void()> task);
  unsigned threads() const;  // alive now

 private:
  void Work();

  const unsigned min_threads_, max_threads_;
  const std::chrono::milliseconds idle_;
  mutable std::mutex mu_;
  std::condition_variable cv_, exited_;
  std::deque<std::function<void()>> tasks_;
  bool stop_ = false;
  unsigned alive_ = 0, waiting_ = 0;
};

// One --resource database.
struct AtResource {
  at::AtOptions options;  // resource_id = the database name
  std::shared_ptr<at::Catalog> catalog = std::make_shared<at::Catalog>();
};

struct AtServices {
  std::shared_ptr<sdk::CoordinatorClient> coordinator;  // null: no --coordinator (dtx.* refused)
  std::map<std::string, AtResource> resources;          // by database name
  bool check_unbound_writes = true;
  std::string default_tx_name = "sql";
  std::chrono::milliseconds default_tx_timeout{60'000};
  // Coordinator calls block a thread for a round trip, lock retries for up to --lock-retry-ms.
  std::unique_ptr<BlockingPool> pool = std::make_unique<BlockingPool>(4, 4096);

  const AtResource* Find(const std::string& database) const {
    auto it = resources.find(database);
    return it == resources.end() ? nullptr : &it->second;
  }
};

}  // namespace dtx::sql_proxy
