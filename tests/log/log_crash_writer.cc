// log_crash_writer: writes batches to a log store as fast as it can from many threads and prints
// "ACK <xid>" for each acknowledged one, until killed (or --seconds pass). Each batch is a global
// transaction with two branches and two row locks, so a partial batch is easy to see.
//   log_crash_writer --sqlite PATH [--threads N]
//   log_crash_writer --postgres CONNINFO --schema NAME [--threads N]
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <chrono>
#include <iostream>
#include <thread>

#include "dtx/log/sqlite_log_store.h"
#include "crash_store.h"

using namespace dtx::log;

int main(int argc, char** argv) {
  CLI::App app{"log_crash_writer"};
  std::string sqlite_path, pg_conninfo, pg_schema = "dtx";
  unsigned threads = 16;
  unsigned seconds = 60;
  app.add_option("--sqlite", sqlite_path);
  app.add_option("--postgres", pg_conninfo);
  app.add_option("--schema", pg_schema);
  app.add_option("--threads", threads);
  app.add_option("--seconds", seconds, "stop by itself after this long");
  CLI11_PARSE(app, argc, argv);

  auto store = dtx::log::testing::OpenCrashStore(sqlite_path, pg_conninfo, pg_schema);
  if (!store.ok()) {
    std::cerr << store.status().ToString() << "\n";
    return 1;
  }
  const std::string ready = "READY\n";
  (void)!write(STDOUT_FILENO, ready.data(), ready.size());

  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
  std::vector<std::thread> workers;
  for (unsigned t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      for (int64_t i = 0; std::chrono::steady_clock::now() < deadline; ++i) {
        const std::string xid = "k:" + std::to_string(getpid()) + ":" + std::to_string(t) + ":" + std::to_string(i);
        const int64_t branch = (static_cast<int64_t>(getpid()) << 32) | (int64_t{t} << 24) | (i * 2);
        WriteResult r = (*store)->WriteSync(dtx::log::testing::CrashBatch(xid, branch));
        if (!r.ok()) {
          std::cerr << "write failed: " << r.status.ToString() << "\n";
          std::_Exit(1);
        }
        const std::string line = "ACK " + xid + "\n";  // one write(2): lines never interleave
        (void)!write(STDOUT_FILENO, line.data(), line.size());
      }
    });
  }
  for (auto& w : workers) w.join();
  (*store)->Close();
  return 0;
}
