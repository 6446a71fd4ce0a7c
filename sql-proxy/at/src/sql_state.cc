#include "dtx/at/sql_state.h"

#include <cctype>

namespace dtx::at {

Status SqlError(std::string_view state, std::string_view text, StatusCode code) {
  std::string m(state);
  m += ": ";
  m += text;
  return Status(code, std::move(m));
}

static bool HasState(std::string_view m) {
  if (m.size() < 7 || m[5] != ':' || m[6] != ' ') return false;
  for (int i = 0; i < 5; ++i) {
    if (!std::isdigit(static_cast<unsigned char>(m[i])) && !std::isupper(static_cast<unsigned char>(m[i]))) return false;
  }
  return true;
}

std::string SqlStateOf(const Status& s) {
  if (s.ok()) return "00000";
  return HasState(s.message()) ? std::string(s.message().substr(0, 5)) : std::string(sqlstate::kInternal);
}

std::string SqlTextOf(const Status& s) {
  return HasState(s.message()) ? std::string(s.message().substr(7)) : std::string(s.message());
}

std::string QuoteIdent(std::string_view name) {
  std::string out = "\"";
  for (char c : name) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

std::string QuoteLiteral(std::string_view text) {
  std::string out = "'";
  for (char c : text) {
    if (c == '\'') out += '\'';
    out += c;
  }
  return out + "'";
}

std::string RaiseErrorSql(const Status& error) {
  std::string text = SqlTextOf(error);
  // The DO body is dollar-quoted: keep its closing tag out of the text.
  for (size_t p; (p = text.find("$dtx$")) != std::string::npos;) text.replace(p, 5, "$ dtx $");
  return "DO $dtx$ BEGIN RAISE EXCEPTION USING ERRCODE = " + QuoteLiteral(SqlStateOf(error)) +
         ", MESSAGE = " + QuoteLiteral(text) + "; END $dtx$";
}

std::string_view QueryRoleName(QueryRole role) {
  switch (role) {
    case QueryRole::kCatalog: return "catalog";
    case QueryRole::kBeforeImage: return "before-image";
    case QueryRole::kLockKeys: return "lock-keys";
    case QueryRole::kStatement: return "statement";
    case QueryRole::kUndoWrite: return "undo-write";
  }
  return "?";
}

}  // namespace dtx::at
