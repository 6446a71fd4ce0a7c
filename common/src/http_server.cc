#include "dtx/common/http_server.h"

#include <pthread.h>
#include <spdlog/spdlog.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <cctype>
#include <thread>
#include <unordered_map>

namespace dtx::http {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = beast::http;
using tcp = asio::ip::tcp;
using BeastRequest = bhttp::request<bhttp::string_body>;
using BeastResponse = bhttp::response<bhttp::string_body>;

constexpr auto kIdleTimeout = std::chrono::seconds(30);
constexpr auto kWriteTimeout = std::chrono::seconds(10);
constexpr auto kLingerTimeout = std::chrono::seconds(2);
constexpr auto kAcceptRetry = std::chrono::milliseconds(100);

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  return std::equal(a.begin(), a.end(), b.begin(), b.end(), [](char x, char y) {
    return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
  });
}

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Percent-decoding; nullopt for a broken escape. In a query '+' stands for a space.
std::optional<std::string> Decode(std::string_view s, bool plus_is_space) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%') {
      if (i + 2 >= s.size()) return std::nullopt;
      const int hi = HexDigit(s[i + 1]), lo = HexDigit(s[i + 2]);
      if (hi < 0 || lo < 0) return std::nullopt;
      out.push_back(static_cast<char>(hi * 16 + lo));
      i += 2;
    } else {
      out.push_back(plus_is_space && s[i] == '+' ? ' ' : s[i]);
    }
  }
  return out;
}

}  // namespace

std::string_view Request::Header(std::string_view name) const {
  for (const auto& [key, value] : headers) {
    if (!EqualsIgnoreCase(key, name)) continue;
    std::string_view v = value;
    while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
    while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.remove_suffix(1);
    return v;
  }
  return {};
}

Response JsonError(int status, std::string_view message) {
  // Messages may quote what clients sent; bytes that are not UTF-8 become U+FFFD.
  return Response{status, "application/json",
                  nlohmann::json{{"error", message}}.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) +
                      "\n",
                  {}};
}

std::vector<std::string_view> Split(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  for (size_t start = 0;;) {
    const size_t end = s.find(sep, start);
    out.push_back(s.substr(start, end == std::string_view::npos ? std::string_view::npos : end - start));
    if (end == std::string_view::npos) return out;
    start = end + 1;
  }
}

std::optional<Target> ParseTarget(std::string_view raw) {
  if (raw.empty() || raw.front() != '/') return std::nullopt;
  const size_t q = raw.find('?');
  Target t;
  t.path = std::string(raw.substr(0, q));
  for (std::string_view segment : Split(std::string_view(t.path).substr(1), '/')) {
    auto decoded = Decode(segment, false);
    if (!decoded) return std::nullopt;
    t.segments.push_back(std::move(*decoded));
  }
  if (q == std::string_view::npos) return t;
  for (std::string_view part : Split(raw.substr(q + 1), '&')) {
    if (part.empty()) continue;
    const size_t eq = part.find('=');
    auto key = Decode(part.substr(0, eq), true);
    auto value = Decode(eq == std::string_view::npos ? std::string_view() : part.substr(eq + 1), true);
    if (!key || !value) return std::nullopt;
    t.query.emplace_back(std::move(*key), std::move(*value));
  }
  return t;
}

namespace {
class Connection;

// The accept loop and the live connections; everything here runs on the one I/O thread.
class ServerCore {
 public:
  ServerCore(ServerOptions options, Server::Handler handler)
      : options_(std::move(options)), handler_(std::move(handler)), retry_timer_(io_) {}
  ~ServerCore() { Stop(); }

  Status Start();
  void Stop();
  uint16_t port() const { return port_.load(); }

  const ServerOptions& options() const { return options_; }
  bool stopping() const { return stopping_; }
  void Forget(Connection* c) { connections_.erase(c); }

  // The handler's answer, as Beast sends it.
  BeastResponse Serve(const BeastRequest& req, const std::string& peer) {
    Request r;
    r.method = req.method() == bhttp::verb::head ? "GET" : std::string(req.method_string());
    r.target = std::string(req.target());
    for (const auto& field : req) r.headers.emplace_back(std::string(field.name_string()), std::string(field.value()));
    r.body = req.body();
    r.peer = peer;
    Response res;
    try {
      res = handler_(r);
    } catch (const std::exception& e) {
      SPDLOG_ERROR("{}: {} {} failed: {}", options_.name, r.method, r.target, e.what());
      res = JsonError(500, std::string("internal error: ") + e.what());
    }
    BeastResponse out = Make(req.version(), req.keep_alive(), std::move(res));
    if (req.method() == bhttp::verb::head) out.body().clear();  // Content-Length stays that of the GET
    return out;
  }

  BeastResponse Make(unsigned version, bool keep_alive, Response res) const {
    BeastResponse out{static_cast<bhttp::status>(res.status), version};
    out.set(bhttp::field::server, options_.name);
    out.set(bhttp::field::content_type, res.content_type);
    out.set(bhttp::field::cache_control, "no-store");
    for (auto& [name, value] : res.headers) out.set(name, value);
    out.keep_alive(keep_alive);
    out.body() = std::move(res.body);
    out.prepare_payload();
    return out;
  }

 private:
  void Accept();

  ServerOptions options_;
  Server::Handler handler_;
  std::unordered_map<Connection*, std::weak_ptr<Connection>> connections_;  // before io_: handlers die first
  asio::io_context io_;
  asio::steady_timer retry_timer_;
  std::unique_ptr<tcp::acceptor> acceptor_;
  std::thread thread_;
  std::atomic<uint16_t> port_{0};
  bool stopping_ = false;  // I/O thread, once serving
};

// One HTTP/1.1 connection: read a request, answer it, and again while the client keeps it alive.
class Connection : public std::enable_shared_from_this<Connection> {
 public:
  Connection(tcp::socket socket, ServerCore& server) : stream_(std::move(socket)), server_(server) {
    boost::system::error_code ec;
    auto remote = stream_.socket().remote_endpoint(ec);
    peer_ = ec ? "?" : remote.address().to_string() + ":" + std::to_string(remote.port());
  }
  ~Connection() { server_.Forget(this); }

  void Start() { ReadRequest(); }

  // The server stops: a connection waiting for a request closes now, one being answered after
  // its response is written (OnWrite sees stopping()).
  void Stop() {
    if (state_ != State::kWriting) Close();
  }

 private:
  enum class State { kReading, kWriting, kLingering, kClosed };

  void ReadRequest() {
    state_ = State::kReading;
    parser_.emplace();
    parser_->body_limit(server_.options().max_body);
    parser_->header_limit(static_cast<uint32_t>(server_.options().max_header));
    stream_.expires_after(kIdleTimeout);
    bhttp::async_read(stream_, buffer_, *parser_, [self = shared_from_this()](beast::error_code ec, size_t) {
      self->OnRead(ec);
    });
  }

  void OnRead(beast::error_code ec) {
    if (state_ == State::kClosed) return;
    if (!ec) return Write(server_.Serve(parser_->get(), peer_));
    // Errors of HTTP syntax get an answer; a closed, reset or idle connection does not.
    if (ec.category() != bhttp::make_error_code(bhttp::error::end_of_stream).category() ||
        ec == bhttp::error::end_of_stream || ec == bhttp::error::partial_message) {
      return Close();
    }
    Response res = JsonError(400, "malformed request: " + ec.message());
    if (ec == bhttp::error::body_limit) {
      res = JsonError(413, "request body over " + std::to_string(server_.options().max_body) + " bytes");
    } else if (ec == bhttp::error::header_limit) {
      res = JsonError(431, "request header over " + std::to_string(server_.options().max_header) + " bytes");
    }
    Write(server_.Make(11, false, std::move(res)));
  }

  void Write(BeastResponse res) {
    state_ = State::kWriting;
    response_ = std::move(res);
    if (server_.stopping()) response_->keep_alive(false);
    stream_.expires_after(kWriteTimeout);
    bhttp::async_write(stream_, *response_, [self = shared_from_this()](beast::error_code ec, size_t) {
      self->OnWrite(ec);
    });
  }

  void OnWrite(beast::error_code ec) {
    const bool keep_alive = response_->keep_alive();
    response_.reset();
    if (state_ == State::kClosed) return;
    if (ec) return Close();
    if (!keep_alive || server_.stopping()) return Linger();
    ReadRequest();
  }

  // Closing with unread request bytes in the socket would reset the connection and could lose
  // the response just sent (a 413 before its body was read). So: send FIN, then read and drop
  // whatever the client still sends until it closes too, or for a short while.
  void Linger() {
    state_ = State::kLingering;
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
    stream_.expires_after(kLingerTimeout);
    Drain();
  }

  void Drain() {
    stream_.async_read_some(asio::buffer(drain_), [self = shared_from_this()](beast::error_code ec, size_t) {
      if (ec) return self->Close();
      self->Drain();
    });
  }

  void Close() {
    if (state_ == State::kClosed) return;
    state_ = State::kClosed;
    beast::error_code ignored;
    stream_.socket().close(ignored);
  }

  beast::tcp_stream stream_;
  ServerCore& server_;
  std::string peer_;
  State state_ = State::kReading;
  beast::flat_buffer buffer_;
  std::optional<bhttp::request_parser<bhttp::string_body>> parser_;
  std::optional<BeastResponse> response_;
  std::array<char, 4096> drain_;
};

Status ServerCore::Start() {
  if (thread_.joinable()) return FailedPrecondition(options_.name + ": the HTTP server is running already");
  const std::string where = options_.host + ":" + std::to_string(options_.port);
  beast::error_code ec;
  tcp::resolver resolver(io_);
  auto endpoints = resolver.resolve(options_.host, std::to_string(options_.port),
                                    tcp::resolver::passive | tcp::resolver::numeric_service, ec);
  if (ec || endpoints.empty()) {
    return InvalidArgument("bad HTTP listen address '" + options_.host + "': " + (ec ? ec.message() : "no address"));
  }
  const tcp::endpoint endpoint = endpoints.begin()->endpoint();
  auto acceptor = std::make_unique<tcp::acceptor>(io_);
  if (acceptor->open(endpoint.protocol(), ec); ec) return IOError("cannot listen on " + where + ": " + ec.message());
  acceptor->set_option(tcp::acceptor::reuse_address(true), ec);
  if (acceptor->bind(endpoint, ec); ec) return IOError("cannot listen on " + where + ": " + ec.message());
  if (acceptor->listen(asio::socket_base::max_listen_connections, ec); ec) {
    return IOError("cannot listen on " + where + ": " + ec.message());
  }
  port_ = acceptor->local_endpoint().port();
  acceptor_ = std::move(acceptor);
  stopping_ = false;
  io_.restart();
  Accept();
  // No work guard: once Stop closes the acceptor and every connection, run() returns.
  thread_ = std::thread([this] {
    pthread_setname_np(pthread_self(), "dtx-http");
    io_.run();
  });
  SPDLOG_INFO("{}: serving HTTP on {}:{}", options_.name, options_.host, port_.load());
  return Status::Ok();
}

void ServerCore::Accept() {
  acceptor_->async_accept([this](beast::error_code ec, tcp::socket socket) {
    if (stopping_) return;
    if (ec) {
      // Out of descriptors, most likely; try again soon rather than spin or give up for good.
      SPDLOG_WARN("{}: accept failed: {}", options_.name, ec.message());
      retry_timer_.expires_after(kAcceptRetry);
      retry_timer_.async_wait([this](beast::error_code ec) {
        if (!ec && !stopping_) Accept();
      });
      return;
    }
    if (connections_.size() >= options_.max_connections) {
      SPDLOG_WARN("{}: refusing an HTTP connection: {} are open already", options_.name, connections_.size());
      beast::error_code ignored;
      socket.close(ignored);
    } else {
      auto connection = std::make_shared<Connection>(std::move(socket), *this);
      connections_.emplace(connection.get(), connection);
      connection->Start();
    }
    Accept();
  });
}

void ServerCore::Stop() {
  if (!thread_.joinable()) return;
  asio::post(io_, [this] {
    stopping_ = true;
    beast::error_code ignored;
    acceptor_->close(ignored);
    retry_timer_.cancel();
    std::vector<std::shared_ptr<Connection>> live;
    for (auto& [ptr, weak] : connections_) {
      if (auto c = weak.lock()) live.push_back(std::move(c));
    }
    for (auto& c : live) c->Stop();
  });
  thread_.join();
  acceptor_.reset();
  port_ = 0;
  SPDLOG_INFO("{}: HTTP server stopped", options_.name);
}

}  // namespace

class Server::Impl : public ServerCore {
 public:
  using ServerCore::ServerCore;
};

Server::Server(ServerOptions options, Handler handler)
    : impl_(std::make_unique<Impl>(std::move(options), std::move(handler))) {}
Server::~Server() { impl_->Stop(); }
Status Server::Start() { return impl_->Start(); }
uint16_t Server::port() const { return impl_->port(); }
void Server::Stop() { impl_->Stop(); }

}  // namespace dtx::http
