#include "dtx/at/hidden_columns.h"

#include <cstdint>

namespace dtx::at {

namespace {

uint32_t Be32(std::string_view b, size_t at) {
  return (uint32_t(uint8_t(b[at])) << 24) | (uint32_t(uint8_t(b[at + 1])) << 16) | (uint32_t(uint8_t(b[at + 2])) << 8) |
         uint32_t(uint8_t(b[at + 3]));
}

// Walks the columns of a RowDescription or DataRow body, checking every length, and calls
// on_column(index, offset) for each (offset: where the column starts). No allocation: this runs
// for every row a rewritten statement returns.
template <class F>
Status Walk(char type, std::string_view body, size_t* count_out, F&& on_column) {
  if (body.size() < 2) return Corruption("short message");
  const size_t count = (size_t(uint8_t(body[0])) << 8) | uint8_t(body[1]);
  *count_out = count;
  size_t p = 2;
  for (size_t i = 0; i < count; ++i) {
    on_column(i, p);
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
  return Status::Ok();
}

size_t CountOf(std::string_view body) { return body.size() < 2 ? 0 : (size_t(uint8_t(body[0])) << 8) | uint8_t(body[1]); }

}  // namespace

Result<std::string> DropTrailingColumns(char type, std::string_view body, int n) {
  if (type != 'T' && type != 'D') return InvalidArgument("not a RowDescription or DataRow");
  const size_t declared = CountOf(body);
  const size_t keep = n >= 0 && static_cast<size_t>(n) <= declared ? declared - static_cast<size_t>(n) : 0;
  size_t cut = body.size(), count = 0;
  DTX_RETURN_IF_ERROR(Walk(type, body, &count, [&](size_t i, size_t at) {
    if (i == keep) cut = at;
  }));
  if (n < 0 || static_cast<size_t>(n) > count) return InvalidArgument("fewer columns than hidden ones");
  std::string out;
  out.reserve(cut);
  out += char((keep >> 8) & 0xFF);
  out += char(keep & 0xFF);
  out.append(body.substr(2, cut - 2));
  return out;
}

Result<std::vector<std::optional<std::string>>> TrailingValues(std::string_view body, int n) {
  const size_t declared = CountOf(body);
  const size_t first = n >= 0 && static_cast<size_t>(n) <= declared ? declared - static_cast<size_t>(n) : declared;
  std::vector<std::optional<std::string>> out;
  size_t count = 0;
  DTX_RETURN_IF_ERROR(Walk('D', body, &count, [&](size_t i, size_t at) {
    if (i < first || at + 4 > body.size()) return;  // a short body fails the walk right after
    const uint32_t len = Be32(body, at);
    if (len == 0xFFFFFFFFu) out.emplace_back();
    else if (len <= body.size() - at - 4) out.emplace_back(std::string(body.substr(at + 4, len)));
  }));
  if (n < 0 || static_cast<size_t>(n) > count) return InvalidArgument("fewer columns than hidden ones");
  return out;
}

}  // namespace dtx::at
