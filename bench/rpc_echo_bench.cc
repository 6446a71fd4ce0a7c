// dtx-rpc-bench: a load generator for SOFARPC echo servers (dtx-echo-server, sofa-rpc-node),
// calling com.alipay.sofa.rpc.test.ProtoService:1.0 echoObj over SOFA Bolt.
//
// Load mode: --connections N Clients of one connection each share one pool of --io-threads
// I/O threads. Each connection keeps --inflight M calls in flight: a call's callback, on the
// connection's I/O thread, checks the answer, records the latency in that thread's histogram
// and sends the next call, so the hot path takes no lock and crosses no thread. After
// --warmup seconds it counts for --duration seconds, stops sending, waits for the calls in
// flight and prints one line of key=value pairs:
//   target=dtx protocol=v1 conns=64 inflight=16 ... calls/s=123456 p50_us=... p99_us=... errors=0
//
// Idle mode (--idle-connections K): opens K connections, makes one call on each so that the
// server has accepted and served it, holds them --hold seconds and prints how many stayed up;
// with --server-pid it reads the server's VmRSS before and after and prints bytes per connection.
//
// Every answer is checked (code 200 and the expected message); anything else is an error,
// counted, and the first few distinct ones are printed on stderr. Exit status 1 if any.
#include <CLI/CLI.hpp>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "dtx/common/logging.h"
#include "dtx/rpc/client.h"
#include "echo.pb.h"
#include "latency_histogram.h"

namespace dtx::bench {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::duration;
using std::chrono::milliseconds;
using com::alipay::sofa::rpc::test::EchoRequest;
using com::alipay::sofa::rpc::test::EchoResponse;

// The echo service of the SOFARPC samples, as examples/echo-server and sofa-rpc-node serve it.
constexpr std::string_view kEchoService = "com.alipay.sofa.rpc.test.ProtoService:1.0";
constexpr std::string_view kEchoMethod = "echoObj";
constexpr size_t kMaxErrorsShown = 5;

struct Settings {
  std::string address = "127.0.0.1:12200";
  std::string protocol = "v1";
  bool crc = true;
  std::string target = "server";
  unsigned connections = 64;
  unsigned inflight = 16;
  double duration_s = 10;
  double warmup_s = 2;
  unsigned io_threads = 1;
  std::string name = "dtx";
  unsigned timeout_ms = 5000;
  unsigned idle_connections = 0;
  double hold_s = 3;
  bool idle_call = true;
  int server_pid = 0;
};

// ---- statistics: one record per thread that completes calls, no lock in the hot path ----

// What one thread saw. Written only by its thread; read after every I/O thread has stopped.
struct ThreadStats {
  LatencyHistogram latency;  // calls answered correctly while measuring
  uint64_t errors = 0;       // in any phase
};

std::mutex g_stats_mu;
std::vector<std::unique_ptr<ThreadStats>> g_stats;  // guarded by g_stats_mu
// The first few distinct error messages, with how often each came; guarded by g_stats_mu.
std::vector<std::pair<std::string, uint64_t>> g_error_samples;

ThreadStats& LocalStats() {
  thread_local ThreadStats* mine = nullptr;
  if (mine == nullptr) {
    std::lock_guard lock(g_stats_mu);
    g_stats.push_back(std::make_unique<ThreadStats>());
    mine = g_stats.back().get();
  }
  return *mine;
}

void NoteError(std::string what) {
  ++LocalStats().errors;
  std::lock_guard lock(g_stats_mu);
  for (auto& [message, count] : g_error_samples) {
    if (message == what) return void(++count);
  }
  if (g_error_samples.size() < kMaxErrorsShown) g_error_samples.emplace_back(std::move(what), 1);
}

// REQUIRES: no thread records any more.
ThreadStats MergedStats() {
  ThreadStats all;
  std::lock_guard lock(g_stats_mu);
  for (const auto& s : g_stats) {
    all.latency.Merge(s->latency);
    all.errors += s->errors;
  }
  for (const auto& [message, count] : g_error_samples)
    std::cerr << "dtx-rpc-bench: error (" << count << "x): " << message << "\n";
  return all;
}

// ---- the calls ----

// What every call sends and what its answer must be.
struct Echo {
  std::string body;      // a serialized EchoRequest
  std::string expected;  // the EchoResponse message
  rpc::CallOptions options;
};

Echo MakeEcho(const Settings& s) {
  Echo echo;
  EchoRequest request;
  request.set_name(s.name);
  request.set_group(com::alipay::sofa::rpc::test::A);
  echo.body = request.SerializeAsString();
  echo.expected = "hello " + s.name + ", you are in A";
  echo.options.timeout = milliseconds(s.timeout_ms);
  return echo;
}

bool CheckAnswer(const Result<std::string>& r, const Echo& echo) {
  if (!r.ok()) {
    NoteError(r.status().ToString());
    return false;
  }
  thread_local EchoResponse response;
  if (!response.ParseFromString(*r)) {
    NoteError("the answer is not an EchoResponse (" + std::to_string(r->size()) + " bytes)");
    return false;
  }
  if (response.code() != 200 || response.message() != echo.expected) {
    NoteError("unexpected answer: code=" + std::to_string(response.code()) + " message='" + response.message() + "'");
    return false;
  }
  return true;
}

enum class Phase { kWarmup, kMeasure, kStop };

// One connection of the load: its own Client, and the calls kept in flight on it.
// Thread-safety: Send from any thread; the callbacks run on the connection's I/O thread.
// Must outlive every callback of its calls: destroy it only after the I/O threads stopped.
class LoadConnection {
 public:
  LoadConnection(const Echo& echo, const std::atomic<Phase>& phase, rpc::ClientOptions options)
      : echo_(echo), phase_(phase), client_(std::make_unique<rpc::Client>(std::move(options))) {}

  rpc::Client& client() { return *client_; }

  // Sends one call. Its callback sends the next one unless the phase is kStop or it failed.
  void Send() {
    outstanding_.fetch_add(1, std::memory_order_relaxed);
    const auto start = Clock::now();
    client_->CallRaw(kEchoService, kEchoMethod, echo_.body, echo_.options,
                     [this, start](Result<std::string> r) { OnAnswer(start, r); });
  }

  // The calls that failed and were not replaced, for the driver to send again. A failed call
  // is not replaced from its own callback: with no connection it fails inside CallRaw, and
  // replacing it there would recurse without end.
  unsigned TakeLost() { return lost_.exchange(0, std::memory_order_relaxed); }
  unsigned outstanding() const { return outstanding_.load(std::memory_order_acquire); }

 private:
  void OnAnswer(Clock::time_point start, const Result<std::string>& r) {
    const auto took = Clock::now() - start;
    const Phase phase = phase_.load(std::memory_order_relaxed);
    if (CheckAnswer(r, echo_)) {
      if (phase == Phase::kMeasure)
        LocalStats().latency.Record(static_cast<uint64_t>(std::chrono::nanoseconds(took).count()));
      if (phase != Phase::kStop) Send();
    } else if (phase != Phase::kStop) {
      lost_.fetch_add(1, std::memory_order_relaxed);
    }
    // Release: the driver reads the statistics once it sees no call outstanding.
    outstanding_.fetch_sub(1, std::memory_order_release);
  }

  const Echo& echo_;
  const std::atomic<Phase>& phase_;
  std::unique_ptr<rpc::Client> client_;
  std::atomic<unsigned> outstanding_{0};
  std::atomic<unsigned> lost_{0};
};

// ---- the driver ----

rpc::ClientOptions BaseOptions(const Settings& s) {
  rpc::ClientOptions o;
  o.wire = s.protocol == "v2" ? rpc::WireFormat{rpc::BoltProtocol::kV2, s.crc}
                              : rpc::WireFormat{rpc::BoltProtocol::kV1, false};
  o.io_threads = s.io_threads;
  o.connect_timeout = milliseconds(10'000);
  return o;
}

std::string ProtocolLabel(const Settings& s) {
  if (s.protocol == "v1") return "v1";
  return s.crc ? "v2+crc" : "v2";
}

// The pool of I/O threads and the connections that share it, torn down in a safe order.
class Connections {
 public:
  Connections(const Settings& s, const Echo& echo, const std::atomic<Phase>& phase)
      : settings_(s), echo_(echo), phase_(phase) {
    // A Client with no servers owns the I/O threads; every connection's Client shares them.
    pool_owner_ = std::make_unique<rpc::Client>(BaseOptions(s));
  }
  Connections(const Connections&) = delete;
  Connections& operator=(const Connections&) = delete;
  ~Connections() { Close(); }

  // Opens n more connections and waits until each is up; false (with a message) if one is not.
  bool Open(unsigned n) {
    const size_t first = conns_.size();
    for (unsigned i = 0; i < n; ++i) {
      auto options = BaseOptions(settings_);
      options.addresses = {settings_.address};
      options.connections_per_address = 1;
      options.io_pool = pool_owner_->io_pool();
      conns_.push_back(std::make_unique<LoadConnection>(echo_, phase_, std::move(options)));
    }
    for (size_t i = first; i < conns_.size(); ++i) {
      if (auto st = conns_[i]->client().WaitConnected(milliseconds(15'000)); !st.ok()) {
        std::cerr << "dtx-rpc-bench: connection " << i << " to " << settings_.address << ": " << st.ToString() << "\n";
        return false;
      }
    }
    return true;
  }

  std::vector<std::unique_ptr<LoadConnection>>& all() { return conns_; }

  size_t Outstanding() const {
    size_t n = 0;
    for (const auto& c : conns_) n += c->outstanding();
    return n;
  }
  bool WaitIdle(Clock::duration limit) {
    const auto deadline = Clock::now() + limit;
    while (Outstanding() > 0 && Clock::now() < deadline) std::this_thread::sleep_for(milliseconds(1));
    return Outstanding() == 0;
  }
  size_t Live() const {
    size_t n = 0;
    for (const auto& c : conns_) n += c->client().live_connections();
    return n;
  }

  // Closes every connection and stops the I/O threads; after this no callback runs.
  void Close() {
    if (!pool_owner_) return;
    for (auto& c : conns_) c->client().Shutdown(milliseconds(0));
    const auto deadline = Clock::now() + std::chrono::seconds(2);  // let the closes run
    while (Live() > 0 && Clock::now() < deadline) std::this_thread::sleep_for(milliseconds(2));
    pool_owner_->Shutdown(milliseconds(0));  // joins the I/O threads
    pool_owner_.reset();
  }

 private:
  const Settings& settings_;
  const Echo& echo_;
  const std::atomic<Phase>& phase_;
  std::unique_ptr<rpc::Client> pool_owner_;
  std::vector<std::unique_ptr<LoadConnection>> conns_;
};

// CPU time used so far, in seconds: this process, the server when its pid is known, and the
// whole machine (busy or stolen), to tell how much other work ran beside the benchmark.
struct CpuTimes {
  double self = 0;
  double server = -1;   // -1: unknown
  double machine = -1;  // -1: unknown
};

CpuTimes ReadCpuTimes(int server_pid) {
  CpuTimes t;
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  t.self = static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
  const auto ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
  if (std::ifstream in("/proc/stat"); in) {
    // cpu  user nice system idle iowait irq softirq steal ...
    std::string cpu;
    unsigned long long user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0;
    if (in >> cpu >> user >> nice >> system >> idle >> iowait >> irq >> softirq >> steal && cpu == "cpu")
      t.machine = static_cast<double>(user + nice + system + irq + softirq + steal) / ticks;
  }
  if (server_pid > 0) {
    std::ifstream in("/proc/" + std::to_string(server_pid) + "/stat");
    std::string line;
    if (std::getline(in, line)) {
      // Fields after the ")" that ends the command name: state is field 3, utime 14, stime 15.
      std::istringstream rest(line.substr(line.rfind(')') + 2));
      std::string field;
      unsigned long long utime = 0, stime = 0;
      for (int i = 3; i <= 15 && rest >> field; ++i) {
        if (i == 14) utime = std::stoull(field);
        if (i == 15) stime = std::stoull(field);
      }
      t.server = static_cast<double>(utime + stime) / ticks;
    }
  }
  return t;
}

// The server's resident set in KiB, or -1.
long ReadRssKb(int pid) {
  if (pid <= 0) return -1;
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  }
  return -1;
}

std::string Fixed(double v, int decimals) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}
std::string Micros(uint64_t ns) { return Fixed(static_cast<double>(ns) / 1000.0, 1); }

// Runs `until` out, sending again every 10 ms the calls that failed.
void RunUntil(Connections& conns, Clock::time_point until) {
  for (auto now = Clock::now(); now < until; now = Clock::now()) {
    std::this_thread::sleep_for(std::min<Clock::duration>(milliseconds(10), until - now));
    for (auto& c : conns.all())
      for (unsigned n = c->TakeLost(); n > 0; --n) c->Send();
  }
}

int RunLoad(const Settings& s) {
  const Echo echo = MakeEcho(s);
  std::atomic<Phase> phase{Phase::kWarmup};
  Connections conns(s, echo, phase);
  if (!conns.Open(s.connections)) return 1;

  for (auto& c : conns.all())
    for (unsigned i = 0; i < s.inflight; ++i) c->Send();
  RunUntil(conns, Clock::now() + duration_cast<Clock::duration>(duration<double>(s.warmup_s)));

  const CpuTimes cpu0 = ReadCpuTimes(s.server_pid);
  const auto t0 = Clock::now();
  phase.store(Phase::kMeasure, std::memory_order_relaxed);
  RunUntil(conns, t0 + duration_cast<Clock::duration>(duration<double>(s.duration_s)));
  phase.store(Phase::kStop, std::memory_order_relaxed);
  const auto t1 = Clock::now();
  const CpuTimes cpu1 = ReadCpuTimes(s.server_pid);

  const bool drained = conns.WaitIdle(milliseconds(s.timeout_ms) + std::chrono::seconds(2));
  const size_t stuck = conns.Outstanding();
  conns.Close();
  const ThreadStats stats = MergedStats();
  if (!drained) std::cerr << "dtx-rpc-bench: " << stuck << " calls still unanswered after the run\n";

  const double seconds = duration<double>(t1 - t0).count();
  const auto& h = stats.latency;
  auto cores = [&](double before, double after) { return Fixed((after - before) / seconds, 2); };
  std::ostringstream line;
  line << "target=" << s.target << " protocol=" << ProtocolLabel(s) << " conns=" << s.connections
       << " inflight=" << s.inflight << " io_threads=" << s.io_threads << " seconds=" << Fixed(seconds, 2)
       << " calls=" << h.count() << " calls/s=" << Fixed(static_cast<double>(h.count()) / seconds, 0)
       << " mean_us=" << Fixed(h.mean() / 1000.0, 1) << " p50_us=" << Micros(h.ValueAt(0.50))
       << " p90_us=" << Micros(h.ValueAt(0.90)) << " p99_us=" << Micros(h.ValueAt(0.99))
       << " p999_us=" << Micros(h.ValueAt(0.999)) << " max_us=" << Micros(h.max())
       << " errors=" << stats.errors + stuck << " client_cpu=" << cores(cpu0.self, cpu1.self);
  if (cpu0.server >= 0 && cpu1.server >= 0) line << " server_cpu=" << cores(cpu0.server, cpu1.server);
  if (cpu0.machine >= 0 && cpu1.machine >= 0) line << " machine_cpu=" << cores(cpu0.machine, cpu1.machine);
  std::cout << line.str() << std::endl;
  return stats.errors + stuck == 0 ? 0 : 1;
}

int RunIdle(const Settings& s) {
  constexpr unsigned kBatch = 250;  // below the listen backlog of either server
  const Echo echo = MakeEcho(s);
  std::atomic<Phase> phase{Phase::kStop};  // a call's callback sends no next one
  Connections conns(s, echo, phase);
  const long rss_before = ReadRssKb(s.server_pid);

  for (unsigned opened = 0; opened < s.idle_connections; opened += kBatch) {
    if (!conns.Open(std::min(kBatch, s.idle_connections - opened))) return 1;
  }
  if (s.idle_call) {
    for (auto& c : conns.all()) c->Send();
    if (!conns.WaitIdle(milliseconds(s.timeout_ms) + std::chrono::seconds(2)))
      std::cerr << "dtx-rpc-bench: " << conns.Outstanding() << " calls unanswered\n";
  }
  std::cerr << "dtx-rpc-bench: " << conns.Live() << " connections open, holding them " << s.hold_s << " s\n";
  std::this_thread::sleep_for(duration<double>(s.hold_s));
  const long rss_after = ReadRssKb(s.server_pid);
  const size_t live = conns.Live();
  const size_t stuck = conns.Outstanding();
  conns.Close();
  const ThreadStats stats = MergedStats();

  std::ostringstream line;
  line << "target=" << s.target << " mode=idle protocol=" << ProtocolLabel(s) << " conns=" << s.idle_connections
       << " live=" << live << " idle_call=" << (s.idle_call ? 1 : 0) << " errors=" << stats.errors + stuck;
  if (rss_before >= 0 && rss_after >= 0) {
    const double per_conn = static_cast<double>(rss_after - rss_before) * 1024.0 / s.idle_connections;
    line << " server_rss_before_kb=" << rss_before << " server_rss_after_kb=" << rss_after
         << " bytes_per_conn=" << Fixed(per_conn, 0);
  }
  std::cout << line.str() << std::endl;
  return stats.errors + stuck == 0 && live == s.idle_connections ? 0 : 1;
}

}  // namespace
}  // namespace dtx::bench

int main(int argc, char** argv) {
  using dtx::bench::Settings;
  Settings s;
  CLI::App app{"dtx-rpc-bench: echoObj load against a SOFARPC echo server over SOFA Bolt"};
  app.add_option("--address", s.address, "Server host:port")->capture_default_str();
  app.add_option("--protocol", s.protocol, "Bolt v1, or v2 (with a CRC32 unless --no-crc)")
      ->check(CLI::IsMember({"v1", "v2"}))
      ->capture_default_str();
  app.add_flag("--crc,!--no-crc", s.crc, "v2: frames carry a CRC32 trailer")->capture_default_str();
  app.add_option("--target", s.target, "Label of the server in the summary line")->capture_default_str();
  app.add_option("--connections", s.connections, "Connections, one Client each")
      ->check(CLI::Range(1u, 100'000u))
      ->capture_default_str();
  app.add_option("--inflight", s.inflight, "Calls kept in flight per connection")
      ->check(CLI::Range(1u, 100'000u))
      ->capture_default_str();
  app.add_option("--duration", s.duration_s, "Seconds measured")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--warmup", s.warmup_s, "Seconds of load before measuring")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--io-threads", s.io_threads, "I/O threads shared by the connections")
      ->check(CLI::Range(1u, 256u))
      ->capture_default_str();
  app.add_option("--name", s.name, "The name sent in each EchoRequest")->capture_default_str();
  app.add_option("--timeout-ms", s.timeout_ms, "Per-call timeout")
      ->check(CLI::Range(1u, 600'000u))
      ->capture_default_str();
  app.add_option("--idle-connections", s.idle_connections, "Idle mode: open this many connections and hold them")
      ->capture_default_str();
  app.add_option("--hold", s.hold_s, "Idle mode: seconds to hold them")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_flag("--idle-call,!--no-idle-call", s.idle_call, "Idle mode: make one call on each connection first")
      ->capture_default_str();
  app.add_option("--server-pid", s.server_pid, "Server process, to report its CPU use (load) or VmRSS (idle)")
      ->capture_default_str();
  std::string log_level = "warn";
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error")->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  if (auto st = dtx::InitLogging(log_level); !st.ok()) {
    std::cerr << st.ToString() << "\n";
    return 2;
  }
  return s.idle_connections > 0 ? dtx::bench::RunIdle(s) : dtx::bench::RunLoad(s);
}
