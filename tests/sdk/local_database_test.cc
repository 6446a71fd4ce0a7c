// LocalDatabase on SQLite and PostgreSQL: the same SQL, placeholders, commit and rollback.
#include <gtest/gtest.h>

#include <thread>

#include "backends.h"

namespace dtx::sdk::testing {
namespace {

using LocalDatabaseTest = BackendTest;

TEST_P(LocalDatabaseTest, CommitKeepsRollbackAndDestructionDrop) {
  ASSERT_TRUE(InLocalTx(*db_, [](LocalTx& tx) -> Status {
                return tx.Exec("CREATE TABLE t (id BIGINT PRIMARY KEY, name TEXT, v BIGINT)").status();
              }).ok());
  ASSERT_TRUE(InLocalTx(*db_, [](LocalTx& tx) -> Status {
                return tx.Exec("INSERT INTO t (id, name, v) VALUES (?, ?, ?)", {int64_t{1}, std::string("it's ?"), int64_t{10}})
                    .status();
              }).ok());
  {
    auto tx = db_->Begin();
    ASSERT_TRUE(tx.ok());
    ASSERT_TRUE((*tx)->Exec("UPDATE t SET v = v + ? WHERE id = ?", {int64_t{5}, int64_t{1}}).ok());
    ASSERT_TRUE((*tx)->Rollback().ok());
  }
  {
    auto tx = db_->Begin();
    ASSERT_TRUE(tx.ok());
    ASSERT_TRUE((*tx)->Exec("UPDATE t SET v = v + 100 WHERE id = 1").ok());
    // destroyed without Commit: rolled back
  }
  Status bad = InLocalTx(*db_, [](LocalTx& tx) -> Status {
    EXPECT_TRUE(tx.Exec("UPDATE t SET v = 0").ok());
    return FailedPrecondition("business says no");
  });
  EXPECT_EQ(bad.code(), StatusCode::kFailedPrecondition);

  auto tx = db_->Begin();
  ASSERT_TRUE(tx.ok());
  auto rows = (*tx)->Query("SELECT id, name, v, NULL FROM t WHERE name = ?", {std::string("it's ?")});
  ASSERT_TRUE(rows.ok()) << rows.status();
  ASSERT_EQ(rows->size(), 1u);
  EXPECT_EQ(AsInt((*rows)[0][0]), 1);
  EXPECT_EQ(std::get<std::string>((*rows)[0][1]), "it's ?");
  EXPECT_EQ(AsInt((*rows)[0][2]), 10);
  EXPECT_TRUE(std::holds_alternative<std::nullptr_t>((*rows)[0][3]));
  EXPECT_EQ(GetParam() == Dialect::kSqlite, (*tx)->sqlite() != nullptr);
  EXPECT_EQ(GetParam() == Dialect::kPostgres, (*tx)->postgres() != nullptr);
  ASSERT_TRUE((*tx)->Commit().ok());
  EXPECT_EQ((*tx)->Commit().code(), StatusCode::kFailedPrecondition) << "a finished transaction says so";
}

TEST_P(LocalDatabaseTest, BadSqlIsAnErrorAndTheConnectionStaysUsable) {
  for (int i = 0; i < 3; ++i) {
    auto tx = db_->Begin();
    ASSERT_TRUE(tx.ok()) << tx.status();
    EXPECT_FALSE((*tx)->Exec("SELEKT 1").ok());
    EXPECT_FALSE((*tx)->Exec("SELECT ?", {}).ok()) << "a missing parameter is an error";
  }
  auto tx = db_->Begin();
  ASSERT_TRUE(tx.ok());
  auto r = (*tx)->Query("SELECT 1 + 1");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(AsInt((*r)[0][0]), 2);
}

TEST_P(LocalDatabaseTest, ConcurrentWritersQueueInsteadOfFailing) {
  ASSERT_TRUE(InLocalTx(*db_, [](LocalTx& tx) -> Status {
                DTX_RETURN_IF_ERROR(tx.Exec("CREATE TABLE c (id BIGINT PRIMARY KEY, n BIGINT)").status());
                return tx.Exec("INSERT INTO c VALUES (1, 0)").status();
              }).ok());
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 25; ++i) {
        Status s = InLocalTx(*db_, [](LocalTx& tx) { return tx.Exec("UPDATE c SET n = n + 1 WHERE id = 1").status(); });
        if (!s.ok()) ++failures;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures, 0);
  auto tx = db_->Begin();
  ASSERT_TRUE(tx.ok());
  EXPECT_EQ(AsInt((*(*tx)->Query("SELECT n FROM c"))[0][0]), 100);
}

TEST(LocalDatabase, OpenRejectsWhatItCannotOpen) {
  EXPECT_FALSE(OpenLocalDatabase("").ok());
  EXPECT_FALSE(OpenLocalDatabase("sqlite:").ok());
  EXPECT_FALSE(OpenLocalDatabase("/nonexistent-dir/x/y.db").ok());
  auto pg = OpenLocalDatabase("postgresql://nobody:secret@127.0.0.1:1/none?connect_timeout=2");
  ASSERT_FALSE(pg.ok());
  EXPECT_EQ(pg.status().message().find("secret"), std::string_view::npos) << pg.status();
}

INSTANTIATE_TEST_SUITE_P(Backends, LocalDatabaseTest, ::testing::Values(Dialect::kSqlite, Dialect::kPostgres),
                         BackendName);

}  // namespace
}  // namespace dtx::sdk::testing
