// A session's TLS stream over its client socket (see dtx/sql_proxy/tls.h). Kept behind a pointer
// so that OpenSSL's and Asio's SSL headers stay in client_tls.cc.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/generic/stream_protocol.hpp>

#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include "dtx/sql_proxy/tls.h"

namespace dtx::sql_proxy {

namespace asio = boost::asio;

// One read and one write may be in flight at once (the session's front and back loops), on the
// session's worker thread.
class ClientTls {
 public:
  ClientTls(asio::generic::stream_protocol::socket& socket, TlsServerContext& context);
  ~ClientTls();
  ClientTls(const ClientTls&) = delete;
  ClientTls& operator=(const ClientTls&) = delete;

  // The server side of the handshake; an error (the peer's or a protocol one) ends the session.
  asio::awaitable<boost::system::error_code> Handshake();
  // Decrypted bytes, as async_read_some gives them.
  asio::awaitable<std::pair<boost::system::error_code, size_t>> ReadSome(char* data, size_t space);
  // All of `bytes`.
  asio::awaitable<boost::system::error_code> Write(std::string_view bytes);
  // "TLSv1.3 TLS_AES_256_GCM_SHA384", for the log.
  std::string Describe() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace dtx::sql_proxy
