// The wire framing: whole message, need more, or error, with the length checked from the header.
#include "dtx/sql_proxy/pg_message.h"

#include <gtest/gtest.h>

namespace dtx::sql_proxy {
namespace {

std::string Message(char type, std::string_view body) {
  std::string out(1, type);
  AppendInt32(out, static_cast<int32_t>(body.size() + 4));
  out.append(body);
  return out;
}

TEST(PgMessage, ReadsAWholeMessageAndNeedsMoreForAPrefix) {
  const std::string q = Message('Q', std::string("select 1", 9));
  for (size_t n = 0; n < q.size(); ++n) {
    Frame f = ReadMessage(std::string_view(q).substr(0, n));
    EXPECT_EQ(f.status, FrameStatus::kNeedMore) << n;
    EXPECT_EQ(f.size, n < 5 ? 0u : q.size()) << n;  // the size is known once the header is in
  }
  const std::string more = q + "Z....";
  Frame f = ReadMessage(more);
  ASSERT_EQ(f.status, FrameStatus::kMessage);
  EXPECT_EQ(f.type, 'Q');
  EXPECT_EQ(f.size, q.size());
  EXPECT_EQ(f.body, std::string_view("select 1", 9));
}

TEST(PgMessage, RejectsAnOversizedLengthFromTheHeaderAlone) {
  std::string header = "Q";
  AppendInt32(header, 0x7ffffff0);
  Frame f = ReadMessage(header, kDefaultMaxMessage);
  EXPECT_EQ(f.status, FrameStatus::kError);
  EXPECT_NE(f.error.find("over the limit"), std::string::npos) << f.error;

  std::string small = "Q";
  AppendInt32(small, 2000);
  EXPECT_EQ(ReadMessage(small, 1024).status, FrameStatus::kError);
  EXPECT_EQ(ReadMessage(small, 4096).status, FrameStatus::kNeedMore);
}

TEST(PgMessage, RejectsALengthBelowFour) {
  for (int32_t len : {0, 1, 3, -1}) {
    std::string m = "Q";
    AppendInt32(m, len);
    EXPECT_EQ(ReadMessage(m).status, FrameStatus::kError) << len;
  }
}

TEST(PgMessage, StartupPacketAndParameters) {
  const std::string packet = StartupPacket({{"user", "alice"}, {"database", "shop"}});
  Frame f = ReadStartupPacket(packet);
  ASSERT_EQ(f.status, FrameStatus::kMessage);
  EXPECT_EQ(f.code, kProtocolV3);
  auto params = ParseStartupParameters(f.body);
  ASSERT_TRUE(params);
  ASSERT_EQ(params->size(), 2u);
  EXPECT_EQ((*params)[0], std::make_pair(std::string("user"), std::string("alice")));
  EXPECT_EQ((*params)[1].second, "shop");

  EXPECT_EQ(ReadStartupPacket(packet.substr(0, 3)).status, FrameStatus::kNeedMore);
  EXPECT_EQ(ReadStartupPacket(packet.substr(0, 9)).size, packet.size());
  // Malformed parameter lists: a name without a value, no final NUL, bytes after it.
  EXPECT_FALSE(ParseStartupParameters(std::string("user\0", 5)));
  EXPECT_FALSE(ParseStartupParameters(std::string("user\0bob\0", 9)));
  EXPECT_FALSE(ParseStartupParameters(std::string("\0x", 2)));
  EXPECT_TRUE(ParseStartupParameters(std::string("\0", 1)));
}

TEST(PgMessage, StartupPacketLengthLimits) {
  std::string tiny;
  AppendInt32(tiny, 4);
  EXPECT_EQ(ReadStartupPacket(tiny).status, FrameStatus::kError);
  std::string huge;
  AppendInt32(huge, 10001);
  EXPECT_EQ(ReadStartupPacket(huge).status, FrameStatus::kError);
}

TEST(PgMessage, CancelRequestAndBackendKey) {
  const std::string packet = CancelRequestPacket({1234, -5});
  Frame f = ReadStartupPacket(packet);
  ASSERT_EQ(f.status, FrameStatus::kMessage);
  EXPECT_EQ(f.code, kCancelRequestCode);
  auto key = ParseBackendKey(f.body);
  ASSERT_TRUE(key);
  EXPECT_EQ(*key, (BackendKey{1234, -5}));
  EXPECT_FALSE(ParseBackendKey("short"));

  std::string k;
  AppendBackendKeyData(k, {7, 8});
  Frame kf = ReadMessage(k);
  ASSERT_EQ(kf.status, FrameStatus::kMessage);
  EXPECT_EQ(kf.type, 'K');
  EXPECT_EQ(*ParseBackendKey(kf.body), (BackendKey{7, 8}));
}

TEST(PgMessage, BuiltErrorResponsesReadBack) {
  std::string out;
  AppendErrorResponse(out, "FATAL", "08P01", "bad message");
  Frame f = ReadMessage(out);
  ASSERT_EQ(f.status, FrameStatus::kMessage);
  EXPECT_EQ(f.size, out.size());
  auto fields = ParseErrorFields(f.body);
  ASSERT_TRUE(fields);
  EXPECT_EQ(fields->severity, "FATAL");
  EXPECT_EQ(fields->sqlstate, "08P01");
  EXPECT_EQ(fields->message, "bad message");
  EXPECT_FALSE(ParseErrorFields("Sx"));  // no terminators
}

TEST(PgMessage, BuiltShowAnswerIsWellFramed) {
  std::string out;
  AppendRowDescriptionText(out, "dtx.xid");
  AppendDataRowText(out, std::string_view("tc-1:9"));
  AppendDataRowText(out, std::nullopt);
  AppendCommandComplete(out, "SHOW");
  AppendReadyForQuery(out, 'T');
  std::string types;
  std::string_view rest(out);
  while (!rest.empty()) {
    Frame f = ReadMessage(rest);
    ASSERT_EQ(f.status, FrameStatus::kMessage) << types;
    types.push_back(f.type);
    if (f.type == 'Z') EXPECT_EQ(f.body, "T");
    if (f.type == 'C') EXPECT_EQ(f.body, std::string("SHOW\0", 5));
    rest.remove_prefix(f.size);
  }
  EXPECT_EQ(types, "TDDCZ");
}

TEST(PgMessage, ParseFields) {
  const std::string body("s1\0select $1\0\0\0", 16);
  auto p = ParseParse(body);
  ASSERT_TRUE(p);
  EXPECT_EQ(p->statement, "s1");
  EXPECT_EQ(p->query, "select $1");
  EXPECT_FALSE(ParseParse(std::string("s1\0select", 9)));
}

}  // namespace
}  // namespace dtx::sql_proxy
