#include "dtx/sql_proxy/pg_message.h"

#include <cstring>

namespace dtx::sql_proxy {
namespace {

uint32_t ReadU32(const char* p) {
  const auto* u = reinterpret_cast<const unsigned char*>(p);
  return (uint32_t{u[0]} << 24) | (uint32_t{u[1]} << 16) | (uint32_t{u[2]} << 8) | uint32_t{u[3]};
}

Frame Error(std::string why) {
  Frame f;
  f.status = FrameStatus::kError;
  f.error = std::move(why);
  return f;
}

void AppendFields(std::string& out, char type, std::string_view severity, std::string_view sqlstate,
                  std::string_view message) {
  const size_t at = out.size();
  out.push_back(type);
  AppendInt32(out, 0);
  auto field = [&out](char code, std::string_view v) {
    out.push_back(code);
    out.append(v);
    out.push_back('\0');
  };
  field('S', severity);
  field('V', severity);
  field('C', sqlstate);
  field('M', message);
  out.push_back('\0');
  const auto len = static_cast<int32_t>(out.size() - at - 1);
  std::string len_bytes;
  AppendInt32(len_bytes, len);
  std::memcpy(out.data() + at + 1, len_bytes.data(), 4);
}

}  // namespace

Frame ReadStartupPacket(std::string_view bytes, size_t max_size) {
  if (bytes.size() < 4) return {};
  const uint32_t len = ReadU32(bytes.data());
  if (len < 8) return Error("startup packet length " + std::to_string(len) + " is below 8");
  if (len > max_size) {
    return Error("startup packet length " + std::to_string(len) + " is over the limit of " + std::to_string(max_size));
  }
  Frame f;
  f.size = len;
  if (bytes.size() < len) return f;  // kNeedMore, size known
  f.status = FrameStatus::kMessage;
  f.code = ReadU32(bytes.data() + 4);
  f.body = bytes.substr(8, len - 8);
  return f;
}

Frame ReadMessage(std::string_view bytes, size_t max_size) {
  if (bytes.size() < 5) return {};
  const uint32_t len = ReadU32(bytes.data() + 1);
  if (len < 4) return Error("message length " + std::to_string(len) + " is below 4");
  if (len > 0x7fffffffu || size_t{len} + 1 > max_size) {
    return Error("message length " + std::to_string(len) + " is over the limit of " + std::to_string(max_size));
  }
  Frame f;
  f.type = bytes[0];
  f.size = size_t{len} + 1;
  if (bytes.size() < f.size) return f;  // kNeedMore, size known
  f.status = FrameStatus::kMessage;
  f.body = bytes.substr(5, len - 4);
  return f;
}

std::optional<std::vector<std::pair<std::string, std::string>>> ParseStartupParameters(std::string_view body) {
  std::vector<std::pair<std::string, std::string>> out;
  while (true) {
    auto name = ReadCString(body);
    if (!name) return std::nullopt;
    body.remove_prefix(name->size() + 1);
    if (name->empty()) return body.empty() ? std::optional(std::move(out)) : std::nullopt;
    auto value = ReadCString(body);
    if (!value) return std::nullopt;
    body.remove_prefix(value->size() + 1);
    out.emplace_back(std::string(*name), std::string(*value));
  }
}

std::optional<BackendKey> ParseBackendKey(std::string_view body) {
  if (body.size() != 8) return std::nullopt;
  return BackendKey{static_cast<int32_t>(ReadU32(body.data())), static_cast<int32_t>(ReadU32(body.data() + 4))};
}

std::optional<std::string_view> ReadCString(std::string_view body) {
  const size_t nul = body.find('\0');
  if (nul == std::string_view::npos) return std::nullopt;
  return body.substr(0, nul);
}

std::optional<ParseFields> ParseParse(std::string_view body) {
  auto name = ReadCString(body);
  if (!name) return std::nullopt;
  body.remove_prefix(name->size() + 1);
  auto query = ReadCString(body);
  if (!query) return std::nullopt;
  return ParseFields{*name, *query};
}

std::optional<ErrorFields> ParseErrorFields(std::string_view body) {
  ErrorFields out;
  while (!body.empty() && body.front() != '\0') {
    const char code = body.front();
    body.remove_prefix(1);
    auto value = ReadCString(body);
    if (!value) return std::nullopt;
    body.remove_prefix(value->size() + 1);
    if (code == 'S') out.severity = std::string(*value);
    if (code == 'C') out.sqlstate = std::string(*value);
    if (code == 'M') out.message = std::string(*value);
  }
  if (body.size() != 1) return std::nullopt;  // the terminating NUL, and nothing after it
  return out;
}

void AppendInt32(std::string& out, int32_t v) {
  const auto u = static_cast<uint32_t>(v);
  const char b[4] = {static_cast<char>(u >> 24), static_cast<char>(u >> 16), static_cast<char>(u >> 8),
                     static_cast<char>(u)};
  out.append(b, 4);
}

void AppendInt16(std::string& out, int16_t v) {
  const auto u = static_cast<uint16_t>(v);
  const char b[2] = {static_cast<char>(u >> 8), static_cast<char>(u)};
  out.append(b, 2);
}

void AppendErrorResponse(std::string& out, std::string_view severity, std::string_view sqlstate,
                         std::string_view message) {
  AppendFields(out, 'E', severity, sqlstate, message);
}

void AppendNoticeResponse(std::string& out, std::string_view severity, std::string_view sqlstate,
                          std::string_view message) {
  AppendFields(out, 'N', severity, sqlstate, message);
}

void AppendCommandComplete(std::string& out, std::string_view tag) {
  out.push_back('C');
  AppendInt32(out, static_cast<int32_t>(4 + tag.size() + 1));
  out.append(tag);
  out.push_back('\0');
}

void AppendReadyForQuery(std::string& out, char status) {
  out.push_back('Z');
  AppendInt32(out, 5);
  out.push_back(status);
}

void AppendRowDescriptionText(std::string& out, std::string_view column) {
  out.push_back('T');
  AppendInt32(out, static_cast<int32_t>(4 + 2 + column.size() + 1 + 18));
  AppendInt16(out, 1);
  out.append(column);
  out.push_back('\0');
  AppendInt32(out, 0);   // table oid
  AppendInt16(out, 0);   // column number
  AppendInt32(out, 25);  // type oid: text
  AppendInt16(out, -1);  // type size: variable
  AppendInt32(out, -1);  // type modifier
  AppendInt16(out, 0);   // format: text
}

void AppendDataRowText(std::string& out, std::optional<std::string_view> value) {
  out.push_back('D');
  AppendInt32(out, static_cast<int32_t>(4 + 2 + 4 + (value ? value->size() : 0)));
  AppendInt16(out, 1);
  if (!value) {
    AppendInt32(out, -1);
    return;
  }
  AppendInt32(out, static_cast<int32_t>(value->size()));
  out.append(*value);
}

void AppendBackendKeyData(std::string& out, BackendKey key) {
  out.push_back('K');
  AppendInt32(out, 12);
  AppendInt32(out, key.pid);
  AppendInt32(out, key.secret);
}

std::string CancelRequestPacket(BackendKey key) {
  std::string out;
  AppendInt32(out, 16);
  AppendInt32(out, static_cast<int32_t>(kCancelRequestCode));
  AppendInt32(out, key.pid);
  AppendInt32(out, key.secret);
  return out;
}

std::string StartupPacket(const std::vector<std::pair<std::string, std::string>>& parameters) {
  std::string body;
  AppendInt32(body, static_cast<int32_t>(kProtocolV3));
  for (const auto& [name, value] : parameters) {
    body.append(name);
    body.push_back('\0');
    body.append(value);
    body.push_back('\0');
  }
  body.push_back('\0');
  std::string out;
  AppendInt32(out, static_cast<int32_t>(body.size() + 4));
  out += body;
  return out;
}

}  // namespace dtx::sql_proxy
