// A session's TLS stream over one of its sockets: toward the client (the proxy is the TLS server)
// or toward the PostgreSQL server (the proxy is the TLS client). See dtx/sql_proxy/tls.h. Kept
// behind a pointer so that OpenSSL's and Asio's SSL headers stay in tls_stream.cc.
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
class TlsStream {
 public:
  // Toward a client: the server side of the handshake.
  TlsStream(asio::generic::stream_protocol::socket& socket, TlsServerContext& context);
  // Toward a PostgreSQL server at `host` (a name or an IP address): the client side, with SNI for
  // a name, and the certificate checked as ModeOf(context) says.
  TlsStream(asio::generic::stream_protocol::socket& socket, TlsClientContext& context, const std::string& host);
  ~TlsStream();
  TlsStream(const TlsStream&) = delete;
  TlsStream& operator=(const TlsStream&) = delete;

  // An error (the peer's, a protocol one, a certificate that fails the check) ends the session.
  asio::awaitable<boost::system::error_code> Handshake();
  // Why the handshake failed with `ec`, with the certificate check's reason if it failed.
  std::string HandshakeError(const boost::system::error_code& ec) const;
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
