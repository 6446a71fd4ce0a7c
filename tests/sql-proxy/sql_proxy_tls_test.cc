// TLS between clients and dtx-sql-proxy: libpq with sslmode=verify-full against a certificate
// made for the test, large results and COPY through the encryption, a cancel, clients without
// TLS (served, or refused with --tls-required), a broken handshake, and bad certificate files.
// TLS between dtx-sql-proxy and PostgreSQL (--server-tls): a server of the test's own that
// accepts TLS connections only, each mode against it and against a server without TLS.
#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <pwd.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "dtx/sql_proxy/pg_message.h"
#include "proxy_harness.h"

namespace dtx::testing {
namespace {

// A self-signed certificate for 127.0.0.1 and localhost (its own CA, so that a client can verify
// it with sslrootcert), and its key, as PEM files in a temp folder; a second key that matches
// nothing.
struct TlsFiles {
  std::string dir, cert, key, other_key, encrypted_key;
  ~TlsFiles() {
    std::error_code ignored;
    if (!dir.empty()) std::filesystem::remove_all(dir, ignored);
  }
};

// `pass`: the key encrypted with it (AES-256), else in the clear.
bool WriteKey(EVP_PKEY* key, const std::string& path, const char* pass = nullptr) {
  FILE* f = std::fopen(path.c_str(), "w");
  if (!f) return false;
  const bool ok = PEM_write_PrivateKey(f, key, pass ? EVP_aes_256_cbc() : nullptr,
                                       reinterpret_cast<const unsigned char*>(pass), pass ? static_cast<int>(std::strlen(pass)) : 0,
                                       nullptr, nullptr) == 1;
  std::fclose(f);
  return ok;
}

bool AddExtension(X509* x, int nid, const char* value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, x, x, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
  if (!ext) return false;
  const bool ok = X509_add_ext(x, ext, -1) == 1;
  X509_EXTENSION_free(ext);
  return ok;
}

// `common_name`: the certificate's subject CN (a user name, for a client certificate).
std::unique_ptr<TlsFiles> MakeTlsFiles(const char* common_name = "dtx-sql-proxy test") {
  auto files = std::make_unique<TlsFiles>();
  char dir[] = "/tmp/dtx-tls-XXXXXX";
  if (!mkdtemp(dir)) return nullptr;
  files->dir = dir;
  files->cert = files->dir + "/proxy.crt";
  files->key = files->dir + "/proxy.key";
  files->other_key = files->dir + "/other.key";
  files->encrypted_key = files->dir + "/encrypted.key";
  std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)> key(EVP_EC_gen("P-256"), EVP_PKEY_free);
  std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)> other(EVP_EC_gen("P-256"), EVP_PKEY_free);
  std::unique_ptr<X509, decltype(&X509_free)> x(X509_new(), X509_free);
  if (!key || !other || !x) return nullptr;
  X509_set_version(x.get(), 2);
  ASN1_INTEGER_set(X509_get_serialNumber(x.get()), 1);
  X509_gmtime_adj(X509_getm_notBefore(x.get()), -60);
  X509_gmtime_adj(X509_getm_notAfter(x.get()), 24 * 3600);
  X509_set_pubkey(x.get(), key.get());
  X509_NAME* name = X509_get_subject_name(x.get());
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>(common_name), -1,
                             -1, 0);
  X509_set_issuer_name(x.get(), name);
  if (!AddExtension(x.get(), NID_basic_constraints, "critical,CA:TRUE") ||
      !AddExtension(x.get(), NID_subject_alt_name, "IP:127.0.0.1,DNS:localhost") ||
      X509_sign(x.get(), key.get(), EVP_sha256()) <= 0) {
    return nullptr;
  }
  FILE* f = std::fopen(files->cert.c_str(), "w");
  if (!f) return nullptr;
  const bool written = PEM_write_X509(f, x.get()) == 1;
  std::fclose(f);
  if (!written || !WriteKey(key.get(), files->key) || !WriteKey(other.get(), files->other_key) ||
      !WriteKey(key.get(), files->encrypted_key, "secret pass phrase")) {
    return nullptr;
  }
  return files;
}

struct Conn {
  explicit Conn(const std::string& conninfo) : c(PQconnectdb(conninfo.c_str())) {}
  ~Conn() { PQfinish(c); }
  bool ok() const { return PQstatus(c) == CONNECTION_OK; }
  // The first value of the first row, or "ERROR <sqlstate>: <message>".
  std::string Value(const std::string& sql) {
    PGresult* r = PQexec(c, sql.c_str());
    std::string out;
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0) {
      out = PQgetvalue(r, 0, 0);
    } else if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK) {
      const char* state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
      out = std::string("ERROR ") + (state ? state : "?") + ": " + PQresultErrorMessage(r);
    }
    PQclear(r);
    return out;
  }
  // The same through the extended protocol, with one text parameter.
  std::string Value(const std::string& sql, const std::string& param) {
    const char* values[] = {param.c_str()};
    PGresult* r = PQexecParams(c, sql.c_str(), 1, nullptr, values, nullptr, nullptr, 0);
    std::string out = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0 ? PQgetvalue(r, 0, 0)
                                                                                : std::string("ERROR ") + PQresultErrorMessage(r);
    PQclear(r);
    return out;
  }
  PGconn* c;
};

// COPY table FROM STDIN with `data`, checked to succeed.
void CopyIn(Conn& c, const std::string& table, const std::string& data) {
  PGresult* r = PQexec(c.c, ("COPY " + table + " FROM STDIN").c_str());
  ASSERT_EQ(PQresultStatus(r), PGRES_COPY_IN) << PQresultErrorMessage(r);
  PQclear(r);
  ASSERT_EQ(PQputCopyData(c.c, data.data(), static_cast<int>(data.size())), 1);
  ASSERT_EQ(PQputCopyEnd(c.c, nullptr), 1);
  r = PQgetResult(c.c);
  EXPECT_EQ(PQresultStatus(r), PGRES_COMMAND_OK) << PQresultErrorMessage(r);
  PQclear(r);
  while ((r = PQgetResult(c.c))) PQclear(r);
}

// A cancel request stops a long query of `c`, which then goes on. (A cancel that arrives before the
// query has started is lost, so it is sent again until the query ends.)
void ExpectCancelStopsALongQuery(Conn& c) {
  ASSERT_EQ(PQsendQuery(c.c, "SELECT pg_sleep(30)"), 1);
  PGcancel* cancel = PQgetCancel(c.c);
  for (int attempt = 0; attempt < 20 && PQisBusy(c.c); ++attempt) {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    char err[256];
    EXPECT_EQ(PQcancel(cancel, err, sizeof err), 1) << err;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    PQconsumeInput(c.c);
  }
  PQfreeCancel(cancel);
  PGresult* r = PQgetResult(c.c);
  const char* state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
  EXPECT_STREQ(state ? state : "", "57014") << PQresultErrorMessage(r);
  PQclear(r);
  while ((r = PQgetResult(c.c))) PQclear(r);
  EXPECT_EQ(c.Value("SELECT 'still here'"), "still here");
}

class SqlProxyTlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    DTX_NEED_POSTGRES();
    pg_ = *SharedPostgres();
    files_ = MakeTlsFiles();
    ASSERT_TRUE(files_) << "could not make a test certificate";
  }

  void StartProxy(std::vector<std::string> extra = {}) {
    std::vector<std::string> args{"--server", pg_.host + ":" + std::to_string(pg_.port), "--tls-cert", files_->cert,
                                  "--tls-key", files_->key};
    args.insert(args.end(), extra.begin(), extra.end());
    proxy_ = std::make_unique<ProxyProcess>(args);
    ASSERT_GT(proxy_->port(), 0);
  }

  std::string Conninfo(const std::string& ssl) const {
    return "host=127.0.0.1 port=" + std::to_string(proxy_->port()) + " user=" + pg_.user + " dbname=" + pg_.database +
           " connect_timeout=10 " + ssl;
  }
  std::string Verified() const { return "sslmode=verify-full sslrootcert=" + files_->cert; }

  PgTarget pg_;
  std::unique_ptr<TlsFiles> files_;
  std::unique_ptr<ProxyProcess> proxy_;
};

TEST_F(SqlProxyTlsTest, VerifiedSessionsCarryQueriesCopyAndCancel) {
  StartProxy();
  Conn c(Conninfo(Verified()));
  ASSERT_TRUE(c.ok()) << PQerrorMessage(c.c);
  EXPECT_EQ(PQsslInUse(c.c), 1);
  const char* protocol = PQsslAttribute(c.c, "protocol");
  ASSERT_NE(protocol, nullptr);
  EXPECT_TRUE(std::string(protocol) == "TLSv1.3" || std::string(protocol) == "TLSv1.2") << protocol;
  EXPECT_EQ(c.Value("SELECT 40 + 2"), "42");

  EXPECT_EQ(c.Value("SELECT upper($1::text)", "abc"), "ABC");  // extended protocol

  // A result larger than the proxy's buffers and than a TLS record, both ways.
  EXPECT_EQ(c.Value("SELECT length(repeat('x', 3000000))"), "3000000");
  PGresult* r = PQexec(c.c, "SELECT repeat('y', 3000000)");
  ASSERT_EQ(PQresultStatus(r), PGRES_TUPLES_OK) << PQresultErrorMessage(r);
  EXPECT_EQ(PQgetlength(r, 0, 0), 3000000);
  PQclear(r);
  EXPECT_EQ(c.Value("SELECT length($1::text)", std::string(2'000'000, 'z')), "2000000");

  // COPY in, then out.
  ASSERT_EQ(c.Value("CREATE TEMP TABLE tls_copy (id int, v text)"), "");
  std::string data;
  for (int i = 1; i <= 20000; ++i) data += std::to_string(i) + "\trow " + std::to_string(i) + "\n";
  CopyIn(c, "tls_copy", data);
  EXPECT_EQ(c.Value("SELECT count(*) || ' ' || sum(id) FROM tls_copy"), "20000 200010000");
  r = PQexec(c.c, "COPY tls_copy TO STDOUT");
  ASSERT_EQ(PQresultStatus(r), PGRES_COPY_OUT) << PQresultErrorMessage(r);
  PQclear(r);
  size_t copied = 0;
  char* line = nullptr;
  int n;
  while ((n = PQgetCopyData(c.c, &line, 0)) > 0) {
    copied += static_cast<size_t>(n);
    PQfreemem(line);
  }
  EXPECT_EQ(copied, data.size());
  while ((r = PQgetResult(c.c))) PQclear(r);

  // A cancel (libpq sends it on a connection of its own, in the clear) stops a long query.
  ExpectCancelStopsALongQuery(c);

  // The certificate names 127.0.0.1 and localhost: verify-full takes those and refuses another name.
  const std::string at_port = " hostaddr=127.0.0.1 port=" + std::to_string(proxy_->port()) + " user=" + pg_.user +
                              " dbname=" + pg_.database + " connect_timeout=10 " + Verified();
  Conn localhost("host=localhost" + at_port);
  EXPECT_TRUE(localhost.ok()) << PQerrorMessage(localhost.c);
  Conn other_name("host=db.example" + at_port);
  EXPECT_FALSE(other_name.ok());
  EXPECT_NE(std::string(PQerrorMessage(other_name.c)).find("does not match host name"), std::string::npos)
      << PQerrorMessage(other_name.c);
  // (The refused name may or may not count: libpq checks it after the handshake.)
  EXPECT_GE(proxy_->Metric("dtx_sql_proxy_sessions_tls_total"), 2);
}

TEST_F(SqlProxyTlsTest, ClientsWithoutTlsAreServedUnlessItIsRequired) {
  StartProxy();
  {
    Conn clear(Conninfo("sslmode=disable"));
    ASSERT_TRUE(clear.ok()) << PQerrorMessage(clear.c);
    EXPECT_EQ(PQsslInUse(clear.c), 0);
    EXPECT_EQ(clear.Value("SELECT 1"), "1");
    Conn preferred(Conninfo("sslmode=prefer"));
    ASSERT_TRUE(preferred.ok()) << PQerrorMessage(preferred.c);
    EXPECT_EQ(PQsslInUse(preferred.c), 1);  // offered, so taken
  }
  StartProxy({"--tls-required", "true"});
  Conn clear(Conninfo("sslmode=disable"));
  EXPECT_FALSE(clear.ok());
  EXPECT_NE(std::string(PQerrorMessage(clear.c)).find("TLS connections only"), std::string::npos)
      << PQerrorMessage(clear.c);
  Conn secure(Conninfo(Verified()));
  ASSERT_TRUE(secure.ok()) << PQerrorMessage(secure.c);
  EXPECT_EQ(secure.Value("SELECT 2"), "2");
  EXPECT_GE(proxy_->Metric("dtx_sql_proxy_errors_total{kind=\"tls\"}"), 1);
}

TEST_F(SqlProxyTlsTest, BrokenHandshakeEndsOnlyItsConnection) {
  StartProxy();
  RawClient raw(proxy_->port());
  ASSERT_TRUE(raw.connected());
  std::string ssl_request;
  sql_proxy::AppendInt32(ssl_request, 8);
  sql_proxy::AppendInt32(ssl_request, 80877103);
  ASSERT_TRUE(raw.Send(ssl_request));
  EXPECT_EQ(raw.ReadBytes(1), "S");
  ASSERT_TRUE(raw.Send(std::string("GET / HTTP/1.1\r\nHost: x\r\n\r\n") + std::string(300, '\x16')));
  raw.ReadUntilClose(std::chrono::seconds(10));  // the proxy closes it (an alert may come first)
  // Bytes sent behind the SSLRequest, before its answer, are refused too.
  RawClient eager(proxy_->port());
  ASSERT_TRUE(eager.connected());
  ASSERT_TRUE(eager.Send(ssl_request + "\x16\x03\x01"));
  EXPECT_EQ(eager.ReadUntilClose(std::chrono::seconds(10)), "");
  Conn c(Conninfo(Verified()));
  ASSERT_TRUE(c.ok()) << PQerrorMessage(c.c);
  EXPECT_EQ(c.Value("SELECT 3"), "3");
  EXPECT_GE(proxy_->Metric("dtx_sql_proxy_errors_total{kind=\"tls\"}"), 1);
}

// ---- TLS toward the PostgreSQL server ----

// Gives the server's OS user the folder of the certificate and key and all in it: PostgreSQL reads
// a key only when it owns it and nobody else may read it.
bool HandTo(const std::string& user, const TlsFiles& files) {
  if (chmod(files.key.c_str(), 0600) != 0) return false;
  if (user.empty()) return true;
  passwd* pw = getpwnam(user.c_str());
  if (!pw) return false;
  if (chown(files.dir.c_str(), pw->pw_uid, pw->pw_gid) != 0) return false;
  for (const auto& entry : std::filesystem::directory_iterator(files.dir)) {
    if (chown(entry.path().c_str(), pw->pw_uid, pw->pw_gid) != 0) return false;
  }
  return true;
}

class SqlProxyServerTlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    DTX_NEED_POSTGRES();
    files_ = MakeTlsFiles();
    other_ca_ = MakeTlsFiles();  // a CA that signed nothing of the server's
    ASSERT_TRUE(files_ && other_ca_) << "could not make a test certificate";
    ASSERT_TRUE(HandTo(PgServerUser(), *files_));
    // TLS connections only, on two loopback addresses; the certificate names 127.0.0.1 and not
    // 127.0.0.2.
    pg_ = std::make_unique<OwnPostgres>(
        std::vector<std::string>{"hostssl all all 127.0.0.0/8 trust", "hostnossl all all 127.0.0.0/8 reject"},
        std::vector<std::string>{"ssl = on", "ssl_cert_file = '" + files_->cert + "'",
                                 "ssl_key_file = '" + files_->key + "'", "listen_addresses = '127.0.0.1,127.0.0.2'"});
    ASSERT_TRUE(pg_->ok()) << pg_->error();
  }

  void StartProxy(const std::string& server, std::vector<std::string> flags) {
    std::vector<std::string> args{"--server", server};
    args.insert(args.end(), flags.begin(), flags.end());
    proxy_ = std::make_unique<ProxyProcess>(args);
    ASSERT_GT(proxy_->port(), 0);
  }
  std::string Server(const std::string& host = "127.0.0.1") const { return host + ":" + std::to_string(pg_->port()); }
  // The client's own connection to the proxy stays in the clear.
  std::string Conninfo() const {
    return "host=127.0.0.1 port=" + std::to_string(proxy_->port()) +
           " user=postgres dbname=postgres sslmode=disable connect_timeout=10";
  }
  // How the server sees the session's connection: "true" over TLS.
  static constexpr const char* kSsl = "SELECT ssl::text FROM pg_stat_ssl WHERE pid = pg_backend_pid()";

  std::unique_ptr<TlsFiles> files_, other_ca_;
  std::unique_ptr<OwnPostgres> pg_;  // after files_: stopped before they go
  std::unique_ptr<ProxyProcess> proxy_;
};

TEST_F(SqlProxyServerTlsTest, RequireCarriesSessionsToAServerThatAcceptsTlsOnly) {
  // Without --server-tls the server refuses the proxy's connection, as it would any client's.
  StartProxy(Server(), {});
  {
    Conn clear(Conninfo());
    EXPECT_FALSE(clear.ok());
    EXPECT_NE(std::string(PQerrorMessage(clear.c)).find("no encryption"), std::string::npos) << PQerrorMessage(clear.c);
  }

  StartProxy(Server(), {"--server-tls", "prefer"});  // offered, so taken
  {
    Conn c(Conninfo());
    ASSERT_TRUE(c.ok()) << PQerrorMessage(c.c);
    EXPECT_EQ(c.Value(kSsl), "true");
  }

  StartProxy(Server(), {"--server-tls", "require"});
  Conn c(Conninfo());
  ASSERT_TRUE(c.ok()) << PQerrorMessage(c.c);
  EXPECT_EQ(PQsslInUse(c.c), 0);
  EXPECT_EQ(c.Value(kSsl), "true");
  // Statements the proxy answers or holds, which take the server connection over from the relay:
  // a bare BEGIN (sent with the next statement) and the dtx.xid binding.
  for (int i = 0; i < 20; ++i) {
    EXPECT_EQ(c.Value("BEGIN"), "");
    EXPECT_EQ(c.Value("SET dtx.xid = 'tc-1:" + std::to_string(i) + "'"), "");
    EXPECT_EQ(c.Value("SHOW dtx.xid"), "tc-1:" + std::to_string(i));
    EXPECT_EQ(c.Value("SELECT txid_current_if_assigned() IS NULL"), "t");
    EXPECT_EQ(c.Value("RESET dtx.xid"), "");
    EXPECT_EQ(c.Value("COMMIT"), "");
  }
  EXPECT_EQ(c.Value("SELECT upper($1::text)", "abc"), "ABC");  // extended protocol
  // Larger than the proxy's buffers and than a TLS record, both ways.
  EXPECT_EQ(c.Value("SELECT length(repeat('x', 3000000))"), "3000000");
  EXPECT_EQ(c.Value("SELECT length($1::text)", std::string(2'000'000, 'z')), "2000000");
  ASSERT_EQ(c.Value("CREATE TEMP TABLE tls_copy (id int)"), "");
  std::string data;
  for (int i = 1; i <= 50000; ++i) data += std::to_string(i) + "\n";
  CopyIn(c, "tls_copy", data);
  EXPECT_EQ(c.Value("SELECT sum(id) FROM tls_copy"), "1250025000");

  // A cancel reaches the server on a connection of its own, in the clear: PostgreSQL takes it
  // before any pg_hba.conf rule.
  ExpectCancelStopsALongQuery(c);
  EXPECT_GE(proxy_->Metric("dtx_sql_proxy_server_sessions_tls_total"), 1);
}

TEST_F(SqlProxyServerTlsTest, VerifyModesCheckTheCertificateAndItsAddress) {
  const std::string ca = "--server-tls-ca=" + files_->cert;
  StartProxy(Server(), {"--server-tls", "verify-full", ca});
  {
    Conn c(Conninfo());
    ASSERT_TRUE(c.ok()) << PQerrorMessage(c.c);
    EXPECT_EQ(c.Value(kSsl), "true");
  }
  // Signed by another CA: refused, with the reason, and the proxy serves the next session.
  StartProxy(Server(), {"--server-tls", "verify-ca", "--server-tls-ca=" + other_ca_->cert});
  {
    Conn c(Conninfo());
    EXPECT_FALSE(c.ok());
    const std::string m = PQerrorMessage(c.c);
    EXPECT_NE(m.find("certificate verify failed"), std::string::npos) << m;
    EXPECT_NE(m.find("--server-tls verify-ca"), std::string::npos) << m;
  }
  // The certificate does not name 127.0.0.2: verify-full refuses it there, verify-ca takes it.
  StartProxy(Server("127.0.0.2"), {"--server-tls", "verify-full", ca});
  {
    Conn c(Conninfo());
    EXPECT_FALSE(c.ok());
    EXPECT_NE(std::string(PQerrorMessage(c.c)).find("IP address mismatch"), std::string::npos) << PQerrorMessage(c.c);
  }
  StartProxy(Server("127.0.0.2"), {"--server-tls", "verify-ca", ca});
  {
    Conn c(Conninfo());
    ASSERT_TRUE(c.ok()) << PQerrorMessage(c.c);
    EXPECT_EQ(c.Value(kSsl), "true");
  }
  // By name: localhost is in the certificate.
  StartProxy("localhost:" + std::to_string(pg_->port()), {"--server-tls", "verify-full", ca});
  Conn c(Conninfo());
  ASSERT_TRUE(c.ok()) << PQerrorMessage(c.c);
  EXPECT_EQ(c.Value(kSsl), "true");
}

TEST(SqlProxyServerTls, AServerWithoutTlsIsTakenInTheClearOnlyWhenPreferred) {
  DTX_NEED_POSTGRES();
  const PgTarget pg = *SharedPostgres();  // scripts/with-postgres.sh's server: no TLS
  // A session through a proxy to `server` with `mode`: served, or refused for `refusal`.
  auto expect = [&](const std::string& server, const std::string& mode, const std::string& refusal) {
    ProxyProcess proxy({"--server", server + ":" + std::to_string(pg.port), "--server-tls", mode});
    Conn c("host=127.0.0.1 port=" + std::to_string(proxy.port()) + " user=" + pg.user + " dbname=" + pg.database +
           " sslmode=disable connect_timeout=10");
    if (refusal.empty()) {
      ASSERT_TRUE(c.ok()) << mode << " " << server << ": " << PQerrorMessage(c.c);
      EXPECT_EQ(c.Value("SELECT 1"), "1");
    } else {
      EXPECT_FALSE(c.ok()) << mode << " " << server;
      EXPECT_NE(std::string(PQerrorMessage(c.c)).find(refusal), std::string::npos) << PQerrorMessage(c.c);
    }
  };
  expect(pg.host, "prefer", "");
  expect(pg.host, "require", "the server does not accept TLS");
  if (pg.socket_dir.empty()) return;
  // A Unix-domain socket: prefer goes on in the clear, require cannot be met.
  expect(pg.socket_dir, "prefer", "");
  expect(pg.socket_dir, "require", "Unix-domain socket carries no TLS");
}

TEST(SqlProxyServerTls, AFailedHandshakeUnderPreferIsRetriedInTheClear) {
  DTX_NEED_POSTGRES();
  auto server = MakeTlsFiles();
  ASSERT_TRUE(server) << "could not make a test certificate";
  ASSERT_TRUE(HandTo(PgServerUser(), *server));
  // The server offers TLS 1.0 only, which the proxy does not speak: every handshake fails.
  OwnPostgres pg({"host all all 127.0.0.0/8 trust"},
                 {"ssl = on", "ssl_cert_file = '" + server->cert + "'", "ssl_key_file = '" + server->key + "'",
                  "ssl_min_protocol_version = 'TLSv1'", "ssl_max_protocol_version = 'TLSv1'"});
  ASSERT_TRUE(pg.ok()) << pg.error();
  const std::string address = "127.0.0.1:" + std::to_string(pg.port());
  {
    ProxyProcess proxy({"--server", address, "--server-tls", "prefer"});
    Conn c("host=127.0.0.1 port=" + std::to_string(proxy.port()) + " user=postgres dbname=postgres sslmode=disable");
    ASSERT_TRUE(c.ok()) << PQerrorMessage(c.c);
    EXPECT_EQ(c.Value("SELECT ssl::text FROM pg_stat_ssl WHERE pid = pg_backend_pid()"), "false");
  }
  ProxyProcess proxy({"--server", address, "--server-tls", "require"});
  Conn c("host=127.0.0.1 port=" + std::to_string(proxy.port()) + " user=postgres dbname=postgres sslmode=disable");
  EXPECT_FALSE(c.ok());
  EXPECT_NE(std::string(PQerrorMessage(c.c)).find("TLS handshake"), std::string::npos) << PQerrorMessage(c.c);
}

TEST(SqlProxyServerTls, AClientCertificateAuthenticatesTheProxy) {
  DTX_NEED_POSTGRES();
  auto server = MakeTlsFiles();
  auto client = MakeTlsFiles("postgres");  // the user the proxy's sessions log in as; its own CA
  ASSERT_TRUE(server && client) << "could not make a test certificate";
  const std::string trusted = server->dir + "/clients.crt";
  std::filesystem::copy_file(client->cert, trusted);
  ASSERT_TRUE(HandTo(PgServerUser(), *server));
  OwnPostgres pg({"hostssl all all 127.0.0.0/8 cert"},
                 {"ssl = on", "ssl_cert_file = '" + server->cert + "'", "ssl_key_file = '" + server->key + "'",
                  "ssl_ca_file = '" + trusted + "'"});
  ASSERT_TRUE(pg.ok()) << pg.error();
  auto session = [&](std::vector<std::string> flags) {
    std::vector<std::string> args{"--server", "127.0.0.1:" + std::to_string(pg.port()), "--server-tls", "require"};
    args.insert(args.end(), flags.begin(), flags.end());
    auto proxy = std::make_unique<ProxyProcess>(args);
    auto c = std::make_unique<Conn>("host=127.0.0.1 port=" + std::to_string(proxy->port()) +
                                    " user=postgres dbname=postgres sslmode=disable connect_timeout=10");
    return std::make_pair(std::move(proxy), std::move(c));
  };
  {
    auto [proxy, c] = session({});
    EXPECT_FALSE(c->ok());
    EXPECT_NE(std::string(PQerrorMessage(c->c)).find("certificate"), std::string::npos) << PQerrorMessage(c->c);
  }
  auto [proxy, c] = session({"--server-tls-cert", client->cert, "--server-tls-key", client->key});
  ASSERT_TRUE(c->ok()) << PQerrorMessage(c->c);
  EXPECT_EQ(c->Value("SELECT client_dn FROM pg_stat_ssl WHERE pid = pg_backend_pid()"), "/CN=postgres");
}

TEST(SqlProxyTlsStart, BadCertificateFilesStopTheProxyWithAReason) {
  auto files = MakeTlsFiles();
  ASSERT_TRUE(files);
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"--tls-cert", files->dir + "/missing.crt", "--tls-key", files->key}, "missing.crt"},
      {{"--tls-cert", files->cert, "--tls-key", files->other_key}, "does not match"},
      {{"--tls-cert", files->cert}, "both a certificate and a private key"},
      {{"--tls-cert", files->cert, "--tls-key", files->encrypted_key}, "an encrypted key is not read"},
      {{"--tls-required", "true"}, "--tls-required needs"},
      {{"--server-tls", "verify"}, "unknown TLS mode 'verify'"},
      {{"--server-tls", "verify-full", "--server-tls-ca", files->dir + "/missing.pem"}, "missing.pem"},
      {{"--server-tls", "require", "--server-tls-cert", files->cert}, "both a certificate and a private key"},
      {{"--server-tls", "require", "--server-tls-cert", files->cert, "--server-tls-key", files->other_key},
       "does not match"},
      {{"--server-tls-ca", files->cert}, "need --server-tls"},
  };
  for (const auto& [flags, reason] : cases) {
    std::vector<std::string> argv{DTX_SQL_PROXY_BIN, "--port", "0", "--admin", ""};
    argv.insert(argv.end(), flags.begin(), flags.end());
    RunResult r = RunProgram(argv, "", {}, std::chrono::seconds(20));
    EXPECT_EQ(r.exit_code, 2) << reason << ": " << r.output;
    EXPECT_NE(r.output.find(reason), std::string::npos) << r.output;
  }
}

}  // namespace
}  // namespace dtx::testing
