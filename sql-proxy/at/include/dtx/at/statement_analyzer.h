// Statement analysis for AT mode, with the PostgreSQL grammar itself (libpg_query).
//
// Analyze() parses one statement string of a bound session, classifies it and refuses what AT
// cannot undo safely (several statements in one string, DDL, TRUNCATE, INSERT ... ON CONFLICT,
// UPDATE ... FROM, DELETE ... USING, writable CTEs, WHERE CURRENT OF, PREPARE/EXECUTE, DO/CALL,
// COPY FROM). Plan() then builds, from the table's primary key, the SQL to run around the write:
//   UPDATE: before image  SELECT json_build_array(pk::text...)::text, row_to_json(t.*)::text
//                         FROM <table> WHERE <the statement's own WHERE> FOR UPDATE
//   all writes: the statement with RETURNING <the client's items>, the same two columns
//                         (after image for INSERT/UPDATE; the deleted row for DELETE)
// An UPDATE whose text could be cut for it (statement_shape.h: merged_update; no `*` among its
// RETURNING items) takes its before image itself instead, in one statement:
//   UPDATE <table> SET ... FROM (SELECT row_to_json(t.*)::text, <pk> FROM <table>
//          WHERE <its WHERE> FOR UPDATE) AS dtx_at_old WHERE <pk> = dtx_at_old.<pk>
//   RETURNING <the client's items>, <pk json>, <after image>, <before image>   (three hidden columns)
// `$n` parameters are kept, so the statement's own Bind values apply to every query (the extra
// queries renumber the ones they use: see StatementPlan::extra_params and SelectParams).
// SELECT ... FOR UPDATE/NO KEY UPDATE of one table gets a lock-keys query (the keys it locks).
//
// Each statement shape is analysed by the grammar once (statement_shape.h). Analyze() keys a
// cache by the text with its plain literal constants abstracted (or by the exact text, for what
// the key scanner does not fully understand); a hit reuses the analysis without parsing. Plan()
// splices the client's own text: the rewritten statement is its RawStmt span with the hidden
// RETURNING items appended; the before image / lock-keys queries are
//   [its WITH clause] SELECT <targets> FROM <its table, from the tree> [WHERE <its condition>] FOR UPDATE
// with the WITH and WHERE spans located among libpg_query's tokens, their $n renumbered, and
// checked, once per shape, to parse back to the statement's own trees. Later statements of the
// shape fill the templates' holes with their own literals: no parse, no protobuf, no deparse.
// A shape whose spans do not check out is planned from its tree (pg_query_deparse_protobuf).
//
// No I/O; safe from any thread (the shape cache, bounded, and the deparse path's template cache
// are mutex-guarded; cached shapes are immutable and shared). Refusals are SqlError statuses (SQLSTATE
// 0A000 unless said otherwise) naming the reason; `$0` is refused with 42P02 as the server would.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "dtx/at/catalog.h"
#include "dtx/at/sql_state.h"

namespace pg_query {
class ParseResult;
}

namespace dtx::at {

enum class StatementKind {
  kInsert,
  kUpdate,
  kDelete,
  kSelectForUpdate,     // SELECT ... FOR UPDATE / FOR NO KEY UPDATE of one table
  kReadOnly,            // other SELECTs, VALUES, SHOW, EXPLAIN of a read
  kTransactionControl,  // BEGIN, COMMIT, ROLLBACK, SAVEPOINT...: the session's business
  kOther,               // SET, LISTEN, LOCK, cursors...: harmless to pass through
  kEmpty,               // an empty string or only comments
};
std::string_view StatementKindName(StatementKind kind);

// A literal constant of a statement's text: [begin, begin + len). See statement_shape.h.
struct ShapeLiteral {
  uint32_t begin = 0;
  uint32_t len = 0;
};
struct StatementShape;

// What a kTransactionControl statement does. The session acts on kCommit (AtBranch::Register
// first) and kRollback (drop the branch); the branch itself follows the savepoints.
enum class TransactionOp { kNone, kBegin, kCommit, kRollback, kSavepoint, kRelease, kRollbackTo };

struct ParsedStatement {
  StatementKind kind = StatementKind::kEmpty;
  TransactionOp transaction_op = TransactionOp::kNone;
  std::string savepoint;                // its name
  bool chain = false;                   // COMMIT/ROLLBACK AND CHAIN
  TableRef table;                       // the written (or locked) table: kInsert..kSelectForUpdate
  std::vector<std::string> set_columns;  // kUpdate: the columns it assigns
  int returning_items = 0;              // the client's own RETURNING items
  // The statement calls a function other than PostgreSQL's own well-known ones (which write no
  // table): a user's function may write tables the undo log never sees (AtBranch::MayWriteElsewhere).
  bool calls_unknown_functions = false;
  std::string unknown_function;  // the first such function's name, as written
  // The parse tree, set by Analyze for every statement that parsed to one. From the shape cache
  // it is the tree of the first statement of the shape: the same tree but for the values of the
  // abstracted literals (Plan() takes those from `sql`; it reads the tree only for a shape without
  // a splice spec, and such a shape is only ever shared by identical texts).
  std::shared_ptr<const pg_query::ParseResult> tree;
  std::string sql;                      // the statement text as analyzed (Plan splices it)
  // The statement's shape (statement_shape.h), set by Analyze for every statement it accepts:
  // Plan() fills its templates with this text's `literals`.
  std::shared_ptr<const StatementShape> shape;
  std::vector<ShapeLiteral> literals;
  // Analyze found the shape in its cache: statements of this shape came before (and likely come
  // again), so a prepared form of it is worth keeping (AtOptions::keep_prepared).
  bool recurring = false;
  // Deprecated: no longer filled by Analyze. A serialized pg_query.ParseResult set by hand is
  // still read by Plan() when `tree` is null (then `sql` must be set for writes too).
  std::string parse_tree;
};

// What to run for a write (or a SELECT ... FOR UPDATE), given its table.
struct StatementPlan {
  std::string before_image_sql;  // kUpdate without a merged before image: rows (pk json array text, row json text)
  std::string lock_keys_sql;     // kSelectForUpdate only: rows (pk json array text)
  std::string statement_sql;     // the statement to run in place of the client's
  int hidden_columns = 0;        // trailing columns of statement_sql the client must not see
  // statement_sql with its literals as parameters $1..$k (prepared_params: their texts, typed
  // int4 or numeric), when the shape allows (StatementShape::parametrizable) and the client has no
  // RETURNING items of its own (so that all result columns are the hidden text ones, whose types
  // no ALTER TABLE changes under a kept statement); else empty. The same text serves every
  // statement of the shape, so it can stay prepared on the server.
  std::string prepared_sql;
  QueryParams prepared_params;
  // before_image_sql / lock_keys_sql number their parameters $1..$k: extra_params[i] is the
  // client's parameter number (1-based) that their $(i+1) stands for.
  std::vector<int> extra_params;
};

// A statement of a session bound to NO global transaction, as the global-lock check sees it
// (write-then-check): a write of one table runs with a hidden RETURNING of the keys of the rows it
// wrote (inserted, updated, deleted, or updated by ON CONFLICT), inside a transaction; the keys are
// then checked against the global locks, and a conflict fails the statement before that
// transaction can commit. What cannot be checked that way is refused (kRefuse); what writes no
// rows of a table the check knows runs unchanged (kNone).
//
// kTables: a statement whose rows cannot be known (TRUNCATE, CALL, DO, COPY ... FROM, COPY of a
// data-modifying query). After it ran, in the same transaction, every table that transaction
// holds a write lock on is checked whole against the global locks (TablesWrittenQuery): any row
// of it held by a global transaction is a conflict. The rows it wrote stay locked by the server
// until the transaction ends (TRUNCATE: the whole tables), so no global transaction can take
// them in between; one that held them before the check is seen by it.
struct LocalWrite {
  enum class Check { kNone, kKeys, kRefuse, kSeveral, kTables };
  Check check = Check::kNone;
  TableRef table;              // kKeys: the written table
  std::string qualifier;       // kKeys: the name its RETURNING items use (the alias, or the table)
  int returning_items = 0;     // kKeys: the client's own RETURNING items
  size_t tail = 0;             // kKeys: bytes after the statement's own text (';', blanks, comments)
  std::optional<Status> refusal;  // kRefuse: the SQL error
  bool copies = false;            // a COPY of the client's data (STDIN/STDOUT): it flows outside the Query's answer
  bool copies_in = false;         // a COPY ... FROM STDIN: the client sends its data
  bool truncates = false;         // kTables: a TRUNCATE, which takes its tables' ACCESS EXCLUSIVE lock
  bool procedure = false;         // kTables: CALL or DO, whose code may COMMIT outside a transaction block
};

// The tables the session's transaction holds write locks on, with the tables they inherit from
// (partitioned parents included): rows (schema, table). `exclusive_only`: ACCESS EXCLUSIVE locks alone (what TRUNCATE
// takes), so that a block's ordinary checked writes do not count. Run by the session inside the
// transaction whose writes it checks (LocalWrite::kTables).
std::string TablesWrittenQuery(bool exclusive_only);
// kSeveral: the text holds more than one statement (see SplitStatements). A text the grammar
// rejects is kNone: the server gives its own error. A text nested too deeply to analyze (54001)
// is refused when it may write, and kNone otherwise. Cached by statement shape with Analyze().
LocalWrite AnalyzeLocal(std::string_view sql);
// The statements of a multi-statement text, each without its ';'; an error if it does not parse.
Result<std::vector<std::string_view>> SplitStatements(std::string_view sql);
// REQUIRES: write.check == kKeys; table describes write.table. statement_sql is the client's
// text with one hidden RETURNING column (the keys as a json array text); a table without a
// primary key gets the text unchanged and no hidden column (nothing of it can be locked).
StatementPlan PlanLocalWrite(const LocalWrite& write, const TableInfo& table, std::string_view sql);

// The client's parameters that `numbers` (1-based) name, in that order, with their formats and types.
QueryParams SelectParams(const QueryParams& params, const std::vector<int>& numbers);

Result<ParsedStatement> Analyze(std::string_view sql);
// REQUIRES: parsed.kind is kInsert, kUpdate, kDelete or kSelectForUpdate; table describes parsed.table.
// Refuses a table without a primary key, and an UPDATE that assigns a primary-key column.
Result<StatementPlan> Plan(const ParsedStatement& parsed, const TableInfo& table);

}  // namespace dtx::at
