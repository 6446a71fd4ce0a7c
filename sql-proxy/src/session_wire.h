// Small builders and readers of PostgreSQL protocol messages shared by the halves of Session
// (the relay, AT mode's simple-query path and its extended batches). Header-only; stateless.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "dtx/at/sql_state.h"
#include "dtx/sql_proxy/pg_message.h"

namespace dtx::sql_proxy::wire {

inline void AppendMessage(std::string& out, char type, std::string_view body) {
  out.push_back(type);
  AppendInt32(out, static_cast<int32_t>(body.size() + 4));
  out.append(body);
}

inline void AppendCString(std::string& out, std::string_view s) {
  out.append(s);
  out.push_back('\0');
}

// A simple-query message.
inline std::string QueryMessage(std::string_view sql) {
  std::string out;
  out.push_back('Q');
  AppendInt32(out, static_cast<int32_t>(4 + sql.size() + 1));
  out.append(sql);
  out.push_back('\0');
  return out;
}

inline int16_t ReadInt16(std::string_view b, size_t at) {
  return static_cast<int16_t>((static_cast<uint16_t>(static_cast<uint8_t>(b[at])) << 8) |
                              static_cast<uint16_t>(static_cast<uint8_t>(b[at + 1])));
}

inline int32_t ReadInt32(std::string_view b, size_t at) {
  return static_cast<int32_t>((static_cast<uint32_t>(static_cast<uint8_t>(b[at])) << 24) |
                              (static_cast<uint32_t>(static_cast<uint8_t>(b[at + 1])) << 16) |
                              (static_cast<uint32_t>(static_cast<uint8_t>(b[at + 2])) << 8) |
                              static_cast<uint32_t>(static_cast<uint8_t>(b[at + 3])));
}

// Parse of `q` as `statement`, Bind of its parameters to `portal` with `result_formats`, (with
// `describe`, a Describe of the portal: its RowDescription or NoData) and an Execute of every row.
inline void AppendParseBindExecute(std::string& out, std::string_view statement, std::string_view portal,
                                   const at::AtQuery& q, const std::vector<int16_t>& result_formats,
                                   bool describe = false, bool parse = true) {
  std::string body;
  if (parse) {  // else `statement` is prepared already
    AppendCString(body, statement);
    AppendCString(body, q.sql);
    AppendInt16(body, static_cast<int16_t>(q.params.types.size()));
    for (uint32_t t : q.params.types) AppendInt32(body, static_cast<int32_t>(t));
    AppendMessage(out, 'P', body);
    body.clear();
  }
  AppendCString(body, portal);
  AppendCString(body, statement);
  AppendInt16(body, static_cast<int16_t>(q.params.formats.size()));
  for (int16_t f : q.params.formats) AppendInt16(body, f);
  AppendInt16(body, static_cast<int16_t>(q.params.values.size()));
  for (const auto& v : q.params.values) {
    if (!v) {
      AppendInt32(body, -1);
    } else {
      AppendInt32(body, static_cast<int32_t>(v->size()));
      body.append(*v);
    }
  }
  AppendInt16(body, static_cast<int16_t>(result_formats.size()));
  for (int16_t f : result_formats) AppendInt16(body, f);
  AppendMessage(out, 'B', body);
  if (describe) {
    body.assign(1, 'P');
    AppendCString(body, portal);
    AppendMessage(out, 'D', body);
  }
  body.clear();
  AppendCString(body, portal);
  AppendInt32(body, 0);
  AppendMessage(out, 'E', body);
}

}  // namespace dtx::sql_proxy::wire
