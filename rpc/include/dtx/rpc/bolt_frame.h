// BoltFrame: the fields of one SOFA Bolt command (v1 or v2), as the codec reads and writes
// them. Wire layout in docs/bolt.md.
//
// A BoltFrame does not own its bytes: class_name, header keys and values and content are
// views, into the buffer the frame was decoded from or into strings the encoder's caller
// keeps alive. Copy what must outlive that buffer.
#pragma once

#include <cstdint>
#include <string_view>
#include <utility>
#include <vector>

namespace dtx::rpc {

enum class BoltProtocol : uint8_t { kV1 = 1, kV2 = 2 };

enum class CommandType : uint8_t { kResponse = 0, kRequest = 1, kOneway = 2 };

enum class CommandCode : uint16_t { kHeartbeat = 0, kRequest = 1, kResponse = 2 };

// Response status codes, as SOFA Bolt numbers them.
enum class ResponseStatus : uint16_t {
  kSuccess = 0x0000,
  kError = 0x0001,
  kServerException = 0x0002,
  kUnknown = 0x0003,
  kServerThreadpoolBusy = 0x0004,
  kErrorComm = 0x0005,
  kNoProcessor = 0x0006,
  kTimeout = 0x0007,
  kClientSendError = 0x0008,
  kCodecException = 0x0009,
  kConnectionClosed = 0x0010,
  kServerSerialException = 0x0011,
  kServerDeserialException = 0x0012,
};

std::string_view ResponseStatusName(ResponseStatus status);

inline constexpr uint8_t kCodecHessian2 = 1;
inline constexpr uint8_t kCodecProtobuf = 11;
// v2: bit 0 of the switch byte asks for a CRC32 trailer (honoured when ver1 == 2).
inline constexpr uint8_t kSwitchCrc = 0x01;

using HeaderMap = std::vector<std::pair<std::string_view, std::string_view>>;

struct BoltFrame {
  BoltProtocol protocol = BoltProtocol::kV1;
  uint8_t ver1 = 2;                 // v2 only
  uint8_t switches = kSwitchCrc;    // v2 only
  CommandType type = CommandType::kRequest;
  CommandCode cmd_code = CommandCode::kRequest;
  uint8_t ver2 = 1;
  uint32_t request_id = 0;
  uint8_t codec = kCodecProtobuf;
  int32_t timeout_ms = 0;                              // requests (and one-ways) only
  ResponseStatus status = ResponseStatus::kSuccess;   // responses only
  std::string_view class_name;
  HeaderMap headers;  // wire order kept; a null (-1 length) key or value reads as empty
  std::string_view content;

  bool is_response() const { return type == CommandType::kResponse; }
  bool is_heartbeat() const { return cmd_code == CommandCode::kHeartbeat; }
  bool has_crc() const { return protocol == BoltProtocol::kV2 && ver1 == 2 && (switches & kSwitchCrc); }
  // The first value of a header, or empty when absent.
  std::string_view Header(std::string_view key) const {
    for (const auto& [k, v] : headers)
      if (k == key) return v;
    return {};
  }
};

}  // namespace dtx::rpc
