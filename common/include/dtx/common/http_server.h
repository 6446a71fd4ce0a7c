// HttpServer: the small HTTP/1.1 server (keep-alive) behind the programs' admin and metrics
// endpoints. A handler turns a Request into a Response; the server does the rest on one thread of
// its own: parsing with limits, the answers to malformed requests (400, 413, 431, as JSON
// {"error": ...}), HEAD (the GET answer without its body), idle and write timeouts, a cap on open
// connections, and a graceful stop. Nothing a client sends can take it down: a handler that
// throws answers 500.
//
// The handler runs on the server's thread, one request at a time, so it may block (reading a log,
// say) without holding up anything but this server. The header keeps Beast out of its includers.
//
// Thread-safety: Start and Stop from one thread at a time; port() from any.
// Ownership: the server owns its thread, sockets and the handler.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "dtx/common/status.h"

namespace dtx::http {

struct Request {
  std::string method;  // "GET", "POST", ... (HEAD arrives as GET)
  std::string target;  // as sent: the path and the query
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  std::string peer;    // "address:port" of the client

  // The value of a header (the name in any case), without surrounding blanks; empty if absent.
  std::string_view Header(std::string_view name) const;
};

struct Response {
  int status = 200;
  std::string content_type = "text/plain";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;  // more headers ("Allow", say)
};

// {"error": message} with `status`.
Response JsonError(int status, std::string_view message);

// A request target split into decoded path segments ("/api/v1/x%2Fy" -> {"api", "v1", "x/y"};
// split before decoding) and decoded query pairs ('+' is a space there); nullopt when it does not
// start with '/' or holds a broken %-escape.
struct Target {
  std::string path;  // as sent, for messages
  std::vector<std::string> segments;
  std::vector<std::pair<std::string, std::string>> query;
};
std::optional<Target> ParseTarget(std::string_view raw);
// "a,b,,c" -> {"a", "b", "", "c"}: for list-valued query parameters.
std::vector<std::string_view> Split(std::string_view s, char sep);

struct ServerOptions {
  std::string host = "127.0.0.1";
  uint16_t port = 0;                 // 0: an ephemeral port, see port()
  std::string name = "dtx";          // the Server header, and the name in log lines
  size_t max_body = 64 * 1024;       // larger bodies are answered 413
  size_t max_header = 16 * 1024;     // larger headers are answered 431
  size_t max_connections = 128;      // more are refused (closed at once)
};

class Server {
 public:
  using Handler = std::function<Response(const Request&)>;

  Server(ServerOptions options, Handler handler);
  ~Server();  // Stops.
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds, listens and starts serving; an error (the port is taken, a bad host) leaves it stopped.
  Status Start();
  // The port it listens on (the chosen one when the option was 0); 0 before Start.
  uint16_t port() const;
  // Stops accepting, lets responses being written finish, closes every connection. Idempotent.
  void Stop();

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace dtx::http
