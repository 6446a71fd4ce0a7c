#include "proxy_harness.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <regex>
#include <sstream>
#include <thread>

#include "dtx/sql_proxy/pg_message.h"

namespace dtx::testing {
namespace {

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

int FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  socklen_t len = sizeof addr;
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return ntohs(addr.sin_port);
}

uint32_t ReadU32(const char* p) {
  const auto* u = reinterpret_cast<const unsigned char*>(p);
  return (uint32_t{u[0]} << 24) | (uint32_t{u[1]} << 16) | (uint32_t{u[2]} << 8) | uint32_t{u[3]};
}

}  // namespace

std::optional<PgTarget> SharedPostgres() {
  const std::string uri = Env("DTX_TEST_PG_URI");
  // postgresql://user@host:port/db
  static const std::regex re(R"(postgres(?:ql)?://([^@/]+)@([^:/]+):(\d+)/([^?]+).*)");
  std::smatch m;
  if (!std::regex_match(uri, m, re)) return std::nullopt;
  PgTarget t;
  t.user = m[1];
  t.host = m[2];
  t.port = std::stoi(m[3]);
  t.database = m[4];
  t.socket_dir = Env("DTX_TEST_PG_SOCKET_DIR");
  return t;
}

std::string PgProgram(const std::string& program) {
  std::string bin = Env("DTX_TEST_PG_BIN");
  if (bin.empty()) bin = "/usr/lib/postgresql/15/bin";
  return bin + "/" + program;
}

RunResult RunProgram(const std::vector<std::string>& argv, const std::string& input,
              const std::map<std::string, std::string>& env, std::chrono::seconds timeout) {
  char in_path[] = "/tmp/dtx-proxy-test-in.XXXXXX";
  int in_fd = mkstemp(in_path);
  if (in_fd < 0) return {};
  if (!input.empty() && write(in_fd, input.data(), input.size()) != static_cast<ssize_t>(input.size())) return {};
  lseek(in_fd, 0, SEEK_SET);
  unlink(in_path);
  int out[2];
  if (pipe2(out, O_CLOEXEC) != 0) return {};
  const pid_t pid = fork();
  if (pid == 0) {
    dup2(in_fd, STDIN_FILENO);
    dup2(out[1], STDOUT_FILENO);
    dup2(out[1], STDERR_FILENO);
    for (const auto& [k, v] : env) setenv(k.c_str(), v.c_str(), 1);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execvp(args[0], args.data());
    std::fprintf(stderr, "exec %s: %s\n", args[0], std::strerror(errno));
    _exit(127);
  }
  close(in_fd);
  close(out[1]);
  RunResult result;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  bool timed_out = false;
  while (true) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      timed_out = true;
      kill(pid, SIGKILL);
      break;
    }
    pollfd p{out[0], POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
    char buf[65536];
    const ssize_t n = read(out[0], buf, sizeof buf);
    if (n <= 0) break;
    result.output.append(buf, static_cast<size_t>(n));
  }
  close(out[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  result.exit_code = !timed_out && WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

RunResult Psql(int port, const std::string& user, const std::string& database, const std::string& script,
               const std::map<std::string, std::string>& env) {
  return RunProgram({PgProgram("psql"), "-X", "-A", "-t", "-q", "-h", "127.0.0.1", "-p", std::to_string(port), "-U", user,
              "-d", database},
             script, env);
}

ProxyProcess::ProxyProcess(std::vector<std::string> args) {
  std::vector<std::string> argv = {DTX_SQL_PROXY_BIN, "--port", "0", "--admin", "127.0.0.1:0", "--workers", "2",
                                   "--log-level", "warn"};
  argv.insert(argv.end(), args.begin(), args.end());
  process_ = std::make_unique<Subprocess>(argv);
  port_ = process_->WaitForListeningPort();
  auto admin = process_->WaitForLine("ADMIN ", std::chrono::seconds(10));
  admin_port_ = admin ? std::stoi(admin->substr(6)) : 0;
}

double ProxyProcess::Metric(const std::string& sample) const {
  const std::string text = HttpGet(admin_port_, "/metrics");
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.rfind(sample + " ", 0) == 0) return std::stod(line.substr(sample.size() + 1));
  }
  return -1;
}

std::string HttpGet(int port, const std::string& path) {
  RawClient c(port);
  if (!c.connected()) return "";
  if (!c.Send("GET " + path + " HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")) return "";
  return c.ReadUntilClose();
}

// ---- OwnPostgres ----

std::string PgServerUser() {
  std::string user = Env("DTX_TEST_PG_USER");
  if (user.empty() && geteuid() == 0) user = "postgres";
  return user;
}

OwnPostgres::OwnPostgres(std::vector<std::string> hba_lines, std::vector<std::string> conf_lines) {
  user_ = PgServerUser();
  char tmpl[] = "/tmp/dtx-proxy-pg.XXXXXX";
  if (!mkdtemp(tmpl)) {
    error_ = "mkdtemp failed";
    return;
  }
  dir_ = tmpl;
  data_ = dir_ + "/data";
  if (!user_.empty()) {
    if (passwd* pw = getpwnam(user_.c_str())) {
      if (chown(dir_.c_str(), pw->pw_uid, pw->pw_gid) != 0) error_ = "chown failed";
    }
  }
  auto r = AsServerUser({PgProgram("initdb"), "-D", data_, "-U", "postgres", "-A", "trust", "-E", "UTF8",
                         "--locale=C", "--no-sync", "--no-instructions"});
  if (r.exit_code != 0) {
    error_ = "initdb: " + r.output;
    return;
  }
  {
    std::ofstream conf(data_ + "/postgresql.conf", std::ios::app);
    conf << "\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '" << dir_
         << "'\nfsync = off\nshared_buffers = 16MB\nmax_connections = 50\nlog_min_messages = warning\n";
    for (const auto& line : conf_lines) conf << line << "\n";
  }
  {
    std::ofstream hba(data_ + "/pg_hba.conf", std::ios::trunc);
    hba << "local all all trust\n";
    for (const auto& line : hba_lines) hba << line << "\n";
  }
  for (int attempt = 0; attempt < 5 && !ok_; ++attempt) {
    port_ = FreePort();
    std::ofstream conf(data_ + "/postgresql.conf", std::ios::app);
    conf << "port = " << port_ << "\n";
    conf.close();
    ok_ = Start();
  }
  if (!ok_ && error_.empty()) error_ = "pg_ctl start failed";
}

OwnPostgres::~OwnPostgres() {
  if (!data_.empty() && std::filesystem::exists(data_ + "/postmaster.pid")) Stop();
  if (!dir_.empty()) std::filesystem::remove_all(dir_);
}

RunResult OwnPostgres::AsServerUser(std::vector<std::string> argv, const std::string& input) {
  if (!user_.empty()) argv.insert(argv.begin(), {"runuser", "-u", user_, "--"});
  // A folder the server's user may enter.
  std::vector<std::string> wrapped = {"sh", "-c", "cd \"$0\" && exec \"$@\"", dir_};
  wrapped.insert(wrapped.end(), argv.begin(), argv.end());
  return RunProgram(wrapped, input);
}

bool OwnPostgres::Start() {
  auto r = AsServerUser({PgProgram("pg_ctl"), "-D", data_, "-l", dir_ + "/postgres.log", "-w", "-t", "60", "start"});
  if (r.exit_code != 0) error_ = "pg_ctl start: " + r.output;
  return r.exit_code == 0;
}

bool OwnPostgres::Stop() {
  return AsServerUser({PgProgram("pg_ctl"), "-D", data_, "-m", "fast", "-w", "stop"}).exit_code == 0;
}

RunResult OwnPostgres::Sql(const std::string& script) {
  return AsServerUser({PgProgram("psql"), "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-h", dir_, "-p",
                       std::to_string(port_), "-U", "postgres", "-d", "postgres"},
                      script);
}

// ---- RawClient ----

RawClient::RawClient(int port) {
  fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    close(fd_);
    fd_ = -1;
  }
}

RawClient::~RawClient() { Close(); }

void RawClient::Close() {
  if (fd_ >= 0) close(fd_);
  fd_ = -1;
}

bool RawClient::Send(const std::string& bytes) {
  size_t off = 0;
  while (off < bytes.size()) {
    const ssize_t n = send(fd_, bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
    if (n <= 0) return false;
    off += static_cast<size_t>(n);
  }
  return true;
}

std::string RawClient::ReadUntilClose(std::chrono::milliseconds timeout) {
  std::string out = std::move(pending_);
  pending_.clear();
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) break;
    pollfd p{fd_, POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
    char buf[65536];
    const ssize_t n = recv(fd_, buf, sizeof buf, 0);
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

std::string RawClient::ReadBytes(size_t n) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (pending_.size() < n) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) break;
    pollfd p{fd_, POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
    char buf[4096];
    const ssize_t got = recv(fd_, buf, sizeof buf, 0);
    if (got <= 0) break;
    pending_.append(buf, static_cast<size_t>(got));
  }
  std::string out = pending_.substr(0, std::min(n, pending_.size()));
  pending_.erase(0, out.size());
  return out;
}

std::optional<std::string> RawClient::ReadUntilMessage(char type, std::chrono::milliseconds timeout) {
  std::string out;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    // Whole messages in pending_?
    while (pending_.size() >= 5) {
      const size_t size = 1 + ReadU32(pending_.data() + 1);
      if (pending_.size() < size) break;
      const char t = pending_[0];
      out += pending_.substr(0, size);
      pending_.erase(0, size);
      if (t == type) return out;
    }
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return std::nullopt;
    pollfd p{fd_, POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
    char buf[65536];
    const ssize_t n = recv(fd_, buf, sizeof buf, 0);
    if (n <= 0) return std::nullopt;
    pending_.append(buf, static_cast<size_t>(n));
  }
}

std::vector<std::string> ErrorMessages(const std::string& stream) {
  std::vector<std::string> out;
  std::string_view rest(stream);
  while (true) {
    auto f = sql_proxy::ReadMessage(rest);
    if (f.status != sql_proxy::FrameStatus::kMessage) break;
    if (f.type == 'E') {
      if (auto fields = sql_proxy::ParseErrorFields(f.body)) out.push_back(fields->sqlstate + " " + fields->message);
    }
    rest.remove_prefix(f.size);
  }
  return out;
}

}  // namespace dtx::testing
