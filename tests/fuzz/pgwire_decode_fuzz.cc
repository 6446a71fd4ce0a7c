// libFuzzer target: arbitrary bytes into the PostgreSQL wire readers of dtx-sql-proxy, read the
// way a session reads a client: one startup packet, then a stream of messages, each looked into
// as the proxy does (Query and Parse texts for dtx.xid statements and comments, Bind and Close
// names, ErrorResponse fields, BackendKeyData).
// Properties checked: no crash or sanitizer report; a message's size never exceeds what was read
// when whole, is at least 5, and is known from the header alone; an oversized length is an error
// before the body; what the classifier accepts as an XID is a valid XID.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "dtx/sql_proxy/pg_message.h"
#include "dtx/sql_proxy/xid_command.h"

using namespace dtx::sql_proxy;

namespace {

void Check(bool ok) {
  if (!ok) std::abort();
}

void LookInto(const Frame& f) {
  switch (f.type) {
    case 'Q': {
      auto sql = ReadCString(f.body);
      if (!sql) return;
      XidCommand c = ParseXidCommand(*sql);
      if (c.kind == XidCommandKind::kSet || c.kind == XidCommandKind::kSetLocal) Check(IsValidXid(c.xid));
      if (c.kind == XidCommandKind::kMalformed) Check(!c.error.empty());
      if (auto xid = LeadingXidComment(*sql)) Check(IsValidXid(*xid));
      return;
    }
    case 'P':
      if (auto p = ParseParse(f.body)) {
        if (auto xid = LeadingXidComment(p->query)) Check(IsValidXid(*xid));
      }
      return;
    case 'B':
    case 'C':
      if (auto name = ReadCString(f.body)) Check(name->size() < f.body.size());
      return;
    case 'E':
    case 'N':
      (void)ParseErrorFields(f.body);
      return;
    case 'K':
      (void)ParseBackendKey(f.body);
      return;
    default:
      return;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  // A small maximum as well, so the oversize path is exercised.
  const size_t max_message = size % 2 ? 256 : kDefaultMaxMessage;

  Frame startup = ReadStartupPacket(input);
  if (startup.status == FrameStatus::kError) {
    Check(!startup.error.empty());
    return 0;
  }
  if (startup.status == FrameStatus::kNeedMore) {
    Check(startup.size == 0 || startup.size > input.size());
    return 0;
  }
  Check(startup.size >= 8 && startup.size <= input.size() && startup.size <= kMaxStartupPacket);
  if (startup.code == kProtocolV3) (void)ParseStartupParameters(startup.body);
  if (startup.code == kCancelRequestCode) (void)ParseBackendKey(startup.body);
  input.remove_prefix(startup.size);

  while (!input.empty()) {
    Frame f = ReadMessage(input, max_message);
    if (f.status == FrameStatus::kError) {
      Check(!f.error.empty() && input.size() >= 5);
      break;
    }
    if (f.status == FrameStatus::kNeedMore) {
      Check(input.size() < 5 ? f.size == 0 : (f.size > input.size() && f.size <= max_message));
      // The header alone gives the same answer as the whole prefix.
      if (input.size() >= 5) Check(ReadMessage(input.substr(0, 5), max_message).size == f.size);
      break;
    }
    Check(f.size >= 5 && f.size <= input.size() && f.size <= max_message);
    Check(f.body.size() == f.size - 5);
    LookInto(f);
    input.remove_prefix(f.size);
  }
  return 0;
}
