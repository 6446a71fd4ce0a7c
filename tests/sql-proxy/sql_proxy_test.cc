// dtx-sql-proxy as a real process in front of the PostgreSQL server that scripts/with-postgres.sh
// started: psql, pgbench, libpq and raw sockets as its clients.
#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <memory>
#include <sstream>
#include <thread>

#include "dtx/sql_proxy/pg_message.h"
#include "dtx/sql_proxy/proxy_server.h"
#include "proxy_harness.h"

namespace dtx::testing {
namespace {

using sql_proxy::AppendInt32;

// Reads exactly n bytes (the one-byte answer to SSLRequest comes before any message).
bool ReadExactly(RawClient& c, size_t n, std::string& out) {
  out = c.ReadBytes(n);
  return out.size() == n;
}

class SqlProxyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    DTX_NEED_POSTGRES();
    pg_ = *SharedPostgres();
    std::string server = pg_.host + ":" + std::to_string(pg_.port);
    if (unix_socket_) {
      ASSERT_FALSE(pg_.socket_dir.empty()) << "DTX_TEST_PG_SOCKET_DIR is not set: run through scripts/with-postgres.sh";
      server = pg_.socket_dir + ":" + std::to_string(pg_.port);
    }
    proxy_ = std::make_unique<ProxyProcess>(std::vector<std::string>{"--server", server, "--shutdown-grace-ms", "10000"});
    ASSERT_GT(proxy_->port(), 0);
    ASSERT_GT(proxy_->admin_port(), 0);
  }

  RunResult ViaProxy(const std::string& script) { return Psql(proxy_->port(), pg_.user, pg_.database, script); }
  RunResult Direct(const std::string& script) { return Psql(pg_.port, pg_.user, pg_.database, script); }

  std::string Conninfo(const std::string& extra = "") const {
    return "host=127.0.0.1 port=" + std::to_string(proxy_->port()) + " user=" + pg_.user + " dbname=" + pg_.database +
           " " + extra;
  }

  // A session through the proxy that has finished its startup.
  std::unique_ptr<RawClient> RawSession(const std::string& application) {
    auto c = std::make_unique<RawClient>(proxy_->port());
    EXPECT_TRUE(c->connected());
    c->Send(sql_proxy::StartupPacket(
        {{"user", pg_.user}, {"database", pg_.database}, {"application_name", application}}));
    EXPECT_TRUE(c->ReadUntilMessage('Z'));
    return c;
  }

  // How many server sessions carry this application_name.
  int ServerSessions(const std::string& application) {
    auto r = Direct("select count(*) from pg_stat_activity where application_name = '" + application + "';");
    return r.exit_code == 0 ? std::stoi(r.output) : -1;
  }

  void PsqlScriptOutputMatchesDirect();
  void PgbenchInitAndSimpleExtendedPreparedModes();
  void CancelRequestReachesTheRightServerSession();

  bool unix_socket_ = false;  // the proxy reaches the server through its Unix-domain socket
  PgTarget pg_;
  std::unique_ptr<ProxyProcess> proxy_;
};

// The same proxy reaching the server through the Unix-domain socket (--server /folder:port).
class SqlProxyUnixSocketTest : public SqlProxyTest {
 protected:
  SqlProxyUnixSocketTest() { unix_socket_ = true; }
};

TEST_F(SqlProxyTest, PsqlScriptOutputMatchesDirect) { PsqlScriptOutputMatchesDirect(); }
TEST_F(SqlProxyUnixSocketTest, PsqlScriptOutputMatchesDirect) { PsqlScriptOutputMatchesDirect(); }
TEST_F(SqlProxyTest, PgbenchInitAndSimpleExtendedPreparedModes) { PgbenchInitAndSimpleExtendedPreparedModes(); }
TEST_F(SqlProxyUnixSocketTest, PgbenchInitAndSimpleExtendedPreparedModes) {
  PgbenchInitAndSimpleExtendedPreparedModes();
}
TEST_F(SqlProxyTest, CancelRequestReachesTheRightServerSession) { CancelRequestReachesTheRightServerSession(); }
TEST_F(SqlProxyUnixSocketTest, CancelRequestReachesTheRightServerSession) {
  CancelRequestReachesTheRightServerSession();
}

// A socket folder with no server in it: the client is told which socket could not be reached.
TEST(SqlProxyUnixSocketOutageTest, MissingSocketIsAClearError) {
  DTX_NEED_POSTGRES();
  const PgTarget pg = *SharedPostgres();
  const std::string folder = "/tmp/dtx-no-server-" + std::to_string(getpid());
  ProxyProcess proxy({"--server", folder + ":5999", "--connect-timeout-ms", "2000"});
  ASSERT_GT(proxy.port(), 0);
  RunResult r = Psql(proxy.port(), pg.user, pg.database, "select 1;");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("cannot reach the PostgreSQL server for database \"" + pg.database + "\" at " + folder +
                          "/.s.PGSQL.5999"),
            std::string::npos)
      << r.output;
  EXPECT_EQ(proxy.Metric("dtx_sql_proxy_errors_total{kind=\"backend_connect\"}"), 1);
}

// --server and --backend take host:port or a socket folder; what they cannot take is refused.
TEST(BackendAddressTest, TcpAndUnixSocketForms) {
  auto tcp = sql_proxy::ParseBackendAddress("db1:6000");
  ASSERT_TRUE(tcp.ok());
  EXPECT_FALSE(tcp->unix_socket());
  EXPECT_EQ(tcp->ToString(), "db1:6000");
  auto v6 = sql_proxy::ParseBackendAddress("[::1]:5432");
  ASSERT_TRUE(v6.ok());
  EXPECT_EQ(v6->host, "::1");
  auto folder = sql_proxy::ParseBackendAddress("/var/run/postgresql");
  ASSERT_TRUE(folder.ok());
  EXPECT_TRUE(folder->unix_socket());
  EXPECT_EQ(folder->ToString(), "/var/run/postgresql/.s.PGSQL.5432");
  auto with_port = sql_proxy::ParseBackendAddress("/tmp/pg.sock.d/:6001");
  ASSERT_TRUE(with_port.ok());
  EXPECT_EQ(with_port->ToString(), "/tmp/pg.sock.d/.s.PGSQL.6001");
  auto colon_in_folder = sql_proxy::ParseBackendAddress("/tmp/a:b/c");
  ASSERT_TRUE(colon_in_folder.ok());
  EXPECT_EQ(colon_in_folder->ToString(), "/tmp/a:b/c/.s.PGSQL.5432");
  EXPECT_FALSE(sql_proxy::ParseBackendAddress("/tmp/x:0").ok());
  EXPECT_FALSE(sql_proxy::ParseBackendAddress("/" + std::string(120, 'd')).ok()) << "longer than sun_path";
  EXPECT_FALSE(sql_proxy::ParseBackendAddress("db1").ok());
  EXPECT_FALSE(sql_proxy::ParseBackendAddress("db1:99999").ok());
}

// A psql script gives the same output through the proxy as directly: DDL, DML, COPY both ways,
// an error inside a transaction block and what follows it, a multi-statement query, notices.
void SqlProxyTest::PsqlScriptOutputMatchesDirect() {
  const std::string table = "proxy_psql_" + std::to_string(getpid());
  const std::string script =
      "drop table if exists " + table + ";\n"
      "create table " + table + " (id int primary key, name text, amount numeric(10,2), at timestamptz);\n"
      "insert into " + table + " values (1, 'one', 1.50, '2026-01-01T00:00:00Z'), (2, null, -3, null);\n"
      "copy " + table + " from stdin;\n3\tthree\t3.25\t2026-02-02 10:00:00+00\n4\t\\N\t0\t\\N\n\\.\n"
      "select id, coalesce(name, '<null>'), amount from " + table + " order by id;\n"
      "copy (select * from " + table + " order by id) to stdout with (format csv, header);\n"
      "begin;\n"
      "update " + table + " set amount = amount + 1 where id = 1;\n"
      "select 1/0;\n"
      "select 'ignored';\n"
      "rollback;\n"
      "select amount from " + table + " where id = 1;\n"
      "select 1 as a; select 2 as b;\n"
      "do $$ begin raise notice 'a notice from the server'; end $$;\n"
      "insert into " + table + " values (1, 'dup', 0, null);\n"
      "select count(*) from " + table + ";\n"
      "drop table " + table + ";\n";
  RunResult direct = Direct(script);
  RunResult proxied = ViaProxy(script);
  EXPECT_EQ(proxied.exit_code, direct.exit_code);
  EXPECT_EQ(proxied.output, direct.output);
  // And the output is what it should be, so that a broken server would not pass either.
  EXPECT_NE(proxied.output.find("1|one|1.50\n2|<null>|-3.00\n3|three|3.25\n4|<null>|0.00\n"), std::string::npos)
      << proxied.output;
  EXPECT_NE(proxied.output.find("id,name,amount,at\n1,one,1.50,2026-01-01 00:00:00+00\n"), std::string::npos);
  EXPECT_NE(proxied.output.find("ERROR:  division by zero"), std::string::npos);
  EXPECT_NE(proxied.output.find("ERROR:  current transaction is aborted"), std::string::npos);
  EXPECT_NE(proxied.output.find("\n1.50\n"), std::string::npos) << "the rollback kept the old amount";
  EXPECT_NE(proxied.output.find("NOTICE:  a notice from the server"), std::string::npos);
  EXPECT_NE(proxied.output.find("duplicate key value violates unique constraint"), std::string::npos);
  EXPECT_GT(proxy_->Metric("dtx_sql_proxy_server_error_responses_total"), 0);
}

// pgbench -i loads its tables with COPY; then every query mode runs transactions through the proxy.
void SqlProxyTest::PgbenchInitAndSimpleExtendedPreparedModes() {
  const std::string db = "proxy_pgbench_" + std::to_string(getpid());
  ASSERT_EQ(ViaProxy("drop database if exists " + db + "; create database " + db + ";").exit_code, 0);
  const std::string port = std::to_string(proxy_->port());
  auto init = RunProgram({PgProgram("pgbench"), "-h", "127.0.0.1", "-p", port, "-U", pg_.user, "-i", "-s", "1", "-q", db});
  ASSERT_EQ(init.exit_code, 0) << init.output;
  EXPECT_NE(init.output.find("done in"), std::string::npos) << init.output;
  EXPECT_EQ(Psql(proxy_->port(), pg_.user, db, "select count(*) from pgbench_accounts;").output, "100000\n");
  for (const char* mode : {"simple", "extended", "prepared"}) {
    for (bool select_only : {false, true}) {
      std::vector<std::string> argv = {PgProgram("pgbench"), "-h", "127.0.0.1", "-p", port, "-U", pg_.user, "-n",
                                       "-M", mode, "-c", "4", "-j", "2", "-t", "50", db};
      if (select_only) argv.insert(argv.end() - 1, "-S");
      auto r = RunProgram(argv);
      EXPECT_EQ(r.exit_code, 0) << mode << "\n" << r.output;
      EXPECT_NE(r.output.find("number of transactions actually processed: 200/200"), std::string::npos)
          << mode << "\n" << r.output;
      EXPECT_NE(r.output.find("number of failed transactions: 0 "), std::string::npos) << mode << "\n" << r.output;
    }
  }
  EXPECT_EQ(Psql(pg_.port, pg_.user, db, "select count(*) from pgbench_history;").output, "600\n");
  Direct("drop database " + db + ";");
}

// SET / SET LOCAL / RESET / SHOW dtx.xid and the leading comment, answered by the proxy.
TEST_F(SqlProxyTest, XidBindingAndShow) {
  const std::string script =
      "show dtx.xid;\n"
      "set dtx.xid = 'tc-1:42';\n"
      "show dtx.xid;\n"
      "begin;\n"
      "set local dtx.xid to 'tc-1:43';\n"
      "show dtx.xid;\n"
      "commit;\n"
      "show dtx.xid;\n"
      "set local dtx.xid = 'tc-1:44';\n"       // outside a block: a warning, no effect
      "show dtx.xid;\n"
      "begin;\n"
      "set dtx.xid = 'tc-1:45';\n"              // undone by the rollback
      "rollback;\n"
      "show dtx.xid;\n"
      "begin;\n"
      "set dtx.xid = 'tc-1:46';\n"              // kept by the commit
      "commit;\n"
      "show dtx.xid;\n"
      "reset dtx.xid;\n"
      "show dtx.xid;\n"
      "begin;\n"
      "/* dtx.xid=tc-1:47 */ select 'commented';\n"  // binds the rest of this transaction
      "show dtx.xid;\n"
      "commit;\n"
      "show dtx.xid;\n"
      "set dtx.xid = 'not valid';\n"
      "set dtx.xid = 'tc-1:48' \\; select 1;\n"  // one Query message with two statements
      "begin;\n"
      "set dtx.xid = 'bad xid';\n"              // an error inside a block fails the block
      "select 'not run';\n"
      "show dtx.xid;\n"
      "rollback;\n"
      "SHOW DTX.XID;\n"
      "select 'end';\n";
  RunResult r = ViaProxy(script);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  const std::string expected_prefix =
      "\n"
      "tc-1:42\n"
      "tc-1:43\n"
      "tc-1:42\n"
      "WARNING:  SET LOCAL can only be used in transaction blocks\n"
      "tc-1:42\n"
      "tc-1:42\n"
      "tc-1:46\n"
      "\n"
      "commented\n"
      "tc-1:47\n"
      "\n";
  EXPECT_EQ(r.output.substr(0, expected_prefix.size()), expected_prefix) << r.output;
  EXPECT_NE(r.output.find("ERROR:  dtx-sql-proxy: invalid XID \"not valid\""), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("ERROR:  dtx-sql-proxy: SET dtx.xid must be a statement of its own"), std::string::npos);
  EXPECT_NE(r.output.find("ERROR:  current transaction is aborted"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("not run"), std::string::npos) << r.output;
  EXPECT_TRUE(r.output.ends_with("\nend\n")) << r.output;
  EXPECT_GE(proxy_->Metric("dtx_sql_proxy_xid_commands_total"), 20);
  EXPECT_GE(proxy_->Metric("dtx_sql_proxy_xid_comment_statements_total"), 1);
}

// The transaction status byte the proxy writes itself matches the client's transaction.
TEST_F(SqlProxyTest, XidAnswersCarryTheTransactionStatus) {
  PGconn* c = PQconnectdb(Conninfo().c_str());
  ASSERT_EQ(PQstatus(c), CONNECTION_OK) << PQerrorMessage(c);
  auto exec = [&](const char* sql) {
    PGresult* r = PQexec(c, sql);
    const auto status = PQresultStatus(r);
    std::string value = PQntuples(r) > 0 ? PQgetvalue(r, 0, 0) : "";
    PQclear(r);
    return std::make_pair(status, value);
  };
  EXPECT_EQ(exec("SET dtx.xid = 'tc-9:1'").first, PGRES_COMMAND_OK);
  EXPECT_EQ(PQtransactionStatus(c), PQTRANS_IDLE);
  exec("BEGIN");
  auto show = exec("SHOW dtx.xid");
  EXPECT_EQ(show.first, PGRES_TUPLES_OK);
  EXPECT_EQ(show.second, "tc-9:1");
  EXPECT_EQ(PQtransactionStatus(c), PQTRANS_INTRANS);
  EXPECT_EQ(exec("SELECT 1/0").first, PGRES_FATAL_ERROR);
  EXPECT_EQ(PQtransactionStatus(c), PQTRANS_INERROR);
  EXPECT_EQ(exec("SHOW dtx.xid").first, PGRES_FATAL_ERROR);
  EXPECT_EQ(PQtransactionStatus(c), PQTRANS_INERROR);
  exec("ROLLBACK");
  EXPECT_EQ(PQtransactionStatus(c), PQTRANS_IDLE);
  // Parameters over the extended protocol, a named prepared statement with a dtx.xid comment.
  const char* values[] = {"41"};
  PGresult* r = PQexecParams(c, "SELECT $1::int + 1", 1, nullptr, values, nullptr, nullptr, 0);
  ASSERT_EQ(PQresultStatus(r), PGRES_TUPLES_OK) << PQerrorMessage(c);
  EXPECT_STREQ(PQgetvalue(r, 0, 0), "42");
  PQclear(r);
  r = PQprepare(c, "bound", "/* dtx.xid=tc-9:2 */ SELECT $1::text", 1, nullptr);
  ASSERT_EQ(PQresultStatus(r), PGRES_COMMAND_OK) << PQerrorMessage(c);
  PQclear(r);
  r = PQexecPrepared(c, "bound", 1, values, nullptr, nullptr, 0);
  ASSERT_EQ(PQresultStatus(r), PGRES_TUPLES_OK) << PQerrorMessage(c);
  EXPECT_STREQ(PQgetvalue(r, 0, 0), "41");
  PQclear(r);
  PQfinish(c);
  EXPECT_GE(proxy_->Metric("dtx_sql_proxy_xid_comment_statements_total"), 1);
}

// A bare BEGIN in an idle session is answered by the proxy and reaches the server in front of the
// session's next statement (--defer-begin, on by default): the server session stays idle until
// then, and everything else behaves as directly.
TEST_F(SqlProxyTest, HeldBeginRidesWithTheNextStatement) {
  ASSERT_EQ(Direct("DROP TABLE IF EXISTS held_begin; CREATE TABLE held_begin (id int primary key);").exit_code, 0);
  PGconn* c = PQconnectdb(Conninfo("application_name=held_begin").c_str());
  ASSERT_EQ(PQstatus(c), CONNECTION_OK) << PQerrorMessage(c);
  auto exec = [&](const char* sql) {
    PGresult* r = PQexec(c, sql);
    const auto status = PQresultStatus(r);
    std::string tag = PQcmdStatus(r);
    PQclear(r);
    return std::make_pair(status, tag);
  };
  auto server_state = [&] {
    return Direct("select state from pg_stat_activity where application_name = 'held_begin';").output;
  };
  auto rows = [&] { return Direct("select count(*) from held_begin;").output; };
  const double held0 = proxy_->Metric("dtx_sql_proxy_begins_held_total");
  ASSERT_GE(held0, 0);

  // Simple protocol: held, then sent with the INSERT; the ROLLBACK undoes it.
  EXPECT_EQ(exec("BEGIN"), std::make_pair(PGRES_COMMAND_OK, std::string("BEGIN")));
  EXPECT_EQ(PQtransactionStatus(c), PQTRANS_INTRANS);
  EXPECT_EQ(server_state(), "idle\n") << "the server has not seen the BEGIN yet";
  EXPECT_EQ(proxy_->Metric("dtx_sql_proxy_begins_held_total"), held0 + 1);
  EXPECT_EQ(exec("INSERT INTO held_begin VALUES (1)").first, PGRES_COMMAND_OK);
  EXPECT_EQ(server_state(), "idle in transaction\n");
  EXPECT_EQ(exec("ROLLBACK"), std::make_pair(PGRES_COMMAND_OK, std::string("ROLLBACK")));
  EXPECT_EQ(rows(), "0\n");
  EXPECT_EQ(PQtransactionStatus(c), PQTRANS_IDLE);
  // START TRANSACTION has its own tag; an error inside the block fails it as usual.
  EXPECT_EQ(exec("start transaction;"), std::make_pair(PGRES_COMMAND_OK, std::string("START TRANSACTION")));
  EXPECT_EQ(exec("SELECT 1/0").first, PGRES_FATAL_ERROR);
  EXPECT_EQ(PQtransactionStatus(c), PQTRANS_INERROR);
  EXPECT_EQ(exec("COMMIT").second, "ROLLBACK");
  // An empty block, and a second BEGIN inside one (not held: the server warns as usual).
  EXPECT_EQ(exec("BEGIN").first, PGRES_COMMAND_OK);
  EXPECT_EQ(exec("COMMIT"), std::make_pair(PGRES_COMMAND_OK, std::string("COMMIT")));
  const double held1 = proxy_->Metric("dtx_sql_proxy_begins_held_total");
  EXPECT_EQ(held1, held0 + 3);
  EXPECT_EQ(exec("BEGIN").first, PGRES_COMMAND_OK);
  EXPECT_EQ(exec("BEGIN").first, PGRES_COMMAND_OK);
  EXPECT_EQ(proxy_->Metric("dtx_sql_proxy_begins_held_total"), held1 + 1);
  EXPECT_EQ(exec("INSERT INTO held_begin VALUES (2)").first, PGRES_COMMAND_OK);
  EXPECT_EQ(exec("COMMIT").first, PGRES_COMMAND_OK);
  EXPECT_EQ(rows(), "1\n");

  // The extended protocol: a prepared BEGIN (Bind/Describe/Execute/Sync) and an unnamed one
  // (Parse/Bind/Describe/Execute/Sync) are held too.
  PGresult* r = PQprepare(c, "b", "BEGIN", 0, nullptr);
  ASSERT_EQ(PQresultStatus(r), PGRES_COMMAND_OK) << PQerrorMessage(c);
  PQclear(r);
  r = PQexecPrepared(c, "b", 0, nullptr, nullptr, nullptr, 0);
  EXPECT_EQ(PQresultStatus(r), PGRES_COMMAND_OK) << PQerrorMessage(c);
  EXPECT_STREQ(PQcmdStatus(r), "BEGIN");
  PQclear(r);
  EXPECT_EQ(PQtransactionStatus(c), PQTRANS_INTRANS);
  EXPECT_EQ(server_state(), "idle\n");
  EXPECT_EQ(proxy_->Metric("dtx_sql_proxy_begins_held_total"), held1 + 2);
  const char* values[] = {"3"};
  r = PQexecParams(c, "INSERT INTO held_begin VALUES ($1)", 1, nullptr, values, nullptr, nullptr, 0);
  EXPECT_EQ(PQresultStatus(r), PGRES_COMMAND_OK) << PQerrorMessage(c);
  PQclear(r);
  EXPECT_EQ(exec("ROLLBACK").first, PGRES_COMMAND_OK);
  r = PQexecParams(c, "BEGIN", 0, nullptr, nullptr, nullptr, nullptr, 0);
  EXPECT_EQ(PQresultStatus(r), PGRES_COMMAND_OK) << PQerrorMessage(c);
  PQclear(r);
  EXPECT_EQ(proxy_->Metric("dtx_sql_proxy_begins_held_total"), held1 + 3);
  r = PQexecParams(c, "INSERT INTO held_begin VALUES ($1)", 1, nullptr, values, nullptr, nullptr, 0);
  EXPECT_EQ(PQresultStatus(r), PGRES_COMMAND_OK) << PQerrorMessage(c);
  PQclear(r);
  EXPECT_EQ(exec("COMMIT").first, PGRES_COMMAND_OK);
  EXPECT_EQ(rows(), "2\n");

  // After DISCARD ALL the prepared BEGIN is gone on the server: its Bind goes there and fails
  // as it would directly, and the session goes on.
  EXPECT_EQ(exec("DISCARD ALL").first, PGRES_COMMAND_OK);
  const double held2 = proxy_->Metric("dtx_sql_proxy_begins_held_total");
  r = PQexecPrepared(c, "b", 0, nullptr, nullptr, nullptr, 0);
  EXPECT_EQ(PQresultStatus(r), PGRES_FATAL_ERROR);
  const char* state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
  EXPECT_STREQ(state ? state : "", "26000") << PQresultErrorMessage(r);
  PQclear(r);
  // The same after a DEALLOCATE sent through the extended protocol.
  r = PQprepare(c, "b", "BEGIN", 0, nullptr);
  ASSERT_EQ(PQresultStatus(r), PGRES_COMMAND_OK) << PQerrorMessage(c);
  PQclear(r);
  r = PQexecParams(c, "DEALLOCATE b", 0, nullptr, nullptr, nullptr, nullptr, 0);
  ASSERT_EQ(PQresultStatus(r), PGRES_COMMAND_OK) << PQerrorMessage(c);
  PQclear(r);
  r = PQexecPrepared(c, "b", 0, nullptr, nullptr, nullptr, 0);
  state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
  EXPECT_STREQ(state ? state : "", "26000") << PQresultErrorMessage(r);
  PQclear(r);
  // A BEGIN prepared inside a failed block was refused by the server; using it fails the same way.
  EXPECT_EQ(exec("BEGIN").first, PGRES_COMMAND_OK);
  EXPECT_EQ(exec("SELECT 1/0").first, PGRES_FATAL_ERROR);
  r = PQprepare(c, "late", "BEGIN", 0, nullptr);
  EXPECT_EQ(PQresultStatus(r), PGRES_FATAL_ERROR);
  PQclear(r);
  EXPECT_EQ(exec("ROLLBACK").first, PGRES_COMMAND_OK);
  r = PQexecPrepared(c, "late", 0, nullptr, nullptr, nullptr, 0);
  state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
  EXPECT_STREQ(state ? state : "", "26000") << PQresultErrorMessage(r);
  PQclear(r);
  EXPECT_EQ(proxy_->Metric("dtx_sql_proxy_begins_held_total"), held2 + 1) << "only the BEGIN of the failed block";
  EXPECT_EQ(PQstatus(c), CONNECTION_OK);
  EXPECT_EQ(PQtransactionStatus(c), PQTRANS_IDLE);

  // A client that leaves right after its BEGIN leaves nothing behind.
  EXPECT_EQ(exec("BEGIN").first, PGRES_COMMAND_OK);
  PQfinish(c);
  for (int i = 0; i < 100 && ServerSessions("held_begin") != 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(ServerSessions("held_begin"), 0);
  EXPECT_EQ(rows(), "2\n");
}

// --defer-begin false: every BEGIN goes to the server at once.
TEST_F(SqlProxyTest, BeginsAreNotHeldWhenTurnedOff) {
  ProxyProcess plain({"--server", pg_.host + ":" + std::to_string(pg_.port), "--defer-begin", "false"});
  ASSERT_GT(plain.port(), 0);
  PGconn* c = PQconnectdb(("host=127.0.0.1 port=" + std::to_string(plain.port()) + " user=" + pg_.user +
                           " dbname=" + pg_.database + " application_name=begin_not_held")
                              .c_str());
  ASSERT_EQ(PQstatus(c), CONNECTION_OK) << PQerrorMessage(c);
  PGresult* r = PQexec(c, "BEGIN");
  EXPECT_EQ(PQresultStatus(r), PGRES_COMMAND_OK);
  PQclear(r);
  EXPECT_EQ(Direct("select state from pg_stat_activity where application_name = 'begin_not_held';").output,
            "idle in transaction\n");
  r = PQexec(c, "COMMIT");
  EXPECT_EQ(PQresultStatus(r), PGRES_COMMAND_OK);
  PQclear(r);
  PQfinish(c);
  EXPECT_EQ(plain.Metric("dtx_sql_proxy_begins_held_total"), 0);
}

// A held BEGIN that the server refuses after all (here: a prepared BEGIN dropped by a function,
// out of the proxy's sight) ends that session with FATAL and the server's reason; other sessions
// go on.
TEST_F(SqlProxyTest, HeldBeginRefusedByTheServerEndsTheSession) {
  ASSERT_EQ(Direct("CREATE OR REPLACE FUNCTION held_begin_drop(name text) RETURNS void LANGUAGE plpgsql AS "
                   "$$BEGIN EXECUTE 'DEALLOC' || 'ATE ' || quote_ident(name); END$$;")
                .exit_code,
            0);
  PGconn* c = PQconnectdb(Conninfo().c_str());
  ASSERT_EQ(PQstatus(c), CONNECTION_OK) << PQerrorMessage(c);
  PGresult* r = PQprepare(c, "b", "BEGIN", 0, nullptr);
  ASSERT_EQ(PQresultStatus(r), PGRES_COMMAND_OK) << PQerrorMessage(c);
  PQclear(r);
  r = PQexec(c, "SELECT held_begin_drop('b')");
  ASSERT_EQ(PQresultStatus(r), PGRES_TUPLES_OK) << PQerrorMessage(c);
  PQclear(r);
  r = PQexecPrepared(c, "b", 0, nullptr, nullptr, nullptr, 0);
  EXPECT_EQ(PQresultStatus(r), PGRES_COMMAND_OK) << "answered by the proxy";
  PQclear(r);
  r = PQexec(c, "SELECT 1");
  EXPECT_EQ(PQresultStatus(r), PGRES_FATAL_ERROR);
  const std::string message = PQerrorMessage(c);
  EXPECT_NE(message.find("refused the BEGIN"), std::string::npos) << message;
  EXPECT_NE(message.find("does not exist"), std::string::npos) << message;
  PQclear(r);
  EXPECT_EQ(PQstatus(c), CONNECTION_BAD);
  PQfinish(c);
  EXPECT_EQ(ViaProxy("select 'still serving';").output, "still serving\n");
}

// A long query is cancelled by a CancelRequest sent to the proxy on a new connection: the client
// holds the proxy's key, which the proxy maps to the server's.
void SqlProxyTest::CancelRequestReachesTheRightServerSession() {
  PGconn* c = PQconnectdb(Conninfo("application_name=proxy_cancel").c_str());
  ASSERT_EQ(PQstatus(c), CONNECTION_OK) << PQerrorMessage(c);
  const int server_pid = [&] {
    PGresult* r = PQexec(c, "select pg_backend_pid()");
    int pid = std::atoi(PQgetvalue(r, 0, 0));
    PQclear(r);
    return pid;
  }();
  EXPECT_NE(PQbackendPID(c), server_pid) << "the client holds the proxy's key, not the server's";
  // The server session came over the socket asked for (no client address: the Unix socket).
  EXPECT_EQ(Direct("select client_addr is null from pg_stat_activity where pid = " + std::to_string(server_pid) + ";")
                .output,
            unix_socket_ ? "t\n" : "f\n");
  ASSERT_EQ(PQsendQuery(c, "select pg_sleep(60)"), 1);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  PGcancel* cancel = PQgetCancel(c);
  char err[256];
  EXPECT_EQ(PQcancel(cancel, err, sizeof err), 1) << err;
  PQfreeCancel(cancel);
  PGresult* r = PQgetResult(c);
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(PQresultStatus(r), PGRES_FATAL_ERROR);
  const char* state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
  EXPECT_STREQ(state ? state : "", "57014") << PQresultErrorMessage(r);
  PQclear(r);
  while ((r = PQgetResult(c)) != nullptr) PQclear(r);
  // The session goes on.
  r = PQexec(c, "select 'still here'");
  EXPECT_EQ(PQresultStatus(r), PGRES_TUPLES_OK);
  PQclear(r);
  PQfinish(c);
  EXPECT_EQ(proxy_->Metric("dtx_sql_proxy_cancel_requests_total"), 1);

  // A key nobody holds cancels nothing.
  RawClient stray(proxy_->port());
  stray.Send(sql_proxy::CancelRequestPacket({123456, 42}));
  EXPECT_EQ(stray.ReadUntilClose(), "");
  EXPECT_EQ(proxy_->Metric("dtx_sql_proxy_cancel_requests_unmatched_total"), 1);
}

// Bad input ends that session only, with an ErrorResponse where one can be sent.
TEST_F(SqlProxyTest, MalformedStartupPacketsGetAnErrorAndTheProxyGoesOn) {
  {
    RawClient c(proxy_->port());
    std::string bad;
    AppendInt32(bad, 4);  // below the 8 bytes of any startup packet
    c.Send(bad);
    auto errors = ErrorMessages(c.ReadUntilClose());
    ASSERT_EQ(errors.size(), 1u);
    EXPECT_EQ(errors[0].substr(0, 5), "08P01");
  }
  {
    RawClient c(proxy_->port());
    std::string v2;
    AppendInt32(v2, 8);
    AppendInt32(v2, 2 << 16);
    c.Send(v2);
    auto errors = ErrorMessages(c.ReadUntilClose());
    ASSERT_EQ(errors.size(), 1u);
    EXPECT_NE(errors[0].find("unsupported frontend protocol 2.0"), std::string::npos) << errors[0];
  }
  {
    RawClient c(proxy_->port());
    c.Send(std::string("\xff\xff\xff\xff garbage", 12));
    EXPECT_EQ(ErrorMessages(c.ReadUntilClose()).size(), 1u);
  }
  {
    RawClient c(proxy_->port());
    c.Send(std::string("\0\0\0\x30partial", 11));  // then the client leaves
  }
  {
    // GSSENCRequest and SSLRequest are answered 'N', and the startup goes on in the clear.
    RawClient c(proxy_->port());
    std::string gss;
    AppendInt32(gss, 8);
    AppendInt32(gss, static_cast<int32_t>(sql_proxy::kGssEncRequestCode));
    c.Send(gss);
    std::string gss_answer;
    ASSERT_TRUE(ReadExactly(c, 1, gss_answer));
    EXPECT_EQ(gss_answer, "N");
    std::string ssl;
    AppendInt32(ssl, 8);
    AppendInt32(ssl, static_cast<int32_t>(sql_proxy::kSslRequestCode));
    c.Send(ssl);
    std::string answer;
    ASSERT_EQ(ReadExactly(c, 1, answer), true);
    EXPECT_EQ(answer, "N");
    c.Send(sql_proxy::StartupPacket({{"user", pg_.user}, {"database", pg_.database}}));
    EXPECT_TRUE(c.ReadUntilMessage('Z'));
  }
  EXPECT_EQ(ViaProxy("select 'alive';").output, "alive\n");
  EXPECT_GE(proxy_->Metric("dtx_sql_proxy_errors_total{kind=\"client_protocol\"}"), 3);
}

TEST_F(SqlProxyTest, OversizedMessageEndsTheSessionWithAnError) {
  auto c = RawSession("proxy_oversized");
  EXPECT_EQ(ServerSessions("proxy_oversized"), 1);
  std::string huge = "Q";
  AppendInt32(huge, 0x7ffffff0);
  c->Send(huge + "select 1");
  auto errors = ErrorMessages(c->ReadUntilClose());
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0].substr(0, 5), "08P01");
  EXPECT_NE(errors[0].find("over the limit"), std::string::npos) << errors[0];
  // The server session behind it is gone too.
  for (int i = 0; i < 50 && ServerSessions("proxy_oversized") != 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_EQ(ServerSessions("proxy_oversized"), 0);
  EXPECT_EQ(ViaProxy("select 'alive';").output, "alive\n");
}

TEST_F(SqlProxyTest, ClientDisconnectInTheMiddleOfAMessage) {
  auto c = RawSession("proxy_midmessage");
  std::string q = "Q";
  AppendInt32(q, 4 + 100);
  c->Send(q + "select 'only part of the");
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  c->Close();
  for (int i = 0; i < 50 && ServerSessions("proxy_midmessage") != 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_EQ(ServerSessions("proxy_midmessage"), 0);
  EXPECT_EQ(proxy_->Metric("dtx_sql_proxy_errors_total{kind=\"client_lost\"}"), 1);
  EXPECT_EQ(ViaProxy("select 'alive';").output, "alive\n");
}

TEST_F(SqlProxyTest, ServerEndingASessionIsRelayed) {
  PGconn* c = PQconnectdb(Conninfo("application_name=proxy_terminated").c_str());
  ASSERT_EQ(PQstatus(c), CONNECTION_OK) << PQerrorMessage(c);
  auto killed = Direct("select pg_terminate_backend(pid) from pg_stat_activity where application_name = 'proxy_terminated';");
  EXPECT_EQ(killed.output, "t\n");
  PGresult* r = PQexec(c, "select 1");
  EXPECT_NE(PQresultStatus(r), PGRES_TUPLES_OK);
  PQclear(r);
  EXPECT_NE(std::string(PQerrorMessage(c)).find("terminating connection due to administrator command"),
            std::string::npos)
      << PQerrorMessage(c);
  PQfinish(c);
  EXPECT_EQ(ViaProxy("select 'alive';").output, "alive\n");
}

TEST_F(SqlProxyTest, MetricsAndHealthEndpoints) {
  ASSERT_EQ(ViaProxy("select 1;").exit_code, 0);
  const std::string metrics = HttpGet(proxy_->admin_port(), "/metrics");
  EXPECT_NE(metrics.find("HTTP/1.1 200"), std::string::npos);
  EXPECT_NE(metrics.find("# TYPE dtx_sql_proxy_sessions_total counter"), std::string::npos);
  EXPECT_GE(proxy_->Metric("dtx_sql_proxy_sessions_total"), 1);
  EXPECT_GT(proxy_->Metric("dtx_sql_proxy_bytes_total{direction=\"client_to_server\"}"), 0);
  EXPECT_GT(proxy_->Metric("dtx_sql_proxy_messages_total{direction=\"server_to_client\"}"), 0);
  for (int i = 0; i < 50 && proxy_->Metric("dtx_sql_proxy_sessions_active") != 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));  // psql has left; its session ends soon after
  }
  EXPECT_EQ(proxy_->Metric("dtx_sql_proxy_sessions_active"), 0);
  EXPECT_NE(HttpGet(proxy_->admin_port(), "/healthz").find("200 OK"), std::string::npos);
  EXPECT_NE(HttpGet(proxy_->admin_port(), "/nothing").find("404"), std::string::npos);
}

// SIGTERM: no new sessions, the open one finishes its transaction, then the process exits 0.
TEST_F(SqlProxyTest, GracefulShutdownLetsOpenSessionsFinish) {
  const std::string table = "proxy_shutdown_" + std::to_string(getpid());
  ASSERT_EQ(Direct("create table " + table + " (a int);").exit_code, 0);
  PGconn* c = PQconnectdb(Conninfo().c_str());
  ASSERT_EQ(PQstatus(c), CONNECTION_OK);
  PQclear(PQexec(c, "begin"));
  PQclear(PQexec(c, ("insert into " + table + " values (1)").c_str()));
  kill(proxy_->process().pid(), SIGTERM);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  PGconn* late = PQconnectdb(Conninfo("connect_timeout=3").c_str());
  EXPECT_NE(PQstatus(late), CONNECTION_OK) << "a new session after SIGTERM";
  PQfinish(late);
  PGresult* r = PQexec(c, "commit");
  EXPECT_EQ(PQresultStatus(r), PGRES_COMMAND_OK) << PQerrorMessage(c);
  PQclear(r);
  PQfinish(c);
  const int status = proxy_->Terminate();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  EXPECT_EQ(Direct("select count(*) from " + table + "; drop table " + table + ";").output, "1\n");
}

TEST_F(SqlProxyTest, ShutdownEndsSessionsLeftOpenAfterTheGrace) {
  proxy_ = std::make_unique<ProxyProcess>(std::vector<std::string>{
      "--server", pg_.host + ":" + std::to_string(pg_.port), "--shutdown-grace-ms", "300"});
  PGconn* c = PQconnectdb(Conninfo().c_str());
  ASSERT_EQ(PQstatus(c), CONNECTION_OK);
  const int status = proxy_->Terminate();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  PGresult* r = PQexec(c, "select 1");
  EXPECT_NE(PQresultStatus(r), PGRES_TUPLES_OK);
  PQclear(r);
  EXPECT_NE(std::string(PQerrorMessage(c)).find("shutting down"), std::string::npos) << PQerrorMessage(c);
  PQfinish(c);
}

// CPU seconds (user + system) a process has used so far, from /proc/<pid>/stat; -1 if unreadable.
double CpuSeconds(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const size_t close = stat.rfind(')');  // the command name may hold blanks
  if (close == std::string::npos) return -1;
  std::istringstream fields(stat.substr(close + 2));
  std::string field;
  double ticks = 0;
  for (int k = 3; k <= 15 && fields >> field; ++k) {
    if (k == 14 || k == 15) ticks += std::stod(field);  // utime, stime
  }
  return ticks / static_cast<double>(sysconf(_SC_CLK_TCK));
}

// --busy-poll-us: a worker that polls before it sleeps relays several sessions' statements and
// transactions as usual, sleeps once nothing is going on, and stops on SIGTERM.
TEST_F(SqlProxyTest, BusyPollingWorkersRelayAndSleepWhenIdle) {
  proxy_ = std::make_unique<ProxyProcess>(std::vector<std::string>{
      "--server", pg_.host + ":" + std::to_string(pg_.port), "--busy-poll-us", "500"});
  const std::string table = "proxy_busy_poll_" + std::to_string(getpid());
  ASSERT_EQ(Direct("create table " + table + " (session int, n int);").exit_code, 0);
  std::vector<PGconn*> sessions;
  for (int k = 0; k < 3; ++k) {
    sessions.push_back(PQconnectdb(Conninfo().c_str()));
    ASSERT_EQ(PQstatus(sessions.back()), CONNECTION_OK) << PQerrorMessage(sessions.back());
  }
  for (int n = 0; n < 50; ++n) {
    for (size_t k = 0; k < sessions.size(); ++k) {
      PGconn* c = sessions[k];
      const std::string insert = "insert into " + table + " values (" + std::to_string(k) + ", " + std::to_string(n) + ")";
      for (const std::string& sql : {std::string("begin"), insert, std::string("commit")}) {
        PGresult* r = PQexec(c, sql.c_str());
        ASSERT_EQ(PQresultStatus(r), PGRES_COMMAND_OK) << sql << ": " << PQerrorMessage(c);
        PQclear(r);
      }
      PGresult* r = PQexec(c, ("select count(*) from " + table + " where session = " + std::to_string(k)).c_str());
      ASSERT_EQ(PQresultStatus(r), PGRES_TUPLES_OK) << PQerrorMessage(c);
      EXPECT_EQ(std::string(PQgetvalue(r, 0, 0)), std::to_string(n + 1));
      PQclear(r);
    }
  }
  // Sessions open, nothing to relay: the worker sleeps (a spinning one would use the whole second).
  const pid_t pid = proxy_->process().pid();
  const double before = CpuSeconds(pid);
  std::this_thread::sleep_for(std::chrono::seconds(1));
  const double idle = CpuSeconds(pid) - before;
  ASSERT_GE(before, 0);
  EXPECT_LT(idle, 0.5) << "CPU seconds of an idle polling proxy over one second";
  for (PGconn* c : sessions) PQfinish(c);
  const int status = proxy_->Terminate();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  EXPECT_EQ(Direct("select count(*) from " + table + "; drop table " + table + ";").output, "150\n");
}

// node-postgres: parameters, named prepared statements, transactions, an error in a block, COPY.
TEST_F(SqlProxyTest, NodePgClient) {
  const std::string dir = DTX_SQL_PROXY_NODE_DIR;
  auto r = RunProgram({"node", dir + "/pg_client.js", "--port", std::to_string(proxy_->port()), "--user", pg_.user,
                "--database", pg_.database});
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find(" passed, 0 failed"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("FAIL"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace dtx::testing
