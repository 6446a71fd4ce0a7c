#include "sdk_harness.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

namespace dtx::sdk::testing {

TempDir::TempDir() {
  static std::atomic<int> counter{0};
  path_ = (std::filesystem::temp_directory_path() /
           ("dtx-sdk-" + std::to_string(getpid()) + "-" + std::to_string(counter++)))
              .string();
  std::filesystem::remove_all(path_);
  std::filesystem::create_directories(path_);
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

std::optional<std::string> PostgresUri() {
  const char* uri = std::getenv("DTX_TEST_PG_URI");
  if (!uri || !*uri) return std::nullopt;
  return std::string(uri);
}

namespace {
void PgExec(const std::string& conninfo, const std::string& sql) {
  PGconn* c = PQconnectdb(conninfo.c_str());
  if (PQstatus(c) != CONNECTION_OK) {
    ADD_FAILURE() << "postgres: " << PQerrorMessage(c);
  } else {
    PGresult* r = PQexec(c, ("SET client_min_messages = warning; " + sql).c_str());
    if (PQresultStatus(r) != PGRES_COMMAND_OK) ADD_FAILURE() << sql << ": " << PQerrorMessage(c);
    PQclear(r);
  }
  PQfinish(c);
}
}  // namespace

PgSchema::PgSchema(const std::string& base_uri) : base_(base_uri) {
  static std::atomic<int> counter{0};
  name_ = "dtx_sdk_" + std::to_string(getpid()) + "_" + std::to_string(counter++) + "_" +
          std::to_string(std::random_device{}() % 1000000);
  PgExec(base_, "CREATE SCHEMA " + name_);
  uri_ = base_ + (base_.find('?') == std::string::npos ? "?" : "&") + "options=-csearch_path%3D" + name_;
}

PgSchema::~PgSchema() { PgExec(base_, "DROP SCHEMA IF EXISTS " + name_ + " CASCADE"); }

BankProcess::BankProcess(std::string name, std::string db, std::string coordinator, std::vector<std::string> extra)
    : name_(std::move(name)), db_(std::move(db)), coordinator_(std::move(coordinator)) {
  Start(std::move(extra));
}

void BankProcess::Start(std::vector<std::string> extra) {
  std::vector<std::string> argv = {DTX_TCC_BANK_BIN, "--name", name_, "--db", db_, "--coordinator", coordinator_,
                                   "--port", std::to_string(port_), "--accounts", "10", "--initial-balance", "1000",
                                   "--client-id", name_, "--threads", "4"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  process_ = std::make_unique<::dtx::testing::Subprocess>(argv);
  port_ = process_->WaitForListeningPort();
  ASSERT_GT(port_, 0) << name_ << " did not start";
}

void BankProcess::Kill() {
  if (process_) process_->Stop(SIGKILL);
  process_.reset();
}

std::optional<std::string> BankProcess::WaitForLine(const std::string& prefix, std::chrono::milliseconds limit) {
  return process_->WaitForLine(prefix, limit);
}

Result<std::string> HttpGet(int port, const std::string& path) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return IOError("socket");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  timeval tv{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    close(fd);
    return Unavailable("connect to admin port " + std::to_string(port));
  }
  const std::string req = "GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
  if (write(fd, req.data(), req.size()) != static_cast<ssize_t>(req.size())) {
    close(fd);
    return IOError("write");
  }
  std::string resp;
  char buf[8192];
  ssize_t n;
  while ((n = read(fd, buf, sizeof buf)) > 0) resp.append(buf, static_cast<size_t>(n));
  close(fd);
  const auto body = resp.find("\r\n\r\n");
  if (resp.rfind("HTTP/1.1 200", 0) != 0 || body == std::string::npos) {
    return RemoteError("admin answered: " + resp.substr(0, 200));
  }
  return resp.substr(body + 4);
}

Result<std::vector<std::string>> UnfinishedXids(int admin_port) {
  auto body = HttpGet(admin_port, "/api/v1/transactions?limit=1000");
  if (!body.ok()) return body.status();
  std::vector<std::string> xids;
  try {
    auto j = nlohmann::json::parse(*body);
    for (const auto& t : j.at("transactions")) {
      xids.push_back(t.at("xid").get<std::string>() + " " + t.at("status").get<std::string>());
    }
  } catch (const std::exception& e) {
    return Corruption(std::string("admin JSON: ") + e.what());
  }
  return xids;
}

bool WaitNoneUnfinished(int admin_port, std::chrono::milliseconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (true) {
    auto x = UnfinishedXids(admin_port);
    if (x.ok() && x->empty()) return true;
    if (std::chrono::steady_clock::now() > deadline) {
      if (x.ok()) {
        for (const auto& s : *x) ADD_FAILURE() << "unfinished: " << s;
      } else {
        ADD_FAILURE() << x.status();
      }
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

int64_t Metric(int admin_port, const std::string& name) {
  auto body = HttpGet(admin_port, "/metrics");
  if (!body.ok()) return -1;
  size_t pos = 0;
  while ((pos = body->find(name, pos)) != std::string::npos) {
    const bool line_start = pos == 0 || (*body)[pos - 1] == '\n';
    const size_t after = pos + name.size();
    if (line_start && after < body->size() && (*body)[after] == ' ') {
      return std::atoll(body->c_str() + after + 1);
    }
    pos = after;
  }
  return -1;
}

}  // namespace dtx::sdk::testing
