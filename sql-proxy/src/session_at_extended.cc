// The extended query protocol in AT mode (see session.h, "extended batches"): from the first
// message that needs the proxy until the client's Sync, the client's Parse/Bind/Describe/
// Execute/Close/Flush messages are diverted one by one with the backend acquired. Those the server
// can answer as they are go on in a chunk (ext_chunk_), sent with a Flush whenever the proxy
// must run something of its own or answer something itself, so that every answer reaches the
// client in order; an Execute of a write of a bound session runs as an AT statement (the proxy's
// own queries use the statement and portal "dtx_at"); the dtx.xid statements and dtx.*
// functions are answered by the proxy. After an error the rest until Sync is skipped, as
// PostgreSQL does.
#include <spdlog/spdlog.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "session.h"
#include "session_wire.h"

namespace dtx::sql_proxy {
namespace {

constexpr char kOwn[] = "dtx_at";

using wire::AppendCString;
using wire::AppendMessage;
using wire::ReadInt16;
using wire::ReadInt32;

bool Writes(at::StatementKind k) {
  return k == at::StatementKind::kInsert || k == at::StatementKind::kUpdate || k == at::StatementKind::kDelete;
}

std::string ProxyText(const Status& s) {
  std::string text = at::SqlTextOf(s);
  return text.starts_with("dtx-sql-proxy") ? text : "dtx-sql-proxy: " + text;
}

// [Parse,] Bind, Execute and Close of the proxy's own statement `statement` (its portal kOwn),
// then Flush; the statement is closed too unless `keep`.
std::string OwnQuery(const at::AtQuery& q, const std::vector<int16_t>& result_formats, const std::string& statement,
                     bool parse, bool keep, char tail = 'H') {
  std::string out, body;
  wire::AppendParseBindExecute(out, statement, kOwn, q, result_formats, false, parse);
  body.push_back('P');
  AppendCString(body, kOwn);
  AppendMessage(out, 'C', body);
  if (!keep) {
    body.clear();
    body.push_back('S');
    AppendCString(body, statement);
    AppendMessage(out, 'C', body);
  }
  AppendMessage(out, tail, "");
  return out;
}

at::AtQuery Plain(std::string sql) {
  at::AtQuery q;
  q.sql = std::move(sql);
  return q;
}

}  // namespace

std::optional<Session::BindFields> Session::ParseBind(std::string_view body) {
  BindFields b;
  auto portal = ReadCString(body);
  if (!portal) return std::nullopt;
  b.portal = std::string(*portal);
  body.remove_prefix(portal->size() + 1);
  auto statement = ReadCString(body);
  if (!statement) return std::nullopt;
  b.statement = std::string(*statement);
  body.remove_prefix(statement->size() + 1);
  size_t at = 0;
  auto need = [&](size_t n) { return body.size() - at >= n; };
  if (!need(2)) return std::nullopt;
  const int nf = ReadInt16(body, at);
  at += 2;
  if (nf < 0 || !need(2 * static_cast<size_t>(nf))) return std::nullopt;
  for (int k = 0; k < nf; ++k, at += 2) b.params.formats.push_back(ReadInt16(body, at));
  if (!need(2)) return std::nullopt;
  const int np = ReadInt16(body, at);
  at += 2;
  if (np < 0) return std::nullopt;
  for (int k = 0; k < np; ++k) {
    if (!need(4)) return std::nullopt;
    const int32_t len = ReadInt32(body, at);
    at += 4;
    if (len < 0) {
      b.params.values.emplace_back();
      continue;
    }
    if (!need(static_cast<size_t>(len))) return std::nullopt;
    b.params.values.emplace_back(std::string(body.substr(at, len)));
    at += len;
  }
  if (!need(2)) return std::nullopt;
  const int nr = ReadInt16(body, at);
  at += 2;
  if (nr < 0 || !need(2 * static_cast<size_t>(nr))) return std::nullopt;
  for (int k = 0; k < nr; ++k, at += 2) b.result_formats.push_back(ReadInt16(body, at));
  return b;
}

// ---- talking to the server inside a batch ----

// Sends what the client sent so far (and `tail`, a Flush or a Sync) and relays the answers until
// every one owed has come (or an error, after which the server skips to the Sync; with a Sync:
// until its ReadyForQuery, which is not relayed).
asio::awaitable<bool> Session::ExtFlush(bool sync) {
  if (sync && ext_synced_) {
    // The Sync went with a write: its ReadyForQuery first.
    ext_synced_ = false;
    if (!co_await ExtRelayOwed(true)) co_return false;
    if (ext_chunk_.empty()) co_return true;
  }
  std::string request = std::move(ext_chunk_);
  ext_chunk_.clear();
  if (sync) {
    AppendMessage(request, 'S', "");
  } else if (ext_expect_ > 0) {
    AppendMessage(request, 'H', "");
  }
  if (request.empty()) co_return true;
  if (!co_await WriteServer(request)) co_return false;
  co_return co_await ExtRelayOwed(sync);
}

asio::awaitable<bool> Session::ExtFlushBefore(std::string own) {
  std::string request = std::move(ext_chunk_);
  ext_chunk_.clear();
  request.append(own);
  if (!co_await WriteServer(request)) co_return false;
  co_return co_await ExtRelayOwed(false);
}

asio::awaitable<bool> Session::ExtRelayOwed(bool sync) {
  std::string out, message;
  while (sync || ext_expect_ > 0) {
    if (!co_await NextServerMessage(message)) co_return false;
    const char type = message[0];
    if (type == 'Z') break;
    out.append(message);
    switch (type) {
      case '1': case '2': case '3': case 'n': case 'T': case 'C': case 'I': case 's':
        if (ext_expect_ > 0) --ext_expect_;
        break;
      case 'E':
        ext_expect_ = 0;
        ext_failed_ = true;
        break;
      default:
        break;
    }
  }
  if (sync) ext_expect_ = 0;
  if (out.empty()) co_return true;
  co_return co_await WriteClient(out);
}

Session::OwnStatement Session::OwnStatementFor(const at::AtQuery& q, bool reuse) {
  OwnStatement s;
  s.name = kOwn;
  if (!reuse && !q.keep) return s;
  s.key = q.sql;
  for (uint32_t t : q.params.types) s.key.append(reinterpret_cast<const char*>(&t), sizeof t);
  if (auto it = own_prepared_.find(s.key); it != own_prepared_.end()) {
    s.name = it->second;  // prepared already
    s.parse = false;
    s.keep = true;
  } else if (own_prepared_.size() < kOwnPreparedMax) {
    s.name = std::string(kOwn) + "_" + std::to_string(++own_prepared_seq_);
    own_prepared_.emplace(s.key, s.name);
    s.keep = true;
  }
  return s;
}

asio::awaitable<std::optional<Session::BackendReply>> Session::ReadOwn(int hidden, const OwnStatement& s) {
  BackendReply reply;
  bool rowless = false, prepared = !s.parse;
  std::string message;
  int closes = 0;
  while (true) {
    if (!co_await NextServerMessage(message)) co_return std::nullopt;
    const char type = message[0];
    if (!Collect(reply, message, hidden, rowless)) co_return std::nullopt;
    if (type == '1') prepared = true;
    if (type == 'E') {
      ext_failed_ = true;
      ext_own_left_ = true;  // its Close was skipped
      // A kept statement whose Parse failed does not exist: parsed anew next time. One dropped
      // by something the proxy did not see (26000): all may be gone.
      if (s.keep && (!prepared || StalePlan(reply))) own_prepared_.erase(s.key);
      if (reply.sqlstate == "26000") own_prepared_.clear();
      co_return reply;
    }
    if (type == '3' && ++closes == (s.keep ? 1 : 2)) co_return reply;  // the portal's[, then the statement's]
  }
}

// Runs one query of the proxy's own (after flushing the client's chunk): its rows, hidden
// columns removed; on a server error the batch has failed.
asio::awaitable<std::optional<Session::BackendReply>> Session::ExtRun(const at::AtQuery& q, int hidden,
                                                                        const std::vector<int16_t>& result_formats,
                                                                        bool reuse, bool sync) {
  if (ext_failed_) {
    BackendReply reply;
    reply.failed = true;
    co_return reply;
  }
  // The client's chunk and the query in one write: the chunk's answers come first. When the chunk
  // fails, the server skips the query.
  const OwnStatement s = OwnStatementFor(q, reuse);
  std::string request = OwnQuery(q, result_formats, s.name, s.parse, s.keep, sync ? 'S' : 'H');
  if (sync) ext_synced_ = true;
  if (!co_await ExtFlushBefore(std::move(request))) co_return std::nullopt;
  if (ext_failed_) {
    if (s.keep && s.parse) own_prepared_.erase(s.key);
    BackendReply reply;
    reply.failed = true;
    co_return reply;
  }
  std::optional<BackendReply> reply = co_await ReadOwn(hidden, s);
  co_return reply;
}

asio::awaitable<bool> Session::ExtRunPair(const at::AtQuery& first, const at::AtQuery& second, int second_hidden,
                                          const std::vector<int16_t>& second_formats, bool reuse,
                                          std::optional<BackendReply>& first_reply,
                                          std::optional<BackendReply>& second_reply) {
  if (ext_failed_) {
    first_reply.emplace();
    first_reply->failed = true;
    co_return true;
  }
  const OwnStatement a = OwnStatementFor(first, reuse);
  const OwnStatement b = OwnStatementFor(second, reuse);
  std::string request = OwnQuery(first, {}, a.name, a.parse, a.keep);
  request.append(OwnQuery(second, second_formats, b.name, b.parse, b.keep));
  if (!co_await ExtFlushBefore(std::move(request))) co_return false;
  if (ext_failed_) {
    // The client's chunk failed: the server skipped both.
    if (a.keep && a.parse) own_prepared_.erase(a.key);
    if (b.keep && b.parse) own_prepared_.erase(b.key);
    first_reply.emplace();
    first_reply->failed = true;
    co_return true;
  }
  first_reply = co_await ReadOwn(0, a);
  if (!first_reply) co_return false;
  if (first_reply->failed) {
    // The server skips the second until the Sync: it never ran. Not kept if it was to be parsed.
    if (b.keep && b.parse) own_prepared_.erase(b.key);
    co_return true;
  }
  second_reply = co_await ReadOwn(second_hidden, b);
  co_return second_reply.has_value();
}

asio::awaitable<bool> Session::ExtFail(const Status& error, bool wrote) {
  context_.metrics.at_refusals.fetch_add(1, std::memory_order_relaxed);
  if (!co_await ExtFlush(false)) co_return false;
  if (ext_failed_) co_return true;
  if (ext_block_ == 'T' || wrote) {
    // The client's own block (or the pipeline's implicit transaction, holding a write) fails on
    // the server too.
    auto r = co_await ExtRun(Plain(at::RaiseErrorSql(
                                 Status(error.code(), at::SqlStateOf(error) + ": " + ProxyText(error)))),
                             0, {});
    if (!r) co_return false;
    ext_failed_ = true;
    co_return co_await WriteClient(r->to_client);
  }
  ext_failed_ = true;
  std::string out;
  AppendErrorResponse(out, "ERROR", at::SqlStateOf(error), ProxyText(error));
  co_return co_await WriteClient(out);
}

// ---- the batch ----

asio::awaitable<bool> Session::HandleExtended(std::string message) {
  if (!ext_acquired_) {
    if (!co_await AcquireBackend()) co_return false;
    ext_acquired_ = true;
    coalesce_client_ = true;
    // Messages of this batch forwarded before it was diverted may still be owed answers.
    ext_expect_ = ext_error_since_sync_ ? 0 : std::max(0, ext_sent_ - ext_answered_);
    ext_failed_ = ext_error_since_sync_;
    // Executes relayed before the batch was diverted may have opened or ended a block.
    ext_block_ = ext_execs_sent_ > 0 ? '?' : tx_status_;
    ext_rollback_at_sync_ = false;
    ext_sent_ = ext_execs_sent_ = ext_answered_ = 0;
  }
  const char type = message[0];
  const std::string_view body = std::string_view(message).substr(5);
  if (type == 'S') co_return co_await ExtSync();
  if (type == 'X') co_return true;  // cannot come here
  if (ext_failed_) co_return true;  // skipped until Sync, as the server would
  switch (type) {
    case 'P': {
      auto fields = ParseParse(body);
      if (!fields) co_return co_await ExtForward(message, 1);
      const std::string name(fields->statement);
      const PreparedStatement& slot = name.empty() ? unnamed_ : prepared_[name];
      if (slot.special != Special::kNone) {
        if (!co_await ExtFlush(false)) co_return false;
        std::string out;
        AppendMessage(out, '1', "");
        co_return co_await WriteClient(out);
      }
      co_return co_await ExtForward(message, 1);
    }
    case 'B': {
      auto bind = ParseBind(body);
      if (!bind) co_return co_await ExtForward(message, 1);
      const PreparedStatement* slot = FindPrepared(bind->statement);
      if (slot) bind->params.types = slot->types;
      const bool special = slot && slot->special != Special::kNone;
      bind->commits = slot && slot->known && CommitsBlock(slot->sql);
      bind->may_commit = !slot || !slot->known || bind->commits;
      portals_[bind->portal] = std::move(*bind);
      if (special) {
        if (!co_await ExtFlush(false)) co_return false;
        std::string out;
        AppendMessage(out, '2', "");
        co_return co_await WriteClient(out);
      }
      co_return co_await ExtForward(message, 1);
    }
    case 'D': {
      if (body.size() < 2) co_return co_await ExtForward(message, 1);
      auto name = ReadCString(body.substr(1));
      const PreparedStatement* slot = nullptr;
      if (name && body[0] == 'S') slot = FindPrepared(std::string(*name));
      if (name && body[0] == 'P') {
        auto it = portals_.find(std::string(*name));
        if (it != portals_.end()) slot = FindPrepared(it->second.statement);
      }
      if (!slot || slot->special == Special::kNone) co_return co_await ExtForward(message, 1);
      if (!co_await ExtFlush(false)) co_return false;
      std::string out;
      if (body[0] == 'S') {
        std::string none;
        AppendInt16(none, 0);
        AppendMessage(out, 't', none);
      }
      if (slot->special == Special::kXid && slot->xid_command.kind != XidCommandKind::kShow) {
        AppendMessage(out, 'n', "");
      } else {
        AppendRowDescriptionText(out, slot->special == Special::kXid    ? "dtx.xid"
                                      : slot->dtx_function.kind == DtxFunctionKind::kBegin ? "xid"
                                                                                         : "status");
      }
      co_return co_await WriteClient(out);
    }
    case 'C': {
      if (body.size() >= 2 && body[0] == 'S') {
        auto name = ReadCString(body.substr(1));
        const PreparedStatement* slot = name ? FindPrepared(std::string(*name)) : nullptr;
        if (slot && slot->special != Special::kNone) {
          if (!co_await ExtFlush(false)) co_return false;
          std::string out;
          AppendMessage(out, '3', "");
          co_return co_await WriteClient(out);
        }
      }
      co_return co_await ExtForward(message, 1);
    }
    case 'H':
      co_return co_await ExtFlush(false);
    case 'E':
      if (HasDeferredChecks() && ClientBlock() == 'T') {
        // The block's deferred checks, before an Execute that may commit it (a portal bound
        // before this batch is not known: it may).
        const Portal* portal = nullptr;
        if (auto name = ReadCString(body)) {
          if (auto it = portals_.find(std::string(*name)); it != portals_.end()) portal = &it->second;
        }
        if (!portal || portal->may_commit) {
          if (!co_await ExtFlush(false)) co_return false;
          Status checked = co_await CheckDeferredKeys(true);
          if (!checked.ok()) {
            // The block fails; an Execute of a COMMIT also ends it, rolled back, as on the server.
            const bool commit = portal && portal->commits;
            if (!co_await ExtFail(checked)) co_return false;
            if (commit) ext_rollback_at_sync_ = true;
            co_return true;
          }
        }
      }
      co_return co_await ExtExecute(std::move(message));
    default: {
      // Anything else inside a batch (a Query, a FunctionCall) ends it: the batch's implicit
      // transaction is committed (PostgreSQL would commit it with the Query's), what was sent
      // is answered, then the message goes on outside the batch. After an error it is skipped,
      // as the server skips everything until a Sync.
      if (!co_await ExtEndImplicit()) co_return false;
      const bool failed = ext_failed_;
      if (!co_await ExtCloseOnServer()) co_return false;
      ExtEnd();
      if (failed) {
        ReleaseBackend();
        co_return true;
      }
      if (message[0] == 'F' && RefusesFunctionCall()) co_return co_await RefuseFunctionCall();
      co_return co_await ForwardAcquired(message);
    }
  }
}

asio::awaitable<bool> Session::ExtForward(std::string_view message, int answers) {
  ext_chunk_.append(message);
  ext_expect_ += answers;
  co_return true;
}

const Session::PreparedStatement* Session::FindPrepared(const std::string& name) const {
  if (name.empty()) return &unnamed_;
  auto it = prepared_.find(name);
  return it == prepared_.end() ? nullptr : &it->second;
}

asio::awaitable<bool> Session::ExtExecute(std::string message) {
  auto portal_name = ReadCString(std::string_view(message).substr(5));
  auto portal = portal_name ? portals_.find(std::string(*portal_name)) : portals_.end();
  const PreparedStatement* slot = portal != portals_.end() ? FindPrepared(portal->second.statement) : nullptr;
  const TxEffect effect = slot && slot->known ? slot->tx : TxEffect::kNone;
  const bool ok = co_await ExtExecuteStatement(std::move(message), portal, slot);
  // What the statement does to the client's block (it ran, or everything until Sync is skipped).
  if (ok && !ext_failed_ && ext_block_ != '?') ext_block_ = AfterTxEffect(ext_block_, effect);
  co_return ok;
}

asio::awaitable<bool> Session::ExtExecuteStatement(std::string message, PortalMap::iterator portal,
                                                   const PreparedStatement* slot) {
  if (!slot || !slot->known) {
    if (context_.at && context_.at->coordinator && !EffectiveXid().empty() && ext_block_ != 'E') {
      // A portal or statement the proxy did not see prepared (SQL-level PREPARE, a cursor):
      // it cannot tell whether it writes.
      co_return co_await ExtFail(at::SqlError(
          at::sqlstate::kFeatureNotSupported,
          "a session bound to a global transaction can only execute statements prepared through the "
          "extended protocol (Parse) or cursors declared while bound: this portal is unknown to dtx-sql-proxy"));
    }
    co_return co_await ExtForward(message, 1);
  }
  if (slot->special != Special::kNone) {
    if (!co_await ExtFlush(false)) co_return false;
    std::string out;
    if (slot->special == Special::kXid) {
      const XidCommand command = slot->xid_command;
      if (command.kind == XidCommandKind::kMalformed) co_return co_await ExtFail(at::SqlError("22023", command.error));
      if (ext_block_ == 'E') {
        co_return co_await ExtFail(at::SqlError(
            "25P02", "current transaction is aborted, commands ignored until end of transaction block"));
      }
      if (auto refusal = XidChangeRefusal(command)) co_return co_await ExtFail(*refusal);
      context_.metrics.xid_commands.fetch_add(1, std::memory_order_relaxed);
      ApplyXidCommand(command, out, false);
      co_return co_await WriteClient(out);
    }
    if (ext_block_ == 'E') {
      co_return co_await ExtFail(at::SqlError(
          "25P02", "current transaction is aborted, commands ignored until end of transaction block"));
    }
    DtxFunction fn = slot->dtx_function;
    // $n arguments take the Bind's values (text).
    for (auto [number, is_timeout] : {std::pair{fn.arg_param, false}, std::pair{fn.timeout_param, true}}) {
      if (number == 0) continue;
      const auto& values = portal->second.params.values;
      const auto& formats = portal->second.params.formats;
      const size_t k = static_cast<size_t>(number - 1);
      const bool binary = formats.size() == 1 ? formats[0] == 1 : (k < formats.size() && formats[k] == 1);
      if (k >= values.size() || !values[k] || binary) {
        co_return co_await ExtFail(at::SqlError("22023", "dtx function parameter $" + std::to_string(number) +
                                                             " must be a non-NULL text value"));
      }
      if (!is_timeout) {
        fn.arg = *values[k];
      } else {
        const std::string& t = *values[k];
        if (t.empty() || t.size() > 12 || t.find_first_not_of("0123456789") != std::string::npos) {
          co_return co_await ExtFail(at::SqlError("22023", "the timeout must be a whole number of milliseconds"));
        }
        fn.timeout_ms = std::stoll(t);
      }
    }
    auto value = co_await DtxCall(fn);
    if (!value.ok()) co_return co_await ExtFail(value.status());
    AppendDataRowText(out, *value);
    AppendCommandComplete(out, "SELECT 1");
    co_return co_await WriteClient(out);
  }
  const std::string sql = slot->sql;
  const std::string xid = EffectiveXid();
  Portal bound = portal->second;
  if (ext_block_ == 'E' || !context_.at || !context_.at->coordinator) co_return co_await ExtForward(message, 1);
  if (xid.empty()) {
    if (!context_.at->check_unbound_writes || !at_resource_ || !MayChangeRows(sql)) {
      co_return co_await ExtForward(message, 1);
    }
    if (!local_branch_) local_branch_ = std::make_unique<at::AtBranch>(at_resource_->options, at_resource_->catalog, "");
    auto st = local_branch_->PrepareLocal(sql, bound.params);
    if (!st.ok()) co_return co_await ExtFail(st.status());
    const at::LocalWrite& write = (*st)->local_write();
    if (write.check != at::LocalWrite::Check::kTables) co_return co_await ExtSteps(*local_branch_, **st, message, bound, true);
    if (ClientBlock() == 'T') {
      DeferTables(write);
      co_return co_await ExtForward(message, 1);
    }
    if (write.copies || write.procedure) co_return co_await ExtFail(TablesCheckOutsideABlock());
    // Outside a block, the batch's implicit transaction holds the tables' locks until its Sync
    // (a TRUNCATE cannot commit it early, as a procedure could). The statement's answer waits in
    // client_out_ (the batch's answers are gathered) until the check passes; on a conflict the
    // error takes its place.
    if (!co_await ExtFlush(false)) co_return false;
    if (ext_failed_) co_return true;
    const size_t before = client_out_.size();
    co_await ExtForward(message, 1);
    if (!co_await ExtFlush(false)) co_return false;
    if (ext_failed_) co_return true;
    Status checked = co_await CheckTables(false, true);
    if (checked.ok()) co_return true;
    if (coalesce_client_ && client_out_.size() >= before) client_out_.resize(before);
    co_return co_await ExtFail(checked, true);
  }
  if (!at_resource_) {
    if (auto refusal = NoResourceRefusal(sql)) co_return co_await ExtFail(*refusal);
    co_return co_await ExtForward(message, 1);
  }
  const bool in_block = ext_block_ != 'I';
  std::shared_ptr<at::AtBranch> branch;
  if (in_block) {
    if (branch_ && branch_->xid() != xid) {
      if (branch_->has_writes() || branch_->MayWriteElsewhere()) {
        co_return co_await ExtFail(at::SqlError(at::sqlstate::kFeatureNotSupported,
                                                "dtx.xid changed to " + xid + " inside a transaction block that wrote for " + branch_->xid()));
      }
      branch_.reset();
    }
    if (!branch_) branch_ = std::make_shared<at::AtBranch>(at_resource_->options, at_resource_->catalog, xid);
    branch = branch_;
  } else if (ext_branch_ && ext_branch_->xid() == xid) {
    branch = ext_branch_;
  } else {
    branch = std::make_shared<at::AtBranch>(at_resource_->options, at_resource_->catalog, xid);
  }
  auto st = branch->Prepare(sql, bound.params);
  if (!st.ok()) co_return co_await ExtFail(st.status());
  const at::StatementKind kind = (*st)->kind();
  if (ext_block_ == '?' && (kind == at::StatementKind::kTransactionControl || Writes(kind) ||
                            kind == at::StatementKind::kSelectForUpdate ||
                            ((*st)->CallsUnknownFunctions() && branch->MayWriteElsewhere()))) {
    co_return co_await ExtFail(at::SqlError(
        at::sqlstate::kFeatureNotSupported,
        "dtx-sql-proxy cannot tell the transaction state of this pipeline: statements ran before the session "
        "was bound in it; send a Sync before the global transaction's statements"));
  }
  switch (kind) {
    case at::StatementKind::kTransactionControl:
      switch ((*st)->transaction_op()) {
        case at::TransactionOp::kCommit:
          if (ext_implicit_) {
            // COMMIT of the implicit transaction (PostgreSQL commits it too): its branch first.
            if (slot->tx == TxEffect::kChain) {
              co_return co_await ExtFail(at::SqlError("25P01", "COMMIT AND CHAIN can only be used in transaction blocks"));
            }
            if (!co_await ExtEndImplicit()) co_return false;
            if (ext_failed_) co_return true;
            co_return co_await ExtAnswer('C', "COMMIT");
          }
          if (in_block && (branch->has_writes() || branch->MayWriteElsewhere())) {
            branch_.reset();
            co_return co_await ExtCommit(branch, message);
          }
          co_return co_await ExtForward(message, 1);
        case at::TransactionOp::kRollback:
          if (ext_implicit_) {
            if (slot->tx == TxEffect::kChain) {
              co_return co_await ExtFail(at::SqlError("25P01", "ROLLBACK AND CHAIN can only be used in transaction blocks"));
            }
            auto r = co_await ExtRun(Plain("ROLLBACK"), 0, {});
            if (!r) co_return false;
            ext_implicit_ = false;
            ext_branch_.reset();  // never registered
            if (r->failed) co_return co_await WriteClient(r->to_client);
            co_return co_await ExtAnswer('C', "ROLLBACK");
          }
          if (in_block) branch_.reset();
          co_return co_await ExtForward(message, 1);
        case at::TransactionOp::kSavepoint:
        case at::TransactionOp::kRelease:
        case at::TransactionOp::kRollbackTo:
          if (ext_implicit_) {
            co_return co_await ExtFail(at::SqlError("25P01", "savepoints can only be used in transaction blocks"));
          }
          if (in_block) co_return co_await ExtSteps(*branch, **st, message, bound, false);
          co_return co_await ExtForward(message, 1);
        case at::TransactionOp::kBegin:
          if (ext_implicit_) {
            // PostgreSQL turns the implicit transaction into the client's block: so does the
            // proxy, and the writes so far become the block's branch.
            if (!co_await ExtFlush(false)) co_return false;
            if (ext_failed_) co_return true;
            ext_implicit_ = false;
            branch_ = std::move(ext_branch_);
            co_return co_await ExtAnswer('C', "BEGIN");
          }
          co_return co_await ExtForward(message, 1);
        default:
          co_return co_await ExtForward(message, 1);
      }
    case at::StatementKind::kInsert:
    case at::StatementKind::kUpdate:
    case at::StatementKind::kDelete: {
      context_.metrics.at_statements.fetch_add(1, std::memory_order_relaxed);
      if (!in_block && !ext_implicit_) {
        const std::optional<bool> begun = co_await ExtBeginImplicit(branch);
        if (!begun) co_return false;
        if (!*begun) co_return true;
      }
      co_return co_await ExtSteps(*branch, **st, message, bound, false);
    }
    case at::StatementKind::kSelectForUpdate:
      if (!in_block && branch->MayWriteElsewhere() && !ext_implicit_) {
        const std::optional<bool> begun = co_await ExtBeginImplicit(branch);
        if (!begun) co_return false;
        if (!*begun) co_return true;
      }
      co_return co_await ExtSteps(*branch, **st, message, bound, false);
    default:
      if (!in_block && branch->MayWriteElsewhere() && (*st)->CallsUnknownFunctions() &&
          kind != at::StatementKind::kReadOnly) {
        const Status refusal = WritesElsewhereOutsideABlock();
        co_return co_await ExtFail(refusal);
      }
      if (!in_block && branch->MayWriteElsewhere()) {
        // A function it calls may write: it runs in the batch's transaction, whose writes are
        // checked before it commits (ExtRegister).
        if (!ext_implicit_) {
          const std::optional<bool> begun = co_await ExtBeginImplicit(branch);
          if (!begun) co_return false;
          if (!*begun) co_return true;
        } else if (ext_branch_ != branch) {
          const Status refusal =
              at::SqlError(at::sqlstate::kFeatureNotSupported, "dtx.xid changed inside a pipeline's implicit transaction");
          co_return co_await ExtFail(refusal);
        }
      }
      co_return co_await ExtForward(message, 1);
  }
}

// Outside a block: the batch's writes run in a transaction of the proxy's (ext_implicit_),
// committed at the Sync as one branch. nullopt: the session is lost; false: the BEGIN failed and
// the client has its answer.
asio::awaitable<std::optional<bool>> Session::ExtBeginImplicit(std::shared_ptr<at::AtBranch> branch) {
  auto r = co_await ExtRun(Plain("BEGIN"), 0, {});
  if (!r) co_return std::nullopt;
  if (r->failed) {
    if (!co_await WriteClient(r->to_client)) co_return std::nullopt;
    co_return false;
  }
  if (r->to_client.find("25001") != std::string::npos) {
    // The server was in a block after all: the proxy's view of the pipeline is wrong, so
    // the write is refused (and the block fails) rather than left out of the branch.
    ext_block_ = 'T';
    if (!co_await ExtFail(at::SqlError("XX000", "dtx-sql-proxy lost track of the transaction block in this pipeline"))) {
      co_return std::nullopt;
    }
    co_return false;
  }
  ext_implicit_ = true;
  ext_branch_ = std::move(branch);
  co_return true;
}

asio::awaitable<bool> Session::ExtAnswer(char type, std::string_view tag) {
  if (!co_await ExtFlush(false)) co_return false;
  std::string out;
  if (type == 'C') {
    AppendCommandComplete(out, tag);
  } else {
    AppendMessage(out, type, "");
  }
  co_return co_await WriteClient(out);
}

asio::awaitable<bool> Session::ExtSteps(const at::AtBranch& branch, at::AtStatement& st, std::string_view execute, const Portal& portal,
                                        bool local) {
  if (!local) {
    if (auto refusal = EncodingRefusal()) co_return co_await ExtFail(*refusal);
  }
  std::string answer;  // the statement's, held back until the write of an unbound session is checked
  std::optional<BackendReply> behind;  // the statement's answer, when sent behind its before image
  while (auto step = st.Next()) {
    if (step->check_global_locks && local && ClientBlock() == 'T') {
      // In the client's block the check waits for whatever may commit it (CheckDeferredKeys).
      deferred_keys_.insert(deferred_keys_.end(), st.lock_keys().begin(), st.lock_keys().end());
      st.LocksChecked();
      continue;
    }
    if (step->check_global_locks) {
      if (local) context_.metrics.at_unbound_checks.fetch_add(1, std::memory_order_relaxed);
      if (!co_await ExtFlush(false)) co_return false;
      if (ext_failed_) co_return true;
      Status s = co_await CheckLocks(branch, st);
      if (!s.ok()) co_return co_await ExtFail(s, local);
      continue;
    }
    const bool statement = step->query.role == at::QueryRole::kStatement;
    if (statement && step->query.hidden_columns == 0) {
      // The client's own statement, unchanged: its portal runs as it is.
      if (local) co_return co_await ExtForward(execute, 1);
      std::string request(execute);
      ext_chunk_.append(request);
      ++ext_expect_;
      if (!co_await ExtFlush(false)) co_return false;
      if (ext_failed_) {
        st.OnError();
        co_return true;
      }
      Status s = st.OnResult(at::QueryResult{});
      if (!s.ok()) co_return co_await ExtFail(s);
      continue;
    }
    auto formats_of = [&](const at::AtQuery& q) {
      std::vector<int16_t> formats = portal.result_formats;
      // Per-column formats: the hidden columns come as text.
      if (formats.size() > 1) formats.insert(formats.end(), q.hidden_columns, 0);
      return formats;
    };
    // The queries of a statement the client prepared under a name are prepared once too.
    const bool reuse = !portal.statement.empty();
    std::optional<BackendReply> r;
    if (statement && behind) {
      r = std::move(behind);  // sent with its before image
      behind.reset();
    } else if (auto next = st.StatementBehindBeforeImage(); next && !statement) {
      // The before image and the statement in one write; the server skips the second after an
      // error in the first.
      // (Named locals, not temporaries, across co_await: GCC 12 mishandles those.)
      const std::vector<int16_t> formats = formats_of(*next);
      const int hidden = next->hidden_columns;
      if (!co_await ExtRunPair(step->query, *next, hidden, formats, reuse, r, behind)) co_return false;
    } else {
      const std::vector<int16_t> formats = statement ? formats_of(step->query) : std::vector<int16_t>{};
      const int hidden = statement ? step->query.hidden_columns : 0;
      // The last query of a bound write inside the client's block, with the client's Sync next:
      // the Sync goes with it (it commits nothing in a block), one round trip less.
      const bool sync = statement && !local && next_is_sync_ && ext_block_ == 'T' && !ext_implicit_ &&
                        !HasDeferredChecks() && !ext_synced_;
      r = co_await ExtRun(step->query, hidden, formats, reuse, sync);
    }
    if (!r) co_return false;
    if (r->failed) {
      st.OnError();
      co_return co_await WriteClient(r->to_client);
    }
    at::QueryResult result{std::move(r->rows), std::move(r->command_tag)};
    Status s = st.OnResult(result);
    if (!s.ok()) co_return co_await ExtFail(s, local);
    if (statement) answer = std::move(r->to_client);
  }
  if (answer.empty()) co_return true;
  const bool written = co_await WriteClient(answer);
  co_return written;
}

// Registers the branch, writes its undo row, then runs the client's COMMIT (`execute`); or
// rolls the local transaction back and fails the batch.
asio::awaitable<bool> Session::ExtRegister(std::shared_ptr<at::AtBranch> branch, std::optional<std::string> execute,
                                           bool& committed) {
  committed = false;
  if (ext_failed_) co_return true;
  if (branch->MayWriteElsewhere()) {
    Status elsewhere = co_await CheckWritesElsewhere(*branch, true);
    if (!elsewhere.ok() && ext_failed_) {
      // The server failed the check query (its error went to the client): rolled back at the Sync.
      FinishLater(branch, false);
      ext_rollback_at_sync_ = true;
      co_return true;
    }
    if (!elsewhere.ok()) {
      ext_failed_ = true;
      ext_rollback_at_sync_ = true;
      std::string out;
      AppendErrorResponse(out, "ERROR", at::SqlStateOf(elsewhere), ProxyText(elsewhere));
      co_return co_await WriteClient(out);
    }
  }
  // The client's pending messages (the Bind of its COMMIT) go with the undo row below.
  Result<std::optional<at::AtQuery>> undo = co_await RegisterBranch(*branch);
  Status error = undo.status();
  bool commit_sent = false;  // with the undo row, in one write
  bool pending_failed = false;
  if (undo.ok() && *undo) {
    // The client's pending messages, the undo row and the COMMIT in one write: after an error the
    // server skips the rest.
    commit_sent = true;
    const OwnStatement own = OwnStatementFor(**undo, true);
    std::string request = OwnQuery(**undo, {}, own.name, own.parse, own.keep);
    const at::AtQuery commit = Plain("COMMIT");
    OwnStatement commit_own;
    if (execute) {
      request.append(*execute);
      AppendMessage(request, 'H', "");
    } else {
      commit_own = OwnStatementFor(commit, true);
      request.append(OwnQuery(commit, {}, commit_own.name, commit_own.parse, commit_own.keep));
    }
    if (!co_await ExtFlushBefore(std::move(request))) co_return false;
    auto forget = [this](const OwnStatement& o) {
      if (o.keep && o.parse) own_prepared_.erase(o.key);
    };
    if (ext_failed_) {
      // The client's own messages failed (relayed to it): nothing of the proxy's ran.
      pending_failed = true;
      forget(own);
      forget(commit_own);
    } else {
      auto w = co_await ReadOwn(0, own);
      if (!w) co_return false;
      if (w->failed) {
        error = branch->UndoWriteFailed(w->sqlstate, w->message);
        forget(commit_own);
        // The server skips to the Sync; ExtSync rolls the transaction back.
        ext_failed_ = true;
      } else if (execute) {
        // The client's COMMIT: its answer is relayed; it committed unless an error came.
        ++ext_expect_;
        if (!co_await ExtRelayOwed(false)) co_return false;
        committed = !ext_failed_;
      } else {
        auto c = co_await ReadOwn(0, commit_own);
        if (!c) co_return false;
        committed = !c->failed;
        if (c->failed && !co_await WriteClient(c->to_client)) co_return false;
      }
    }
  }
  if (pending_failed) {
    FinishLater(branch, false);
    context_.metrics.at_branches_failed.fetch_add(1, std::memory_order_relaxed);
    ext_rollback_at_sync_ = true;
    co_return true;
  }
  if (error.ok() && !commit_sent) {
    if (execute) {
      ext_chunk_.append(*execute);
      ++ext_expect_;
      // The COMMIT's answer is relayed; it committed unless an error came.
      if (!co_await ExtFlush(false)) co_return false;
      committed = !ext_failed_;
    } else {
      auto c = co_await ExtRun(Plain("COMMIT"), 0, {});
      if (!c) co_return false;
      committed = !c->failed;
      if (c->failed && !co_await WriteClient(c->to_client)) co_return false;
    }
  } else if (!error.ok() && !ext_failed_) {
    auto r = co_await ExtRun(Plain("ROLLBACK"), 0, {});
    if (!r) co_return false;
  }
  FinishLater(branch, committed);
  if (branch->has_writes()) {
    (committed ? context_.metrics.at_branches_committed : context_.metrics.at_branches_failed)
        .fetch_add(1, std::memory_order_relaxed);
  }
  if (!error.ok()) {
    context_.metrics.at_refusals.fetch_add(1, std::memory_order_relaxed);
    ext_failed_ = true;
    ext_rollback_at_sync_ = true;  // the local transaction ends rolled back, whichever protocol
    std::string out;
    AppendErrorResponse(out, "ERROR", at::SqlStateOf(error), ProxyText(error));
    co_return co_await WriteClient(out);
  }
  co_return true;
}

asio::awaitable<bool> Session::ExtCommit(std::shared_ptr<at::AtBranch> branch, std::string execute) {
  bool committed = false;
  co_return co_await ExtRegister(std::move(branch), std::move(execute), committed);
}

asio::awaitable<bool> Session::ExtEndImplicit() {
  if (!ext_implicit_) co_return true;
  auto branch = std::move(ext_branch_);
  ext_implicit_ = false;
  if (!ext_failed_) {
    if (branch->has_writes() || branch->MayWriteElsewhere()) {
      bool committed = false;
      if (!co_await ExtRegister(branch, std::nullopt, committed)) co_return false;
    } else {
      auto c = co_await ExtRun(Plain("COMMIT"), 0, {});
      if (!c) co_return false;
      if (c->failed && !co_await WriteClient(c->to_client)) co_return false;
    }
  }
  // The proxy's own transaction failed: it is rolled back once the server has reached the Sync.
  if (ext_failed_) ext_rollback_at_sync_ = true;
  co_return true;
}

asio::awaitable<bool> Session::ExtSync() {
  if (!co_await ExtEndImplicit()) co_return false;
  if (!co_await ExtCloseOnServer()) co_return false;
  std::string out;
  AppendReadyForQuery(out, tx_status_);
  ExtEnd();
  const bool ok = co_await WriteClient(out);
  ReleaseBackend();
  co_return ok;
}

asio::awaitable<bool> Session::ExtCloseOnServer() {
  if (!co_await ExtFlush(true)) co_return false;
  if (ext_rollback_at_sync_ && tx_status_ != 'I') {
    if (!co_await Exchange(wire::QueryMessage("ROLLBACK"), 0)) co_return false;
  }
  ext_rollback_at_sync_ = false;
  if (ext_own_left_) {
    std::string close;
    for (char kind : {'P', 'S'}) {
      std::string body(1, kind);
      AppendCString(body, kOwn);
      AppendMessage(close, 'C', body);
    }
    AppendMessage(close, 'S', "");
    if (!co_await Exchange(close, 0)) co_return false;
    ext_own_left_ = false;
  }
  co_return true;
}

void Session::ExtEnd() {
  ext_batch_ = false;
  ext_unsynced_ = false;
  ext_acquired_ = false;
  ext_failed_ = false;
  ext_implicit_ = false;
  ext_block_ = 'I';
  ext_rollback_at_sync_ = false;
  ext_own_left_ = false;
  ext_sent_ = ext_execs_sent_ = ext_answered_ = 0;
  ext_error_since_sync_ = false;
  ext_expect_ = 0;
  ext_chunk_.clear();
  ext_branch_.reset();
  if (tx_status_ == 'I') portals_.clear();
}

}  // namespace dtx::sql_proxy
