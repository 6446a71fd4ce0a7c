#include "dtx/sql_proxy/dtx_function.h"

#include <cctype>
#include <vector>

namespace dtx::sql_proxy {
namespace {

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

// Skips whitespace and SQL comments from `i`.
size_t SkipBlank(std::string_view s, size_t i) {
  while (i < s.size()) {
    if (IsSpace(s[i])) {
      ++i;
    } else if (s.compare(i, 2, "--") == 0) {
      while (i < s.size() && s[i] != '\n') ++i;
    } else if (s.compare(i, 2, "/*") == 0) {
      const size_t end = s.find("*/", i + 2);
      i = end == std::string_view::npos ? s.size() : end + 2;
    } else {
      break;
    }
  }
  return i;
}

bool KeywordAt(std::string_view s, size_t i, std::string_view word) {
  if (s.size() - i < word.size()) return false;
  for (size_t k = 0; k < word.size(); ++k) {
    if (std::tolower(static_cast<unsigned char>(s[i + k])) != word[k]) return false;
  }
  const size_t end = i + word.size();
  return end == s.size() || !(std::isalnum(static_cast<unsigned char>(s[end])) || s[end] == '_');
}

// The first few words of a statement, lower-cased (stops at anything that is not a word).
std::vector<std::string> LeadingWords(std::string_view s, size_t max) {
  std::vector<std::string> words;
  size_t i = SkipBlank(s, 0);
  while (words.size() < max && i < s.size() && (std::isalpha(static_cast<unsigned char>(s[i])) || s[i] == '_')) {
    std::string w;
    while (i < s.size() && (std::isalnum(static_cast<unsigned char>(s[i])) || s[i] == '_')) {
      w.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(s[i++]))));
    }
    words.push_back(std::move(w));
    i = SkipBlank(s, i);
  }
  return words;
}

DtxFunction Malformed(std::string why) {
  DtxFunction f;
  f.kind = DtxFunctionKind::kMalformed;
  f.error = std::move(why);
  return f;
}

}  // namespace

DtxFunction ParseDtxFunction(std::string_view sql) {
  size_t i = SkipBlank(sql, 0);
  if (!KeywordAt(sql, i, "select")) return {};
  i = SkipBlank(sql, i + 6);
  if (!KeywordAt(sql, i, "dtx")) return {};
  i += 3;
  if (i >= sql.size() || sql[i] != '.') return {};
  ++i;
  DtxFunction f;
  std::string_view name;
  if (KeywordAt(sql, i, "begin")) {
    f.kind = DtxFunctionKind::kBegin;
    name = "begin";
  } else if (KeywordAt(sql, i, "commit")) {
    f.kind = DtxFunctionKind::kCommit;
    name = "commit";
  } else if (KeywordAt(sql, i, "rollback")) {
    f.kind = DtxFunctionKind::kRollback;
    name = "rollback";
  } else {
    return {};
  }
  const std::string usage = f.kind == DtxFunctionKind::kBegin ? "SELECT dtx.begin(['name' [, timeout_ms]])"
                                                              : "SELECT dtx." + std::string(name) + "(['xid'])";
  i = SkipBlank(sql, i + name.size());
  if (i >= sql.size() || sql[i] != '(') return Malformed("expected " + usage);
  i = SkipBlank(sql, i + 1);
  int args = 0;
  while (i < sql.size() && sql[i] != ')') {
    if (args > 0) {
      if (sql[i] != ',') return Malformed("expected " + usage);
      i = SkipBlank(sql, i + 1);
    }
    // $n: a parameter of the extended protocol.
    if (i < sql.size() && sql[i] == '$' && args < 2) {
      const size_t digits = ++i;
      while (i < sql.size() && std::isdigit(static_cast<unsigned char>(sql[i])) && i - digits < 4) ++i;
      if (i == digits) return Malformed("expected " + usage);
      const int n = std::stoi(std::string(sql.substr(digits, i - digits)));
      if (n < 1) return Malformed("no parameter $0");
      if (args == 0) {
        f.has_arg = true;
        f.arg_param = n;
      } else if (f.kind == DtxFunctionKind::kBegin) {
        f.timeout_param = n;
      } else {
        return Malformed("too many arguments: " + usage);
      }
      ++args;
      i = SkipBlank(sql, i);
      continue;
    }
    if (args == 0) {
      if (i >= sql.size() || sql[i] != '\'') return Malformed("the first argument must be a string literal: " + usage);
      std::string value;
      ++i;
      bool closed = false;
      while (i < sql.size()) {
        if (sql[i] == '\'') {
          if (i + 1 < sql.size() && sql[i + 1] == '\'') {
            value.push_back('\'');
            i += 2;
            continue;
          }
          closed = true;
          ++i;
          break;
        }
        value.push_back(sql[i++]);
      }
      if (!closed) return Malformed("unterminated string literal");
      f.has_arg = true;
      f.arg = std::move(value);
    } else if (args == 1 && f.kind == DtxFunctionKind::kBegin) {
      size_t start = i;
      if (i < sql.size() && sql[i] == '\'') ++i;  // '5000' is fine too
      const size_t digits = i;
      while (i < sql.size() && std::isdigit(static_cast<unsigned char>(sql[i]))) ++i;
      if (i == digits || i - digits > 12) return Malformed("the timeout must be a whole number of milliseconds: " + usage);
      f.timeout_ms = std::stoll(std::string(sql.substr(digits, i - digits)));
      if (sql[start] == '\'') {
        if (i >= sql.size() || sql[i] != '\'') return Malformed("unterminated string literal");
        ++i;
      }
    } else {
      return Malformed("too many arguments: " + usage);
    }
    ++args;
    i = SkipBlank(sql, i);
  }
  if (i >= sql.size()) return Malformed("expected " + usage);
  i = SkipBlank(sql, i + 1);
  if (i < sql.size() && sql[i] == ';') i = SkipBlank(sql, i + 1);
  if (i != sql.size()) return Malformed("dtx." + std::string(name) + "() must be alone in its statement: " + usage);
  return f;
}

bool MayChangeRows(std::string_view sql) {
  size_t i = 0;
  while (true) {
    i = SkipBlank(sql, i);
    if (i < sql.size() && sql[i] == '(') {
      ++i;
      continue;
    }
    break;
  }
  for (std::string_view word : {"update", "delete", "insert", "with", "merge", "explain", "prepare", "truncate", "call",
                                 "do", "copy"}) {
    if (KeywordAt(sql, i, word)) return true;
  }
  // Another statement after a ';' (a ';' inside a literal only costs the caller a parse).
  for (size_t semi = sql.find(';', i); semi != std::string_view::npos; semi = sql.find(';', semi + 1)) {
    if (SkipBlank(sql, semi + 1) < sql.size()) return true;
  }
  return false;
}

}  // namespace dtx::sql_proxy

namespace dtx::sql_proxy {

TxEffect TxEffectOf(std::string_view sql) {
  const size_t i = SkipBlank(sql, 0);
  if (i >= sql.size()) return TxEffect::kNone;
  switch (std::tolower(static_cast<unsigned char>(sql[i]))) {  // most statements stop here
    case 'a': case 'b': case 'c': case 'e': case 'p': case 'r': case 's': break;
    default: return TxEffect::kNone;
  }
  const std::vector<std::string> w = LeadingWords(sql, 6);
  if (w.empty()) return TxEffect::kNone;
  const std::string& first = w[0];
  if (first == "begin" || (first == "start" && w.size() > 1 && w[1] == "transaction")) return TxEffect::kBegin;
  if (first == "prepare") return w.size() > 1 && w[1] == "transaction" ? TxEffect::kEnd : TxEffect::kNone;
  const bool commit = first == "commit" || first == "end";
  const bool rollback = first == "rollback" || first == "abort";
  if (!commit && !rollback) return TxEffect::kNone;
  size_t k = 1;
  if (k < w.size() && w[k] == "prepared") return TxEffect::kNone;  // COMMIT/ROLLBACK PREPARED: not the block's
  if (k < w.size() && (w[k] == "work" || w[k] == "transaction")) ++k;
  if (rollback && first == "rollback" && k < w.size() && w[k] == "to") return TxEffect::kRollbackTo;
  if (k + 1 < w.size() && w[k] == "and" && w[k + 1] == "chain") return TxEffect::kChain;
  return TxEffect::kEnd;
}

bool IsPlainBegin(std::string_view sql) {
  if (sql.size() > 64) return false;
  auto blank = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; };
  std::string words;  // the words, lower case, one space apart
  bool semicolon = false;
  for (size_t i = 0; i < sql.size();) {
    const char c = sql[i];
    if (blank(c)) {
      ++i;
    } else if (c == ';' && !semicolon && !words.empty()) {
      semicolon = true;
      ++i;
    } else if (std::isalpha(static_cast<unsigned char>(c)) && !semicolon) {
      if (!words.empty()) words.push_back(' ');
      for (; i < sql.size() && std::isalpha(static_cast<unsigned char>(sql[i])); ++i) {
        words.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(sql[i]))));
      }
      if (words != "begin" && words != "start" && words != "begin work" && words != "begin transaction" &&
          words != "start transaction") {
        return false;  // most statements stop at their first word
      }
    } else {
      return false;
    }
  }
  return !words.empty() && words != "start";
}

bool CommitsBlock(std::string_view sql) {
  const TxEffect e = TxEffectOf(sql);
  if (e != TxEffect::kEnd && e != TxEffect::kChain) return false;
  const std::vector<std::string> w = LeadingWords(sql, 1);
  return !w.empty() && w[0] != "rollback" && w[0] != "abort";
}

bool MayCommitBlock(std::string_view sql) {
  if (CommitsBlock(sql)) return true;
  const size_t semicolon = sql.find(';');
  return semicolon != std::string_view::npos && SkipBlank(sql, semicolon + 1) < sql.size();
}

char AfterTxEffect(char status, TxEffect effect) {
  switch (effect) {
    case TxEffect::kBegin: return status == 'I' ? 'T' : status;
    case TxEffect::kEnd: return 'I';
    case TxEffect::kChain: return status == 'I' ? 'I' : 'T';
    case TxEffect::kRollbackTo: return status == 'E' ? 'T' : status;
    case TxEffect::kNone: break;
  }
  return status;
}

}  // namespace dtx::sql_proxy
