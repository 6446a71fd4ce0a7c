// The AT half of Session (see docs/sql-proxy.md, "AT mode"): the dtx.* functions, the statements
// of XID-bound sessions turned into AT branches, and the global-lock check of unbound writes.
// Everything here runs with the backend acquired (the back loop parked), on the session's
// worker thread; coordinator calls are non-blocking and resume here.
#include <spdlog/spdlog.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <cctype>
#include <thread>

#include "dtx/at/hidden_columns.h"
#include "session.h"
#include "session_wire.h"

namespace dtx::sql_proxy {
namespace {

using wire::AppendMessage;
using wire::QueryMessage;
using wire::ReadInt32;

constexpr auto kTuple = asio::as_tuple(asio::use_awaitable);

// Parse/Bind/Execute/Sync of one statement with parameters, results in text.
std::string ExtendedQuery(const at::AtQuery& q) {
  std::string out;
  wire::AppendParseBindExecute(out, "", "", q, {});
  wire::AppendMessage(out, 'S', "");
  return out;
}

std::string Request(const at::AtQuery& q) {
  if (q.params.values.empty() && q.params.types.empty()) return QueryMessage(q.sql);
  return ExtendedQuery(q);
}

// Every value of a DataRow body; nullopt if malformed.
std::optional<std::vector<std::optional<std::string>>> DataRowValues(std::string_view body) {
  if (body.size() < 2) return std::nullopt;
  const int n = (static_cast<uint8_t>(body[0]) << 8) | static_cast<uint8_t>(body[1]);
  std::vector<std::optional<std::string>> out;
  size_t at = 2;
  for (int k = 0; k < n; ++k) {
    if (body.size() - at < 4) return std::nullopt;
    const int32_t len = ReadInt32(body, at);
    at += 4;
    if (len < 0) {
      out.emplace_back();
      continue;
    }
    if (body.size() - at < static_cast<size_t>(len)) return std::nullopt;
    out.emplace_back(std::string(body.substr(at, len)));
    at += len;
  }
  return out;
}

std::string ProxyText(const Status& s) {
  std::string text = at::SqlTextOf(s);
  return text.starts_with("dtx-sql-proxy") ? text : "dtx-sql-proxy: " + text;
}

}  // namespace

bool Session::StalePlan(const BackendReply& reply) {
  return reply.sqlstate == "0A000" && reply.message.find("cached plan must not change result type") != std::string::npos;
}

// ---- coordinator calls ----

template <class R>
asio::awaitable<R> Session::Await(std::function<void(std::function<void(R)>)> start) {
  // The answer comes on an rpc I/O thread (this worker's own, with AtServices::worker_coordinator)
  // and is handed to this session's thread; the state is shared so that a late answer never
  // touches a finished coroutine's frame.
  struct State {
    explicit State(asio::any_io_executor e) : timer(e, asio::steady_timer::time_point::max()) {}
    std::optional<R> out;
    asio::steady_timer timer;
  };
  auto executor = co_await asio::this_coro::executor;
  auto state = std::make_shared<State>(executor);
  start([state, executor](R r) mutable {
    asio::post(executor, [state, r = std::move(r)]() mutable {
      state->out.emplace(std::move(r));
      state->timer.cancel();
    });
  });
  while (!state->out) co_await state->timer.async_wait(kTuple);
  R out = std::move(*state->out);
  co_return out;
}

asio::awaitable<Status> Session::CheckLocks(const at::AtBranch& branch, at::AtStatement& st) {
  Status s = co_await CheckKeys(branch, st.lock_keys());
  if (s.ok()) st.LocksChecked();
  co_return s;
}

asio::awaitable<Status> Session::CheckKeys(const at::AtBranch& branch, const std::vector<std::string>& keys) {
  static const std::vector<std::string> kNoPrefixes;
  Status s = co_await CheckKeys(branch, keys, kNoPrefixes);
  co_return s;
}

asio::awaitable<Status> Session::CheckKeys(const at::AtBranch& branch, const std::vector<std::string>& keys,
                                           const std::vector<std::string>& key_prefixes) {
  auto& coordinator = *coordinator_;
  const auto deadline = std::chrono::steady_clock::now() + branch.options().lock_retry_for;
  asio::steady_timer timer(co_await asio::this_coro::executor);
  while (true) {
    using Answer = Result<sdk::LockQuery>;
    Answer answer = co_await Await<Answer>([&](std::function<void(Answer)> done) {
      coordinator.QueryLocksAsync(branch.xid(), branch.options().resource_id, keys, key_prefixes, std::move(done));
    });
    bool retry = false;
    Status s = branch.LockAnswer(answer, std::chrono::steady_clock::now() < deadline, retry);
    if (!retry) co_return s;
    timer.expires_after(branch.options().lock_retry_interval);
    co_await timer.async_wait(kTuple);
  }
}

asio::awaitable<Status> Session::CheckDeferredKeys(bool extended) {
  // A failed batch commits nothing (the server skips all until its Sync): the checks wait.
  if ((extended && ext_failed_) || !local_branch_) co_return Status::Ok();
  std::vector<std::string> keys = std::move(deferred_keys_);
  deferred_keys_.clear();
  const DeferredTables tables = std::exchange(deferred_tables_, DeferredTables::kNone);
  if (keys.empty() && tables == DeferredTables::kNone) co_return Status::Ok();
  std::sort(keys.begin(), keys.end());
  keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
  Status checked;
  if (tables != DeferredTables::kNone) {
    checked = co_await CheckTables(tables == DeferredTables::kTruncated, extended, keys);
  } else {
    context_.metrics.at_unbound_checks.fetch_add(1, std::memory_order_relaxed);
    checked = co_await CheckKeys(*local_branch_, keys);
  }
  if (!checked.ok()) {
    // The failure fails the block, but a ROLLBACK TO SAVEPOINT may revive it with these writes
    // in it: they are checked again before whatever commits it. (The block's end clears them.)
    deferred_keys_ = std::move(keys);
    deferred_tables_ = tables;
  }
  co_return checked;
}

asio::awaitable<Status> Session::CheckTables(bool exclusive_only, bool extended) {
  std::vector<std::string> none;
  Status s = co_await CheckTables(exclusive_only, extended, std::move(none));
  co_return s;
}

asio::awaitable<Status> Session::CheckTables(bool exclusive_only, bool extended, std::vector<std::string> keys) {
  at::AtQuery q;
  q.sql = at::TablesWrittenQuery(exclusive_only);
  std::optional<BackendReply> r;
  if (extended) {
    const std::vector<int16_t> text_results;
    r = co_await ExtRun(q, 0, text_results);
  } else {
    r = co_await Exchange(QueryMessage(q.sql), 0);
  }
  if (!r) co_return at::SqlError(at::sqlstate::kConnectionFailure, "dtx-sql-proxy lost the PostgreSQL server");
  if (r->failed) {
    // In a batch the server's error is the answer (ExtFail adds nothing to a failed batch).
    if (extended && !co_await WriteClient(r->to_client)) {
      co_return at::SqlError(at::sqlstate::kConnectionFailure, "dtx-sql-proxy lost the client");
    }
    co_return at::SqlError(r->sqlstate.empty() ? "XX000" : r->sqlstate,
                           "dtx-sql-proxy could not list the tables this transaction wrote: " + r->message);
  }
  std::vector<std::string> prefixes;
  for (const auto& row : r->rows) {
    if (row.size() != 2 || !row[0] || !row[1]) continue;
    prefixes.push_back(at::LockKey(local_branch_->options().resource_id, *row[0], *row[1], {}));
  }
  if (prefixes.empty() && keys.empty()) co_return Status::Ok();
  context_.metrics.at_unbound_checks.fetch_add(1, std::memory_order_relaxed);
  co_return co_await CheckKeys(*local_branch_, keys, prefixes);
}

asio::awaitable<Status> Session::CheckWritesElsewhere(const at::AtBranch& branch, bool extended) {
  // Deferred triggers (constraint triggers, deferred foreign keys) would fire at the COMMIT,
  // after the check: they fire now, in the same write.
  // Both stay prepared on the server (one text each, for every branch): planned once per session.
  static const at::AtQuery kImmediate = [] {
    at::AtQuery q;
    q.sql = "SET CONSTRAINTS ALL IMMEDIATE";
    return q;
  }();
  at::AtQuery immediate = kImmediate;
  immediate.keep = branch.options().keep_prepared;
  at::AtQuery q = branch.WritesElsewhereQuery();
  q.keep = branch.options().keep_prepared;
  std::optional<BackendReply> first, r;
  if (extended) {
    const std::vector<int16_t> text_results;
    if (!co_await ExtRunPair(immediate, q, 0, text_results, branch.options().keep_prepared, first, r)) {
      co_return at::SqlError(at::sqlstate::kConnectionFailure, "dtx-sql-proxy lost the PostgreSQL server");
    }
    if (first && first->failed) r = std::move(first);
  } else {
    const std::vector<const at::AtQuery*> queries{&immediate, &q};
    const std::vector<int> hidden(2, 0);
    auto replies = co_await Pipeline(queries, hidden);
    if (replies) r = std::move((*replies)[(*replies)[0].failed ? 0 : 1]);
  }
  if (!r) co_return at::SqlError(at::sqlstate::kConnectionFailure, "dtx-sql-proxy lost the PostgreSQL server");
  if (r->failed) {
    // In a batch the server's error is the answer (the batch has failed).
    if (extended && !co_await WriteClient(r->to_client)) {
      co_return at::SqlError(at::sqlstate::kConnectionFailure, "dtx-sql-proxy lost the client");
    }
    co_return at::SqlError(r->sqlstate.empty() ? "XX000" : r->sqlstate, r->message.empty() ? "the server failed the check of the tables this transaction wrote" : r->message);
  }
  at::QueryResult result{std::move(r->rows), std::move(r->command_tag)};
  Status s = branch.OnWritesElsewhere(result);
  if (!s.ok()) context_.metrics.at_refusals.fetch_add(1, std::memory_order_relaxed);
  co_return s;
}

asio::awaitable<Result<std::optional<at::AtQuery>>> Session::RegisterBranch(at::AtBranch& branch) {
  if (!branch.has_writes()) co_return std::optional<at::AtQuery>();
  auto& coordinator = *coordinator_;
  const sdk::BranchRegistration registration = branch.Registration();
  const auto deadline = std::chrono::steady_clock::now() + branch.options().lock_retry_for;
  asio::steady_timer timer(co_await asio::this_coro::executor);
  while (true) {
    using Answer = Result<int64_t>;
    Answer id = co_await Await<Answer>([&](std::function<void(Answer)> done) {
      coordinator.RegisterBranchAsync(registration, std::move(done));
    });
    bool retry = false;
    Result<std::optional<at::AtQuery>> undo = branch.OnRegistered(id, std::chrono::steady_clock::now() < deadline, retry);
    if (!retry) co_return undo;
    timer.expires_after(branch.options().lock_retry_interval);
    co_await timer.async_wait(kTuple);
  }
}

// ---- talking to the server with the backend acquired ----

asio::awaitable<bool> Session::NextServerMessage(std::string& out) {
  while (true) {
    Frame f = ReadMessage(std::string_view(abuf_).substr(abuf_at_), SIZE_MAX);
    if (f.status == FrameStatus::kError) co_return false;
    if (f.status == FrameStatus::kMessage) {
      out.assign(abuf_, abuf_at_, f.size);
      abuf_at_ += f.size;
      if (abuf_at_ == abuf_.size()) {
        abuf_.clear();
        abuf_at_ = 0;
      }
      OnServerMessage(out[0], out, out.data());
      if (begin_answers_ > 0) {
        bool refused = false;
        if (DropBeginAnswer(out[0], out, refused)) continue;
        if (refused) co_return false;
      }
      co_return true;
    }
    if (abuf_at_ > 0) {
      abuf_.erase(0, abuf_at_);
      abuf_at_ = 0;
    }
    bool fresh = false;  // a read at once: the answer is awaited
    auto [ec, n] = co_await ReadSome(server_, sbuf_.get(), kBufferSize, fresh);
    if (ec || n == 0) co_return false;
    context_.metrics.bytes_server_to_client.fetch_add(n, std::memory_order_relaxed);
    abuf_.append(sbuf_.get(), n);
  }
}

bool Session::Collect(BackendReply& reply, const std::string& message, int hidden, bool& rowless) {
  const char type = message[0];
  const std::string_view body = std::string_view(message).substr(5);
  switch (type) {
    case 'Z':
      reply.status = tx_status_;
      return true;
    case 'T':
      if (hidden > 0) {
        auto trimmed = at::DropTrailingColumns('T', body, hidden);
        if (!trimmed.ok()) return false;
        // A write without a RETURNING of the client's own answers no rows at all.
        rowless = trimmed->size() >= 2 && (*trimmed)[0] == 0 && (*trimmed)[1] == 0;
        if (!rowless) AppendMessage(reply.to_client, 'T', *trimmed);
        return true;
      }
      break;
    case 'D': {
      if (hidden > 0) {
        auto values = at::TrailingValues(body, hidden);
        auto trimmed = at::DropTrailingColumns('D', body, hidden);
        if (!values.ok() || !trimmed.ok()) return false;
        reply.rows.push_back(std::move(*values));  // the engine reads the images from the last columns
        const bool empty = trimmed->size() >= 2 && (*trimmed)[0] == 0 && (*trimmed)[1] == 0;
        if (!rowless && !empty) AppendMessage(reply.to_client, 'D', *trimmed);
        return true;
      }
      auto values = DataRowValues(body);
      if (!values) return false;
      reply.rows.push_back(std::move(*values));
      break;
    }
    case 'C':
      if (auto tag = ReadCString(body)) reply.command_tag = std::string(*tag);
      break;
    case 'E':
      if (auto fields = ParseErrorFields(body)) {
        reply.failed = true;
        reply.sqlstate = fields->sqlstate;
        reply.message = fields->message;
      }
      break;
    case '1':
    case '2':
    case '3':
      return true;  // Parse/Bind/CloseComplete of the proxy's own extended queries
    default:
      break;
  }
  reply.to_client.append(message);
  return true;
}

asio::awaitable<std::optional<Session::BackendReply>> Session::Exchange(std::string_view request, int hidden) {
  if (!co_await WriteServer(request)) co_return std::nullopt;
  // (Not `co_return co_await ReadReply(...)`: GCC 12 miscompiles that form for this type.)
  std::optional<BackendReply> reply = co_await ReadReply(hidden);
  co_return reply;
}

asio::awaitable<std::optional<Session::BackendReply>> Session::ReadReply(int hidden) {
  BackendReply reply;
  bool rowless = false;
  std::string message;
  while (true) {
    if (!co_await NextServerMessage(message)) co_return std::nullopt;
    if (!Collect(reply, message, hidden, rowless)) co_return std::nullopt;
    if (message[0] == 'Z') co_return reply;
  }
}

asio::awaitable<std::optional<std::vector<Session::BackendReply>>> Session::Pipeline(
    const std::vector<const at::AtQuery*>& queries, const std::vector<int>& hidden) {
  std::string request;
  // A query marked `keep` runs from the session's kept prepared statement (parsed now or already).
  std::vector<OwnStatement> own(queries.size());
  for (size_t i = 0; i < queries.size(); ++i) {
    if (queries[i]->keep) own[i] = OwnStatementFor(*queries[i], true);
    if (!own[i].keep) own[i] = OwnStatement{};  // unnamed (also when the session keeps too many)
    wire::AppendParseBindExecute(request, own[i].name, "", *queries[i], {}, hidden[i] > 0, own[i].parse);
  }
  wire::AppendMessage(request, 'S', "");
  if (!co_await WriteServer(request)) co_return std::nullopt;
  std::vector<BackendReply> replies(queries.size());
  size_t at = 0;
  bool rowless = false, parsed = false;
  std::string message;
  while (true) {
    if (!co_await NextServerMessage(message)) co_return std::nullopt;
    const char type = message[0];
    if (!Collect(replies[at], message, hidden[at], rowless)) co_return std::nullopt;
    if (type == 'Z') break;
    if (type == '1') parsed = true;
    if (type == 'E') {
      // The rest was skipped: only the ReadyForQuery is left. A kept statement whose Parse failed
      // or never ran does not exist; one dropped by something the proxy did not see (26000): all
      // may be gone.
      for (size_t i = at; i < queries.size(); ++i) {
        if (own[i].keep && own[i].parse && (i > at || !parsed)) own_prepared_.erase(own[i].key);
      }
      if (own[at].keep && StalePlan(replies[at])) own_prepared_.erase(own[at].key);
      if (replies[at].sqlstate == "26000") own_prepared_.clear();
      at = replies.size() - 1;
    }
    if ((type == 'C' || type == 'I') && at + 1 < replies.size()) {
      ++at;
      rowless = false;
      parsed = false;
    }
  }
  co_return replies;
}

asio::awaitable<bool> Session::ForwardAcquired(std::string_view message) {
  ++outstanding_;
  ReleaseBackend();
  co_return co_await WriteServer(message);
}

asio::awaitable<bool> Session::ReplyToClient(std::string bytes) {
  AppendReadyForQuery(bytes, tx_status_);
  const bool ok = co_await WriteClient(bytes);
  ReleaseBackend();
  co_return ok;
}

asio::awaitable<bool> Session::FailStatement(const Status& error, bool rollback, std::string before) {
  context_.metrics.at_refusals.fetch_add(1, std::memory_order_relaxed);
  if (tx_status_ == 'E') {
    // Failed on the server already (a query of the proxy's failed): raising would only say 25P02.
    if (rollback && !co_await Exchange(QueryMessage("ROLLBACK"), 0)) co_return false;
    AppendErrorResponse(before, "ERROR", at::SqlStateOf(error), ProxyText(error));
    co_return co_await ReplyToClient(std::move(before));
  }
  // The error is raised by the server, so that a transaction block fails there too.
  auto r = co_await Exchange(QueryMessage(at::RaiseErrorSql(Status(error.code(), std::string(at::SqlStateOf(error)) +
                                                                                  ": " + ProxyText(error)))),
                             0);
  if (!r) co_return false;
  if (rollback && !co_await Exchange(QueryMessage("ROLLBACK"), 0)) co_return false;
  before += r->to_client;
  co_return co_await ReplyToClient(std::move(before));
}

asio::awaitable<bool> Session::ErrorToClient(const Status& error) {
  if (tx_status_ != 'I') co_return co_await FailStatement(error, false);
  std::string out;
  AppendErrorResponse(out, "ERROR", at::SqlStateOf(error), ProxyText(error));
  co_return co_await ReplyToClient(std::move(out));
}

// ---- the dtx.* functions ----

asio::awaitable<bool> Session::HandleDtxFunction(std::string message) {
  if (!co_await AcquireBackend()) co_return false;
  const DtxFunction fn = std::move(dtx_function_);
  if (tx_status_ == 'E') co_return co_await ForwardAcquired(message);  // the server answers 25P02
  if (fn.arg_param != 0 || fn.timeout_param != 0) {
    co_return co_await ErrorToClient(at::SqlError(
        "42P02", "there is no parameter $" + std::to_string(fn.arg_param ? fn.arg_param : fn.timeout_param)));
  }
  auto value = co_await DtxCall(fn);
  if (!value.ok()) co_return co_await ErrorToClient(value.status());
  std::string out;
  AppendRowDescriptionText(out, fn.kind == DtxFunctionKind::kBegin ? "xid" : "status");
  AppendDataRowText(out, *value);
  AppendCommandComplete(out, "SELECT 1");
  co_return co_await ReplyToClient(std::move(out));
}

asio::awaitable<Result<std::string>> Session::DtxCall(const DtxFunction& fn) {
  if (fn.kind == DtxFunctionKind::kMalformed) co_return at::SqlError("42601", fn.error);
  if (!context_.at || !context_.at->coordinator) {
    co_return at::SqlError("55000", "no coordinator configured: start dtx-sql-proxy with --coordinator host:port");
  }
  const char* name = fn.kind == DtxFunctionKind::kBegin ? "begin" : fn.kind == DtxFunctionKind::kCommit ? "commit" : "rollback";
  if (ClientBlock() != 'I' || ext_implicit_) {
    co_return at::SqlError("25001", std::string("dtx.") + name + "() cannot run inside a transaction block");
  }
  auto& coordinator = *coordinator_;
  if (fn.kind == DtxFunctionKind::kBegin) {
    if (!EffectiveXid().empty()) {
      co_return at::SqlError("25001", "the session is already bound to global transaction " + EffectiveXid() +
                                          " (SELECT dtx.commit() or dtx.rollback() first, or RESET dtx.xid)");
    }
    const std::string tx_name = fn.has_arg ? fn.arg : context_.at->default_tx_name;
    const auto timeout = fn.timeout_ms >= 0 ? std::chrono::milliseconds(fn.timeout_ms) : context_.at->default_tx_timeout;
    Result<std::string> xid = co_await Await<Result<std::string>>([&](std::function<void(Result<std::string>)> done) {
      coordinator.BeginAsync(tx_name, timeout, "", std::move(done));
    });
    if (!xid.ok()) {
      const bool down = xid.status().code() == StatusCode::kUnavailable || xid.status().code() == StatusCode::kTimeout;
      co_return at::SqlError(down ? "08006" : "XX000",
                             std::string(down ? "the dtx coordinator is unreachable: " : "the dtx coordinator refused Begin: ") +
                                 std::string(xid.status().message()));
    }
    context_.metrics.at_global_begins.fetch_add(1, std::memory_order_relaxed);
    local_xid_.reset();
    session_xid_ = *xid;
    co_return *xid;
  }

  const std::string xid = fn.has_arg ? fn.arg : EffectiveXid();
  if (xid.empty()) {
    co_return at::SqlError("25P01", std::string("dtx.") + name +
                                        "(): the session is bound to no global transaction (SELECT dtx.begin() first, or name the xid)");
  }
  if (!IsValidXid(xid)) co_return at::SqlError("22023", "not a valid xid: '" + xid + "'");
  const bool commit = fn.kind == DtxFunctionKind::kCommit;
  using StateResult = Result<sdk::TxState>;
  auto status_of = [&](std::function<void(StateResult)> done) { coordinator.GetStatusAsync(xid, std::move(done)); };
  StateResult state = co_await Await<StateResult>([&](std::function<void(StateResult)> done) {
    if (commit) {
      coordinator.CommitAsync(xid, std::move(done));
    } else {
      coordinator.RollbackAsync(xid, std::move(done));
    }
  });
  if (state.ok() && !commit) {
    // A rollback answers once its branches are undone (or it is stuck for an operator), so the
    // rows are back when dtx.rollback() returns.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    auto pause = std::chrono::milliseconds(2);  // grows to 200 ms: a stuck rollback is not polled hard
    asio::steady_timer timer(co_await asio::this_coro::executor);
    while (!sdk::IsFinal(state->status) && state->status != sdk::GlobalStatus::kRollbackFailed &&
           state->status != sdk::GlobalStatus::kTimeoutRollbackFailed && std::chrono::steady_clock::now() < deadline) {
      timer.expires_after(pause);
      co_await timer.async_wait(kTuple);
      pause = std::min(pause * 2, std::chrono::milliseconds(200));
      StateResult now = co_await Await<StateResult>(status_of);
      if (!now.ok()) {
        // A finished transaction may have left the coordinator's log.
        if (now.status().code() == StatusCode::kNotFound) state->status = sdk::GlobalStatus::kRollbacked;
        break;
      }
      state = std::move(now);
    }
  }
  auto unbind = [&] {
    if (session_xid_ == xid) session_xid_.clear();
  };
  if (!state.ok()) {
    const StatusCode code = state.status().code();
    const std::string why(state.status().message());
    if (code == StatusCode::kUnavailable) co_return at::SqlError("08006", "the dtx coordinator is unreachable: " + why);
    if (code == StatusCode::kNotFound) {
      unbind();
      co_return at::SqlError("42704", "global transaction " + xid + " not found: " + why);
    }
    if (code == StatusCode::kTimeout || code == StatusCode::kFailedPrecondition) {
      StateResult now = co_await Await<StateResult>(status_of);
      const std::string status = now.ok() ? std::string(sdk::GlobalStatusName(now->status)) : "unknown";
      unbind();
      if (commit) {
        context_.metrics.at_global_rollbacks.fetch_add(1, std::memory_order_relaxed);
        co_return at::SqlError("40000", "global transaction " + xid + " was not committed: it is " + status + " (" + why + ")");
      }
      co_return at::SqlError("25000", "global transaction " + xid + " cannot be rolled back: it is " + status + " (" + why + ")");
    }
    co_return at::SqlError("XX000", "the dtx coordinator failed: " + why);
  }
  unbind();
  if (commit && state->outcome == sdk::Outcome::kRolledBack) {
    context_.metrics.at_global_rollbacks.fetch_add(1, std::memory_order_relaxed);
    co_return at::SqlError("40000", "global transaction " + xid + " was not committed: it is " +
                                        std::string(sdk::GlobalStatusName(state->status)));
  }
  (commit ? context_.metrics.at_global_commits : context_.metrics.at_global_rollbacks)
      .fetch_add(1, std::memory_order_relaxed);
  // A commit is decided and durable: its phase 2 only deletes undo rows.
  if (commit && state->outcome == sdk::Outcome::kCommitted) co_return std::string("Committed");
  co_return std::string(sdk::GlobalStatusName(state->status));
}

// ---- statements of bound sessions ----

asio::awaitable<bool> Session::HandleBoundQuery(std::string message) {
  if (!co_await AcquireBackend()) co_return false;
  const std::string xid = std::move(diverted_xid_);
  if (xid.empty() || tx_status_ == 'E') co_return co_await ForwardAcquired(message);
  const std::string sql(*ReadCString(std::string_view(message).substr(5)));
  if (HasDeferredChecks() && tx_status_ == 'T' && MayCommitBlock(sql)) {
    // Unbound writes made earlier in this block, before the session was bound.
    Status checked = co_await CheckDeferredKeys();
    if (!checked.ok()) co_return co_await FailStatement(checked, true);
  }
  if (!at_resource_) {
    if (auto refusal = NoResourceRefusal(sql)) co_return co_await FailStatement(*refusal, false);
    co_return co_await ForwardAcquired(message);
  }
  const bool in_block = tx_status_ == 'T';
  std::shared_ptr<at::AtBranch> branch;
  if (in_block) {
    if (branch_ && branch_->xid() != xid) {
      if (branch_->has_writes() || branch_->MayWriteElsewhere()) {
        co_return co_await FailStatement(
            at::SqlError(at::sqlstate::kFeatureNotSupported,
                         "dtx.xid changed to " + xid + " inside a transaction block that wrote for " + branch_->xid()),
            false);
      }
      branch_.reset();
    }
    if (!branch_) branch_ = std::make_shared<at::AtBranch>(at_resource_->options, at_resource_->catalog, xid);
    branch = branch_;
  } else {
    branch = std::make_shared<at::AtBranch>(at_resource_->options, at_resource_->catalog, xid);
  }
  auto st = branch->Prepare(sql);
  if (!st.ok()) co_return co_await FailStatement(st.status(), false);
  const at::StatementKind kind = (*st)->kind();
  switch (kind) {
    case at::StatementKind::kTransactionControl:
      switch ((*st)->transaction_op()) {
        case at::TransactionOp::kCommit:
          if (in_block && (branch->has_writes() || branch->MayWriteElsewhere())) {
            branch_.reset();
            co_return co_await CommitBranch(branch, message, "", false);
          }
          co_return co_await ForwardAcquired(message);
        case at::TransactionOp::kRollback:
          if (in_block) branch_.reset();
          co_return co_await ForwardAcquired(message);
        case at::TransactionOp::kSavepoint:
        case at::TransactionOp::kRelease:
        case at::TransactionOp::kRollbackTo:
          if (in_block) co_return co_await RunSteps(branch, **st, false);
          co_return co_await ForwardAcquired(message);
        default:
          co_return co_await ForwardAcquired(message);
      }
    case at::StatementKind::kInsert:
    case at::StatementKind::kUpdate:
    case at::StatementKind::kDelete:
      context_.metrics.at_statements.fetch_add(1, std::memory_order_relaxed);
      co_return co_await RunSteps(branch, **st, !in_block);
    case at::StatementKind::kSelectForUpdate:
      // A function it calls may write: outside a block it runs in a transaction of the proxy's,
      // checked before that commits (CommitBranch).
      co_return co_await RunSteps(branch, **st, !in_block && branch->MayWriteElsewhere());
    default:
      if (!in_block && branch->MayWriteElsewhere()) {
        if (kind == at::StatementKind::kReadOnly) co_return co_await RunCheckedRead(branch, std::move(message));
        const Status refusal = WritesElsewhereOutsideABlock();
        co_return co_await FailStatement(refusal, false);
      }
      co_return co_await ForwardAcquired(message);
  }
}

std::optional<Status> Session::NoResourceRefusal(std::string_view sql) const {
  auto parsed = at::Analyze(sql);
  if (parsed.ok()) {
    switch (parsed->kind) {
      case at::StatementKind::kReadOnly:
      case at::StatementKind::kTransactionControl:
      case at::StatementKind::kOther:
      case at::StatementKind::kEmpty:
        return std::nullopt;
      default:
        break;
    }
  }
  std::string why = "database \"" + database_ + "\" has no --resource: dtx-sql-proxy cannot undo writes there "
                    "(start it with --resource " + database_ + "=<conninfo>)";
  if (!parsed.ok()) why += "; and " + at::SqlTextOf(parsed.status());
  return at::SqlError(at::sqlstate::kFeatureNotSupported, why);
}

std::optional<Status> Session::EncodingRefusal() const {
  std::string e;
  for (char c : client_encoding_) {
    if (c != '_' && c != '-') e.push_back(static_cast<char>(std::toupper(static_cast<unsigned char>(c))));
  }
  if (e == "UTF8" || e == "UNICODE") return std::nullopt;
  return at::SqlError(at::sqlstate::kFeatureNotSupported,
                      "a session bound to a global transaction must use client_encoding UTF8 (it is " + client_encoding_ +
                          "): the undo log keeps row images in UTF-8 (SET client_encoding = 'UTF8')");
}

asio::awaitable<bool> Session::RunSteps(std::shared_ptr<at::AtBranch> branch, at::AtStatement& st, bool implicit) {
  if (auto refusal = EncodingRefusal()) co_return co_await FailStatement(*refusal, false);
  static const at::AtQuery kBegin = [] {
    at::AtQuery q;
    q.sql = "BEGIN";
    return q;
  }();
  // A write outside a transaction block is a transaction of its own, with its own branch: its
  // BEGIN goes with the first query.
  bool begin_pending = implicit;
  std::string output;
  std::optional<BackendReply> behind;  // the statement's answer, when sent behind its before image
  while (auto step = st.Next()) {
    if (step->check_global_locks) {
      if (begin_pending) {
        begin_pending = false;
        auto b = co_await Exchange(QueryMessage("BEGIN"), 0);
        if (!b) co_return false;
        if (b->failed) co_return co_await ReplyToClient(std::move(b->to_client));
      }
      Status s = co_await CheckLocks(*branch, st);
      if (!s.ok()) co_return co_await FailStatement(s, implicit);
      continue;
    }
    const bool statement = step->query.role == at::QueryRole::kStatement;
    std::optional<BackendReply> r;
    if (statement && behind) {
      r = std::move(behind);  // sent with the before image
      behind.reset();
    } else if (auto next = st.StatementBehindBeforeImage(); next || begin_pending) {
      // BEGIN, the query, and the statement behind its before image, in one write answered at
      // once; when one fails the server skips the rest (the statement never runs without its
      // before image, nor outside the transaction).
      std::vector<const at::AtQuery*> queries;
      std::vector<int> hidden;
      if (begin_pending) {
        queries.push_back(&kBegin);
        hidden.push_back(0);
      }
      queries.push_back(&step->query);
      hidden.push_back(statement ? step->query.hidden_columns : 0);
      if (next) {
        queries.push_back(&*next);
        hidden.push_back(next->hidden_columns);
      }
      auto replies = co_await Pipeline(queries, hidden);
      if (!replies) co_return false;
      size_t k = 0;
      if (begin_pending) {
        begin_pending = false;
        if ((*replies)[k].failed) co_return co_await ReplyToClient(std::move((*replies)[k].to_client));
        ++k;
      }
      r = std::move((*replies)[k++]);
      if (next) behind = std::move((*replies)[k]);
    } else if (step->query.keep) {
      const std::vector<const at::AtQuery*> queries{&step->query};
      const std::vector<int> hidden{statement ? step->query.hidden_columns : 0};
      auto replies = co_await Pipeline(queries, hidden);
      if (replies) r = std::move((*replies)[0]);
    } else {
      r = co_await Exchange(Request(step->query), statement ? step->query.hidden_columns : 0);
    }
    if (!r) co_return false;
    if (r->failed) {
      // The server's own error goes to the client as it is.
      st.OnError();
      if (implicit && !co_await Exchange(QueryMessage("ROLLBACK"), 0)) co_return false;
      co_return co_await ReplyToClient(std::move(r->to_client));
    }
    at::QueryResult result{std::move(r->rows), std::move(r->command_tag)};
    Status s = st.OnResult(result);
    if (!s.ok()) co_return co_await FailStatement(s, implicit);
    if (statement) output = std::move(r->to_client);
  }
  if (!implicit || begin_pending) co_return co_await ReplyToClient(std::move(output));
  if (branch->has_writes() || branch->MayWriteElsewhere()) {
    co_return co_await CommitBranch(branch, QueryMessage("COMMIT"), std::move(output), true);
  }
  auto r = co_await Exchange(QueryMessage("COMMIT"), 0);
  if (!r) co_return false;
  co_return co_await ReplyToClient(r->failed ? std::move(r->to_client) : std::move(output));
}

Status Session::WritesElsewhereOutsideABlock() {
  return at::SqlError(at::sqlstate::kFeatureNotSupported,
                      "this statement of a session bound to a global transaction calls a function that may write "
                      "tables, and dtx-sql-proxy checks such writes at a COMMIT: send it between BEGIN and COMMIT");
}

asio::awaitable<bool> Session::RunCheckedRead(std::shared_ptr<at::AtBranch> branch, std::string message) {
  // BEGIN and the statement in one write.
  message.insert(0, QueryMessage("BEGIN"));
  auto b = co_await Exchange(message, 0);
  if (!b) co_return false;
  auto r = co_await ReadReply(0);
  if (!r) co_return false;
  if (b->failed) co_return co_await ReplyToClient(std::move(b->to_client));
  if (r->failed) {
    if (!co_await Exchange(QueryMessage("ROLLBACK"), 0)) co_return false;
    co_return co_await ReplyToClient(std::move(r->to_client));
  }
  co_return co_await CommitBranch(branch, QueryMessage("COMMIT"), std::move(r->to_client), true);
}

asio::awaitable<bool> Session::CommitBranch(std::shared_ptr<at::AtBranch> branch, std::string commit_request,
                                            std::string output, bool implicit) {
  if (branch->MayWriteElsewhere()) {
    Status elsewhere = co_await CheckWritesElsewhere(*branch, false);
    if (!elsewhere.ok()) co_return co_await CommitFailed(branch, elsewhere);
  }
  Result<std::optional<at::AtQuery>> undo = co_await RegisterBranch(*branch);
  if (!undo.ok()) co_return co_await CommitFailed(branch, undo.status());
  std::optional<BackendReply> c;
  if (*undo) {
    // The undo row and the COMMIT in one write answered at once: when the insert fails, the
    // server skips the COMMIT, and CommitFailed rolls the block back.
    at::AtQuery commit;
    commit.sql = std::string(ReadCString(std::string_view(commit_request).substr(5)).value_or("COMMIT"));
    (*undo)->keep = branch->options().keep_prepared;  // one text for every branch: kept prepared
    const std::vector<const at::AtQuery*> queries{&**undo, &commit};
    const std::vector<int> hidden(2, 0);
    auto replies = co_await Pipeline(queries, hidden);
    if (!replies) co_return false;
    if ((*replies)[0].failed) {
      Status error = branch->UndoWriteFailed((*replies)[0].sqlstate, (*replies)[0].message);
      co_return co_await CommitFailed(branch, error);
    }
    c = std::move((*replies)[1]);
  } else {
    c = co_await Exchange(commit_request, 0);
    if (!c) co_return false;
  }
  const bool committed = !c->failed && c->command_tag.starts_with("COMMIT");
  FinishLater(branch, committed);
  if (branch->has_writes()) {
    (committed ? context_.metrics.at_branches_committed : context_.metrics.at_branches_failed)
        .fetch_add(1, std::memory_order_relaxed);
  }
  if (implicit && committed) co_return co_await ReplyToClient(std::move(output));
  co_return co_await ReplyToClient(std::move(c->to_client));
}

// Reports phase one failed (or done, if asked to) without waiting for the answer: the client's COMMIT is
// answered at once. Nothing depends on the report's order: a phase 2 that comes first finds the
// undo row (or its absence, and leaves a marker), and a late report is refused by the coordinator.
void Session::FinishLater(std::shared_ptr<at::AtBranch> branch, bool committed) {
  if (!branch->Reports(committed)) return;
  const std::string xid = branch->xid();
  const int64_t id = branch->branch_id();
  coordinator_->ReportBranchAsync(
      xid, id, committed ? sdk::BranchStatus::kPhaseOneDone : sdk::BranchStatus::kPhaseOneFailed, "",
      [xid, id, committed](Status f) {
        if (f.ok()) return;
        // NOT_ACTIVE: the global transaction is already being decided (a dtx.commit() right
        // after the local COMMIT, or a timeout); phase 2 finds the undo row, or its absence.
        const bool deciding = f.message().starts_with("NOT_ACTIVE");
        spdlog::log(deciding ? spdlog::level::debug : spdlog::level::warn, "branch {} of {}: reporting phase one {} failed: {}",
                    id, xid, committed ? "done" : "failed", f.ToString());
      });
}

// The local transaction is rolled back; the client gets the error and an idle session.
asio::awaitable<bool> Session::CommitFailed(std::shared_ptr<at::AtBranch> branch, Status error) {
  if (branch->has_writes()) context_.metrics.at_branches_failed.fetch_add(1, std::memory_order_relaxed);
  if (tx_status_ != 'I' && !co_await Exchange(QueryMessage("ROLLBACK"), 0)) co_return false;
  FinishLater(branch, false);
  std::string out;
  AppendErrorResponse(out, "ERROR", at::SqlStateOf(error), ProxyText(error));
  co_return co_await ReplyToClient(std::move(out));
}

// ---- writes of unbound sessions ----

Status Session::TablesCheckOutsideABlock() {
  return at::SqlError(at::sqlstate::kFeatureNotSupported,
                      "dtx-sql-proxy checks a COPY ... FROM, a COPY of a data-modifying query, a CALL or a DO of a "
                      "session bound to no global transaction, sent with the extended query protocol, at the COMMIT "
                      "of its transaction block: run it between BEGIN and COMMIT, or as a simple Query, or run the "
                      "proxy with --check-unbound-writes false");
}

asio::awaitable<bool> Session::CheckedCopy(std::string message, bool copy_in) {
  // BEGIN first, on its own: a COPY the server began outside it could not be held back.
  auto begun = co_await Exchange(QueryMessage("BEGIN"), 0);
  if (!begun) co_return false;
  if (begun->failed) co_return co_await ReplyToClient(std::move(begun->to_client));
  if (!co_await WriteServer(message)) co_return false;
  if (!copy_in) {
    // COPY (a write ... RETURNING) TO STDOUT: its rows come whole with its answer.
    auto r = co_await ReadReply(0);
    if (!r) co_return false;
    const bool failed = r->failed;
    co_return co_await EndCheckedCopy(failed, std::move(r->to_client));
  }
  // COPY ... FROM STDIN: the server's first answer is CopyInResponse, or the error that stopped it.
  std::string out, m;
  bool failed = false;
  while (true) {
    if (!co_await NextServerMessage(m)) co_return false;
    if (m[0] == 'G') break;
    if (m[0] == 'Z') co_return co_await EndCheckedCopy(failed, std::move(out));  // done without the client's data
    failed = failed || m[0] == 'E';
    out += m;
  }
  out += m;
  copy_check_.emplace();
  if (!co_await WriteClient(out)) co_return false;
  ReleaseBackend();  // the relay carries the data; the back loop holds an error of the server's
  co_return true;
}

asio::awaitable<bool> Session::FinishCheckedCopy(std::string message) {
  if (message[0] != 'c' && message[0] != 'f') {
    // PostgreSQL would fail the COPY and go on; the proxy cannot tell the client's next request
    // apart from the copy it holds back, so the session ends (the server rolls the COPY back).
    EndWithFatal("08P01", std::string("dtx-sql-proxy: unexpected message type '") + message[0] +
                              "' during a checked COPY FROM STDIN");
    co_return false;
  }
  if (!co_await AcquireBackend()) co_return false;
  std::string held = std::move(copy_check_->held);
  copy_check_.reset();
  // What the server said during the copy: an error ends it at once (with its ReadyForQuery).
  std::string out;
  bool ended = false, failed = false;
  for (size_t at = 0; at < held.size();) {
    const Frame f = ReadMessage(std::string_view(held).substr(at), SIZE_MAX);
    if (f.status != FrameStatus::kMessage) break;
    if (held[at] == 'Z') {
      ended = true;
    } else {
      failed = failed || held[at] == 'E';
      out.append(held, at, f.size);
    }
    at += f.size;
  }
  if (!ended) {
    if (!co_await WriteServer(message)) co_return false;
    auto r = co_await ReadReply(0);
    if (!r) co_return false;
    out += r->to_client;
    failed = failed || r->failed;
  }
  co_return co_await EndCheckedCopy(failed || message[0] == 'f', std::move(out));
}

asio::awaitable<bool> Session::EndCheckedCopy(bool failed, std::string answer) {
  if (failed) {
    if (tx_status_ != 'I' && !co_await Exchange(QueryMessage("ROLLBACK"), 0)) co_return false;
    co_return co_await ReplyToClient(std::move(answer));
  }
  Status checked = co_await CheckTables(false, false);
  if (!checked.ok()) co_return co_await FailStatement(checked, true);
  auto c = co_await Exchange(QueryMessage("COMMIT"), 0);
  if (!c) co_return false;
  co_return co_await ReplyToClient(c->failed ? std::move(c->to_client) : std::move(answer));
}

asio::awaitable<bool> Session::HandleUnboundWrite(std::string message) {
  if (!co_await AcquireBackend()) co_return false;
  if (!EffectiveXid().empty() || tx_status_ == 'E' || !at_resource_) co_return co_await ForwardAcquired(message);
  const std::string_view sql = *ReadCString(std::string_view(message).substr(5));
  if (!local_branch_) local_branch_ = std::make_unique<at::AtBranch>(at_resource_->options, at_resource_->catalog, "");
  // A string of several statements runs one statement at a time (below), each checked.
  at::LocalWrite whole = at::AnalyzeLocal(sql);
  std::vector<std::string_view> texts{sql};
  if (whole.check == at::LocalWrite::Check::kSeveral) {
    auto split = at::SplitStatements(sql);
    if (split.ok() && !split->empty()) texts = std::move(*split);
  }
  if (HasDeferredChecks() && tx_status_ == 'T' &&
      std::any_of(texts.begin(), texts.end(), [](std::string_view t) { return CommitsBlock(t); })) {
    // The block's earlier writes, checked before it commits; a conflict fails the COMMIT and
    // rolls the block back, as a failed COMMIT does on the server.
    Status checked = co_await CheckDeferredKeys();
    if (!checked.ok()) co_return co_await FailStatement(checked, true);
  }
  std::vector<std::unique_ptr<at::AtStatement>> statements;
  bool check = false, control = false;
  for (std::string_view text : texts) {
    at::LocalWrite write = texts.size() == 1 ? whole : at::AnalyzeLocal(text);
    if (texts.size() > 1 && write.copies) {
      // Its data would come and go between the statements the proxy runs one by one.
      co_return co_await ErrorToClient(at::SqlError(
          at::sqlstate::kFeatureNotSupported,
          "dtx-sql-proxy cannot check the writes of a string of several statements with a COPY in it against the "
          "global locks; send the COPY on its own, or run the proxy with --check-unbound-writes false"));
    }
    if (write.check == at::LocalWrite::Check::kTables && write.copies) {
      // Its data comes and goes through the relay: in a block the check waits for its COMMIT.
      if (tx_status_ == 'T') {
        DeferTables(write);
        co_return co_await ForwardAcquired(message);
      }
      co_return co_await CheckedCopy(std::move(message), write.copies_in);
    }
    auto st = local_branch_->PrepareLocal(text, {}, std::move(write));
    if (!st.ok()) co_return co_await ErrorToClient(st.status());  // nothing ran
    check = check || (*st)->MayCheckLocks() || (*st)->local_write().check == at::LocalWrite::Check::kTables;
    control = control || TxEffectOf(text) != TxEffect::kNone;
    statements.push_back(std::move(*st));
  }
  if (!check) co_return co_await ForwardAcquired(message);
  // Outside a block, the statements run in a transaction of the proxy's, committed once their
  // rows are known free (a string without transaction control runs as one, as on the server);
  // in the client's block, a conflict fails the block.
  const bool wrap_all = tx_status_ == 'I' && !control;
  // In the client's block (and no transaction control in the string), the check of the keys
  // waits for the block's COMMIT: one coordinator call per block instead of one per write. The
  // server keeps the written rows locked until then, so nothing can slip in between.
  const bool defer = tx_status_ == 'T' && !control;
  bool begun = false;
  std::string out;
  for (auto& st : statements) {
    const bool tables = st->local_write().check == at::LocalWrite::Check::kTables;
    while (auto step = st->Next()) {
      if (step->check_global_locks && defer) {
        deferred_keys_.insert(deferred_keys_.end(), st->lock_keys().begin(), st->lock_keys().end());
        st->LocksChecked();
        continue;
      }
      if (step->check_global_locks) {
        context_.metrics.at_unbound_checks.fetch_add(1, std::memory_order_relaxed);
        Status status = co_await CheckLocks(*local_branch_, *st);
        if (!status.ok()) co_return co_await FailStatement(status, begun, std::move(out));
        continue;
      }
      const bool statement = step->query.role == at::QueryRole::kStatement;
      std::string request = Request(step->query);
      if (statement && !begun && tx_status_ == 'I' && (wrap_all || tables || step->query.hidden_columns > 0)) {
        // BEGIN and the statement in one write.
        request.insert(0, QueryMessage("BEGIN"));
        auto b = co_await Exchange(request, 0);
        if (!b) co_return false;
        begun = true;
        request.clear();
      }
      std::optional<BackendReply> r;
      if (request.empty()) {
        r = co_await ReadReply(step->query.hidden_columns);
      } else {
        r = co_await Exchange(request, step->query.hidden_columns);
      }
      if (!r) co_return false;
      if (r->failed) {
        st->OnError();
        if (begun && !co_await Exchange(QueryMessage("ROLLBACK"), 0)) co_return false;
        out += r->to_client;
        co_return co_await ReplyToClient(std::move(out));
      }
      at::QueryResult result{std::move(r->rows), std::move(r->command_tag)};
      Status s = st->OnResult(result);
      if (!s.ok()) co_return co_await FailStatement(s, begun, std::move(out));
      if (statement) out += r->to_client;
    }
    if (tables && defer) {
      DeferTables(st->local_write());
    } else if (tables) {
      // Its tables, whole, while its transaction still holds their locks.
      // (In the proxy's own transaction every write lock is this statement's: TRUNCATE's
      // triggers' too.)
      Status status = co_await CheckTables(st->local_write().truncates && !begun, false);
      if (!status.ok()) co_return co_await FailStatement(status, begun, std::move(out));
    }
    // With transaction control in the string, a checked write outside a block is its own
    // transaction.
    if (begun && (!wrap_all || &st == &statements.back())) {
      begun = false;
      auto c = co_await Exchange(QueryMessage("COMMIT"), 0);
      if (!c) co_return false;
      if (c->failed) {
        out += c->to_client;
        break;
      }
    }
  }
  co_return co_await ReplyToClient(std::move(out));
}

}  // namespace dtx::sql_proxy
