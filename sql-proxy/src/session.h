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
// left any bytes it had not forwarded). This is how the dtx.xid statements are answered in order.
//
// AT mode (SessionContext::at, session_at.cc and session_at_extended.cc): OnClientMessage diverts
// the dtx.* functions, every Query of a session bound to a global transaction, and the writes of
// unbound sessions (MayChangeRows: a first-keyword check; nothing else of theirs is parsed);
// for the extended protocol it diverts a whole batch, from the first message that needs the proxy
// to the client's Sync. A diverted statement runs with the backend acquired: the AT engine
// (dtx::at::AtBranch) says which queries to run, the session runs them on the server, forwards
// the statement's answer without the hidden columns, and makes the coordinator calls with the
// client's non-blocking calls, resuming on this session's thread (lock retries wait on timers).
//
// Ownership: the session is held by shared_ptr from its coroutines; the worker keeps a raw
// pointer in its session set until the destructor runs (on the worker thread) and calls on_end.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/generic/stream_protocol.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>

#include <atomic>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "cancel_registry.h"
#include "tls_stream.h"
#include "dtx/sql_proxy/at_services.h"
#include "dtx/sql_proxy/dtx_function.h"
#include "dtx/sql_proxy/pg_message.h"
#include "dtx/sql_proxy/proxy_metrics.h"
#include "dtx/sql_proxy/proxy_server.h"
#include "dtx/sql_proxy/xid_command.h"

namespace dtx::sql_proxy {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
// Either side's socket: the client's is TCP; the server's TCP or Unix-domain (BackendAddress).
using Socket = asio::generic::stream_protocol::socket;

// What the sessions of one server share; it outlives them.
struct SessionContext {
  const ProxyOptions& options;
  ProxyMetrics& metrics;
  CancelRegistry& cancels;
  AtServices* at = nullptr;  // AT mode (--coordinator), else null
};

class Session : public std::enable_shared_from_this<Session> {
 public:
  static constexpr size_t kBufferSize = 64 * 1024;  // each way; a message may be larger

  // `coordinator`: the worker's own coordinator client (AT mode), else null (context.at's is used).
  Session(tcp::socket client, SessionContext& context, sdk::CoordinatorClient* coordinator,
          std::function<void(Session*)> on_end);
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // Starts the session's coroutines. REQUIRES: on the socket's worker thread.
  void Start();
  // Ends the session from outside (shutdown): the client gets FATAL 57P01 if it sits between
  // messages. REQUIRES: on the session's worker thread.
  void Terminate();

  // The statements a client prepared with Parse (named ones; the unnamed one is tracked apart).
  enum class Special { kNone, kXid, kDtxFunction };  // statements the proxy answers itself
  struct PreparedStatement {
    std::string xid;  // from a leading dtx.xid comment, else empty
    // AT mode, and the statements the proxy answers (seen whole):
    bool known = false;
    std::string sql;              // AT mode only
    std::vector<uint32_t> types;  // AT mode only
    bool may_change = false;      // UPDATE/DELETE (AT mode)
    TxEffect tx = TxEffect::kNone;  // AT mode: what it does to the transaction block
    Special special = Special::kNone;
    // A bare BEGIN without parameters (IsPlainBegin, seen whole): its command tag, else empty.
    // Trusted while begin_epoch is the session's prepared_epoch_ (see there).
    std::string_view begin_tag;
    uint64_t begin_epoch = 0;
    XidCommand xid_command;
    DtxFunction dtx_function;
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
  // Connects `socket` to a server within the connect timeout; an empty string, or why not.
  asio::awaitable<std::string> Connect(Socket& socket, const BackendAddress& address);
  // SSLRequest and the handshake on server_, as ProxyOptions::server_tls says; why not, or "".
  asio::awaitable<std::string> NegotiateServerTls();
  TlsStream* TlsOf(const Socket& socket) const {
    return &socket == &client_ ? tls_.get() : &socket == &server_ ? server_tls_.get() : nullptr;
  }
  asio::awaitable<void> FrontLoop();
  asio::awaitable<void> BackLoop();

  // Takes over the server connection: waits until no ReadyForQuery is owed and the back loop is
  // parked between messages. false if the session is ending.
  asio::awaitable<bool> AcquireBackend();
  void ReleaseBackend();

  asio::awaitable<bool> Write(Socket& socket, std::string_view bytes, bool& fresh);
  asio::awaitable<bool> WriteClient(std::string_view bytes);  // from the back loop (or with it parked)
  // Writes what WriteClient held back (coalesce_client_); coalescing goes on.
  asio::awaitable<bool> FlushClient();
  asio::awaitable<bool> WriteServer(std::string_view bytes);  // from the front loop
  // `fresh`: the calling loop has not suspended since its last read drained `socket`.
  asio::awaitable<std::pair<boost::system::error_code, size_t>> ReadSome(Socket& socket, char* data,
                                                                         size_t space, bool& fresh);

  // Looks at one client message (or its first `available` bytes); returns true to divert it
  // from forwarding (the front loop then calls HandleDiverted).
  bool OnClientMessage(char type, std::string_view seen, size_t size);
  // Records a Parse in prepared_ (or unnamed_): its dtx.xid comment, and whether it is seen whole,
  // answered by the proxy, a bare BEGIN (`quiet`: it cannot fail now), and in AT mode its text.
  void TrackParse(std::string_view seen, size_t size, bool quiet);
  // How many bytes of a client message of this type and size the front loop must see at once.
  size_t ClientNeed(char type, size_t size) const;
  asio::awaitable<bool> HandleDiverted(std::string message);
  // ---- a BEGIN answered by the proxy and sent later (ProxyOptions::defer_begin) ----
  // Whether a BEGIN arriving now may be held: an idle session, nothing of the extended protocol
  // sent without its Sync, no BEGIN held already.
  bool MayHoldBegin() const;
  // Something may have dropped prepared statements (DISCARD, DEALLOCATE, a text not seen whole):
  // none is trusted as a BEGIN any more (prepared_epoch_).
  void ForgetBeginStatements();
  // The length of a run of whole messages at the start of `buf` that only begins a transaction
  // block (a bare BEGIN Query, or [Parse] Bind [Describe portal] Execute Sync of a bare BEGIN), with
  // the answers the server would give to it in `answer`; 0 if `buf` does not start with one.
  size_t BeginRun(std::string_view buf, std::string& answer) const;
  // Answers the run itself and keeps it in held_begin_, once every earlier request is answered;
  // forwards it after all if the session is no longer idle by then.
  asio::awaitable<bool> HoldBegin(std::string run, std::string answer);
  // Whether a server message (already seen by OnServerMessage) answers a held BEGIN that went out,
  // to be dropped: called on every server message while begin_answers_ > 0. An error there ends
  // the session (`refused`): the client was told the BEGIN succeeded.
  bool DropBeginAnswer(char type, std::string_view message, bool& refused);
  // Sends `bytes` (the held BEGIN and what follows it) from a string of its own.
  asio::awaitable<bool> WriteServerOwned(std::string bytes);
  // Reads the rest of a client message larger than the buffer (its first bytes fill cbuf_) into
  // `message`, so that one the proxy must look into is seen whole. false: the client went away.
  asio::awaitable<bool> ReadWholeMessage(std::string& message, size_t size);
  // A read from the client, through TLS if the session has it.
  asio::awaitable<std::pair<boost::system::error_code, size_t>> ReadClient(char* data, size_t space);
  // Answers an SSLRequest: 'S' and the handshake when the proxy has a certificate, else 'N'.
  // false: the session ends.
  asio::awaitable<bool> NegotiateTls(asio::steady_timer& deadline);

  // ---- AT mode (session_at.cc); all with the backend acquired ----
  struct BackendReply {
    std::string to_client;  // every message but ReadyForQuery, hidden columns removed
    std::vector<std::vector<std::optional<std::string>>> rows;  // text values (the hidden ones only, if any)
    std::string command_tag;
    bool failed = false;  // an ErrorResponse came
    std::string sqlstate, message;
    char status = 'I';
  };
  // A kept statement whose result columns changed type (ALTER TABLE): the server refuses to run
  // it again, so it is prepared anew, under another name, next time.
  static bool StalePlan(const BackendReply& reply);
  // Sends `request` (ending in one Sync or being one Query) and reads the answer up to its
  // ReadyForQuery. nullopt: the connection failed.
  asio::awaitable<std::optional<BackendReply>> Exchange(std::string_view request, int hidden);
  // Reads one answer (up to its ReadyForQuery) of a request already sent.
  asio::awaitable<std::optional<BackendReply>> ReadReply(int hidden);
  // Sends `queries` in one write as extended-protocol messages closed by one Sync, and reads
  // their answers: the server flushes once, at the Sync, so the proxy wakes once. Each reply runs
  // up to its query's CommandComplete or error; the last also holds the ReadyForQuery. After an
  // error the server skips the rest: their replies stay empty. `hidden`: each query's hidden
  // columns (a query with some is described, so that its RowDescription comes as a Query's would).
  // A query marked `keep` runs from a statement the session keeps prepared (own_prepared_).
  asio::awaitable<std::optional<std::vector<BackendReply>>> Pipeline(const std::vector<const at::AtQuery*>& queries,
                                                                     const std::vector<int>& hidden);
  // The next whole server message (type byte first), seen by OnServerMessage; false: connection failed.
  asio::awaitable<bool> NextServerMessage(std::string& out);
  // Adds one server message to a reply (hidden columns removed); false if malformed.
  bool Collect(BackendReply& reply, const std::string& message, int hidden, bool& rowless);
  // Starts a non-blocking coordinator call (`start` hands it the callback) and resumes on this
  // session's thread with its result.
  template <class R>
  asio::awaitable<R> Await(std::function<void(std::function<void(R)>)> start);
  // The global-lock check of a statement (SELECT ... FOR UPDATE, an unbound write), retried on a
  // timer for lock_retry_for; and a branch's registration at COMMIT, the same way.
  asio::awaitable<Status> CheckLocks(const at::AtBranch& branch, at::AtStatement& st);
  asio::awaitable<Status> CheckKeys(const at::AtBranch& branch, const std::vector<std::string>& keys);
  asio::awaitable<Status> CheckKeys(const at::AtBranch& branch, const std::vector<std::string>& keys,
                                    const std::vector<std::string>& key_prefixes);
  // The check of LocalWrite::kTables statements that ran in the current transaction: the tables
  // it holds write locks on (at::TablesWrittenQuery; `exclusive_only` for TRUNCATE alone), each
  // checked whole, together with `keys`. `extended`: the query runs inside the client's extended
  // batch (ExtRun) rather than as a Query.
  asio::awaitable<Status> CheckTables(bool exclusive_only, bool extended, std::vector<std::string> keys);
  asio::awaitable<Status> CheckTables(bool exclusive_only, bool extended);
  // Before a branch that may have written elsewhere (AtBranch::MayWriteElsewhere) registers: an
  // error when the local transaction wrote a table its statements did not name. In the extended
  // protocol (`extended`) a server error has gone to the client already and the batch failed.
  asio::awaitable<Status> CheckWritesElsewhere(const at::AtBranch& branch, bool extended);
  // The keys of unbound writes made in the client's block (simple protocol), checked once, before
  // anything may commit the block (deferred_keys_); then cleared.
  asio::awaitable<Status> CheckDeferredKeys(bool extended = false);
  bool HasDeferredChecks() const { return !deferred_keys_.empty() || deferred_tables_ != DeferredTables::kNone; }
  void DeferTables(const at::LocalWrite& write) {
    const auto mode = write.truncates ? DeferredTables::kTruncated : DeferredTables::kWritten;
    deferred_tables_ = std::max(deferred_tables_, mode);
  }
  asio::awaitable<Result<std::optional<at::AtQuery>>> RegisterBranch(at::AtBranch& branch);
  asio::awaitable<bool> ForwardAcquired(std::string_view message);
  asio::awaitable<bool> ReplyToClient(std::string bytes);  // + ReadyForQuery, then releases
  // Raises `error` on the server (a block fails there too), rolls back if asked, and answers the
  // client `before` (the answers of statements that ran first) and the error.
  asio::awaitable<bool> FailStatement(const Status& error, bool rollback, std::string before = {});
  asio::awaitable<bool> ErrorToClient(const Status& error);
  asio::awaitable<bool> HandleDtxFunction(std::string message);
  // Runs a dtx.* function: the xid (begin) or the final status name, or the SQL error.
  asio::awaitable<Result<std::string>> DtxCall(const DtxFunction& fn);
  asio::awaitable<bool> HandleBoundQuery(std::string message);
  asio::awaitable<bool> HandleUnboundWrite(std::string message);
  // The refusal of a COPY, CALL or DO that LocalWrite::kTables checks, outside a transaction
  // block, in the extended protocol.
  static Status TablesCheckOutsideABlock();
  // A COPY that LocalWrite::kTables checks, outside a transaction block: it runs in a transaction
  // of the proxy's. TO (of a data-modifying query): its whole answer is read, the tables checked,
  // then committed. FROM: BEGIN and the COPY go out; once the server asks for the data the relay
  // carries it (copy_check_), and the client's CopyDone or CopyFail comes to FinishCheckedCopy.
  asio::awaitable<bool> CheckedCopy(std::string message, bool copy_in);
  asio::awaitable<bool> FinishCheckedCopy(std::string message);
  // The end of a checked COPY whose `answer` (to the client, without ReadyForQuery) is in: rolled
  // back if it `failed`, else checked and committed; then the client gets its answer.
  asio::awaitable<bool> EndCheckedCopy(bool failed, std::string answer);
  asio::awaitable<bool> RunSteps(std::shared_ptr<at::AtBranch> branch, at::AtStatement& st, bool implicit);
  // AT branches need row images in UTF-8: an error for a session whose client_encoding is other.
  std::optional<Status> EncodingRefusal() const;
  // A bound session on a database without --resource: an error for anything but reads,
  // transaction control and session settings (and for what the analyser refuses).
  std::optional<Status> NoResourceRefusal(std::string_view sql) const;
  // ---- extended batches (session_at_extended.cc) ----
  struct BindFields {
    std::string portal, statement;
    at::QueryParams params;
    std::vector<int16_t> result_formats;
    // Its statement, as it was when bound: may commit the block (or is not known whole); commits
    // it (a COMMIT, END or PREPARE TRANSACTION seen whole).
    bool may_commit = true;
    bool commits = false;
  };
  using Portal = BindFields;
  static std::optional<BindFields> ParseBind(std::string_view body);
  const PreparedStatement* FindPrepared(const std::string& name) const;
  // Decides whether an extended-protocol message starts (or is part of) a batch.
  bool DivertExtended(char type, std::string_view seen, size_t size);
  asio::awaitable<bool> HandleExtended(std::string message);
  asio::awaitable<bool> ExtForward(std::string_view message, int answers);
  asio::awaitable<bool> ExtFlush(bool sync);
  // Sends what the client sent so far followed by `own` (the proxy's own messages, ending in a
  // Flush) in one write, and relays the answers owed to the client's part (ext_failed_ when one
  // was an error: the server then skips `own`).
  asio::awaitable<bool> ExtFlushBefore(std::string own);
  // Relays the answers owed (with `sync`: up to the ReadyForQuery, which is not relayed).
  asio::awaitable<bool> ExtRelayOwed(bool sync);
  // A query of the proxy's own as a statement on the server: kOwn, closed after it ran, or
  // (`reuse`) one kept prepared in own_prepared_, parsed now or already.
  struct OwnStatement {
    std::string name, key;
    bool parse = true, keep = false;
  };
  OwnStatement OwnStatementFor(const at::AtQuery& q, bool reuse);
  // Reads the answer of one OwnQuery, up to its Close(s) or its error.
  asio::awaitable<std::optional<BackendReply>> ReadOwn(int hidden, const OwnStatement& s);
  // Two queries in one write (a before image and its statement); `second_reply` stays empty when
  // the first failed. false: the connection failed.
  asio::awaitable<bool> ExtRunPair(const at::AtQuery& first, const at::AtQuery& second, int second_hidden,
                                   const std::vector<int16_t>& second_formats, bool reuse,
                                   std::optional<BackendReply>& first_reply, std::optional<BackendReply>& second_reply);
  // `reuse`: keep the query prepared on the server (own_prepared_) and run it from there next time.
  // `sync`: end the request with a Sync instead of a Flush (ext_synced_).
  asio::awaitable<std::optional<BackendReply>> ExtRun(const at::AtQuery& q, int hidden,
                                                      const std::vector<int16_t>& result_formats, bool reuse = false,
                                                      bool sync = false);
  // `wrote`: the pipeline's implicit transaction holds a write that must not commit either.
  asio::awaitable<bool> ExtFail(const Status& error, bool wrote = false);
  using PortalMap = std::unordered_map<std::string, Portal>;
  asio::awaitable<bool> ExtExecute(std::string message);
  asio::awaitable<bool> ExtExecuteStatement(std::string message, PortalMap::iterator portal,
                                            const PreparedStatement* slot);
  // Flushes the chunk, then answers one message of the client's itself: a CommandComplete with
  // `tag` (type 'C'), or an empty message of `type`.
  asio::awaitable<bool> ExtAnswer(char type, std::string_view tag);
  asio::awaitable<bool> ExtSteps(const at::AtBranch& branch, at::AtStatement& st, std::string_view execute,
                                 const Portal& portal, bool local);
  asio::awaitable<bool> ExtRegister(std::shared_ptr<at::AtBranch> branch, std::optional<std::string> execute,
                                    bool& committed);
  asio::awaitable<bool> ExtCommit(std::shared_ptr<at::AtBranch> branch, std::string execute);
  asio::awaitable<std::optional<bool>> ExtBeginImplicit(std::shared_ptr<at::AtBranch> branch);
  asio::awaitable<bool> ExtSync();
  // Registers and commits the batch's implicit transaction (ext_implicit_) as one branch.
  asio::awaitable<bool> ExtEndImplicit();
  // Sends the client's Sync (or one of the proxy's) and ends the batch on the server: a local
  // transaction whose branch failed is rolled back, the proxy's own statement closed.
  asio::awaitable<bool> ExtCloseOnServer();
  void ExtEnd();

  // A statement of a bound session outside a block that may write elsewhere
  // (AtBranch::MayWriteElsewhere) and is no write of its own: in a transaction of the proxy's,
  // checked before it commits.
  asio::awaitable<bool> RunCheckedRead(std::shared_ptr<at::AtBranch> branch, std::string message);
  // The refusal of such a statement that is neither a read nor a write (a cursor, say).
  static Status WritesElsewhereOutsideABlock();
  asio::awaitable<bool> CommitBranch(std::shared_ptr<at::AtBranch> branch, std::string commit_request,
                                     std::string output, bool implicit);
  asio::awaitable<bool> CommitFailed(std::shared_ptr<at::AtBranch> branch, Status error);
  void FinishLater(std::shared_ptr<at::AtBranch> branch, bool committed);
  asio::awaitable<bool> AnswerXidCommand(const XidCommand& command, std::string_view message);
  // Applies a SET/RESET/SHOW dtx.xid and appends its answer (without ReadyForQuery).
  void ApplyXidCommand(const XidCommand& command, std::string& out, bool row_description);
  // AT mode: an error when `command` would move the session off the global transaction that the
  // open local transaction wrote for (its COMMIT must register that branch).
  std::optional<Status> XidChangeRefusal(const XidCommand& command) const;
  // The client's transaction block as the server will see it once the messages sent so far ran:
  // tx_status_ between batches, ext_block_ inside one.
  char ClientBlock() const { return ext_batch_ ? ext_block_ : tx_status_; }
  void OnServerMessage(char type, std::string_view seen, char* writable);
  void OnReadyForQuery(char status);

  // The XID the session is bound to now (empty: none).
  const std::string& EffectiveXid() const;
  void EndWithFatal(std::string sqlstate, std::string message);
  void CloseSockets();

  Socket client_;
  Socket server_;
  std::unique_ptr<TlsStream> tls_;  // the client asked for TLS (SSLRequest) and the handshake passed
  std::unique_ptr<TlsStream> server_tls_;  // TLS toward the server (ProxyOptions::server_tls)
  SessionContext& context_;
  sdk::CoordinatorClient* coordinator_;  // AT mode: the calls of this session go here
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
  // A BEGIN the client sent and the proxy answered (defer_begin), as extended-protocol messages
  // without a Sync (HeldForm): WriteServer sends it in front of the next bytes for the server, and
  // the server answers both in one flush. held_answers_: how many answers it gets; begin_answers_:
  // answers of held BEGINs sent that are still to be dropped.
  std::string held_begin_;
  int held_answers_ = 0;
  int begin_answers_ = 0;
  bool ext_unsynced_ = false;        // extended-protocol messages went to the server after the last Sync
  // Moves on when a Query may have dropped prepared statements (DISCARD, DEALLOCATE, or a text
  // not seen whole) while some statement is known as a BEGIN (begin_statements_).
  uint64_t prepared_epoch_ = 0;
  bool begin_statements_ = false;
  std::optional<std::pair<std::string, std::string>> fatal_;  // SQLSTATE and message to end with
  enum class Divert { kXid, kDtxFunction, kBound, kUnboundWrite, kExtended, kCheckedCopyEnd, kFunctionCall };
  // A FunctionCall message of a bound AT session (unless --check-writes-elsewhere false): refused
  // (0A000), also when it ends an extended batch.
  bool RefusesFunctionCall() const;
  asio::awaitable<bool> RefuseFunctionCall();
  Divert divert_ = Divert::kXid;     // what OnClientMessage diverted
  XidCommand diverted_;              // kXid: the statement
  DtxFunction dtx_function_;         // kDtxFunction: the call
  std::string diverted_xid_;         // kBound: the XID in force when it arrived

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
  size_t prepared_special_ = 0;      // ... that the proxy answers itself (Special)

  // AT mode.
  std::string database_;                          // from the startup
  const AtResource* at_resource_ = nullptr;       // its --resource, if any
  std::string client_encoding_ = "UTF8";          // from the server's ParameterStatus
  std::shared_ptr<at::AtBranch> branch_;          // the current transaction block's
  std::unique_ptr<at::AtBranch> local_branch_;    // lock checks of unbound writes
  // Keys written by unbound writes in the client's block, not yet checked: the check waits for
  // the COMMIT (or whatever else might commit the block: see CheckDeferredKeys' callers). The
  // rows stay locked by the server meanwhile. Cleared when the block ends.
  std::vector<std::string> deferred_keys_;
  // LocalWrite::kTables statements ran in the client's block: at its COMMIT the tables it holds
  // ACCESS EXCLUSIVE locks on (kTruncated: TRUNCATEs alone), or any write lock (kWritten), are
  // checked whole (CheckTables). Cleared with deferred_keys_.
  enum class DeferredTables : uint8_t { kNone, kTruncated, kWritten };
  DeferredTables deferred_tables_ = DeferredTables::kNone;
  // A checked COPY ... FROM outside a block is under way (CheckedCopy): the client's CopyDone or
  // CopyFail is diverted. The back loop relays notices and the like, but holds an early error,
  // the ReadyForQuery and whatever follows them (`holding`), since the answer the client gets
  // depends on the check.
  struct CopyCheck {
    std::string held;
    bool holding = false;
  };
  std::optional<CopyCheck> copy_check_;
  // An extended batch's answers to the client are gathered and written when the front loop has
  // nothing more to do before it reads the client again (or at the batch's end), rather than one
  // write per message: a client such as libpq then wakes once per Sync. ReleaseBackend leaves what
  // is left to the back loop, which writes it before anything else. client_copy_: the server began
  // a COPY, which the client must see at once.
  bool coalesce_client_ = false;
  bool client_copy_ = false;
  std::string client_out_;
  std::string abuf_;                              // server bytes read with the backend acquired
  size_t abuf_at_ = 0;                            // how far abuf_ has been read
  bool server_bytes_waiting_ = false;             // sbuf_ holds bytes the back loop has not looked at

  // Extended batches: from the first message the proxy must handle to the client's Sync.
  bool ext_batch_ = false;        // diverting the client's extended messages
  bool ext_acquired_ = false;     // the batch holds the backend
  bool ext_failed_ = false;       // an error: the rest until Sync is skipped
  bool ext_implicit_ = false;     // the proxy began a transaction for this batch's writes
  // The client's block once the batch's messages sent so far have run: 'I', 'T', 'E', or '?'
  // when Executes were relayed before the batch was diverted (bound writes are then refused).
  char ext_block_ = 'I';
  bool ext_rollback_at_sync_ = false;  // a branch failed at its COMMIT: roll back after the Sync
  bool ext_own_left_ = false;     // the proxy's statement is left prepared after an error
  // The proxy sent the batch's Sync early, with a write's own query (the client's Sync was next
  // in the buffer): the server's ReadyForQuery for it is still to be read, at the client's Sync.
  bool ext_synced_ = false;
  bool next_is_sync_ = false;     // while a client message is handled: a whole Sync follows it
  int ext_expect_ = 0;            // answers owed for messages sent to the server
  std::string ext_chunk_;         // client messages not sent yet
  std::shared_ptr<at::AtBranch> ext_branch_;  // ext_implicit_: its branch
  PortalMap portals_;
  // The proxy's own statements kept prepared on the server (the queries of statements the client
  // prepared under a name, and the undo-row insert), by text and parameter types. Cleared when
  // the client closes a named statement or may have dropped them (DISCARD, DEALLOCATE).
  static constexpr size_t kOwnPreparedMax = 256;
  std::unordered_map<std::string, std::string> own_prepared_;
  uint64_t own_prepared_seq_ = 0;
  // Forwarded extended messages since the last Sync, and their answers seen by the back loop.
  int ext_sent_ = 0;
  int ext_execs_sent_ = 0;  // ... of which Executes
  int ext_answered_ = 0;
  bool ext_error_since_sync_ = false;
};

}  // namespace dtx::sql_proxy
