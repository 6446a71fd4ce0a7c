// SQLSTATE-carrying errors of the AT engine, and the query/result types it exchanges with whoever
// runs its SQL (the proxy session on the client's backend connection, or PgConnection).
//
// An engine error meant for a SQL client is a dtx::Status whose message is "<SQLSTATE>: <text>"
// (SqlError builds one, SqlStateOf/SqlTextOf take it apart), so it can be turned into a
// PostgreSQL ErrorResponse as is.
//
// Thread-safety: values only.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "dtx/common/status.h"

namespace dtx::at {

// The SQLSTATEs the engine answers with.
namespace sqlstate {
inline constexpr std::string_view kFeatureNotSupported = "0A000";  // a statement AT cannot undo
inline constexpr std::string_view kUndefinedTable = "42P01";
inline constexpr std::string_view kSyntaxError = "42601";
inline constexpr std::string_view kSerializationFailure = "40001";  // retry the transaction
inline constexpr std::string_view kLockNotAvailable = "55P03";      // global lock held too long
inline constexpr std::string_view kConnectionFailure = "08006";
inline constexpr std::string_view kStatementTooComplex = "54001";  // parse tree too deep to analyze
inline constexpr std::string_view kInternal = "XX000";
}  // namespace sqlstate

Status SqlError(std::string_view state, std::string_view text, StatusCode code = StatusCode::kFailedPrecondition);
// The SQLSTATE of an engine error ("XX000" when the message carries none).
std::string SqlStateOf(const Status& s);
std::string SqlTextOf(const Status& s);
// A statement that fails with the error's SQLSTATE and text (a DO block raising it): run on the
// backend it puts a transaction block into the failed state exactly as a real error would, and
// its ErrorResponse is the one to relay to the client.
std::string RaiseErrorSql(const Status& error);
// "name" with embedded quotes doubled: a PostgreSQL quoted identifier.
std::string QuoteIdent(std::string_view name);
// 'text' with embedded quotes doubled.
std::string QuoteLiteral(std::string_view text);

// Parameters of a statement, as the client bound them (extended protocol) or none (simple).
struct QueryParams {
  std::vector<std::optional<std::string>> values;  // raw Bind values; nullopt is SQL NULL
  std::vector<int16_t> formats;                    // Bind's codes: empty = text, one = all, else per value
  std::vector<uint32_t> types;                     // Parse's type OIDs (0 or missing: inferred)
};

// Why the engine wants a query run.
enum class QueryRole {
  kCatalog,      // primary key of a table (read-only; result to the engine)
  kBeforeImage,  // SELECT ... FOR UPDATE of the rows an UPDATE will change (result to the engine)
  kLockKeys,     // SELECT of the keys a SELECT ... FOR UPDATE locks (result to the engine)
  kStatement,    // the client's statement, maybe rewritten: its result goes to the client, minus
                 // the last `hidden_columns` columns, which go to the engine
  kUndoWrite,    // the undo-log insert at COMMIT (result to the engine)
};
std::string_view QueryRoleName(QueryRole role);

struct AtQuery {
  QueryRole role = QueryRole::kStatement;
  std::string sql;
  QueryParams params;      // the client's own for kBeforeImage/kLockKeys/kStatement
  int hidden_columns = 0;  // kStatement: trailing columns (text format) the client must not see
  // The same text comes again and again (its values are parameters): the session may keep it
  // prepared on the server and run it from there.
  bool keep = false;
};

// A query's answer in text format (the hidden and engine-facing columns must be asked in text).
struct QueryResult {
  std::vector<std::vector<std::optional<std::string>>> rows;
  std::string command_tag;  // "UPDATE 3"
};

}  // namespace dtx::at
