// dtx-tcc-bank: one bank of the TCC transfer example. Holds its accounts in its own database
// (SQLite file by default, PostgreSQL by URI), declares "<name>.debit" and "<name>.credit" as TCC
// actions with the participant SDK, and serves dtx.examples.Bank:1.0 over Bolt. Prints
// "LISTENING <port>" once it serves.
#include <CLI/CLI.hpp>

#include <csignal>
#include <iostream>

#include "bank.h"
#include "bank.pb.h"
#include "dtx/common/logging.h"
#include "dtx/rpc/server.h"
#include "dtx/sdk/xid_context.h"

namespace {

using dtx::examples::Bank;
using dtx::examples::Leg;
namespace pb = dtx::examples;
constexpr const char* kService = "dtx.examples.Bank:1.0";

pb::LegResponse Respond(const dtx::Status& s) {
  pb::LegResponse r;
  r.set_code(s.ok() ? 0 : s.code() == dtx::StatusCode::kFailedPrecondition ? 1 : 2);
  if (!s.ok()) r.set_message(s.ToString());
  return r;
}

// A leg: with an XID it is the Try of the TCC action in that transaction (the callee joins it);
// without one a plain local transaction.
void AddLeg(dtx::rpc::ServiceRegistry& services, dtx::sdk::WorkerPool& pool, Bank& bank, bool debit) {
  services.AddMethod<pb::LegRequest, pb::LegResponse>(
      kService, debit ? "Debit" : "Credit",
      [&pool, &bank, debit](const dtx::rpc::CallContext& ctx, pb::LegRequest&& req,
                            dtx::rpc::TypedResponder<pb::LegResponse> reply) {
        auto xid = dtx::sdk::XidFrom(ctx);
        if (!xid.ok()) return reply.Reply(Respond(xid.status()));
        Leg leg{req.account(), req.amount()};
        // The database work runs on a worker, never on the rpc I/O thread.
        pool.Post([&bank, debit, leg, xid = *xid, reply]() mutable {
          dtx::Status s;
          if (xid.empty()) {
            s = debit ? bank.PlainDebit(leg) : bank.PlainCredit(leg);
          } else {
            dtx::sdk::XidScope joined(xid);
            s = debit ? bank.debit()(leg) : bank.credit()(leg);
          }
          reply.Reply(Respond(s));
        });
      });
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"dtx-tcc-bank: one bank of the TCC transfer example, a dtx participant"};
  std::string name = "bank-a", db_uri, host = "127.0.0.1", log_level = "warn", client_id, token;
  std::vector<std::string> coordinators = {"127.0.0.1:8091"};
  uint16_t port = 0;
  int64_t accounts = 100, initial = 1000, fence_retention_s = 86400, delay_after_register_ms = 0;
  unsigned threads = 8;
  bool fence = true, report_done = true;
  dtx::examples::BankFaults faults;
  app.add_option("--name", name, "Bank name; its actions are <name>.debit and <name>.credit")->capture_default_str();
  app.add_option("--db", db_uri, "Database: a SQLite file (default <name>.db) or postgresql://... URI");
  app.add_option("--coordinator", coordinators, "Coordinator address(es), host:port")->capture_default_str();
  app.add_option("--token", token, "The coordinator's --token");
  app.add_option("--host", host, "Address to listen on")->capture_default_str();
  app.add_option("--port", port, "Port to listen on (0: any free port)")->capture_default_str();
  app.add_option("--accounts", accounts, "Accounts created in an empty database")->capture_default_str();
  app.add_option("--initial-balance", initial, "Balance of each new account")->capture_default_str();
  app.add_option("--threads", threads, "Worker threads for legs and for phase 2")->capture_default_str();
  app.add_option("--client-id", client_id, "Stable participant id (default: the connection's address)");
  app.add_option("--fence", fence, "Keep the TCC fence (true/false)")->capture_default_str();
  app.add_option("--report-phase-one-done", report_done, "Report each committed Try to the coordinator (true/false)")
      ->capture_default_str();
  app.add_option("--fence-retention-s", fence_retention_s, "Seconds finished fence rows are kept")
      ->capture_default_str();
  app.add_option("--hang-in", faults.hang_in, "Test fault: hang forever in try, confirm or cancel");
  app.add_option("--slow-confirm-ms", faults.slow_confirm_ms, "Test fault: the first Confirm takes this long");
  app.add_option("--delay-after-register-ms", delay_after_register_ms,
                 "Test fault: wait this long between a branch's registration and its Try");
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error")->capture_default_str();
  app.set_config("--config", "", "A TOML file with any of these options");
  CLI11_PARSE(app, argc, argv);
  if (auto s = dtx::InitLogging(log_level); !s.ok()) {
    std::cerr << s.ToString() << "\n";
    return 2;
  }
  if (db_uri.empty()) db_uri = name + ".db";

  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  auto db = dtx::sdk::OpenLocalDatabase(db_uri);
  if (!db.ok()) {
    std::cerr << "dtx-tcc-bank: " << db.status().ToString() << "\n";
    return 1;
  }
  dtx::sdk::ParticipantOptions options;
  options.coordinator.addresses = coordinators;
  options.coordinator.application = name;
  options.coordinator.client_id = client_id;
  options.coordinator.token = token;
  options.database = *db;
  options.fence = fence;
  options.report_phase_one_done = report_done;
  options.workers = threads;
  options.fence_retention = std::chrono::seconds(fence_retention_s);
  if (delay_after_register_ms > 0) {
    options.after_register = [delay_after_register_ms](const std::string&, int64_t, const std::string&) {
      std::this_thread::sleep_for(std::chrono::milliseconds(delay_after_register_ms));
    };
  }
  dtx::sdk::Participant rm(options);
  Bank bank(rm, name, faults);
  if (auto s = bank.Init(accounts, initial); !s.ok()) {
    std::cerr << "dtx-tcc-bank: accounts table: " << s.ToString() << "\n";
    return 1;
  }
  if (auto s = rm.Start(); !s.ok()) {
    std::cerr << "dtx-tcc-bank: " << s.ToString() << "\n";
    return 1;
  }

  dtx::sdk::WorkerPool legs(threads);
  auto services = std::make_shared<dtx::rpc::ServiceRegistry>();
  AddLeg(*services, legs, bank, true);
  AddLeg(*services, legs, bank, false);
  services->AddMethod<pb::SummaryRequest, pb::SummaryResponse>(
      kService, "Summary",
      [&legs, &bank](const dtx::rpc::CallContext&, pb::SummaryRequest&&, dtx::rpc::TypedResponder<pb::SummaryResponse> reply) {
        legs.Post([&bank, reply]() mutable {
          auto s = bank.Summarize();
          if (!s.ok()) return reply.Fail(s.status());
          pb::SummaryResponse r;
          r.set_total_balance(s->balance);
          r.set_total_frozen(s->frozen);
          r.set_total_incoming(s->incoming);
          r.set_accounts(s->accounts);
          reply.Reply(r);
        });
      });
  dtx::rpc::ServerOptions server_options;
  server_options.host = host;
  server_options.port = port;
  server_options.io_threads = 1;
  dtx::rpc::Server server(server_options, services);
  if (auto s = server.Start(); !s.ok()) {
    std::cerr << "dtx-tcc-bank: " << s.ToString() << "\n";
    return 1;
  }
  std::cout << "LISTENING " << server.port() << std::endl;

  int sig = 0;
  sigwait(&signals, &sig);
  server.Shutdown(std::chrono::seconds(5));
  legs.Stop();
  rm.Stop();
  return 0;
}
