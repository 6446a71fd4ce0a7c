#include "dtx/sdk/coordinator_client.h"

#include <spdlog/spdlog.h>

#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <future>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "dtx.pb.h"
#include "dtx/rpc/client.h"
#include "dtx/rpc/io_pool.h"  // the rpc client's I/O threads: their io_contexts carry this client's timers

namespace dtx::sdk {

namespace pb = ::dtx::v1;
namespace asio = boost::asio;

namespace {

constexpr std::string_view kTc = "dtx.v1.TransactionCoordinator:1.0";
constexpr std::string_view kRm = "dtx.v1.ResourceManager:1.0";

Status FromCode(pb::Code code, const std::string& message) {
  std::string text = pb::Code_Name(code);
  if (text.empty()) text = "CODE_" + std::to_string(static_cast<int>(code));
  text += ": " + message;
  switch (code) {
    case pb::INVALID_ARGUMENT: return InvalidArgument(std::move(text));
    case pb::UNAUTHENTICATED: return Status(StatusCode::kUnauthenticated, std::move(text));
    case pb::XID_NOT_FOUND:
    case pb::BRANCH_NOT_FOUND: return NotFound(std::move(text));
    case pb::TIMED_OUT: return Timeout(std::move(text));
    case pb::LOCK_CONFLICT: return ResourceExhausted(std::move(text));
    case pb::LOG_UNAVAILABLE:
    case pb::SHUTTING_DOWN: return Unavailable(std::move(text));
    case pb::INTERNAL: return Internal(std::move(text));
    default: return FailedPrecondition(std::move(text));  // NOT_REGISTERED, NOT_ACTIVE, ALREADY_*
  }
}

// Worth sending again: the call may not have reached a coordinator, or that one cannot act now.
bool Transient(const Status& s) {
  return s.code() == StatusCode::kUnavailable || s.code() == StatusCode::kCancelled;
}

template <typename Resp>
TxState StateOf(const Resp& r) {
  TxState t;
  t.status = static_cast<GlobalStatus>(r.status());
  t.outcome = static_cast<Outcome>(r.outcome());
  return t;
}

}  // namespace

std::string_view GlobalStatusName(GlobalStatus s) {
  static const std::string_view names[] = {
      "Unknown", "Begin", "Committing", "CommitRetrying", "Rollbacking", "RollbackRetrying",
      "TimeoutRollbacking", "TimeoutRollbackRetrying", "AsyncCommitting", "Committed", "CommitFailed",
      "Rollbacked", "RollbackFailed", "TimeoutRollbacked", "TimeoutRollbackFailed"};
  const int i = static_cast<int>(s);
  return i >= 0 && i < 15 ? names[i] : "Unknown";
}

bool IsFinal(GlobalStatus s) {
  return s == GlobalStatus::kCommitted || s == GlobalStatus::kRollbacked || s == GlobalStatus::kTimeoutRollbacked;
}

bool IsLockConflict(const Status& s) {
  return s.code() == StatusCode::kResourceExhausted && s.message().rfind("LOCK_CONFLICT", 0) == 0;
}

// One call in flight with its retries (see Impl::Start). Holds the Impl weakly: the client
// owns the calls (Impl::ops), never the other way round.
struct OpBase : std::enable_shared_from_this<OpBase> {
  virtual ~OpBase() = default;
  // Calls `done` with Unavailable unless it was called already.
  virtual void Abort(const Status& why) = 0;
  uint64_t id = 0;
  std::atomic<bool> claimed{false};  // `done` was called (or is being called)
};

// A wait for a condition, ended by a poke (connection up, registration answered), by a tick
// that finds it true, or by its deadline. `then(true/false)` runs exactly once.
struct Waiter {
  std::function<bool()> ready;
  std::function<void(bool)> then;
  std::chrono::steady_clock::time_point deadline;
  std::atomic<bool> fired{false};
};

struct CoordinatorClient::Impl : std::enable_shared_from_this<Impl> {
  CoordinatorOptions options;
  BranchHandler handler;
  std::unique_ptr<rpc::Client> client;
  std::shared_ptr<rpc::IoPool> pool;  // the client's I/O threads; our timers run on them

  mutable std::mutex mu;
  std::condition_variable cv;
  std::vector<std::string> resources;
  uint64_t version = 1;  // of `resources`
  uint64_t connects = 0;  // connections made so far
  struct Conn {
    std::weak_ptr<rpc::Channel> channel;
    uint64_t registered_version = 0;  // 0: not (yet) registered
  };
  std::vector<Conn> conns;
  std::vector<std::shared_ptr<Waiter>> waiters;  // guarded by mu

  std::atomic<bool> stopping{false};
  std::mutex ops_mu;
  bool pool_stopped = false;                                    // guarded by ops_mu
  uint64_t next_op = 1;                                         // guarded by ops_mu
  std::unordered_map<uint64_t, std::shared_ptr<OpBase>> ops;    // guarded by ops_mu
  std::vector<std::thread::id> io_thread_ids;                   // guarded by ops_mu

  bool participant() const { return handler != nullptr || !resources.empty(); }

  bool OnIoThread() {
    std::lock_guard lock(ops_mu);
    return std::find(io_thread_ids.begin(), io_thread_ids.end(), std::this_thread::get_id()) != io_thread_ids.end();
  }

  // Runs `fn` on an I/O thread; inline once the I/O threads are stopped.
  void Post(std::function<void()> fn) {
    {
      std::lock_guard lock(ops_mu);
      if (!pool_stopped) {
        asio::post(pool->Next(), std::move(fn));
        return;
      }
    }
    fn();
  }

  // Runs `fn` on an I/O thread after `delay` (inline once the I/O threads are stopped).
  void After(std::chrono::milliseconds delay, std::function<void()> fn) {
    std::unique_lock lock(ops_mu);
    if (pool_stopped) {
      lock.unlock();
      return fn();
    }
    auto timer = std::make_shared<asio::steady_timer>(pool->Next(), delay);
    timer->async_wait([timer, fn = std::move(fn)](const boost::system::error_code&) { fn(); });
  }

  void Track(const std::shared_ptr<OpBase>& op) {
    std::lock_guard lock(ops_mu);
    op->id = next_op++;
    ops.emplace(op->id, op);
  }
  void Untrack(uint64_t id) {
    std::lock_guard lock(ops_mu);
    ops.erase(id);
  }

  // Waits (never blocking a thread) until `ready()` or the deadline; then `then(ready)`.
  void WaitUntil(std::function<bool()> ready, std::chrono::milliseconds within, std::function<void(bool)> then) {
    auto w = std::make_shared<Waiter>();
    w->ready = std::move(ready);
    w->then = std::move(then);
    w->deadline = std::chrono::steady_clock::now() + within;
    {
      std::lock_guard lock(mu);
      waiters.push_back(w);
    }
    if (stopping || w->ready()) return Fire(w, !stopping);  // checked after joining: no lost poke
    Tick(w);
  }
  void Fire(const std::shared_ptr<Waiter>& w, bool ok) {
    if (w->fired.exchange(true)) return;
    {
      std::lock_guard lock(mu);
      std::erase(waiters, w);
    }
    w->then(ok);
  }
  // A poke may race a condition that turns true without one (a connection counted just after
  // its on_connect): the waiter also looks every 50 ms.
  void Tick(const std::shared_ptr<Waiter>& w) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(w->deadline - std::chrono::steady_clock::now());
    After(std::clamp(left, std::chrono::milliseconds(0), std::chrono::milliseconds(50)),
          [weak = weak_from_this(), w] {
            auto self = weak.lock();
            if (w->fired) return;
            if (!self || self->stopping) {
              if (self) return self->Fire(w, false);
              if (!w->fired.exchange(true)) w->then(false);
              return;
            }
            if (w->ready()) return self->Fire(w, true);
            if (std::chrono::steady_clock::now() >= w->deadline) return self->Fire(w, false);
            self->Tick(w);
          });
  }
  // Re-checks every waiter (a connection came up, a registration was answered, shutdown).
  void Poke() {
    std::vector<std::shared_ptr<Waiter>> all;
    {
      std::lock_guard lock(mu);
      all = waiters;
    }
    for (auto& w : all) {
      if (stopping) Fire(w, false);
      else if (w->ready()) Fire(w, true);
    }
  }

  // Sends this participant's registration over `conn` (any thread, never blocks).
  void Register(const std::shared_ptr<rpc::Channel>& conn) {
    pb::RegisterParticipantRequest req;
    uint64_t v;
    {
      std::lock_guard lock(mu);
      req.set_application(options.application);
      for (const auto& r : resources) req.add_resource_ids(r);
      req.set_client_id(options.client_id);
      req.set_token(options.token);
      v = version;
    }
    rpc::CallOptions co;
    co.timeout = options.call_timeout;
    conn->Call<pb::RegisterParticipantResponse>(
        kTc, "RegisterParticipant", req, co,
        [weak = weak_from_this(), raw = conn.get(), v](Result<pb::RegisterParticipantResponse> r) {
          auto self = weak.lock();
          if (!self) return;
          if (!r.ok() || r->code() != pb::OK) {
            spdlog::error("dtx sdk: RegisterParticipant failed: {}",
                          r.ok() ? FromCode(r->code(), r->message()).ToString() : r.status().ToString());
            return;
          }
          {
            std::lock_guard lock(self->mu);
            for (auto& c : self->conns) {
              auto ch = c.channel.lock();
              if (ch.get() == raw) c.registered_version = std::max(c.registered_version, v);
            }
            self->cv.notify_all();
          }
          self->Poke();
        });
  }

  void OnConnect(const std::shared_ptr<rpc::Channel>& conn) {
    bool reg;
    {
      std::lock_guard lock(mu);
      std::erase_if(conns, [](const Conn& c) { return c.channel.expired(); });
      conns.push_back({conn, 0});
      ++connects;
      reg = participant();
    }
    if (reg) Register(conn);
    Poke();
  }

  bool RegisteredLocked() const {
    for (const auto& c : conns)
      if (c.registered_version == version && !c.channel.expired()) return true;
    return false;
  }
  bool RegisteredOrNotNeeded() {
    std::lock_guard lock(mu);
    return !participant() || RegisteredLocked();
  }

  struct StartFlags {
    bool resend_after_timeout = true;
    bool wait_registered = false;  // first wait (connect_wait) for the participant's registration
  };
  // Sends `req` to `method`, with the retries described in the header, and calls `done` once
  // with the answer (any code) or the failure. Never blocks; `done` runs on an I/O thread.
  template <typename Resp, typename Req>
  void Start(std::string_view method, const Req& req, StartFlags flags, std::function<void(Result<Resp>)> done);

  template <typename Resp>
  struct CallOp;
  static void RegisterBranchRound(const std::shared_ptr<Impl>& impl, std::shared_ptr<pb::RegisterBranchRequest> req,
                                  int round, std::function<void(Result<int64_t>)> done);
};

template <typename Resp>
struct CoordinatorClient::Impl::CallOp final : OpBase {
  std::weak_ptr<Impl> impl;
  std::string method;
  std::string body;
  bool resend_after_timeout = true;
  int attempts = 1;
  int attempt = 0;
  Status last = Unavailable("no coordinator reachable at any address");
  std::atomic<bool> starting{true};  // still inside Start(): deliver through a post
  std::function<void(Result<Resp>)> done;

  std::shared_ptr<CallOp> Self() { return std::static_pointer_cast<CallOp>(shared_from_this()); }

  void Abort(const Status& why) override { Invoke(Result<Resp>(why)); }

  void Invoke(Result<Resp> r) {
    if (claimed.exchange(true)) return;
    auto fn = std::move(done);
    done = nullptr;
    fn(std::move(r));
    if (auto self = impl.lock()) self->Untrack(id);
  }

  void Deliver(Result<Resp> r) {
    if (claimed) return;
    auto self = impl.lock();
    if (self && starting) {
      self->Post([op = Self(), r = std::move(r)]() mutable { op->Invoke(std::move(r)); });
      return;
    }
    Invoke(std::move(r));
  }

  static Status ShutDown() { return Unavailable("the coordinator client is shut down"); }

  // Attempt number `attempt`: wait for a connection if there is none, then send.
  void Attempt() {
    auto self = impl.lock();
    if (!self || self->stopping) return Deliver(ShutDown());
    if (self->client->live_connections() > 0) return Send(*self);
    uint64_t connects_before;
    {
      std::lock_guard lock(self->mu);
      connects_before = self->connects;
    }
    self->WaitUntil(
        [weak = impl, connects_before] {
          auto s = weak.lock();
          if (!s) return false;
          if (s->client->live_connections() > 0) return true;
          std::lock_guard lock(s->mu);
          return s->connects > connects_before;
        },
        self->options.connect_wait,
        [op = Self()](bool connected) {
          auto self = op->impl.lock();
          if (!self || self->stopping) return op->Deliver(ShutDown());
          if (connected) return op->Send(*self);
          op->last = Unavailable("no coordinator reachable at any of " +
                                 std::to_string(self->options.addresses.size()) + " address(es)");
          op->Next();
        });
  }

  // The next attempt, after a pause of 50 ms times its number.
  void Next() {
    auto self = impl.lock();
    if (!self || self->stopping) return Deliver(ShutDown());
    if (++attempt >= attempts) return Deliver(last);
    self->After(std::chrono::milliseconds(50 * attempt), [op = Self()] { op->Attempt(); });
  }

  void Send(Impl& self) {
    rpc::CallOptions co;
    co.timeout = self.options.call_timeout;
    self.client->CallRaw(kTc, method, body, co, [op = Self()](Result<std::string> raw) { op->OnAnswer(std::move(raw)); });
  }

  void OnAnswer(Result<std::string> raw) {
    if (claimed) return;
    if (!raw.ok()) {
      last = raw.status().WithContext(method);
      if (Transient(last) || (resend_after_timeout && last.code() == StatusCode::kTimeout)) return Next();
      return Deliver(last);
    }
    Resp resp;
    if (!resp.ParseFromString(*raw)) {
      return Deliver(Corruption("response body is not a valid " + std::string(Resp::descriptor()->full_name())));
    }
    if (resp.code() == pb::LOG_UNAVAILABLE || resp.code() == pb::SHUTTING_DOWN) {
      last = FromCode(resp.code(), resp.message());
      return Next();
    }
    Deliver(std::move(resp));
  }
};

template <typename Resp, typename Req>
void CoordinatorClient::Impl::Start(std::string_view method, const Req& req, StartFlags flags,
                                    std::function<void(Result<Resp>)> done) {
  auto op = std::make_shared<CallOp<Resp>>();
  op->impl = weak_from_this();
  op->method = std::string(method);
  op->resend_after_timeout = flags.resend_after_timeout;
  op->attempts = std::max(1, options.attempts);
  op->done = std::move(done);
  Track(op);
  if (!req.SerializeToString(&op->body)) {
    op->Deliver(Internal("request message failed to serialize"));
  } else if (stopping) {
    op->Deliver(CallOp<Resp>::ShutDown());
  } else if (flags.wait_registered && !RegisteredOrNotNeeded()) {
    // As the blocking form always did: wait for the registration, then call in any case (the
    // coordinator answers NOT_REGISTERED if it still does not know this participant).
    WaitUntil([weak = weak_from_this()] {
                auto s = weak.lock();
                return s && s->RegisteredOrNotNeeded();
              },
              options.connect_wait, [op](bool) { op->Attempt(); });
  } else {
    op->Attempt();
  }
  op->starting = false;
}

CoordinatorClient::CoordinatorClient(CoordinatorOptions options, BranchHandler handler)
    : impl_(std::make_shared<Impl>()) {
  impl_->options = std::move(options);
  impl_->handler = std::move(handler);
  impl_->resources = impl_->options.resource_ids;
  std::shared_ptr<rpc::ServiceRegistry> services;
  if (impl_->handler) {
    services = std::make_shared<rpc::ServiceRegistry>();
    for (bool commit : {true, false}) {
      services->AddMethod<pb::BranchRequest, pb::BranchResponse>(
          std::string(kRm), commit ? "BranchCommit" : "BranchRollback",
          [weak = std::weak_ptr<Impl>(impl_), commit](const rpc::CallContext&, pb::BranchRequest&& req,
                                                      rpc::TypedResponder<pb::BranchResponse> reply) {
            auto self = weak.lock();
            if (!self) return reply.Fail(Unavailable("participant is shutting down"));
            BranchCall call;
            call.commit = commit;
            call.xid = req.xid();
            call.branch_id = req.branch_id();
            call.resource_id = req.resource_id();
            call.type = static_cast<BranchType>(req.branch_type());
            call.application_data = std::move(*req.mutable_application_data());
            self->handler(std::move(call), [reply](BranchAnswer a) mutable {
              pb::BranchResponse resp;
              resp.set_status(static_cast<pb::BranchStatus>(a.status));
              resp.set_message(std::move(a.message));
              reply.Reply(resp);
            });
          });
    }
  }
  rpc::ClientOptions co;
  co.addresses = impl_->options.addresses;
  co.io_threads = std::max(1u, impl_->options.io_threads);
  co.io_pool = impl_->options.io_pool;
  co.reconnect_backoff_min = impl_->options.reconnect_backoff_min;
  co.reconnect_backoff_max = impl_->options.reconnect_backoff_max;
  co.on_connect = [weak = std::weak_ptr<Impl>(impl_)](const std::shared_ptr<rpc::Channel>& conn) {
    if (auto self = weak.lock()) self->OnConnect(conn);
  };
  impl_->client = std::make_unique<rpc::Client>(std::move(co), std::move(services));
  impl_->pool = impl_->client->io_pool();
  // Learn the I/O threads' ids, so that Shutdown knows when it runs on one of them.
  for (size_t i = 0; i < impl_->pool->size(); ++i) {
    asio::post(impl_->pool->At(i), [weak = std::weak_ptr<Impl>(impl_)] {
      if (auto self = weak.lock()) {
        std::lock_guard lock(self->ops_mu);
        self->io_thread_ids.push_back(std::this_thread::get_id());
      }
    });
  }
}

CoordinatorClient::~CoordinatorClient() { Shutdown(); }

void CoordinatorClient::Shutdown() {
  auto& im = *impl_;
  if (im.stopping.exchange(true)) return;
  const Status why = Unavailable("the coordinator client is shut down");
  auto in_flight = [&] {
    std::lock_guard lock(im.ops_mu);
    std::vector<std::shared_ptr<OpBase>> v;
    for (auto& [id, op] : im.ops) v.push_back(op);
    return v;
  };
  // Fail what is in flight on the I/O threads while they still run, and wait for it (not on an
  // I/O thread: that would wait on itself), then stop them; what is left is failed here.
  const bool on_io = im.OnIoThread();
  for (auto& op : in_flight()) im.Post([op, why] { op->Abort(why); });
  const auto grace = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  while (!on_io && std::chrono::steady_clock::now() < grace) {
    {
      std::lock_guard lock(im.ops_mu);
      if (im.ops.empty()) break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  {
    std::lock_guard lock(im.ops_mu);
    im.pool_stopped = true;
  }
  if (im.client) im.client->Shutdown(std::chrono::milliseconds(0));
  for (auto& op : in_flight()) op->Abort(why);
}

const CoordinatorOptions& CoordinatorClient::options() const { return impl_->options; }

namespace {

// Waits for an *Async call: the blocking forms.
template <typename T, typename Launch>
T Wait(Launch launch) {
  auto promise = std::make_shared<std::promise<T>>();
  auto future = promise->get_future();
  launch([promise](T r) { promise->set_value(std::move(r)); });
  return future.get();
}

template <typename Resp>
Result<TxState> ToState(Result<Resp> r) {
  if (!r.ok()) return r.status();
  if (r->code() != pb::OK) return FromCode(r->code(), r->message());
  return StateOf(*r);
}

}  // namespace

void CoordinatorClient::BeginAsync(std::string name, std::chrono::milliseconds timeout, std::string application_data,
                                   XidDone done) {
  pb::BeginRequest req;
  req.set_name(std::move(name));
  req.set_timeout_ms(timeout.count());
  req.set_application(impl_->options.application);
  req.set_token(impl_->options.token);
  req.set_application_data(std::move(application_data));
  impl_->Start<pb::BeginResponse>("Begin", req, {}, [done = std::move(done)](Result<pb::BeginResponse> r) {
    if (!r.ok()) return done(r.status());
    if (r->code() != pb::OK) return done(FromCode(r->code(), r->message()));
    done(std::move(*r->mutable_xid()));
  });
}

void CoordinatorClient::CommitAsync(std::string xid, StateDone done) {
  pb::CommitRequest req;
  req.set_xid(std::move(xid));
  req.set_token(impl_->options.token);
  impl_->Start<pb::CommitResponse>("Commit", req, {},
                                   [done = std::move(done)](Result<pb::CommitResponse> r) { done(ToState(std::move(r))); });
}

void CoordinatorClient::RollbackAsync(std::string xid, StateDone done) {
  pb::RollbackRequest req;
  req.set_xid(std::move(xid));
  req.set_token(impl_->options.token);
  impl_->Start<pb::RollbackResponse>(
      "Rollback", req, {}, [done = std::move(done)](Result<pb::RollbackResponse> r) { done(ToState(std::move(r))); });
}

void CoordinatorClient::GetStatusAsync(std::string xid, StateDone done) {
  pb::GetStatusRequest req;
  req.set_xid(std::move(xid));
  req.set_token(impl_->options.token);
  impl_->Start<pb::GetStatusResponse>(
      "GetStatus", req, {}, [done = std::move(done)](Result<pb::GetStatusResponse> r) { done(ToState(std::move(r))); });
}

void CoordinatorClient::ReportAsync(std::string xid, GlobalStatus status, StateDone done) {
  pb::ReportRequest req;
  req.set_xid(std::move(xid));
  req.set_status(static_cast<pb::GlobalStatus>(status));
  req.set_token(impl_->options.token);
  impl_->Start<pb::ReportResponse>("Report", req, {},
                                   [done = std::move(done)](Result<pb::ReportResponse> r) { done(ToState(std::move(r))); });
}

Result<std::string> CoordinatorClient::Begin(std::string_view name, std::chrono::milliseconds timeout,
                                             std::string_view application_data) {
  return Wait<Result<std::string>>([&](XidDone done) {
    BeginAsync(std::string(name), timeout, std::string(application_data), std::move(done));
  });
}

Result<TxState> CoordinatorClient::Commit(const std::string& xid) {
  return Wait<Result<TxState>>([&](StateDone done) { CommitAsync(xid, std::move(done)); });
}

Result<TxState> CoordinatorClient::Rollback(const std::string& xid) {
  return Wait<Result<TxState>>([&](StateDone done) { RollbackAsync(xid, std::move(done)); });
}

Result<TxState> CoordinatorClient::GetStatus(const std::string& xid) {
  return Wait<Result<TxState>>([&](StateDone done) { GetStatusAsync(xid, std::move(done)); });
}

Result<TxState> CoordinatorClient::Report(const std::string& xid, GlobalStatus status) {
  return Wait<Result<TxState>>([&](StateDone done) { ReportAsync(xid, status, std::move(done)); });
}

Status CoordinatorClient::AddResources(const std::vector<std::string>& resource_ids) {
  std::vector<std::shared_ptr<rpc::Channel>> live;
  {
    std::lock_guard lock(impl_->mu);
    bool added = false;
    for (const auto& r : resource_ids) {
      if (std::find(impl_->resources.begin(), impl_->resources.end(), r) != impl_->resources.end()) continue;
      impl_->resources.push_back(r);
      added = true;
    }
    if (!added) return Status::Ok();
    ++impl_->version;
    for (const auto& c : impl_->conns)
      if (auto ch = c.channel.lock()) live.push_back(std::move(ch));
  }
  for (const auto& ch : live) impl_->Register(ch);
  return WaitRegistered(impl_->options.connect_wait);
}

std::vector<std::string> CoordinatorClient::resources() const {
  std::lock_guard lock(impl_->mu);
  return impl_->resources;
}

Status CoordinatorClient::WaitRegistered(std::chrono::milliseconds timeout) {
  std::unique_lock lock(impl_->mu);
  if (!impl_->participant()) return Status::Ok();
  if (!impl_->cv.wait_for(lock, timeout, [&] { return impl_->RegisteredLocked(); })) {
    return Unavailable("not registered with any coordinator within " + std::to_string(timeout.count()) + " ms");
  }
  return Status::Ok();
}

// RegisterBranch's rounds: a NOT_REGISTERED answer in the first one (a reconnect raced the
// call) waits for the registration once more and sends again.
void CoordinatorClient::Impl::RegisterBranchRound(const std::shared_ptr<Impl>& impl,
                                                  std::shared_ptr<pb::RegisterBranchRequest> req, int round,
                                                  std::function<void(Result<int64_t>)> done) {
  // A registration whose answer was lost may have happened: never send it again after a
  // timeout (the coordinator would hold two branches for one Try).
  impl->Start<pb::RegisterBranchResponse>(
      "RegisterBranch", *req, {.resend_after_timeout = false, .wait_registered = true},
      [weak = std::weak_ptr<Impl>(impl), req, round,
       done = std::move(done)](Result<pb::RegisterBranchResponse> r) mutable {
        if (!r.ok()) return done(r.status());
        if (r->code() == pb::NOT_REGISTERED && round == 0) {
          if (auto self = weak.lock()) return RegisterBranchRound(self, std::move(req), 1, std::move(done));
          return done(Unavailable("the coordinator client is shut down"));
        }
        if (r->code() == pb::LOCK_CONFLICT) {
          return done(FromCode(r->code(), r->message() + " (key " + r->conflict_key() + " held by " +
                                              r->conflict_xid() + ")"));
        }
        if (r->code() == pb::NOT_REGISTERED) {
          return done(FailedPrecondition("NOT_REGISTERED: the coordinator did not take this participant's registration"));
        }
        if (r->code() != pb::OK) return done(FromCode(r->code(), r->message()));
        done(r->branch_id());
      });
}

void CoordinatorClient::RegisterBranchAsync(BranchRegistration branch, std::function<void(Result<int64_t>)> done) {
  auto req = std::make_shared<pb::RegisterBranchRequest>();
  req->set_xid(std::move(branch.xid));
  req->set_resource_id(std::move(branch.resource_id));
  req->set_branch_type(static_cast<pb::BranchType>(branch.type));
  for (auto& k : branch.lock_keys) req->add_lock_keys(std::move(k));
  req->set_application_data(std::move(branch.application_data));
  Impl::RegisterBranchRound(impl_, std::move(req), 0, std::move(done));
}

void CoordinatorClient::ReportBranchAsync(std::string xid, int64_t branch_id, BranchStatus status,
                                          std::string application_data, std::function<void(Status)> done) {
  pb::ReportBranchRequest req;
  req.set_xid(std::move(xid));
  req.set_branch_id(branch_id);
  req.set_status(static_cast<pb::BranchStatus>(status));
  req.set_application_data(std::move(application_data));
  impl_->Start<pb::ReportBranchResponse>("ReportBranch", req, {.wait_registered = true},
                                         [done = std::move(done)](Result<pb::ReportBranchResponse> r) {
                                           if (!r.ok()) return done(r.status());
                                           if (r->code() != pb::OK) return done(FromCode(r->code(), r->message()));
                                           done(Status::Ok());
                                         });
}

void CoordinatorClient::QueryLocksAsync(std::string xid, std::string resource_id, std::vector<std::string> lock_keys,
                                        std::vector<std::string> key_prefixes,
                                        std::function<void(Result<LockQuery>)> done) {
  pb::QueryLocksRequest req;
  req.set_xid(std::move(xid));
  req.set_resource_id(std::move(resource_id));
  for (auto& k : lock_keys) req.add_lock_keys(std::move(k));
  for (auto& p : key_prefixes) req.add_key_prefixes(std::move(p));
  const int prefixes = req.key_prefixes_size();
  impl_->Start<pb::QueryLocksResponse>("QueryLocks", req, {.wait_registered = true},
                                       [done = std::move(done), prefixes](Result<pb::QueryLocksResponse> r) {
                                         if (!r.ok()) return done(r.status());
                                         if (r->code() != pb::OK) return done(FromCode(r->code(), r->message()));
                                         if (r->free() && r->prefixes_checked() != prefixes) {
                                           return done(FailedPrecondition(
                                               "the coordinator did not check lock-key prefixes (it predates them): "
                                               "upgrade it"));
                                         }
                                         LockQuery q;
                                         q.free = r->free();
                                         q.conflict_key = r->conflict_key();
                                         q.conflict_xid = r->conflict_xid();
                                         done(std::move(q));
                                       });
}

Result<int64_t> CoordinatorClient::RegisterBranch(const BranchRegistration& branch) {
  return Wait<Result<int64_t>>(
      [&](std::function<void(Result<int64_t>)> done) { RegisterBranchAsync(branch, std::move(done)); });
}

Status CoordinatorClient::ReportBranch(const std::string& xid, int64_t branch_id, BranchStatus status,
                                       std::string_view application_data) {
  return Wait<Status>([&](std::function<void(Status)> done) {
    ReportBranchAsync(xid, branch_id, status, std::string(application_data), std::move(done));
  });
}

Result<LockQuery> CoordinatorClient::QueryLocks(const std::string& xid, const std::string& resource_id,
                                                const std::vector<std::string>& lock_keys,
                                                const std::vector<std::string>& key_prefixes) {
  return Wait<Result<LockQuery>>([&](std::function<void(Result<LockQuery>)> done) {
    QueryLocksAsync(xid, resource_id, lock_keys, key_prefixes, std::move(done));
  });
}

}  // namespace dtx::sdk
