#include "crash_store.h"

#include "dtx/log/sqlite_log_store.h"
#include "dtx/log/postgres_log_store.h"

namespace dtx::log::testing {

Result<std::unique_ptr<LogStore>> OpenCrashStore(const std::string& sqlite_path, const std::string& pg_conninfo,
                                                 const std::string& pg_schema) {
  if (!sqlite_path.empty()) {
    auto s = SqliteLogStore::Open({.path = sqlite_path});
    if (!s.ok()) return s.status();
    return std::unique_ptr<LogStore>(std::move(*s));
  }
  PostgresOptions options;
  options.conninfo = pg_conninfo;
  options.schema = pg_schema;
  auto s = PostgresLogStore::Open(options);
  if (!s.ok()) return s.status();
  return std::unique_ptr<LogStore>(std::move(*s));
}

}  // namespace dtx::log::testing
