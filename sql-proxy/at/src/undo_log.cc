#include "dtx/at/undo_log.h"

#include <nlohmann/json.hpp>

namespace dtx::at {

std::string_view UndoKindName(UndoKind kind) {
  switch (kind) {
    case UndoKind::kInsert: return "insert";
    case UndoKind::kUpdate: return "update";
    case UndoKind::kDelete: return "delete";
  }
  return "?";
}

std::string CreateUndoTableSql(std::string_view table) {
  std::string t(table);
  return "CREATE TABLE IF NOT EXISTS " + t +
         " (xid text NOT NULL, branch_id bigint NOT NULL, log_status smallint NOT NULL DEFAULT 0,"
         " statements json NOT NULL, created_at timestamptz NOT NULL DEFAULT now(),"
         " PRIMARY KEY (xid, branch_id))";
}

std::string EncodeUndo(const std::vector<UndoEntry>& entries) {
  nlohmann::json arr = nlohmann::json::array();
  for (const auto& e : entries) {
    nlohmann::json j;
    j["kind"] = UndoKindName(e.kind);
    j["schema"] = e.schema;
    j["table"] = e.table;
    j["pk"] = e.primary_key;
    j["keys"] = e.keys;
    if (e.kind != UndoKind::kInsert) j["before"] = e.before;
    if (e.kind != UndoKind::kDelete) j["after"] = e.after;
    arr.push_back(std::move(j));
  }
  return arr.dump();
}

Result<std::vector<UndoEntry>> DecodeUndo(std::string_view text) {
  auto arr = nlohmann::json::parse(text, nullptr, false);
  if (!arr.is_array()) return Corruption("undo log: statements is not a JSON array");
  std::vector<UndoEntry> out;
  try {
    for (const auto& j : arr) {
      UndoEntry e;
      std::string kind = j.at("kind").get<std::string>();
      if (kind == "insert") e.kind = UndoKind::kInsert;
      else if (kind == "update") e.kind = UndoKind::kUpdate;
      else if (kind == "delete") e.kind = UndoKind::kDelete;
      else return Corruption("undo log: unknown kind " + kind);
      e.schema = j.at("schema").get<std::string>();
      e.table = j.at("table").get<std::string>();
      e.primary_key = j.at("pk").get<std::vector<std::string>>();
      e.keys = j.at("keys").get<std::vector<std::vector<std::string>>>();
      if (j.contains("before")) e.before = j["before"].get<std::vector<std::string>>();
      if (j.contains("after")) e.after = j["after"].get<std::vector<std::string>>();
      size_t rows = e.keys.size();
      if ((e.kind != UndoKind::kInsert && e.before.size() != rows) || (e.kind != UndoKind::kDelete && e.after.size() != rows)) {
        return Corruption("undo log: images and keys do not match");
      }
      out.push_back(std::move(e));
    }
  } catch (const nlohmann::json::exception& ex) {
    return Corruption(std::string("undo log: ") + ex.what());
  }
  return out;
}

AtQuery InsertUndoQuery(std::string_view table, const std::string& xid, int64_t branch_id,
                        const std::vector<UndoEntry>& entries) {
  AtQuery q;
  q.role = QueryRole::kUndoWrite;
  q.sql = "INSERT INTO " + std::string(table) + " (xid, branch_id, log_status, statements) VALUES ($1, $2, 0, $3::json)";
  q.params.values = {xid, std::to_string(branch_id), EncodeUndo(entries)};
  return q;
}

static void Escape(std::string& out, std::string_view part) {
  for (char c : part) {
    if (c == '\\' || c == ':' || c == ',' || c == '.') out += '\\';
    out += c;
  }
}

std::string LockKey(std::string_view resource_id, std::string_view schema, std::string_view table,
                    const std::vector<std::string>& key_values) {
  std::string k;
  Escape(k, resource_id);
  k += ':';
  Escape(k, schema);
  k += '.';
  Escape(k, table);
  k += ':';
  for (size_t i = 0; i < key_values.size(); ++i) {
    if (i) k += ',';
    Escape(k, key_values[i]);
  }
  return k;
}

}  // namespace dtx::at
