// dtx's Bolt client calling a real SOFARPC server: sofa-rpc-node's echo server
// (tests/interop/echo_server.js), over Bolt v1 and v2 with CRC.
#include <gtest/gtest.h>

#include <signal.h>

#include <thread>

#include "dtx/rpc/client.h"
#include "echo.pb.h"
#include "echo_service.h"
#include "subprocess.h"

namespace dtx::rpc {
namespace {

using namespace std::chrono_literals;
using com::alipay::sofa::rpc::test::EchoRequest;
using com::alipay::sofa::rpc::test::EchoResponse;

constexpr std::string_view kEcho = examples::kEchoService;

class SofaNodeServer : public ::testing::TestWithParam<WireFormat> {
 protected:
  static void SetUpTestSuite() {
    node_ = new dtx::testing::Subprocess({"node", "echo_server.js", "--port", "0"}, DTX_INTEROP_DIR);
    port_ = node_->WaitForListeningPort();
  }
  static void TearDownTestSuite() {
    delete node_;
    node_ = nullptr;
  }

  std::unique_ptr<Client> Connect(ClientOptions options = {}) {
    options.addresses = {"127.0.0.1:" + std::to_string(port_)};
    options.wire = GetParam();
    auto client = std::make_unique<Client>(options);
    EXPECT_TRUE(client->WaitConnected(5s).ok());
    return client;
  }

  static EchoRequest Echo(const std::string& name) {
    EchoRequest r;
    r.set_name(name);
    r.set_group(com::alipay::sofa::rpc::test::B);
    return r;
  }

  static inline dtx::testing::Subprocess* node_ = nullptr;
  static inline int port_ = 0;
};

TEST_P(SofaNodeServer, Echo) {
  ASSERT_NE(port_, 0) << "the sofa-rpc-node server did not start (run scripts/setup.sh for its npm packages)";
  auto client = Connect();
  auto r = client->CallSync<EchoResponse>(kEcho, "echoObj", Echo("gxcsoccer"));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->code(), 200);
  EXPECT_EQ(r->message(), "hello gxcsoccer, you are in B");
}

TEST_P(SofaNodeServer, ApplicationError) {
  ASSERT_NE(port_, 0);
  auto client = Connect();
  auto r = client->CallSync<EchoResponse>(kEcho, "echoObj", Echo("fail"));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kRemoteError);
  EXPECT_EQ(r.status().message(), "remote error (SERVER_EXCEPTION): echo failed for fail");
}

TEST_P(SofaNodeServer, UnknownService) {
  ASSERT_NE(port_, 0);
  auto client = Connect();
  auto r = client->CallSync<EchoResponse>("com.alipay.sofa.rpc.test.ProtoService:2.0", "echoObj", Echo("x"));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kRemoteError);
  EXPECT_EQ(r.status().message(),
            "remote error (SERVER_EXCEPTION): not found service: com.alipay.sofa.rpc.test.ProtoService:2.0");
  EXPECT_TRUE(client->CallSync<EchoResponse>(kEcho, "echoObj", Echo("after")).ok());
}

TEST_P(SofaNodeServer, ManyCallsInFlight) {
  ASSERT_NE(port_, 0);
  auto client = Connect();
  constexpr int kCalls = 300;
  std::atomic<int> ok{0}, done{0};
  for (int i = 0; i < kCalls; ++i) {
    const std::string name = "n" + std::to_string(i);
    client->Call<EchoResponse>(kEcho, "echoObj", Echo(name), CallOptions{}, [&, name](Result<EchoResponse> r) {
      if (r.ok() && r->message() == "hello " + name + ", you are in B") ++ok;
      ++done;
    });
  }
  for (int i = 0; i < 500 && done < kCalls; ++i) std::this_thread::sleep_for(10ms);
  EXPECT_EQ(ok.load(), kCalls);
}

TEST_P(SofaNodeServer, HeartbeatsAreAcknowledged) {
  ASSERT_NE(port_, 0);
  ClientOptions options;
  options.heartbeat_interval = 100ms;
  options.heartbeat_failures = 1;  // a single unanswered heartbeat would close the connection
  options.reconnect_backoff_min = 30s;
  options.reconnect_backoff_max = 30s;
  auto client = Connect(options);
  std::this_thread::sleep_for(3500ms);  // past the 3 s a heartbeat waits for its ack
  EXPECT_EQ(client->live_connections(), 1u);
  EXPECT_TRUE(client->CallSync<EchoResponse>(kEcho, "echoObj", Echo("still")).ok());
}

INSTANTIATE_TEST_SUITE_P(Wire, SofaNodeServer,
                         ::testing::Values(WireFormat{BoltProtocol::kV1, false}, WireFormat{BoltProtocol::kV2, true}),
                         [](const auto& info) { return info.param.protocol == BoltProtocol::kV1 ? "V1" : "V2Crc"; });

}  // namespace
}  // namespace dtx::rpc
