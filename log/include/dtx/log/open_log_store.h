// Opens the log store a user named: the embedded SQLite default or a shared PostgreSQL.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "dtx/log/log_store.h"

namespace dtx::log {

struct LogStoreConfig {
  // "" or "sqlite": dtx.db in data_dir; "sqlite:<file>": that file;
  // "postgres://..." or "postgresql://..." (a libpq URI) or "postgres:<conninfo>": PostgreSQL;
  // "memory": nothing durable, for tests and for measuring the coordinator without a disk.
  std::string store;
  std::string data_dir = "dtx-data";
  std::string synchronous = "FULL";  // SQLite
  std::chrono::microseconds sqlite_gather{0};  // SQLite: SqliteOptions::gather
  std::string pg_schema = "dtx";     // PostgreSQL
};

// Creates data_dir when needed. The error says what could not be opened and why.
Result<std::unique_ptr<LogStore>> OpenLogStore(const LogStoreConfig& config);

// A human description, without any password: "SQLite dtx-data/dtx.db", "PostgreSQL host/db".
std::string DescribeLogStore(const LogStoreConfig& config);

}  // namespace dtx::log
