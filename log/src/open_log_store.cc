#include "dtx/log/open_log_store.h"

#include <filesystem>
#include <regex>

#include "dtx/log/memory_log_store.h"
#include "dtx/log/postgres_log_store.h"
#include "dtx/log/sqlite_log_store.h"

namespace dtx::log {
namespace {

bool StartsWith(const std::string& s, std::string_view prefix) { return s.rfind(prefix, 0) == 0; }

bool IsPostgres(const std::string& store) {
  return StartsWith(store, "postgres://") || StartsWith(store, "postgresql://") || StartsWith(store, "postgres:");
}

std::string PostgresConninfo(const std::string& store) {
  if (StartsWith(store, "postgres://") || StartsWith(store, "postgresql://")) return store;
  return store.substr(std::string_view("postgres:").size());
}

std::string SqlitePath(const LogStoreConfig& c) {
  if (StartsWith(c.store, "sqlite:")) return c.store.substr(7);
  return (std::filesystem::path(c.data_dir) / "dtx.db").string();
}

}  // namespace

Result<std::unique_ptr<LogStore>> OpenLogStore(const LogStoreConfig& config) {
  if (IsPostgres(config.store)) {
    PostgresOptions options;
    options.conninfo = PostgresConninfo(config.store);
    options.schema = config.pg_schema;
    auto s = PostgresLogStore::Open(options);
    if (!s.ok()) return s.status().WithContext("opening the PostgreSQL log (" + DescribeLogStore(config) + ")");
    return std::unique_ptr<LogStore>(std::move(*s));
  }
  if (config.store == "memory") return std::unique_ptr<LogStore>(std::make_unique<MemoryLogStore>());
  if (!config.store.empty() && config.store != "sqlite" && !StartsWith(config.store, "sqlite:")) {
    return InvalidArgument("unknown store '" + config.store +
                           "': use sqlite, sqlite:<file>, memory or a postgres:// URI");
  }
  const std::string path = SqlitePath(config);
  std::error_code ec;
  auto dir = std::filesystem::path(path).parent_path();
  if (!dir.empty()) std::filesystem::create_directories(dir, ec);
  if (ec) return IOError("cannot create " + dir.string() + ": " + ec.message());
  auto s = SqliteLogStore::Open({.path = path, .synchronous = config.synchronous, .gather = config.sqlite_gather});
  if (!s.ok()) return s.status();
  return std::unique_ptr<LogStore>(std::move(*s));
}

std::string DescribeLogStore(const LogStoreConfig& config) {
  if (IsPostgres(config.store)) {
    // Hide a password in a URI (user:secret@host) or a conninfo (password=secret).
    std::string s = std::regex_replace(PostgresConninfo(config.store), std::regex("://([^:/@]*):[^@]*@"), "://$1:***@");
    s = std::regex_replace(s, std::regex("password=\\S*"), "password=***");
    return "PostgreSQL " + s + " schema " + config.pg_schema;
  }
  if (config.store == "memory") return "memory (nothing survives a restart: for tests and measurements)";
  return "SQLite " + SqlitePath(config) + " (synchronous=" + config.synchronous + ")";
}

}  // namespace dtx::log
