// Metrics: counters, gauges and histograms the coordinator keeps, rendered in the Prometheus
// text exposition format for /metrics. (Debian has no Prometheus client library for C++; this is
// the small part of one that dtx needs.)
//
// Thread-safety: updates are lock-free atomics; registration happens before serving.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace dtx::rpc {
class CallObserver;
}

namespace dtx::coordinator {

class Counter {
 public:
  void Add(uint64_t n = 1) { value_.fetch_add(n, std::memory_order_relaxed); }
  uint64_t value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> value_{0};
};

// Latencies in seconds, with fixed upper bounds.
class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void Observe(double seconds);
  std::vector<uint64_t> counts() const;  // cumulative, one per bound, then +Inf
  const std::vector<double>& bounds() const { return bounds_; }
  double sum() const { return static_cast<double>(sum_micros_.load(std::memory_order_relaxed)) / 1e6; }
  uint64_t count() const { return count_.load(std::memory_order_relaxed); }

 private:
  std::vector<double> bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> buckets_;
  std::atomic<uint64_t> sum_micros_{0};
  std::atomic<uint64_t> count_{0};
};

// Histograms of one name, one per listed value of a label (`method="Begin"`, say).
class HistogramFamily {
 public:
  HistogramFamily(std::string label, const std::vector<std::string>& values, const std::vector<double>& bounds);
  // The histogram for `value`; nullptr if it is not listed.
  Histogram* Find(std::string_view value);
  const std::string& label() const { return label_; }
  const std::vector<std::pair<std::string, std::unique_ptr<Histogram>>>& members() const { return members_; }

 private:
  std::string label_;
  std::vector<std::pair<std::string, std::unique_ptr<Histogram>>> members_;
};

class Metrics {
 public:
  Metrics();

  Counter transactions_begun;
  Counter transactions_committed;
  Counter transactions_rolled_back;
  Counter transactions_timed_out;
  Counter transactions_failed;  // ended in CommitFailed / RollbackFailed, awaiting an operator
  Counter branches_registered;
  Counter lock_conflicts;
  Counter phase_two_calls;
  Counter phase_two_retries;
  Histogram begin_to_decision;   // Begin until the outcome is durable
  Histogram phase_two_duration;  // outcome durable until phase 2 finished
  // Coordinator calls by method: from the request decoded until the answer was given.
  HistogramFamily call_duration;
  // The coordinator's log writes by kind (durable, unsynced): queued until the store answered.
  HistogramFamily log_write_duration;
  // Answers given on another thread than their connection's (after a log write): how long they
  // waited for the connection's I/O thread; and how many the answering thread wrote itself.
  Histogram reply_handoff;
  Counter replies_written_directly;

  // Gauges read when rendering (active transactions, log statistics, connections ...).
  void AddGauge(std::string name, std::string help, std::function<double()> read, bool counter = false);

  // The Prometheus text format.
  std::string Render() const;

 private:
  struct Gauge {
    std::string name, help;
    std::function<double()> read;
    bool counter;
  };
  std::vector<Gauge> gauges_;
};

// Feeds call_duration, reply_handoff and replies_written_directly of `metrics` from an RPC server
// (rpc::ServiceRegistry::SetObserver).
std::shared_ptr<rpc::CallObserver> MakeCallObserver(std::shared_ptr<Metrics> metrics);

}  // namespace dtx::coordinator
