#include "dtx/coordinator/coordinator.h"

#include <pthread.h>
#include <spdlog/spdlog.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>

#include <algorithm>
#include <array>
#include <deque>
#include <map>
#include <mutex>
#include <random>
#include <thread>
#include <unordered_map>

#include "dtx.pb.h"
#include "participants.h"
#include "state_machine.h"

namespace dtx::coordinator {
namespace asio = boost::asio;
namespace pb = ::dtx::v1;
using log::Batch;
using log::BranchRecord;
using log::GlobalRecord;
using log::WriteResult;
using Clock = std::chrono::steady_clock;

namespace {

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

pb::Outcome OutcomeOf(GlobalStatus s) {
  switch (FamilyOf(s)) {
    case Family::kCommit: return pb::COMMITTED_OUTCOME;
    case Family::kRollback:
    case Family::kTimeoutRollback: return pb::ROLLED_BACK_OUTCOME;
    case Family::kBegin: break;
  }
  return pb::UNDECIDED;
}

struct Branch {
  BranchRecord rec;
  bool done = false;       // phase 2 finished for it (or nothing to do)
  bool in_flight = false;  // a phase-2 call or its retry timer is pending
  int attempts = 0;
  std::chrono::milliseconds backoff{0};
};

struct Session;
// Deadlines of transactions in Begin, soonest first. An entry holds its session until the
// transaction finishes, so the map holds live transactions only.
using TimeoutMap = std::multimap<Clock::time_point, std::shared_ptr<Session>>;

struct Session {
  std::mutex mu;
  GlobalRecord rec;  // as durable in the log
  std::vector<Branch> branches;  // by branch id: registration order
  int pending_registrations = 0;
  std::optional<GlobalStatus> deciding;  // a decision being made durable
  std::vector<std::function<void(const Status&)>> waiters;
  Clock::time_point begun = Clock::now();
  Clock::time_point decided;
  bool finishing = false;
  bool retry_marked = false;
  bool failed_write_pending = false;
  std::string failure;  // why it needs an operator
  // Its entry in the timeout map; both guarded by the coordinator's timeouts_mu_.
  TimeoutMap::iterator timeout;
  bool has_timeout = false;
};
using SessionPtr = std::shared_ptr<Session>;

// Recently finished transactions, so that a repeated Commit or GetStatus still gets the outcome.
class RecentOutcomes {
 public:
  explicit RecentOutcomes(size_t capacity) : capacity_(capacity) {}
  void Add(const std::string& xid, GlobalStatus s) {
    std::lock_guard lock(mu_);
    if (map_.emplace(xid, s).second) order_.push_back(xid);
    while (order_.size() > capacity_) {
      map_.erase(order_.front());
      order_.pop_front();
    }
  }
  std::optional<GlobalStatus> Get(const std::string& xid) const {
    std::lock_guard lock(mu_);
    auto it = map_.find(xid);
    return it == map_.end() ? std::nullopt : std::optional<GlobalStatus>(it->second);
  }

 private:
  size_t capacity_;
  mutable std::mutex mu_;
  std::unordered_map<std::string, GlobalStatus> map_;
  std::deque<std::string> order_;
};

}  // namespace

class Coordinator::Impl : public std::enable_shared_from_this<Impl> {
 public:
  Impl(CoordinatorOptions options, std::shared_ptr<log::LogStore> store, std::shared_ptr<Metrics> metrics)
      : options_(std::move(options)),
        store_(std::move(store)),
        metrics_(std::move(metrics)),
        work_(io_.get_executor()),
        timeout_timer_(io_),
        recent_(200'000) {
    const int64_t seed = std::chrono::duration_cast<std::chrono::microseconds>(
                             std::chrono::system_clock::now().time_since_epoch())
                             .count();
    next_id_ = seed;
    thread_ = std::thread([this] {
      pthread_setname_np(pthread_self(), "dtx-tc-timers");
      io_.run();
    });
  }

  ~Impl() { Stop(); }

  void Stop() {
    if (stopped_) return;
    FlushRemovals();  // the store commits it before it closes
    if (stopped_.exchange(true)) return;
    work_.reset();
    io_.stop();
    if (thread_.joinable()) thread_.join();
    // Handlers still queued hold Responders: let them go now (they answer with an error) rather
    // than when this object is destroyed, possibly after the server they answer through.
    boost::system::error_code ignored;
    timeout_timer_.cancel(ignored);
    {
      std::lock_guard lock(waiting_mu_);
      for (auto& [key, w] : waiting_) w.timer->cancel(ignored);
      waiting_.clear();
    }
    io_.restart();
    io_.poll();
  }

  // ---- sessions ----

  SessionPtr Find(const std::string& xid) {
    auto& shard = ShardOf(xid);
    std::lock_guard lock(shard.mu);
    auto it = shard.map.find(xid);
    return it == shard.map.end() ? nullptr : it->second;
  }
  void Forget(const std::string& xid) {
    auto& shard = ShardOf(xid);
    std::lock_guard lock(shard.mu);
    shard.map.erase(xid);
  }
  size_t Active() const {
    size_t n = 0;
    for (auto& shard : shards_) {
      std::lock_guard lock(shard.mu);
      n += shard.map.size();
    }
    return n;
  }

  bool Expired(const Session& s) const { return NowMs() >= s.rec.begin_time_ms + s.rec.timeout_ms; }

  bool Authorized(const std::string& token) const { return options_.token.empty() || token == options_.token; }

  // Applies a durable move to the in-memory state, checking it against the state machine.
  bool Move(Session& s, GlobalStatus to) {
    if (!CanMove(s.rec.status, to)) {
      SPDLOG_ERROR("coordinator: refused move of {} from {} to {}", s.rec.xid, log::GlobalStatusName(s.rec.status),
                   log::GlobalStatusName(to));
      return false;
    }
    s.rec.status = to;
    return true;
  }

  // `done`, timed into the log-write histogram of `kind`.
  log::LogStore::WriteCallback Timed(std::string_view kind, log::LogStore::WriteCallback done) {
    Histogram* h = metrics_->log_write_duration.Find(kind);
    return [h, start = Clock::now(), done = std::move(done)](const WriteResult& r) {
      h->Observe(std::chrono::duration<double>(Clock::now() - start).count());
      done(r);
    };
  }

  // ---- TM calls ----

  void Begin(const pb::BeginRequest& req, rpc::TypedResponder<pb::BeginResponse> reply) {
    pb::BeginResponse resp;
    if (!Authorized(req.token())) return Refuse(resp, std::move(reply));
    auto timeout = req.timeout_ms() > 0 ? std::chrono::milliseconds(req.timeout_ms()) : options_.default_timeout;
    if (timeout > options_.max_timeout) {
      return Answer(reply, pb::INVALID_ARGUMENT, "timeout_ms exceeds the coordinator's maximum of " + std::to_string(options_.max_timeout.count()));
    }
    auto s = std::make_shared<Session>();
    s->rec.xid = options_.node_id + ":" + std::to_string(next_id_.fetch_add(1));
    s->rec.status = GlobalStatus::kBegin;
    s->rec.name = req.name();
    s->rec.application = req.application();
    s->rec.timeout_ms = timeout.count();
    s->rec.begin_time_ms = NowMs();
    s->rec.updated_time_ms = s->rec.begin_time_ms;
    s->rec.owner_node = options_.node_id;
    s->rec.application_data = req.application_data();
    Add(s);
    // Answered once the record is written, before it is durable (the store makes it durable with
    // a later group): whatever depends on this transaction (a branch, the outcome) waits for a
    // later batch of the same ordered log, which is never durable without it. So only a power
    // loss in that gap can forget an XID, one that nothing used yet: its later calls get
    // XID_NOT_FOUND. (XIDs are seeded from the clock at start, so a restart never reissues one.)
    store_->WriteUnsynced(std::move(Batch().Insert(s->rec)),
                          Timed("unsynced", [self = shared_from_this(), s, timeout, reply = std::move(reply)](
                                                const WriteResult& r) mutable {
                            pb::BeginResponse resp;
                            if (!r.ok()) {
                              self->Forget(s->rec.xid);
                              return Answer(reply, pb::LOG_UNAVAILABLE, r.status.ToString());
                            }
                            self->metrics_->transactions_begun.Add();
                            self->WatchTimeout(s, Clock::now() + timeout);
                            resp.set_xid(s->rec.xid);
                            reply.Reply(resp);
                          }));
  }

  // Answers with an error code and its explanation.
  template <typename Resp>
  static void Answer(rpc::TypedResponder<Resp>& reply, pb::Code code, std::string message) {
    Resp resp;
    resp.set_code(code);
    resp.set_message(std::move(message));
    reply.Reply(resp);
  }
  // The answer to a branch call on a connection that did not register as a participant.
  pb::Code Unregistered() const { return options_.token.empty() ? pb::NOT_REGISTERED : pb::UNAUTHENTICATED; }

  template <typename Resp>
  void Refuse(Resp& resp, rpc::TypedResponder<Resp> reply) {
    resp.set_code(pb::UNAUTHENTICATED);
    resp.set_message("this coordinator requires a token and the call did not carry the right one");
    reply.Reply(resp);
  }

  // Commit, Rollback, and a TM's Report all come here: `target` is the status to decide.
  template <typename Resp>
  void Decide(const std::string& xid, GlobalStatus target, rpc::TypedResponder<Resp> reply) {
    auto answer = [](Resp& resp, GlobalStatus status, GlobalStatus asked) {
      resp.set_status(static_cast<pb::GlobalStatus>(status));
      resp.set_outcome(OutcomeOf(status));
      const Family got = FamilyOf(status), want = FamilyOf(asked);
      if (got == want || got == Family::kBegin) return;
      if (got == Family::kTimeoutRollback) {
        resp.set_code(pb::TIMED_OUT);
        resp.set_message("the transaction timed out and was rolled back");
      } else if (got == Family::kRollback) {
        resp.set_code(pb::ALREADY_ROLLED_BACK);
        resp.set_message("the transaction was rolled back");
      } else {
        resp.set_code(pb::ALREADY_COMMITTED);
        resp.set_message("the transaction was committed");
      }
    };
    auto s = Find(xid);
    if (!s) {
      Resp resp;
      if (auto outcome = recent_.Get(xid)) {
        answer(resp, *outcome, target);
      } else {
        resp.set_code(pb::XID_NOT_FOUND);
        resp.set_message("no transaction " + xid + " (unknown, or finished long ago)");
      }
      return reply.Reply(resp);
    }
    std::unique_lock lock(s->mu);
    const bool report = target == GlobalStatus::kCommitted || target == GlobalStatus::kRollbacked;
    const bool branches_waiting = s->pending_registrations > 0 ||
                                  std::any_of(s->branches.begin(), s->branches.end(), [](const Branch& b) {
                                    return b.rec.status != BranchStatus::kPhaseOneFailed;
                                  });
    if (report && !s->deciding && s->rec.status == GlobalStatus::kBegin && branches_waiting) {
      lock.unlock();
      Resp resp;
      resp.set_code(pb::INVALID_ARGUMENT);
      resp.set_message(xid + " has branches waiting for phase 2: finish it with Commit or Rollback, not Report");
      resp.set_status(pb::BEGIN);
      return reply.Reply(resp);
    }
    // Runs without the session's lock held.
    auto respond_when_decided = [s, target, answer, reply = std::move(reply)](const Status& st) mutable {
      GlobalStatus status;
      {
        std::lock_guard lock(s->mu);
        status = s->rec.status;
      }
      Resp resp;
      if (!st.ok()) {
        resp.set_code(pb::LOG_UNAVAILABLE);
        resp.set_message(st.ToString());
        resp.set_status(static_cast<pb::GlobalStatus>(status));
      } else {
        answer(resp, status, target);
      }
      reply.Reply(resp);
    };
    if (s->deciding) {
      s->waiters.push_back(std::move(respond_when_decided));
      return;
    }
    if (s->rec.status != GlobalStatus::kBegin) {
      lock.unlock();
      return respond_when_decided(Status::Ok());
    }
    if (Expired(*s)) target = GlobalStatus::kTimeoutRollbacking;
    s->waiters.push_back(std::move(respond_when_decided));
    StartDecision(s, target, lock);
  }

  // REQUIRES: lock holds s->mu, s is in Begin and not deciding.
  void StartDecision(const SessionPtr& s, GlobalStatus target, std::unique_lock<std::mutex>& lock) {
    s->deciding = target;
    if (s->pending_registrations > 0) return;  // the last registration to finish writes it
    lock.unlock();
    WriteDecision(s);
  }

  void WriteDecision(const SessionPtr& s) {
    GlobalStatus target;
    Batch batch;
    bool finish_now;
    std::vector<size_t> notify;  // AT branches told of a commit that is already final
    {
      std::lock_guard lock(s->mu);
      target = *s->deciding;
      // With nothing to drive, the outcome is final at once.
      finish_now = std::none_of(s->branches.begin(), s->branches.end(), [](const Branch& b) { return !b.done; }) ||
                   target == GlobalStatus::kCommitted || target == GlobalStatus::kRollbacked;
      // So is the commit of AT branches only: their phase 2 deletes undo rows that nothing reads
      // once the commit is decided, and a participant's undo sweep deletes those of finished
      // transactions anyway (docs/undo-log.md). Their BranchCommit is then a notice, sent once
      // and not retried (a oneway request), and the row locks go with the decision.
      if (!finish_now && FamilyOf(target) == Family::kCommit &&
          std::all_of(s->branches.begin(), s->branches.end(), [](const Branch& b) {
            return b.done || b.rec.status == BranchStatus::kPhaseOneFailed || b.rec.type == log::BranchType::kAT;
          })) {
        finish_now = true;
        for (size_t i = 0; i < s->branches.size(); ++i) {
          const Branch& b = s->branches[i];
          if (!b.done && b.rec.status != BranchStatus::kPhaseOneFailed) notify.push_back(i);
        }
      }
      if (finish_now) {
        batch.Remove(s->rec.xid);  // with its branches and locks
      } else {
        batch.SetStatus(s->rec.xid, target, NowMs());
      }
    }
    store_->Write(std::move(batch), Timed("durable", [self = shared_from_this(), s, target, finish_now,
                                                      notify = std::move(notify)](const WriteResult& r) {
      std::vector<std::function<void(const Status&)>> waiters;
      const Family family = FamilyOf(target);
      {
        std::lock_guard lock(s->mu);
        s->deciding.reset();
        waiters.swap(s->waiters);
        if (r.ok()) {
          self->Move(*s, finish_now ? DoneOf(family) : DrivingOf(family));
          s->decided = Clock::now();
          self->metrics_->begin_to_decision.Observe(std::chrono::duration<double>(s->decided - s->begun).count());
          if (family == Family::kTimeoutRollback) self->metrics_->transactions_timed_out.Add();
        }
      }
      if (!r.ok()) {
        SPDLOG_WARN("coordinator: could not record the outcome of {}: {}", s->rec.xid, r.status.ToString());
        // Still in Begin: the timeout will roll it back once the log takes writes again.
        self->WatchTimeout(s, Clock::now() + std::chrono::seconds(1));
      }
      for (auto& w : waiters) w(r.status);
      if (!r.ok()) return;
      if (finish_now) {
        for (size_t i : notify) self->NotifyCommitted(s, i);
        self->Finished(s);
      } else {
        self->Drive(s);
      }
    }));
  }

  void GetStatus(const pb::GetStatusRequest& req, rpc::TypedResponder<pb::GetStatusResponse> reply) {
    pb::GetStatusResponse resp;
    if (!Authorized(req.token())) return Refuse(resp, std::move(reply));
    GlobalStatus status;
    if (auto s = Find(req.xid())) {
      std::lock_guard lock(s->mu);
      status = s->rec.status;
    } else if (auto recent = recent_.Get(req.xid())) {
      status = *recent;
    } else {
      return Answer(reply, pb::XID_NOT_FOUND, "no transaction " + req.xid());
    }
    resp.set_status(static_cast<pb::GlobalStatus>(status));
    resp.set_outcome(OutcomeOf(status));
    reply.Reply(resp);
  }

  // ---- RM calls ----

  std::shared_ptr<const Participants::Info> Registered(const rpc::CallContext& ctx) {
    return participants_.Of(ctx.peer.get());
  }

  void RegisterParticipant(const rpc::CallContext& ctx, const pb::RegisterParticipantRequest& req,
                           rpc::TypedResponder<pb::RegisterParticipantResponse> reply) {
    pb::RegisterParticipantResponse resp;
    if (!Authorized(req.token())) return Refuse(resp, std::move(reply));
    Participants::Info info;
    info.client_id = req.client_id().empty() ? ctx.peer_address : req.client_id();
    info.application = req.application();
    info.resource_ids.assign(req.resource_ids().begin(), req.resource_ids().end());
    SPDLOG_INFO("coordinator: participant {} ({}) at {} serves {} resources", info.client_id, info.application,
                ctx.peer_address, info.resource_ids.size());
    resp.set_client_id(info.client_id);
    participants_.Register(ctx.peer, std::move(info));
    reply.Reply(resp);
    // Phase 2 that waited for this participant goes now.
    asio::post(io_, [weak = weak_from_this()] {
      if (auto self = weak.lock()) self->KickWaiting();
    });
  }

  void RegisterBranch(const rpc::CallContext& ctx, const pb::RegisterBranchRequest& req,
                      rpc::TypedResponder<pb::RegisterBranchResponse> reply) {
    pb::RegisterBranchResponse resp;
    auto participant = Registered(ctx);
    if (!participant) {
      return Answer(reply, Unregistered(), "call RegisterParticipant on this connection first: phase 2 comes back over it");
    }
    if (req.resource_id().empty()) {
      return Answer(reply, pb::INVALID_ARGUMENT, "resource_id is empty");
    }
    auto s = Find(req.xid());
    if (!s) {
      return Answer(reply, pb::XID_NOT_FOUND, "no active transaction " + req.xid());
    }
    std::unique_lock lock(s->mu);
    if (s->deciding || s->rec.status != GlobalStatus::kBegin || Expired(*s)) {
      const bool timed_out = FamilyOf(s->deciding.value_or(s->rec.status)) == Family::kTimeoutRollback || Expired(*s);
      resp.set_code(timed_out ? pb::TIMED_OUT : pb::NOT_ACTIVE);
      resp.set_message(req.xid() + " is " + std::string(log::GlobalStatusName(s->rec.status)) +
                       (timed_out ? ", timed out" : "") + ": branches join only while it is Begin");
      if (!s->deciding && s->rec.status == GlobalStatus::kBegin) {
        StartDecision(s, GlobalStatus::kTimeoutRollbacking, lock);
      }
      return reply.Reply(resp);
    }
    ++s->pending_registrations;
    lock.unlock();

    BranchRecord b;
    b.branch_id = next_id_.fetch_add(1);
    b.xid = req.xid();
    b.resource_id = req.resource_id();
    b.type = static_cast<log::BranchType>(req.branch_type());
    b.status = BranchStatus::kRegistered;
    for (const auto& k : req.lock_keys()) {
      if (!b.lock_keys.empty()) b.lock_keys += ';';
      b.lock_keys += k;
    }
    b.application_data = req.application_data();
    b.client_id = participant->client_id;
    b.registered_time_ms = NowMs();
    Batch batch;
    batch.Insert(b);
    if (req.lock_keys_size() > 0) batch.Lock(b.xid, b.branch_id, {req.lock_keys().begin(), req.lock_keys().end()});
    const int64_t branch_id = b.branch_id;
    store_->Write(std::move(batch), Timed("durable", [self = shared_from_this(), s, branch_id, b = std::move(b),
                                                      reply = std::move(reply)](const WriteResult& r) mutable {
      pb::RegisterBranchResponse resp;
      bool decide_now = false;
      {
        std::lock_guard lock(s->mu);
        --s->pending_registrations;
        if (r.ok()) {
          const int64_t id = b.branch_id;
          Branch branch;
          branch.rec = std::move(b);
          auto at = std::upper_bound(s->branches.begin(), s->branches.end(), id,
                                     [](int64_t id, const Branch& x) { return id < x.rec.branch_id; });
          s->branches.insert(at, std::move(branch));
        }
        decide_now = s->deciding && s->pending_registrations == 0;
      }
      if (r.ok()) {
        self->metrics_->branches_registered.Add();
        resp.set_branch_id(branch_id);
      } else if (r.conflict) {
        self->metrics_->lock_conflicts.Add();
        resp.set_code(pb::LOCK_CONFLICT);
        resp.set_message(r.status.ToString());
        resp.set_conflict_key(r.conflict->row_key);
        resp.set_conflict_xid(r.conflict->holder_xid);
      } else {
        resp.set_code(pb::LOG_UNAVAILABLE);
        resp.set_message(r.status.ToString());
      }
      reply.Reply(resp);
      if (decide_now) self->WriteDecision(s);
    }));
  }

  void ReportBranch(const rpc::CallContext& ctx, const pb::ReportBranchRequest& req,
                    rpc::TypedResponder<pb::ReportBranchResponse> reply) {
    pb::ReportBranchResponse resp;
    if (!Registered(ctx)) {
      return Answer(reply, Unregistered(), "call RegisterParticipant on this connection first");
    }
    if (req.status() != pb::PHASE_ONE_DONE && req.status() != pb::PHASE_ONE_FAILED) {
      return Answer(reply, pb::INVALID_ARGUMENT, "a branch reports PHASE_ONE_DONE or PHASE_ONE_FAILED");
    }
    auto s = Find(req.xid());
    if (!s) {
      return Answer(reply, pb::XID_NOT_FOUND, "no active transaction " + req.xid());
    }
    bool logged_lazily = false;
    {
      std::lock_guard lock(s->mu);
      auto it = std::find_if(s->branches.begin(), s->branches.end(),
                             [&](const Branch& b) { return b.rec.branch_id == req.branch_id(); });
      if (it == s->branches.end()) {
        return Answer(reply, pb::BRANCH_NOT_FOUND, "no branch " + std::to_string(req.branch_id()) + " in " + req.xid());
      }
      // Once the transaction is decided its branches belong to phase 2: a late phase-one report
      // must not overwrite what phase 2 recorded.
      if (s->deciding || s->rec.status != GlobalStatus::kBegin) {
        return Answer(reply, pb::NOT_ACTIVE,
                      req.xid() + (s->rec.status == GlobalStatus::kBegin
                                       ? std::string(" is being decided (commit or rollback called)")
                                       : " is " + std::string(log::GlobalStatusName(s->rec.status))) +
                          ": phase one of its branches can no longer be reported");
      }
      if (req.status() == pb::PHASE_ONE_DONE && store_->DefersLazyWrites()) {
        // PhaseOneDone changes nothing the coordinator does (a Registered branch gets the same
        // phase 2), so losing it in a crash is harmless: it is answered at once and goes into
        // the log with the store's next commit. Queued under the session's lock, it precedes the
        // decision of any Commit or Rollback. PhaseOneFailed (no phase 2 for the branch) is
        // durable before it is answered.
        it->rec.status = BranchStatus::kPhaseOneDone;
        store_->WriteLazy(std::move(Batch().SetStatus(req.xid(), req.branch_id(), BranchStatus::kPhaseOneDone)),
                          [xid = req.xid()](const WriteResult& r) {
                            if (!r.ok())
                              SPDLOG_WARN("coordinator: could not log a phase-one report of {}: {}", xid, r.status.ToString());
                          });
        logged_lazily = true;
      }
    }
    if (logged_lazily) return reply.Reply(resp);
    const auto status = static_cast<BranchStatus>(req.status());
    store_->Write(std::move(Batch().SetStatus(req.xid(), req.branch_id(), status)),
                  [s, id = req.branch_id(), status, reply = std::move(reply)](const WriteResult& r) mutable {
                    pb::ReportBranchResponse resp;
                    if (r.ok()) {
                      std::lock_guard lock(s->mu);
                      for (auto& b : s->branches)
                        if (b.rec.branch_id == id) b.rec.status = status;
                    } else {
                      resp.set_code(pb::LOG_UNAVAILABLE);
                      resp.set_message(r.status.ToString());
                    }
                    reply.Reply(resp);
                  });
  }

  void QueryLocks(const rpc::CallContext& ctx, const pb::QueryLocksRequest& req,
                  rpc::TypedResponder<pb::QueryLocksResponse> reply) {
    pb::QueryLocksResponse resp;
    if (!Registered(ctx)) {
      return Answer(reply, Unregistered(), "call RegisterParticipant on this connection first");
    }
    for (const auto& prefix : req.key_prefixes()) {
      if (prefix.empty() || static_cast<unsigned char>(prefix.back()) >= 0x7f) {
        return Answer(reply, pb::INVALID_ARGUMENT, "a lock-key prefix must end with an ASCII character");
      }
    }
    // A read of the log: on this (I/O) thread when the store answers from memory, else off it.
    if (store_->ReadsFromMemory()) return AnswerLocks(req, reply);
    asio::post(io_, [weak = weak_from_this(), req, reply = std::move(reply)]() mutable {
      auto self = weak.lock();
      if (!self || self->stopped_) return Answer(reply, pb::SHUTTING_DOWN, "the coordinator is shutting down");
      self->AnswerLocks(req, reply);
    });
  }

  void AnswerLocks(const pb::QueryLocksRequest& req, rpc::TypedResponder<pb::QueryLocksResponse>& reply) {
    pb::QueryLocksResponse resp;
    auto held = store_->FindLocks({req.lock_keys().begin(), req.lock_keys().end()});
    if (!held.ok()) return Answer(reply, pb::LOG_UNAVAILABLE, held.status().ToString());
    const auto others = [&] { return std::any_of(held->begin(), held->end(), [&](auto& l) { return l.xid != req.xid(); }); };
    for (const auto& prefix : req.key_prefixes()) {
      if (others()) break;
      auto in_range = store_->FindLocksByPrefix(prefix, req.xid(), 1);
      if (!in_range.ok()) return Answer(reply, pb::LOG_UNAVAILABLE, in_range.status().ToString());
      held->insert(held->end(), in_range->begin(), in_range->end());
      resp.set_prefixes_checked(resp.prefixes_checked() + 1);
    }
    resp.set_free(true);
    for (const auto& l : *held) {
      if (l.xid == req.xid()) continue;
      resp.set_free(false);
      resp.set_conflict_key(l.row_key);
      resp.set_conflict_xid(l.xid);
      break;
    }
    reply.Reply(resp);
  }

  // ---- phase 2 ----

  // Sends what can be sent now. Commit: every branch at once. Rollback: per resource, the
  // latest-registered branch first, one at a time.
  void Drive(const SessionPtr& s) {
    std::vector<size_t> send;
    bool all_done;
    {
      std::lock_guard lock(s->mu);
      if (s->finishing || IsFinal(s->rec.status) || s->rec.status == GlobalStatus::kBegin) return;
      const bool commit = FamilyOf(s->rec.status) == Family::kCommit;
      std::map<std::string, bool> resource_busy;
      for (size_t i = s->branches.size(); i-- > 0;) {
        Branch& b = s->branches[i];
        if (b.rec.status == BranchStatus::kPhaseOneFailed) b.done = true;  // it did nothing to undo or confirm
        if (b.done) continue;
        if (commit) {
          if (!b.in_flight) send.push_back(i);
          continue;
        }
        bool& busy = resource_busy[b.rec.resource_id];
        if (busy) continue;
        busy = true;
        if (!b.in_flight) send.push_back(i);
      }
      all_done = std::all_of(s->branches.begin(), s->branches.end(), [](const Branch& b) { return b.done; });
      for (size_t i : send) s->branches[i].in_flight = true;
    }
    if (all_done) return Finish(s);
    for (size_t i : send) Send(s, i);
  }

  // REQUIRES: s->mu held. The phase-2 request for branch i, and the participant it came from.
  static pb::BranchRequest BranchRequestOf(const Session& s, size_t i, std::string& client_id) {
    const Branch& b = s.branches[i];
    pb::BranchRequest req;
    req.set_xid(b.rec.xid);
    req.set_branch_id(b.rec.branch_id);
    req.set_resource_id(b.rec.resource_id);
    req.set_branch_type(static_cast<pb::BranchType>(b.rec.type));
    req.set_application_data(b.rec.application_data);
    client_id = b.rec.client_id;
    return req;
  }

  void Send(const SessionPtr& s, size_t i) {
    pb::BranchRequest req;
    std::string client_id;
    bool commit;
    {
      std::lock_guard lock(s->mu);
      req = BranchRequestOf(*s, i, client_id);
      commit = FamilyOf(s->rec.status) == Family::kCommit;
    }
    auto peer = participants_.Pick(req.resource_id(), client_id);
    if (!peer) {
      return Retry(s, i, "no participant connected for resource " + req.resource_id());
    }
    metrics_->phase_two_calls.Add();
    rpc::CallOptions call;
    call.timeout = options_.branch_call_timeout;
    peer->Call<pb::BranchResponse>(
        kResourceManagerService, commit ? "BranchCommit" : "BranchRollback", req, call,
        [self = shared_from_this(), s, i, commit](Result<pb::BranchResponse> r) {
          if (!r.ok()) return self->Retry(s, i, r.status().ToString());
          const auto status = static_cast<BranchStatus>(r->status());
          const BranchStatus done = commit ? BranchStatus::kPhaseTwoCommitted : BranchStatus::kPhaseTwoRollbacked;
          const BranchStatus fatal = commit ? BranchStatus::kPhaseTwoCommitFailedUnretryable
                                            : BranchStatus::kPhaseTwoRollbackFailedUnretryable;
          if (status == done) {
            {
              std::lock_guard lock(s->mu);
              s->branches[i].done = true;
              s->branches[i].in_flight = false;
            }
            return self->Drive(s);
          }
          if (status == fatal) return self->Fail(s, i, fatal, r->message());
          self->Retry(s, i, "participant answered " + std::string(log::BranchStatusName(status)) +
                                (r->message().empty() ? "" : ": " + r->message()));
        });
  }

  // The BranchCommit of an AT branch whose transaction is already Committed and gone, as a Bolt
  // oneway request: no answer would change anything.
  void NotifyCommitted(const SessionPtr& s, size_t i) {
    pb::BranchRequest req;
    std::string client_id;
    {
      std::lock_guard lock(s->mu);
      req = BranchRequestOf(*s, i, client_id);
    }
    auto peer = participants_.Pick(req.resource_id(), client_id);
    if (!peer) {
      SPDLOG_INFO("coordinator: no participant connected for resource {} to tell that {} committed; its undo sweep "
                  "will delete the undo rows",
                  req.resource_id(), req.xid());
      return;
    }
    metrics_->phase_two_calls.Add();
    rpc::CallOptions call;
    call.timeout = options_.branch_call_timeout;
    peer->Notify(kResourceManagerService, "BranchCommit", req, call);
  }

  void Retry(const SessionPtr& s, size_t i, const std::string& why) {
    std::chrono::milliseconds delay{0};
    bool give_up = false, mark = false;
    GlobalStatus retrying;
    BranchStatus fatal;
    {
      std::lock_guard lock(s->mu);
      Branch& b = s->branches[i];
      if (s->finishing || IsFinal(s->rec.status)) {  // another branch failed it, or it is over
        b.in_flight = false;
        return;
      }
      const bool commit = FamilyOf(s->rec.status) == Family::kCommit;
      fatal = commit ? BranchStatus::kPhaseTwoCommitFailedUnretryable : BranchStatus::kPhaseTwoRollbackFailedUnretryable;
      give_up = options_.max_retries > 0 && ++b.attempts > options_.max_retries;
      if (!give_up) {
        b.backoff = std::clamp(b.backoff * 2, options_.retry_backoff_min, options_.retry_backoff_max);
        thread_local std::minstd_rand rng(std::random_device{}());
        delay = b.backoff / 2 + std::chrono::milliseconds(rng() % (b.backoff.count() / 2 + 1));
        retrying = RetryingOf(FamilyOf(s->rec.status));
        mark = !s->retry_marked && s->rec.status != retrying;
        s->retry_marked = true;
        SPDLOG_INFO("coordinator: phase 2 of {} branch {} will be retried in {} ms: {}", s->rec.xid, b.rec.branch_id,
                    delay.count(), why);
      }
    }
    if (give_up) return Fail(s, i, fatal, "gave up after " + std::to_string(options_.max_retries) + " retries: " + why);
    metrics_->phase_two_retries.Add();
    if (mark) {
      // Informational: the log shows that phase 2 is retrying. Its failure changes nothing.
      store_->Write(std::move(Batch().SetStatus(s->rec.xid, retrying, NowMs())),
                    [self = shared_from_this(), s, retrying](const WriteResult& r) {
                      if (!r.ok()) return;
                      std::lock_guard lock(s->mu);
                      if (FamilyOf(s->rec.status) == FamilyOf(retrying) && !IsFinal(s->rec.status))
                        self->Move(*s, retrying);
                    });
    }
    auto timer = std::make_shared<asio::steady_timer>(io_, delay);
    {
      std::lock_guard lock(waiting_mu_);
      waiting_[timer.get()] = {timer, s, i};
    }
    timer->async_wait([weak = weak_from_this(), timer, s, i](const boost::system::error_code&) {
      auto self = weak.lock();
      if (!self) return;
      {
        std::lock_guard lock(self->waiting_mu_);
        if (!self->waiting_.erase(timer.get())) return;  // kicked already
      }
      self->Resend(s, i);
    });
  }

  void Resend(const SessionPtr& s, size_t i) {
    {
      std::lock_guard lock(s->mu);
      if (s->finishing || IsFinal(s->rec.status)) return;
    }
    Send(s, i);
  }

  // A participant registered: resend every waiting call now.
  void KickWaiting() {
    std::map<void*, WaitingCall> kicked;
    {
      std::lock_guard lock(waiting_mu_);
      kicked.swap(waiting_);
    }
    for (auto& [key, w] : kicked) {
      w.timer->cancel();
      Resend(w.session, w.branch);
    }
  }

  void Fail(const SessionPtr& s, size_t i, BranchStatus branch_status, const std::string& why) {
    GlobalStatus failed;
    int64_t branch_id;
    {
      std::lock_guard lock(s->mu);
      failed = FailedOf(FamilyOf(s->rec.status));
      branch_id = s->branches[i].rec.branch_id;
      s->failure = why;
      SPDLOG_ERROR("coordinator: {} branch {} ({}) cannot finish phase 2: {}; {} needs an operator", s->rec.xid,
                   branch_id, s->branches[i].rec.resource_id, why, log::GlobalStatusName(failed));
    }
    store_->Write(std::move(Batch().SetStatus(s->rec.xid, branch_id, branch_status).SetStatus(s->rec.xid, failed, NowMs())),
                  [self = shared_from_this(), s, i, failed, branch_status](const WriteResult& r) {
                    std::unique_lock lock(s->mu);
                    if (!r.ok()) {
                      SPDLOG_ERROR("coordinator: could not record the failure of {}: {}", s->rec.xid, r.status.ToString());
                      lock.unlock();
                      // Still in its driving status: ask the participant again later, which fails it again.
                      return self->Retry(s, i, "recording the failure failed: " + r.status.ToString());
                    }
                    s->branches[i].in_flight = false;
                    s->branches[i].rec.status = branch_status;
                    // Another branch may have failed it already.
                    if (s->rec.status != failed && self->Move(*s, failed)) self->metrics_->transactions_failed.Add();
                  });
  }

  // Phase 2 is over: the transaction leaves the log. Nothing waits for a removal but the row
  // locks it releases, and a removal lost in a crash only means phase 2 is delivered again (to
  // idempotent participants), so it is never fsynced for its own sake: a store that defers lazy
  // writes (SQLite) takes it into its next commit; for the others removals go in bulk, one batch
  // for all that finished within kRemovalDelay (or kRemovalBatch of them).
  void Finish(const SessionPtr& s) {
    {
      std::lock_guard lock(s->mu);
      if (s->finishing) return;
      s->finishing = true;
    }
    if (store_->DefersLazyWrites()) {
      return store_->WriteLazy(std::move(Batch().Remove(s->rec.xid)),
                               [self = shared_from_this(), s](const WriteResult& r) { self->Removed({s}, r); });
    }
    bool flush_now = false, arm = false;
    {
      std::lock_guard lock(removals_mu_);
      removals_.push_back(s);
      flush_now = removals_.size() >= kRemovalBatch;
      arm = !flush_now && removals_.size() == 1;
    }
    if (flush_now) return FlushRemovals();
    if (arm) {
      auto timer = std::make_shared<asio::steady_timer>(io_, kRemovalDelay);
      timer->async_wait([weak = weak_from_this(), timer](const boost::system::error_code&) {
        if (auto self = weak.lock()) self->FlushRemovals();
      });
    }
  }

  void FlushRemovals() {
    std::vector<SessionPtr> sessions;
    {
      std::lock_guard lock(removals_mu_);
      sessions.swap(removals_);
    }
    if (sessions.empty()) return;
    Batch batch;
    for (const auto& s : sessions) batch.Remove(s->rec.xid);
    store_->WriteLazy(std::move(batch), [self = shared_from_this(), sessions = std::move(sessions)](const WriteResult& r) {
      self->Removed(sessions, r);
    });
  }

  // The log answered the removal of `sessions`.
  void Removed(const std::vector<SessionPtr>& sessions, const WriteResult& r) {
    if (!r.ok()) {
      SPDLOG_WARN("coordinator: could not remove {} finished transactions from the log: {}; will retry",
                  sessions.size(), r.status.ToString());
      auto timer = std::make_shared<asio::steady_timer>(io_, std::chrono::seconds(1));
      timer->async_wait([weak = weak_from_this(), sessions, timer](const boost::system::error_code&) {
        auto self = weak.lock();
        if (!self) return;
        for (const auto& s : sessions) {
          {
            std::lock_guard lock(s->mu);
            s->finishing = false;
          }
          self->Finish(s);
        }
      });
      return;
    }
    const auto now = Clock::now();
    for (const auto& s : sessions) {
      {
        std::lock_guard lock(s->mu);
        Move(*s, DoneOf(FamilyOf(s->rec.status)));
      }
      metrics_->phase_two_duration.Observe(std::chrono::duration<double>(now - s->decided).count());
      Finished(s);
    }
  }

  // The transaction is over and out of the log.
  void Finished(const SessionPtr& s) {
    GlobalStatus status;
    {
      std::lock_guard lock(s->mu);
      status = s->rec.status;
    }
    (FamilyOf(status) == Family::kCommit ? metrics_->transactions_committed : metrics_->transactions_rolled_back).Add();
    recent_.Add(s->rec.xid, status);
    CancelTimeout(s);
    Forget(s->rec.xid);
  }

  // ---- timeouts ----

  // Sets (or moves) the deadline of a transaction in Begin.
  void WatchTimeout(const SessionPtr& s, Clock::time_point when) {
    bool arm;
    {
      std::lock_guard lock(timeouts_mu_);
      if (s->has_timeout) timeouts_.erase(s->timeout);
      s->timeout = timeouts_.emplace(when, s);
      s->has_timeout = true;
      arm = s->timeout == timeouts_.begin();
    }
    if (arm) {
      asio::post(io_, [weak = weak_from_this()] {
        if (auto self = weak.lock()) self->ArmTimeoutTimer();
      });
    }
  }
  void CancelTimeout(const SessionPtr& s) {
    std::lock_guard lock(timeouts_mu_);
    if (!s->has_timeout) return;
    timeouts_.erase(s->timeout);
    s->has_timeout = false;
  }

  // On the timer thread.
  void ArmTimeoutTimer() {
    Clock::time_point next;
    {
      std::lock_guard lock(timeouts_mu_);
      if (timeouts_.empty()) return;
      next = timeouts_.begin()->first;
    }
    if (timer_armed_ && next >= timer_armed_for_) return;
    timer_armed_ = true;
    timer_armed_for_ = next;
    timeout_timer_.expires_at(next);
    timeout_timer_.async_wait([weak = weak_from_this()](const boost::system::error_code& ec) {
      auto self = weak.lock();
      if (ec || !self) return;  // re-armed for an earlier time, or stopped
      self->timer_armed_ = false;
      self->ExpireTimeouts();
      self->ArmTimeoutTimer();
    });
  }

  void ExpireTimeouts() {
    std::vector<SessionPtr> due;
    {
      std::lock_guard lock(timeouts_mu_);
      const auto now = Clock::now();
      while (!timeouts_.empty() && timeouts_.begin()->first <= now) {
        due.push_back(std::move(timeouts_.begin()->second));
        due.back()->has_timeout = false;
        timeouts_.erase(timeouts_.begin());
      }
    }
    for (const auto& s : due) {
      if (Find(s->rec.xid) != s) continue;  // forgotten meanwhile (its Begin could not be logged)
      std::unique_lock lock(s->mu);
      if (s->deciding || s->rec.status != GlobalStatus::kBegin) continue;
      if (!Expired(*s)) {  // the wall clock disagrees a little: look again shortly
        lock.unlock();
        WatchTimeout(s, Clock::now() + std::chrono::milliseconds(50));
        continue;
      }
      SPDLOG_INFO("coordinator: {} timed out after {} ms; rolling back", s->rec.xid, s->rec.timeout_ms);
      StartDecision(s, GlobalStatus::kTimeoutRollbacking, lock);
    }
  }

  // ---- recovery and operators ----

  Status Recover() {
    auto all = store_->LoadAll();
    if (!all.ok()) return all.status().WithContext("loading the transaction log");
    size_t resumed = 0, waiting = 0, failed = 0;
    int64_t max_id = 0;
    std::vector<SessionPtr> drive, finish;
    for (auto& snap : *all) {
      if (!snap.global.owner_node.empty() && snap.global.owner_node != options_.node_id) continue;
      auto s = std::make_shared<Session>();
      s->rec = std::move(snap.global);
      for (auto& b : snap.branches) {
        max_id = std::max(max_id, b.branch_id);
        Branch branch;
        branch.rec = std::move(b);
        branch.done = branch.rec.status == BranchStatus::kPhaseTwoCommitted ||
                      branch.rec.status == BranchStatus::kPhaseTwoRollbacked;
        s->branches.push_back(std::move(branch));
      }
      auto colon = s->rec.xid.rfind(':');
      if (colon != std::string::npos) {
        try {
          max_id = std::max<int64_t>(max_id, std::stoll(s->rec.xid.substr(colon + 1)));
        } catch (...) {
        }
      }
      s->decided = Clock::now();
      {
        Add(s);
      }
      const GlobalStatus st = s->rec.status;
      if (st == GlobalStatus::kBegin) {
        const int64_t left = s->rec.begin_time_ms + s->rec.timeout_ms - NowMs();
        WatchTimeout(s, Clock::now() + std::chrono::milliseconds(std::max<int64_t>(0, left)));
        ++waiting;
      } else if (IsFailed(st)) {
        ++failed;
      } else if (IsFinal(st)) {
        finish.push_back(s);
      } else {
        if (st == GlobalStatus::kAsyncCommitting) s->rec.status = GlobalStatus::kCommitting;
        drive.push_back(s);
        ++resumed;
      }
    }
    if (max_id >= next_id_) next_id_ = max_id + 1;
    recovered_ = true;
    SPDLOG_INFO("coordinator: recovered {} transactions from the log: {} resume phase 2, {} in Begin, {} need an operator",
                all->size(), resumed, waiting, failed);
    for (auto& s : finish) {
      s->finishing = false;
      Finish(s);
    }
    for (auto& s : drive) Drive(s);
    return Status::Ok();
  }

  Status Act(const std::string& xid, OperatorAction action, const std::string& who) {
    auto s = Find(xid);
    if (!s) return NotFound("no transaction " + xid + " in the coordinator");
    GlobalStatus from, to;
    {
      std::lock_guard lock(s->mu);
      from = s->rec.status;
      if (!IsFailed(from)) {
        return FailedPrecondition(xid + " is " + std::string(log::GlobalStatusName(from)) +
                                  ": operators act only on failed transactions");
      }
      const Family f = FamilyOf(from);
      if (action == OperatorAction::kRetry) {
        to = DrivingOf(f);
      } else if ((action == OperatorAction::kForceCommitted) != (f == Family::kCommit)) {
        return FailedPrecondition(xid + " is " + std::string(log::GlobalStatusName(from)) +
                                  ": it cannot be forced to the other outcome");
      } else {
        to = DoneOf(f);
      }
    }
    SPDLOG_WARN("audit: operator '{}' {} {} ({} -> {})", who,
                action == OperatorAction::kRetry ? "retries" : "forces the outcome of", xid, log::GlobalStatusName(from),
                log::GlobalStatusName(to));
    if (to == DoneOf(FamilyOf(from))) {
      WriteResult r = store_->WriteSync(std::move(Batch().Remove(xid)));
      if (!r.ok()) return r.status;
      {
        std::lock_guard lock(s->mu);
        Move(*s, to);
        s->finishing = true;
      }
      Finished(s);
      return Status::Ok();
    }
    WriteResult r = store_->WriteSync(std::move(Batch().SetStatus(xid, to, NowMs())));
    if (!r.ok()) return r.status;
    {
      std::lock_guard lock(s->mu);
      Move(*s, to);
      s->retry_marked = false;
      s->failure.clear();
      for (auto& b : s->branches) {
        b.attempts = 0;
        b.backoff = std::chrono::milliseconds(0);
        // A branch whose call (or retry timer) is still pending keeps it: Drive sends to the
        // others, and that call's answer drives this branch on.
      }
    }
    Drive(s);
    return Status::Ok();
  }

  void OnDisconnect(const std::shared_ptr<rpc::Channel>& peer) {
    if (participants_.Remove(peer.get())) SPDLOG_INFO("coordinator: a participant disconnected");
  }

  CoordinatorOptions options_;
  std::shared_ptr<log::LogStore> store_;
  std::shared_ptr<Metrics> metrics_;
  Participants participants_;

  asio::io_context io_;  // timers: timeouts and retries
  asio::executor_work_guard<asio::io_context::executor_type> work_;
  std::thread thread_;
  std::atomic<bool> stopped_{false};
  std::atomic<bool> recovered_{false};
  std::atomic<int64_t> next_id_{0};

  // Sessions by XID, in shards so that threads working on different transactions rarely meet.
  struct Shard {
    std::mutex mu;
    std::unordered_map<std::string, SessionPtr> map;
  };
  static constexpr size_t kShards = 32;
  mutable std::array<Shard, kShards> shards_;
  Shard& ShardOf(const std::string& xid) const { return shards_[std::hash<std::string>{}(xid) % kShards]; }
  void Add(const SessionPtr& s) {
    auto& shard = ShardOf(s->rec.xid);
    std::lock_guard lock(shard.mu);
    shard.map.emplace(s->rec.xid, s);
  }

  std::mutex timeouts_mu_;
  TimeoutMap timeouts_;  // guarded by timeouts_mu_
  asio::steady_timer timeout_timer_;
  bool timer_armed_ = false;  // timer thread only
  Clock::time_point timer_armed_for_;

  struct WaitingCall {
    std::shared_ptr<asio::steady_timer> timer;
    SessionPtr session;
    size_t branch;
  };
  std::mutex waiting_mu_;
  std::map<void*, WaitingCall> waiting_;

  RecentOutcomes recent_;

  static constexpr size_t kRemovalBatch = 256;
  static constexpr std::chrono::milliseconds kRemovalDelay{2};
  std::mutex removals_mu_;
  std::vector<SessionPtr> removals_;  // finished, waiting to leave the log
};

Coordinator::Coordinator(CoordinatorOptions options, std::shared_ptr<log::LogStore> store, std::shared_ptr<Metrics> metrics)
    : impl_(std::make_shared<Impl>(std::move(options), std::move(store), std::move(metrics))) {}

Coordinator::~Coordinator() { Shutdown(); }

Status Coordinator::Recover() { return impl_->Recover(); }

void Coordinator::AddServices(rpc::ServiceRegistry& registry) {
  const std::string svc(kCoordinatorService);
  if (!registry.observer()) registry.SetObserver(MakeCallObserver(impl_->metrics_));
  std::weak_ptr<Impl> weak = impl_;
  auto bind = [weak](auto handler) {
    return [weak, handler](const rpc::CallContext& ctx, auto&& req, auto reply) {
      auto self = weak.lock();
      if (!self) return;
      handler(*self, ctx, std::forward<decltype(req)>(req), std::move(reply));
    };
  };
  registry.AddMethod<pb::BeginRequest, pb::BeginResponse>(
      svc, "Begin", bind([](Impl& c, const rpc::CallContext&, const pb::BeginRequest& r, auto reply) {
        c.Begin(r, std::move(reply));
      }));
  registry.AddMethod<pb::CommitRequest, pb::CommitResponse>(
      svc, "Commit", bind([](Impl& c, const rpc::CallContext&, const pb::CommitRequest& r, auto reply) {
        if (!c.Authorized(r.token())) {
          pb::CommitResponse resp;
          return c.Refuse(resp, std::move(reply));
        }
        c.Decide(r.xid(), GlobalStatus::kCommitting, std::move(reply));
      }));
  registry.AddMethod<pb::RollbackRequest, pb::RollbackResponse>(
      svc, "Rollback", bind([](Impl& c, const rpc::CallContext&, const pb::RollbackRequest& r, auto reply) {
        if (!c.Authorized(r.token())) {
          pb::RollbackResponse resp;
          return c.Refuse(resp, std::move(reply));
        }
        c.Decide(r.xid(), GlobalStatus::kRollbacking, std::move(reply));
      }));
  registry.AddMethod<pb::ReportRequest, pb::ReportResponse>(
      svc, "Report", bind([](Impl& c, const rpc::CallContext&, const pb::ReportRequest& r, auto reply) {
        pb::ReportResponse resp;
        if (!c.Authorized(r.token())) return c.Refuse(resp, std::move(reply));
        if (r.status() != pb::COMMITTED && r.status() != pb::ROLLBACKED) {
          return Impl::Answer(reply, pb::INVALID_ARGUMENT, "a TM reports COMMITTED or ROLLBACKED");
        }
        c.Decide(r.xid(), static_cast<GlobalStatus>(r.status()), std::move(reply));
      }));
  registry.AddMethod<pb::GetStatusRequest, pb::GetStatusResponse>(
      svc, "GetStatus", bind([](Impl& c, const rpc::CallContext&, const pb::GetStatusRequest& r, auto reply) {
        c.GetStatus(r, std::move(reply));
      }));
  registry.AddMethod<pb::RegisterParticipantRequest, pb::RegisterParticipantResponse>(
      svc, "RegisterParticipant",
      bind([](Impl& c, const rpc::CallContext& ctx, const pb::RegisterParticipantRequest& r, auto reply) {
        c.RegisterParticipant(ctx, r, std::move(reply));
      }));
  registry.AddMethod<pb::RegisterBranchRequest, pb::RegisterBranchResponse>(
      svc, "RegisterBranch", bind([](Impl& c, const rpc::CallContext& ctx, const pb::RegisterBranchRequest& r, auto reply) {
        c.RegisterBranch(ctx, r, std::move(reply));
      }));
  registry.AddMethod<pb::ReportBranchRequest, pb::ReportBranchResponse>(
      svc, "ReportBranch", bind([](Impl& c, const rpc::CallContext& ctx, const pb::ReportBranchRequest& r, auto reply) {
        c.ReportBranch(ctx, r, std::move(reply));
      }));
  registry.AddMethod<pb::QueryLocksRequest, pb::QueryLocksResponse>(
      svc, "QueryLocks", bind([](Impl& c, const rpc::CallContext& ctx, const pb::QueryLocksRequest& r, auto reply) {
        c.QueryLocks(ctx, r, std::move(reply));
      }));
}

void Coordinator::OnDisconnect(const std::shared_ptr<rpc::Channel>& peer) { impl_->OnDisconnect(peer); }
void Coordinator::Shutdown() { impl_->Stop(); }
Status Coordinator::Act(const std::string& xid, OperatorAction action, const std::string& who) {
  return impl_->Act(xid, action, who);
}
size_t Coordinator::active_transactions() const { return impl_->Active(); }
bool Coordinator::recovered() const { return impl_->recovered_; }
log::LogStore& Coordinator::store() { return *impl_->store_; }

}  // namespace dtx::coordinator
