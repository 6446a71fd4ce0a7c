#include "dtx/sdk/xid_context.h"

#include <algorithm>

namespace dtx::sdk {

namespace {
thread_local std::string current_xid;
}  // namespace

const std::string& CurrentXid() { return current_xid; }

XidScope::XidScope(std::string xid) : previous_(std::move(current_xid)) { current_xid = std::move(xid); }

XidScope::~XidScope() { current_xid = std::move(previous_); }

Result<std::string> ParseXid(std::string_view text) {
  if (text.empty()) return InvalidArgument("empty XID");
  if (text.size() > 128) return InvalidArgument("XID longer than 128 bytes");
  if (!std::all_of(text.begin(), text.end(), [](char c) { return c > ' ' && c < 127; })) {
    return InvalidArgument("XID holds a byte that is not printable ASCII");
  }
  const auto colon = text.rfind(':');
  if (colon == std::string_view::npos || colon == 0 || colon + 1 == text.size()) {
    return InvalidArgument("XID is not <node-id>:<id>: " + std::string(text));
  }
  const auto id = text.substr(colon + 1);
  if (id.size() > 19 || !std::all_of(id.begin(), id.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return InvalidArgument("XID id part is not a decimal number: " + std::string(text));
  }
  return std::string(text);
}

rpc::CallOptions WithXid(rpc::CallOptions options, std::string_view xid) {
  const std::string& x = xid.empty() ? CurrentXid() : std::string(xid);
  if (!x.empty()) options.headers.emplace_back(std::string(kXidHeader), x);
  return options;
}

Result<std::string> XidFrom(const rpc::CallContext& ctx) {
  for (const auto& [k, v] : ctx.headers) {
    if (k == kXidHeader) return v.empty() ? Result<std::string>(std::string()) : ParseXid(v);
  }
  return std::string();
}

}  // namespace dtx::sdk
