// TLS between clients and dtx-sql-proxy: the proxy's certificate chain and private key, loaded
// once and shared by every session. A client that sends SSLRequest gets 'S' and a TLS handshake
// when the proxy has them (ProxyOptions::tls), 'N' otherwise. The proxy's own connections to the
// PostgreSQL servers are not encrypted (they are meant to be local: a Unix-domain socket or a
// private network).
#pragma once

#include <memory>
#include <string>

#include "dtx/common/status.h"

namespace dtx::sql_proxy {

class TlsServerContext;  // an OpenSSL server context (client_tls.cc)

// Loads a PEM certificate chain (the proxy's certificate first) and its PEM private key, and
// checks that they match. TLS 1.2 and newer only.
Result<std::shared_ptr<TlsServerContext>> LoadTlsServerContext(const std::string& cert_file,
                                                               const std::string& key_file);

}  // namespace dtx::sql_proxy
