// The dtx.xid statements: what is recognised, what is refused, what passes through untouched.
#include "dtx/sql_proxy/xid_command.h"

#include <gtest/gtest.h>

namespace dtx::sql_proxy {
namespace {

TEST(XidCommand, RecognisesSetForms) {
  for (const char* sql : {"SET dtx.xid = 'tc-1:42'", "set dtx.xid to 'tc-1:42';", "  SET SESSION DTX.XID='tc-1:42'  ",
                          "set dtx.xid = \"tc-1:42\"", "set dtx.xid = tc-1:42", "SET\ndtx.xid\tTO 'tc-1:42' ; \n"}) {
    XidCommand c = ParseXidCommand(sql);
    EXPECT_EQ(c.kind, XidCommandKind::kSet) << sql << " " << c.error;
    EXPECT_EQ(c.xid, "tc-1:42") << sql;
  }
  XidCommand local = ParseXidCommand("SET LOCAL dtx.xid = 'a/b@c.d_e'");
  EXPECT_EQ(local.kind, XidCommandKind::kSetLocal);
  EXPECT_EQ(local.xid, "a/b@c.d_e");
}

TEST(XidCommand, ResetShowAndDefault) {
  EXPECT_EQ(ParseXidCommand("RESET dtx.xid").kind, XidCommandKind::kReset);
  EXPECT_EQ(ParseXidCommand("reset DTX.XID;").kind, XidCommandKind::kReset);
  EXPECT_EQ(ParseXidCommand("show dtx.xid").kind, XidCommandKind::kShow);
  XidCommand d = ParseXidCommand("SET dtx.xid TO DEFAULT");
  EXPECT_EQ(d.kind, XidCommandKind::kReset);
  EXPECT_FALSE(d.local);
  XidCommand ld = ParseXidCommand("SET LOCAL dtx.xid = default");
  EXPECT_EQ(ld.kind, XidCommandKind::kReset);
  EXPECT_TRUE(ld.local);
  EXPECT_EQ(ParseXidCommand("SET dtx.xid = ''").kind, XidCommandKind::kReset);
}

TEST(XidCommand, OtherStatementsPassThrough) {
  for (const char* sql : {"", "select 1", "SET search_path = public", "SET dtx.xidx = 'a'", "SHOW search_path",
                          "RESET ALL", "reset dtx", "update t set a = 1", "SETdtx.xid = 'a'", "/* dtx.xid=a */ select 1",
                          "SET LOCAL statement_timeout = 5"}) {
    EXPECT_EQ(ParseXidCommand(sql).kind, XidCommandKind::kNone) << sql;
  }
}

TEST(XidCommand, MalformedOnesAreRefusedNotForwarded) {
  for (const char* sql : {"SET dtx.xid = 'a'; DELETE FROM t", "SET dtx.xid 'a'", "SET dtx.xid = 'has space'",
                          "SET dtx.xid = 'unterminated", "SHOW dtx.xid extra", "RESET dtx.xid, x",
                          "SET dtx.xid = 'it''s'"}) {
    XidCommand c = ParseXidCommand(sql);
    EXPECT_EQ(c.kind, XidCommandKind::kMalformed) << sql;
    EXPECT_FALSE(c.error.empty()) << sql;
  }
  EXPECT_EQ(ParseXidCommand("SET dtx.xid = '" + std::string(129, 'a') + "'").kind, XidCommandKind::kMalformed);
  EXPECT_EQ(ParseXidCommand("SET dtx.xid = '" + std::string(128, 'a') + "'").kind, XidCommandKind::kSet);
}

TEST(XidCommand, LeadingComment) {
  EXPECT_EQ(LeadingXidComment("/* dtx.xid=tc-1:7 */ update t set a = 1").value_or(""), "tc-1:7");
  EXPECT_EQ(LeadingXidComment("  /*dtx.xid = tc-1:7*/select 1").value_or(""), "tc-1:7");
  EXPECT_EQ(LeadingXidComment("/* DTX.XID=x */").value_or(""), "x");
  EXPECT_FALSE(LeadingXidComment("select 1 /* dtx.xid=x */"));
  EXPECT_FALSE(LeadingXidComment("/* other */ select 1"));
  EXPECT_FALSE(LeadingXidComment("/* dtx.xid= */ select 1"));
  EXPECT_FALSE(LeadingXidComment("/* dtx.xid=a b */ select 1"));
  EXPECT_FALSE(LeadingXidComment("/* dtx.xid=abc"));
  EXPECT_FALSE(LeadingXidComment("/"));
}

}  // namespace
}  // namespace dtx::sql_proxy
