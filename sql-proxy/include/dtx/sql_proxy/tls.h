// TLS on both sides of dtx-sql-proxy.
//
// Toward clients: the proxy's certificate chain and private key, loaded once and shared by every
// session. A client that sends SSLRequest gets 'S' and a TLS handshake when the proxy has them
// (ProxyOptions::tls), 'N' otherwise.
//
// Toward the PostgreSQL servers (ProxyOptions::server_tls): the proxy sends SSLRequest on each new
// server connection, as libpq does, and the mode says what it takes (libpq's sslmode names).
// A Unix-domain socket is never encrypted: PostgreSQL refuses TLS there, so `prefer` goes on in
// the clear and the stronger modes fail the session.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "dtx/common/status.h"

namespace dtx::sql_proxy {

class TlsServerContext;  // an OpenSSL server context (tls_stream.cc)
class TlsClientContext;  // an OpenSSL client context (tls_stream.cc)

// Loads a PEM certificate chain (the proxy's certificate first) and its PEM private key, and
// checks that they match. TLS 1.2 and newer only.
Result<std::shared_ptr<TlsServerContext>> LoadTlsServerContext(const std::string& cert_file,
                                                               const std::string& key_file);

enum class ServerTlsMode {
  kDisable,     // no SSLRequest: the connection stays in the clear
  kPrefer,      // TLS when the server offers it, else in the clear; the certificate is not checked
  kRequire,     // TLS or no session; the certificate is not checked
  kVerifyCa,    // TLS with a certificate signed by a trusted CA
  kVerifyFull,  // and issued for the host name (or IP address) the proxy connects to
};
Result<ServerTlsMode> ParseServerTlsMode(std::string_view name);
std::string_view ServerTlsModeName(ServerTlsMode mode);

// The client context for `mode` (not kDisable). `ca_file`: PEM certificates of the CAs to trust
// for kVerifyCa and kVerifyFull; empty: the system's (OpenSSL's default paths). `cert_file` and
// `key_file` (both or neither): the certificate chain and key the proxy presents when the server
// asks for one (pg_hba.conf's `cert` method, or `clientcert=verify-ca|verify-full`).
Result<std::shared_ptr<TlsClientContext>> LoadTlsClientContext(ServerTlsMode mode, const std::string& ca_file,
                                                               const std::string& cert_file = "",
                                                               const std::string& key_file = "");
// The mode a context was made for.
ServerTlsMode ModeOf(const TlsClientContext& context);

}  // namespace dtx::sql_proxy
