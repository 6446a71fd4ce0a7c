#include "dtx/at/catalog.h"

#include <nlohmann/json.hpp>

namespace dtx::at {

std::string TableRef::Spelling() const {
  return schema.empty() ? QuoteIdent(name) : QuoteIdent(schema) + "." + QuoteIdent(name);
}

std::string TableInfo::QualifiedName() const { return QuoteIdent(schema) + "." + QuoteIdent(name); }

std::optional<TableInfo> Catalog::Find(const TableRef& table) {
  const auto now = std::chrono::steady_clock::now();
  std::lock_guard lock(mu_);
  auto it = tables_.find(table.Spelling());
  if (it == tables_.end()) return std::nullopt;
  Entry& e = it->second;
  if (now - e.stored > max_age_ && now >= e.refresh_claimed_until) {
    e.refresh_claimed_until = now + refresh_claim_;  // this caller looks it up again
    return std::nullopt;
  }
  return e.info;
}

AtQuery Catalog::LookupQuery(const TableRef& table) {
  AtQuery q;
  q.role = QueryRole::kCatalog;
  q.sql =
      "SELECT n.nspname::text, c.relname::text, c.relkind::text,"
      " coalesce((SELECT json_agg(a.attname ORDER BY k.ord) FROM pg_index i,"
      " unnest(i.indkey::int2[]) WITH ORDINALITY k(attnum, ord), pg_attribute a"
      " WHERE i.indrelid = c.oid AND i.indisprimary AND a.attrelid = c.oid AND a.attnum = k.attnum), '[]')::text,"
      " coalesce((SELECT json_agg(a.attname ORDER BY a.attnum) FROM pg_attribute a WHERE a.attrelid = c.oid"
      " AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''), '[]')::text,"
      " coalesce((SELECT json_agg(a.attname ORDER BY a.attnum) FROM pg_attribute a WHERE a.attrelid = c.oid"
      " AND a.attnum > 0 AND NOT a.attisdropped AND a.attidentity = 'a'), '[]')::text,"
      " EXISTS (SELECT 1 FROM pg_constraint f WHERE f.confrelid = c.oid AND f.contype = 'f'"
      " AND f.confdeltype IN ('c', 'n', 'd'))::text,"
      // Writes beyond the statement's own rows: triggers of the table's own (not the internal
      // ones of foreign keys; on its partitions too), rules, ON UPDATE actions of foreign keys,
      // column defaults and CHECK constraints that call functions of no extension outside
      // pg_catalog.
      " (c.relhasrules OR EXISTS (SELECT 1 FROM pg_trigger t WHERE NOT t.tgisinternal AND t.tgenabled <> 'D'"
      " AND (t.tgrelid = c.oid OR t.tgrelid IN (SELECT p.relid FROM pg_partition_tree(c.oid) p)))"
      " OR EXISTS (SELECT 1 FROM pg_constraint f WHERE f.confrelid = c.oid AND f.contype = 'f'"
      " AND f.confupdtype IN ('c', 'n', 'd'))"
      " OR EXISTS (SELECT 1 FROM (SELECT 'pg_attrdef'::regclass AS cls, a.oid FROM pg_attrdef a WHERE a.adrelid = c.oid"
      " UNION ALL SELECT 'pg_constraint'::regclass, k.oid FROM pg_constraint k WHERE k.conrelid = c.oid) o"
      " JOIN pg_depend d ON d.classid = o.cls AND d.objid = o.oid AND d.refclassid = 'pg_proc'::regclass"
      " JOIN pg_proc p ON p.oid = d.refobjid WHERE p.pronamespace <> 'pg_catalog'::regnamespace"
      " AND NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.classid = 'pg_proc'::regclass AND e.objid = p.oid"
      " AND e.deptype = 'e')))::text"
      " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = to_regclass($1)";
  q.params.values = {table.Spelling()};
  return q;
}

static std::vector<std::string> Names(const std::optional<std::string>& json_text) {
  std::vector<std::string> out;
  if (!json_text) return out;
  auto j = nlohmann::json::parse(*json_text, nullptr, false);
  if (!j.is_array()) return out;
  for (const auto& v : j) {
    if (v.is_string()) out.push_back(v.get<std::string>());
  }
  return out;
}

Result<TableInfo> Catalog::Store(const TableRef& table, const QueryResult& lookup) {
  if (lookup.rows.empty()) {
    Forget(table);
    return SqlError(sqlstate::kUndefinedTable, "relation " + table.Spelling() + " does not exist");
  }
  const auto& row = lookup.rows.front();
  if (row.size() < 8 || !row[0] || !row[1] || !row[2]) return SqlError(sqlstate::kInternal, "unexpected catalog answer");
  if (*row[2] != "r" && *row[2] != "p") {
    Forget(table);
    return SqlError(sqlstate::kFeatureNotSupported,
                    "AT mode writes plain tables only; " + table.Spelling() + " is a view or another kind of relation");
  }
  TableInfo info;
  info.schema = *row[0];
  info.name = *row[1];
  info.primary_key = Names(row[3]);
  info.columns = Names(row[4]);
  info.identity_always = Names(row[5]);
  info.delete_cascades = row[6] == std::optional<std::string>("true");
  info.side_effects = row[7] == std::optional<std::string>("true");
  std::lock_guard lock(mu_);
  tables_[table.Spelling()] = Entry{info, std::chrono::steady_clock::now()};
  return info;
}

void Catalog::Forget(const TableRef& table) {
  std::lock_guard lock(mu_);
  tables_.erase(table.Spelling());
}

void Catalog::Invalidate() {
  std::lock_guard lock(mu_);
  tables_.clear();
}

}  // namespace dtx::at
