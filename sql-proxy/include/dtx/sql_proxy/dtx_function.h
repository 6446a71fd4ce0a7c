// DtxFunction: recognises the statements dtx-sql-proxy answers itself in AT mode, by cheap checks on
// the SQL text (a statement not starting with SELECT costs one comparison):
//
//   SELECT dtx.begin()  /  SELECT dtx.begin('name')  /  SELECT dtx.begin('name', timeout_ms)
//   SELECT dtx.commit()  /  SELECT dtx.commit('xid')
//   SELECT dtx.rollback()  /  SELECT dtx.rollback('xid')
//
// Through the extended protocol an argument may also be a parameter ($1, $2; text format).
// Keywords and names are case-insensitive; whitespace is free; one trailing ';' is allowed. A
// statement that starts with `SELECT dtx.` followed by one of these names but is not one of these
// forms is kMalformed (refused with a clear error rather than sent to PostgreSQL, which would say
// the schema dtx does not exist).
//
// Also here: MayChangeRows(), the cheap check that decides whether a statement of an unbound
// session is looked at for the global-lock check.
//
// Thread-safety: stateless functions.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace dtx::sql_proxy {

enum class DtxFunctionKind { kNone, kBegin, kCommit, kRollback, kMalformed };

struct DtxFunction {
  DtxFunctionKind kind = DtxFunctionKind::kNone;
  bool has_arg = false;  // a first argument was given
  std::string arg;       // kBegin: the name; kCommit/kRollback: the XID
  int64_t timeout_ms = -1;  // kBegin: the second argument, or -1
  // Arguments written as $n (extended protocol): the parameter numbers, 0 when a literal.
  int arg_param = 0;
  int timeout_param = 0;
  std::string error;     // kMalformed
};

DtxFunction ParseDtxFunction(std::string_view sql);

// True when a statement of an unbound session must be looked at for the global-lock check: its
// first keyword (after whitespace, comments and '(') is INSERT, UPDATE, DELETE, WITH, MERGE,
// EXPLAIN, PREPARE, TRUNCATE, CALL, DO or COPY, or a ';' is followed by more than blanks and
// comments (maybe several
// statements). False for everything else, without parsing.
bool MayChangeRows(std::string_view sql);

// What a statement does to the session's transaction block (BEGIN/START, COMMIT/END,
// ROLLBACK/ABORT with or without AND CHAIN, ROLLBACK TO, PREPARE TRANSACTION), from its
// keywords; kNone for everything else.
enum class TxEffect : uint8_t { kNone, kBegin, kEnd, kChain, kRollbackTo };
TxEffect TxEffectOf(std::string_view sql);
// Whether `sql` (one statement) commits the block: COMMIT or END (AND CHAIN or not), or PREPARE
// TRANSACTION. Not ROLLBACK / ABORT.
bool CommitsBlock(std::string_view sql);
// Whether a Query's text may commit the block: its first statement is transaction control that
// ends the block, or the text holds more than one statement (a ';' before its last word). Cheap:
// no parse.
bool MayCommitBlock(std::string_view sql);
// Whether `sql` is a bare BEGIN: BEGIN, BEGIN WORK, BEGIN TRANSACTION or START TRANSACTION, in
// any case, with blanks around and one optional trailing ';', and nothing else (no comment, no
// option). Such a BEGIN cannot fail in an idle session, so the proxy may answer it itself and send
// it later (ProxyOptions::defer_begin).
bool IsPlainBegin(std::string_view sql);
// The block status ('I', 'T', 'E') after a statement with `effect` ran without error in `status`.
char AfterTxEffect(char status, TxEffect effect);

}  // namespace dtx::sql_proxy
