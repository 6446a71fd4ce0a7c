#include "dtx/coordinator/admin_server.h"

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
#include <charconv>
#include <optional>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

namespace dtx::coordinator {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using json = nlohmann::json;
using Request = http::request<http::string_body>;
using Response = http::response<http::string_body>;

constexpr size_t kMaxBody = 64 * 1024;
constexpr size_t kMaxHeader = 16 * 1024;
constexpr size_t kDefaultLimit = 100;
constexpr size_t kMaxLimit = 1000;
constexpr size_t kMaxConnections = 128;  // an admin port needs few; this keeps it from eating descriptors
constexpr size_t kMaxOperatorName = 128;
constexpr auto kIdleTimeout = std::chrono::seconds(30);
constexpr auto kWriteTimeout = std::chrono::seconds(10);
constexpr auto kLingerTimeout = std::chrono::seconds(2);
constexpr auto kAcceptRetry = std::chrono::milliseconds(100);
constexpr std::string_view kPrometheusType = "text/plain; version=0.0.4";

// ---- requests ----

std::vector<std::string_view> Split(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  for (size_t start = 0;;) {
    const size_t end = s.find(sep, start);
    out.push_back(s.substr(start, end == std::string_view::npos ? std::string_view::npos : end - start));
    if (end == std::string_view::npos) return out;
    start = end + 1;
  }
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

// A request target, decoded. Path segments are split before decoding, so an XID may hold "%2F".
struct Target {
  std::string path;                   // as sent, for messages
  std::vector<std::string> segments;  // "/api/v1/x" -> {"api", "v1", "x"}
  std::vector<std::pair<std::string, std::string>> query;
};

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

bool Is(const std::vector<std::string>& segments, std::initializer_list<std::string_view> want) {
  return std::equal(segments.begin(), segments.end(), want.begin(), want.end());
}

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  return std::equal(a.begin(), a.end(), b.begin(), b.end(), [](char x, char y) {
    return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
  });
}

constexpr auto kStatuses = [] {
  std::array<log::GlobalStatus, 14> all{};
  for (int i = 0; i < 14; ++i) all[i] = static_cast<log::GlobalStatus>(i + 1);
  return all;
}();

// A status by its name (any case) or its number.
std::optional<log::GlobalStatus> ParseStatus(std::string_view s) {
  for (log::GlobalStatus status : kStatuses) {
    if (EqualsIgnoreCase(s, log::GlobalStatusName(status)) || s == std::to_string(static_cast<int>(status))) {
      return status;
    }
  }
  return std::nullopt;
}

std::optional<int64_t> ParseInt(std::string_view s) {
  int64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size()) return std::nullopt;
  return v;
}

std::string_view ActionName(OperatorAction action) {
  switch (action) {
    case OperatorAction::kRetry: return "retry";
    case OperatorAction::kForceCommitted: return "force-commit";
    case OperatorAction::kForceRolledBack: return "force-rollback";
  }
  return "?";
}

std::optional<OperatorAction> ActionNamed(std::string_view name) {
  for (OperatorAction a : {OperatorAction::kRetry, OperatorAction::kForceCommitted, OperatorAction::kForceRolledBack}) {
    if (name == ActionName(a)) return a;
  }
  return std::nullopt;
}

// ---- responses ----

Response Make(unsigned version, bool keep_alive, http::status status, std::string_view content_type, std::string body) {
  Response res{status, version};
  res.set(http::field::server, "dtx-coordinator");
  res.set(http::field::content_type, content_type);
  res.set(http::field::cache_control, "no-store");
  res.keep_alive(keep_alive);
  res.body() = std::move(body);
  res.prepare_payload();
  return res;
}

Response Make(const Request& req, http::status status, std::string_view content_type, std::string body) {
  return Make(req.version(), req.keep_alive(), status, content_type, std::move(body));
}

Response Json(const Request& req, http::status status, const json& j) {
  // Records hold what clients sent; bytes that are not UTF-8 become U+FFFD rather than an exception.
  return Make(req, status, "application/json", j.dump(-1, ' ', false, json::error_handler_t::replace) + "\n");
}

Response Error(const Request& req, http::status status, std::string message) {
  return Json(req, status, json{{"error", std::move(message)}});
}

json GlobalJson(const log::GlobalRecord& g) {
  return {
      {"xid", g.xid},
      {"status", std::string(log::GlobalStatusName(g.status))},
      {"status_code", static_cast<int>(g.status)},
      {"name", g.name},
      {"application", g.application},
      {"timeout_ms", g.timeout_ms},
      {"begin_time_ms", g.begin_time_ms},
      {"owner_node", g.owner_node},
      {"updated_time_ms", g.updated_time_ms},
  };
}

json BranchJson(const log::BranchRecord& b) {
  return {
      {"branch_id", b.branch_id},
      {"resource_id", b.resource_id},
      {"type", std::string(log::BranchTypeName(b.type))},
      {"status", std::string(log::BranchStatusName(b.status))},
      {"status_code", static_cast<int>(b.status)},
      {"lock_keys", b.lock_keys},
      {"client_id", b.client_id},
      {"registered_time_ms", b.registered_time_ms},
      {"application_data_size", b.application_data.size()},
  };
}

// The admin API proper: a request in, a response out, no sockets.
class Api {
 public:
  Api(Coordinator& coordinator, Metrics& metrics) : coordinator_(coordinator), metrics_(metrics) {}

  Response Serve(const Request& req, std::string_view peer) {
    // Nothing a client sends may take the server down; an exception here is a bug of ours, and
    // the client hears of it as a 500.
    try {
      return Route(req, peer);
    } catch (const std::exception& e) {
      SPDLOG_ERROR("admin: {} {} failed: {}", std::string(req.method_string()), std::string(req.target()), e.what());
      return Error(req, http::status::internal_server_error, std::string("internal error: ") + e.what());
    }
  }

 private:
  Response Route(const Request& req, std::string_view peer) {
    auto target = ParseTarget(req.target());
    if (!target) return Error(req, http::status::bad_request, "malformed request target");
    const auto& seg = target->segments;
    if (Is(seg, {"healthz"})) {
      return Only(req, http::verb::get, [&] { return Make(req, http::status::ok, "text/plain", "ok\n"); });
    }
    if (Is(seg, {"readyz"})) {
      return Only(req, http::verb::get, [&] {
        return coordinator_.recovered() ? Make(req, http::status::ok, "text/plain", "ready\n")
                                        : Make(req, http::status::service_unavailable, "text/plain", "recovering\n");
      });
    }
    if (Is(seg, {"metrics"})) {
      return Only(req, http::verb::get,
                  [&] { return Make(req, http::status::ok, kPrometheusType, metrics_.Render()); });
    }
    if (seg.size() >= 3 && seg[0] == "api" && seg[1] == "v1" && seg[2] == "transactions") {
      if (seg.size() == 3) return Only(req, http::verb::get, [&] { return List(req, target->query); });
      const std::string& xid = seg[3];
      if (!xid.empty() && seg.size() == 4) return Only(req, http::verb::get, [&] { return Show(req, xid); });
      if (!xid.empty() && seg.size() == 5) {
        if (auto action = ActionNamed(seg[4])) {
          return Only(req, http::verb::post, [&] { return Act(req, xid, *action, peer); });
        }
      }
    }
    return Error(req, http::status::not_found, "no such endpoint: " + target->path);
  }

  template <typename Handler>
  Response Only(const Request& req, http::verb method, Handler&& handle) {
    if (req.method() == method) return handle();
    Response res = Error(req, http::status::method_not_allowed, "use " + std::string(http::to_string(method)));
    res.set(http::field::allow, http::to_string(method));
    return res;
  }

  Response List(const Request& req, const std::vector<std::pair<std::string, std::string>>& query) {
    log::ListFilter filter;
    filter.limit = kDefaultLimit;
    for (const auto& [key, value] : query) {
      if (key == "status") {
        for (std::string_view name : Split(value, ',')) {
          if (name.empty()) continue;
          auto status = ParseStatus(name);
          if (!status) {
            std::string known;
            for (log::GlobalStatus s : kStatuses) {
              known += (known.empty() ? "" : ", ") + std::string(log::GlobalStatusName(s));
            }
            return Error(req, http::status::bad_request,
                         "unknown status '" + std::string(name) + "'; known statuses: " + known);
          }
          filter.statuses.push_back(*status);
        }
      } else if (key == "begun_before_ms") {
        auto ms = ParseInt(value);
        if (!ms || *ms < 0) return Error(req, http::status::bad_request, "begun_before_ms must be a Unix time in ms");
        filter.begun_before_ms = *ms;
      } else if (key == "after") {
        filter.after_xid = value;
      } else if (key == "limit") {
        auto limit = ParseInt(value);
        if (!limit || *limit < 1) return Error(req, http::status::bad_request, "limit must be a positive number");
        filter.limit = std::min<size_t>(static_cast<size_t>(*limit), kMaxLimit);
      } else {
        return Error(req, http::status::bad_request,
                     "unknown query parameter '" + key + "' (known: status, begun_before_ms, after, limit)");
      }
    }
    auto page = coordinator_.store().List(filter);
    if (!page.ok()) {
      SPDLOG_WARN("admin: listing transactions: {}", page.status().ToString());
      return Error(req, http::status::internal_server_error, "reading the log: " + page.status().ToString());
    }
    json list = json::array();
    for (const auto& g : page->transactions) list.push_back(GlobalJson(g));
    return Json(req, http::status::ok, json{{"transactions", std::move(list)}, {"next_after", page->next_after_xid}});
  }

  Response Show(const Request& req, const std::string& xid) {
    auto snapshot = coordinator_.store().Get(xid);
    if (!snapshot.ok()) {
      SPDLOG_WARN("admin: reading {}: {}", xid, snapshot.status().ToString());
      return Error(req, http::status::internal_server_error, "reading the log: " + snapshot.status().ToString());
    }
    if (!*snapshot) return Error(req, http::status::not_found, "no transaction " + xid + " in the log");
    const log::TransactionSnapshot& t = **snapshot;
    json out = GlobalJson(t.global);
    out["branches"] = json::array();
    for (const auto& b : t.branches) out["branches"].push_back(BranchJson(b));
    out["locks"] = json::array();
    for (const auto& l : t.locks) out["locks"].push_back(json{{"row_key", l.row_key}, {"branch_id", l.branch_id}});
    return Json(req, http::status::ok, out);
  }

  Response Act(const Request& req, const std::string& xid, OperatorAction action, std::string_view peer) {
    auto header = req.find("X-Operator");
    std::string_view who = header == req.end() ? std::string_view() : std::string_view(header->value());
    while (!who.empty() && (who.front() == ' ' || who.front() == '\t')) who.remove_prefix(1);
    while (!who.empty() && (who.back() == ' ' || who.back() == '\t')) who.remove_suffix(1);
    if (who.empty()) {
      return Error(req, http::status::bad_request,
                   "an operator action needs an X-Operator header naming who takes it, for the audit log");
    }
    if (who.size() > kMaxOperatorName) return Error(req, http::status::bad_request, "X-Operator is too long");
    if (!coordinator_.recovered()) {
      return Error(req, http::status::service_unavailable, "the coordinator is still recovering its log");
    }
    const Status s = coordinator_.Act(xid, action, std::string(who));
    SPDLOG_INFO("admin: {} of {} by '{}' from {}: {}", ActionName(action), xid, who, peer, s.ToString());
    if (s.ok()) return Json(req, http::status::ok, json{{"ok", true}});
    switch (s.code()) {
      case StatusCode::kNotFound: return Error(req, http::status::not_found, std::string(s.message()));
      case StatusCode::kFailedPrecondition: return Error(req, http::status::conflict, std::string(s.message()));
      default: return Error(req, http::status::internal_server_error, s.ToString());
    }
  }

  Coordinator& coordinator_;
  Metrics& metrics_;
};

// ---- transport ----

class Session;

// The accept loop and the live connections; everything here runs on its one I/O thread.
class Listener {
 public:
  explicit Listener(Api& api) : api_(api), retry_timer_(io_) {}
  ~Listener() { Stop(); }

  Status Start(const AdminOptions& options);
  void Stop();
  uint16_t port() const { return port_.load(); }

  Api& api() { return api_; }
  bool stopping() const { return stopping_; }
  void Forget(Session* s) { sessions_.erase(s); }

 private:
  void Accept();

  Api& api_;
  std::unordered_map<Session*, std::weak_ptr<Session>> sessions_;  // before io_: handlers die first
  asio::io_context io_;
  asio::steady_timer retry_timer_;
  std::unique_ptr<tcp::acceptor> acceptor_;
  std::thread thread_;
  std::atomic<uint16_t> port_{0};
  bool stopping_ = false;  // I/O thread, once serving
};

// One HTTP/1.1 connection: read a request, answer it, and again while the client keeps it alive.
class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket socket, Listener& listener) : stream_(std::move(socket)), listener_(listener) {
    boost::system::error_code ec;
    auto remote = stream_.socket().remote_endpoint(ec);
    peer_ = ec ? "?" : remote.address().to_string() + ":" + std::to_string(remote.port());
  }
  ~Session() { listener_.Forget(this); }

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
    parser_->body_limit(kMaxBody);
    parser_->header_limit(kMaxHeader);
    stream_.expires_after(kIdleTimeout);
    http::async_read(stream_, buffer_, *parser_, [self = shared_from_this()](beast::error_code ec, size_t) {
      self->OnRead(ec);
    });
  }

  void OnRead(beast::error_code ec) {
    if (state_ == State::kClosed) return;
    if (!ec) return Write(listener_.api().Serve(parser_->get(), peer_));
    // Errors of HTTP syntax get an answer; a closed, reset or idle connection does not.
    if (ec.category() != http::make_error_code(http::error::end_of_stream).category() ||
        ec == http::error::end_of_stream || ec == http::error::partial_message) {
      return Close();
    }
    http::status status = http::status::bad_request;
    std::string message = "malformed request: " + ec.message();
    if (ec == http::error::body_limit) {
      status = http::status::payload_too_large;
      message = "request body over " + std::to_string(kMaxBody) + " bytes";
    } else if (ec == http::error::header_limit) {
      status = http::status::request_header_fields_too_large;
      message = "request header over " + std::to_string(kMaxHeader) + " bytes";
    }
    Write(Make(11, false, status, "application/json", json{{"error", message}}.dump() + "\n"));
  }

  void Write(Response res) {
    state_ = State::kWriting;
    response_ = std::move(res);
    if (listener_.stopping()) response_->keep_alive(false);
    stream_.expires_after(kWriteTimeout);
    http::async_write(stream_, *response_, [self = shared_from_this()](beast::error_code ec, size_t) {
      self->OnWrite(ec);
    });
  }

  void OnWrite(beast::error_code ec) {
    const bool keep_alive = response_->keep_alive();
    response_.reset();
    if (state_ == State::kClosed) return;
    if (ec) return Close();
    if (!keep_alive || listener_.stopping()) return Linger();
    ReadRequest();
  }

  // Closing with unread request bytes in the socket would reset the connection and could lose
  // the response we just sent (a 413 before its body was read). So: send FIN, then read and drop
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
  Listener& listener_;
  std::string peer_;
  State state_ = State::kReading;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  std::optional<Response> response_;
  std::array<char, 4096> drain_;
};

Status Listener::Start(const AdminOptions& options) {
  if (thread_.joinable()) return FailedPrecondition("the admin server is running already");
  const std::string where = options.host + ":" + std::to_string(options.port);
  beast::error_code ec;
  tcp::resolver resolver(io_);
  auto endpoints = resolver.resolve(options.host, std::to_string(options.port),
                                    tcp::resolver::passive | tcp::resolver::numeric_service, ec);
  if (ec || endpoints.empty()) {
    return InvalidArgument("bad admin listen address '" + options.host + "': " + (ec ? ec.message() : "no address"));
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
  thread_ = std::thread([this] { io_.run(); });
  SPDLOG_INFO("admin: serving HTTP on {}:{}", options.host, port_.load());
  return Status::Ok();
}

void Listener::Accept() {
  acceptor_->async_accept([this](beast::error_code ec, tcp::socket socket) {
    if (stopping_) return;
    if (ec) {
      // Out of descriptors, most likely; try again soon rather than spin or give up for good.
      SPDLOG_WARN("admin: accept failed: {}", ec.message());
      retry_timer_.expires_after(kAcceptRetry);
      retry_timer_.async_wait([this](beast::error_code ec) {
        if (!ec && !stopping_) Accept();
      });
      return;
    }
    if (sessions_.size() >= kMaxConnections) {
      SPDLOG_WARN("admin: refusing a connection: {} are open already", sessions_.size());
      beast::error_code ignored;
      socket.close(ignored);
    } else {
      auto session = std::make_shared<Session>(std::move(socket), *this);
      sessions_.emplace(session.get(), session);
      session->Start();
    }
    Accept();
  });
}

void Listener::Stop() {
  if (!thread_.joinable()) return;
  asio::post(io_, [this] {
    stopping_ = true;
    beast::error_code ignored;
    acceptor_->close(ignored);
    retry_timer_.cancel();
    std::vector<std::shared_ptr<Session>> live;
    for (auto& [ptr, weak] : sessions_) {
      if (auto s = weak.lock()) live.push_back(std::move(s));
    }
    for (auto& s : live) s->Stop();
  });
  thread_.join();
  acceptor_.reset();
  port_ = 0;
  SPDLOG_INFO("admin: stopped");
}

}  // namespace

class AdminServer::Impl {
 public:
  Impl(AdminOptions options, Coordinator& coordinator, Metrics& metrics)
      : options(std::move(options)), api(coordinator, metrics), listener(api) {}

  AdminOptions options;
  Api api;
  Listener listener;
};

AdminServer::AdminServer(AdminOptions options, Coordinator& coordinator, Metrics& metrics)
    : impl_(std::make_unique<Impl>(std::move(options), coordinator, metrics)) {
  metrics.AddGauge("dtx_active_transactions",
                   "Global transactions the coordinator holds: unfinished, or failed and awaiting an operator.",
                   [&coordinator] { return static_cast<double>(coordinator.active_transactions()); });
}

AdminServer::~AdminServer() { Stop(); }

Status AdminServer::Start() { return impl_->listener.Start(impl_->options); }
uint16_t AdminServer::port() const { return impl_->listener.port(); }
void AdminServer::Stop() { impl_->listener.Stop(); }

}  // namespace dtx::coordinator
