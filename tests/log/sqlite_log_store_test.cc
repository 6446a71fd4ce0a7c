// SqliteLogStore under failing disks and power loss (through the fault-injecting SQLite VFS).
#include "dtx/log/sqlite_log_store.h"

#include <gtest/gtest.h>
#include <sqlite3.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <functional>
#include <future>
#include <mutex>
#include <thread>

#include "dtx/log/fault_injection.h"
#include "dtx/log/memory_log_store.h"

namespace dtx::log {
namespace {

GlobalRecord Global(const std::string& xid) {
  GlobalRecord g;
  g.xid = xid;
  g.name = "t";
  g.begin_time_ms = 1;
  return g;
}

Batch BranchBatch(const std::string& xid, int64_t branch) {
  BranchRecord b;
  b.xid = xid;
  b.branch_id = branch;
  b.resource_id = "db1";
  b.lock_keys = "db1:t:" + std::to_string(branch);
  Batch batch;
  batch.Insert(Global(xid)).Insert(b).Lock(xid, branch, {b.lock_keys});
  return batch;
}

class SqliteFaults : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("dtx-sqlite-faults-" + std::to_string(getpid()) + "-" +
                                                     ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    vfs_.Reset();
  }
  void TearDown() override {
    vfs_.Reset();
    std::filesystem::remove_all(dir_);
  }
  std::unique_ptr<SqliteLogStore> Open(const std::string& synchronous = "FULL", bool faulty = true) {
    auto s = SqliteLogStore::Open(
        {.path = (dir_ / "dtx.db").string(), .synchronous = synchronous, .vfs = faulty ? SqliteFaultVfs::kName : ""});
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? std::move(*s) : nullptr;
  }
  size_t Count(LogStore& store) {
    auto all = store.LoadAll();
    EXPECT_TRUE(all.ok()) << all.status();
    return all.ok() ? all->size() : 0;
  }

  SqliteFaultVfs& vfs_ = SqliteFaultVfs::Instance();
  std::filesystem::path dir_;
};

TEST_F(SqliteFaults, FailedFsyncFailsTheBatchAndTheStoreRefusesWrites) {
  auto store = Open();
  ASSERT_TRUE(store->WriteSync(BranchBatch("x:1", 1)).ok());
  vfs_.FailSyncs(true);
  WriteResult failed = store->WriteSync(BranchBatch("x:2", 2));
  ASSERT_FALSE(failed.ok());
  EXPECT_EQ(failed.status.code(), StatusCode::kIOError) << failed.status;
  vfs_.FailSyncs(false);
  // The disk is fine again, but the store does not pretend to know what landed.
  WriteResult refused = store->WriteSync(BranchBatch("x:3", 3));
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status.message().find("refuses writes until it is reopened"), std::string_view::npos)
      << refused.status;
  store->Close();
  store = Open();
  auto one = store->Get("x:1");
  ASSERT_TRUE(one.ok() && one->has_value());
  auto three = store->Get("x:3");
  ASSERT_TRUE(three.ok());
  EXPECT_FALSE(three->has_value());
  EXPECT_TRUE(store->WriteSync(BranchBatch("x:4", 4)).ok()) << "reopened, it writes again";
}

// Waits for the callback of an asynchronous write.
WriteResult Await(const std::function<void(LogStore::WriteCallback)>& write) {
  std::promise<WriteResult> done;
  write([&done](const WriteResult& r) { done.set_value(r); });
  return done.get_future().get();
}

TEST_F(SqliteFaults, AnUnsyncedWriteIsAnsweredOnceWrittenAndADurableOneOnlyAfterTheFsync) {
  auto store = Open();
  ASSERT_TRUE(store->WriteSync(BranchBatch("x:1", 1)).ok());
  vfs_.FailSyncs(true);
  WriteResult unsynced = Await([&](auto cb) { store->WriteUnsynced(BranchBatch("x:2", 2), cb); });
  EXPECT_TRUE(unsynced.ok()) << "written is enough: " << unsynced.status;
  WriteResult durable = Await([&](auto cb) { store->Write(BranchBatch("x:3", 3), cb); });
  EXPECT_FALSE(durable.ok()) << "never acknowledged without its fsync";
  EXPECT_EQ(durable.status.code(), StatusCode::kIOError) << durable.status;
  vfs_.FailSyncs(false);
}

TEST_F(SqliteFaults, APowerLossForgetsAnUnsyncedWriteUnlessALaterDurableOneCoveredIt) {
  auto store = Open();
  ASSERT_TRUE(store->WriteSync(BranchBatch("x:1", 1)).ok());
  vfs_.FailSyncs(true);  // the unsynced write is answered, and nothing reaches the disk
  ASSERT_TRUE(Await([&](auto cb) { store->WriteUnsynced(std::move(Batch().Insert(Global("x:2"))), cb); }).ok());
  vfs_.Freeze();
  vfs_.FailSyncs(false);
  store->Close();
  store.reset();
  vfs_.DropUnsyncedAndThaw();
  store = Open();
  auto two = store->Get("x:2");
  ASSERT_TRUE(two.ok());
  EXPECT_FALSE(two->has_value()) << "forgotten by the power loss";
  EXPECT_TRUE(store->Get("x:1")->has_value());

  // An unsynced write followed by a durable one that depends on it: once the second is
  // acknowledged, both survive a power loss.
  ASSERT_TRUE(Await([&](auto cb) { store->WriteUnsynced(std::move(Batch().Insert(Global("x:4"))), cb); }).ok());
  BranchRecord b;
  b.xid = "x:4";
  b.branch_id = 40;
  b.resource_id = "db1";
  ASSERT_TRUE(store->WriteSync(std::move(Batch().Insert(b))).ok());
  vfs_.Freeze();
  store->Close();
  store.reset();
  vfs_.DropUnsyncedAndThaw();
  store = Open();
  auto four = store->Get("x:4");
  ASSERT_TRUE(four.ok() && four->has_value());
  EXPECT_EQ((*four)->branches.size(), 1u);
}

// A lazy batch goes into the log with the next eager one, in the same commit, and is applied
// before it; alone it is committed once its delay has passed. Neither costs an fsync of its own.
TEST_F(SqliteFaults, ALazyWriteGoesWithTheNextEagerOneOrAfterItsDelay) {
  auto s = SqliteLogStore::Open({.path = (dir_ / "dtx.db").string(),
                                 .vfs = SqliteFaultVfs::kName,
                                 .lazy_delay = std::chrono::milliseconds(300)});
  ASSERT_TRUE(s.ok()) << s.status();
  auto& store = **s;
  ASSERT_TRUE(store.DefersLazyWrites());
  ASSERT_TRUE(store.WriteSync(BranchBatch("x:1", 1)).ok());
  const uint64_t commits = store.Stats().commits;

  // The lazy removal of x:1 waits; the eager batch after it takes x:1's lock, which only the
  // removal released: it applies after the removal, in one commit with it.
  std::promise<WriteResult> lazy_done;
  store.WriteLazy(std::move(Batch().Remove("x:1")), [&](const WriteResult& r) { lazy_done.set_value(r); });
  auto lazy = lazy_done.get_future();
  EXPECT_EQ(lazy.wait_for(std::chrono::milliseconds(100)), std::future_status::timeout) << "it did not wait";
  BranchRecord b;
  b.xid = "x:2";
  b.branch_id = 2;
  b.resource_id = "db1";
  Batch takes_the_lock;
  takes_the_lock.Insert(Global("x:2")).Insert(b).Lock("x:2", 2, {"db1:t:1"});
  ASSERT_TRUE(store.WriteSync(std::move(takes_the_lock)).ok()) << "the removal went first";
  ASSERT_EQ(lazy.wait_for(std::chrono::seconds(5)), std::future_status::ready);
  EXPECT_TRUE(lazy.get().ok());
  EXPECT_EQ(store.Stats().commits, commits + 1) << "one commit carried both";

  // Alone, it is committed after its delay, and with syncs failing it is still answered: it
  // needs no fsync of its own (the next durable batch's covers it), so the store is not failed.
  vfs_.FailSyncs(true);
  const uint64_t syncs = store.Stats().syncs;
  const auto t0 = std::chrono::steady_clock::now();
  WriteResult alone = Await([&](auto cb) { store.WriteLazy(std::move(Batch().Insert(Global("x:3"))), cb); });
  EXPECT_TRUE(alone.ok()) << alone.status;
  EXPECT_GE(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(250));
  EXPECT_EQ(store.Stats().commits, commits + 2);
  EXPECT_EQ(store.Stats().syncs, syncs) << "a lazy batch alone is not fsynced";
  vfs_.FailSyncs(false);
  EXPECT_TRUE(store.WriteSync(BranchBatch("x:4", 4)).ok()) << "no fsync failed, so the store still writes";
}

TEST_F(SqliteFaults, APowerLossKeepsALazyWriteThatADurableOneOrTheCloseCovered) {
  auto store = Open();
  ASSERT_TRUE(store->WriteSync(BranchBatch("x:1", 1)).ok());
  // Lazy, then durable: once the durable one is acknowledged, both survive a power loss.
  store->WriteLazy(std::move(Batch().Remove("x:1")), [](const WriteResult&) {});
  store->WriteLazy(std::move(Batch().Insert(Global("x:2"))), [](const WriteResult&) {});
  ASSERT_TRUE(store->WriteSync(BranchBatch("x:3", 3)).ok());
  vfs_.Freeze();
  store->Close();
  store.reset();
  vfs_.DropUnsyncedAndThaw();
  store = Open();
  EXPECT_FALSE(store->Get("x:1")->has_value()) << "the lazy removal was lost";
  EXPECT_TRUE(store->Get("x:2")->has_value()) << "the lazy insert was lost";
  EXPECT_TRUE(store->Get("x:3")->has_value());

  // Lazy writes last, then a clean close: the close fsyncs them.
  store->WriteLazy(std::move(Batch().Remove("x:3")), [](const WriteResult&) {});
  store->WriteLazy(std::move(Batch().Insert(Global("x:5"))), [](const WriteResult&) {});
  store->Close();
  vfs_.Freeze();  // the power goes right after the store closed, before SQLite's own last checkpoint
  store.reset();
  vfs_.DropUnsyncedAndThaw();
  store = Open();
  EXPECT_FALSE(store->Get("x:3")->has_value());
  EXPECT_TRUE(store->Get("x:5")->has_value());
}

TEST_F(SqliteFaults, FullDiskIsReportedAsSuch) {
  auto store = Open();
  ASSERT_TRUE(store->WriteSync(BranchBatch("x:1", 1)).ok());
  vfs_.FailWritesFrom(1, /*disk_full=*/true);
  WriteResult full = store->WriteSync(BranchBatch("x:2", 2));
  ASSERT_FALSE(full.ok());
  EXPECT_EQ(full.status.code(), StatusCode::kResourceExhausted) << full.status;
  EXPECT_NE(full.status.message().find("disk full"), std::string_view::npos) << full.status;
  EXPECT_FALSE(store->WriteSync(BranchBatch("x:3", 3)).ok());
  store->Close();
  vfs_.Reset();
  store = Open();
  EXPECT_EQ(Count(*store), 1u);
}

// Writes `n` batches from 8 threads; returns the XIDs acknowledged.
std::vector<std::string> WriteConcurrently(LogStore& store, int n) {
  std::mutex mu;
  std::vector<std::string> acked;
  std::vector<std::thread> threads;
  std::atomic<int> next{0};
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      for (int i; (i = next++) < n;) {
        const std::string xid = "p:" + std::to_string(i);
        if (store.WriteSync(BranchBatch(xid, 1000 + i)).ok()) {
          std::lock_guard lock(mu);
          acked.push_back(xid);
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  return acked;
}

TEST_F(SqliteFaults, PowerLossKeepsEveryAcknowledgedBatch) {
  auto store = Open("FULL");
  auto acked = WriteConcurrently(*store, 400);
  ASSERT_EQ(acked.size(), 400u);
  vfs_.Freeze();  // the machine stops: nothing from here on reaches the disk
  store->Close();
  store.reset();
  vfs_.DropUnsyncedAndThaw();
  store = Open("FULL", /*faulty=*/false);
  for (const auto& xid : acked) {
    auto s = store->Get(xid);
    ASSERT_TRUE(s.ok()) << s.status();
    ASSERT_TRUE(s->has_value()) << xid << " was acknowledged and lost";
    EXPECT_EQ((*s)->branches.size(), 1u);
    EXPECT_EQ((*s)->locks.size(), 1u);
  }
}

TEST_F(SqliteFaults, PowerLossWithoutFsyncLosesBatches) {
  // The same run with synchronous=OFF: shows that the power-loss simulation does drop unsynced
  // data, so the test above is not passing by accident.
  auto store = Open("OFF");
  auto acked = WriteConcurrently(*store, 400);
  ASSERT_EQ(acked.size(), 400u);
  vfs_.Freeze();
  store->Close();
  store.reset();
  vfs_.DropUnsyncedAndThaw();
  store = Open("FULL", /*faulty=*/false);
  EXPECT_LT(Count(*store), acked.size());
}

TEST(FaultInjectionLogStore, FailsFromTheNthWriteUntilHealed) {
  FaultInjectionLogStore store(std::make_unique<MemoryLogStore>());
  store.FailWritesFrom(2, IOError("injected"));
  EXPECT_TRUE(store.WriteSync(BranchBatch("x:1", 1)).ok());
  WriteResult second = store.WriteSync(BranchBatch("x:2", 2));
  EXPECT_EQ(second.status, IOError("injected"));
  EXPECT_FALSE(store.WriteSync(BranchBatch("x:3", 3)).ok());
  store.Heal();
  EXPECT_TRUE(store.WriteSync(BranchBatch("x:4", 4)).ok());
  auto all = store.LoadAll();
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->size(), 2u);
}

TEST(SqliteLogStore, RefusesANewerSchemaAndBadOptions) {
  auto dir = std::filesystem::temp_directory_path() / ("dtx-sqlite-schema-" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "dtx.db").string();
  {
    auto s = SqliteLogStore::Open({.path = path});
    ASSERT_TRUE(s.ok());
  }
  {
    // A later build wrote this file.
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
    ASSERT_EQ(sqlite3_exec(db, "UPDATE dtx_meta SET value = '99' WHERE key = 'schema_version'", nullptr, nullptr, nullptr),
              SQLITE_OK);
    sqlite3_close(db);
    auto newer = SqliteLogStore::Open({.path = path});
    ASSERT_FALSE(newer.ok());
    EXPECT_NE(newer.status().message().find("schema version 99"), std::string_view::npos) << newer.status();
  }
  auto bad = SqliteLogStore::Open({.path = path, .synchronous = "SOMETIMES"});
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  auto missing_dir = SqliteLogStore::Open({.path = (dir / "no" / "such" / "dtx.db").string()});
  EXPECT_EQ(missing_dir.status().code(), StatusCode::kIOError) << missing_dir.status();
  std::filesystem::remove_all(dir);
}

// A folder of its own for one test, removed afterwards.
class TempDir {
 public:
  explicit TempDir(const std::string& name)
      : path_(std::filesystem::temp_directory_path() / ("dtx-" + name + "-" + std::to_string(getpid()))) {
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  std::string File(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

int64_t QueryInt(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  EXPECT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  sqlite3_stmt* stmt = nullptr;
  EXPECT_EQ(sqlite3_prepare_v2(db, sql.c_str(), -1, &stmt, nullptr), SQLITE_OK) << sqlite3_errmsg(db);
  int64_t v = sqlite3_step(stmt) == SQLITE_ROW ? sqlite3_column_int64(stmt, 0) : -1;
  sqlite3_finalize(stmt);
  sqlite3_close(db);
  return v;
}

TEST(SqliteLogStore, CompactionKeepsWhatIsLiveAndDropsTheRest) {
  TempDir dir("sqlite-compact");
  const std::string path = dir.File("dtx.db");
  {
    auto store = SqliteLogStore::Open({.path = path, .compact_min = 16});
    ASSERT_TRUE(store.ok()) << store.status();
    for (int i = 0; i < 200; ++i) {
      const std::string xid = "x:" + std::to_string(1000 + i);
      ASSERT_TRUE((*store)->WriteSync(BranchBatch(xid, i + 1)).ok());
      if (i % 10 == 0) {
        ASSERT_TRUE((*store)->WriteSync(std::move(Batch().SetStatus(xid, GlobalStatus::kCommitting, 5))).ok());
      } else {
        ASSERT_TRUE((*store)->WriteSync(std::move(Batch().Remove(xid))).ok());
      }
    }
  }
  // 600 batches went in; compaction leaves the 20 live transactions (in one entry) and what came
  // after the last compaction (older entries go a few at a time with later commits).
  EXPECT_LT(QueryInt(path, "SELECT count(*) FROM dtx_journal"), 100);
  auto store = SqliteLogStore::Open({.path = path, .compact_min = 16});
  ASSERT_TRUE(store.ok()) << store.status();
  auto all = (*store)->LoadAll();
  ASSERT_TRUE(all.ok()) << all.status();
  ASSERT_EQ(all->size(), 20u);
  for (const auto& t : *all) {
    EXPECT_EQ(t.global.status, GlobalStatus::kCommitting) << t.global.xid;
    EXPECT_EQ(t.global.updated_time_ms, 5) << t.global.xid;
    ASSERT_EQ(t.branches.size(), 1u) << t.global.xid;
    ASSERT_EQ(t.locks.size(), 1u) << t.global.xid;
    EXPECT_EQ(t.locks[0].branch_id, t.branches[0].branch_id);
  }
  // The locks of removed transactions are free, those of live ones held.
  auto held = (*store)->FindLocks({"db1:t:1", "db1:t:2"});
  ASSERT_TRUE(held.ok());
  ASSERT_EQ(held->size(), 1u);
  EXPECT_EQ(held->front().xid, "x:1000");
}

TEST(SqliteLogStore, EntriesBeforeACompactionAreDeletedAFewAtATimeAndNeverReplayed) {
  TempDir dir("sqlite-purge");
  const std::string path = dir.File("dtx.db");
  {
    auto store = SqliteLogStore::Open({.path = path, .compact_min = 100});
    ASSERT_TRUE(store.ok()) << store.status();
    ASSERT_TRUE((*store)->WriteSync(BranchBatch("x:keep", 1)).ok());
    for (int i = 0; i < 50; ++i) {  // one entry each: 101 batches, so one compaction on the way
      const std::string xid = "x:" + std::to_string(100 + i);
      ASSERT_TRUE((*store)->WriteSync(BranchBatch(xid, 10 + i)).ok());
      ASSERT_TRUE((*store)->WriteSync(std::move(Batch().Remove(xid))).ok());
    }
  }
  const int64_t start = QueryInt(path, "SELECT value FROM dtx_meta WHERE key = 'journal_start'");
  ASSERT_GT(start, 1);
  // Closed right after the compaction: most of the entries before the start are still there
  // (each later commit deleted at most 32), and a reopen must not replay them.
  EXPECT_GT(QueryInt(path, "SELECT count(*) FROM dtx_journal WHERE seq < " + std::to_string(start)), 0);
  {
    auto store = SqliteLogStore::Open({.path = path, .compact_min = 100});
    ASSERT_TRUE(store.ok()) << store.status();
    auto all = (*store)->LoadAll();
    ASSERT_TRUE(all.ok()) << all.status();
    ASSERT_EQ(all->size(), 1u);
    EXPECT_EQ(all->front().global.xid, "x:keep");
    EXPECT_EQ(all->front().locks.size(), 1u);
    for (int i = 0; i < 4; ++i) {
      ASSERT_TRUE((*store)->WriteSync(std::move(Batch().SetStatus("x:keep", GlobalStatus::kCommitting, i + 1))).ok());
    }
  }
  EXPECT_EQ(QueryInt(path, "SELECT count(*) FROM dtx_journal WHERE seq < " + std::to_string(start)), 0);
  auto store = SqliteLogStore::Open({.path = path});
  ASSERT_TRUE(store.ok()) << store.status();
  auto keep = (*store)->Get("x:keep");
  ASSERT_TRUE(keep.ok() && keep->has_value());
  EXPECT_EQ((*keep)->global.status, GlobalStatus::kCommitting);
  EXPECT_EQ((*keep)->global.updated_time_ms, 4);
}

TEST(SqliteLogStore, OpensAVersionOneDatabase) {
  TempDir dir("sqlite-v1");
  const std::string path = dir.File("dtx.db");
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  const char* v1 = R"sql(
    CREATE TABLE dtx_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    INSERT INTO dtx_meta VALUES ('schema_version', '1');
    CREATE TABLE dtx_global (xid TEXT PRIMARY KEY, status INTEGER NOT NULL, name TEXT NOT NULL,
      application TEXT NOT NULL, timeout_ms INTEGER NOT NULL, begin_time_ms INTEGER NOT NULL,
      owner_node TEXT NOT NULL, application_data BLOB NOT NULL, updated_time_ms INTEGER NOT NULL) WITHOUT ROWID;
    CREATE TABLE dtx_branch (xid TEXT NOT NULL, branch_id INTEGER NOT NULL, resource_id TEXT NOT NULL,
      branch_type INTEGER NOT NULL, status INTEGER NOT NULL, lock_keys TEXT NOT NULL,
      application_data BLOB NOT NULL, client_id TEXT NOT NULL, registered_time_ms INTEGER NOT NULL,
      PRIMARY KEY (xid, branch_id)) WITHOUT ROWID;
    CREATE TABLE dtx_row_lock (row_key TEXT PRIMARY KEY, xid TEXT NOT NULL, branch_id INTEGER NOT NULL) WITHOUT ROWID;
    INSERT INTO dtx_global VALUES ('tc-1:7', 2, 'transfer', 'bank', 60000, 111, 'tc-1', x'0102', 222);
    INSERT INTO dtx_branch VALUES ('tc-1:7', 8, 'db1', 0, 2, 'db1:t:1;db1:t:2', x'03', 'rm-1', 333);
    INSERT INTO dtx_row_lock VALUES ('db1:t:1', 'tc-1:7', 8), ('db1:t:2', 'tc-1:7', 8);
  )sql";
  ASSERT_EQ(sqlite3_exec(db, v1, nullptr, nullptr, nullptr), SQLITE_OK) << sqlite3_errmsg(db);
  sqlite3_close(db);

  {
    auto store = SqliteLogStore::Open({.path = path});
    ASSERT_TRUE(store.ok()) << store.status();
    auto t = (*store)->Get("tc-1:7");
    ASSERT_TRUE(t.ok() && t->has_value());
    const auto& snap = **t;
    EXPECT_EQ(snap.global.status, GlobalStatus::kCommitting);
    EXPECT_EQ(snap.global.name, "transfer");
    EXPECT_EQ(snap.global.application_data, std::string("\x01\x02", 2));
    EXPECT_EQ(snap.global.updated_time_ms, 222);
    ASSERT_EQ(snap.branches.size(), 1u);
    EXPECT_EQ(snap.branches[0].status, BranchStatus::kPhaseOneDone);
    EXPECT_EQ(snap.branches[0].lock_keys, "db1:t:1;db1:t:2");
    EXPECT_EQ(snap.branches[0].client_id, "rm-1");
    EXPECT_EQ(snap.locks.size(), 2u);
  }
  EXPECT_EQ(QueryInt(path, "SELECT value FROM dtx_meta WHERE key = 'schema_version'"), SqliteLogStore::kSchemaVersion);
  EXPECT_EQ(QueryInt(path, "SELECT count(*) FROM sqlite_master WHERE name = 'dtx_global'"), 0);
  // And it stays migrated across another open.
  auto again = SqliteLogStore::Open({.path = path});
  ASSERT_TRUE(again.ok()) << again.status();
  auto all = (*again)->LoadAll();
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->size(), 1u);
}

TEST(SqliteLogStore, BatchesCommittedTogetherShareAnEntryAndAllReplay) {
  TempDir dir("sqlite-groups");
  const std::string path = dir.File("dtx.db");
  constexpr int kBatches = 2000;
  {
    auto store = SqliteLogStore::Open({.path = path});
    ASSERT_TRUE(store.ok()) << store.status();
    std::mutex mu;
    std::condition_variable cv;
    int done = 0, failed = 0;
    for (int i = 0; i < kBatches; ++i) {
      (*store)->Write(BranchBatch("x:" + std::to_string(10000 + i), i + 1), [&](const WriteResult& r) {
        std::lock_guard lock(mu);
        ++done;
        if (!r.ok()) ++failed;
        cv.notify_one();
      });
    }
    std::unique_lock lock(mu);
    ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(60), [&] { return done == kBatches; }));
    EXPECT_EQ(failed, 0);
  }
  // Queued faster than one commit takes, the batches went in as groups: fewer entries than batches.
  EXPECT_LT(QueryInt(path, "SELECT count(*) FROM dtx_journal"), kBatches);
  auto store = SqliteLogStore::Open({.path = path});
  ASSERT_TRUE(store.ok()) << store.status();
  auto all = (*store)->LoadAll();
  ASSERT_TRUE(all.ok()) << all.status();
  ASSERT_EQ(all->size(), static_cast<size_t>(kBatches));
  for (const auto& t : *all) {
    ASSERT_EQ(t.branches.size(), 1u) << t.global.xid;
    EXPECT_EQ(t.locks.size(), 1u) << t.global.xid;
  }
}

// Under a steady stream of commits the checkpoints copy the WAL into the database file and the
// WAL starts over, so it stays a few thousand frames long however long the stream runs.
TEST(SqliteLogStore, TheWalIsCheckpointedAndStartsOverUnderSteadyWrites) {
  TempDir dir("sqlite-wal");
  const std::string path = dir.File("dtx.db");
  constexpr int kCommits = 12000;  // two commits each, a 4 KiB frame or more each: 96 MB of WAL if it never started over
  {
    auto store = SqliteLogStore::Open({.path = path, .synchronous = "NORMAL"});
    ASSERT_TRUE(store.ok()) << store.status();
    for (int i = 0; i < kCommits; ++i) {
      const std::string xid = "x:" + std::to_string(100000 + i);
      ASSERT_TRUE((*store)->WriteSync(BranchBatch(xid, i + 1)).ok());
      if (i >= 16) ASSERT_TRUE((*store)->WriteSync(std::move(Batch().Remove("x:" + std::to_string(100000 + i - 16)))).ok());
      if (i % 2000 == 1999) {
        const auto wal = std::filesystem::file_size(path + "-wal");
        EXPECT_LT(wal, 32u << 20) << "after " << i + 1 << " transactions the WAL has " << wal << " bytes";
      }
    }
    EXPECT_GT(std::filesystem::file_size(path), 64u << 10) << "checkpoints copied the journal into the database file";
  }
  auto store = SqliteLogStore::Open({.path = path});
  ASSERT_TRUE(store.ok()) << store.status();
  auto all = (*store)->LoadAll();
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_EQ(all->size(), 16u);
}

TEST(SqliteLogStore, ADamagedJournalEntryStopsTheOpenWithCorruption) {
  TempDir dir("sqlite-damaged");
  const std::string path = dir.File("dtx.db");
  {
    auto store = SqliteLogStore::Open({.path = path});
    ASSERT_TRUE(store.ok());
    ASSERT_TRUE((*store)->WriteSync(BranchBatch("x:1", 1)).ok());
  }
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, "UPDATE dtx_journal SET batch = substr(batch, 1, 20)", nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(db);
  auto store = SqliteLogStore::Open({.path = path});
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), StatusCode::kCorruption) << store.status();
  EXPECT_NE(store.status().message().find("journal entry 1"), std::string_view::npos) << store.status();
}

}  // namespace
}  // namespace dtx::log
