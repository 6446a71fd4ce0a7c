#include "dtx/sql_proxy/xid_command.h"

namespace dtx::sql_proxy {
namespace {

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

char Lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

bool IsXidChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
         c == ':' || c == '-' || c == '/' || c == '@';
}

bool IsWordChar(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.'; }

// A cursor over the SQL text.
class Cursor {
 public:
  explicit Cursor(std::string_view s) : s_(s) {}

  void SkipSpace() {
    while (i_ < s_.size() && IsSpace(s_[i_])) ++i_;
  }
  // Matches `word` (lower case) case-insensitively as a whole word.
  bool Word(std::string_view word) {
    SkipSpace();
    if (s_.size() - i_ < word.size()) return false;
    for (size_t k = 0; k < word.size(); ++k) {
      if (Lower(s_[i_ + k]) != word[k]) return false;
    }
    if (i_ + word.size() < s_.size() && IsWordChar(s_[i_ + word.size()])) return false;
    i_ += word.size();
    return true;
  }
  bool Char(char c) {
    SkipSpace();
    if (i_ < s_.size() && s_[i_] == c) {
      ++i_;
      return true;
    }
    return false;
  }
  // The rest is only whitespace and at most one ';' (followed by whitespace).
  bool AtEnd() {
    SkipSpace();
    if (i_ < s_.size() && s_[i_] == ';') ++i_;
    SkipSpace();
    return i_ == s_.size();
  }
  // A value: 'quoted' (with '' for a quote), "quoted", or bare characters of an XID.
  std::optional<std::string> Value() {
    SkipSpace();
    if (i_ >= s_.size()) return std::nullopt;
    const char q = s_[i_];
    if (q == '\'' || q == '"') {
      std::string out;
      for (size_t k = i_ + 1; k < s_.size(); ++k) {
        if (s_[k] == q) {
          if (k + 1 < s_.size() && s_[k + 1] == q) {
            out.push_back(q);
            ++k;
            continue;
          }
          i_ = k + 1;
          return out;
        }
        out.push_back(s_[k]);
        if (out.size() > kMaxXidLength) return std::nullopt;
      }
      return std::nullopt;
    }
    const size_t start = i_;
    while (i_ < s_.size() && IsXidChar(s_[i_])) ++i_;
    if (i_ == start) return std::nullopt;
    return std::string(s_.substr(start, i_ - start));
  }
 private:
  std::string_view s_;
  size_t i_ = 0;
};

XidCommand Malformed(std::string why) {
  XidCommand c;
  c.kind = XidCommandKind::kMalformed;
  c.error = std::move(why);
  return c;
}

// After "SET [SESSION|LOCAL] dtx.xid".
XidCommand ParseSetValue(Cursor& cur, bool local) {
  if (!cur.Char('=') && !cur.Word("to")) return Malformed("SET dtx.xid wants = or TO and a value");
  if (cur.Word("default")) {
    if (!cur.AtEnd()) return Malformed("SET dtx.xid must be a statement of its own");
    XidCommand c;
    c.kind = XidCommandKind::kReset;
    c.local = local;
    return c;
  }
  auto value = cur.Value();
  if (!value) return Malformed("SET dtx.xid wants a quoted XID of at most 128 characters");
  if (!cur.AtEnd()) return Malformed("SET dtx.xid must be a statement of its own");
  XidCommand c;
  if (value->empty()) {  // '' unbinds, as RESET does
    c.kind = XidCommandKind::kReset;
    c.local = local;
    return c;
  }
  if (!IsValidXid(*value)) {
    return Malformed("invalid XID \"" + value->substr(0, 64) +
                     "\": 1 to 128 characters of letters, digits and _.:-/@");
  }
  c.kind = local ? XidCommandKind::kSetLocal : XidCommandKind::kSet;
  c.xid = std::move(*value);
  return c;
}

}  // namespace

bool IsValidXid(std::string_view xid) {
  if (xid.empty() || xid.size() > kMaxXidLength) return false;
  for (char c : xid) {
    if (!IsXidChar(c)) return false;
  }
  return true;
}

XidCommand ParseXidCommand(std::string_view sql) {
  // The fast exit: skip leading whitespace, then the first letter must be s or r.
  size_t i = 0;
  while (i < sql.size() && IsSpace(sql[i])) ++i;
  if (i == sql.size()) return {};
  const char first = Lower(sql[i]);
  if (first != 's' && first != 'r') return {};

  Cursor cur(sql);
  if (cur.Word("set")) {
    bool local = false;
    if (cur.Word("local")) {
      local = true;
    } else {
      (void)cur.Word("session");
    }
    if (!cur.Word("dtx.xid")) return {};
    return ParseSetValue(cur, local);
  }
  if (cur.Word("reset")) {
    if (!cur.Word("dtx.xid")) return {};
    if (!cur.AtEnd()) return Malformed("RESET dtx.xid must be a statement of its own");
    XidCommand c;
    c.kind = XidCommandKind::kReset;
    return c;
  }
  if (cur.Word("show")) {
    if (!cur.Word("dtx.xid")) return {};
    if (!cur.AtEnd()) return Malformed("SHOW dtx.xid must be a statement of its own");
    XidCommand c;
    c.kind = XidCommandKind::kShow;
    return c;
  }
  return {};
}

std::optional<std::string_view> LeadingXidComment(std::string_view sql) {
  size_t i = 0;
  while (i < sql.size() && IsSpace(sql[i])) ++i;
  if (sql.size() - i < 2 || sql[i] != '/' || sql[i + 1] != '*') return std::nullopt;
  i += 2;
  auto skip = [&] {
    while (i < sql.size() && IsSpace(sql[i])) ++i;
  };
  skip();
  constexpr std::string_view kName = "dtx.xid";
  if (sql.size() - i < kName.size()) return std::nullopt;
  for (size_t k = 0; k < kName.size(); ++k) {
    if (Lower(sql[i + k]) != kName[k]) return std::nullopt;
  }
  i += kName.size();
  skip();
  if (i >= sql.size() || sql[i] != '=') return std::nullopt;
  ++i;
  skip();
  const size_t start = i;
  while (i < sql.size() && IsXidChar(sql[i])) ++i;
  std::string_view xid = sql.substr(start, i - start);
  skip();
  if (sql.size() - i < 2 || sql[i] != '*' || sql[i + 1] != '/') return std::nullopt;
  if (!IsValidXid(xid)) return std::nullopt;
  return xid;
}

}  // namespace dtx::sql_proxy
