// dtx-tcc-transfer: moves money between the accounts of two example banks, each transfer a
// global transaction (TCC debit on one bank, TCC credit on the other), and checks that the
// total of all balances is the same before and after. With --plain each leg is a plain local
// transaction and no coordinator is involved (the benchmark's baseline).
//
// Prints "TOTAL before=<n>", then "DONE transfers=<n> committed=<n> rolled_back=<n> failed=<n>
// seconds=<s> rate=<transfers/s>", then "CHECK OK total=<n>" or "CHECK FAILED ..." (exit 1).
#include <CLI/CLI.hpp>

#include <atomic>
#include <iostream>
#include <random>
#include <thread>

#include "bank.pb.h"
#include "dtx/common/logging.h"
#include "dtx/rpc/client.h"
#include "dtx/sdk/transaction_manager.h"

namespace {

namespace pb = dtx::examples;
constexpr const char* kService = "dtx.examples.Bank:1.0";

struct Totals {
  int64_t money = 0, in_flight = 0;
};

// The money both banks hold, once nothing is frozen or incoming (waits up to `limit`).
dtx::Result<Totals> Quiescent(dtx::rpc::Client& a, dtx::rpc::Client& b, std::chrono::seconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  Totals t;
  while (true) {
    t = {};
    for (auto* bank : {&a, &b}) {
      auto r = bank->CallSync<pb::SummaryResponse>(kService, "Summary", pb::SummaryRequest());
      if (!r.ok()) return r.status();
      t.money += r->total_balance() + r->total_frozen();
      t.in_flight += r->total_frozen() + r->total_incoming();
    }
    if (t.in_flight == 0 || std::chrono::steady_clock::now() > deadline) return t;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

dtx::Status Leg(dtx::rpc::Client& bank, const char* method, int64_t account, int64_t amount,
                const dtx::rpc::CallOptions& options) {
  pb::LegRequest req;
  req.set_account(account);
  req.set_amount(amount);
  auto r = bank.CallSync<pb::LegResponse>(kService, method, req, options);
  if (!r.ok()) return r.status();
  if (r->code() == 1) return dtx::FailedPrecondition(r->message());
  if (r->code() != 0) return dtx::RemoteError(r->message());
  return dtx::Status::Ok();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"dtx-tcc-transfer: transfers between two example banks in global TCC transactions"};
  std::vector<std::string> coordinators = {"127.0.0.1:8091"};
  std::string bank_a = "127.0.0.1:9101", bank_b = "127.0.0.1:9102", log_level = "warn", token;
  int64_t transfers = 1000, accounts = 100, max_amount = 50, timeout_ms = 30000;
  double seconds = 0;
  unsigned concurrency = 4;
  int64_t leg_timeout_ms = 10000;
  bool plain = false, check = true;
  app.add_option("--coordinator", coordinators, "Coordinator address(es), host:port")->capture_default_str();
  app.add_option("--token", token, "The coordinator's --token");
  app.add_option("--bank-a", bank_a, "First bank's address")->capture_default_str();
  app.add_option("--bank-b", bank_b, "Second bank's address")->capture_default_str();
  app.add_option("--transfers", transfers, "How many transfers (all threads together)")->capture_default_str();
  app.add_option("--seconds", seconds, "Run for this long instead of a count");
  app.add_option("--concurrency", concurrency, "Transfers in flight at once")->capture_default_str();
  app.add_option("--accounts", accounts, "Accounts per bank to pick from (1..n)")->capture_default_str();
  app.add_option("--max-amount", max_amount, "Largest amount of one transfer")->capture_default_str();
  app.add_option("--timeout-ms", timeout_ms, "Global transaction timeout")->capture_default_str();
  app.add_option("--leg-timeout-ms", leg_timeout_ms, "Timeout of one call to a bank")->capture_default_str();
  app.add_option("--plain", plain, "Plain local transactions, no coordinator (true/false)")->capture_default_str();
  app.add_option("--check", check, "Check the total before and after (true/false)")->capture_default_str();
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  if (auto s = dtx::InitLogging(log_level); !s.ok()) {
    std::cerr << s.ToString() << "\n";
    return 2;
  }

  dtx::rpc::Client a({.addresses = {bank_a}}), b({.addresses = {bank_b}});
  if (!a.WaitConnected(std::chrono::seconds(10)).ok() || !b.WaitConnected(std::chrono::seconds(10)).ok()) {
    std::cerr << "dtx-tcc-transfer: cannot reach the banks\n";
    return 1;
  }
  Totals before;
  if (check) {
    auto t = Quiescent(a, b, std::chrono::seconds(60));
    if (!t.ok()) {
      std::cerr << "dtx-tcc-transfer: summary: " << t.status().ToString() << "\n";
      return 1;
    }
    before = *t;
    std::cout << "TOTAL before=" << before.money << " in_flight=" << before.in_flight << std::endl;
  }

  std::unique_ptr<dtx::sdk::TransactionManager> tm;
  if (!plain) {
    dtx::sdk::CoordinatorOptions co;
    co.addresses = coordinators;
    co.application = "tcc-transfer";
    co.token = token;
    tm = std::make_unique<dtx::sdk::TransactionManager>(co);
  }
  std::atomic<int64_t> started{0}, committed{0}, rolled_back{0}, failed{0};
  const auto t0 = std::chrono::steady_clock::now();
  const auto stop_at = t0 + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                 std::chrono::duration<double>(seconds));
  std::vector<std::thread> threads;
  for (unsigned i = 0; i < concurrency; ++i) {
    threads.emplace_back([&, i] {
      std::mt19937_64 rng(std::random_device{}() + i);
      while (true) {
        if (seconds > 0 ? std::chrono::steady_clock::now() >= stop_at : started.fetch_add(1) >= transfers) break;
        const bool a_to_b = rng() % 2 == 0;
        auto& from = a_to_b ? a : b;
        auto& to = a_to_b ? b : a;
        const int64_t from_account = 1 + static_cast<int64_t>(rng() % accounts);
        const int64_t to_account = 1 + static_cast<int64_t>(rng() % accounts);
        const int64_t amount = 1 + static_cast<int64_t>(rng() % max_amount);
        dtx::Status s;
        dtx::rpc::CallOptions call;
        call.timeout = std::chrono::milliseconds(leg_timeout_ms);
        if (plain) {
          s = Leg(from, "Debit", from_account, amount, call);
          if (s.ok()) s = Leg(to, "Credit", to_account, amount, call);
        } else {
          s = dtx::sdk::GlobalTransactional(
              *tm, {.name = "transfer", .timeout = std::chrono::milliseconds(timeout_ms)},
              [&](dtx::sdk::GlobalTx&) -> dtx::Status {
                // WithXid() puts the thread's XID in the call's header: the bank joins this transaction.
                DTX_RETURN_IF_ERROR(Leg(from, "Debit", from_account, amount, dtx::sdk::WithXid(call)));
                return Leg(to, "Credit", to_account, amount, dtx::sdk::WithXid(call));
              });
        }
        if (s.ok()) {
          ++committed;
        } else if (s.code() == dtx::StatusCode::kFailedPrecondition) {
          ++rolled_back;  // not enough money: refused and rolled back
        } else {
          ++failed;
          spdlog::warn("transfer: {}", s.ToString());
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const int64_t done = committed + rolled_back + failed;
  std::cout << "DONE transfers=" << done << " committed=" << committed << " rolled_back=" << rolled_back
            << " failed=" << failed << " seconds=" << elapsed << " rate=" << (done / elapsed) << std::endl;
  if (!check) return 0;
  auto after = Quiescent(a, b, std::chrono::seconds(60));
  if (!after.ok()) {
    std::cout << "CHECK FAILED summary: " << after.status().ToString() << std::endl;
    return 1;
  }
  if (after->money != before.money || after->in_flight != 0) {
    std::cout << "CHECK FAILED before=" << before.money << " after=" << after->money
              << " in_flight=" << after->in_flight << std::endl;
    return 1;
  }
  std::cout << "CHECK OK total=" << after->money << std::endl;
  return 0;
}
