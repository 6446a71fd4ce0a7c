#include "dtx/coordinator/admin_server.h"

#include <spdlog/spdlog.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <optional>
#include <utility>
#include <vector>

#include "dtx/common/http_server.h"

namespace dtx::coordinator {
namespace {

using json = nlohmann::json;
using dtx::http::Request;
using dtx::http::Response;

constexpr size_t kDefaultLimit = 100;
constexpr size_t kMaxLimit = 1000;
constexpr size_t kMaxOperatorName = 128;
constexpr std::string_view kPrometheusType = "text/plain; version=0.0.4";

// ---- requests ----

bool Is(const std::vector<std::string>& segments, std::initializer_list<std::string_view> want) {
  return std::equal(segments.begin(), segments.end(), want.begin(), want.end());
}

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  return std::equal(a.begin(), a.end(), b.begin(), b.end(), [](char x, char y) {
    return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
  });
}

constexpr auto kStatuses = [] {
  std::array<log::GlobalStatus, 14> all{};
  for (int i = 0; i < 14; ++i) all[i] = static_cast<log::GlobalStatus>(i + 1);
  return all;
}();

// A status by its name (any case) or its number.
std::optional<log::GlobalStatus> ParseStatus(std::string_view s) {
  for (log::GlobalStatus status : kStatuses) {
    if (EqualsIgnoreCase(s, log::GlobalStatusName(status)) || s == std::to_string(static_cast<int>(status))) {
      return status;
    }
  }
  return std::nullopt;
}

std::optional<int64_t> ParseInt(std::string_view s) {
  int64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size()) return std::nullopt;
  return v;
}

std::string_view ActionName(OperatorAction action) {
  switch (action) {
    case OperatorAction::kRetry: return "retry";
    case OperatorAction::kForceCommitted: return "force-commit";
    case OperatorAction::kForceRolledBack: return "force-rollback";
  }
  return "?";
}

std::optional<OperatorAction> ActionNamed(std::string_view name) {
  for (OperatorAction a : {OperatorAction::kRetry, OperatorAction::kForceCommitted, OperatorAction::kForceRolledBack}) {
    if (name == ActionName(a)) return a;
  }
  return std::nullopt;
}

// ---- responses ----

Response Text(int status, std::string body) { return Response{status, "text/plain", std::move(body), {}}; }

Response Json(int status, const json& j) {
  // Records hold what clients sent; bytes that are not UTF-8 become U+FFFD rather than an exception.
  return Response{status, "application/json", j.dump(-1, ' ', false, json::error_handler_t::replace) + "\n", {}};
}

Response Error(int status, std::string_view message) { return http::JsonError(status, message); }

json GlobalJson(const log::GlobalRecord& g) {
  return {
      {"xid", g.xid},
      {"status", std::string(log::GlobalStatusName(g.status))},
      {"status_code", static_cast<int>(g.status)},
      {"name", g.name},
      {"application", g.application},
      {"timeout_ms", g.timeout_ms},
      {"begin_time_ms", g.begin_time_ms},
      {"owner_node", g.owner_node},
      {"updated_time_ms", g.updated_time_ms},
  };
}

json BranchJson(const log::BranchRecord& b) {
  return {
      {"branch_id", b.branch_id},
      {"resource_id", b.resource_id},
      {"type", std::string(log::BranchTypeName(b.type))},
      {"status", std::string(log::BranchStatusName(b.status))},
      {"status_code", static_cast<int>(b.status)},
      {"lock_keys", b.lock_keys},
      {"client_id", b.client_id},
      {"registered_time_ms", b.registered_time_ms},
      {"application_data_size", b.application_data.size()},
  };
}

// The admin API proper: a request in, a response out, no sockets.
class Api {
 public:
  Api(Coordinator& coordinator, Metrics& metrics) : coordinator_(coordinator), metrics_(metrics) {}

  Response Serve(const Request& req) { return Route(req, req.peer); }

 private:
  Response Route(const Request& req, std::string_view peer) {
    auto target = http::ParseTarget(req.target);
    if (!target) return Error(400, "malformed request target");
    const auto& seg = target->segments;
    if (Is(seg, {"healthz"})) {
      return Only(req, "GET", [&] { return Text(200, "ok\n"); });
    }
    if (Is(seg, {"readyz"})) {
      return Only(req, "GET", [&] {
        return coordinator_.recovered() ? Text(200, "ready\n")
                                        : Text(503, "recovering\n");
      });
    }
    if (Is(seg, {"metrics"})) {
      return Only(req, "GET",
                  [&] { return Response{200, std::string(kPrometheusType), metrics_.Render(), {}}; });
    }
    if (seg.size() >= 3 && seg[0] == "api" && seg[1] == "v1" && seg[2] == "transactions") {
      if (seg.size() == 3) return Only(req, "GET", [&] { return List(req, target->query); });
      const std::string& xid = seg[3];
      if (!xid.empty() && seg.size() == 4) return Only(req, "GET", [&] { return Show(req, xid); });
      if (!xid.empty() && seg.size() == 5) {
        if (auto action = ActionNamed(seg[4])) {
          return Only(req, "POST", [&] { return Act(req, xid, *action, peer); });
        }
      }
    }
    return Error(404, "no such endpoint: " + target->path);
  }

  template <typename Handler>
  Response Only(const Request& req, std::string_view method, Handler&& handle) {
    if (req.method == method) return handle();
    Response res = Error(405, "use " + std::string(method));
    res.headers.emplace_back("Allow", std::string(method));
    return res;
  }

  Response List(const Request& req, const std::vector<std::pair<std::string, std::string>>& query) {
    log::ListFilter filter;
    filter.limit = kDefaultLimit;
    for (const auto& [key, value] : query) {
      if (key == "status") {
        for (std::string_view name : http::Split(value, ',')) {
          if (name.empty()) continue;
          auto status = ParseStatus(name);
          if (!status) {
            std::string known;
            for (log::GlobalStatus s : kStatuses) {
              known += (known.empty() ? "" : ", ") + std::string(log::GlobalStatusName(s));
            }
            return Error(400,
                         "unknown status '" + std::string(name) + "'; known statuses: " + known);
          }
          filter.statuses.push_back(*status);
        }
      } else if (key == "begun_before_ms") {
        auto ms = ParseInt(value);
        if (!ms || *ms < 0) return Error(400, "begun_before_ms must be a Unix time in ms");
        filter.begun_before_ms = *ms;
      } else if (key == "after") {
        filter.after_xid = value;
      } else if (key == "limit") {
        auto limit = ParseInt(value);
        if (!limit || *limit < 1) return Error(400, "limit must be a positive number");
        filter.limit = std::min<size_t>(static_cast<size_t>(*limit), kMaxLimit);
      } else {
        return Error(400,
                     "unknown query parameter '" + key + "' (known: status, begun_before_ms, after, limit)");
      }
    }
    auto page = coordinator_.store().List(filter);
    if (!page.ok()) {
      SPDLOG_WARN("admin: listing transactions: {}", page.status().ToString());
      return Error(500, "reading the log: " + page.status().ToString());
    }
    json list = json::array();
    for (const auto& g : page->transactions) list.push_back(GlobalJson(g));
    return Json(200, json{{"transactions", std::move(list)}, {"next_after", page->next_after_xid}});
  }

  Response Show(const Request& req, const std::string& xid) {
    auto snapshot = coordinator_.store().Get(xid);
    if (!snapshot.ok()) {
      SPDLOG_WARN("admin: reading {}: {}", xid, snapshot.status().ToString());
      return Error(500, "reading the log: " + snapshot.status().ToString());
    }
    if (!*snapshot) return Error(404, "no transaction " + xid + " in the log");
    const log::TransactionSnapshot& t = **snapshot;
    json out = GlobalJson(t.global);
    out["branches"] = json::array();
    for (const auto& b : t.branches) out["branches"].push_back(BranchJson(b));
    out["locks"] = json::array();
    for (const auto& l : t.locks) out["locks"].push_back(json{{"row_key", l.row_key}, {"branch_id", l.branch_id}});
    return Json(200, out);
  }

  Response Act(const Request& req, const std::string& xid, OperatorAction action, std::string_view peer) {
    const std::string_view who = req.Header("X-Operator");
    if (who.empty()) {
      return Error(400,
                   "an operator action needs an X-Operator header naming who takes it, for the audit log");
    }
    if (who.size() > kMaxOperatorName) return Error(400, "X-Operator is too long");
    if (!coordinator_.recovered()) {
      return Error(503, "the coordinator is still recovering its log");
    }
    const Status s = coordinator_.Act(xid, action, std::string(who));
    SPDLOG_INFO("admin: {} of {} by '{}' from {}: {}", ActionName(action), xid, who, peer, s.ToString());
    if (s.ok()) return Json(200, json{{"ok", true}});
    switch (s.code()) {
      case StatusCode::kNotFound: return Error(404, std::string(s.message()));
      case StatusCode::kFailedPrecondition: return Error(409, std::string(s.message()));
      default: return Error(500, s.ToString());
    }
  }

  Coordinator& coordinator_;
  Metrics& metrics_;
};

}  // namespace

class AdminServer::Impl {
 public:
  Impl(AdminOptions options, Coordinator& coordinator, Metrics& metrics)
      : api(coordinator, metrics),
        server({.host = options.host, .port = options.port, .name = "dtx-coordinator"},
               [this](const Request& req) { return api.Serve(req); }) {}

  Api api;
  http::Server server;
};

AdminServer::AdminServer(AdminOptions options, Coordinator& coordinator, Metrics& metrics)
    : impl_(std::make_unique<Impl>(std::move(options), coordinator, metrics)) {
  metrics.AddGauge("dtx_active_transactions",
                   "Global transactions the coordinator holds: unfinished, or failed and awaiting an operator.",
                   [&coordinator] { return static_cast<double>(coordinator.active_transactions()); });
}

AdminServer::~AdminServer() { Stop(); }

Status AdminServer::Start() { return impl_->server.Start(); }
uint16_t AdminServer::port() const { return impl_->server.port(); }
void AdminServer::Stop() { impl_->server.Stop(); }

}  // namespace dtx::coordinator
