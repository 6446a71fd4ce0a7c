// The PostgreSQL store harness: a fresh schema of its own in the server named by DTX_TEST_PG_URI,
// dropped again when the harness goes.
#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <random>

#include "dtx/log/postgres_log_store.h"
#include "store_harness.h"

namespace dtx::log::testing {
namespace {

class PostgresHarness final : public StoreHarness {
 public:
  explicit PostgresHarness(std::string conninfo) : conninfo_(std::move(conninfo)) {
    static std::atomic<int> counter{0};
    // Unique across processes (pid) and machines sharing a server (random).
    schema_ = "dtx_test_" + std::to_string(getpid()) + "_" + std::to_string(counter++) + "_" +
              std::to_string(std::random_device{}() % 1000000);
  }
  ~PostgresHarness() override {
    PGconn* c = PQconnectdb(conninfo_.c_str());
    if (PQstatus(c) == CONNECTION_OK) {
      PGresult* r =
          PQexec(c, ("SET client_min_messages = warning; DROP SCHEMA IF EXISTS \"" + schema_ + "\" CASCADE").c_str());
      if (PQresultStatus(r) != PGRES_COMMAND_OK) ADD_FAILURE() << "dropping " << schema_ << ": " << PQerrorMessage(c);
      PQclear(r);
    }
    PQfinish(c);
  }

  std::unique_ptr<LogStore> Open() override {
    auto store = PostgresLogStore::Open({.conninfo = conninfo_, .schema = schema_});
    EXPECT_TRUE(store.ok()) << store.status();
    if (!store.ok()) return nullptr;
    return std::move(*store);
  }
  bool durable() const override { return true; }
  std::string name() const override { return "postgres"; }

 private:
  std::string conninfo_;
  std::string schema_;
};

}  // namespace

std::unique_ptr<StoreHarness> MakePostgresHarness() {
  const char* uri = std::getenv("DTX_TEST_PG_URI");
  if (!uri || !*uri) return nullptr;
  return std::make_unique<PostgresHarness>(uri);
}

}  // namespace dtx::log::testing
