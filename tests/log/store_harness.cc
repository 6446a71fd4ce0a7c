#include "store_harness.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>

#include "dtx/log/memory_log_store.h"
#include "dtx/log/sqlite_log_store.h"

namespace dtx::log::testing {
namespace {

class MemoryHarness final : public StoreHarness {
 public:
  std::unique_ptr<LogStore> Open() override { return std::make_unique<MemoryLogStore>(); }
  bool durable() const override { return false; }
  std::string name() const override { return "memory"; }
};

class SqliteHarness final : public StoreHarness {
 public:
  SqliteHarness() {
    static std::atomic<int> counter{0};
    dir_ = std::filesystem::temp_directory_path() /
           ("dtx-log-test-" + std::to_string(getpid()) + "-" + std::to_string(counter++));
    std::filesystem::create_directories(dir_);
  }
  ~SqliteHarness() override {
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }
  std::unique_ptr<LogStore> Open() override {
    auto store = SqliteLogStore::Open({.path = (dir_ / "dtx.db").string()});
    EXPECT_TRUE(store.ok()) << store.status();
    if (!store.ok()) return nullptr;
    return std::move(*store);
  }
  bool durable() const override { return true; }
  std::string name() const override { return "sqlite"; }

 private:
  std::filesystem::path dir_;
};

}  // namespace

std::unique_ptr<StoreHarness> MakeMemoryHarness() { return std::make_unique<MemoryHarness>(); }
std::unique_ptr<StoreHarness> MakeSqliteHarness() { return std::make_unique<SqliteHarness>(); }

}  // namespace dtx::log::testing
