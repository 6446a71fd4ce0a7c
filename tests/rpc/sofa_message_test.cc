// The SOFARPC envelope: what dtx writes must be what a SOFARPC peer writes.
#include "dtx/rpc/sofa_message.h"

#include <gtest/gtest.h>

#include "dtx/rpc/bolt_codec.h"
#include "test_util.h"

namespace dtx::rpc {
namespace {

using testing::ReadTestData;

BoltFrame Decode(const std::string& bytes) {
  BoltFrame f;
  EXPECT_EQ(DecodeFrame(bytes, kDefaultMaxFrameSize, f).status, DecodeStatus::kFrame);
  return f;
}

std::string Encode(const BoltFrame& f) {
  std::string out;
  EncodeFrame(f, out);
  return out;
}

TEST(SofaMessage, RequestReadsAndWritesLikeSofaRpc) {
  const std::string golden = ReadTestData("bolt-vectors/v1-request-echoObj.bin");
  auto request = SofaRequest::FromFrame(Decode(golden));
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_EQ(request->service, "com.alipay.sofa.rpc.test.ProtoService:1.0");
  EXPECT_EQ(request->method, "echoObj");
  EXPECT_EQ(request->target_app, "");

  SofaRequest mine{"com.alipay.sofa.rpc.test.ProtoService:1.0", "echoObj", "", {}, request->body};
  EXPECT_EQ(Encode(mine.ToFrame(WireFormat{BoltProtocol::kV1}, 1, 3000)), golden);

  const std::string golden_v2 = ReadTestData("bolt-vectors/v2-crc-request-echoObj.bin");
  auto v2 = SofaRequest::FromFrame(Decode(golden_v2));
  ASSERT_TRUE(v2.ok());
  SofaRequest mine_v2{v2->service, v2->method, "", {}, v2->body};
  EXPECT_EQ(Encode(mine_v2.ToFrame(WireFormat{BoltProtocol::kV2, true}, 0x67, 3000)), golden_v2);
}

TEST(SofaMessage, ResponsesWriteLikeSofaRpc) {
  const std::string ok = ReadTestData("bolt-vectors/v1-response-echoObj.bin");
  BoltFrame f = Decode(ok);
  EXPECT_EQ(Encode(SofaResponse::Ok(f.content).ToFrame(WireFormat{BoltProtocol::kV1}, 1)), ok);

  const std::string unknown = ReadTestData("bolt-vectors/v1-response-unknown-service.bin");
  EXPECT_EQ(Encode(SofaResponse::Error(ResponseStatus::kServerException,
                                       "not found service: com.alipay.sofa.rpc.test.ProtoService:2.0")
                       .ToFrame(WireFormat{BoltProtocol::kV1}, 0x66)),
            unknown);

  const std::string v2 = ReadTestData("bolt-vectors/v2-crc-response-echoObj.bin");
  EXPECT_EQ(Encode(SofaResponse::Ok(Decode(v2).content).ToFrame(WireFormat{BoltProtocol::kV2, true}, 0x67)), v2);

  // Application errors, as sofa-rpc-node's server writes them (tests/interop/captures).
  const std::string app_error = ReadTestData("../../interop/captures/v2-crc-response-app-error.bin");
  EXPECT_EQ(Encode(SofaResponse::Error(ResponseStatus::kServerException, "echo failed for fail")
                       .ToFrame(WireFormat{BoltProtocol::kV2, true}, 2)),
            app_error);
}

TEST(SofaMessage, ErrorResponsesBecomeRemoteErrors) {
  SofaResponse r = SofaResponse::FromFrame(Decode(ReadTestData("bolt-vectors/v1-response-unknown-service.bin")));
  EXPECT_TRUE(r.error);
  auto result = r.ToResult();
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), StatusCode::kRemoteError);
  EXPECT_EQ(result.status().message(),
            "remote error (SERVER_EXCEPTION): not found service: com.alipay.sofa.rpc.test.ProtoService:2.0");

  SofaResponse app = SofaResponse::FromFrame(Decode(ReadTestData("../../interop/captures/v1-response-app-error.bin")));
  EXPECT_TRUE(app.error);
  EXPECT_EQ(app.body, "echo failed for fail");

  SofaResponse good = SofaResponse::FromFrame(Decode(ReadTestData("bolt-vectors/v1-response-echoObj.bin")));
  EXPECT_FALSE(good.error);
  EXPECT_TRUE(good.ToResult().ok());

  // A non-success status is an error even without the header.
  BoltFrame bare;
  bare.type = CommandType::kResponse;
  bare.cmd_code = CommandCode::kResponse;
  bare.status = ResponseStatus::kNoProcessor;
  EXPECT_TRUE(SofaResponse::FromFrame(bare).error);
}

TEST(SofaMessage, RequestsMustNameServiceAndMethodAndUseProtobuf) {
  BoltFrame f = Decode(ReadTestData("bolt-vectors/v1-request-echoObj.bin"));
  BoltFrame no_method = f;
  no_method.headers = {{"sofa_head_target_service", "x.Y:1.0"}};
  EXPECT_EQ(SofaRequest::FromFrame(no_method).status().code(), StatusCode::kInvalidArgument);

  BoltFrame only_service_header = f;
  only_service_header.headers = {{"service", "x.Y:1.0"}, {"sofa_head_method_name", "m"}};
  auto r = SofaRequest::FromFrame(only_service_header);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->service, "x.Y:1.0");

  BoltFrame hessian = f;
  hessian.codec = kCodecHessian2;
  auto h = SofaRequest::FromFrame(hessian);
  ASSERT_FALSE(h.ok());
  EXPECT_NE(h.status().message().find("protobuf"), std::string_view::npos);
}

TEST(SofaMessage, HeartbeatAckMatchesSofaRpc) {
  BoltFrame hb = Decode(ReadTestData("bolt-vectors/v1-heartbeat-request.bin"));
  EXPECT_EQ(Encode(HeartbeatAck(hb)), ReadTestData("bolt-vectors/v1-heartbeat-response.bin"));
  EXPECT_EQ(Encode(HeartbeatRequest(WireFormat{BoltProtocol::kV1}, 0x65, 3000)),
            ReadTestData("bolt-vectors/v1-heartbeat-request.bin"));
}

}  // namespace
}  // namespace dtx::rpc
