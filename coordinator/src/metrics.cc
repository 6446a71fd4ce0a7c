#include "dtx/coordinator/metrics.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>

#include "dtx/coordinator/coordinator.h"
#include "dtx/rpc/service_registry.h"

namespace dtx::coordinator {
namespace {

std::vector<double> LatencyBounds() {
  return {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
}

// Finer, for calls and log writes that take tens of microseconds to milliseconds.
std::vector<double> CallBounds() {
  return {0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.0075,
          0.01,     0.025,   0.05,   0.1,     0.25,   0.5,   1,      2.5,   5,     10};
}

std::vector<std::string> CoordinatorMethods() {
  return {"Begin",  "Commit",         "Rollback",     "Report",       "GetStatus",
          "RegisterParticipant", "RegisterBranch", "ReportBranch", "QueryLocks"};
}

void RenderCounter(std::string& out, std::string_view name, std::string_view help, uint64_t v) {
  fmt::format_to(std::back_inserter(out), "# HELP {} {}\n# TYPE {} counter\n{} {}\n", name, help, name, name, v);
}

void RenderHistogram(std::string& out, std::string_view name, std::string_view help, const Histogram& h) {
  fmt::format_to(std::back_inserter(out), "# HELP {} {}\n# TYPE {} histogram\n", name, help, name);
  auto counts = h.counts();
  for (size_t i = 0; i < h.bounds().size(); ++i)
    fmt::format_to(std::back_inserter(out), "{}_bucket{{le=\"{}\"}} {}\n", name, h.bounds()[i], counts[i]);
  fmt::format_to(std::back_inserter(out), "{}_bucket{{le=\"+Inf\"}} {}\n{}_sum {}\n{}_count {}\n", name,
                 counts.back(), name, h.sum(), name, h.count());
}

void RenderFamily(std::string& out, std::string_view name, std::string_view help, const HistogramFamily& f) {
  fmt::format_to(std::back_inserter(out), "# HELP {} {}\n# TYPE {} histogram\n", name, help, name);
  for (const auto& [value, h] : f.members()) {
    auto counts = h->counts();
    for (size_t i = 0; i < h->bounds().size(); ++i)
      fmt::format_to(std::back_inserter(out), "{}_bucket{{{}=\"{}\",le=\"{}\"}} {}\n", name, f.label(), value,
                     h->bounds()[i], counts[i]);
    fmt::format_to(std::back_inserter(out), "{}_bucket{{{}=\"{}\",le=\"+Inf\"}} {}\n", name, f.label(), value,
                   counts.back());
    fmt::format_to(std::back_inserter(out), "{}_sum{{{}=\"{}\"}} {}\n{}_count{{{}=\"{}\"}} {}\n", name, f.label(),
                   value, h->sum(), name, f.label(), value, h->count());
  }
}

class CallTimer final : public rpc::CallObserver {
 public:
  explicit CallTimer(std::shared_ptr<Metrics> m) : m_(std::move(m)) {}
  void Answered(std::string_view service, std::string_view method, std::chrono::nanoseconds elapsed) override {
    if (service != kCoordinatorService) return;
    if (Histogram* h = m_->call_duration.Find(method)) h->Observe(std::chrono::duration<double>(elapsed).count());
  }
  void Delivered(std::chrono::nanoseconds elapsed, bool handed_off) override {
    if (handed_off) {
      m_->reply_handoff.Observe(std::chrono::duration<double>(elapsed).count());
    } else {
      m_->replies_written_directly.Add();
    }
  }

 private:
  std::shared_ptr<Metrics> m_;
};

}  // namespace

std::shared_ptr<rpc::CallObserver> MakeCallObserver(std::shared_ptr<Metrics> metrics) {
  return std::make_shared<CallTimer>(std::move(metrics));
}

HistogramFamily::HistogramFamily(std::string label, const std::vector<std::string>& values,
                                 const std::vector<double>& bounds)
    : label_(std::move(label)) {
  for (const auto& v : values) members_.emplace_back(v, std::make_unique<Histogram>(bounds));
}

Histogram* HistogramFamily::Find(std::string_view value) {
  for (auto& [v, h] : members_)
    if (v == value) return h.get();
  return nullptr;
}

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)), buckets_(new std::atomic<uint64_t>[bounds_.size() + 1]) {
  for (size_t i = 0; i <= bounds_.size(); ++i) buckets_[i] = 0;
}

void Histogram::Observe(double seconds) {
  const size_t i = static_cast<size_t>(std::lower_bound(bounds_.begin(), bounds_.end(), seconds) - bounds_.begin());
  buckets_[i].fetch_add(1, std::memory_order_relaxed);
  sum_micros_.fetch_add(static_cast<uint64_t>(std::max(0.0, seconds) * 1e6), std::memory_order_relaxed);
  count_.fetch_add(1, std::memory_order_relaxed);
}

std::vector<uint64_t> Histogram::counts() const {
  std::vector<uint64_t> out(bounds_.size() + 1);
  uint64_t running = 0;
  for (size_t i = 0; i <= bounds_.size(); ++i) {
    running += buckets_[i].load(std::memory_order_relaxed);
    out[i] = running;
  }
  return out;
}

Metrics::Metrics()
    : begin_to_decision(LatencyBounds()),
      phase_two_duration(LatencyBounds()),
      call_duration("method", CoordinatorMethods(), CallBounds()),
      log_write_duration("kind", {"durable", "unsynced"}, CallBounds()),
      reply_handoff(CallBounds()) {}

void Metrics::AddGauge(std::string name, std::string help, std::function<double()> read, bool counter) {
  gauges_.push_back({std::move(name), std::move(help), std::move(read), counter});
}

std::string Metrics::Render() const {
  std::string out;
  RenderCounter(out, "dtx_transactions_begun_total", "Global transactions begun.", transactions_begun.value());
  RenderCounter(out, "dtx_transactions_committed_total", "Global transactions committed (phase 2 done).",
                transactions_committed.value());
  RenderCounter(out, "dtx_transactions_rolled_back_total", "Global transactions rolled back (phase 2 done).",
                transactions_rolled_back.value());
  RenderCounter(out, "dtx_transactions_timed_out_total", "Global transactions rolled back because they timed out.",
                transactions_timed_out.value());
  RenderCounter(out, "dtx_transactions_failed_total", "Global transactions that ended CommitFailed or RollbackFailed.",
                transactions_failed.value());
  RenderCounter(out, "dtx_branches_registered_total", "Branches registered.", branches_registered.value());
  RenderCounter(out, "dtx_lock_conflicts_total", "Branch registrations refused for a held row lock.",
                lock_conflicts.value());
  RenderCounter(out, "dtx_phase_two_calls_total", "BranchCommit and BranchRollback calls sent.", phase_two_calls.value());
  RenderCounter(out, "dtx_phase_two_retries_total", "Phase-2 calls retried after a failure.", phase_two_retries.value());
  RenderHistogram(out, "dtx_begin_to_decision_seconds", "From Begin until the outcome was durable.", begin_to_decision);
  RenderHistogram(out, "dtx_phase_two_seconds", "From the durable outcome until phase 2 finished.", phase_two_duration);
  RenderFamily(out, "dtx_call_seconds", "Coordinator calls: from the request decoded until its answer was given.",
               call_duration);
  RenderFamily(out, "dtx_log_write_seconds",
               "The coordinator's log writes: queued until the log answered (durable: after the fsync; unsynced: "
               "after the commit).",
               log_write_duration);
  RenderHistogram(out, "dtx_rpc_reply_handoff_seconds",
                  "Answers given on another thread: waiting for the connection's I/O thread to queue them.",
                  reply_handoff);
  RenderCounter(out, "dtx_rpc_replies_written_directly_total",
                "Answers given on another thread and written to the socket by that thread.",
                replies_written_directly.value());
  for (const auto& g : gauges_) {
    fmt::format_to(std::back_inserter(out), "# HELP {} {}\n# TYPE {} {}\n{} {}\n", g.name, g.help, g.name,
                   g.counter ? "counter" : "gauge", g.name, g.read());
  }
  return out;
}

}  // namespace dtx::coordinator
