#include "dtx/at/undo_sweeper.h"

#include <spdlog/spdlog.h>

#include <nlohmann/json.hpp>
#include <algorithm>
#include <optional>
#include <vector>

namespace dtx::at {
namespace {

// The outcome is commit: no rollback can come for this xid any more.
bool CommitDecided(sdk::GlobalStatus s) {
  return s == sdk::GlobalStatus::kCommitting || s == sdk::GlobalStatus::kCommitRetrying ||
         s == sdk::GlobalStatus::kAsyncCommitting || s == sdk::GlobalStatus::kCommitted;
}

uint64_t DeletedRows(const QueryResult& r) {
  // "DELETE n"
  const auto space = r.command_tag.rfind(' ');
  if (space == std::string::npos) return 0;
  try {
    return std::stoull(r.command_tag.substr(space + 1));
  } catch (...) {
    return 0;
  }
}

}  // namespace

UndoSweeper::UndoSweeper(std::map<std::string, std::string> databases, std::string undo_table, StatusFn status,
                         UndoSweepOptions options)
    : databases_(std::move(databases)),
      undo_table_(std::move(undo_table)),
      status_(std::move(status)),
      options_(options) {
  if (options_.batch == 0) options_.batch = 1;
}

UndoSweeper::~UndoSweeper() { Stop(); }

UndoSweepStats UndoSweeper::SweepOnce() {
  UndoSweepStats stats;
  for (const auto& [resource, conninfo] : databases_) {
    Status s = SweepDatabase(resource, conninfo, stats);
    if (!s.ok()) spdlog::warn("undo sweep of {}: {} (tried again in the next round)", resource, s.ToString());
  }
  const uint64_t deleted = stats.rows_deleted + stats.markers_deleted;
  swept_rows_ += deleted;
  ++rounds_;
  if (deleted > 0) {
    spdlog::info("undo sweep: deleted {} undo row(s) of committed or forgotten transactions and {} old rollback "
                 "marker(s) ({} xid(s) looked at)",
                 stats.rows_deleted, stats.markers_deleted, stats.xids_seen);
  }
  return stats;
}

Status UndoSweeper::SweepDatabase(const std::string& resource, const std::string& conninfo, UndoSweepStats& stats) {
  auto& conn = conns_[resource];
  if (!conn || !conn->ok()) {
    conn.reset();
    auto c = PgConnection::Open(conninfo);
    if (!c.ok()) return c.status();
    conn = std::move(*c);
  }
  const std::string marker_age_ms = std::to_string(options_.marker_age.count());
  // Keyset paging over (first row's time, xid): xids kept in one page do not hide later ones.
  std::optional<std::string> after_time, after_xid;
  size_t seen = 0;
  while (seen < options_.max_xids) {
    const size_t limit = std::min(options_.batch, options_.max_xids - seen);
    auto page = conn->Run(
        "SELECT xid, min(created_at)::text, bool_or(log_status = 0),"
        " bool_or(log_status = 1 AND created_at < now() - $4::bigint * interval '1 millisecond')"
        " FROM " + undo_table_ +
            " GROUP BY xid"
            " HAVING $2::timestamptz IS NULL OR (min(created_at), xid) > ($2::timestamptz, $3::text)"
            " ORDER BY min(created_at), xid LIMIT $1::bigint",
        {std::to_string(limit), after_time, after_xid, marker_age_ms});
    if (!page.ok()) return page.status();
    if (page->rows.empty()) break;
    seen += page->rows.size();
    stats.xids_seen += page->rows.size();
    const auto& last = page->rows.back();
    after_xid = last[0];
    after_time = last[1];

    nlohmann::json rows = nlohmann::json::array(), markers = nlohmann::json::array();
    Status stop_status = Status::Ok();
    for (const auto& row : page->rows) {
      const std::string xid = row[0].value_or("");
      const bool has_rows = row[2] == std::optional<std::string>("t");
      const bool has_old_marker = row[3] == std::optional<std::string>("t");
      if (!has_rows && !has_old_marker) continue;  // only young markers: nothing to ask
      auto state = status_(xid);
      bool forgotten = false;
      if (!state.ok()) {
        if (state.status().code() != StatusCode::kNotFound) {
          // Unreachable, shutting down, ...: nothing is known, so nothing is deleted.
          ++stats.status_errors;
          stop_status = state.status().WithContext("status of " + xid);
          break;
        }
        forgotten = true;
      }
      if (has_rows && (forgotten || CommitDecided(state->status))) rows.push_back(xid);
      if (has_old_marker && (forgotten || sdk::IsFinal(state->status))) markers.push_back(xid);
    }
    if (!rows.empty()) {
      auto d = conn->Run("DELETE FROM " + undo_table_ +
                             " WHERE log_status = 0 AND xid IN (SELECT json_array_elements_text($1::json))",
                         {rows.dump()});
      if (!d.ok()) return d.status();
      stats.rows_deleted += DeletedRows(*d);
    }
    if (!markers.empty()) {
      // The age is checked again: only markers that were old when the status was asked go.
      auto d = conn->Run("DELETE FROM " + undo_table_ +
                             " WHERE log_status = 1 AND xid IN (SELECT json_array_elements_text($1::json))"
                             " AND created_at < now() - $2::bigint * interval '1 millisecond'",
                         {markers.dump(), marker_age_ms});
      if (!d.ok()) return d.status();
      stats.markers_deleted += DeletedRows(*d);
    }
    if (!stop_status.ok()) return stop_status;
    if (page->rows.size() < limit) break;
  }
  return Status::Ok();
}

void UndoSweeper::Start() {
  std::lock_guard lock(mu_);
  if (thread_.joinable()) return;
  stop_ = false;
  thread_ = std::thread([this] {
    std::unique_lock lock(mu_);
    while (!stop_) {
      lock.unlock();
      SweepOnce();
      lock.lock();
      cv_.wait_for(lock, options_.interval, [&] { return stop_; });
    }
  });
}

void UndoSweeper::Stop() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

}  // namespace dtx::at
