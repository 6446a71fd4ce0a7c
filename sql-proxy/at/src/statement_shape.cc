#include "dtx/at/statement_shape.h"

#include <cstring>
#include <list>
#include <mutex>
#include <unordered_map>

#include "shape_cache.h"

namespace dtx::at {

namespace {

// Longer texts are analysed each time: they are rarely repeated and would crowd the cache.
constexpr size_t kMaxShapeText = 16 * 1024;

bool Space(unsigned char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }
bool Digit(unsigned char c) { return c >= '0' && c <= '9'; }
bool IdentStart(unsigned char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c >= 0x80; }
bool IdentChar(unsigned char c) { return IdentStart(c) || Digit(c) || c == '$'; }
bool OpChar(unsigned char c) { return c != 0 && std::strchr("+-*/<>=~!@#%^&|`?", c) != nullptr; }

// Keywords after which "(" opens a list of values rather than a call or a type modifier.
bool OpensValues(std::string_view word) {
  static constexpr std::string_view kWords[] = {"values", "in", "and", "or", "not", "where", "when", "then", "else", "set"};
  if (word.size() > 6) return false;
  char lower[8];
  for (size_t i = 0; i < word.size(); ++i) lower[i] = static_cast<char>(std::tolower(static_cast<unsigned char>(word[i])));
  const std::string_view w(lower, word.size());
  for (auto k : kWords) {
    if (w == k) return true;
  }
  return false;
}

}  // namespace

ShapeKey ComputeShapeKey(std::string_view sql) {
  ShapeKey k;
  auto exact = [&]() -> ShapeKey {
    ShapeKey e;
    e.key.reserve(sql.size() + 1);
    e.key.push_back('E');
    e.key.append(sql);
    return e;
  };
  if (sql.size() > kMaxShapeText) return exact();
  k.key.reserve(sql.size() + 1);
  k.key.push_back('S');
  enum Prev { kStart, kIdent, kOp, kComma, kOpen, kClose, kValue, kOther } prev = kStart;
  bool prev_opens_values = false;  // the previous identifier is one of OpensValues'
  std::vector<bool> call;          // per open bracket: a call / type modifier (literals kept)
  const size_t n = sql.size();
  auto abstractable = [&] { return (prev == kOp || prev == kComma || prev == kOpen) && (call.empty() || !call.back()); };
  auto literal = [&](char cls, size_t begin, size_t end) {
    k.key.push_back('\x01');
    k.key.push_back(cls);
    k.literals.push_back(ShapeLiteral{static_cast<uint32_t>(begin), static_cast<uint32_t>(end - begin)});
  };
  size_t i = 0;
  while (i < n) {
    const unsigned char c = static_cast<unsigned char>(sql[i]);
    if (c == 0 || c == 1) return exact();
    if (Space(c)) {
      k.key.push_back(static_cast<char>(c));
      ++i;
      continue;
    }
    if (c == '-' && i + 1 < n && sql[i + 1] == '-') {  // to the end of the line
      size_t e = sql.find_first_of("\r\n", i);
      if (e == std::string_view::npos) e = n;
      if (sql.substr(i, e - i).find('\0') != std::string_view::npos) return exact();
      k.key.append(sql.substr(i, e - i));
      i = e;
      continue;
    }
    if (c == '/' && i + 1 < n && sql[i + 1] == '*') {  // nested, as PostgreSQL's
      size_t j = i + 2;
      int depth = 1;
      while (depth > 0) {
        if (j + 1 >= n) return exact();
        if (sql[j] == '\0') return exact();
        if (sql[j] == '/' && sql[j + 1] == '*') depth++, j += 2;
        else if (sql[j] == '*' && sql[j + 1] == '/') depth--, j += 2;
        else ++j;
      }
      k.key.append(sql.substr(i, j - i));
      i = j;
      continue;
    }
    if (c == '\'') {
      // E'', B'', X'', N'', U&'' and the like: left to the grammar.
      if (i > 0 && (IdentChar(static_cast<unsigned char>(sql[i - 1])) || sql[i - 1] == '&')) return exact();
      size_t j = i + 1;
      for (;;) {
        if (j >= n || sql[j] == '\\' || sql[j] == '\0' || sql[j] == '\x01') return exact();
        if (sql[j] == '\'') {
          if (j + 1 < n && sql[j + 1] == '\'') {
            j += 2;
            continue;
          }
          break;
        }
        ++j;
      }
      if (abstractable()) literal('S', i, j + 1);
      else k.key.append(sql.substr(i, j + 1 - i));
      prev = kValue;
      i = j + 1;
      continue;
    }
    if (c == '"') {
      if (i > 0 && sql[i - 1] == '&') return exact();
      size_t j = i + 1;
      for (;;) {
        if (j >= n || sql[j] == '\0' || sql[j] == '\x01') return exact();
        if (sql[j] == '"') {
          if (j + 1 < n && sql[j + 1] == '"') {
            j += 2;
            continue;
          }
          break;
        }
        ++j;
      }
      k.key.append(sql.substr(i, j + 1 - i));
      prev = kIdent;
      prev_opens_values = false;
      i = j + 1;
      continue;
    }
    if (c == '$') {  // a parameter stays in the key; a dollar quote is left to the grammar
      if (i + 1 >= n || !Digit(static_cast<unsigned char>(sql[i + 1]))) return exact();
      size_t j = i + 1;
      while (j < n && Digit(static_cast<unsigned char>(sql[j]))) ++j;
      if (j < n && IdentChar(static_cast<unsigned char>(sql[j]))) return exact();
      k.key.append(sql.substr(i, j - i));
      prev = kValue;
      i = j;
      continue;
    }
    if (Digit(c)) {
      if (i > 0 && sql[i - 1] == '.') return exact();
      size_t j = i;
      while (j < n && Digit(static_cast<unsigned char>(sql[j]))) ++j;
      bool decimal = false;
      if (j < n && sql[j] == '.') {
        if (j + 1 >= n || !Digit(static_cast<unsigned char>(sql[j + 1]))) return exact();
        decimal = true;
        ++j;
        while (j < n && Digit(static_cast<unsigned char>(sql[j]))) ++j;
      }
      // 1e5, 0x1F, 1_000, 1.2.3: left to the grammar.
      if (j < n && (IdentChar(static_cast<unsigned char>(sql[j])) || sql[j] == '.')) return exact();
      // Up to 9 digits is always an integer constant of the grammar (it fits an int4).
      if (abstractable() && (decimal || j - i <= 9)) literal(decimal ? 'F' : 'I', i, j);
      else k.key.append(sql.substr(i, j - i));
      prev = kValue;
      i = j;
      continue;
    }
    if (IdentStart(c)) {
      size_t j = i + 1;
      while (j < n && IdentChar(static_cast<unsigned char>(sql[j]))) ++j;
      const std::string_view word = sql.substr(i, j - i);
      k.key.append(word);
      prev = kIdent;
      prev_opens_values = OpensValues(word);
      i = j;
      continue;
    }
    if (c == '(' || c == '[') {
      const bool values = prev == kStart || prev == kOp || prev == kComma || prev == kOpen || (prev == kIdent && prev_opens_values);
      call.push_back(!values);
      k.key.push_back(static_cast<char>(c));
      prev = kOpen;
      ++i;
      continue;
    }
    if (c == ')' || c == ']') {
      if (call.empty()) return exact();
      call.pop_back();
      k.key.push_back(static_cast<char>(c));
      prev = kClose;
      ++i;
      continue;
    }
    if (c == ',') {
      k.key.push_back(',');
      prev = kComma;
      ++i;
      continue;
    }
    if (OpChar(c)) {
      size_t j = i;
      while (j < n && OpChar(static_cast<unsigned char>(sql[j]))) {
        if (j > i && j + 1 < n && ((sql[j] == '-' && sql[j + 1] == '-') || (sql[j] == '/' && sql[j + 1] == '*'))) break;
        ++j;
      }
      k.key.append(sql.substr(i, j - i));
      prev = kOp;
      i = j;
      continue;
    }
    if (c == ';' || c == '.' || c == ':') {
      k.key.push_back(static_cast<char>(c));
      prev = kOther;
      ++i;
      continue;
    }
    return exact();
  }
  if (!call.empty()) return exact();
  k.abstracted = true;
  return k;
}

void TextTemplate::AppendTo(std::string* out, std::string_view sql, const std::vector<ShapeLiteral>& literals) const {
  size_t at = 0;
  for (const auto& [offset, index] : holes_) {
    out->append(fixed_, at, offset - at);
    const ShapeLiteral& l = literals[index];
    out->append(sql.substr(l.begin, l.len));
    at = offset;
  }
  out->append(fixed_, at, std::string::npos);
}

void TextTemplate::AppendParamsTo(std::string* out) const {
  size_t at = 0;
  for (const auto& [offset, index] : holes_) {
    out->append(fixed_, at, offset - at);
    out->push_back('$');
    out->append(std::to_string(index + 1));
    at = offset;
  }
  out->append(fixed_, at, std::string::npos);
}

size_t StatementShape::ByteSize() const {
  size_t n = sizeof(*this) + statement.ByteSize() + with.ByteSize() + where.ByteSize() + update_head.ByteSize() +
             update_where.ByteSize() + update_tail.ByteSize() + relation.size() + qualifier.size() +
             extra_params.size() * sizeof(int) + analysis.table.schema.size() + analysis.table.name.size() +
             analysis.savepoint.size() + tree_bytes;
  for (const auto& c : analysis.set_columns) n += c.size() + sizeof(std::string);
  if (refusal) n += refusal->message().size();
  n += local.table.schema.size() + local.table.name.size() + local.qualifier.size();
  if (local.refusal) n += local.refusal->message().size();
  return n;
}

// ---- the cache ----

ShapeCache& ShapeCache::Global() {
  static ShapeCache* cache = new ShapeCache();  // never destroyed: sessions may outlive statics
  return *cache;
}

ShapeCache::ShapeCache() = default;

ShapeCache::Lookup ShapeCache::Find(std::string_view key) {
  std::lock_guard lock(mu_);
  auto it = index_.find(key);
  if (it == index_.end()) {
    ++misses_;
    return Lookup{false, nullptr};
  }
  lru_.splice(lru_.begin(), lru_, it->second);
  if (it->second->shape) ++hits_;  // a marker sends the caller to the exact text: counted there
  return Lookup{true, it->second->shape};
}

void ShapeCache::Insert(std::string key, std::shared_ptr<const StatementShape> shape) {
  const size_t bytes = key.size() * 2 + 64 + (shape ? shape->ByteSize() : 0);
  std::lock_guard lock(mu_);
  if (bytes > max_bytes_) return;
  if (auto it = index_.find(key); it != index_.end()) {
    bytes_ -= it->second->bytes;
    it->second->shape = std::move(shape);
    it->second->bytes = bytes;
    bytes_ += bytes;
    lru_.splice(lru_.begin(), lru_, it->second);
  } else {
    lru_.push_front(Entry{std::move(key), std::move(shape), bytes});
    index_.emplace(std::string_view(lru_.front().key), lru_.begin());
    bytes_ += bytes;
  }
  EvictLocked();
}

void ShapeCache::EvictLocked() {
  while (!lru_.empty() && (lru_.size() > max_entries_ || bytes_ > max_bytes_)) {
    index_.erase(std::string_view(lru_.back().key));
    bytes_ -= lru_.back().bytes;
    lru_.pop_back();
  }
}

void ShapeCache::Clear() {
  std::lock_guard lock(mu_);
  index_.clear();
  lru_.clear();
  bytes_ = 0;
  hits_ = misses_ = 0;
}

void ShapeCache::SetLimits(size_t max_entries, size_t max_bytes) {
  std::lock_guard lock(mu_);
  max_entries_ = max_entries;
  max_bytes_ = max_bytes;
  EvictLocked();
}

ShapeCacheStats ShapeCache::Stats() {
  std::lock_guard lock(mu_);
  return ShapeCacheStats{hits_, misses_, lru_.size(), bytes_};
}

ShapeCacheStats ShapeCacheStatistics() { return ShapeCache::Global().Stats(); }
void ClearShapeCache() { ShapeCache::Global().Clear(); }
void SetShapeCacheLimits(size_t max_entries, size_t max_bytes) { ShapeCache::Global().SetLimits(max_entries, max_bytes); }

}  // namespace dtx::at
