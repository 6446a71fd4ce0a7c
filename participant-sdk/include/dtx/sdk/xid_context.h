// The current global transaction's XID, and how it travels between processes.
//
// Inside a global transaction the XID is bound to the running thread (XidScope); business code
// reads it with CurrentXid(). Code that moves work to another thread or callback carries the
// XID explicitly (GlobalTx::xid() or CurrentXid()) and binds it there with an XidScope.
//
// Across processes the XID is plain text (`<node-id>:<id>`): in a Bolt request header named
// kXidHeader when the application uses rpc/ for its own services (WithXid on the caller,
// XidFrom on the callee), or in an HTTP header / message field of the application's choosing
// (kXidHttpHeader is the suggested HTTP header name). A callee that binds a received XID joins
// that transaction: TCC actions it calls register their branches in it, and a scoped
// GlobalTransactional it enters runs inside it instead of beginning a new one.
//
// Thread-safety: the binding is per thread; the functions may be called from any thread.
#pragma once

#include <string>
#include <string_view>

#include "dtx/common/status.h"
#include "dtx/rpc/channel.h"
#include "dtx/rpc/service_registry.h"

namespace dtx::sdk {

inline constexpr std::string_view kXidHeader = "dtx-xid";
inline constexpr std::string_view kXidHttpHeader = "X-Dtx-Xid";

// The XID bound to this thread, empty when none.
const std::string& CurrentXid();

// Binds `xid` to this thread for the scope's life; the previous binding comes back after.
// An empty xid unbinds. Not movable: it lives on the stack of the thread it binds.
class XidScope {
 public:
  explicit XidScope(std::string xid);
  ~XidScope();
  XidScope(const XidScope&) = delete;
  XidScope& operator=(const XidScope&) = delete;

 private:
  std::string previous_;
};

// Checks that `text` is an XID as the coordinator makes them (`<node-id>:<decimal id>`, at most
// 128 bytes of printable ASCII) and returns it; InvalidArgument otherwise. Use it on any XID that
// arrives from outside before binding it.
Result<std::string> ParseXid(std::string_view text);

// `options` with the XID header added (the current XID when `xid` is empty; unchanged when
// there is none).
rpc::CallOptions WithXid(rpc::CallOptions options = {}, std::string_view xid = {});

// The XID a Bolt call carries: empty when it carries none, an error when it carries a malformed one.
Result<std::string> XidFrom(const rpc::CallContext& ctx);

}  // namespace dtx::sdk
