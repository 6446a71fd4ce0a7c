// dtx-sql-proxy in front of a PostgreSQL server of the test's own that demands passwords: SCRAM
// and md5 are relayed untouched (the proxy is given no password), a wrong password is refused,
// databases are routed to servers by a TOML config file, and an outage of one server refuses new
// sessions with a clear error until the server is back.
#include <gtest/gtest.h>
#include <libpq-fe.h>

#include <signal.h>

#include <fstream>
#include <memory>
#include <thread>

#include "proxy_harness.h"

namespace dtx::testing {
namespace {

class SqlProxyAuthTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    server_ = new OwnPostgres({"host all md5_user 127.0.0.1/32 md5", "host all all 127.0.0.1/32 scram-sha-256"});
    if (!server_->ok()) return;
    setup_ = server_->Sql(
        "CREATE DATABASE authdb; "
        "SET password_encryption = 'scram-sha-256'; CREATE ROLE scram_user LOGIN PASSWORD 'scram secret'; "
        "SET password_encryption = 'md5'; CREATE ROLE md5_user LOGIN PASSWORD 'md5 secret';");
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }

  void SetUp() override {
    ASSERT_TRUE(server_->ok()) << server_->error();
    ASSERT_EQ(setup_.exit_code, 0) << setup_.output;
    if (!server_->Start()) {}  // a test before may have stopped it; starting a running server fails harmlessly
    config_ = "/tmp/dtx-proxy-auth-" + std::to_string(getpid()) + ".toml";
    std::ofstream toml(config_);
    // The default server is somewhere nothing listens, so a session reaches ours only by its route.
    toml << "server = \"127.0.0.1:1\"\n"
         << "backend = [\"authdb=127.0.0.1:" << server_->port() << "\", \"postgres=127.0.0.1:" << server_->port()
         << "\"]\n"
         << "connect-timeout-ms = 2000\n";
    toml.close();
    proxy_ = std::make_unique<ProxyProcess>(std::vector<std::string>{"--config", config_});
    ASSERT_GT(proxy_->port(), 0);
  }
  void TearDown() override {
    proxy_.reset();
    std::remove(config_.c_str());
  }

  std::string Conninfo(const std::string& user, const std::string& password, const std::string& db = "authdb") {
    return "host=127.0.0.1 port=" + std::to_string(proxy_->port()) + " user=" + user + " password='" + password +
           "' dbname=" + db + " connect_timeout=10";
  }

  // The server's answer to `sql` on a new session, or the connection error.
  std::string Query(const std::string& conninfo, const std::string& sql) {
    PGconn* c = PQconnectdb(conninfo.c_str());
    std::string out;
    if (PQstatus(c) != CONNECTION_OK) {
      out = std::string("error: ") + PQerrorMessage(c);
    } else {
      PGresult* r = PQexec(c, sql.c_str());
      out = PQresultStatus(r) == PGRES_TUPLES_OK ? PQgetvalue(r, 0, 0) : std::string("error: ") + PQerrorMessage(c);
      PQclear(r);
    }
    PQfinish(c);
    return out;
  }

  static OwnPostgres* server_;
  static RunResult setup_;
  std::string config_;
  std::unique_ptr<ProxyProcess> proxy_;
};

OwnPostgres* SqlProxyAuthTest::server_ = nullptr;
RunResult SqlProxyAuthTest::setup_;

TEST_F(SqlProxyAuthTest, ScramUserLogsInThroughTheProxy) {
  PGconn* c = PQconnectdb(Conninfo("scram_user", "scram secret").c_str());
  ASSERT_EQ(PQstatus(c), CONNECTION_OK) << PQerrorMessage(c);
  PGresult* r = PQexec(c, "select current_user || ' ' || current_database() || ' ' || current_setting('port')");
  EXPECT_EQ(std::string(PQgetvalue(r, 0, 0)), "scram_user authdb " + std::to_string(server_->port()));
  PQclear(r);
  PQfinish(c);
  EXPECT_EQ(Query(Conninfo("scram_user", "scram secret"),
                  "select rolpassword like 'SCRAM-SHA-256$%' from pg_authid where rolname = 'scram_user'"),
            "error: ERROR:  permission denied for table pg_authid\n");
  auto stored = server_->Sql("select rolpassword like 'SCRAM-SHA-256$%' from pg_authid where rolname = 'scram_user'");
  EXPECT_EQ(stored.output, "t\n");
}

TEST_F(SqlProxyAuthTest, Md5UserLogsInThroughTheProxy) {
  EXPECT_EQ(Query(Conninfo("md5_user", "md5 secret"), "select current_user"), "md5_user");
  auto stored = server_->Sql("select rolpassword like 'md5%' from pg_authid where rolname = 'md5_user'");
  EXPECT_EQ(stored.output, "t\n");
}

TEST_F(SqlProxyAuthTest, WrongPasswordIsRefusedByTheServer) {
  const std::string scram = Query(Conninfo("scram_user", "wrong"), "select 1");
  EXPECT_NE(scram.find("password authentication failed for user \"scram_user\""), std::string::npos) << scram;
  const std::string md5 = Query(Conninfo("md5_user", "wrong"), "select 1");
  EXPECT_NE(md5.find("password authentication failed for user \"md5_user\""), std::string::npos) << md5;
  EXPECT_EQ(proxy_->Metric("dtx_sql_proxy_auth_failures_total"), 2);
  // The proxy keeps serving.
  EXPECT_EQ(Query(Conninfo("scram_user", "scram secret"), "select 'fine'"), "fine");
}

TEST_F(SqlProxyAuthTest, DatabasesAreRoutedByTheConfigFile) {
  EXPECT_EQ(Query(Conninfo("scram_user", "scram secret", "postgres"), "select current_database()"), "postgres");
  // A database with no route goes to the default server, which is down here.
  const std::string other = Query(Conninfo("scram_user", "scram secret", "elsewhere"), "select 1");
  EXPECT_NE(other.find("dtx-sql-proxy: cannot reach the PostgreSQL server for database \"elsewhere\" at 127.0.0.1:1"),
            std::string::npos)
      << other;
}

TEST_F(SqlProxyAuthTest, ServerOutageThenRecovery) {
  PGconn* open = PQconnectdb(Conninfo("scram_user", "scram secret").c_str());
  ASSERT_EQ(PQstatus(open), CONNECTION_OK) << PQerrorMessage(open);
  ASSERT_TRUE(server_->Stop());

  // The open session learns that its server went away.
  PGresult* r = PQexec(open, "select 1");
  EXPECT_NE(PQresultStatus(r), PGRES_TUPLES_OK);
  PQclear(r);
  EXPECT_NE(PQstatus(open), CONNECTION_OK);
  PQfinish(open);

  // New sessions get a clear error while it is down...
  const std::string down = Query(Conninfo("scram_user", "scram secret"), "select 1");
  EXPECT_NE(down.find("cannot reach the PostgreSQL server for database \"authdb\""), std::string::npos) << down;
  EXPECT_NE(down.find("Connection refused"), std::string::npos) << down;
  EXPECT_GE(proxy_->Metric("dtx_sql_proxy_errors_total{kind=\"backend_connect\"}"), 1);

  // ...and work again once it is back, through the same proxy process.
  ASSERT_TRUE(server_->Start()) << server_->error();
  EXPECT_EQ(Query(Conninfo("scram_user", "scram secret"), "select 'back'"), "back");
}

// A server process that dies without a word (SIGKILL): the client is told by the proxy, and the
// proxy serves new sessions once the server has recovered.
TEST_F(SqlProxyAuthTest, ServerProcessKilledMidSession) {
  PGconn* c = PQconnectdb(Conninfo("scram_user", "scram secret").c_str());
  ASSERT_EQ(PQstatus(c), CONNECTION_OK) << PQerrorMessage(c);
  PGresult* r = PQexec(c, "select pg_backend_pid()");
  const int pid = std::atoi(PQgetvalue(r, 0, 0));
  PQclear(r);
  ASSERT_GT(pid, 0);
  ASSERT_EQ(kill(pid, SIGKILL), 0);
  r = PQexec(c, "select 1");
  EXPECT_NE(PQresultStatus(r), PGRES_TUPLES_OK);
  PQclear(r);
  const std::string error = PQerrorMessage(c);
  // Either the proxy's word, or (if the postmaster's crash restart got there first) the server's.
  EXPECT_TRUE(error.find("dtx-sql-proxy: the PostgreSQL server closed the connection unexpectedly") !=
                  std::string::npos ||
              error.find("terminating connection because of crash of another server process") != std::string::npos)
      << error;
  PQfinish(c);
  std::string again;
  for (int i = 0; i < 100; ++i) {  // the server restarts after the crash of one of its processes
    again = Query(Conninfo("scram_user", "scram secret"), "select 'recovered'");
    if (again == "recovered") break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_EQ(again, "recovered");
  if (error.find("dtx-sql-proxy") != std::string::npos) {
    // This session's, and maybe one of the retries above: a session that reached the server while
    // it restarted after the crash can be cut off too.
    EXPECT_GE(proxy_->Metric("dtx_sql_proxy_errors_total{kind=\"backend_lost\"}"), 1);
  }
}

}  // namespace
}  // namespace dtx::testing
