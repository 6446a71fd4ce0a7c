#include "dtx/rpc/bolt_codec.h"

#include <libdeflate.h>

#include <cstring>

namespace dtx::rpc {
namespace {

// Sizes of the fixed part of each layout, before class name, header map and content.
constexpr size_t kV1RequestHeader = 22;
constexpr size_t kV1ResponseHeader = 20;
constexpr size_t kV2RequestHeader = 24;
constexpr size_t kV2ResponseHeader = 22;
constexpr size_t kCrcSize = 4;

uint16_t Get16(const uint8_t* p) { return static_cast<uint16_t>(p[0] << 8 | p[1]); }
uint32_t Get32(const uint8_t* p) {
  return uint32_t{p[0]} << 24 | uint32_t{p[1]} << 16 | uint32_t{p[2]} << 8 | uint32_t{p[3]};
}

void Put8(std::string& out, uint8_t v) { out.push_back(static_cast<char>(v)); }
void Put16(std::string& out, uint16_t v) {
  char b[2] = {static_cast<char>(v >> 8), static_cast<char>(v)};
  out.append(b, 2);
}
void Put32(std::string& out, uint32_t v) {
  char b[4] = {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8),
               static_cast<char>(v)};
  out.append(b, 4);
}

size_t FixedHeaderSize(BoltProtocol protocol, bool response) {
  if (protocol == BoltProtocol::kV1) return response ? kV1ResponseHeader : kV1RequestHeader;
  return response ? kV2ResponseHeader : kV2RequestHeader;
}

size_t HeaderMapSize(const HeaderMap& headers) {
  size_t n = 0;
  for (const auto& [k, v] : headers) n += 8 + k.size() + v.size();
  return n;
}

DecodeResult Error(std::string message) { return {DecodeStatus::kError, 0, std::move(message)}; }

// Parses the header map: [int32 len][bytes] key, then value, repeated; -1 is null.
bool ParseHeaderMap(std::string_view bytes, HeaderMap& headers, std::string& error) {
  headers.clear();
  auto read_string = [&](size_t& pos, std::string_view& out) {
    if (bytes.size() - pos < 4) {
      error = "header map entry truncated";
      return false;
    }
    auto len = static_cast<int32_t>(Get32(reinterpret_cast<const uint8_t*>(bytes.data() + pos)));
    pos += 4;
    if (len == -1) {
      out = {};
      return true;
    }
    if (len < 0 || static_cast<size_t>(len) > bytes.size() - pos) {
      error = "header map string length " + std::to_string(len) + " runs past the header map";
      return false;
    }
    out = bytes.substr(pos, static_cast<size_t>(len));
    pos += static_cast<size_t>(len);
    return true;
  };
  size_t pos = 0;
  while (pos < bytes.size()) {
    std::string_view key, value;
    if (!read_string(pos, key) || !read_string(pos, value)) return false;
    headers.emplace_back(key, value);
  }
  return true;
}

}  // namespace

std::string_view ResponseStatusName(ResponseStatus status) {
  switch (status) {
    case ResponseStatus::kSuccess: return "SUCCESS";
    case ResponseStatus::kError: return "ERROR";
    case ResponseStatus::kServerException: return "SERVER_EXCEPTION";
    case ResponseStatus::kUnknown: return "UNKNOWN";
    case ResponseStatus::kServerThreadpoolBusy: return "SERVER_THREADPOOL_BUSY";
    case ResponseStatus::kErrorComm: return "ERROR_COMM";
    case ResponseStatus::kNoProcessor: return "NO_PROCESSOR";
    case ResponseStatus::kTimeout: return "TIMEOUT";
    case ResponseStatus::kClientSendError: return "CLIENT_SEND_ERROR";
    case ResponseStatus::kCodecException: return "CODEC_EXCEPTION";
    case ResponseStatus::kConnectionClosed: return "CONNECTION_CLOSED";
    case ResponseStatus::kServerSerialException: return "SERVER_SERIAL_EXCEPTION";
    case ResponseStatus::kServerDeserialException: return "SERVER_DESERIAL_EXCEPTION";
  }
  return "UNRECOGNISED";
}

uint32_t BoltCrc32(std::string_view bytes) {
  // libdeflate's CRC-32 is zlib's polynomial, several times faster on frame-sized inputs.
  return libdeflate_crc32(0, bytes.data(), bytes.size());
}

DecodeResult DecodeFrame(std::string_view bytes, size_t max_frame_size, BoltFrame& frame) {
  const auto* p = reinterpret_cast<const uint8_t*>(bytes.data());
  if (bytes.empty()) return {DecodeStatus::kNeedMore};

  BoltProtocol protocol;
  if (p[0] == 1) {
    protocol = BoltProtocol::kV1;
  } else if (p[0] == 2) {
    protocol = BoltProtocol::kV2;
  } else {
    return Error("unknown Bolt protocol code " + std::to_string(p[0]));
  }
  const size_t type_at = protocol == BoltProtocol::kV1 ? 1 : 2;
  if (bytes.size() <= type_at) return {DecodeStatus::kNeedMore};
  const uint8_t type = p[type_at];
  if (type > static_cast<uint8_t>(CommandType::kOneway))
    return Error("unknown Bolt command type " + std::to_string(type));
  const bool response = type == static_cast<uint8_t>(CommandType::kResponse);
  const size_t fixed = FixedHeaderSize(protocol, response);
  if (bytes.size() < fixed) return {DecodeStatus::kNeedMore};

  frame.protocol = protocol;
  frame.type = static_cast<CommandType>(type);
  size_t pos = 1;
  if (protocol == BoltProtocol::kV2) {
    frame.ver1 = p[pos];
    pos += 1;
  }
  pos += 1;  // type
  const uint16_t cmd = Get16(p + pos);
  pos += 2;
  if (cmd > static_cast<uint16_t>(CommandCode::kResponse))
    return Error("unknown Bolt command code " + std::to_string(cmd));
  frame.cmd_code = static_cast<CommandCode>(cmd);
  frame.ver2 = p[pos++];
  frame.request_id = Get32(p + pos);
  pos += 4;
  frame.codec = p[pos++];
  if (protocol == BoltProtocol::kV2) frame.switches = p[pos++];
  if (response) {
    frame.status = static_cast<ResponseStatus>(Get16(p + pos));
    frame.timeout_ms = 0;
    pos += 2;
  } else {
    frame.timeout_ms = static_cast<int32_t>(Get32(p + pos));
    frame.status = ResponseStatus::kSuccess;
    pos += 4;
  }
  const size_t class_len = Get16(p + pos);
  const size_t header_len = Get16(p + pos + 2);
  const auto content_len = static_cast<int32_t>(Get32(p + pos + 4));
  pos += 8;
  if (content_len < 0) return Error("negative content length " + std::to_string(content_len));

  const size_t crc_len = frame.has_crc() ? kCrcSize : 0;
  const size_t total = fixed + class_len + header_len + static_cast<size_t>(content_len) + crc_len;
  if (total > max_frame_size) {
    return Error("frame of " + std::to_string(total) + " bytes exceeds the maximum of " +
                 std::to_string(max_frame_size));
  }
  if (bytes.size() < total) return {DecodeStatus::kNeedMore, total};

  if (crc_len) {
    const uint32_t expected = Get32(p + total - kCrcSize);
    const uint32_t actual = BoltCrc32(bytes.substr(0, total - kCrcSize));
    if (expected != actual) return Error("CRC32 mismatch");
  }

  frame.class_name = bytes.substr(pos, class_len);
  pos += class_len;
  std::string error;
  if (!ParseHeaderMap(bytes.substr(pos, header_len), frame.headers, error)) return Error(std::move(error));
  pos += header_len;
  frame.content = bytes.substr(pos, static_cast<size_t>(content_len));
  return {DecodeStatus::kFrame, total};
}

size_t EncodedSize(const BoltFrame& frame) {
  return FixedHeaderSize(frame.protocol, frame.is_response()) + frame.class_name.size() +
         HeaderMapSize(frame.headers) + frame.content.size() + (frame.has_crc() ? kCrcSize : 0);
}

void EncodeFrame(const BoltFrame& frame, std::string& out) {
  const size_t start = out.size();
  out.reserve(start + EncodedSize(frame));
  Put8(out, static_cast<uint8_t>(frame.protocol));
  if (frame.protocol == BoltProtocol::kV2) Put8(out, frame.ver1);
  Put8(out, static_cast<uint8_t>(frame.type));
  Put16(out, static_cast<uint16_t>(frame.cmd_code));
  Put8(out, frame.ver2);
  Put32(out, frame.request_id);
  Put8(out, frame.codec);
  if (frame.protocol == BoltProtocol::kV2) Put8(out, frame.switches);
  if (frame.is_response()) {
    Put16(out, static_cast<uint16_t>(frame.status));
  } else {
    Put32(out, static_cast<uint32_t>(frame.timeout_ms));
  }
  Put16(out, static_cast<uint16_t>(frame.class_name.size()));
  Put16(out, static_cast<uint16_t>(HeaderMapSize(frame.headers)));
  Put32(out, static_cast<uint32_t>(frame.content.size()));
  out.append(frame.class_name);
  for (const auto& [k, v] : frame.headers) {
    Put32(out, static_cast<uint32_t>(k.size()));
    out.append(k);
    Put32(out, static_cast<uint32_t>(v.size()));
    out.append(v);
  }
  out.append(frame.content);
  if (frame.has_crc()) Put32(out, BoltCrc32(std::string_view(out).substr(start)));
}

}  // namespace dtx::rpc
