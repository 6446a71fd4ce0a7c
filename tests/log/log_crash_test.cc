// Crash safety: a writer process is SIGKILLed at a random moment, many times over; after each
// kill the reopened store holds every batch acknowledged before the kill and no partial batch.
// DTX_CRASH_ROUNDS sets the number of kills (default 6; bench/ runs many more).
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <random>
#include <set>
#include <thread>

#include "crash_store.h"
#include "subprocess.h"

namespace dtx::log {
namespace {

int Rounds() {
  const char* env = std::getenv("DTX_CRASH_ROUNDS");
  return env ? std::atoi(env) : 6;
}

// Kills writers `rounds` times; `args` select the store. Checks the store after each kill.
void KillAndCheck(const std::vector<std::string>& args, const std::string& sqlite_path, const std::string& pg_conninfo,
                  const std::string& pg_schema) {
  std::mt19937 rng(std::random_device{}());
  size_t total_acked = 0;
  std::set<std::string> acked_so_far;
  for (int round = 0; round < Rounds(); ++round) {
    std::vector<std::string> argv = {DTX_CRASH_WRITER};
    argv.insert(argv.end(), args.begin(), args.end());
    dtx::testing::Subprocess writer(argv);
    ASSERT_TRUE(writer.WaitForLine("READY", std::chrono::seconds(20))) << "the writer did not start";
    ASSERT_TRUE(writer.WaitForLine("ACK ", std::chrono::seconds(20))) << "the writer acknowledged nothing";
    std::this_thread::sleep_for(std::chrono::milliseconds(std::uniform_int_distribution<int>(20, 400)(rng)));
    writer.Stop(SIGKILL);
    for (const auto& line : writer.DrainLines())
      if (line.rfind("ACK ", 0) == 0) acked_so_far.insert(line.substr(4));

    auto store = testing::OpenCrashStore(sqlite_path, pg_conninfo, pg_schema);
    ASSERT_TRUE(store.ok()) << store.status();
    auto all = (*store)->LoadAll();
    ASSERT_TRUE(all.ok()) << all.status();
    std::set<std::string> present;
    for (const auto& s : *all) {
      present.insert(s.global.xid);
      ASSERT_EQ(s.branches.size(), 2u) << "partial batch " << s.global.xid;
      ASSERT_EQ(s.locks.size(), 2u) << "partial batch " << s.global.xid;
    }
    for (const auto& xid : acked_so_far) ASSERT_TRUE(present.count(xid)) << xid << " was acknowledged and is lost";
    total_acked = acked_so_far.size();
    (*store)->Close();
  }
  std::cout << "crash rounds: " << Rounds() << ", acknowledged batches checked: " << total_acked << "\n";
  EXPECT_GT(total_acked, 0u);
}

TEST(LogCrash, SqliteKeepsEveryAcknowledgedBatchAcrossKills) {
  auto dir = std::filesystem::temp_directory_path() / ("dtx-crash-" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "dtx.db").string();
  KillAndCheck({"--sqlite", path}, path, "", "");
  std::filesystem::remove_all(dir);
}

TEST(LogCrash, PostgresKeepsEveryAcknowledgedBatchAcrossKills) {
  const char* uri = std::getenv("DTX_TEST_PG_URI");
  if (!uri) {
    if (std::getenv("DTX_REQUIRE_POSTGRES")) FAIL() << "DTX_TEST_PG_URI is not set";
    GTEST_SKIP() << "DTX_TEST_PG_URI is not set: run through scripts/test.sh for a PostgreSQL server";
  }
  const std::string schema = "crash_" + std::to_string(getpid());
  KillAndCheck({"--postgres", uri, "--schema", schema}, "", uri, schema);
}

}  // namespace
}  // namespace dtx::log
