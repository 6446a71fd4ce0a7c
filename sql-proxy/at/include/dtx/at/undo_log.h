// The undo log: its table, its row format (docs/undo-log.md), and the lock keys of AT branches.
//
// One undo-log row per branch: (xid, branch_id) is its primary key, log_status 0 for a normal
// row written in the client's local transaction at COMMIT, 1 for the marker a rollback leaves
// when it finds no row (so a late phase-one commit of that branch fails on the key).
// `statements` is a JSON array of UndoEntry in execution order; each row image is the JSON text
// row_to_json() gave for the row, kept as a JSON string so it is restored byte for byte.
//
// Pure functions and values; safe from any thread.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "dtx/at/sql_state.h"

namespace dtx::at {

inline constexpr std::string_view kDefaultUndoTable = "dtx_undo_log";

enum class UndoKind { kInsert, kUpdate, kDelete };
std::string_view UndoKindName(UndoKind kind);

// The changes of one statement to one table.
struct UndoEntry {
  UndoKind kind = UndoKind::kInsert;
  std::string schema, table;
  std::vector<std::string> primary_key;  // column names
  // One per row, in the same order. keys: primary-key values as text. before: the row before
  // (UPDATE, DELETE); after: the row after (INSERT, UPDATE). Images are row_to_json() text.
  std::vector<std::vector<std::string>> keys;
  std::vector<std::string> before;
  std::vector<std::string> after;
};

// `table` is an SQL name as written in queries (e.g. dtx_undo_log or "s"."dtx_undo_log").
std::string CreateUndoTableSql(std::string_view table);
std::string EncodeUndo(const std::vector<UndoEntry>& entries);
Result<std::vector<UndoEntry>> DecodeUndo(std::string_view json);
// INSERT of the branch's undo row: $1 xid, $2 branch_id, $3 statements.
AtQuery InsertUndoQuery(std::string_view table, const std::string& xid, int64_t branch_id,
                        const std::vector<UndoEntry>& entries);

// "resource:schema.table:pk1,pk2" with '\' ':' ',' '.' inside each part escaped by a '\'
// (docs/undo-log.md), so distinct rows never share a key.
std::string LockKey(std::string_view resource_id, std::string_view schema, std::string_view table,
                    const std::vector<std::string>& key_values);

}  // namespace dtx::at
