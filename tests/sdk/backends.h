// The two database backends a participant may use, for parameterized tests: a SQLite file in a
// temp folder, and a schema of its own in the DTX_TEST_PG_URI server.
#pragma once

#include <gtest/gtest.h>

#include <cstdlib>
#include <memory>

#include "dtx/sdk/local_database.h"
#include "sdk_harness.h"

namespace dtx::sdk::testing {

class BackendTest : public ::testing::TestWithParam<Dialect> {
 protected:
  void SetUp() override {
    if (GetParam() == Dialect::kSqlite) {
      uri_ = "sqlite:" + dir_.file("test.db");
    } else {
      auto base = PostgresUri();
      if (!base) {
        if (std::getenv("DTX_REQUIRE_POSTGRES")) FAIL() << "DTX_TEST_PG_URI is not set";
        GTEST_SKIP() << "DTX_TEST_PG_URI is not set: run through scripts/with-postgres.sh";
      }
      schema_ = std::make_unique<PgSchema>(*base);
      uri_ = schema_->uri();
    }
    auto db = OpenLocalDatabase(uri_);
    ASSERT_TRUE(db.ok()) << db.status();
    db_ = *db;
  }

  TempDir dir_;
  std::unique_ptr<PgSchema> schema_;
  std::string uri_;
  std::shared_ptr<LocalDatabase> db_;
};

inline std::string BackendName(const ::testing::TestParamInfo<Dialect>& info) {
  return info.param == Dialect::kSqlite ? "Sqlite" : "Postgres";
}

}  // namespace dtx::sdk::testing
