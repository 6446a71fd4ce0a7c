// ParseDtxFunction and MayChangeRows: the statements AT mode answers itself, and the first-keyword
// check for unbound writes.
#include <gtest/gtest.h>

#include <string>

#include "dtx/sql_proxy/dtx_function.h"

namespace dtx::sql_proxy {
namespace {

TEST(DtxFunction, RecognisesTheForms) {
  auto f = ParseDtxFunction("SELECT dtx.begin()");
  EXPECT_EQ(f.kind, DtxFunctionKind::kBegin);
  EXPECT_FALSE(f.has_arg);
  EXPECT_EQ(f.timeout_ms, -1);
  f = ParseDtxFunction("  select DTX.Begin ( 'order''s' , 5000 ) ; ");
  EXPECT_EQ(f.kind, DtxFunctionKind::kBegin);
  EXPECT_EQ(f.arg, "order's");
  EXPECT_EQ(f.timeout_ms, 5000);
  f = ParseDtxFunction("SELECT dtx.begin('n', '250')");
  EXPECT_EQ(f.timeout_ms, 250);
  f = ParseDtxFunction("/* app */ SELECT dtx.commit('tc-1:42')");
  EXPECT_EQ(f.kind, DtxFunctionKind::kCommit);
  EXPECT_EQ(f.arg, "tc-1:42");
  EXPECT_EQ(ParseDtxFunction("SELECT dtx.rollback();").kind, DtxFunctionKind::kRollback);
  f = ParseDtxFunction("SELECT dtx.begin($1, $2)");
  EXPECT_EQ(f.kind, DtxFunctionKind::kBegin);
  EXPECT_EQ(f.arg_param, 1);
  EXPECT_EQ(f.timeout_param, 2);
  f = ParseDtxFunction("SELECT dtx.commit($1)");
  EXPECT_EQ(f.kind, DtxFunctionKind::kCommit);
  EXPECT_TRUE(f.has_arg);
  EXPECT_EQ(f.arg_param, 1);
  EXPECT_EQ(ParseDtxFunction("SELECT dtx.commit($1, $2)").kind, DtxFunctionKind::kMalformed);
  EXPECT_EQ(ParseDtxFunction("SELECT dtx.commit($)").kind, DtxFunctionKind::kMalformed);
  EXPECT_EQ(ParseDtxFunction("SELECT dtx.commit($0)").kind, DtxFunctionKind::kMalformed);
}

TEST(DtxFunction, LeavesOtherStatementsAlone) {
  for (const char* sql : {"SELECT 1", "SELECT dtxx.begin()", "SELECT dtx.beginning()", "select * from dtx.begin",
                          "UPDATE t SET a = 1", "", "SELECT", "SELECT dtx", "SELECT dtx.other()"}) {
    EXPECT_EQ(ParseDtxFunction(sql).kind, DtxFunctionKind::kNone) << sql;
  }
}

TEST(DtxFunction, RefusesMalformedCalls) {
  for (const char* sql : {"SELECT dtx.begin(", "SELECT dtx.begin(1)", "SELECT dtx.begin('a', 'x')",
                          "SELECT dtx.begin('a', 1, 2)", "SELECT dtx.commit('a', 1)", "SELECT dtx.commit('a",
                          "SELECT dtx.commit(); DELETE FROM t", "SELECT dtx.rollback() + 1", "SELECT dtx.begin"}) {
    auto f = ParseDtxFunction(sql);
    EXPECT_EQ(f.kind, DtxFunctionKind::kMalformed) << sql;
    EXPECT_FALSE(f.error.empty()) << sql;
  }
}

TEST(MayChangeRows, FirstKeyword) {
  EXPECT_TRUE(MayChangeRows("UPDATE t SET a = 1"));
  EXPECT_TRUE(MayChangeRows("  delete from t"));
  EXPECT_TRUE(MayChangeRows("/* c */ -- x\n ( UPDATE t SET a = 1)"));
  EXPECT_FALSE(MayChangeRows("SELECT 1"));
  EXPECT_TRUE(MayChangeRows("INSERT INTO t VALUES (1)"));
  EXPECT_TRUE(MayChangeRows("with d as (delete from t returning *) select * from d"));
  EXPECT_TRUE(MayChangeRows("MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE"));
  EXPECT_TRUE(MayChangeRows("EXPLAIN ANALYZE UPDATE t SET a = 1"));
  EXPECT_TRUE(MayChangeRows("PREPARE p AS DELETE FROM t"));
  // Checked table by table (TRUNCATE, CALL, DO, COPY).
  EXPECT_TRUE(MayChangeRows("TRUNCATE t"));
  EXPECT_TRUE(MayChangeRows("call p(1)"));
  EXPECT_TRUE(MayChangeRows("DO $$ BEGIN NULL; END $$"));
  EXPECT_TRUE(MayChangeRows("COPY t FROM STDIN"));
  EXPECT_FALSE(MayChangeRows("document"));
  EXPECT_FALSE(MayChangeRows("copyright"));
  // Several statements: whatever the first one is.
  EXPECT_TRUE(MayChangeRows("SELECT 1; DELETE FROM t"));
  EXPECT_TRUE(MayChangeRows("SELECT 1;UPDATE t SET a = 1;"));
  EXPECT_FALSE(MayChangeRows("SELECT 1;"));
  EXPECT_FALSE(MayChangeRows("SELECT 1 ;  -- done\n /* really */ "));
  EXPECT_FALSE(MayChangeRows("insertion"));
  EXPECT_FALSE(MayChangeRows("SELECT * FROM t WHERE id = 3"));
  EXPECT_FALSE(MayChangeRows("updated"));
  EXPECT_FALSE(MayChangeRows(""));
  EXPECT_FALSE(MayChangeRows("/* unterminated"));
}

}  // namespace
}  // namespace dtx::sql_proxy

namespace dtx::sql_proxy {
namespace {

TEST(TxEffect, ReadsWhatAStatementDoesToTheBlock) {
  EXPECT_EQ(TxEffectOf("BEGIN"), TxEffect::kBegin);
  EXPECT_EQ(TxEffectOf("  /* c */ begin isolation level serializable"), TxEffect::kBegin);
  EXPECT_EQ(TxEffectOf("START TRANSACTION READ ONLY"), TxEffect::kBegin);
  EXPECT_EQ(TxEffectOf("COMMIT"), TxEffect::kEnd);
  EXPECT_EQ(TxEffectOf("end work;"), TxEffect::kEnd);
  EXPECT_EQ(TxEffectOf("ABORT"), TxEffect::kEnd);
  EXPECT_EQ(TxEffectOf("ROLLBACK TRANSACTION"), TxEffect::kEnd);
  EXPECT_EQ(TxEffectOf("COMMIT AND CHAIN"), TxEffect::kChain);
  EXPECT_EQ(TxEffectOf("rollback work and chain"), TxEffect::kChain);
  EXPECT_EQ(TxEffectOf("COMMIT AND NO CHAIN"), TxEffect::kEnd);
  EXPECT_EQ(TxEffectOf("ROLLBACK TO SAVEPOINT a"), TxEffect::kRollbackTo);
  EXPECT_EQ(TxEffectOf("rollback to a"), TxEffect::kRollbackTo);
  EXPECT_EQ(TxEffectOf("PREPARE TRANSACTION 'x'"), TxEffect::kEnd);
  EXPECT_EQ(TxEffectOf("COMMIT PREPARED 'x'"), TxEffect::kNone);
  EXPECT_EQ(TxEffectOf("PREPARE p AS SELECT 1"), TxEffect::kNone);
  EXPECT_EQ(TxEffectOf("SAVEPOINT a"), TxEffect::kNone);
  EXPECT_EQ(TxEffectOf("SELECT 'begin'"), TxEffect::kNone);
  EXPECT_EQ(TxEffectOf("beginning"), TxEffect::kNone);
  EXPECT_EQ(TxEffectOf(""), TxEffect::kNone);
}

TEST(TxEffect, MovesTheBlockStatus) {
  EXPECT_EQ(AfterTxEffect('I', TxEffect::kBegin), 'T');
  EXPECT_EQ(AfterTxEffect('T', TxEffect::kBegin), 'T');
  EXPECT_EQ(AfterTxEffect('E', TxEffect::kEnd), 'I');
  EXPECT_EQ(AfterTxEffect('E', TxEffect::kChain), 'T');
  EXPECT_EQ(AfterTxEffect('E', TxEffect::kRollbackTo), 'T');
  EXPECT_EQ(AfterTxEffect('T', TxEffect::kRollbackTo), 'T');
  EXPECT_EQ(AfterTxEffect('T', TxEffect::kNone), 'T');
}

TEST(IsPlainBegin, OnlyBareBeginsThatCannotFail) {
  for (const char* sql : {"BEGIN", "begin;", "  Begin Work ; ", "BEGIN TRANSACTION", "start\ntransaction;", "\tBEGIN\r\n"}) {
    EXPECT_TRUE(IsPlainBegin(sql)) << sql;
  }
  for (const char* sql : {"", ";", "BEGIN ISOLATION LEVEL SERIALIZABLE", "BEGIN READ ONLY", "BEGIN;;", "BEGIN; COMMIT",
                          "BEGIN; SELECT 1", "/* dtx.xid=x */ BEGIN", "BEGIN -- c", "BEGINNING", "BEGIN WORK WORK",
                          "START", "START TRANSACTION READ WRITE", "COMMIT", "begin2", "BEGIN\xc3\xa9"}) {
    EXPECT_FALSE(IsPlainBegin(sql)) << sql;
  }
  EXPECT_FALSE(IsPlainBegin(std::string(100, ' ') + "BEGIN"));
}

}  // namespace
}  // namespace dtx::sql_proxy
