// dtx-coordinator-bench: full global transactions against a running dtx-coordinator.
//
// Each transaction: Begin (TM), RegisterBranch on resource A and on resource B (two in-process
// participants, each on its own connection), Commit (TM); the coordinator then pushes the two
// BranchCommits back to the participants, which answer done at once. A transaction counts once
// its Commit is answered; latency is Begin sent to Commit answered.
//
//   dtx-coordinator-bench --address 127.0.0.1:8091 --connections 16 --inflight 16 --duration 10
//   dtx-coordinator-bench --address 127.0.0.1:8091 --hold 100000     # leave transactions in flight
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <future>
#include <mutex>
#include <thread>

#include "dtx.pb.h"
#include "dtx/rpc/client.h"
#include "latency_histogram.h"

namespace pb = ::dtx::v1;
using namespace dtx;
using Clock = std::chrono::steady_clock;
using dtx::bench::LatencyHistogram;

namespace {

constexpr std::string_view kTc = "dtx.v1.TransactionCoordinator:1.0";
constexpr std::string_view kRm = "dtx.v1.ResourceManager:1.0";

std::atomic<uint64_t> g_phase_two{0};

// A participant answering every BranchCommit / BranchRollback with done.
std::unique_ptr<rpc::Client> Participant(const std::string& address, const std::string& resource,
                                         const std::shared_ptr<rpc::IoPool>& pool) {
  auto services = std::make_shared<rpc::ServiceRegistry>();
  for (const char* method : {"BranchCommit", "BranchRollback"}) {
    const bool commit = std::string_view(method) == "BranchCommit";
    services->AddSyncMethod<pb::BranchRequest, pb::BranchResponse>(
        std::string(kRm), method, [commit](const rpc::CallContext&, const pb::BranchRequest&) -> Result<pb::BranchResponse> {
          g_phase_two.fetch_add(1, std::memory_order_relaxed);
          pb::BranchResponse r;
          r.set_status(commit ? pb::PHASE_TWO_COMMITTED : pb::PHASE_TWO_ROLLBACKED);
          return r;
        });
  }
  rpc::ClientOptions o;
  o.addresses = {address};
  o.io_pool = pool;
  pb::RegisterParticipantRequest reg;
  reg.set_application("bench");
  reg.add_resource_ids(resource);
  reg.set_client_id("bench-" + resource);
  auto registered = std::make_shared<std::promise<void>>();
  o.on_connect = [reg, registered](const std::shared_ptr<rpc::Channel>& c) {
    c->Call<pb::RegisterParticipantResponse>(kTc, "RegisterParticipant", reg, rpc::CallOptions{},
                                             [registered](Result<pb::RegisterParticipantResponse>) {
                                               try {
                                                 registered->set_value();
                                               } catch (...) {
                                               }
                                             });
  };
  auto fut = registered->get_future();
  auto client = std::make_unique<rpc::Client>(o, services);
  fut.wait_for(std::chrono::seconds(10));
  return client;
}

long RssKb(int pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  return -1;
}

// One TM connection keeping `inflight` transactions going, all on its I/O thread.
class Driver {
 public:
  Driver(rpc::Client& tm, rpc::Client& rm_a, rpc::Client& rm_b, bool commit)
      : tm_(tm), rm_a_(rm_a), rm_b_(rm_b), commit_(commit) {}

  void Start(int inflight) {
    for (int i = 0; i < inflight; ++i) Next();
  }
  std::atomic<bool> stop{false};
  std::atomic<bool> record{false};
  std::atomic<uint64_t> done{0}, errors{0};
  std::atomic<int> outstanding{0};
  LatencyHistogram histogram;  // written on this driver's TM I/O thread only
  std::mutex first_error_mu;
  std::string first_error;

 private:
  void Error(const std::string& what) {
    errors.fetch_add(1);
    std::lock_guard lock(first_error_mu);
    if (first_error.empty()) first_error = what;
  }
  void Next() {
    if (stop) return;
    ++outstanding;
    const auto start = Clock::now();
    pb::BeginRequest begin;
    begin.set_name("bench");
    tm_.Call<pb::BeginResponse>(kTc, "Begin", begin, rpc::CallOptions{}, [this, start](Result<pb::BeginResponse> r) {
      if (!r.ok() || r->code() != pb::OK) return Fail(r.ok() ? r->message() : r.status().ToString());
      Register(r->xid(), start, 0);
    });
  }
  void Register(const std::string& xid, Clock::time_point start, int n) {
    if (n == 2) return Decide(xid, start);
    pb::RegisterBranchRequest req;
    req.set_xid(xid);
    req.set_resource_id(n == 0 ? "db-a" : "db-b");
    req.set_branch_type(pb::AT);
    req.add_lock_keys(req.resource_id() + ":orders:" + xid);
    req.set_application_data(R"({"undo":"orders","pk":42})");
    (n == 0 ? rm_a_ : rm_b_).Call<pb::RegisterBranchResponse>(
        kTc, "RegisterBranch", req, rpc::CallOptions{}, [this, xid, start, n](Result<pb::RegisterBranchResponse> r) {
          if (!r.ok() || r->code() != pb::OK) return Fail(r.ok() ? r->message() : r.status().ToString());
          Register(xid, start, n + 1);
        });
  }
  void Decide(const std::string& xid, Clock::time_point start) {
    if (!commit_) {  // --hold: leave it in flight
      done.fetch_add(1);
      --outstanding;
      return;
    }
    pb::CommitRequest req;
    req.set_xid(xid);
    tm_.Call<pb::CommitResponse>(kTc, "Commit", req, rpc::CallOptions{}, [this, start](Result<pb::CommitResponse> r) {
      if (!r.ok() || r->code() != pb::OK || r->outcome() != pb::COMMITTED_OUTCOME)
        return Fail(r.ok() ? r->message() : r.status().ToString());
      if (record) {
        histogram.Record(static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - start).count()));
        done.fetch_add(1, std::memory_order_relaxed);
      }
      --outstanding;
      Next();
    });
  }
  void Fail(const std::string& why) {
    Error(why);
    --outstanding;
    if (!stop) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    Next();
  }

  rpc::Client& tm_;
  rpc::Client& rm_a_;
  rpc::Client& rm_b_;
  bool commit_;
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"dtx-coordinator-bench: global transactions per second"};
  std::string address = "127.0.0.1:8091";
  int connections = 16, inflight = 16, hold = 0, coordinator_pid = 0;
  unsigned io_threads = 1;
  double duration = 10, warmup = 2;
  app.add_option("--address", address);
  app.add_option("--connections", connections, "TM connections (each with its own pair of participants)");
  app.add_option("--inflight", inflight, "transactions in flight per connection");
  app.add_option("--duration", duration, "seconds measured");
  app.add_option("--warmup", warmup, "seconds before measuring");
  app.add_option("--io-threads", io_threads, "generator I/O threads");
  app.add_option("--hold", hold, "begin this many transactions with two branches each and leave them in flight");
  app.add_option("--coordinator-pid", coordinator_pid, "to report the coordinator's RSS");
  CLI11_PARSE(app, argc, argv);

  rpc::ClientOptions base;
  base.addresses = {address};
  base.io_threads = io_threads;
  rpc::Client pool_owner(base);  // owns the I/O threads the others share
  auto pool = pool_owner.io_pool();
  if (!pool_owner.WaitConnected(std::chrono::seconds(10)).ok()) {
    std::fprintf(stderr, "cannot reach %s\n", address.c_str());
    return 1;
  }
  struct Lane {
    std::unique_ptr<rpc::Client> tm, a, b;
    std::unique_ptr<Driver> driver;
  };
  std::vector<Lane> lanes(static_cast<size_t>(connections));
  for (auto& lane : lanes) {
    rpc::ClientOptions o = base;
    o.io_pool = pool;
    lane.tm = std::make_unique<rpc::Client>(o);
    lane.a = Participant(address, "db-a", pool);
    lane.b = Participant(address, "db-b", pool);
    (void)lane.tm->WaitConnected(std::chrono::seconds(10));
    lane.driver = std::make_unique<Driver>(*lane.tm, *lane.a, *lane.b, hold == 0);
  }

  if (hold > 0) {
    const long before = coordinator_pid ? RssKb(coordinator_pid) : -1;
    const auto start = Clock::now();
    // Begin `hold` transactions, `inflight` at a time per lane, none committed.
    int per_lane = hold / connections;
    std::vector<std::thread> threads;
    for (auto& lane : lanes) {
      threads.emplace_back([&lane, per_lane, inflight] {
        for (int started = 0; started < per_lane;) {
          const int batch = std::min(inflight, per_lane - started);
          const uint64_t target = lane.driver->done + static_cast<uint64_t>(batch);
          lane.driver->Start(batch);
          started += batch;
          while (lane.driver->done + lane.driver->errors < target) std::this_thread::sleep_for(std::chrono::microseconds(200));
        }
      });
    }
    for (auto& t : threads) t.join();
    uint64_t done = 0, errors = 0;
    for (auto& lane : lanes) {
      done += lane.driver->done;
      errors += lane.driver->errors;
    }
    const double secs = std::chrono::duration<double>(Clock::now() - start).count();
    const long after = coordinator_pid ? RssKb(coordinator_pid) : -1;
    std::printf("held=%lu errors=%lu seconds=%.1f coordinator_rss_before_kb=%ld coordinator_rss_after_kb=%ld\n",
                static_cast<unsigned long>(done), static_cast<unsigned long>(errors), secs, before, after);
    return errors ? 1 : 0;
  }

  for (auto& lane : lanes) lane.driver->Start(inflight);
  std::this_thread::sleep_for(std::chrono::duration<double>(warmup));
  const uint64_t phase_two_before = g_phase_two;
  for (auto& lane : lanes) lane.driver->record = true;
  const auto start = Clock::now();
  std::this_thread::sleep_for(std::chrono::duration<double>(duration));
  for (auto& lane : lanes) lane.driver->record = false;
  const double secs = std::chrono::duration<double>(Clock::now() - start).count();
  const uint64_t phase_two = g_phase_two - phase_two_before;
  for (auto& lane : lanes) lane.driver->stop = true;
  for (auto& lane : lanes)
    while (lane.driver->outstanding > 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  LatencyHistogram all;
  uint64_t done = 0, errors = 0;
  std::string first_error;
  for (auto& lane : lanes) {
    all.Merge(lane.driver->histogram);
    done += lane.driver->done;
    errors += lane.driver->errors;
    if (first_error.empty()) first_error = lane.driver->first_error;
  }
  std::printf(
      "transactions/s=%.0f p50_ms=%.2f p99_ms=%.2f p999_ms=%.2f phase_two_calls/s=%.0f in_flight=%d errors=%lu%s%s\n",
      done / secs, all.ValueAt(0.5) / 1e6, all.ValueAt(0.99) / 1e6, all.ValueAt(0.999) / 1e6, phase_two / secs,
      connections * inflight, static_cast<unsigned long>(errors), first_error.empty() ? "" : " first_error=",
      first_error.c_str());
  for (auto& lane : lanes) {
    lane.tm->Shutdown(std::chrono::milliseconds(0));
    lane.a->Shutdown(std::chrono::milliseconds(0));
    lane.b->Shutdown(std::chrono::milliseconds(0));
  }
  return 0;
}
