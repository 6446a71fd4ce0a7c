#include "dtx/coordinator/metrics.h"

#include <fmt/format.h>

#include <algorithm>

namespace dtx::coordinator {
namespace {

std::vector<double> LatencyBounds() {
  return {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
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

}  // namespace

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
    : begin_to_decision(LatencyBounds()), phase_two_duration(LatencyBounds()) {}

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
  for (const auto& g : gauges_) {
    fmt::format_to(std::back_inserter(out), "# HELP {} {}\n# TYPE {} {}\n{} {}\n", g.name, g.help, g.name,
                   g.counter ? "counter" : "gauge", g.name, g.read());
  }
  return out;
}

}  // namespace dtx::coordinator
