// The XID binding and its propagation helpers.
#include <gtest/gtest.h>

#include <thread>

#include "dtx/rpc/bolt_frame.h"
#include "dtx/sdk/xid_context.h"

namespace dtx::sdk {
namespace {

TEST(XidContext, ScopesNestAndRestore) {
  EXPECT_EQ(CurrentXid(), "");
  {
    XidScope outer("tc-1:1");
    EXPECT_EQ(CurrentXid(), "tc-1:1");
    {
      XidScope inner("tc-1:2");
      EXPECT_EQ(CurrentXid(), "tc-1:2");
    }
    EXPECT_EQ(CurrentXid(), "tc-1:1");
    std::string seen = "unset";
    std::thread([&] { seen = CurrentXid(); }).join();
    EXPECT_EQ(seen, "") << "the binding is per thread";
  }
  EXPECT_EQ(CurrentXid(), "");
}

TEST(XidContext, ParseAcceptsCoordinatorXidsOnly) {
  EXPECT_TRUE(ParseXid("tc-1:1732752000000001").ok());
  EXPECT_TRUE(ParseXid("node:a:42").ok());
  for (const char* bad : {"", "nocolon", ":12", "tc-1:", "tc-1:12x", "tc 1:12", "tc-1:123456789012345678901"}) {
    EXPECT_EQ(ParseXid(bad).status().code(), StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_FALSE(ParseXid(std::string(200, 'a') + ":1").ok());
  EXPECT_FALSE(ParseXid(std::string("tc\n1:1")).ok());
}

TEST(XidContext, WithXidAddsTheHeaderOfTheCurrentOrGivenXid) {
  EXPECT_TRUE(WithXid().headers.empty());
  {
    XidScope scope("tc-1:7");
    auto o = WithXid();
    ASSERT_EQ(o.headers.size(), 1u);
    EXPECT_EQ(o.headers[0].first, kXidHeader);
    EXPECT_EQ(o.headers[0].second, "tc-1:7");
  }
  rpc::CallOptions base;
  base.timeout = std::chrono::milliseconds(1234);
  auto o = WithXid(base, "tc-2:9");
  EXPECT_EQ(o.timeout.count(), 1234);
  ASSERT_EQ(o.headers.size(), 1u);
  EXPECT_EQ(o.headers[0].second, "tc-2:9");
}

TEST(XidContext, XidFromReadsAndChecksTheHeader) {
  std::string peer = "127.0.0.1:1";
  rpc::HeaderMap headers = {{"service", "x"}, {"dtx-xid", "tc-1:5"}};
  rpc::CallContext ctx{"s", "m", headers, peer, nullptr};
  auto x = XidFrom(ctx);
  ASSERT_TRUE(x.ok());
  EXPECT_EQ(*x, "tc-1:5");

  rpc::HeaderMap none = {{"service", "x"}};
  rpc::CallContext ctx2{"s", "m", none, peer, nullptr};
  ASSERT_TRUE(XidFrom(ctx2).ok());
  EXPECT_EQ(*XidFrom(ctx2), "");

  rpc::HeaderMap bad = {{"dtx-xid", "drop table"}};
  rpc::CallContext ctx3{"s", "m", bad, peer, nullptr};
  EXPECT_EQ(XidFrom(ctx3).status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace dtx::sdk
