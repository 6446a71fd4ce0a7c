// Session: one client connection of dtx-sql-proxy and the one server connection it owns.
//
// Two coroutines run on the session's worker thread (so no member needs a lock):
//   - the front loop reads the client, finds message boundaries, and forwards the bytes to the
//     server in one write per read; it stops only at a few message kinds it must look into
//     (Query and Parse for the dtx.xid statements and comments, Bind/Close for the prepared
//     statements it tracks, Sync/Query/FunctionCall to count the answers owed);
//   - the back loop reads the server and forwards to the client, rewriting BackendKeyData to the
//     proxy's own key and reading ReadyForQuery for the transaction status.
// Neither copies or parses SQL on the plain path: a message is looked at through its first bytes.
// A relay hop costs three system calls: one receive, one send (tried at once, without blocking),
// and the epoll wait shared with every other session of the worker (see ReadSome).
//
// Taking over the server connection (AcquireBackend/ReleaseBackend): the front loop can park the
// back loop once every request forwarded so far has been answered (no ReadyForQuery owed), and
// then owns both sockets: it may write to the client itself, and may run its own statements on the
// server inside the client's transaction (reading the answers through sbuf_, where the back loop
// left any bytes it had not forwarded). This is how the dtx.xid statements are answered in order, and the hook
// where writes of XID-bound sessions will be turned into AT branches: a statement is classified in
// FrontLoop (see OnClientMessage), and a diverted statement runs with the backend acquired.
//
// Ownership: the session is held by shared_ptr from its coroutines; the worker keeps a raw
// pointer in its session set until the destructor runs (on the worker thread) and calls on_end.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>

#include <atomic>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>

#include "cancel_registry.h"
#include "dtx/sql_proxy/pg_message.h"
#include "dtx/sql_proxy/proxy_metrics.h"
#include "dtx/sql_proxy/proxy_server.h"
#include "dtx/sql_proxy/xid_command.h"

namespace dtx::sql_proxy {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;

// What the sessions of one server share; it outlives them.
struct SessionContext {
  const ProxyOptions& options;
  ProxyMetrics& metrics;
  CancelRegistry& cancels;
};

class Session : public std::enable_shared_from_this<Session> {
 public:
  static constexpr size_t kBufferSize = 64 * 1024;  // each way; a message may be larger

  Session(tcp::socket client, SessionContext& context, std::function<void(Session*)> on_end);
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // Starts the session's coroutines. REQUIRES: on the socket's worker thread.
  void Start();
  // Ends the session from outside (shutdown): the client gets FATAL 57P01 if it sits between
  // messages. REQUIRES: on the session's worker thread.
  void Terminate();

  // The statements a client prepared with Parse (named ones; the unnamed one is tracked apart).
  struct PreparedStatement {
    std::string xid;  // from a leading dtx.xid comment, else empty
  };

 private:
  // One step through a buffer of bytes from the client or the server.
  struct Scanner {
    size_t skip = 0;  // bytes of a message already looked at that are still to be forwarded
  };
  enum class Phase { kStartup, kRelay, kEnding };

  asio::awaitable<void> Run();
  asio::awaitable<bool> ReadStartup();
  asio::awaitable<void> HandleCancel(BackendKey key);
  asio::awaitable<bool> ConnectBackend(const std::string& database);
  asio::awaitable<void> FrontLoop();
  asio::awaitable<void> BackLoop();

  // Takes over the server connection: waits until no ReadyForQuery is owed and the back loop is
  // parked between messages. false if the session is ending.
  asio::awaitable<bool> AcquireBackend();
  void ReleaseBackend();

  asio::awaitable<bool> Write(tcp::socket& socket, std::string_view bytes, bool& fresh);
  asio::awaitable<bool> WriteClient(std::string_view bytes);  // from the back loop (or with it parked)
  asio::awaitable<bool> WriteServer(std::string_view bytes);  // from the front loop
  // `fresh`: the calling loop has not suspended since its last read drained `socket`.
  asio::awaitable<std::pair<boost::system::error_code, size_t>> ReadSome(tcp::socket& socket, char* data,
                                                                         size_t space, bool& fresh);

  // Looks at one client message (or its first `available` bytes); returns true to divert it
  // from forwarding (the front loop then calls HandleDiverted).
  bool OnClientMessage(char type, std::string_view seen, size_t size);
  asio::awaitable<bool> HandleDiverted(std::string message);
  asio::awaitable<bool> AnswerXidCommand(const XidCommand& command, std::string_view message);
  void OnServerMessage(char type, std::string_view seen, char* writable);
  void OnReadyForQuery(char status);

  // The XID the session is bound to now (empty: none).
  const std::string& EffectiveXid() const;
  void EndWithFatal(std::string sqlstate, std::string message);
  void CloseSockets();

  tcp::socket client_;
  tcp::socket server_;
  SessionContext& context_;
  std::function<void(Session*)> on_end_;
  BackendAddress backend_;

  std::unique_ptr<char[]> cbuf_, sbuf_;
  size_t clen_ = 0, slen_ = 0;
  Scanner cscan_, sscan_;

  Phase phase_ = Phase::kStartup;
  bool authenticated_ = false;       // the server sent its first ReadyForQuery
  bool client_terminated_ = false;   // the client sent Terminate
  bool server_sent_fatal_ = false;   // the last server message was a FATAL/PANIC ErrorResponse
  char tx_status_ = 'I';             // from the last ReadyForQuery
  int outstanding_ = 0;              // ReadyForQuery messages the server still owes
  std::optional<std::pair<std::string, std::string>> fatal_;  // SQLSTATE and message to end with
  XidCommand diverted_;              // the statement OnClientMessage diverted

  bool front_fresh_ = false;          // see ReadSome: the front loop's last read drained the client
  bool back_fresh_ = false;           // the back loop's last read drained the server

  // Taking over the server connection.
  bool pause_requested_ = false;
  bool back_parked_ = false;
  bool back_reading_ = false;
  bool back_done_ = false;
  asio::steady_timer back_wake_;   // the parked back loop waits here
  asio::steady_timer front_wake_;  // AcquireBackend and Run wait here

  // Keys: the server's, and the one the client was given instead.
  std::optional<BackendKey> proxy_key_;

  // XID binding (see docs/sql-proxy.md): session-wide, set inside the current transaction block
  // (kept at COMMIT, dropped at ROLLBACK), and transaction-local (SET LOCAL, comments).
  std::string session_xid_;
  std::optional<std::string> tx_session_xid_;
  std::optional<std::string> local_xid_;
  bool watch_tags_ = false;          // tx_session_xid_ is set: look at CommandComplete tags
  bool last_tag_rollback_ = false;

  std::unordered_map<std::string, PreparedStatement> prepared_;
  PreparedStatement unnamed_;
  size_t prepared_with_xid_ = 0;     // statements in prepared_ (and unnamed_) with an XID comment
};

}  // namespace dtx::sql_proxy
