// PostgreSQL v3 wire protocol: pure functions over bytes that find message boundaries, read the
// few message fields the proxy looks at, and build the messages the proxy answers with itself.
// Nothing here touches a socket or allocates on the read path, so unit tests and the fuzzer call
// these functions directly.
//
// Two framings exist on the wire:
//   - the first packet of a connection (StartupMessage, SSLRequest, GSSENCRequest,
//     CancelRequest): int32 length (counting itself), int32 code, body;
//   - every later message: one type byte, int32 length (counting itself, not the type byte), body.
// A length is checked against a maximum as soon as the header is read, before the body arrives.
//
// Thread-safety: stateless functions; safe from any thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace dtx::sql_proxy {

// PostgreSQL's own limits: a startup packet is at most 10000 bytes; a regular message at most 1 GiB.
inline constexpr size_t kMaxStartupPacket = 10000;
inline constexpr size_t kDefaultMaxMessage = 1024 * 1024 * 1024;

// Request codes of the first packet.
inline constexpr uint32_t kProtocolV3 = 196608;  // 3.0
inline constexpr uint32_t kCancelRequestCode = 80877102;
inline constexpr uint32_t kSslRequestCode = 80877103;
inline constexpr uint32_t kGssEncRequestCode = 80877104;

enum class FrameStatus {
  kMessage,   // a whole message starts the bytes: `size` bytes
  kNeedMore,  // the bytes are a valid prefix; `size` is the whole message's size once its header is read, else 0
  kError,     // the bytes can never be a valid message: `error` says why
};

struct Frame {
  FrameStatus status = FrameStatus::kNeedMore;
  size_t size = 0;         // the whole message, header included
  char type = 0;           // regular messages: the type byte; startup packets: 0
  uint32_t code = 0;       // startup packets: the request code (protocol version or special code)
  std::string_view body;   // kMessage: the bytes after the header (views into the input)
  std::string error;       // kError only
};

// The first packet of a connection. Its length must be 8..max_size.
Frame ReadStartupPacket(std::string_view bytes, size_t max_size = kMaxStartupPacket);

// One regular message. Its length field must be 4..max_size-1 (so `size` <= max_size).
// The type byte is not checked here: which types are valid depends on the direction.
Frame ReadMessage(std::string_view bytes, size_t max_size = kDefaultMaxMessage);

// ---- reading fields ----

// A StartupMessage body: name/value pairs of NUL-terminated strings, ending with one NUL.
// nullopt if malformed (a missing terminator, a name without a value).
std::optional<std::vector<std::pair<std::string, std::string>>> ParseStartupParameters(std::string_view body);

struct BackendKey {
  int32_t pid = 0;
  int32_t secret = 0;
  friend bool operator==(const BackendKey&, const BackendKey&) = default;
};

// The body of BackendKeyData ('K') or of a CancelRequest packet (after its code): pid, secret.
std::optional<BackendKey> ParseBackendKey(std::string_view body);

// The NUL-terminated string at the start of `body` (a Query's SQL, a Parse's statement name).
// nullopt if there is no NUL.
std::optional<std::string_view> ReadCString(std::string_view body);

// A Parse body: statement name, then the query. nullopt if malformed.
struct ParseFields {
  std::string_view statement;
  std::string_view query;
};
std::optional<ParseFields> ParseParse(std::string_view body);

// An ErrorResponse or NoticeResponse body: the severity, SQLSTATE and message fields.
struct ErrorFields {
  std::string severity, sqlstate, message;
};
std::optional<ErrorFields> ParseErrorFields(std::string_view body);

// ---- building (each appends one whole message to `out`) ----

void AppendInt32(std::string& out, int32_t v);
void AppendInt16(std::string& out, int16_t v);
// SQLSTATE must be 5 characters. Severity "ERROR" or "FATAL".
void AppendErrorResponse(std::string& out, std::string_view severity, std::string_view sqlstate,
                         std::string_view message);
void AppendNoticeResponse(std::string& out, std::string_view severity, std::string_view sqlstate,
                          std::string_view message);
void AppendCommandComplete(std::string& out, std::string_view tag);
// status: 'I' idle, 'T' in a transaction block, 'E' in a failed transaction block.
void AppendReadyForQuery(std::string& out, char status);
// One column of type text.
void AppendRowDescriptionText(std::string& out, std::string_view column);
// One row with one text value, or NULL when `value` is nullopt.
void AppendDataRowText(std::string& out, std::optional<std::string_view> value);
void AppendBackendKeyData(std::string& out, BackendKey key);
// The 16-byte CancelRequest packet.
std::string CancelRequestPacket(BackendKey key);
std::string StartupPacket(const std::vector<std::pair<std::string, std::string>>& parameters);

}  // namespace dtx::sql_proxy
