#include "dtx/at/hidden_columns.h"

#include <cstdint>

namespace dtx::at {

namespace {

uint32_t Be32(std::string_view b, size_t at) {
  return (uint32_t(uint8_t(b[at])) << 24) | (uint32_t(uint8_t(b[at + 1])) << 16) | (uint32_t(uint8_t(b[at + 2])) << 8) |
         uint32_t(uint8_t(b[at + 3]));
}

// Offsets where each column starts, and the end: n+1 offsets after the 2-byte count.
Result<std::vector<size_t>> Columns(char type, std::string_view body) {
  if (body.size() < 2) return Corruption("short message");
  const size_t count = (size_t(uint8_t(body[0])) << 8) | uint8_t(body[1]);
  std::vector<size_t> at;
  at.reserve(count + 1);
  size_t p = 2;
  for (size_t i = 0; i < count; ++i) {
    at.push_back(p);
    if (type == 'T') {
      size_t z = body.find('\0', p);
      if (z == std::string_view::npos || z + 1 + 18 > body.size()) return Corruption("malformed RowDescription");
      p = z + 1 + 18;
    } else {
      if (p + 4 > body.size()) return Corruption("malformed DataRow");
      uint32_t len = Be32(body, p);
      p += 4;
      if (len != 0xFFFFFFFFu) {
        if (len > body.size() - p) return Corruption("malformed DataRow");
        p += len;
      }
    }
  }
  if (p != body.size()) return Corruption("trailing bytes after the columns");
  at.push_back(p);
  return at;
}

}  // namespace

Result<std::string> DropTrailingColumns(char type, std::string_view body, int n) {
  if (type != 'T' && type != 'D') return InvalidArgument("not a RowDescription or DataRow");
  auto at = Columns(type, body);
  if (!at.ok()) return at.status();
  const size_t count = at->size() - 1;
  if (n < 0 || static_cast<size_t>(n) > count) return InvalidArgument("fewer columns than hidden ones");
  const size_t keep = count - static_cast<size_t>(n);
  std::string out;
  out += char((keep >> 8) & 0xFF);
  out += char(keep & 0xFF);
  out.append(body.substr(2, (*at)[keep] - 2));
  return out;
}

Result<std::vector<std::optional<std::string>>> TrailingValues(std::string_view body, int n) {
  auto at = Columns('D', body);
  if (!at.ok()) return at.status();
  const size_t count = at->size() - 1;
  if (n < 0 || static_cast<size_t>(n) > count) return InvalidArgument("fewer columns than hidden ones");
  std::vector<std::optional<std::string>> out;
  for (size_t i = count - n; i < count; ++i) {
    size_t p = (*at)[i];
    uint32_t len = Be32(body, p);
    if (len == 0xFFFFFFFFu) out.emplace_back();
    else out.emplace_back(std::string(body.substr(p + 4, len)));
  }
  return out;
}

}  // namespace dtx::at
