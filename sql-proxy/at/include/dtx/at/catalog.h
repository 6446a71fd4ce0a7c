// Catalog: primary-key and column names per table, read from pg_catalog and cached.
//
// The engine does no I/O: LookupQuery() is the SQL to run (on the session's backend, or a
// PgConnection) and Store() takes its answer. A name written without a schema is cached under
// that spelling and resolved by the search_path of the connection that looked it up first.
// Invalidate() after DDL (the proxy refuses DDL in bound sessions, but others may run it).
//
// Thread-safety: all methods may be called concurrently (one mutex); one Catalog per backend
// database, shared by its sessions through shared_ptr.
#pragma once

#include <chrono>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "dtx/at/sql_state.h"

namespace dtx::at {

// A table as a statement names it (schema empty: by search_path). Names are as stored
// (unquoted identifiers already folded to lower case by the parser).
struct TableRef {
  std::string schema;
  std::string name;
  std::string Spelling() const;  // "schema"."name" quoted, or "name"
};

struct TableInfo {
  std::string schema;                    // resolved
  std::string name;
  std::vector<std::string> primary_key;  // in key order; empty: the table has none
  std::vector<std::string> columns;      // writable columns in order (not dropped, not generated)
  std::vector<std::string> identity_always;  // GENERATED ALWAYS AS IDENTITY columns
  // A foreign key of another table deletes or changes its rows when a row here is deleted
  // (ON DELETE CASCADE / SET NULL / SET DEFAULT): those changes would escape the undo log.
  bool delete_cascades = false;
  // A write here may write elsewhere too: the table (or a partition of it) has triggers of its
  // own or rules, or a foreign key of another table changes its rows when a key here changes
  // (ON UPDATE CASCADE / SET NULL / SET DEFAULT). See AtBranch::MayWriteElsewhere.
  bool side_effects = false;
  std::string QualifiedName() const;     // "schema"."name"
};

class Catalog {
 public:
  // Entries older than `max_age` are looked up again, so that DDL made past the proxy (a new
  // trigger, a changed primary key) is seen within about that time. Once an entry is older, the
  // first Find misses and its caller looks the table up; until its Store() (or for at most
  // `refresh_claim`, should that lookup never end) the others get the old entry rather than all
  // running the same lookup at once.
  explicit Catalog(std::chrono::milliseconds max_age = kDefaultMaxAge,
                   std::chrono::milliseconds refresh_claim = kDefaultRefreshClaim)
      : max_age_(max_age), refresh_claim_(refresh_claim) {}
  static constexpr std::chrono::milliseconds kDefaultMaxAge{10'000};
  static constexpr std::chrono::milliseconds kDefaultRefreshClaim{2'000};

  std::optional<TableInfo> Find(const TableRef& table);
  // The lookup; its one row (or none when the table does not exist) goes to Store().
  static AtQuery LookupQuery(const TableRef& table);
  // Caches and returns the table's description; 42P01 when the lookup found no table, 0A000
  // when the relation is not a plain or partitioned table (both drop what was cached for it).
  Result<TableInfo> Store(const TableRef& table, const QueryResult& lookup);
  void Invalidate();

 private:
  void Forget(const TableRef& table);
  struct Entry {
    TableInfo info;
    std::chrono::steady_clock::time_point stored;
    // While a caller looks the aged entry up again (set by the Find that missed).
    std::chrono::steady_clock::time_point refresh_claimed_until;
  };
  const std::chrono::milliseconds max_age_;
  const std::chrono::milliseconds refresh_claim_;
  mutable std::mutex mu_;
  std::map<std::string, Entry> tables_;  // by TableRef::Spelling()
};

}  // namespace dtx::at
