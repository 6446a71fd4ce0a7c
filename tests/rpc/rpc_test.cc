// The Bolt server and client over real loopback sockets.
#include <gtest/gtest.h>
#include <sys/resource.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>

#include <atomic>
#include <future>
#include <mutex>
#include <thread>

#include "dtx/rpc/bolt_codec.h"
#include "dtx/rpc/client.h"
#include "dtx/rpc/server.h"
#include "echo.pb.h"
#include "echo_service.h"

namespace dtx::rpc {
namespace {

using namespace std::chrono_literals;
using com::alipay::sofa::rpc::test::EchoRequest;
using com::alipay::sofa::rpc::test::EchoResponse;
using com::alipay::sofa::rpc::test::Group;

constexpr std::string_view kEcho = examples::kEchoService;
constexpr std::string_view kSlow = "dtx.test.Slow:1.0";
constexpr std::string_view kCallback = "dtx.test.Callback:1.0";

EchoRequest Echo(const std::string& name, Group group = com::alipay::sofa::rpc::test::B) {
  EchoRequest r;
  r.set_name(name);
  r.set_group(group);
  return r;
}

// Responders that tests answer later, from the test thread.
struct Parked {
  std::mutex mu;
  std::vector<TypedResponder<EchoResponse>> responders;
  std::vector<std::string> names;
  size_t size() {
    std::lock_guard lock(mu);
    return responders.size();
  }
};

bool WaitFor(const std::function<bool()>& done, std::chrono::milliseconds limit = 5s) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(2ms);
  }
  return true;
}

class RpcTest : public ::testing::TestWithParam<WireFormat> {
 protected:
  void SetUp() override {
    registry_ = std::make_shared<ServiceRegistry>();
    examples::AddEchoService(*registry_);
    // slow.park: answered when the test says so.
    registry_->AddMethod<EchoRequest, EchoResponse>(
        std::string(kSlow), "park", [this](const CallContext&, EchoRequest&& req, TypedResponder<EchoResponse> r) {
          std::lock_guard lock(parked_.mu);
          parked_.names.push_back(req.name());
          parked_.responders.push_back(std::move(r));
        });
    // slow.later: answered from another thread after 100 ms, without holding the I/O thread.
    registry_->AddMethod<EchoRequest, EchoResponse>(
        std::string(kSlow), "later", [](const CallContext&, EchoRequest&& req, TypedResponder<EchoResponse> r) {
          std::thread([req = std::move(req), r = std::move(r)]() mutable {
            std::this_thread::sleep_for(100ms);
            EchoResponse resp;
            resp.set_code(202);
            resp.set_message("later " + req.name());
            r.Reply(resp);
          }).detach();
        });
    // slow.drop: the handler forgets to answer.
    registry_->AddRawMethod(std::string(kSlow), "drop", [](const CallContext&, std::string_view, Responder) {});
  }

  void StartServer(ServerOptions options = {}) {
    options.host = "127.0.0.1";
    options.port = port_;
    if (options.io_threads == 0) options.io_threads = 2;
    options.on_connect = [this](const std::shared_ptr<Channel>& peer, const std::string&) {
      std::lock_guard lock(peers_mu_);
      peers_.push_back(peer);
      ++connects_;
    };
    options.on_disconnect = [this](const std::shared_ptr<Channel>&, const std::string&) { ++disconnects_; };
    server_ = std::make_unique<Server>(options, registry_);
    ASSERT_TRUE(server_->Start().ok());
    port_ = server_->port();
  }

  std::unique_ptr<Client> MakeClient(ClientOptions options = {}, std::shared_ptr<const ServiceRegistry> services = nullptr) {
    options.addresses = {"127.0.0.1:" + std::to_string(port_)};
    options.wire = GetParam();
    if (options.reconnect_backoff_min == ClientOptions{}.reconnect_backoff_min) options.reconnect_backoff_min = 20ms;
    if (options.reconnect_backoff_max == ClientOptions{}.reconnect_backoff_max) options.reconnect_backoff_max = 100ms;
    auto client = std::make_unique<Client>(options, std::move(services));
    EXPECT_TRUE(client->WaitConnected(5s).ok());
    return client;
  }

  void TearDown() override {
    {
      std::lock_guard lock(parked_.mu);
      parked_.responders.clear();  // dropped responders answer with an error
    }
    if (server_) server_->Shutdown(1s);
  }

  std::shared_ptr<ServiceRegistry> registry_;
  std::unique_ptr<Server> server_;
  uint16_t port_ = 0;
  Parked parked_;
  // The server's channel to the first client that connected.
  std::shared_ptr<Channel> FirstPeer() {
    std::lock_guard lock(peers_mu_);
    return peers_.at(0);
  }

  std::mutex peers_mu_;
  std::vector<std::shared_ptr<Channel>> peers_;
  std::atomic<int> connects_{0};
  std::atomic<int> disconnects_{0};
};

TEST_P(RpcTest, EchoRoundTrip) {
  StartServer();
  auto client = MakeClient();
  auto r = client->CallSync<EchoResponse>(kEcho, "echoObj", Echo("gxcsoccer"));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->code(), 200);
  EXPECT_EQ(r->message(), "hello gxcsoccer, you are in B");
}

TEST_P(RpcTest, ApplicationErrorReachesTheCaller) {
  StartServer();
  auto client = MakeClient();
  auto r = client->CallSync<EchoResponse>(kEcho, "echoObj", Echo("fail"));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kRemoteError);
  EXPECT_EQ(r.status().message(), "remote error (SERVER_EXCEPTION): echo failed for fail");
}

TEST_P(RpcTest, UnknownServiceAndMethodAreAnswered) {
  StartServer();
  auto client = MakeClient();
  auto r = client->CallSync<EchoResponse>("com.alipay.sofa.rpc.test.ProtoService:2.0", "echoObj", Echo("x"));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kRemoteError);
  EXPECT_NE(r.status().message().find("not found service: com.alipay.sofa.rpc.test.ProtoService:2.0"),
            std::string_view::npos);
  auto m = client->CallSync<EchoResponse>(kEcho, "nope", Echo("x"));
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("Can not find method: com.alipay.sofa.rpc.test.ProtoService:1.0#nope()"),
            std::string_view::npos);
  // The connection is still good.
  EXPECT_TRUE(client->CallSync<EchoResponse>(kEcho, "echoObj", Echo("again")).ok());
}

TEST_P(RpcTest, AsyncAnswerDoesNotHoldTheIoThread) {
  ServerOptions options;
  options.io_threads = 1;  // one I/O thread: if a handler held it, the echo below would wait
  StartServer(options);
  auto client = MakeClient();
  std::promise<Result<EchoResponse>> later;
  client->Call<EchoResponse>(kSlow, "later", Echo("n"), CallOptions{},
                             [&](Result<EchoResponse> r) { later.set_value(std::move(r)); });
  const auto start = std::chrono::steady_clock::now();
  auto echo = client->CallSync<EchoResponse>(kEcho, "echoObj", Echo("quick"));
  ASSERT_TRUE(echo.ok());
  auto future = later.get_future();
  EXPECT_EQ(future.wait_for(0ms), std::future_status::timeout) << "the echo should come back first";
  ASSERT_EQ(future.wait_for(5s), std::future_status::ready);
  auto r = future.get();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->message(), "later n");
  EXPECT_GE(std::chrono::steady_clock::now() - start, 100ms);
}

// Answers given on other threads, many at once and together far larger than a socket's buffer,
// arrive whole and matched: the answering thread writes a frame to the socket itself when nothing
// is being written, else queues it behind the write in progress (partial sends included). The
// observer hears of every answer and of how it went out.
TEST_P(RpcTest, AnswersFromOtherThreadsArriveWholeUnderLoad) {
  struct Counting final : CallObserver {
    std::atomic<int> answered{0}, direct{0}, queued{0};
    void Answered(std::string_view service, std::string_view method, std::chrono::nanoseconds) override {
      if (service == kSlow && method == "park") ++answered;
    }
    void Delivered(std::chrono::nanoseconds, bool handed_off) override { ++(handed_off ? queued : direct); }
  };
  auto observer = std::make_shared<Counting>();
  registry_->SetObserver(observer);
  StartServer();
  auto client = MakeClient();
  constexpr int kCalls = 48;
  std::vector<std::promise<Result<EchoResponse>>> results(kCalls);
  CallOptions options;
  options.timeout = 20s;
  for (int i = 0; i < kCalls; ++i) {
    client->Call<EchoResponse>(kSlow, "park", Echo(std::to_string(i) + ":" + std::string(200'000 + i, 'x')), options,
                               [&results, i](Result<EchoResponse> r) { results[i].set_value(std::move(r)); });
  }
  ASSERT_TRUE(WaitFor([&] { return parked_.size() == kCalls; }, 10s));
  std::vector<std::thread> answering;
  for (int t = 0; t < 4; ++t) {
    answering.emplace_back([&, t] {
      for (int i = t; i < kCalls; i += 4) {
        EchoResponse resp;
        resp.set_code(i);
        resp.set_message(parked_.names[i]);
        parked_.responders[i].Reply(resp);
      }
    });
  }
  for (auto& t : answering) t.join();
  for (int i = 0; i < kCalls; ++i) {
    auto r = results[i].get_future().get();
    ASSERT_TRUE(r.ok()) << i << ": " << r.status();
    EXPECT_EQ(r->message(), std::to_string(i) + ":" + std::string(200'000 + i, 'x')) << i;
  }
  EXPECT_EQ(observer->answered.load(), kCalls);
  EXPECT_EQ(observer->direct.load() + observer->queued.load(), kCalls);
  EXPECT_GT(observer->direct.load(), 0);
  // The connection still serves calls after it.
  EXPECT_TRUE(client->CallSync<EchoResponse>(kEcho, "echoObj", Echo("after")).ok());
}

TEST_P(RpcTest, CallTimesOutAndLateAnswerIsIgnored) {
  StartServer();
  auto client = MakeClient();
  CallOptions quick;
  quick.timeout = 100ms;
  auto r = client->CallSync<EchoResponse>(kSlow, "park", Echo("p"), quick);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kTimeout);
  // Answering after the deadline reaches nobody and harms nothing.
  ASSERT_TRUE(WaitFor([&] { return parked_.size() == 1; }));
  {
    std::lock_guard lock(parked_.mu);
    EchoResponse late;
    late.set_code(1);
    parked_.responders[0].Reply(late);
  }
  EXPECT_TRUE(client->CallSync<EchoResponse>(kEcho, "echoObj", Echo("after")).ok());
}

TEST_P(RpcTest, HandlerThatNeverAnswersStillAnswers) {
  StartServer();
  auto client = MakeClient();
  auto r = client->CallSync<EchoResponse>(kSlow, "drop", Echo("d"));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kRemoteError);
  EXPECT_NE(r.status().message().find("without an answer"), std::string_view::npos);
}

TEST_P(RpcTest, ManyConcurrentCallsFromManyThreads) {
  StartServer();
  ClientOptions options;
  options.connections_per_address = 4;
  options.io_threads = 2;
  auto client = MakeClient(options);
  ASSERT_TRUE(WaitFor([&] { return client->live_connections() == 4; }));
  constexpr int kThreads = 4, kCalls = 500;
  std::atomic<int> ok{0}, bad{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::vector<std::future<void>> waits;
      for (int i = 0; i < kCalls; ++i) {
        auto p = std::make_shared<std::promise<void>>();
        waits.push_back(p->get_future());
        const std::string name = "t" + std::to_string(t) + "-" + std::to_string(i);
        client->Call<EchoResponse>(kEcho, "echoObj", Echo(name), CallOptions{}, [&, p, name](Result<EchoResponse> r) {
          (r.ok() && r->message() == "hello " + name + ", you are in B") ? ++ok : ++bad;
          p->set_value();
        });
      }
      for (auto& w : waits) w.wait();
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), kThreads * kCalls);
  EXPECT_EQ(bad.load(), 0);
}

// CPU seconds (user + system) this process has used so far.
double ProcessCpuSeconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) + (u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

// busy_poll: I/O threads that poll before they sleep answer every call, sleep once nothing is
// going on, and stop at Shutdown.
TEST_P(RpcTest, BusyPollingServerAnswersAndSleepsWhenIdle) {
  ServerOptions server_options;
  server_options.busy_poll = 500us;
  StartServer(server_options);
  ClientOptions options;
  options.connections_per_address = 2;
  auto client = MakeClient(options);
  constexpr int kCalls = 1000;
  std::atomic<int> ok{0}, bad{0};
  std::vector<std::future<void>> waits;
  for (int i = 0; i < kCalls; ++i) {
    auto p = std::make_shared<std::promise<void>>();
    waits.push_back(p->get_future());
    const std::string name = "poll-" + std::to_string(i);
    client->Call<EchoResponse>(kEcho, "echoObj", Echo(name), CallOptions{}, [&, p, name](Result<EchoResponse> r) {
      (r.ok() && r->message() == "hello " + name + ", you are in B") ? ++ok : ++bad;
      p->set_value();
    });
  }
  for (auto& w : waits) ASSERT_EQ(w.wait_for(10s), std::future_status::ready);
  EXPECT_EQ(ok.load(), kCalls);
  EXPECT_EQ(bad.load(), 0);
  // Connected and idle: the two polling threads sleep (spinning, they would use about two seconds).
  const double before = ProcessCpuSeconds();
  std::this_thread::sleep_for(1s);
  EXPECT_LT(ProcessCpuSeconds() - before, 0.5) << "CPU seconds of this process over one idle second";
  server_->Shutdown(1s);  // joins the polling threads (a thread that never stopped would hang here)
  server_.reset();
}

// Writes raw bytes on a fresh connection; returns true if the server closed it (EOF) in time.
bool ServerClosesAfter(uint16_t port, const std::string& bytes) {
  boost::asio::io_context io;
  boost::asio::ip::tcp::socket s(io);
  s.connect({boost::asio::ip::make_address("127.0.0.1"), port});
  boost::asio::write(s, boost::asio::buffer(bytes));
  struct timeval tv{5, 0};
  setsockopt(s.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  char buf[256];
  boost::system::error_code ec;
  while (true) {
    s.read_some(boost::asio::buffer(buf), ec);
    if (ec == boost::asio::error::eof || ec == boost::asio::error::connection_reset) return true;
    if (ec) return false;  // timed out: still open
  }
}

TEST_P(RpcTest, MalformedFrameClosesOnlyThatConnection) {
  StartServer();
  auto client = MakeClient();
  EXPECT_TRUE(ServerClosesAfter(port_, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
  // A valid v1 header whose header map claims a string longer than itself.
  BoltFrame f;
  f.protocol = BoltProtocol::kV1;
  f.headers = {{"key", "value"}};
  std::string bad;
  EncodeFrame(f, bad);
  bad[22 + 3] = 0x40;
  EXPECT_TRUE(ServerClosesAfter(port_, bad));
  // A v2 frame with a broken CRC.
  f.protocol = BoltProtocol::kV2;
  std::string bad_crc;
  EncodeFrame(f, bad_crc);
  bad_crc.back() ^= 0x5a;
  EXPECT_TRUE(ServerClosesAfter(port_, bad_crc));
  // Everyone else is still served.
  auto r = client->CallSync<EchoResponse>(kEcho, "echoObj", Echo("still here"));
  ASSERT_TRUE(r.ok()) << r.status();
}

TEST_P(RpcTest, OversizedFrameIsRefusedBeforeItsBody) {
  ServerOptions options;
  options.max_frame_size = 4096;
  StartServer(options);
  // Only the fixed header of a frame that announces 1 GiB of content: closed without the body.
  BoltFrame f;
  f.protocol = BoltProtocol::kV1;
  std::string header;
  EncodeFrame(f, header);
  header[18] = 0x40;  // content length 0x40000000
  EXPECT_TRUE(ServerClosesAfter(port_, header));

  auto client = MakeClient();
  auto big = client->CallSync<EchoResponse>(kEcho, "echoObj", Echo(std::string(10000, 'x')));
  ASSERT_FALSE(big.ok());
  EXPECT_EQ(big.status().code(), StatusCode::kUnavailable) << big.status();
  // The client reconnects and small calls work again.
  ASSERT_TRUE(WaitFor([&] { return client->CallSync<EchoResponse>(kEcho, "echoObj", Echo("small")).ok(); }));
}

TEST_P(RpcTest, ServerCallsAServiceTheClientServes) {
  StartServer();
  auto client_services = std::make_shared<ServiceRegistry>();
  client_services->AddSyncMethod<EchoRequest, EchoResponse>(
      std::string(kCallback), "branchCommit", [](const CallContext& ctx, const EchoRequest& req) -> Result<EchoResponse> {
        EchoResponse resp;
        resp.set_code(7);
        resp.set_message("committed " + req.name() + " via " + std::string(ctx.method));
        return resp;
      });
  auto client = MakeClient({}, client_services);
  ASSERT_TRUE(WaitFor([&] { return connects_ == 1; }));
  std::shared_ptr<Channel> peer = FirstPeer();
  auto r = peer->CallSync<EchoResponse>(kCallback, "branchCommit", Echo("xid-1"));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->code(), 7);
  EXPECT_EQ(r->message(), "committed xid-1 via branchCommit");
  // And the other direction keeps working on the same connection.
  EXPECT_TRUE(client->CallSync<EchoResponse>(kEcho, "echoObj", Echo("both ways")).ok());
  EXPECT_EQ(connects_.load(), 1);
  // A client without that service answers "not found service".
  auto missing = peer->CallSync<EchoResponse>(kCallback, "nope", Echo("x"));
  EXPECT_EQ(missing.status().code(), StatusCode::kRemoteError);
}

// Oneway requests (Bolt type 2): the method runs, its answer goes nowhere, and the connection
// keeps serving calls in both directions.
TEST_P(RpcTest, OnewayNoticesRunTheMethodAndGetNoAnswer) {
  StartServer();
  auto client_services = std::make_shared<ServiceRegistry>();
  std::atomic<int> notices{0};
  std::mutex names_mu;
  std::vector<std::string> names;
  client_services->AddSyncMethod<EchoRequest, EchoResponse>(
      std::string(kCallback), "branchCommit", [&](const CallContext&, const EchoRequest& req) -> Result<EchoResponse> {
        {
          std::lock_guard lock(names_mu);
          names.push_back(req.name());
        }
        ++notices;
        EchoResponse resp;
        resp.set_code(7);
        return resp;
      });
  auto client = MakeClient({}, client_services);
  ASSERT_TRUE(WaitFor([&] { return connects_ == 1; }));
  std::shared_ptr<Channel> peer = FirstPeer();
  CallOptions options;
  peer->Notify(kCallback, "nope", Echo("to nobody"), options);  // unknown method: no error answer either
  for (int i = 0; i < 3; ++i) peer->Notify(kCallback, "branchCommit", Echo("xid-" + std::to_string(i)), options);
  ASSERT_TRUE(WaitFor([&] { return notices == 3; }));
  {
    std::lock_guard lock(names_mu);
    EXPECT_EQ(names, (std::vector<std::string>{"xid-0", "xid-1", "xid-2"}));
  }
  auto r = peer->CallSync<EchoResponse>(kCallback, "branchCommit", Echo("a call"));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->code(), 7);
  EXPECT_TRUE(client->CallSync<EchoResponse>(kEcho, "echoObj", Echo("both ways")).ok());
  EXPECT_EQ(notices.load(), 4);
  EXPECT_EQ(connects_.load(), 1);
}

TEST_P(RpcTest, IdleConnectionsCloseUnlessHeartbeatsKeepThemAlive) {
  ServerOptions options;
  options.idle_timeout = 300ms;
  StartServer(options);
  ClientOptions beating;
  beating.heartbeat_interval = 50ms;
  auto alive = MakeClient(beating);
  ClientOptions silent;
  silent.heartbeat_interval = 0ms;
  silent.reconnect_backoff_min = 20s;  // so that the closed one stays closed
  silent.reconnect_backoff_max = 20s;
  auto quiet = MakeClient(silent);
  ASSERT_TRUE(WaitFor([&] { return connects_ == 2; }));
  ASSERT_TRUE(WaitFor([&] { return disconnects_ == 1; }, 3s)) << "the silent connection should be closed";
  std::this_thread::sleep_for(600ms);
  EXPECT_EQ(disconnects_.load(), 1) << "heartbeats should keep the other connection open";
  EXPECT_EQ(alive->live_connections(), 1u);
  EXPECT_EQ(quiet->live_connections(), 0u);
  EXPECT_TRUE(alive->CallSync<EchoResponse>(kEcho, "echoObj", Echo("alive")).ok());
}

TEST_P(RpcTest, UnansweredHeartbeatsCloseTheConnection) {
  // A peer that accepts but never reads or answers.
  boost::asio::io_context io;
  boost::asio::ip::tcp::acceptor acceptor(io, {boost::asio::ip::make_address("127.0.0.1"), 0});
  port_ = acceptor.local_endpoint().port();
  boost::asio::ip::tcp::socket mute(io);
  std::thread accept([&] { acceptor.accept(mute); });
  ClientOptions options;
  options.heartbeat_interval = 30ms;
  options.heartbeat_failures = 2;
  options.reconnect_backoff_min = 10s;
  options.reconnect_backoff_max = 10s;
  options.addresses = {"127.0.0.1:" + std::to_string(port_)};
  options.wire = GetParam();
  Client client(options);
  ASSERT_TRUE(client.WaitConnected(5s).ok());
  accept.join();
  // Two heartbeats time out (3 s each) and the connection is given up.
  EXPECT_TRUE(WaitFor([&] { return client.live_connections() == 0; }, 10s));
}

TEST_P(RpcTest, ClientReconnectsAfterServerRestart) {
  StartServer();
  auto client = MakeClient();
  ASSERT_TRUE(client->CallSync<EchoResponse>(kEcho, "echoObj", Echo("one")).ok());
  server_->Shutdown(1s);
  server_.reset();
  ASSERT_TRUE(WaitFor([&] { return client->live_connections() == 0; }));
  auto down = client->CallSync<EchoResponse>(kEcho, "echoObj", Echo("down"));
  EXPECT_EQ(down.status().code(), StatusCode::kUnavailable) << down.status();
  StartServer();  // same port
  ASSERT_TRUE(client->WaitConnected(5s).ok());
  auto r = client->CallSync<EchoResponse>(kEcho, "echoObj", Echo("two"));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->message(), "hello two, you are in B");
}

TEST_P(RpcTest, GracefulShutdownFinishesInFlightCalls) {
  StartServer();
  auto client = MakeClient();
  std::promise<Result<EchoResponse>> answered;
  client->Call<EchoResponse>(kSlow, "later", Echo("in flight"), CallOptions{},
                             [&](Result<EchoResponse> r) { answered.set_value(std::move(r)); });
  std::this_thread::sleep_for(20ms);  // the request reaches the server
  server_->Shutdown(5s);
  auto future = answered.get_future();
  ASSERT_EQ(future.wait_for(1s), std::future_status::ready);
  auto r = future.get();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->message(), "later in flight");
  EXPECT_EQ(server_->connection_count(), 0u);
  server_.reset();
  // Nobody listens any more.
  boost::asio::io_context io;
  boost::asio::ip::tcp::socket s(io);
  boost::system::error_code ec;
  s.connect({boost::asio::ip::make_address("127.0.0.1"), port_}, ec);
  EXPECT_TRUE(ec);
}

INSTANTIATE_TEST_SUITE_P(Wire, RpcTest,
                         ::testing::Values(WireFormat{BoltProtocol::kV1, false}, WireFormat{BoltProtocol::kV2, true}),
                         [](const auto& info) { return info.param.protocol == BoltProtocol::kV1 ? "V1" : "V2Crc"; });

}  // namespace
}  // namespace dtx::rpc
