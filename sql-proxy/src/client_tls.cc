#include "client_tls.h"

#include <boost/asio/as_tuple.hpp>
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
  // No client certificates are asked for: the server authenticates the user, as without TLS.
  ssl.set_verify_mode(asio::ssl::verify_none, ec);
  return context;
}

struct ClientTls::Impl {
  Impl(asio::generic::stream_protocol::socket& socket, TlsServerContext& context) : stream(socket, context.ssl) {}
  asio::ssl::stream<asio::generic::stream_protocol::socket&> stream;
};

ClientTls::ClientTls(asio::generic::stream_protocol::socket& socket, TlsServerContext& context)
    : impl_(std::make_unique<Impl>(socket, context)) {}

ClientTls::~ClientTls() = default;

asio::awaitable<boost::system::error_code> ClientTls::Handshake() {
  auto [ec] = co_await impl_->stream.async_handshake(asio::ssl::stream_base::server, kTuple);
  co_return ec;
}

asio::awaitable<std::pair<boost::system::error_code, size_t>> ClientTls::ReadSome(char* data, size_t space) {
  auto [ec, n] = co_await impl_->stream.async_read_some(asio::buffer(data, space), kTuple);
  co_return std::make_pair(ec, n);
}

asio::awaitable<boost::system::error_code> ClientTls::Write(std::string_view bytes) {
  auto [ec, n] = co_await asio::async_write(impl_->stream, asio::buffer(bytes.data(), bytes.size()), kTuple);
  co_return ec;
}

std::string ClientTls::Describe() const {
  SSL* ssl = impl_->stream.native_handle();
  const char* version = SSL_get_version(ssl);
  const char* cipher = SSL_get_cipher_name(ssl);
  return std::string(version ? version : "?") + " " + (cipher ? cipher : "?");
}

}  // namespace dtx::sql_proxy
