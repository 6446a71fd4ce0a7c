// Removing the engine's hidden columns from the server's answer to a rewritten statement.
//
// A write of a bound session runs with extra trailing RETURNING columns (AtQuery::hidden_columns,
// both of type text, so their bytes are the same whichever result format the client's Bind asked
// for). The session hands their values to the engine and forwards the message to the client
// without them. These are pure functions over PostgreSQL message bodies (the bytes after the
// 4-byte length): RowDescription ('T') and DataRow ('D').
//
// Thread-safety: pure functions.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "dtx/at/sql_state.h"

namespace dtx::at {

// The body without its last `n` columns; an error for a malformed body or fewer than n columns.
Result<std::string> DropTrailingColumns(char type, std::string_view body, int n);
// A DataRow body's last `n` values (nullopt for NULL).
Result<std::vector<std::optional<std::string>>> TrailingValues(std::string_view data_row_body, int n);

}  // namespace dtx::at
