#include "dtx/log/postgres_log_store.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cctype>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <random>
#include <thread>

#include "log_store_util.h"
#include "postgres_sql.h"

namespace dtx::log {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
using namespace pg;

constexpr std::string_view kNotWritten = "; the batch was not written";
constexpr std::string_view kOutcomeUnknown = "; the outcome of the batch is unknown: it may be in the log";

// A lost connection's Status, from the connection and the result that showed it.
Status Lost(PGconn* c, const PGresult* r, std::string_view outcome) {
  return Unavailable("lost connection to PostgreSQL: " + ErrorOf(c, r) + std::string(outcome));
}

// Sends one operation of a batch.
bool SendOp(Pipeline& p, const Batch::Op& op) {
  return std::visit(Overloaded{
                        [&](const Batch::InsertGlobal& o) {
                          const GlobalRecord& g = o.record;
                          return p.Send(kInsertGlobal, Params()
                                                           .Bytes(g.xid)
                                                           .Int4(static_cast<int32_t>(g.status))
                                                           .Bytes(g.name)
                                                           .Bytes(g.application)
                                                           .Int8(g.timeout_ms)
                                                           .Int8(g.begin_time_ms)
                                                           .Bytes(g.owner_node)
                                                           .Bytes(g.application_data)
                                                           .Int8(g.updated_time_ms));
                        },
                        [&](const Batch::SetGlobalStatus& o) {
                          return p.Send(
                              kSetGlobalStatus,
                              Params().Bytes(o.xid).Int4(static_cast<int32_t>(o.status)).Int8(o.updated_time_ms));
                        },
                        [&](const Batch::InsertBranch& o) {
                          const BranchRecord& b = o.record;
                          return p.Send(kInsertBranch, Params()
                                                           .Int8(b.branch_id)
                                                           .Bytes(b.xid)
                                                           .Bytes(b.resource_id)
                                                           .Int4(static_cast<int32_t>(b.type))
                                                           .Int4(static_cast<int32_t>(b.status))
                                                           .Bytes(b.lock_keys)
                                                           .Bytes(b.application_data)
                                                           .Bytes(b.client_id)
                                                           .Int8(b.registered_time_ms));
                        },
                        [&](const Batch::SetBranchStatus& o) {
                          return p.Send(kSetBranchStatus,
                                        Params().Bytes(o.xid).Int8(o.branch_id).Int4(static_cast<int32_t>(o.status)));
                        },
                        [&](const Batch::AcquireLocks& o) {
                          return p.Send(kAcquireLocks, Params().Bytes(o.xid).Int8(o.branch_id).TextArray(o.row_keys));
                        },
                        [&](const Batch::ReleaseLocks& o) { return p.Send(kReleaseLocks, Params().Bytes(o.xid)); },
                        [&](const Batch::RemoveGlobal& o) { return p.Send(kRemoveGlobal, Params().Bytes(o.xid)); },
                    },
                    op);
}

// What a failed operation means for its batch, in the memory store's words.
WriteResult OpFailure(PGconn* c, const Batch::Op& op, const PGresult* r) {
  const std::string_view state = SqlState(r);
  std::optional<Status> status =
      std::visit(Overloaded{
                     [&](const Batch::InsertGlobal& o) -> std::optional<Status> {
                       if (state == "23505") return AlreadyExists(o.record.xid);
                       return std::nullopt;
                     },
                     [&](const Batch::SetGlobalStatus& o) -> std::optional<Status> {
                       if (state == kNotFoundState) return NoSuchTransaction(o.xid);
                       return std::nullopt;
                     },
                     [&](const Batch::InsertBranch& o) -> std::optional<Status> {
                       if (state == "23505") return AlreadyExists("branch " + std::to_string(o.record.branch_id));
                       if (state == "23503") return NoSuchTransaction(o.record.xid);
                       return std::nullopt;
                     },
                     [&](const Batch::SetBranchStatus& o) -> std::optional<Status> {
                       if (state == kNotFoundState) return NoSuchBranch(o.xid, o.branch_id);
                       return std::nullopt;
                     },
                     [&](const Batch::AcquireLocks& o) -> std::optional<Status> {
                       if (state == kNotFoundState || state == "23503") return NoSuchTransaction(o.xid);
                       return std::nullopt;
                     },
                     [&](const auto&) -> std::optional<Status> { return std::nullopt; },
                 },
                 op);
  if (status) return {*status, std::nullopt};
  const auto* lock = std::get_if<Batch::AcquireLocks>(&op);
  const char* detail = PQresultErrorField(r, PG_DIAG_MESSAGE_DETAIL);
  if (lock && state == kLockConflictState && detail) {
    // DETAIL is "<index of the key, from 1> <holder's branch id> <holder's xid>".
    char* end = nullptr;
    const long index = std::strtol(detail, &end, 10);
    const long long branch = std::strtoll(end, &end, 10);
    if (index >= 1 && static_cast<size_t>(index) <= lock->row_keys.size() && *end == ' ')
      return LockConflictResult(RowLock{lock->row_keys[index - 1], end + 1, branch});
  }
  return {StatusOf(c, r, "PostgreSQL rejected the batch: "), std::nullopt};
}

}  // namespace

struct PostgresLogStore::Impl {
  struct Pending {
    Batch batch;
    WriteCallback done;
    std::optional<WriteResult> failed;  // the batch failed alone and was rolled back to its savepoint
  };

  // How one attempt at a group ended.
  struct GroupEnd {
    enum Kind { kCommitted, kRetry, kFailed, kLost } kind;
    Status status;                   // kRetry, kFailed, kLost: why
    bool commit_maybe_sent = false;  // kLost: COMMIT may have run
  };

  PostgresOptions options;
  std::array<std::string, kStmtCount> statements;

  std::mutex mu;
  std::condition_variable queue_changed;
  std::deque<Pending> queue;  // guarded by mu
  bool closed = false;        // guarded by mu
  std::thread writer_thread;

  // Callbacks run on a thread of their own, group by group in commit order, so that the writer
  // sends the next group while the callbacks of the last one run.
  using Completions = std::vector<std::pair<WriteCallback, WriteResult>>;
  std::mutex done_mu;
  std::condition_variable done_changed;
  std::deque<Completions> done_queue;  // guarded by done_mu
  bool writer_finished = false;        // guarded by done_mu
  std::thread completer_thread;
  std::thread::id completer_id;  // set before the store is handed out

  std::mutex join_mu;  // one Close joins the threads

  // The writer thread's own.
  PgConn writer;
  milliseconds backoff{0};
  Clock::time_point next_connect{};
  std::string connect_error;
  std::mt19937_64 random{std::random_device{}()};
  std::vector<std::string> done_tokens;  // of groups that committed: the next group deletes them

  std::mutex reader_mu;
  PgConn reader;  // guarded by reader_mu

  std::atomic<uint64_t> commits{0}, batches{0}, failed_batches{0};

  Result<PgConn> Connect() {
    auto c = Dial(options.conninfo);
    if (!c.ok()) return c.status();
    DTX_RETURN_IF_ERROR(Prepare(c->get(), statements));
    return std::move(*c);
  }

  // ---- Writes, on the writer thread.

  void WriterLoop() {
    std::vector<Pending> group;
    while (true) {
      {
        std::unique_lock lock(mu);
        queue_changed.wait(lock, [&] { return !queue.empty() || closed; });
        if (queue.empty()) break;
        const size_t n = std::min(queue.size(), options.max_group);
        for (size_t i = 0; i < n; ++i) group.push_back(std::move(queue[i]));
        queue.erase(queue.begin(), queue.begin() + n);
      }
      Completions done = CommitGroup(group);
      group.clear();
      std::lock_guard lock(done_mu);
      done_queue.push_back(std::move(done));
      done_changed.notify_one();
    }
    writer.reset();
    std::lock_guard lock(done_mu);
    writer_finished = true;
    done_changed.notify_one();
  }

  void CompleterLoop() {
    while (true) {
      Completions done;
      {
        std::unique_lock lock(done_mu);
        done_changed.wait(lock, [&] { return !done_queue.empty() || writer_finished; });
        if (done_queue.empty()) return;
        done = std::move(done_queue.front());
        done_queue.pop_front();
      }
      for (const auto& [callback, result] : done) callback(result);
    }
  }

  // Commits the group; returns each batch's callback with its result, in queue order.
  Completions CommitGroup(std::vector<Pending>& group) {
    std::optional<Status> group_failure;  // every batch failed with it
    bool reconnected = false;
    for (int attempt = 0;; ++attempt) {
      for (auto& p : group) p.failed.reset();
      if (!WriterReady()) {
        group_failure = Unavailable("cannot connect to PostgreSQL: " + connect_error + std::string(kNotWritten));
        break;
      }
      const std::string token = fmt::format("{:016x}{:016x}", random(), random());
      GroupEnd end = RunGroup(group, token);
      if (end.kind == GroupEnd::kCommitted) {
        done_tokens = {token};
        break;
      }
      if (end.kind == GroupEnd::kRetry && attempt < options.max_group_retries) {
        SPDLOG_DEBUG("log: PostgreSQL aborted a group of {} batches ({}); retrying", group.size(),
                     end.status.message());
        std::this_thread::sleep_for(milliseconds(1 + random() % (2 << std::min(attempt, 6))));
        continue;
      }
      if (end.kind == GroupEnd::kRetry) {
        group_failure =
            Unavailable("PostgreSQL aborted the group commit " + std::to_string(attempt + 1) +
                        " times, the last for: " + std::string(end.status.message()) + std::string(kNotWritten));
        break;
      }
      if (end.kind == GroupEnd::kFailed) {
        group_failure = Status(end.status.code(), std::string(end.status.message()) + std::string(kNotWritten));
        break;
      }
      // Lost the connection.
      SPDLOG_WARN("log: {}", end.status.message());
      writer.reset();
      if (!end.commit_maybe_sent && !reconnected) {
        reconnected = true;  // nothing of the group landed: try it once more on a new connection
        continue;
      }
      const std::optional<bool> committed = end.commit_maybe_sent ? AskCommitted(token) : false;
      if (!committed) {
        group_failure = Unavailable(std::string(end.status.message()) + std::string(kOutcomeUnknown));
      } else if (!*committed) {
        group_failure = Unavailable(std::string(end.status.message()) + std::string(kNotWritten));
      } else {
        done_tokens = {token};
      }
      break;
    }
    Completions done;
    done.reserve(group.size());
    for (auto& p : group) {
      WriteResult r = group_failure ? WriteResult{*group_failure, std::nullopt} : p.failed.value_or(WriteResult{});
      ++(r.ok() ? batches : failed_batches);
      done.emplace_back(std::move(p.done), std::move(r));
    }
    if (!group_failure) ++commits;
    return done;
  }

  // Whether the writer has a live connection, making one if the backoff allows.
  bool WriterReady() {
    if (writer && Alive(writer.get())) return true;
    writer.reset();
    const auto now = Clock::now();
    if (now < next_connect) return false;
    auto c = Connect();
    if (!c.ok()) {
      backoff = std::clamp(backoff * 2, milliseconds(100), std::max(options.reconnect_backoff_max, milliseconds(100)));
      next_connect = now + backoff;
      constexpr std::string_view kPrefix = "cannot connect to PostgreSQL: ";
      connect_error = std::string(c.status().message());
      if (connect_error.starts_with(kPrefix)) connect_error.erase(0, kPrefix.size());
      SPDLOG_WARN("log: cannot connect to PostgreSQL: {}; next attempt in {} ms", connect_error, backoff.count());
      return false;
    }
    if (backoff.count()) SPDLOG_INFO("log: connected to PostgreSQL again");
    backoff = milliseconds(0);
    writer = std::move(*c);
    return true;
  }

  // Whether the group that wrote `token` committed, asked on new connections for up to
  // options.outcome_timeout; nullopt if PostgreSQL could not say.
  //
  // We insert the token ourselves. If the group committed, its row is there and our insert does
  // nothing; if the group is still open, the insert waits for it to end; if it never committed,
  // our row lands and fences it: were the old session ever to write the token, the unique key
  // would fail it, so it cannot commit after we have answered. (A transaction id would not do:
  // after a crash, a server reuses the ids of transactions that never reached its disk.)
  std::optional<bool> AskCommitted(const std::string& token) {
    const auto deadline = Clock::now() + options.outcome_timeout;
    milliseconds wait(50);
    while (true) {
      if (auto c = Connect(); c.ok()) {
        // A connection of its own: the lock timeout set here must not stay on the writer's.
        Pipeline p(c->get());
        const auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now());
        const std::string timeout = std::to_string(std::max<int64_t>(left.count(), 1)) + "ms";
        if (p.Send(kSetLockTimeout, Params().Bytes(timeout)) && p.Send(kFenceToken, Params().Bytes(token)) &&
            p.Sync()) {
          PgResult set = p.Next();
          PgResult fence = p.Next();
          if (Succeeded(fence.get()) && p.SkipToSync()) {
            const bool committed = std::string_view(PQcmdTuples(fence.get())) == "0";
            SPDLOG_INFO("log: the group whose COMMIT answer was lost {}", committed ? "committed" : "did not commit");
            return committed;
          }
        }
      }
      if (Clock::now() + wait > deadline) return std::nullopt;
      std::this_thread::sleep_for(wait);
      wait = std::min(wait * 2, milliseconds(1000));
    }
  }

  // One attempt at the group, in a single transaction: BEGIN, the group's token, then each
  // batch between SAVEPOINT and RELEASE, then COMMIT, all in one pipeline. An error stops the
  // pipeline where it occurs: the failing batch is rolled back to its savepoint and the batches
  // after it go out again.
  GroupEnd RunGroup(std::vector<Pending>& group, const std::string& token) {
    PGconn* c = writer.get();
    Pipeline p(c);
    GroupEnd lost{GroupEnd::kLost};
    // A broken connection while sending, or a result that shows it was lost.
    auto connection_lost = [&](const PGresult* r) {
      lost.status = Lost(c, r, "");
      return lost;
    };
    // Ends the attempt on an error outside a batch's own (or a deadlock inside one): the
    // transaction is rolled back; any COMMIT queued after the error was skipped.
    auto abort_group = [&](const PGresult* r, bool at_commit = false) {
      if (!r || ConnectionLost(c, r)) {
        // A server that said FATAL before COMMIT ran nothing after it; libpq's own errors tell us
        // nothing of how far the server got.
        if (r && !SqlState(r).empty() && !at_commit) lost.commit_maybe_sent = false;
        return connection_lost(r);
      }
      lost.commit_maybe_sent = false;
      GroupEnd end{Retryable(r) ? GroupEnd::kRetry : GroupEnd::kFailed,
                   StatusOf(c, r, "PostgreSQL failed the group commit: ")};
      if (!p.SkipToSync() || !p.Send(kRollback) || !p.Sync() || !p.SkipToSync()) return connection_lost(nullptr);
      return end;
    };

    size_t next = 0;  // the first batch of this round
    bool first = true, rollback_to = false;
    while (true) {
      bool sent = true;
      if (first) sent = p.Send(kBegin) && p.Send(kInsertToken, Params().Bytes(token).TextArray(done_tokens));
      if (rollback_to) sent = sent && p.Send(kRollbackTo) && p.Send(kRelease);
      for (size_t i = next; sent && i < group.size(); ++i) {
        sent = p.Send(kSavepoint);
        for (const auto& op : group[i].batch.ops()) sent = sent && SendOp(p, op);
        sent = sent && p.Send(kRelease);
      }
      if (sent) {
        lost.commit_maybe_sent = true;  // from here on the server may commit whatever we learn
        sent = p.Send(kCommit) && p.Sync();
      }
      if (!sent) return connection_lost(nullptr);

      for (int i = 0; i < (first ? 2 : 0) + (rollback_to ? 2 : 0); ++i) {
        PgResult r = p.Next();
        if (!Succeeded(r.get())) return abort_group(r.get());
      }
      first = rollback_to = false;

      std::optional<size_t> failed;
      for (size_t i = next; !failed && i < group.size(); ++i) {
        PgResult r = p.Next();  // SAVEPOINT
        if (!Succeeded(r.get())) return abort_group(r.get());
        for (const auto& op : group[i].batch.ops()) {
          r = p.Next();
          if (Succeeded(r.get())) continue;
          if (!r || ConnectionLost(c, r.get()) || Retryable(r.get())) return abort_group(r.get());
          group[i].failed = OpFailure(c, op, r.get());
          failed = i;
          break;
        }
        if (failed) break;
        r = p.Next();  // RELEASE
        if (!Succeeded(r.get())) return abort_group(r.get());
      }
      if (failed) {
        lost.commit_maybe_sent = false;  // the pipeline skips what follows an error, COMMIT too
        if (!p.SkipToSync()) return connection_lost(nullptr);
        next = *failed + 1;
        rollback_to = true;
        continue;
      }
      PgResult commit = p.Next();
      if (!Succeeded(commit.get())) return abort_group(commit.get(), true);
      if (!p.SkipToSync()) writer.reset();  // committed all the same; the next group reconnects
      return {GroupEnd::kCommitted};
    }
  }

  // ---- Reads, on the callers' threads, one at a time on the reader connection.

  // Runs `read` on the reader connection, connecting first if need be; if the connection turns
  // out lost, tries once more on a new one.
  template <class T>
  Result<T> Read(const std::function<Result<T>(PGconn*)>& read) {
    std::lock_guard lock(reader_mu);
    for (int attempt = 0;; ++attempt) {
      if (!reader || !Alive(reader.get())) {
        reader.reset();
        auto c = Connect();
        if (!c.ok()) return c.status();
        reader = std::move(*c);
      }
      Result<T> r = read(reader.get());
      if (r.ok() || r.status().code() != StatusCode::kUnavailable) return r;
      reader.reset();
      if (attempt == 1) return r;
    }
  }

  // Runs statements in one round trip; with `snapshot`, inside one REPEATABLE READ transaction.
  // Returns their results, or Unavailable if the connection was lost.
  static Result<std::vector<PgResult>> Query(PGconn* c, std::initializer_list<std::pair<Stmt, const Params*>> stmts,
                                             bool snapshot) {
    Pipeline p(c);
    bool sent = !snapshot || p.Send(kReadBegin);
    for (const auto& [s, params] : stmts) sent = sent && p.Send(s, *params);
    if (snapshot) sent = sent && p.Send(kCommit);
    if (!sent || !p.Sync()) return Lost(c, nullptr, "");
    std::vector<PgResult> results;
    for (size_t i = 0; i < stmts.size() + (snapshot ? 2 : 0); ++i) {
      PgResult r = p.Next();
      if (!r || ConnectionLost(c, r.get())) return Lost(c, r.get(), "");
      if (!Succeeded(r.get())) {
        Status st = StatusOf(c, r.get(), "reading the log: ");
        if (!p.SkipToSync() || (snapshot && (!p.Send(kRollback) || !p.Sync() || !p.SkipToSync())))
          return Lost(c, nullptr, "");
        return st;
      }
      const bool begin_or_commit = snapshot && (i == 0 || i == stmts.size() + 1);
      if (!begin_or_commit) results.push_back(std::move(r));
    }
    if (!p.SkipToSync()) return Lost(c, nullptr, "");
    return results;
  }
};

PostgresLogStore::PostgresLogStore(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Result<std::unique_ptr<PostgresLogStore>> PostgresLogStore::Open(const PostgresOptions& options) {
  const std::string& schema = options.schema;
  if (schema.empty() || schema.size() > 63 || !std::all_of(schema.begin(), schema.end(), [](char ch) {
        return std::isalnum(static_cast<unsigned char>(ch)) || ch == '_';
      }))
    return InvalidArgument("the log schema name \"" + schema + "\" is not 1 to 63 letters, digits and '_'");
  if (options.max_group == 0) return InvalidArgument("max_group must be at least 1");

  auto impl = std::make_unique<Impl>();
  impl->options = options;
  impl->statements = StatementTexts(QuoteIdentifier(schema));
  auto writer = Dial(options.conninfo);
  if (!writer.ok()) return writer.status();
  DTX_RETURN_IF_ERROR(Migrate(writer->get(), schema));
  DTX_RETURN_IF_ERROR(Prepare(writer->get(), impl->statements));
  impl->writer = std::move(*writer);
  auto reader = impl->Connect();
  if (!reader.ok()) return reader.status();
  impl->reader = std::move(*reader);
  Impl* raw = impl.get();
  impl->writer_thread = std::thread([raw] { raw->WriterLoop(); });
  impl->completer_thread = std::thread([raw] { raw->CompleterLoop(); });
  impl->completer_id = impl->completer_thread.get_id();
  return std::unique_ptr<PostgresLogStore>(new PostgresLogStore(std::move(impl)));
}

PostgresLogStore::~PostgresLogStore() {
  Close();
  std::lock_guard lock(impl_->join_mu);
  if (impl_->completer_thread.joinable()) impl_->completer_thread.join();  // closed from a callback before
}

void PostgresLogStore::Write(Batch batch, WriteCallback done) {
  {
    std::lock_guard lock(impl_->mu);
    if (!impl_->closed) {
      impl_->queue.push_back({std::move(batch), std::move(done), std::nullopt});
      impl_->queue_changed.notify_one();
      return;
    }
  }
  done(WriteResult{FailedPrecondition("the log store is closed"), std::nullopt});
}

LogStoreStats PostgresLogStore::Stats() const {
  return {impl_->commits.load(), impl_->batches.load(), impl_->failed_batches.load()};
}

void PostgresLogStore::Close() {
  {
    std::lock_guard lock(impl_->mu);
    impl_->closed = true;
  }
  impl_->queue_changed.notify_one();
  std::lock_guard lock(impl_->join_mu);
  if (impl_->writer_thread.joinable()) impl_->writer_thread.join();  // commits what is queued
  // From a write callback, the rest of the callbacks run once it returns.
  if (std::this_thread::get_id() != impl_->completer_id && impl_->completer_thread.joinable())
    impl_->completer_thread.join();
}

Result<std::vector<TransactionSnapshot>> PostgresLogStore::LoadAll() {
  return impl_->Read<std::vector<TransactionSnapshot>>([](PGconn* c) -> Result<std::vector<TransactionSnapshot>> {
    const Params none;
    auto rs = Impl::Query(c, {{kAllGlobals, &none}, {kAllBranches, &none}, {kAllLocks, &none}}, true);
    if (!rs.ok()) return rs.status();
    const PGresult* globals = (*rs)[0].get();
    const PGresult* branches = (*rs)[1].get();
    const PGresult* locks = (*rs)[2].get();
    std::vector<TransactionSnapshot> all(PQntuples(globals));
    std::map<std::string, size_t> by_xid;
    for (int i = 0; i < PQntuples(globals); ++i) {
      all[i].global = GlobalAt(globals, i);
      by_xid.emplace(all[i].global.xid, i);
    }
    for (int i = 0; i < PQntuples(branches); ++i) {
      BranchRecord b = BranchAt(branches, i);
      if (auto it = by_xid.find(b.xid); it != by_xid.end()) all[it->second].branches.push_back(std::move(b));
    }
    for (int i = 0; i < PQntuples(locks); ++i) {
      RowLock l = LockAt(locks, i);
      if (auto it = by_xid.find(l.xid); it != by_xid.end()) all[it->second].locks.push_back(std::move(l));
    }
    return all;
  });
}

Result<std::optional<TransactionSnapshot>> PostgresLogStore::Get(const std::string& xid) {
  using Found = std::optional<TransactionSnapshot>;
  return impl_->Read<Found>([&xid](PGconn* c) -> Result<Found> {
    Params key;
    key.Bytes(xid);
    auto rs = Impl::Query(c, {{kGetGlobal, &key}, {kGetBranches, &key}, {kGetLocks, &key}}, true);
    if (!rs.ok()) return rs.status();
    if (PQntuples((*rs)[0].get()) == 0) return Found();
    TransactionSnapshot snap;
    snap.global = GlobalAt((*rs)[0].get(), 0);
    for (int i = 0; i < PQntuples((*rs)[1].get()); ++i) snap.branches.push_back(BranchAt((*rs)[1].get(), i));
    for (int i = 0; i < PQntuples((*rs)[2].get()); ++i) snap.locks.push_back(LockAt((*rs)[2].get(), i));
    return Found(std::move(snap));
  });
}

Result<ListPage> PostgresLogStore::List(const ListFilter& filter) {
  if (filter.limit == 0) return ListPage{};
  return impl_->Read<ListPage>([&filter](PGconn* c) -> Result<ListPage> {
    std::vector<int32_t> statuses;
    for (GlobalStatus s : filter.statuses) statuses.push_back(static_cast<int32_t>(s));
    Params params;
    // One row more than the page holds tells whether another page follows.
    params.Bytes(filter.after_xid)
        .Int4Array(statuses)
        .Int8(filter.begun_before_ms)
        .Int8(static_cast<int64_t>(std::min<size_t>(filter.limit, INT32_MAX)) + 1);
    auto rs = Impl::Query(c, {{kList, &params}}, false);
    if (!rs.ok()) return rs.status();
    const PGresult* r = (*rs)[0].get();
    ListPage page;
    for (int i = 0; i < PQntuples(r) && page.transactions.size() < filter.limit; ++i)
      page.transactions.push_back(GlobalAt(r, i));
    if (static_cast<size_t>(PQntuples(r)) > filter.limit) page.next_after_xid = page.transactions.back().xid;
    return page;
  });
}

Result<std::vector<RowLock>> PostgresLogStore::FindLocks(const std::vector<std::string>& row_keys) {
  if (row_keys.empty()) return std::vector<RowLock>();
  return impl_->Read<std::vector<RowLock>>([&row_keys](PGconn* c) -> Result<std::vector<RowLock>> {
    Params keys;
    keys.TextArray(row_keys);
    auto rs = Impl::Query(c, {{kFindLocks, &keys}}, false);
    if (!rs.ok()) return rs.status();
    std::vector<RowLock> held;
    for (int i = 0; i < PQntuples((*rs)[0].get()); ++i) held.push_back(LockAt((*rs)[0].get(), i));
    return held;
  });
}

Result<std::vector<RowLock>> PostgresLogStore::FindLocksByPrefix(const std::string& prefix, const std::string& except_xid,
                                                                 size_t limit) {
  // Keys compare byte by byte (COLLATE "C"), so the keys with the prefix are those from it up to
  // the prefix with its last byte raised by one, which stays valid UTF-8 for an ASCII last byte.
  if (prefix.empty() || static_cast<unsigned char>(prefix.back()) >= 0x7f) {
    return InvalidArgument("a lock-key prefix must end with an ASCII character");
  }
  std::string above = prefix;
  ++above.back();
  return impl_->Read<std::vector<RowLock>>([&](PGconn* c) -> Result<std::vector<RowLock>> {
    Params p;
    p.Bytes(prefix).Bytes(above).Bytes(except_xid).Int8(static_cast<int64_t>(std::min<size_t>(limit, INT64_MAX)));
    auto rs = Impl::Query(c, {{kFindLocksByPrefix, &p}}, false);
    if (!rs.ok()) return rs.status();
    std::vector<RowLock> held;
    for (int i = 0; i < PQntuples((*rs)[0].get()); ++i) held.push_back(LockAt((*rs)[0].get(), i));
    return held;
  });
}

}  // namespace dtx::log
