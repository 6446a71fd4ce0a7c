#include "tls_stream.h"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

namespace dtx::sql_proxy {
namespace {
constexpr auto kTuple = asio::as_tuple(asio::use_awaitable);

std::string OpenSslError(const std::string& what) {
  std::string out = what;
  while (const unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    out += "; ";
    out += buf;
  }
  return out;
}
}  // namespace

namespace {
// The certificate chain and private key a side of the handshake presents, checked to match.
Status UseCertificate(asio::ssl::context& ssl, const std::string& cert_file, const std::string& key_file) {
  boost::system::error_code ec;
  // An encrypted key would make OpenSSL ask for its pass phrase on the terminal: it fails instead.
  ssl.set_password_callback([](size_t, asio::ssl::context::password_purpose) { return std::string(); }, ec);
  ERR_clear_error();
  if (ssl.use_certificate_chain_file(cert_file, ec); ec) {
    return InvalidArgument(OpenSslError("TLS certificate " + cert_file + ": " + ec.message()));
  }
  if (ssl.use_private_key_file(key_file, asio::ssl::context::pem, ec); ec) {
    if (ec.category() == asio::error::get_ssl_category() &&
        ERR_GET_REASON(static_cast<unsigned long>(ec.value())) == X509_R_KEY_VALUES_MISMATCH) {
      return InvalidArgument(OpenSslError("TLS private key " + key_file + " does not match the certificate " + cert_file));
    }
    return InvalidArgument(OpenSslError("TLS private key " + key_file + ": " + ec.message() +
                                        " (an encrypted key is not read: decrypt it, e.g. openssl pkey -in KEY -out KEY2)"));
  }
  if (SSL_CTX_check_private_key(ssl.native_handle()) != 1) {
    return InvalidArgument(OpenSslError("TLS private key " + key_file + " does not match the certificate " + cert_file));
  }
  return Status::Ok();
}
}  // namespace

class TlsServerContext {
 public:
  TlsServerContext() : ssl(asio::ssl::context::tls_server) {}
  asio::ssl::context ssl;
};

Result<std::shared_ptr<TlsServerContext>> LoadTlsServerContext(const std::string& cert_file,
                                                               const std::string& key_file) {
  if (cert_file.empty() || key_file.empty()) return InvalidArgument("TLS needs both a certificate and a private key file");
  auto context = std::make_shared<TlsServerContext>();
  auto& ssl = context->ssl;
  boost::system::error_code ec;
  ssl.set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                      asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 | asio::ssl::context::no_tlsv1_1 |
                      asio::ssl::context::single_dh_use,
                  ec);
  if (ec) return Internal("TLS options: " + ec.message());
  DTX_RETURN_IF_ERROR(UseCertificate(ssl, cert_file, key_file));
  // No client certificates are asked for: the server authenticates the user, as without TLS.
  ssl.set_verify_mode(asio::ssl::verify_none, ec);
  return context;
}

class TlsClientContext {
 public:
  explicit TlsClientContext(ServerTlsMode m) : ssl(asio::ssl::context::tls_client), mode(m) {}
  asio::ssl::context ssl;
  const ServerTlsMode mode;
};

namespace {
constexpr std::pair<ServerTlsMode, std::string_view> kModeNames[] = {
    {ServerTlsMode::kDisable, "disable"},     {ServerTlsMode::kPrefer, "prefer"},
    {ServerTlsMode::kRequire, "require"},     {ServerTlsMode::kVerifyCa, "verify-ca"},
    {ServerTlsMode::kVerifyFull, "verify-full"},
};
}  // namespace

Result<ServerTlsMode> ParseServerTlsMode(std::string_view name) {
  for (const auto& [mode, n] : kModeNames) {
    if (n == name) return mode;
  }
  return InvalidArgument("unknown TLS mode '" + std::string(name) +
                         "': want disable, prefer, require, verify-ca or verify-full");
}

std::string_view ServerTlsModeName(ServerTlsMode mode) {
  for (const auto& [m, n] : kModeNames) {
    if (m == mode) return n;
  }
  return "?";
}

ServerTlsMode ModeOf(const TlsClientContext& context) { return context.mode; }

Result<std::shared_ptr<TlsClientContext>> LoadTlsClientContext(ServerTlsMode mode, const std::string& ca_file,
                                                               const std::string& cert_file, const std::string& key_file) {
  if (mode == ServerTlsMode::kDisable) return InvalidArgument("no TLS context for mode disable");
  if (cert_file.empty() != key_file.empty()) {
    return InvalidArgument("a client certificate needs both a certificate and a private key file");
  }
  auto context = std::make_shared<TlsClientContext>(mode);
  auto& ssl = context->ssl;
  boost::system::error_code ec;
  ssl.set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                      asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 | asio::ssl::context::no_tlsv1_1,
                  ec);
  if (ec) return Internal("TLS options: " + ec.message());
  if (mode == ServerTlsMode::kVerifyCa || mode == ServerTlsMode::kVerifyFull) {
    ERR_clear_error();
    if (ca_file.empty()) {
      ssl.set_default_verify_paths(ec);
    } else {
      ssl.load_verify_file(ca_file, ec);
    }
    if (ec) {
      return InvalidArgument(OpenSslError("TLS CA certificates " + (ca_file.empty() ? "(system)" : ca_file) + ": " +
                                          ec.message()));
    }
    ssl.set_verify_mode(asio::ssl::verify_peer, ec);
  } else {
    // As libpq's prefer and require: encrypted, but anyone's certificate is taken.
    ssl.set_verify_mode(asio::ssl::verify_none, ec);
  }
  if (ec) return Internal("TLS verify mode: " + ec.message());
  if (!cert_file.empty()) DTX_RETURN_IF_ERROR(UseCertificate(ssl, cert_file, key_file));
  return context;
}

struct TlsStream::Impl {
  Impl(asio::generic::stream_protocol::socket& socket, asio::ssl::context& context, asio::ssl::stream_base::handshake_type r)
      : stream(socket, context), role(r) {}
  asio::ssl::stream<asio::generic::stream_protocol::socket&> stream;
  const asio::ssl::stream_base::handshake_type role;
  bool verifies = false;    // the client side checks the server's certificate
  std::string setup_error;  // set up for the client side failed (OpenSSL out of memory, say)
};

TlsStream::TlsStream(asio::generic::stream_protocol::socket& socket, TlsServerContext& context)
    : impl_(std::make_unique<Impl>(socket, context.ssl, asio::ssl::stream_base::server)) {}

TlsStream::TlsStream(asio::generic::stream_protocol::socket& socket, TlsClientContext& context, const std::string& host)
    : impl_(std::make_unique<Impl>(socket, context.ssl, asio::ssl::stream_base::client)) {
  SSL* ssl = impl_->stream.native_handle();
  impl_->verifies = context.mode == ServerTlsMode::kVerifyCa || context.mode == ServerTlsMode::kVerifyFull;
  ERR_clear_error();
  boost::system::error_code not_ip;
  asio::ip::make_address(host, not_ip);
  bool ok = true;
  // SNI carries host names only (RFC 6066).
  if (not_ip) ok = SSL_set_tlsext_host_name(ssl, host.c_str()) == 1;
  if (ok && context.mode == ServerTlsMode::kVerifyFull) {
    ok = not_ip ? SSL_set1_host(ssl, host.c_str()) == 1 : X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host.c_str()) == 1;
  }
  if (!ok) impl_->setup_error = OpenSslError("TLS setup for " + host);
}

TlsStream::~TlsStream() = default;

asio::awaitable<boost::system::error_code> TlsStream::Handshake() {
  if (!impl_->setup_error.empty()) co_return asio::error::invalid_argument;
  auto [ec] = co_await impl_->stream.async_handshake(impl_->role, kTuple);
  co_return ec;
}

std::string TlsStream::HandshakeError(const boost::system::error_code& ec) const {
  if (!impl_->setup_error.empty()) return impl_->setup_error;
  std::string out = ec.message();
  if (impl_->verifies) {
    const long verify = SSL_get_verify_result(impl_->stream.native_handle());
    if (verify != X509_V_OK) out += std::string(": ") + X509_verify_cert_error_string(verify);
  }
  return out;
}

asio::awaitable<std::pair<boost::system::error_code, size_t>> TlsStream::ReadSome(char* data, size_t space) {
  auto [ec, n] = co_await impl_->stream.async_read_some(asio::buffer(data, space), kTuple);
  co_return std::make_pair(ec, n);
}

asio::awaitable<boost::system::error_code> TlsStream::Write(std::string_view bytes) {
  auto [ec, n] = co_await asio::async_write(impl_->stream, asio::buffer(bytes.data(), bytes.size()), kTuple);
  co_return ec;
}

std::string TlsStream::Describe() const {
  SSL* ssl = impl_->stream.native_handle();
  const char* version = SSL_get_version(ssl);
  const char* cipher = SSL_get_cipher_name(ssl);
  return std::string(version ? version : "?") + " " + (cipher ? cipher : "?");
}

}  // namespace dtx::sql_proxy
