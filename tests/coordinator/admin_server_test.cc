// The HTTP admin as an operator's tools see it: a real socket, a real HTTP client, and an
// in-process Coordinator over a MemoryLogStore seeded with transactions.
#include "dtx/coordinator/admin_server.h"

#include <gtest/gtest.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <nlohmann/json.hpp>

#include <chrono>
#include <map>
#include <memory>
#include <set>
#include <string>

#include "dtx/coordinator/coordinator.h"
#include "dtx/log/memory_log_store.h"
#include "dtx/rpc/service_registry.h"

namespace dtx::coordinator {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using json = nlohmann::json;
using log::BranchRecord;
using log::BranchStatus;
using log::BranchType;
using log::GlobalRecord;
using log::GlobalStatus;

struct Reply {
  int status = 0;
  std::string content_type;
  std::string body;
  bool keep_alive = false;

  json Json() const { return json::parse(body); }
};

// A tiny blocking HTTP/1.1 client over one connection.
class Client {
 public:
  explicit Client(uint16_t port) : socket_(io_) { socket_.connect({asio::ip::make_address("127.0.0.1"), port}); }

  Reply Send(http::verb method, const std::string& target, const std::map<std::string, std::string>& headers = {},
             std::string body = "") {
    http::request<http::string_body> req{method, target, 11};
    req.set(http::field::host, "127.0.0.1");
    for (const auto& [name, value] : headers) req.set(name, value);
    req.body() = std::move(body);
    req.prepare_payload();
    http::write(socket_, req);
    return Read();
  }
  Reply Get(const std::string& target) { return Send(http::verb::get, target); }
  Reply Post(const std::string& target, const std::string& op) {
    std::map<std::string, std::string> headers;
    if (!op.empty()) headers["X-Operator"] = op;
    return Send(http::verb::post, target, headers);
  }

  void WriteRaw(std::string_view bytes) { asio::write(socket_, asio::buffer(bytes)); }

  Reply Read() {
    http::response_parser<http::string_body> parser;
    parser.body_limit(16 << 20);
    http::read(socket_, buffer_, parser);
    const auto& res = parser.get();
    return {static_cast<int>(res.result_int()), std::string(res[http::field::content_type]), res.body(),
            res.keep_alive()};
  }

  // True once the server has closed the connection (reads return end of stream).
  bool ClosedByServer() {
    char c;
    boost::system::error_code ec;
    socket_.read_some(asio::buffer(&c, 1), ec);
    return ec == asio::error::eof || ec == asio::error::connection_reset;
  }

 private:
  asio::io_context io_;
  tcp::socket socket_;
  beast::flat_buffer buffer_;
};

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

class AdminServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    store_ = std::make_shared<log::MemoryLogStore>();
    metrics_ = std::make_shared<Metrics>();
    coordinator_ = std::make_unique<Coordinator>(CoordinatorOptions{}, store_, metrics_);
    admin_ = std::make_unique<AdminServer>(AdminOptions{.host = "127.0.0.1", .port = 0}, *coordinator_, *metrics_);
    Status s = admin_->Start();
    ASSERT_TRUE(s.ok()) << s;
    ASSERT_NE(admin_->port(), 0);
  }

  void TearDown() override {
    admin_.reset();
    coordinator_.reset();
  }

  void Insert(GlobalRecord g, std::vector<BranchRecord> branches = {}) {
    log::Batch batch;
    const std::string xid = g.xid;
    batch.Insert(std::move(g));
    for (auto& b : branches) {
      b.xid = xid;
      const int64_t id = b.branch_id;
      std::vector<std::string> keys;
      for (size_t start = 0; !b.lock_keys.empty() && start <= b.lock_keys.size();) {
        const size_t end = std::min(b.lock_keys.find(';', start), b.lock_keys.size());
        keys.push_back(b.lock_keys.substr(start, end - start));
        start = end + 1;
      }
      batch.Insert(std::move(b));
      if (!keys.empty()) batch.Lock(xid, id, std::move(keys));
    }
    log::WriteResult r = store_->WriteSync(std::move(batch));
    ASSERT_TRUE(r.ok()) << r.status;
  }

  static GlobalRecord Txn(std::string xid, GlobalStatus status) {
    GlobalRecord g;
    g.xid = std::move(xid);
    g.status = status;
    g.name = "transfer";
    g.application = "bank";
    g.timeout_ms = 600'000;
    g.begin_time_ms = NowMs();
    g.owner_node = "tc-1";
    g.updated_time_ms = g.begin_time_ms;
    return g;
  }

  // tc-1:1 CommitFailed with a TCC branch and an AT branch holding two row locks; tc-1:2
  // RollbackFailed; tc-1:3 still in Begin; tc-1:4 CommitFailed, begun long ago.
  void SeedAndRecover() {
    BranchRecord tcc;
    tcc.branch_id = 11;
    tcc.resource_id = "accounts";
    tcc.type = BranchType::kTCC;
    tcc.status = BranchStatus::kPhaseTwoCommitFailedRetryable;
    tcc.application_data = "12345";
    tcc.client_id = "bank-1";
    tcc.registered_time_ms = 1000;
    BranchRecord at;
    at.branch_id = 12;
    at.resource_id = "pg/orders";
    at.type = BranchType::kAT;
    at.status = BranchStatus::kPhaseOneDone;
    at.lock_keys = "pg/orders:order:1;pg/orders:order:2";
    at.client_id = "proxy-1";
    at.registered_time_ms = 2000;
    Insert(Txn("tc-1:1", GlobalStatus::kCommitFailed), {tcc, at});
    Insert(Txn("tc-1:2", GlobalStatus::kRollbackFailed));
    Insert(Txn("tc-1:3", GlobalStatus::kBegin));
    GlobalRecord old = Txn("tc-1:4", GlobalStatus::kCommitFailed);
    old.begin_time_ms = 1000;
    Insert(old);
    Status s = coordinator_->Recover();
    ASSERT_TRUE(s.ok()) << s;
  }

  std::vector<std::string> Xids(const json& page) {
    std::vector<std::string> out;
    for (const auto& t : page["transactions"]) out.push_back(t["xid"]);
    return out;
  }

  std::shared_ptr<log::MemoryLogStore> store_;
  std::shared_ptr<Metrics> metrics_;
  std::unique_ptr<Coordinator> coordinator_;
  std::unique_ptr<AdminServer> admin_;
};

TEST_F(AdminServerTest, HealthyAtOnceReadyOnlyAfterRecovery) {
  Client c(admin_->port());
  Reply health = c.Get("/healthz");
  EXPECT_EQ(health.status, 200);
  EXPECT_EQ(health.body, "ok\n");
  EXPECT_EQ(health.content_type, "text/plain");

  Reply before = c.Get("/readyz");
  EXPECT_EQ(before.status, 503);
  EXPECT_EQ(before.body, "recovering\n");

  SeedAndRecover();
  Reply after = c.Get("/readyz");  // the same connection: keep-alive
  EXPECT_EQ(after.status, 200);
  EXPECT_EQ(after.body, "ready\n");
  EXPECT_TRUE(after.keep_alive);
}

TEST_F(AdminServerTest, MetricsInPrometheusFormatWithActiveTransactions) {
  SeedAndRecover();
  metrics_->transactions_begun.Add(7);
  Reply r = Client(admin_->port()).Get("/metrics");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.content_type, "text/plain; version=0.0.4");
  EXPECT_NE(r.body.find("\ndtx_transactions_begun_total 7\n"), std::string::npos) << r.body;
  EXPECT_NE(r.body.find("# TYPE dtx_active_transactions gauge\ndtx_active_transactions 4\n"), std::string::npos)
      << r.body;
}

TEST_F(AdminServerTest, MetricsTimeCoordinatorCallsByMethod) {
  SeedAndRecover();
  auto observer = MakeCallObserver(metrics_);
  observer->Answered(kCoordinatorService, "Begin", std::chrono::microseconds(300));
  observer->Answered("some.other.Service:1.0", "Begin", std::chrono::microseconds(300));  // not the coordinator's
  observer->Delivered(std::chrono::microseconds(40), true);
  observer->Delivered(std::chrono::nanoseconds(0), false);
  Reply r = Client(admin_->port()).Get("/metrics");
  EXPECT_NE(r.body.find("\ndtx_call_seconds_bucket{method=\"Begin\",le=\"0.00025\"} 0\n"), std::string::npos) << r.body;
  EXPECT_NE(r.body.find("\ndtx_call_seconds_bucket{method=\"Begin\",le=\"0.0005\"} 1\n"), std::string::npos) << r.body;
  EXPECT_NE(r.body.find("\ndtx_call_seconds_count{method=\"Begin\"} 1\n"), std::string::npos) << r.body;
  EXPECT_NE(r.body.find("\ndtx_call_seconds_count{method=\"Commit\"} 0\n"), std::string::npos) << r.body;
  EXPECT_NE(r.body.find("\ndtx_rpc_reply_handoff_seconds_count 1\n"), std::string::npos) << r.body;
  EXPECT_NE(r.body.find("\ndtx_rpc_replies_written_directly_total 1\n"), std::string::npos) << r.body;
}

TEST_F(AdminServerTest, ListsByStatusAPageAtATime) {
  SeedAndRecover();
  Client c(admin_->port());

  Reply all = c.Get("/api/v1/transactions");
  ASSERT_EQ(all.status, 200) << all.body;
  EXPECT_EQ(all.content_type, "application/json");
  EXPECT_EQ(Xids(all.Json()), (std::vector<std::string>{"tc-1:1", "tc-1:2", "tc-1:3", "tc-1:4"}));
  EXPECT_EQ(all.Json()["next_after"], "");

  const json first = all.Json()["transactions"][0];
  EXPECT_EQ(first["status"], "CommitFailed");
  EXPECT_EQ(first["status_code"], 10);
  EXPECT_EQ(first["name"], "transfer");
  EXPECT_EQ(first["application"], "bank");
  EXPECT_EQ(first["timeout_ms"], 600'000);
  EXPECT_EQ(first["owner_node"], "tc-1");
  EXPECT_GT(first["begin_time_ms"].get<int64_t>(), 0);
  EXPECT_GT(first["updated_time_ms"].get<int64_t>(), 0);

  // Names in any case; pages of one, following next_after until it is empty.
  std::vector<std::string> seen;
  std::string after;
  for (int pages = 0; pages < 10; ++pages) {
    Reply r = c.Get("/api/v1/transactions?status=commitfailed,ROLLBACKFAILED&limit=1" +
                    (after.empty() ? "" : "&after=" + after));
    ASSERT_EQ(r.status, 200) << r.body;
    auto page = r.Json();
    ASSERT_LE(page["transactions"].size(), 1u);
    for (auto& x : Xids(page)) seen.push_back(x);
    after = page["next_after"];
    if (after.empty()) break;
  }
  EXPECT_EQ(seen, (std::vector<std::string>{"tc-1:1", "tc-1:2", "tc-1:4"}));

  Reply old = c.Get("/api/v1/transactions?status=CommitFailed&begun_before_ms=5000");
  ASSERT_EQ(old.status, 200) << old.body;
  EXPECT_EQ(Xids(old.Json()), (std::vector<std::string>{"tc-1:4"}));
}

TEST_F(AdminServerTest, RejectsABadFilter) {
  SeedAndRecover();
  Client c(admin_->port());
  Reply unknown = c.Get("/api/v1/transactions?status=CommitFailed,Exploded");
  EXPECT_EQ(unknown.status, 400);
  EXPECT_NE(unknown.Json()["error"].get<std::string>().find("Exploded"), std::string::npos);
  EXPECT_EQ(c.Get("/api/v1/transactions?limit=0").status, 400);
  EXPECT_EQ(c.Get("/api/v1/transactions?limit=ten").status, 400);
  EXPECT_EQ(c.Get("/api/v1/transactions?begun_before_ms=yesterday").status, 400);
  EXPECT_EQ(c.Get("/api/v1/transactions?statuses=Begin").status, 400);
  EXPECT_EQ(c.Get("/api/v1/transactions?limit=100000").status, 200);  // capped, not refused
}

TEST_F(AdminServerTest, ShowsOneTransactionWithBranchesAndLocks) {
  SeedAndRecover();
  Client c(admin_->port());
  Reply r = c.Get("/api/v1/transactions/tc-1%3A1");  // ':' percent-encoded
  ASSERT_EQ(r.status, 200) << r.body;
  const json t = r.Json();
  EXPECT_EQ(t["xid"], "tc-1:1");
  EXPECT_EQ(t["status"], "CommitFailed");
  ASSERT_EQ(t["branches"].size(), 2u);
  const json& tcc = t["branches"][0];
  EXPECT_EQ(tcc["branch_id"], 11);
  EXPECT_EQ(tcc["resource_id"], "accounts");
  EXPECT_EQ(tcc["type"], "TCC");
  EXPECT_EQ(tcc["status"], "PhaseTwoCommitFailedRetryable");
  EXPECT_EQ(tcc["client_id"], "bank-1");
  EXPECT_EQ(tcc["registered_time_ms"], 1000);
  EXPECT_EQ(tcc["application_data_size"], 5);
  const json& at = t["branches"][1];
  EXPECT_EQ(at["type"], "AT");
  EXPECT_EQ(at["lock_keys"], "pg/orders:order:1;pg/orders:order:2");
  EXPECT_EQ(t["locks"], json::parse(R"([{"row_key": "pg/orders:order:1", "branch_id": 12},
                                        {"row_key": "pg/orders:order:2", "branch_id": 12}])"));

  Reply raw = c.Get("/api/v1/transactions/tc-1:1");  // ':' as is
  EXPECT_EQ(raw.status, 200);
  EXPECT_EQ(raw.Json()["xid"], "tc-1:1");
}

TEST_F(AdminServerTest, UnknownTransactionIsNotFound) {
  SeedAndRecover();
  Client c(admin_->port());
  Reply r = c.Get("/api/v1/transactions/tc-1%3A99");
  EXPECT_EQ(r.status, 404);
  EXPECT_NE(r.Json()["error"].get<std::string>().find("tc-1:99"), std::string::npos);
  EXPECT_EQ(c.Post("/api/v1/transactions/tc-1:99/retry", "alice").status, 404);
  EXPECT_EQ(c.Get("/api/v1/transactions/tc-1%3").status, 400);  // a broken escape
}

TEST_F(AdminServerTest, RetryNeedsAnOperatorAndAFailedTransaction) {
  SeedAndRecover();
  Client c(admin_->port());
  Reply anonymous = c.Post("/api/v1/transactions/tc-1:1/retry", "");
  EXPECT_EQ(anonymous.status, 400);
  EXPECT_NE(anonymous.Json()["error"].get<std::string>().find("X-Operator"), std::string::npos);
  EXPECT_EQ(c.Post("/api/v1/transactions/tc-1:1/retry", "   ").status, 400);

  Reply ok = c.Post("/api/v1/transactions/tc-1%3A1/retry", "alice");
  ASSERT_EQ(ok.status, 200) << ok.body;
  EXPECT_EQ(ok.Json(), json::parse(R"({"ok": true})"));
  const std::string now = c.Get("/api/v1/transactions/tc-1:1").Json()["status"];
  EXPECT_TRUE(now == "Committing" || now == "CommitRetrying") << now;

  Reply again = c.Post("/api/v1/transactions/tc-1:1/retry", "alice");  // no longer failed
  EXPECT_EQ(again.status, 409);
  EXPECT_NE(again.Json()["error"].get<std::string>().find("failed"), std::string::npos);

  Reply begun = c.Post("/api/v1/transactions/tc-1:3/force-rollback", "alice");
  EXPECT_EQ(begun.status, 409);
}

TEST_F(AdminServerTest, ForceTheOutcomeOfItsOwnFamilyOnly) {
  SeedAndRecover();
  Client c(admin_->port());
  EXPECT_EQ(c.Post("/api/v1/transactions/tc-1:2/force-rollback", "").status, 400);

  Reply cross = c.Post("/api/v1/transactions/tc-1:2/force-commit", "bob");  // RollbackFailed
  EXPECT_EQ(cross.status, 409);
  EXPECT_EQ(c.Get("/api/v1/transactions/tc-1:2").Json()["status"], "RollbackFailed");

  Reply forced = c.Post("/api/v1/transactions/tc-1:2/force-rollback", "bob");
  ASSERT_EQ(forced.status, 200) << forced.body;
  EXPECT_EQ(c.Get("/api/v1/transactions/tc-1:2").status, 404);  // finished, out of the log

  Reply committed = c.Post("/api/v1/transactions/tc-1:1/force-commit", "bob");
  ASSERT_EQ(committed.status, 200) << committed.body;
  EXPECT_EQ(c.Get("/api/v1/transactions/tc-1:1").status, 404);
  EXPECT_TRUE(store_->FindLocks({"pg/orders:order:1"})->empty());
}

TEST_F(AdminServerTest, UnknownPathsAndWrongMethods) {
  SeedAndRecover();
  Client c(admin_->port());
  EXPECT_EQ(c.Get("/").status, 404);
  EXPECT_EQ(c.Get("/nope").status, 404);
  EXPECT_EQ(c.Get("/healthz/extra").status, 404);
  EXPECT_EQ(c.Post("/api/v1/transactions/tc-1:1/explode", "alice").status, 404);
  EXPECT_EQ(c.Get("/api/v2/transactions").status, 404);
  EXPECT_EQ(c.Send(http::verb::delete_, "/healthz").status, 405);
  EXPECT_EQ(c.Send(http::verb::post, "/api/v1/transactions").status, 405);
  Reply get_action = c.Get("/api/v1/transactions/tc-1:1/retry");
  EXPECT_EQ(get_action.status, 405);
  EXPECT_EQ(c.Get("/healthz").status, 200);  // the connection still serves
}

TEST_F(AdminServerTest, ABodyOver64KiBIsRefused) {
  SeedAndRecover();
  Client c(admin_->port());
  Reply r = c.Send(http::verb::post, "/api/v1/transactions/tc-1:1/retry", {{"X-Operator", "alice"}},
                   std::string(65 * 1024, 'x'));
  EXPECT_EQ(r.status, 413);
  EXPECT_FALSE(r.keep_alive);
  EXPECT_TRUE(c.ClosedByServer());
  EXPECT_EQ(Client(admin_->port()).Get("/api/v1/transactions/tc-1:1").Json()["status"], "CommitFailed");
}

TEST_F(AdminServerTest, AMalformedRequestDoesNotStopTheServer) {
  {
    Client bad(admin_->port());
    bad.WriteRaw("GARBAGE\r\n\r\n");
    Reply r = bad.Read();
    EXPECT_EQ(r.status, 400);
    EXPECT_TRUE(bad.ClosedByServer());
  }
  {
    Client cut(admin_->port());
    cut.WriteRaw("GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc");
  }  // closed mid-body
  {
    Client bad(admin_->port());
    bad.WriteRaw("GET /healthz HTTP/1.1\r\nBroken header line\r\n\r\n");
    EXPECT_EQ(bad.Read().status, 400);
  }
  Client good(admin_->port());
  EXPECT_EQ(good.Get("/healthz").status, 200);
}

TEST_F(AdminServerTest, StopClosesIdleConnectionsAndFreesThePort) {
  Client idle(admin_->port());
  ASSERT_EQ(idle.Get("/healthz").status, 200);
  const uint16_t port = admin_->port();
  const auto start = std::chrono::steady_clock::now();
  admin_->Stop();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
  EXPECT_TRUE(idle.ClosedByServer());
  EXPECT_EQ(admin_->port(), 0);

  AdminServer again(AdminOptions{.host = "127.0.0.1", .port = port}, *coordinator_, *metrics_);
  Status s = again.Start();
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(Client(port).Get("/healthz").status, 200);
}

TEST_F(AdminServerTest, StartFailsClearlyWhenThePortIsTaken) {
  AdminServer second(AdminOptions{.host = "127.0.0.1", .port = admin_->port()}, *coordinator_, *metrics_);
  Status s = second.Start();
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.ToString().find("cannot listen on 127.0.0.1:" + std::to_string(admin_->port()) +
                              ": Address already in use"),
            std::string::npos)
      << s;
  second.Stop();  // harmless when it never started
}

}  // namespace
}  // namespace dtx::coordinator
