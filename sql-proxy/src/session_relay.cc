// The relay half of Session: the front and back loops and what they look at in passing.
#include <spdlog/spdlog.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>

#include <algorithm>
#include <cctype>
#include <cstring>

#include "session.h"
#include "session_wire.h"

namespace dtx::sql_proxy {
namespace {

using namespace asio::experimental::awaitable_operators;
using wire::QueryMessage;
constexpr auto kTuple = asio::as_tuple(asio::use_awaitable);

constexpr size_t kWholeQueryLimit = 4096;
constexpr size_t kPrefixBytes = 1024;
constexpr auto kFatalWriteTimeout = std::chrono::seconds(2);


// The text of a message body up to its NUL, or all of `body` when the NUL is not in sight.
std::string_view TextUpToNul(std::string_view body) {
  const size_t nul = body.find('\0');
  return nul == std::string_view::npos ? body : body.substr(0, nul);
}

// Something safe to quote in SQL: printable ASCII without quotes, '$' or '\'.
std::string Sanitize(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c < 0x20 || c > 0x7e || c == '\'' || c == '$' || c == '\\') c = '?';
  }
  return out;
}

}  // namespace

// ---- client to server ----

// How many bytes of a client message the front loop must see at once to judge it. In AT mode a
// Query, Parse or Bind is looked at whole (FrontLoop reads one larger than the buffer on into a
// string of its own): a bound session's statements are analysed,
// and an unbound UPDATE/DELETE is checked against the global locks.
size_t Session::ClientNeed(char type, size_t size) const {
  switch (type) {
    case 'Q':
      if (context_.at) return std::min(size, kBufferSize);
      return size <= kWholeQueryLimit ? size : kPrefixBytes;
    case 'P':
      return std::min(size, kBufferSize);  // whole: the statements the proxy answers itself
    case 'B':
      return context_.at || ext_batch_ ? std::min(size, kBufferSize) : std::min(size, kPrefixBytes);
    case 'C':
    case 'D':
    case 'E':
      return std::min(size, kPrefixBytes);
    case 'f':  // a checked COPY's CopyFail is diverted: whole
      return copy_check_ ? std::min(size, kBufferSize) : 5;
    default:
      return 5;
  }
}

asio::awaitable<void> Session::FrontLoop() {
  auto& metrics = context_.metrics;
  const size_t max_message = context_.options.max_message_size;
  bool client_lost = false;  // in the middle of a message
  bool client_gone = false;
  while (phase_ == Phase::kRelay) {
    const std::string_view buf(cbuf_.get(), clen_);
    size_t i = 0, forward_from = 0;
    uint64_t messages = 0;
    if (cscan_.skip > 0) {
      i = std::min(cscan_.skip, clen_);
      cscan_.skip -= i;
    }
    bool failed = false;
    while (i < clen_) {
      Frame f = ReadMessage(buf.substr(i), max_message);
      if (f.status == FrameStatus::kError) {
        metrics.errors_client_protocol.fetch_add(1, std::memory_order_relaxed);
        spdlog::info("session ended: invalid message from the client: {}", f.error);
        // What came before the bad message is whole and goes on; then the session ends.
        if (i > forward_from) co_await WriteServer(buf.substr(forward_from, i - forward_from));
        EndWithFatal("08P01", "invalid message from the client: " + f.error);
        failed = true;
        break;
      }
      if (f.size == 0) break;  // not even a whole header yet
      const size_t available = clen_ - i;
      if (available < ClientNeed(f.type, f.size)) break;
      if (f.size > available && context_.at && (f.type == 'Q' || f.type == 'P' || f.type == 'B' || (copy_check_ && f.type == 'f'))) {
        // AT mode looks into these whole: larger than the buffer (which it fills from its start,
        // since ClientNeed asked for that much), the message is read on into a string of its own.
        if (i > forward_from && !co_await WriteServer(buf.substr(forward_from, i - forward_from))) {
          failed = true;
          break;
        }
        std::string message;
        if (!co_await ReadWholeMessage(message, f.size)) {
          client_gone = client_lost = true;
          break;
        }
        ++messages;
        i = forward_from = 0;  // the buffer is empty now
        if (OnClientMessage(f.type, message, f.size)) {
          if (!co_await HandleDiverted(std::move(message))) failed = true;
        } else if (!co_await WriteServer(message)) {
          failed = true;
        }
        front_fresh_ = false;
        break;
      }
      // (A Bind can only start a BEGIN's run when some statement is known as one.)
      if ((f.type == 'Q' || f.type == 'P' || (f.type == 'B' && begin_statements_)) && f.size <= available &&
          MayHoldBegin()) {
        std::string answer;
        if (const size_t run = BeginRun(buf.substr(i), answer); run > 0) {
          if (i > forward_from && !co_await WriteServer(buf.substr(forward_from, i - forward_from))) {
            failed = true;
            break;
          }
          std::string held(buf.substr(i, run));
          for (size_t at = 0; at < run; ++messages) {  // a Parse is tracked as if forwarded
            const Frame m = ReadMessage(std::string_view(held).substr(at), max_message);
            if (m.type == 'P') TrackParse(std::string_view(held).substr(at, m.size), m.size, true);
            at += m.size;
          }
          i += run;
          forward_from = i;
          const bool handled = co_await HoldBegin(std::move(held), std::move(answer));
          front_fresh_ = false;
          if (!handled) {
            failed = true;
            break;
          }
          continue;
        }
      }
      ++messages;
      const std::string_view seen = buf.substr(i, std::min(available, f.size));
      if (OnClientMessage(f.type, seen, f.size)) {
        if (i > forward_from && !co_await WriteServer(buf.substr(forward_from, i - forward_from))) {
          failed = true;
          break;
        }
        std::string message(seen);
        i += f.size;
        forward_from = i;
        // Whether a whole Sync is next in the buffer (the extended path may send it early).
        next_is_sync_ = clen_ - i >= 5 && buf[i] == 'S' && buf.substr(i + 1, 4) == std::string_view("\0\0\0\4", 4);
        const bool handled = co_await HandleDiverted(std::move(message));
        next_is_sync_ = false;
        front_fresh_ = false;  // it waited for the server
        if (!handled) {
          failed = true;
          break;
        }
        continue;
      }
      if (f.size <= available) {
        i += f.size;
      } else {
        cscan_.skip = f.size - available;
        i = clen_;
      }
    }
    if (failed || client_gone) break;
    metrics.messages_client_to_server.fetch_add(messages, std::memory_order_relaxed);
    if (i > forward_from && !co_await WriteServer(buf.substr(forward_from, i - forward_from))) break;
    if (i > 0) {
      std::memmove(cbuf_.get(), cbuf_.get() + i, clen_ - i);
      clen_ -= i;
    }
    if (!client_out_.empty() && coalesce_client_ && !co_await FlushClient()) break;  // the client may wait for it
    auto [ec, n] = co_await ReadSome(client_, cbuf_.get() + clen_, kBufferSize - clen_, front_fresh_);
    if (ec || n == 0) {
      client_gone = true;
      client_lost = clen_ > 0 || cscan_.skip > 0;
      break;
    }
    clen_ += n;
    metrics.bytes_client_to_server.fetch_add(n, std::memory_order_relaxed);
  }
  if (phase_ != Phase::kRelay) co_return;
  if (!client_gone) {
    // A write to the server failed (or a handler did, the backend maybe still acquired): the back
    // loop, woken if parked, sees the connection end and tells the client.
    boost::system::error_code ignored;
    server_.shutdown(Socket::shutdown_both, ignored);
    pause_requested_ = false;
    back_wake_.cancel();
    co_return;
  }
  // The client went away. Between messages, tell the server so it ends the session quietly.
  if (client_lost) {
    metrics.errors_client_lost.fetch_add(1, std::memory_order_relaxed);
    spdlog::info("session ended: the client left in the middle of a message");
  } else if (!client_terminated_ && authenticated_ && !pause_requested_) {
    static constexpr char kTerminate[] = {'X', 0, 0, 0, 4};
    co_await WriteServer(std::string_view(kTerminate, sizeof kTerminate));
  }
  phase_ = Phase::kEnding;
  boost::system::error_code ignored;
  server_.close(ignored);
  back_wake_.cancel();
}

asio::awaitable<bool> Session::ReadWholeMessage(std::string& message, size_t size) {
  if (!client_out_.empty() && coalesce_client_ && !co_await FlushClient()) co_return false;
  message.reserve(size);
  message.assign(cbuf_.get(), clen_);
  clen_ = 0;
  const size_t rest = size - message.size();
  message.resize(size);
  if (tls_) {
    for (size_t at = size - rest; at < size;) {
      auto [ec, n] = co_await tls_->ReadSome(message.data() + at, size - at);
      if (ec || n == 0) co_return false;
      at += n;
    }
    context_.metrics.bytes_client_to_server.fetch_add(rest, std::memory_order_relaxed);
    co_return true;
  }
  auto [ec, n] = co_await asio::async_read(client_, asio::buffer(message.data() + (size - rest), rest), kTuple);
  if (ec || n != rest) co_return false;
  context_.metrics.bytes_client_to_server.fetch_add(n, std::memory_order_relaxed);
  co_return true;
}

namespace {

// Whether `sql` may drop prepared statements of the session's (DISCARD ALL, DEALLOCATE), anywhere
// in the text: a word search, no parse.
bool MayDropPrepared(std::string_view sql) {
  for (std::string_view word : {std::string_view("discard"), std::string_view("deallocate")}) {
    auto it = std::search(sql.begin(), sql.end(), word.begin(), word.end(), [](char a, char b) {
      return std::tolower(static_cast<unsigned char>(a)) == b;
    });
    if (it != sql.end()) return true;
  }
  return false;
}

// Whether a Parse (its body and fields) declares no parameter types.
bool DeclaresNoParameters(std::string_view body, const ParseFields& fields) {
  const std::string_view rest = body.substr(fields.statement.size() + fields.query.size() + 2);
  return rest.size() >= 2 && wire::ReadInt16(rest, 0) == 0;
}

// The command tag PostgreSQL answers a bare BEGIN (IsPlainBegin) with.
std::string_view BeginTag(std::string_view sql) {
  const size_t i = sql.find_first_not_of(" \t\n\r\f\v");
  return i != std::string_view::npos && (sql[i] == 's' || sql[i] == 'S') ? "START TRANSACTION" : "BEGIN";
}

// A held BEGIN as the server gets it: extended-protocol messages without a Sync, so that the
// server answers it in the same flush as what is sent behind it, which ends the request. A Query
// becomes Parse/Bind/Execute of the unnamed statement and portal and a Close of that statement (a
// Query drops the unnamed statement as well); a run of the client's goes without its Sync.
// `answers`: how many messages the server answers it with.
std::string HeldForm(std::string_view run, size_t max_message, int& answers) {
  std::string out;
  answers = 0;
  if (run.front() == 'Q') {
    const std::string_view sql = TextUpToNul(run.substr(5));
    std::string body(1, '\0');
    body.append(sql);
    body.append(std::string_view("\0\0\0", 3));  // no parameter types
    wire::AppendMessage(out, 'P', body);
    wire::AppendMessage(out, 'B', std::string_view("\0\0\0\0\0\0\0\0", 8));  // no formats, parameters, result formats
    wire::AppendMessage(out, 'E', std::string_view("\0\0\0\0\0", 5));        // all rows
    wire::AppendMessage(out, 'C', std::string_view("S\0", 2));
    answers = 4;
    return out;
  }
  for (size_t at = 0; at < run.size();) {
    const Frame m = ReadMessage(run.substr(at), max_message);
    if (m.type != 'S') {
      out.append(run.substr(at, m.size));
      ++answers;
    }
    at += m.size;
  }
  return out;
}

}  // namespace

// ---- a BEGIN answered by the proxy ----

void Session::ForgetBeginStatements() {
  if (!begin_statements_) return;
  ++prepared_epoch_;  // the statements known as BEGINs may be gone
  begin_statements_ = false;
}

bool Session::MayHoldBegin() const {
  return context_.options.defer_begin && authenticated_ && tx_status_ == 'I' && held_begin_.empty() && !ext_batch_ &&
         !ext_unsynced_ && !client_terminated_ && phase_ == Phase::kRelay;
}

size_t Session::BeginRun(std::string_view buf, std::string& answer) const {
  const size_t max_message = context_.options.max_message_size;
  Frame f = ReadMessage(buf, max_message);
  if (f.status != FrameStatus::kMessage) return 0;
  if (f.type == 'Q') {
    auto sql = ReadCString(f.body);
    if (!sql || sql->size() + 1 != f.body.size() || !IsPlainBegin(*sql)) return 0;
    AppendCommandComplete(answer, BeginTag(*sql));
    AppendReadyForQuery(answer, 'T');
    return f.size;
  }
  // The extended protocol, with the unnamed portal (a named one would outlive the run).
  size_t at = 0;
  auto next = [&] {
    at += f.size;
    f = ReadMessage(buf.substr(at), max_message);
    return f.status == FrameStatus::kMessage;
  };
  std::string_view tag;
  std::optional<std::string_view> parsed;  // the statement a Parse of the run names
  if (f.type == 'P') {
    auto fields = ParseParse(f.body);
    if (!fields || !IsPlainBegin(fields->query)) return 0;
    if (!DeclaresNoParameters(f.body, *fields)) return 0;
    tag = BeginTag(fields->query);
    parsed = fields->statement;
    wire::AppendMessage(answer, '1', "");
    if (!next()) return 0;
  }
  if (f.type != 'B') return 0;
  auto bind = ParseBind(f.body);
  if (!bind || !bind->portal.empty() || !bind->params.values.empty()) return 0;
  if (parsed) {
    if (bind->statement != *parsed) return 0;
  } else {
    const PreparedStatement* slot = bind->statement.empty() ? &unnamed_ : FindPrepared(bind->statement);
    if (!slot || slot->begin_tag.empty() || slot->begin_epoch != prepared_epoch_) return 0;
    tag = slot->begin_tag;
  }
  wire::AppendMessage(answer, '2', "");
  if (!next()) return 0;
  if (f.type == 'D') {  // of the unnamed portal
    if (f.body != std::string_view("P\0", 2)) return 0;
    wire::AppendMessage(answer, 'n', "");
    if (!next()) return 0;
  }
  if (f.type != 'E' || f.body.size() != 5 || f.body[0] != '\0') return 0;  // the unnamed portal
  AppendCommandComplete(answer, tag);
  if (!next() || f.type != 'S' || f.size != 5) return 0;
  AppendReadyForQuery(answer, 'T');
  return at + f.size;
}

asio::awaitable<bool> Session::HoldBegin(std::string run, std::string answer) {
  if (!co_await AcquireBackend()) co_return false;
  if (!MayHoldBegin()) {  // what was sent before it moved the session (into a block, say)
    ++outstanding_;
    ReleaseBackend();
    co_return co_await WriteServer(run);
  }
  held_begin_ = HeldForm(run, context_.options.max_message_size, held_answers_);
  tx_status_ = 'T';
  context_.metrics.begins_held.fetch_add(1, std::memory_order_relaxed);
  const bool ok = co_await WriteClient(answer);
  ReleaseBackend();
  co_return ok;
}

bool Session::DropBeginAnswer(char type, std::string_view message, bool& refused) {
  switch (type) {
    case '1':
    case '2':
    case '3':
    case 'n':
    case 'C':
      --begin_answers_;
      if (ext_answered_ > 0) --ext_answered_;  // OnServerMessage counted it among the client's
      return true;
    case 'E': {
      auto fields = ParseErrorFields(message.substr(5));
      refused = true;
      server_sent_fatal_ = false;  // the client gets the proxy's FATAL instead
      EndWithFatal(fields && !fields->sqlstate.empty() ? fields->sqlstate : "XX000",
                   "dtx-sql-proxy: the server refused the BEGIN the proxy had answered: " +
                       (fields ? fields->message : std::string("(unreadable error)")));
      return false;
    }
    default:
      return false;  // a notice, a notification, a parameter status: the client's
  }
}

void Session::TrackParse(std::string_view seen, size_t size, bool quiet) {
  const std::string_view body = seen.substr(5);
  auto name = ReadCString(body);
  if (!name) return;  // the server will refuse it
  auto xid = LeadingXidComment(TextUpToNul(body.substr(name->size() + 1)));
  PreparedStatement* slot = &unnamed_;
  if (!name->empty()) slot = &prepared_[std::string(*name)];
  if (!slot->xid.empty()) --prepared_with_xid_;
  slot->xid = xid ? std::string(*xid) : std::string();
  if (!slot->xid.empty()) ++prepared_with_xid_;
  slot->known = false;
  if (slot->special != Special::kNone) --prepared_special_;
  slot->special = Special::kNone;
  slot->may_change = false;
  slot->tx = TxEffect::kNone;
  slot->sql.clear();
  slot->types.clear();
  slot->begin_tag = {};
  if (seen.size() != size) ForgetBeginStatements();  // it might drop some
  if (authenticated_ && seen.size() == size) {
    if (auto fields = ParseParse(body)) {
      slot->known = true;
      if (quiet && IsPlainBegin(fields->query) && DeclaresNoParameters(body, *fields)) {
        slot->begin_tag = BeginTag(fields->query);
        slot->begin_epoch = prepared_epoch_;
        begin_statements_ = true;
      }
      if ((!own_prepared_.empty() || begin_statements_) && MayDropPrepared(fields->query)) {
        own_prepared_.clear();
        ForgetBeginStatements();
      }
      XidCommand command = ParseXidCommand(fields->query);
      if (command.kind != XidCommandKind::kNone) {
        slot->special = Special::kXid;
        slot->xid_command = std::move(command);
      } else if (DtxFunction function = ParseDtxFunction(fields->query); function.kind != DtxFunctionKind::kNone) {
        slot->special = Special::kDtxFunction;
        slot->dtx_function = std::move(function);
      }
      if (slot->special != Special::kNone) ++prepared_special_;
      if (context_.at) {
        slot->sql = std::string(fields->query);
        slot->may_change = MayChangeRows(fields->query);
        slot->tx = TxEffectOf(fields->query);
        std::string_view rest = body.substr(name->size() + 1 + fields->query.size() + 1);
        if (rest.size() >= 2) {
          const int n = (static_cast<uint8_t>(rest[0]) << 8) | static_cast<uint8_t>(rest[1]);
          for (int k = 0; k < n && rest.size() >= 2 + 4 * static_cast<size_t>(k + 1); ++k) {
            const size_t at = 2 + 4 * static_cast<size_t>(k);
            slot->types.push_back((static_cast<uint32_t>(static_cast<uint8_t>(rest[at])) << 24) |
                                  (static_cast<uint32_t>(static_cast<uint8_t>(rest[at + 1])) << 16) |
                                  (static_cast<uint32_t>(static_cast<uint8_t>(rest[at + 2])) << 8) |
                                  static_cast<uint32_t>(static_cast<uint8_t>(rest[at + 3])));
          }
        }
      }
    }
  }
}

bool Session::OnClientMessage(char type, std::string_view seen, size_t size) {
  if (copy_check_) {
    // Inside a checked COPY FROM: its data goes on (the server ignores a Flush or Sync in copy
    // mode, so they count for nothing); its end, or anything else, comes to FinishCheckedCopy.
    if (type == 'd' || type == 'H' || type == 'S') return false;
    divert_ = Divert::kCheckedCopyEnd;
    return true;
  }
  // Nothing owed and no failed block: a Parse of a BEGIN now cannot fail.
  const bool quiet = outstanding_ == 0 && !ext_unsynced_ && tx_status_ != 'E';
  switch (type) {
    case 'P':
    case 'B':
    case 'D':
    case 'E':
    case 'C':
    case 'H':
      ext_unsynced_ = true;
      break;
    default:
      break;
  }
  switch (type) {
    case 'Q': {
      if (begin_statements_ && (seen.size() != size || MayDropPrepared(TextUpToNul(seen.substr(5))))) {
        ForgetBeginStatements();
      }
      if (ext_batch_) {
        divert_ = Divert::kExtended;
        return true;
      }
      std::optional<std::string_view> sql;
      if (authenticated_ && seen.size() == size) {
        if ((sql = ReadCString(seen.substr(5)))) {
          if (!own_prepared_.empty() && MayDropPrepared(*sql)) own_prepared_.clear();
          XidCommand command = ParseXidCommand(*sql);
          if (command.kind != XidCommandKind::kNone) {
            divert_ = Divert::kXid;
            diverted_ = std::move(command);
            return true;
          }
          DtxFunction function = ParseDtxFunction(*sql);
          if (function.kind != DtxFunctionKind::kNone) {
            divert_ = Divert::kDtxFunction;
            dtx_function_ = std::move(function);
            return true;
          }
        }
      }
      if (authenticated_) {
        if (auto xid = LeadingXidComment(TextUpToNul(seen.substr(5)))) {
          local_xid_ = std::string(*xid);
          context_.metrics.xid_comment_statements.fetch_add(1, std::memory_order_relaxed);
        }
      }
      if (context_.at && sql && context_.at->coordinator) {
        if (!EffectiveXid().empty()) {
          divert_ = Divert::kBound;
          diverted_xid_ = EffectiveXid();  // a comment's binding ends at an earlier idle ReadyForQuery
          return true;
        }
        if (context_.at->check_unbound_writes && at_resource_ &&
            (MayChangeRows(*sql) || (HasDeferredChecks() && MayCommitBlock(*sql)))) {
          divert_ = Divert::kUnboundWrite;
          return true;
        }
      }
      ++outstanding_;
      return false;
    }
    case 'S':
      if (ext_batch_) {
        divert_ = Divert::kExtended;
        return true;
      }
      ext_unsynced_ = false;
      ext_sent_ = ext_execs_sent_ = 0;
      ++outstanding_;
      return false;
    case 'F':
      if (ext_batch_) {
        divert_ = Divert::kExtended;
        return true;
      }
      if (RefusesFunctionCall()) {
        divert_ = Divert::kFunctionCall;  // refused: its function may write anything
        return true;
      }
      ++outstanding_;
      return false;
    case 'P':
      TrackParse(seen, size, quiet);
      return DivertExtended(type, seen, size);
    case 'D':
    case 'E':
    case 'H':
      return DivertExtended(type, seen, size);
    case 'B': {
      if (DivertExtended(type, seen, size)) return true;
      if (prepared_with_xid_ == 0) return false;
      std::string_view body = seen.substr(5);
      auto portal = ReadCString(body);
      if (!portal) return false;
      body.remove_prefix(portal->size() + 1);
      auto statement = ReadCString(body);
      if (!statement) return false;
      const PreparedStatement* slot = &unnamed_;
      if (!statement->empty()) {
        auto it = prepared_.find(std::string(*statement));
        if (it == prepared_.end()) return false;
        slot = &it->second;
      }
      if (!slot->xid.empty()) {
        local_xid_ = slot->xid;
        context_.metrics.xid_comment_statements.fetch_add(1, std::memory_order_relaxed);
      }
      return false;
    }
    case 'C': {
      // The proxy's statements kept for the client's named ones go with any of those.
      if (seen.size() >= 7 && seen[5] == 'S' && seen[6] != '\0') own_prepared_.clear();
      if (DivertExtended(type, seen, size)) return true;
      if (seen.size() < 6 || seen[5] != 'S') return false;
      auto name = ReadCString(seen.substr(6));
      if (!name) return false;
      if (name->empty()) {
        if (!unnamed_.xid.empty()) --prepared_with_xid_;
        if (unnamed_.special != Special::kNone) --prepared_special_;
        unnamed_ = {};
      } else if (auto it = prepared_.find(std::string(*name)); it != prepared_.end()) {
        if (!it->second.xid.empty()) --prepared_with_xid_;
        if (it->second.special != Special::kNone) --prepared_special_;
        prepared_.erase(it);
      }
      return false;
    }
    case 'X':
      client_terminated_ = true;
      return false;
    default:
      return false;
  }
}

bool Session::DivertExtended(char type, std::string_view seen, size_t size) {
  if (!authenticated_) return false;
  const bool whole = seen.size() == size;
  bool start = ext_batch_;
  if (!start) {
    // The plain path: no AT mode and no statement the proxy answers itself.
    if (!context_.at && prepared_special_ == 0) return false;
    const bool at_on = context_.at && context_.at->coordinator;
    const bool bound = at_on && !EffectiveXid().empty();
    const bool check = at_on && context_.at->check_unbound_writes && at_resource_;
    auto wants = [&](const PreparedStatement* slot) {
      return slot && (slot->special != Special::kNone || (check && slot->may_change));
    };
    const std::string_view body = seen.substr(5);
    switch (type) {
      case 'P': {
        auto name = ReadCString(body);
        start = bound || (name && wants(FindPrepared(std::string(*name))));
        break;
      }
      case 'B': {
        auto portal = ReadCString(body);
        std::optional<std::string_view> statement;
        if (portal) statement = ReadCString(body.substr(portal->size() + 1));
        // With deferred checks, the batch starts here so that the Execute knows its statement.
        start = bound || HasDeferredChecks() || (statement && wants(FindPrepared(std::string(*statement))));
        break;
      }
      case 'D':
      case 'C': {
        std::optional<std::string_view> name;
        if (body.size() >= 2) name = ReadCString(body.substr(1));
        start = bound || (name && body[0] == 'S' && FindPrepared(std::string(*name)) &&
                          FindPrepared(std::string(*name))->special != Special::kNone);
        break;
      }
      case 'E':
        // An Execute may commit the block: the deferred checks come first (HandleExtended).
        start = bound || HasDeferredChecks();
        break;
      case 'H':
        start = bound;
        break;
      default:
        break;
    }
    if (!start) {
      if (context_.at && type != 'H') ++ext_sent_;
      if (context_.at && type == 'E') ++ext_execs_sent_;
      return false;
    }
  }
  if (!whole) {
    EndWithFatal("54000", "dtx-sql-proxy: a " + std::string(1, type) + " message of " + std::to_string(size) +
                              " bytes is too large for a session the proxy must look into (limit " +
                              std::to_string(kBufferSize) + ")");
    return false;
  }
  ext_batch_ = true;
  divert_ = Divert::kExtended;
  return true;
}

bool Session::RefusesFunctionCall() const {
  return authenticated_ && context_.at && context_.at->coordinator && at_resource_ &&
         at_resource_->options.check_writes_elsewhere && !EffectiveXid().empty();
}

asio::awaitable<bool> Session::RefuseFunctionCall() {
  if (!co_await AcquireBackend()) co_return false;
  const Status refusal =
      at::SqlError(at::sqlstate::kFeatureNotSupported,
                   "a session bound to a global transaction cannot use the FunctionCall message: the function may "
                   "write rows dtx-sql-proxy cannot undo; call it with SELECT inside a transaction block");
  co_return co_await FailStatement(refusal, false);
}

asio::awaitable<bool> Session::HandleDiverted(std::string message) {
  switch (divert_) {
    case Divert::kXid:
      co_return co_await AnswerXidCommand(diverted_, message);
    case Divert::kDtxFunction:
      co_return co_await HandleDtxFunction(std::move(message));
    case Divert::kBound:
      co_return co_await HandleBoundQuery(std::move(message));
    case Divert::kUnboundWrite:
      co_return co_await HandleUnboundWrite(std::move(message));
    case Divert::kExtended:
      co_return co_await HandleExtended(std::move(message));
    case Divert::kCheckedCopyEnd:
      co_return co_await FinishCheckedCopy(std::move(message));
    case Divert::kFunctionCall:
      co_return co_await RefuseFunctionCall();
  }
  co_return false;
}

asio::awaitable<bool> Session::AnswerXidCommand(const XidCommand& command, std::string_view message) {
  context_.metrics.xid_commands.fetch_add(1, std::memory_order_relaxed);
  // Wait until every earlier request is answered, so the answer lands in its place.
  if (!co_await AcquireBackend()) co_return false;
  if (tx_status_ == 'E' || command.kind == XidCommandKind::kMalformed) {
    // The server must see the error too: in a transaction block it fails the transaction, as
    // PostgreSQL would. A failed block rejects the statement itself (25P02); a malformed one
    // becomes a statement that raises the proxy's error.
    ReleaseBackend();
    const std::string query =
        tx_status_ == 'E'
            ? std::string(message)
            : QueryMessage("DO $dtx$BEGIN RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = 'dtx-sql-proxy: " +
                           Sanitize(command.error) + "'; END$dtx$");
    ++outstanding_;
    co_return co_await WriteServer(query);
  }
  if (auto refusal = XidChangeRefusal(command)) co_return co_await FailStatement(*refusal, false);
  std::string out;
  ApplyXidCommand(command, out, true);
  AppendReadyForQuery(out, tx_status_);
  spdlog::debug("dtx.xid now '{}'", EffectiveXid());
  const bool ok = co_await WriteClient(out);
  ReleaseBackend();
  co_return ok;
}

std::optional<Status> Session::XidChangeRefusal(const XidCommand& command) const {
  const at::AtBranch* open = nullptr;
  if (ext_implicit_ && ext_branch_) {
    open = ext_branch_.get();
  } else if (branch_ && (branch_->has_writes() || branch_->MayWriteElsewhere())) {
    open = branch_.get();
  }
  if (!open) return std::nullopt;
  const bool in_block = ClientBlock() == 'T';
  std::string after;
  switch (command.kind) {
    case XidCommandKind::kSet:
      after = command.xid;
      break;
    case XidCommandKind::kSetLocal:
      after = in_block ? command.xid : EffectiveXid();
      break;
    case XidCommandKind::kReset:
      after = command.local && !in_block ? EffectiveXid() : std::string();
      break;
    default:
      return std::nullopt;
  }
  if (after == open->xid()) return std::nullopt;
  return at::SqlError(at::sqlstate::kFeatureNotSupported,
                      "dtx.xid cannot change inside a transaction that wrote for global transaction " + open->xid() +
                          ": its COMMIT registers that branch (COMMIT or ROLLBACK first)");
}

void Session::ApplyXidCommand(const XidCommand& command, std::string& out, bool row_description) {
  const bool in_block = ClientBlock() == 'T';
  auto set_local = [&](std::string xid) {
    if (in_block) {
      local_xid_ = std::move(xid);
    } else {
      AppendNoticeResponse(out, "WARNING", "25P01", "SET LOCAL can only be used in transaction blocks");
    }
  };
  auto set_session = [&](std::string xid) {
    local_xid_.reset();
    if (in_block) {
      tx_session_xid_ = std::move(xid);  // kept at COMMIT, dropped at ROLLBACK
      watch_tags_ = true;
    } else {
      session_xid_ = std::move(xid);
    }
  };
  switch (command.kind) {
    case XidCommandKind::kSet:
      set_session(command.xid);
      AppendCommandComplete(out, "SET");
      break;
    case XidCommandKind::kSetLocal:
      set_local(command.xid);
      AppendCommandComplete(out, "SET");
      break;
    case XidCommandKind::kReset:
      if (command.local) {
        set_local("");
        AppendCommandComplete(out, "SET");
      } else {
        set_session("");
        AppendCommandComplete(out, "RESET");
      }
      break;
    case XidCommandKind::kShow:
      if (row_description) AppendRowDescriptionText(out, "dtx.xid");
      AppendDataRowText(out, EffectiveXid());
      AppendCommandComplete(out, "SHOW");
      break;
    default:
      break;
  }
}

// ---- server to client ----

asio::awaitable<void> Session::BackLoop() {
  auto self = shared_from_this();
  auto& metrics = context_.metrics;
  while (true) {
    if (!client_out_.empty() && !coalesce_client_) {  // left by an extended batch (ReleaseBackend)
      const std::string out = std::exchange(client_out_, {});
      if (!co_await WriteClient(out)) {
        phase_ = Phase::kEnding;
        break;
      }
    }
    if (pause_requested_ && outstanding_ == 0 && slen_ == 0 && sscan_.skip == 0 && phase_ == Phase::kRelay) {
      back_parked_ = true;
      front_wake_.cancel();
      while (pause_requested_ && phase_ == Phase::kRelay) {
        back_wake_.expires_at(asio::steady_timer::time_point::max());
        co_await back_wake_.async_wait(kTuple);
      }
      back_parked_ = false;
      back_fresh_ = false;
      continue;
    }
    if (server_bytes_waiting_) {
      server_bytes_waiting_ = false;  // left in sbuf_ by ReleaseBackend
    } else {
      back_reading_ = true;
      auto [ec, n] = co_await ReadSome(server_, sbuf_.get() + slen_, kBufferSize - slen_, back_fresh_);
      back_reading_ = false;
      if (ec == asio::error::operation_aborted && pause_requested_ && phase_ == Phase::kRelay) {
        back_fresh_ = false;
        continue;
      }
      if (ec || n == 0) break;
      slen_ += n;
      metrics.bytes_server_to_client.fetch_add(n, std::memory_order_relaxed);
    }

    std::string_view buf(sbuf_.get(), slen_);
    size_t i = 0;
    uint64_t messages = 0;
    if (sscan_.skip > 0) {
      i = std::min(sscan_.skip, slen_);
      sscan_.skip -= i;
    }
    bool bad = false, dropped_fatal = false;
    size_t hold_at = std::string_view::npos;  // a checked COPY's first ErrorResponse or ReadyForQuery
    while (i < slen_) {
      Frame f = ReadMessage(buf.substr(i), SIZE_MAX);
      if (f.status == FrameStatus::kError) {
        bad = true;
        break;
      }
      if (f.size == 0) break;
      const size_t available = slen_ - i;
      size_t need = 5;
      if (f.type == 'Z') need = 6;
      if (f.type == 'K') need = 13;
      if (f.type == 'E') need = kPrefixBytes;
      if (f.type == 'C' && watch_tags_) need = 64;
      if (f.type == 'S') need = 64;  // ParameterStatus: client_encoding
      if (begin_answers_ > 0 && std::strchr("123nCE", f.type)) need = f.size;  // maybe a held BEGIN's: whole
      if (available < std::min(need, f.size)) break;
      ++messages;
      if (copy_check_ && hold_at == std::string_view::npos && (f.type == 'E' || f.type == 'Z')) hold_at = i;
      OnServerMessage(f.type, buf.substr(i, std::min(available, f.size)), sbuf_.get() + i);
      if (begin_answers_ > 0 && f.size <= available) {
        bool refused = false;
        if (DropBeginAnswer(f.type, buf.substr(i, f.size), refused)) {
          std::memmove(sbuf_.get() + i, sbuf_.get() + i + f.size, slen_ - i - f.size);
          slen_ -= f.size;
          buf = std::string_view(sbuf_.get(), slen_);
          continue;
        }
        if (refused) {
          dropped_fatal = true;
          break;
        }
      }
      if (f.size <= available) {
        i += f.size;
      } else {
        sscan_.skip = f.size - available;
        i = slen_;
      }
    }
    metrics.messages_server_to_client.fetch_add(messages, std::memory_order_relaxed);
    if (copy_check_ && i > 0) {
      // Notices and the like go on; from the server's error (or ReadyForQuery) on, all is held.
      const size_t cut = copy_check_->holding ? 0 : std::min(hold_at, i);
      if (cut > 0 && !co_await WriteClient(buf.substr(0, cut))) {
        phase_ = Phase::kEnding;  // the client is gone
        break;
      }
      if (cut < i) {
        copy_check_->holding = true;
        copy_check_->held.append(buf.substr(cut, i - cut));
      }
    } else if (i > 0 && !co_await WriteClient(buf.substr(0, i))) {
      phase_ = Phase::kEnding;  // the client is gone
      break;
    }
    std::memmove(sbuf_.get(), sbuf_.get() + i, slen_ - i);
    slen_ -= i;
    if (dropped_fatal) break;  // DropBeginAnswer ended the session
    if (bad) {
      metrics.errors_backend_lost.fetch_add(1, std::memory_order_relaxed);
      EndWithFatal("08P01", "dtx-sql-proxy: invalid message from the PostgreSQL server");
      break;
    }
  }

  back_done_ = true;
  if (phase_ == Phase::kRelay && !client_terminated_ && !server_sent_fatal_) {
    metrics.errors_backend_lost.fetch_add(1, std::memory_order_relaxed);
    spdlog::warn("session ended: the PostgreSQL server at {} closed the connection", backend_.ToString());
    fatal_.emplace("08006", "dtx-sql-proxy: the PostgreSQL server closed the connection unexpectedly");
  }
  phase_ = Phase::kEnding;
  coalesce_client_ = false;
  if (fatal_ && sscan_.skip == 0 && !server_sent_fatal_ && client_.is_open()) {
    std::string out = std::exchange(client_out_, {});  // what a batch had answered comes first
    AppendErrorResponse(out, "FATAL", fatal_->first, fatal_->second);
    asio::steady_timer timer(client_.get_executor(), kFatalWriteTimeout);
    co_await (WriteClient(out) || timer.async_wait(asio::use_awaitable));
  }
  CloseSockets();
  front_wake_.cancel();
}

void Session::OnServerMessage(char type, std::string_view seen, char* writable) {
  const bool was_fatal = server_sent_fatal_;
  server_sent_fatal_ = false;
  if ((type == 'G' || type == 'W') && coalesce_client_) client_copy_ = true;
  switch (type) {
    case 'Z':
      ext_answered_ = 0;
      ext_error_since_sync_ = false;
      if (seen.size() >= 6) OnReadyForQuery(seen[5]);
      break;
    case '1':
    case '2':
    case '3':
    case 'n':
    case 'T':
    case 'I':
    case 's':
      ++ext_answered_;
      break;
    case 'K':
      if (seen.size() == 13 && !proxy_key_) {
        if (auto key = ParseBackendKey(seen.substr(5))) {
          // The client gets a key of ours, which the CancelRequest path maps back.
          proxy_key_ = context_.cancels.Add({backend_, *key});
          std::string bytes;
          AppendInt32(bytes, proxy_key_->pid);
          AppendInt32(bytes, proxy_key_->secret);
          std::memcpy(writable + 5, bytes.data(), 8);
        }
      }
      break;
    case 'E': {
      ext_error_since_sync_ = true;
      context_.metrics.server_error_responses.fetch_add(1, std::memory_order_relaxed);
      if (watch_tags_) last_tag_rollback_ = true;
      auto fields = ParseErrorFields(seen.substr(5, seen.size() - 5));
      if (fields && (fields->severity == "FATAL" || fields->severity == "PANIC")) server_sent_fatal_ = true;
      if (!authenticated_) {
        context_.metrics.auth_failures.fetch_add(1, std::memory_order_relaxed);
        spdlog::info("the server refused a session: {}", fields ? fields->message : std::string("(unreadable error)"));
      }
      break;
    }
    case 'C':
      ++ext_answered_;
      if (watch_tags_) last_tag_rollback_ = seen.substr(5).starts_with("ROLLBACK");
      break;
    case 'S': {  // ParameterStatus
      const std::string_view body = seen.substr(5);
      if (auto name = ReadCString(body); name && *name == "client_encoding") {
        if (auto value = ReadCString(body.substr(name->size() + 1))) client_encoding_ = std::string(*value);
      }
      break;
    }
    case 'N':
      server_sent_fatal_ = was_fatal;  // a notice after a FATAL does not change what ended the session
      break;
    default:
      break;
  }
}

void Session::OnReadyForQuery(char status) {
  if (outstanding_ > 0) --outstanding_;
  authenticated_ = true;
  tx_status_ = status;
  if (status == 'I') {
    branch_.reset();
    deferred_keys_.clear();
    deferred_tables_ = DeferredTables::kNone;
    local_xid_.reset();
    if (tx_session_xid_) {
      if (!last_tag_rollback_) session_xid_ = *tx_session_xid_;
      tx_session_xid_.reset();
    }
    watch_tags_ = false;
    last_tag_rollback_ = false;
  }
}

}  // namespace dtx::sql_proxy
