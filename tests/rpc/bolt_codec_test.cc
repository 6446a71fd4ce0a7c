// The Bolt codec against frames captured from a real SOFARPC peer (sofa-rpc-node 2.10).
#include "dtx/rpc/bolt_codec.h"

#include <gtest/gtest.h>

#include "test_util.h"

namespace dtx::rpc {
namespace {

using testing::ReadTestData;

BoltFrame DecodeWhole(const std::string& bytes) {
  BoltFrame frame;
  DecodeResult r = DecodeFrame(bytes, kDefaultMaxFrameSize, frame);
  EXPECT_EQ(r.status, DecodeStatus::kFrame) << r.error;
  EXPECT_EQ(r.consumed, bytes.size());
  return frame;
}

std::string Encode(const BoltFrame& frame) {
  std::string out;
  EncodeFrame(frame, out);
  EXPECT_EQ(out.size(), EncodedSize(frame));
  return out;
}

TEST(BoltCodec, DecodesV1EchoRequest) {
  const std::string bytes = ReadTestData("bolt-vectors/v1-request-echoObj.bin");
  BoltFrame f = DecodeWhole(bytes);
  EXPECT_EQ(f.protocol, BoltProtocol::kV1);
  EXPECT_EQ(f.type, CommandType::kRequest);
  EXPECT_EQ(f.cmd_code, CommandCode::kRequest);
  EXPECT_EQ(f.ver2, 1);
  EXPECT_EQ(f.request_id, 1u);
  EXPECT_EQ(f.codec, kCodecProtobuf);
  EXPECT_EQ(f.timeout_ms, 3000);
  EXPECT_EQ(f.class_name, "com.alipay.sofa.rpc.core.request.SofaRequest");
  ASSERT_EQ(f.headers.size(), 4u);
  EXPECT_EQ(f.headers[0], (std::pair<std::string_view, std::string_view>("service", "com.alipay.sofa.rpc.test.ProtoService:1.0")));
  EXPECT_EQ(f.headers[1], (std::pair<std::string_view, std::string_view>("sofa_head_method_name", "echoObj")));
  EXPECT_EQ(f.headers[2], (std::pair<std::string_view, std::string_view>("sofa_head_target_app", "")));
  EXPECT_EQ(f.headers[3], (std::pair<std::string_view, std::string_view>("sofa_head_target_service",
                                                                          "com.alipay.sofa.rpc.test.ProtoService:1.0")));
  EXPECT_EQ(f.content, std::string_view("\x0a\x09gxcsoccer\x10\x01", 13));
  EXPECT_EQ(Encode(f), bytes);
}

TEST(BoltCodec, DecodesV1EchoResponse) {
  const std::string bytes = ReadTestData("bolt-vectors/v1-response-echoObj.bin");
  BoltFrame f = DecodeWhole(bytes);
  EXPECT_EQ(f.type, CommandType::kResponse);
  EXPECT_EQ(f.cmd_code, CommandCode::kResponse);
  EXPECT_EQ(f.request_id, 1u);
  EXPECT_EQ(f.status, ResponseStatus::kSuccess);
  EXPECT_EQ(f.class_name, "com.alipay.sofa.rpc.core.response.SofaResponse");
  EXPECT_EQ(f.Header("sofa_head_response_error"), "false");
  EXPECT_EQ(f.content.size(), 34u);
  EXPECT_EQ(Encode(f), bytes);
}

TEST(BoltCodec, DecodesUnknownServiceResponse) {
  const std::string bytes = ReadTestData("bolt-vectors/v1-response-unknown-service.bin");
  BoltFrame f = DecodeWhole(bytes);
  EXPECT_EQ(f.request_id, 0x66u);
  EXPECT_EQ(f.status, ResponseStatus::kServerException);
  EXPECT_EQ(f.Header("sofa_head_response_error"), "true");
  EXPECT_EQ(f.content, "not found service: com.alipay.sofa.rpc.test.ProtoService:2.0");
  EXPECT_EQ(Encode(f), bytes);
  EXPECT_EQ(Encode(DecodeWhole(ReadTestData("bolt-vectors/v1-request-unknown-service.bin"))),
            ReadTestData("bolt-vectors/v1-request-unknown-service.bin"));
}

TEST(BoltCodec, DecodesHeartbeats) {
  const std::string req = ReadTestData("bolt-vectors/v1-heartbeat-request.bin");
  BoltFrame f = DecodeWhole(req);
  EXPECT_TRUE(f.is_heartbeat());
  EXPECT_FALSE(f.is_response());
  EXPECT_EQ(f.request_id, 0x65u);
  EXPECT_TRUE(f.headers.empty());
  EXPECT_TRUE(f.content.empty());
  EXPECT_EQ(Encode(f), req);

  const std::string ack = ReadTestData("bolt-vectors/v1-heartbeat-response.bin");
  BoltFrame a = DecodeWhole(ack);
  EXPECT_TRUE(a.is_heartbeat());
  EXPECT_TRUE(a.is_response());
  EXPECT_EQ(a.request_id, 0x65u);
  EXPECT_EQ(Encode(a), ack);
}

TEST(BoltCodec, DecodesV2WithCrc) {
  for (const char* name : {"bolt-vectors/v2-crc-request-echoObj.bin", "bolt-vectors/v2-crc-response-echoObj.bin"}) {
    SCOPED_TRACE(name);
    const std::string bytes = ReadTestData(name);
    BoltFrame f = DecodeWhole(bytes);
    EXPECT_EQ(f.protocol, BoltProtocol::kV2);
    EXPECT_EQ(f.ver1, 2);
    EXPECT_EQ(f.switches, kSwitchCrc);
    EXPECT_TRUE(f.has_crc());
    EXPECT_EQ(f.request_id, 0x67u);
    EXPECT_EQ(Encode(f), bytes);
  }
  BoltFrame resp = DecodeWhole(ReadTestData("bolt-vectors/v2-crc-response-echoObj.bin"));
  EXPECT_EQ(resp.status, ResponseStatus::kSuccess);
  EXPECT_EQ(resp.content.substr(5), "hello v2, you are in A");
}

TEST(BoltCodec, EveryPrefixNeedsMore) {
  for (const char* name : {"bolt-vectors/v1-request-echoObj.bin", "bolt-vectors/v2-crc-response-echoObj.bin",
                           "bolt-vectors/v1-heartbeat-response.bin"}) {
    const std::string bytes = ReadTestData(name);
    for (size_t n = 0; n < bytes.size(); ++n) {
      BoltFrame f;
      DecodeResult r = DecodeFrame(std::string_view(bytes).substr(0, n), kDefaultMaxFrameSize, f);
      ASSERT_EQ(r.status, DecodeStatus::kNeedMore) << name << " prefix " << n << ": " << r.error;
      // Once the fixed header is in, the decoder knows the whole frame's size.
      if (r.consumed != 0) EXPECT_EQ(r.consumed, bytes.size());
    }
  }
}

TEST(BoltCodec, DecodesBackToBackFrames) {
  const std::string a = ReadTestData("bolt-vectors/v1-heartbeat-request.bin");
  const std::string b = ReadTestData("bolt-vectors/v1-request-echoObj.bin");
  const std::string both = a + b;
  BoltFrame f;
  DecodeResult r = DecodeFrame(both, kDefaultMaxFrameSize, f);
  ASSERT_EQ(r.status, DecodeStatus::kFrame);
  EXPECT_TRUE(f.is_heartbeat());
  r = DecodeFrame(std::string_view(both).substr(r.consumed), kDefaultMaxFrameSize, f);
  ASSERT_EQ(r.status, DecodeStatus::kFrame);
  EXPECT_EQ(f.Header("sofa_head_method_name"), "echoObj");
}

TEST(BoltCodec, RejectsOversizedFrameFromItsHeader) {
  const std::string bytes = ReadTestData("bolt-vectors/v1-request-echoObj.bin");
  BoltFrame f;
  // Only the 22-byte fixed header: the size is known, the body has not arrived.
  DecodeResult r = DecodeFrame(std::string_view(bytes).substr(0, 22), 100, f);
  EXPECT_EQ(r.status, DecodeStatus::kError);
  EXPECT_NE(r.error.find("exceeds the maximum of 100"), std::string::npos) << r.error;
  // Exactly the maximum is fine.
  EXPECT_EQ(DecodeFrame(bytes, bytes.size(), f).status, DecodeStatus::kFrame);
  EXPECT_EQ(DecodeFrame(bytes, bytes.size() - 1, f).status, DecodeStatus::kError);
}

TEST(BoltCodec, RejectsCorruptFrames) {
  const std::string good = ReadTestData("bolt-vectors/v2-crc-request-echoObj.bin");
  BoltFrame f;
  std::string bad_crc = good;
  bad_crc[bad_crc.size() - 8] ^= 0x01;  // a content byte
  DecodeResult r = DecodeFrame(bad_crc, kDefaultMaxFrameSize, f);
  EXPECT_EQ(r.status, DecodeStatus::kError);
  EXPECT_EQ(r.error, "CRC32 mismatch");

  std::string bad_proto = good;
  bad_proto[0] = 0x07;
  EXPECT_EQ(DecodeFrame(bad_proto, kDefaultMaxFrameSize, f).status, DecodeStatus::kError);

  std::string bad_type = ReadTestData("bolt-vectors/v1-request-echoObj.bin");
  bad_type[1] = 0x09;
  EXPECT_EQ(DecodeFrame(bad_type, kDefaultMaxFrameSize, f).status, DecodeStatus::kError);

  std::string bad_cmd = ReadTestData("bolt-vectors/v1-request-echoObj.bin");
  bad_cmd[3] = 0x05;
  EXPECT_EQ(DecodeFrame(bad_cmd, kDefaultMaxFrameSize, f).status, DecodeStatus::kError);

  // A header key whose length runs past the header map.
  std::string bad_header = ReadTestData("bolt-vectors/v1-request-echoObj.bin");
  bad_header[22 + 44 + 3] = 0x7f;
  r = DecodeFrame(bad_header, kDefaultMaxFrameSize, f);
  EXPECT_EQ(r.status, DecodeStatus::kError);
  EXPECT_NE(r.error.find("header map"), std::string::npos) << r.error;

  // A negative content length.
  std::string negative = ReadTestData("bolt-vectors/v1-heartbeat-request.bin");
  negative[18] = '\xff';
  EXPECT_EQ(DecodeFrame(negative, kDefaultMaxFrameSize, f).status, DecodeStatus::kError);
}

TEST(BoltCodec, NullHeaderStringsReadAsEmpty) {
  BoltFrame f;
  f.headers = {{"k", "v"}};
  std::string bytes;
  EncodeFrame(f, bytes);
  // Make the value's length -1 (null): the 4 bytes before the final "v", and drop the "v".
  bytes.erase(bytes.size() - 1);
  for (int i = 1; i <= 4; ++i) bytes[bytes.size() - i] = '\xff';
  bytes[17] = 8 + 1 + 0;  // header map length: 4+1 + 4 = 9
  BoltFrame g;
  DecodeResult r = DecodeFrame(bytes, kDefaultMaxFrameSize, g);
  ASSERT_EQ(r.status, DecodeStatus::kFrame) << r.error;
  ASSERT_EQ(g.headers.size(), 1u);
  EXPECT_EQ(g.headers[0].first, "k");
  EXPECT_EQ(g.headers[0].second, "");
}

TEST(BoltCodec, Crc32MatchesZlibCheckValue) {
  EXPECT_EQ(BoltCrc32("123456789"), 0xCBF43926u);  // the standard CRC-32 check value
}

}  // namespace
}  // namespace dtx::rpc
