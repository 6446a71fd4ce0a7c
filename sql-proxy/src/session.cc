#include "session.h"

#include <spdlog/spdlog.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>

#include <cstring>

namespace dtx::sql_proxy {
namespace {

using namespace asio::experimental::awaitable_operators;
constexpr auto kTuple = asio::as_tuple(asio::use_awaitable);
constexpr auto kStartupTimeout = std::chrono::seconds(60);

// Something safe to quote in SQL and in a log: printable ASCII without quotes, '$' or '\'.
std::string Sanitize(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c < 0x20 || c > 0x7e || c == '\'' || c == '$' || c == '\\') c = '?';
  }
  return out;
}

}  // namespace

Session::Session(tcp::socket client, SessionContext& context, sdk::CoordinatorClient* coordinator,
                 std::function<void(Session*)> on_end)
    : client_(std::move(client)),
      server_(client_.get_executor()),
      context_(context),
      coordinator_(coordinator ? coordinator : context.at ? context.at->coordinator.get() : nullptr),
      on_end_(std::move(on_end)),
      cbuf_(new char[kBufferSize]),
      sbuf_(new char[kBufferSize]),
      back_wake_(client_.get_executor()),
      front_wake_(client_.get_executor()) {
  context_.metrics.sessions_active.fetch_add(1, std::memory_order_relaxed);
}

Session::~Session() {
  if (proxy_key_) context_.cancels.Remove(*proxy_key_);
  context_.metrics.sessions_active.fetch_sub(1, std::memory_order_relaxed);
  if (on_end_) on_end_(this);
}

void Session::Start() {
  asio::co_spawn(client_.get_executor(), [self = shared_from_this()]() { return self->Run(); },
                 [](std::exception_ptr e) {
                   if (!e) return;
                   try {
                     std::rethrow_exception(e);
                   } catch (const std::exception& ex) {
                     spdlog::error("session ended by an exception: {}", ex.what());
                   }
                 });
}

void Session::Terminate() {
  if (phase_ == Phase::kEnding) return;
  EndWithFatal("57P01", "terminating connection due to administrator command (dtx-sql-proxy is shutting down)");
}

void Session::EndWithFatal(std::string sqlstate, std::string message) {
  if (!fatal_) fatal_.emplace(std::move(sqlstate), std::move(message));
  phase_ = Phase::kEnding;
  boost::system::error_code ignored;
  // The back loop ends on the closed server socket and tells the client; a session still in
  // its startup has no back loop, so its client socket is closed here.
  if (server_.is_open()) {
    server_.close(ignored);
  } else {
    client_.close(ignored);
  }
  back_wake_.cancel();
  front_wake_.cancel();
}

void Session::CloseSockets() {
  boost::system::error_code ignored;
  client_.shutdown(Socket::shutdown_both, ignored);
  client_.close(ignored);
  server_.close(ignored);
}

const std::string& Session::EffectiveXid() const {
  if (local_xid_) return *local_xid_;
  if (tx_session_xid_) return *tx_session_xid_;
  return session_xid_;
}

// A write is tried at once without blocking (the sockets are in non-blocking mode), which is
// nearly always enough for one read's worth of bytes; only the rest waits, and then the loop that
// wrote has suspended (see ReadSome).
asio::awaitable<bool> Session::Write(Socket& socket, std::string_view bytes, bool& fresh) {
  if (TlsStream* tls = TlsOf(socket)) {
    fresh = false;
    auto tec = co_await tls->Write(bytes);
    co_return !tec;
  }
  boost::system::error_code ec;
  const size_t n = socket.write_some(asio::buffer(bytes.data(), bytes.size()), ec);
  if (!ec && n == bytes.size()) co_return true;
  if (ec && ec != asio::error::would_block && ec != asio::error::try_again) co_return false;
  if (!ec) bytes.remove_prefix(n);
  fresh = false;
  auto [wec, written] = co_await asio::async_write(socket, asio::buffer(bytes.data(), bytes.size()), kTuple);
  co_return !wec;
}

namespace {
asio::awaitable<bool> Written() { co_return true; }
}  // namespace

asio::awaitable<bool> Session::WriteClient(std::string_view bytes) {
  if (!coalesce_client_) return Write(client_, bytes, back_fresh_);
  client_out_.append(bytes);
  return client_copy_ ? FlushClient() : Written();
}

asio::awaitable<bool> Session::FlushClient() {
  client_copy_ = false;
  if (client_out_.empty()) co_return true;
  const std::string out = std::exchange(client_out_, {});
  co_return co_await Write(client_, out, back_fresh_);
}

asio::awaitable<bool> Session::WriteServer(std::string_view bytes) {
  if (held_begin_.empty()) return Write(server_, bytes, front_fresh_);
  // The held BEGIN goes first, in the same write; its answers are dropped (DropBeginAnswer).
  std::string out = std::exchange(held_begin_, {});
  out.append(bytes);
  begin_answers_ += std::exchange(held_answers_, 0);
  return WriteServerOwned(std::move(out));
}

asio::awaitable<bool> Session::WriteServerOwned(std::string bytes) {
  co_return co_await Write(server_, bytes, front_fresh_);
}

// When the loop has not suspended since a read that drained the socket, any newer bytes have
// raised a readiness edge that epoll still holds: waiting for it and then reading costs one
// receive. Otherwise (and after a read that filled the buffer) the read is tried at once.
asio::awaitable<std::pair<boost::system::error_code, size_t>> Session::ReadSome(Socket& socket, char* data,
                                                                               size_t space, bool& fresh) {
  if (TlsStream* tls = TlsOf(socket)) {
    fresh = false;  // TLS records, not bytes, wake the reader: always a read of the stream
    auto r = co_await tls->ReadSome(data, space);
    co_return r;
  }
  if (fresh) {
    while (true) {
      auto [wec] = co_await socket.async_wait(Socket::wait_read, kTuple);
      if (wec) co_return std::make_pair(wec, size_t{0});
      boost::system::error_code ec;
      const size_t n = socket.read_some(asio::buffer(data, space), ec);
      if (ec == asio::error::would_block || ec == asio::error::try_again) continue;
      fresh = !ec && n < space;
      co_return std::make_pair(ec, n);
    }
  }
  auto [ec, n] = co_await socket.async_read_some(asio::buffer(data, space), kTuple);
  fresh = !ec && n < space;
  co_return std::make_pair(ec, n);
}

// ---- startup ----

asio::awaitable<void> Session::Run() {
  auto self = shared_from_this();
  boost::system::error_code ignored;
  client_.set_option(tcp::no_delay(true), ignored);
  if (!co_await ReadStartup()) {
    CloseSockets();
    co_return;
  }
  phase_ = Phase::kRelay;
  client_.non_blocking(true, ignored);
  server_.non_blocking(true, ignored);
  asio::co_spawn(client_.get_executor(), [self]() { return self->BackLoop(); }, asio::detached);
  co_await FrontLoop();
  // The back loop closes the client when the server's side ends; wait for it so that the
  // session (and its cancel key) lives as long as either side is open.
  while (!back_done_) {
    front_wake_.expires_at(asio::steady_timer::time_point::max());
    co_await front_wake_.async_wait(kTuple);
  }
}

asio::awaitable<bool> Session::ReadStartup() {
  auto& metrics = context_.metrics;
  int negotiations = 0;
  asio::steady_timer deadline(client_.get_executor(), kStartupTimeout);
  while (true) {
    Frame f = ReadStartupPacket(std::string_view(cbuf_.get(), clen_));
    if (f.status == FrameStatus::kError) {
      metrics.errors_client_protocol.fetch_add(1, std::memory_order_relaxed);
      spdlog::info("invalid startup packet: {}", f.error);
      std::string out;
      AppendErrorResponse(out, "FATAL", "08P01", "invalid startup packet: " + f.error);
      co_await WriteClient(out);
      co_return false;
    }
    if (f.status == FrameStatus::kNeedMore) {
      // A client that does not finish its startup in time loses the connection, as with
      // PostgreSQL's authentication_timeout; the server's own timeout covers the rest.
      auto result = co_await (ReadClient(cbuf_.get() + clen_, kBufferSize - clen_) || deadline.async_wait(kTuple));
      if (result.index() == 1) {
        metrics.errors_client_lost.fetch_add(1, std::memory_order_relaxed);
        spdlog::info("a client sent no startup within {} s", kStartupTimeout.count());
        co_return false;
      }
      auto [ec, n] = std::get<0>(result);
      if (ec || n == 0) {
        if (clen_ > 0) metrics.errors_client_lost.fetch_add(1, std::memory_order_relaxed);
        co_return false;
      }
      clen_ += n;
      continue;
    }
    const std::string packet(cbuf_.get(), f.size);
    const std::string_view body = std::string_view(packet).substr(8);
    std::memmove(cbuf_.get(), cbuf_.get() + f.size, clen_ - f.size);
    clen_ -= f.size;

    if (f.code == kSslRequestCode || f.code == kGssEncRequestCode) {
      // Bytes sent behind the request, before the answer, would be taken as if they had come
      // through the encryption: refused. So is a second request inside TLS.
      if (++negotiations > 2 || clen_ != 0 || tls_) {
        metrics.errors_client_protocol.fetch_add(1, std::memory_order_relaxed);
        co_return false;
      }
      if (f.code == kSslRequestCode && context_.options.tls) {
        if (!co_await NegotiateTls(deadline)) co_return false;
        continue;
      }
      // No GSSAPI encryption (nor TLS without a certificate): 'N' tells the client to go on in the
      // clear (or give up).
      if (!co_await WriteClient("N")) co_return false;
      continue;
    }
    if (f.code == kCancelRequestCode) {
      auto key = ParseBackendKey(body);
      if (key) co_await HandleCancel(*key);
      co_return false;
    }
    if ((f.code >> 16) != 3) {
      metrics.errors_client_protocol.fetch_add(1, std::memory_order_relaxed);
      std::string out;
      AppendErrorResponse(out, "FATAL", "0A000",
                          "unsupported frontend protocol " + std::to_string(f.code >> 16) + "." +
                              std::to_string(f.code & 0xffff) + ": dtx-sql-proxy speaks 3.0");
      co_await WriteClient(out);
      co_return false;
    }
    if (context_.options.tls_required && !tls_) {
      metrics.errors_tls.fetch_add(1, std::memory_order_relaxed);
      std::string out;
      AppendErrorResponse(out, "FATAL", "28000",
                          "dtx-sql-proxy accepts TLS connections only: connect with sslmode=require or stronger");
      co_await WriteClient(out);
      co_return false;
    }
    auto params = ParseStartupParameters(body);
    if (!params) {
      metrics.errors_client_protocol.fetch_add(1, std::memory_order_relaxed);
      std::string out;
      AppendErrorResponse(out, "FATAL", "08P01", "invalid startup packet: malformed parameter list");
      co_await WriteClient(out);
      co_return false;
    }
    std::string user, database;
    for (auto& [name, value] : *params) {
      if (name == "user") user = value;
      if (name == "database") database = value;
    }
    if (database.empty()) database = user;  // as PostgreSQL does
    database_ = database;
    if (context_.at) at_resource_ = context_.at->Find(database);
    if (!co_await ConnectBackend(database)) co_return false;
    metrics.sessions_total.fetch_add(1, std::memory_order_relaxed);
    outstanding_ = 1;  // the ReadyForQuery that ends the startup
    // The startup goes on unchanged: the server authenticates the client through us.
    co_return co_await WriteServer(packet);
  }
}

asio::awaitable<bool> Session::NegotiateTls(asio::steady_timer& deadline) {
  auto& metrics = context_.metrics;
  if (!co_await WriteClient("S")) co_return false;
  tls_ = std::make_unique<TlsStream>(client_, *context_.options.tls);
  auto result = co_await (tls_->Handshake() || deadline.async_wait(kTuple));
  if (result.index() == 1) {
    metrics.errors_tls.fetch_add(1, std::memory_order_relaxed);
    spdlog::info("a client did not finish its TLS handshake within {} s", kStartupTimeout.count());
    co_return false;
  }
  if (auto ec = std::get<0>(result)) {
    metrics.errors_tls.fetch_add(1, std::memory_order_relaxed);
    spdlog::info("TLS handshake with a client failed: {}", ec.message());
    co_return false;
  }
  metrics.sessions_tls.fetch_add(1, std::memory_order_relaxed);
  spdlog::debug("TLS with a client: {}", tls_->Describe());
  co_return true;
}

asio::awaitable<std::pair<boost::system::error_code, size_t>> Session::ReadClient(char* data, size_t space) {
  if (tls_) {
    auto r = co_await tls_->ReadSome(data, space);
    co_return r;
  }
  auto [ec, n] = co_await client_.async_read_some(asio::buffer(data, space), kTuple);
  co_return std::make_pair(ec, n);
}

asio::awaitable<bool> Session::ConnectBackend(const std::string& database) {
  const auto& options = context_.options;
  auto it = options.backends.find(database);
  backend_ = it != options.backends.end() ? it->second : options.default_backend;

  // A second round, in the clear, only after a failed handshake under --server-tls prefer (as libpq).
  for (bool tls = options.server_tls != nullptr;; tls = false) {
    const std::string why = co_await Connect(server_, backend_);
    if (!why.empty()) {
      context_.metrics.errors_backend_connect.fetch_add(1, std::memory_order_relaxed);
      const std::string message = "dtx-sql-proxy: cannot reach the PostgreSQL server for database \"" +
                                  Sanitize(database) + "\" at " + backend_.ToString() + ": " + why;
      spdlog::warn("{}", message);
      std::string out;
      AppendErrorResponse(out, "FATAL", "08006", message);
      co_await WriteClient(out);
      co_return false;
    }
    boost::system::error_code ignored;
    if (!backend_.unix_socket()) server_.set_option(tcp::no_delay(true), ignored);
    // The connect left the socket registered for writability too, whose edges (each time the
    // server takes bytes) would wake this worker for nothing; registered anew, it waits for reads.
    const auto protocol = server_.local_endpoint(ignored).protocol();
    boost::system::error_code ec;
    const auto fd = server_.release(ec);
    if (!ec) server_.assign(protocol, fd, ec);
    if (ec) {
      context_.metrics.errors_backend_connect.fetch_add(1, std::memory_order_relaxed);
      std::string out;
      AppendErrorResponse(out, "FATAL", "08006", "dtx-sql-proxy: cannot use the connection to the PostgreSQL server: " + ec.message());
      co_await WriteClient(out);
      co_return false;
    }
    if (!tls) co_return true;
    const std::string tls_failed = co_await NegotiateServerTls();
    if (tls_failed.empty()) co_return true;
    if (phase_ == Phase::kEnding) co_return false;  // cut by a shutdown, which told the client
    const ServerTlsMode mode = ModeOf(*options.server_tls);
    if (mode == ServerTlsMode::kPrefer && server_tls_) {
      spdlog::info("TLS with the server {} failed under --server-tls prefer ({}); connecting again in the clear",
                   backend_.ToString(), tls_failed);
      server_tls_.reset();
      server_.close(ignored);
      continue;
    }
    context_.metrics.errors_backend_connect.fetch_add(1, std::memory_order_relaxed);
    const std::string message = "dtx-sql-proxy: no TLS with the PostgreSQL server for database \"" +
                                Sanitize(database) + "\" at " + backend_.ToString() + " (--server-tls " +
                                std::string(ServerTlsModeName(mode)) + "): " + tls_failed;
    spdlog::warn("{}", message);
    std::string out;
    AppendErrorResponse(out, "FATAL", "08006", message);
    co_await WriteClient(out);
    co_return false;
  }
}

asio::awaitable<std::string> Session::NegotiateServerTls() {
  const auto& context = context_.options.server_tls;
  if (!context) co_return "";
  const ServerTlsMode mode = ModeOf(*context);
  if (backend_.unix_socket()) {
    // PostgreSQL answers 'N' there: no need to ask.
    if (mode == ServerTlsMode::kPrefer) co_return "";
    co_return "a Unix-domain socket carries no TLS; give the server as host:port";
  }
  static constexpr char kSslRequest[] = {0, 0, 0, 8, 0x04, static_cast<char>(0xd2), 0x16, 0x2f};  // 80877103
  // The answer and the handshake get --connect-timeout-ms together, as libpq's connect_timeout.
  const auto timeout = context_.options.connect_timeout;
  const std::string timed_out = " within " + std::to_string(timeout.count()) + " ms";
  asio::steady_timer timer(server_.get_executor(), timeout);
  auto [wec, written] = co_await asio::async_write(server_, asio::buffer(kSslRequest, sizeof kSslRequest), kTuple);
  if (wec) co_return "sending SSLRequest: " + wec.message();
  // One byte only: whatever follows an 'S' belongs to the handshake.
  char answer = 0;
  auto read = co_await (server_.async_read_some(asio::buffer(&answer, 1), kTuple) || timer.async_wait(kTuple));
  if (read.index() == 1) co_return "no answer to SSLRequest" + timed_out;
  if (auto [rec, n] = std::get<0>(read); rec || n != 1) co_return "reading the answer to SSLRequest: " + rec.message();
  if (answer == 'N') {
    if (mode == ServerTlsMode::kPrefer) co_return "";
    co_return "the server does not accept TLS";
  }
  if (answer == 'E') {
    // An error instead (the server could not start a backend): its text, as far as it came.
    std::string rest(1024, '\0');
    asio::steady_timer brief(server_.get_executor(), std::chrono::milliseconds(500));
    auto more = co_await (asio::async_read(server_, asio::buffer(rest), kTuple) || brief.async_wait(kTuple));
    rest.resize(more.index() == 0 ? std::get<1>(std::get<0>(more)) : 0);
    std::optional<ErrorFields> fields;
    if (rest.size() > 4) fields = ParseErrorFields(std::string_view(rest).substr(4));
    co_return "the server answered SSLRequest with an error: " +
              Sanitize(fields && !fields->message.empty() ? fields->message : rest);
  }
  if (answer != 'S') co_return "the server answered SSLRequest with '" + Sanitize(std::string(1, answer)) + "'";
  server_tls_ = std::make_unique<TlsStream>(server_, *context, backend_.host);
  auto result = co_await (server_tls_->Handshake() || timer.async_wait(kTuple));
  if (result.index() == 1) co_return "the TLS handshake did not finish" + timed_out;
  if (auto ec = std::get<0>(result)) co_return "TLS handshake: " + server_tls_->HandshakeError(ec);
  context_.metrics.sessions_server_tls.fetch_add(1, std::memory_order_relaxed);
  spdlog::debug("TLS with the server {}: {}", backend_.ToString(), server_tls_->Describe());
  co_return "";
}

asio::awaitable<std::string> Session::Connect(Socket& socket, const BackendAddress& address) {
  auto executor = client_.get_executor();
  const auto timeout = context_.options.connect_timeout;
  asio::steady_timer timer(executor, timeout);
  const std::string timed_out = "timed out after " + std::to_string(timeout.count()) + " ms";
  boost::system::error_code ignored;
  if (address.unix_socket()) {
    auto result = co_await (socket.async_connect(asio::local::stream_protocol::endpoint(address.SocketPath()), kTuple) ||
                            timer.async_wait(kTuple));
    if (result.index() == 1) {
      socket.close(ignored);
      co_return timed_out;
    }
    const auto [ec] = std::get<0>(result);
    co_return ec ? ec.message() : std::string();
  }
  tcp::resolver resolver(executor);
  auto [rec, endpoints] = co_await resolver.async_resolve(address.host, std::to_string(address.port), kTuple);
  if (rec) co_return rec.message();
  std::string why = "no address";
  for (const auto& entry : endpoints) {
    auto result = co_await (socket.async_connect(entry.endpoint(), kTuple) || timer.async_wait(kTuple));
    if (result.index() == 1) {
      socket.close(ignored);
      co_return timed_out;
    }
    const auto [ec] = std::get<0>(result);
    if (!ec) co_return std::string();
    why = ec.message();
    socket.close(ignored);
  }
  co_return why;
}

asio::awaitable<void> Session::HandleCancel(BackendKey key) {
  context_.metrics.cancel_requests.fetch_add(1, std::memory_order_relaxed);
  auto target = context_.cancels.Find(key);
  if (!target) {
    context_.metrics.cancel_requests_unmatched.fetch_add(1, std::memory_order_relaxed);
    spdlog::debug("cancel request for unknown key {}", key.pid);
    co_return;
  }
  auto executor = client_.get_executor();
  Socket socket(executor);
  if (auto why = co_await Connect(socket, target->server); !why.empty()) {
    spdlog::warn("cancel request: cannot reach {}: {}", target->server.ToString(), why);
    co_return;
  }
  asio::steady_timer timer(executor);
  const std::string packet = CancelRequestPacket(target->key);
  co_await asio::async_write(socket, asio::buffer(packet), kTuple);
  // The server reads the packet and closes; wait for that so the request is not cut short.
  char byte;
  timer.expires_after(std::chrono::seconds(2));
  co_await (socket.async_read_some(asio::buffer(&byte, 1), kTuple) || timer.async_wait(kTuple));
}

// ---- taking over the server connection ----

asio::awaitable<bool> Session::AcquireBackend() {
  pause_requested_ = true;
  while (!back_parked_) {
    if (phase_ == Phase::kEnding || back_done_) co_return false;
    if (back_reading_ && outstanding_ == 0) {
      boost::system::error_code ignored;
      server_.cancel(ignored);  // the back loop sees operation_aborted and parks
    }
    // Over TLS a socket read that completed before the cancel may bring part of a record only,
    // and the stream then reads the socket again: that read is cancelled on the next round.
    front_wake_.expires_at(server_tls_ ? asio::steady_timer::clock_type::now() + std::chrono::milliseconds(5)
                                       : asio::steady_timer::time_point::max());
    co_await front_wake_.async_wait(kTuple);
  }
  if (server_bytes_waiting_) {
    // Left by the last ReleaseBackend and not yet seen by the back loop (acquired again at once):
    // they are read first now, since reading with the backend acquired goes through sbuf_.
    abuf_.insert(0, sbuf_.get(), slen_);
    slen_ = 0;
    server_bytes_waiting_ = false;
  }
  co_return phase_ != Phase::kEnding;
}

void Session::ReleaseBackend() {
  coalesce_client_ = false;  // the back loop writes what is left in client_out_ first
  client_copy_ = false;
  if (abuf_at_ < abuf_.size()) {
    // Bytes the server sent after the last answer read with the backend acquired (a
    // notification, say): the back loop takes them first.
    const size_t left = abuf_.size() - abuf_at_;
    const size_t n = std::min(left, kBufferSize);
    if (n < left) spdlog::warn("dropping {} bytes the server sent unasked", left - n);
    std::memcpy(sbuf_.get(), abuf_.data() + abuf_at_, n);
    slen_ = n;
    server_bytes_waiting_ = true;
  }
  abuf_.clear();
  abuf_at_ = 0;
  pause_requested_ = false;
  back_wake_.cancel();
}

}  // namespace dtx::sql_proxy
