#include "dtx/sdk/local_database.h"

#include <charconv>

namespace dtx::sdk {

int64_t AsInt(const SqlValue& v, int64_t fallback) {
  if (const auto* i = std::get_if<int64_t>(&v)) return *i;
  if (const auto* d = std::get_if<double>(&v)) return static_cast<int64_t>(*d);
  if (const auto* s = std::get_if<std::string>(&v)) {
    int64_t out = 0;
    auto [p, ec] = std::from_chars(s->data(), s->data() + s->size(), out);
    if (ec == std::errc() && p == s->data() + s->size()) return out;
  }
  return fallback;
}

Result<std::shared_ptr<LocalDatabase>> OpenLocalDatabase(std::string_view uri) {
  if (uri.empty()) return InvalidArgument("empty database URI");
  if (uri.rfind("postgresql://", 0) == 0 || uri.rfind("postgres://", 0) == 0) {
    return OpenPostgresDatabase(std::string(uri));
  }
  if (uri.rfind("postgres:", 0) == 0) return OpenPostgresDatabase(std::string(uri.substr(9)));
  if (uri.rfind("sqlite:", 0) == 0) uri.remove_prefix(7);
  if (uri.empty()) return InvalidArgument("sqlite: needs a file path");
  return OpenSqliteDatabase(std::string(uri));
}

}  // namespace dtx::sdk
