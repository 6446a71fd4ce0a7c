// Helpers for the AT engine's tests: a schema of the test's own in the DTX_TEST_PG_URI server,
// and a driver that runs AtBranch steps on a libpq connection the way the proxy session runs
// them on its backend connection.
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "dtx/at/at_branch.h"
#include "dtx/at/pg_connection.h"
#include "dtx/sdk/coordinator_client.h"
#include "sdk_harness.h"

namespace dtx::at::testing {

// Runs one statement: every step on `conn`, and returns what the client would see (the hidden
// columns stripped), or the error the client would get.
Result<QueryResult> RunStatement(PgConnection& conn, AtBranch& branch, const std::string& sql, QueryParams params = {},
                                 sdk::CoordinatorClient* client = nullptr);
// The session's COMMIT: Register, undo-log insert, COMMIT, Finish (ROLLBACK on failure).
Status CommitBranch(PgConnection& conn, AtBranch& branch, sdk::CoordinatorClient& client);
// COMMIT without a coordinator: the undo row under `branch_id`, then COMMIT.
Status CommitWithoutCoordinator(PgConnection& conn, const AtBranch& branch, int64_t branch_id);

class AtTest : public ::testing::Test {
 protected:
  void SetUp() override;
  // Runs SQL on the test's own connection; fails the test on error.
  QueryResult Exec(const std::string& sql);
  std::unique_ptr<PgConnection> Connect();
  // Every row of `table` as row_to_json text, sorted: for comparing whole tables.
  std::vector<std::string> Snapshot(const std::string& table);
  int64_t Count(const std::string& sql);

  std::unique_ptr<sdk::testing::PgSchema> schema_;
  std::unique_ptr<PgConnection> conn_;
  std::shared_ptr<Catalog> catalog_ = std::make_shared<Catalog>();
  AtOptions options_;
};

}  // namespace dtx::at::testing
