#include "connection.h"

#include <spdlog/spdlog.h>

#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>

#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

namespace dtx::rpc {
namespace asio = boost::asio;

namespace {
constexpr size_t kInitialReadBuffer = 8 * 1024;
constexpr size_t kMinReadSpace = 4 * 1024;
constexpr size_t kKeepReadBuffer = 256 * 1024;  // a larger buffer is released once empty
constexpr std::chrono::milliseconds kHeartbeatTimeout{3000};

// The state moves Connecting -> Open -> Draining -> Closed, skipping ahead but never back.
bool AllowedMove(Connection::State from, Connection::State to) { return static_cast<int>(to) > static_cast<int>(from); }

std::string ErrorMessage(const Status& s) { return std::string(s.message().empty() ? s.ToString() : s.message()); }

SofaResponse ResponseOf(const Result<std::string>& result, std::string& message) {
  if (result.ok()) return SofaResponse::Ok(*result);
  message = ErrorMessage(result.status());
  return SofaResponse::Error(ResponseStatus::kServerException, message);
}

// One fewer, never below zero.
void Decrement(std::atomic<size_t>& n) {
  size_t v = n.load(std::memory_order_relaxed);
  while (v > 0 && !n.compare_exchange_weak(v, v - 1, std::memory_order_acq_rel)) {
  }
}
}  // namespace

Connection::Connection(asio::io_context& io, Options options, std::shared_ptr<const ServiceRegistry> services,
                       CloseHandler on_close)
    : io_(io),
      socket_(io),
      options_(options),
      services_(std::move(services)),
      on_close_(std::move(on_close)),
      deadline_timer_(io),
      tick_timer_(io) {}

Connection::~Connection() = default;

void Connection::SetState(State next) {
  State current = state_.load(std::memory_order_relaxed);
  if (!AllowedMove(current, next)) {
    SPDLOG_ERROR("rpc: connection {}: refused state move {} -> {}", peer_, static_cast<int>(current),
                 static_cast<int>(next));
    return;
  }
  state_.store(next, std::memory_order_release);
}

void Connection::Start() {
  boost::system::error_code ec;
  socket_.set_option(asio::ip::tcp::no_delay(true), ec);
  auto ep = socket_.remote_endpoint(ec);
  peer_ = ec ? std::string("unknown") : ep.address().to_string() + ":" + std::to_string(ep.port());
  if (state() == State::kClosed) return;
  SetState(State::kOpen);
  last_input_ = Clock::now();
  in_.resize(kInitialReadBuffer);
  ArmTick();
  StartWrite();  // calls made while connecting
  DoRead();
}

void Connection::Close(Status reason) {
  if (OnIoThread()) return DoClose(reason);
  asio::post(io_, [self = shared_from_this(), reason = std::move(reason)] { self->DoClose(reason); });
}

void Connection::Drain() {
  asio::post(io_, [self = shared_from_this()] {
    if (self->state() != State::kOpen) {
      if (self->state() == State::kConnecting) self->DoClose(Cancelled("shutting down"));
      return;
    }
    self->SetState(State::kDraining);
    self->MaybeFinishDrain();
  });
}

void Connection::MaybeFinishDrain() {
  if (state() != State::kDraining || in_flight_.load() > 0 || !pending_.empty()) return;
  {
    std::lock_guard lock(out_mu_);
    if (writing_ || !next_out_.empty()) return;
  }
  DoClose(Cancelled("shutting down"));
}

void Connection::DoClose(const Status& reason) {
  if (state() == State::kClosed) return;
  {
    // Under out_mu_: another thread writing an answer never meets a closed (or reused) descriptor.
    std::lock_guard lock(out_mu_);
    SetState(State::kClosed);
    boost::system::error_code ignored;
    socket_.shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
    socket_.close(ignored);
    next_out_.clear();
    next_out_.shrink_to_fit();
  }
  deadline_timer_.cancel();
  tick_timer_.cancel();
  in_.clear();
  in_.shrink_to_fit();
  auto pending = std::move(pending_);
  pending_.clear();
  deadlines_.clear();
  Status failure = Unavailable("connection to " + peer_ + " closed: " + reason.ToString());
  for (auto& [id, call] : pending) call.done(failure);
  if (on_close_) {
    auto handler = std::move(on_close_);
    handler(shared_from_this(), reason);
  }
}

// ---- input ----

void Connection::DoRead() {
  if (in_.size() - in_end_ < kMinReadSpace) in_.resize(std::max(in_.size() * 2, kInitialReadBuffer));
  socket_.async_read_some(asio::buffer(in_.data() + in_end_, in_.size() - in_end_),
                          [self = shared_from_this()](const boost::system::error_code& ec, size_t n) {
                            self->OnRead(ec, n);
                          });
}

void Connection::OnRead(const boost::system::error_code& ec, size_t n) {
  if (state() == State::kClosed) return;
  if (ec) {
    if (ec == asio::error::eof || ec == asio::error::connection_reset) {
      SPDLOG_DEBUG("rpc: {} closed the connection", peer_);
    } else if (ec != asio::error::operation_aborted) {
      SPDLOG_WARN("rpc: read from {} failed: {}", peer_, ec.message());
    }
    return DoClose(Unavailable("peer closed the connection (" + ec.message() + ")"));
  }
  in_end_ += n;
  last_input_ = Clock::now();
  size_t need = 0;
  in_read_batch_ = true;
  while (state() != State::kClosed) {
    std::string_view bytes(in_.data() + in_begin_, in_end_ - in_begin_);
    DecodeResult r = DecodeFrame(bytes, options_.max_frame_size, frame_);
    if (r.status == DecodeStatus::kError) {
      SPDLOG_WARN("rpc: closing connection from {}: bad frame: {}", peer_, r.error);
      in_read_batch_ = false;
      return DoClose(InvalidArgument("bad frame: " + r.error));
    }
    if (r.status == DecodeStatus::kNeedMore) {
      need = r.consumed;
      break;
    }
    if (!wire_learned_ && options_.learn_wire) {
      options_.wire = WireFormat::Of(frame_);
      wire_learned_ = true;
    }
    HandleFrame(frame_);
    in_begin_ += r.consumed;
  }
  in_read_batch_ = false;
  if (state() == State::kClosed) return;
  StartWrite();

  // Keep the undecoded tail at the front, with room for the frame it starts.
  const size_t tail = in_end_ - in_begin_;
  if (tail == 0) {
    in_begin_ = in_end_ = 0;
    if (in_.size() > kKeepReadBuffer) {
      in_.resize(kInitialReadBuffer);
      in_.shrink_to_fit();
    }
  } else if (in_begin_ > 0 && (need > in_.size() - in_begin_ || in_.size() - in_end_ < kMinReadSpace)) {
    std::memmove(in_.data(), in_.data() + in_begin_, tail);
    in_begin_ = 0;
    in_end_ = tail;
  }
  if (need > in_.size()) in_.resize(need);
  DoRead();
}

void Connection::HandleFrame(const BoltFrame& frame) {
  if (frame.is_response()) return HandleResponse(frame);
  if (frame.is_heartbeat()) return Queue(HeartbeatAck(frame));
  HandleRequest(frame);
}

void Connection::HandleResponse(const BoltFrame& frame) {
  auto it = pending_.find(frame.request_id);
  if (it == pending_.end()) {
    SPDLOG_DEBUG("rpc: response {} from {} matches no pending call (timed out?)", frame.request_id, peer_);
    return;
  }
  RawCallback done = std::move(it->second.done);
  deadlines_.erase(it->second.deadline);
  pending_.erase(it);
  if (frame.is_heartbeat()) {
    done(std::string());
  } else if (auto result = SofaResponse::FromFrame(frame).ToResult(); result.ok()) {
    done(std::string(*result));
  } else {
    done(result.status());
  }
  MaybeFinishDrain();
}

void Connection::HandleRequest(const BoltFrame& frame) {
  const bool oneway = frame.type == CommandType::kOneway;
  auto answer_error = [&](std::string_view message) {
    if (!oneway) Answer(frame.request_id, SofaResponse::Error(ResponseStatus::kServerException, message));
  };
  if (state() == State::kDraining) return answer_error("server is shutting down");
  auto request = SofaRequest::FromFrame(frame);
  if (!request.ok()) return answer_error(request.status().message());
  if (!services_) return answer_error("not found service: " + std::string(request->service));
  auto method = services_->Lookup(request->service, request->method);
  if (!method.ok()) return answer_error(method.status().message());

  if (!oneway) ++in_flight_;
  CallContext ctx{request->service, request->method, frame.headers, peer_, shared_from_this()};
  Responder responder;
  if (!oneway) {
    CallTiming timing;
    if (CallObserver* observer = services_->observer())
      timing = {observer, (*method)->service, (*method)->method, Clock::now()};
    responder = Responder(shared_from_this(), frame.request_id, timing);
  }
  (*method)->handler(ctx, request->body, std::move(responder));
}

// Work from other threads waits in the inbox; one posted drain runs all that arrived before it
// ran, so a burst of answers (a log group completing, say) costs one wake-up of the I/O thread.
void Connection::RunOnIo(std::function<void()> work) {
  {
    std::lock_guard lock(inbox_mu_);
    inbox_.push_back(std::move(work));
    if (inbox_scheduled_) return;
    inbox_scheduled_ = true;
  }
  asio::post(io_, [self = shared_from_this()] {
    std::vector<std::function<void()>> batch;
    {
      std::lock_guard lock(self->inbox_mu_);
      batch.swap(self->inbox_);
      self->inbox_scheduled_ = false;
    }
    const bool was_batching = self->in_read_batch_;
    self->in_read_batch_ = true;  // answers queue up and go out in one write
    for (auto& w : batch) w();
    self->in_read_batch_ = was_batching;
    if (!was_batching) self->StartWrite();
  });
}

void Connection::SendReply(uint32_t request_id, Result<std::string> result) {
  if (OnIoThread()) return FinishRequest(request_id, std::move(result));
  ReplyFromOtherThread(request_id, std::move(result));
}

void Connection::FinishRequest(uint32_t request_id, Result<std::string> result) {
  Decrement(in_flight_);
  if (state() == State::kClosed) return;
  std::string message;
  Answer(request_id, ResponseOf(result, message));
  MaybeFinishDrain();
}

// The answering thread writes the frame itself when the socket is free (nothing being written,
// nothing queued): one non-blocking send, no wake-up of the I/O thread. Otherwise the frame joins
// the queue, which the I/O thread's write in progress (or its read batch, or the rest of an
// earlier partial send, posted below) carries out. Whatever the send could not take, and any
// error it met, is left to the I/O thread, whose write reports it and closes the connection.
void Connection::ReplyFromOtherThread(uint32_t request_id, Result<std::string> result) {
  CallObserver* observer = services_ ? services_->observer() : nullptr;
  std::string message;
  const BoltFrame frame = ResponseOf(result, message).ToFrame(options_.wire, request_id);
  bool wake_io = false, too_much = false, sent_here = false;
  {
    std::lock_guard lock(out_mu_);
    const State st = state();
    if (st != State::kClosed) {
      const bool socket_free = !writing_ && next_out_.empty() && st != State::kConnecting;
      EncodeFrame(frame, next_out_);
      if (socket_free) {
        size_t sent = 0;
        while (sent < next_out_.size()) {
          const ssize_t n = ::send(socket_.native_handle(), next_out_.data() + sent, next_out_.size() - sent,
                                   MSG_DONTWAIT | MSG_NOSIGNAL);
          if (n > 0) {
            sent += static_cast<size_t>(n);
          } else if (n < 0 && errno == EINTR) {
            continue;
          } else {
            break;  // the socket is full, or failed: the I/O thread's write waits, or reports it
          }
        }
        sent_here = sent == next_out_.size();
        next_out_.erase(0, sent);
        wake_io = !next_out_.empty();
      }
      too_much = next_out_.size() > options_.max_pending_output;
    }
  }
  Decrement(in_flight_);
  if (observer) observer->Delivered(Clock::duration::zero(), !sent_here);
  if (too_much) {
    SPDLOG_WARN("rpc: closing connection to {}: more than {} bytes of output queued, peer is not reading", peer_,
                options_.max_pending_output);
    return Close(ResourceExhausted("peer is not reading its input"));
  }
  if (wake_io || state() == State::kDraining) {
    asio::post(io_, [self = shared_from_this()] {
      self->StartWrite();
      self->MaybeFinishDrain();
    });
  }
}

void Connection::Answer(uint32_t request_id, const SofaResponse& response) {
  Queue(response.ToFrame(options_.wire, request_id));
}

// ---- outgoing calls ----

void Connection::CallRaw(std::string_view service, std::string_view method, std::string body,
                         const CallOptions& options, RawCallback done) {
  if (OnIoThread()) return StartCall(service, method, body, options, std::move(done));
  // If the I/O thread stops before this runs, the call still gets its answer.
  struct Once {
    RawCallback done;
    ~Once() {
      if (done) done(Cancelled("the connection stopped before the call was sent"));
    }
  };
  auto once = std::make_shared<Once>();
  once->done = std::move(done);
  RunOnIo([self = shared_from_this(), service = std::string(service), method = std::string(method),
           body = std::move(body), options, once]() mutable {
    self->StartCall(service, method, body, options, std::exchange(once->done, nullptr));
  });
}

void Connection::StartCall(std::string_view service, std::string_view method, std::string_view body,
                           const CallOptions& options, RawCallback done) {
  if (state() == State::kClosed) return done(Unavailable("connection to " + peer_ + " is closed"));
  const uint32_t id = next_id_++;
  SofaRequest request{service, method, options.target_app, {}, body};
  for (const auto& [k, v] : options.headers) request.baggage.emplace_back(k, v);
  Queue(request.ToFrame(options_.wire, id, static_cast<int32_t>(options.timeout.count())));
  if (state() == State::kClosed) return done(Unavailable("connection to " + peer_ + " closed while sending"));
  AddPending(id, options.timeout, std::move(done));
}

void Connection::SendOneway(std::string_view service, std::string_view method, std::string body,
                            const CallOptions& options) {
  auto send = [self = shared_from_this(), service = std::string(service), method = std::string(method),
               body = std::move(body), options]() {
    if (self->state() == State::kClosed) return;
    SofaRequest request{service, method, options.target_app, {}, body};
    for (const auto& [k, v] : options.headers) request.baggage.emplace_back(k, v);
    BoltFrame frame = request.ToFrame(self->options_.wire, self->next_id_++, static_cast<int32_t>(options.timeout.count()));
    frame.type = CommandType::kOneway;
    self->Queue(frame);
  };
  if (OnIoThread()) return send();
  RunOnIo(std::move(send));
}

void Connection::AddPending(uint32_t id, std::chrono::milliseconds timeout, RawCallback done) {
  const auto deadline = Clock::now() + timeout;
  auto where = deadlines_.emplace(deadline, id);
  pending_[id] = PendingCall{std::move(done), where};
  if (deadline < armed_for_) ArmDeadlineTimer();
}

void Connection::ArmDeadlineTimer() {
  if (deadlines_.empty()) {
    armed_for_ = Clock::time_point::max();
    return;
  }
  armed_for_ = deadlines_.begin()->first;
  deadline_timer_.expires_at(armed_for_);
  deadline_timer_.async_wait([self = shared_from_this()](const boost::system::error_code& ec) {
    if (!ec) self->OnDeadline();
  });
}

void Connection::OnDeadline() {
  if (state() == State::kClosed) return;
  const auto now = Clock::now();
  while (!deadlines_.empty() && deadlines_.begin()->first <= now) {
    const uint32_t id = deadlines_.begin()->second;
    deadlines_.erase(deadlines_.begin());
    auto it = pending_.find(id);
    if (it == pending_.end()) continue;
    RawCallback done = std::move(it->second.done);
    pending_.erase(it);
    done(Timeout("call " + std::to_string(id) + " to " + peer_ + " timed out"));
    if (state() == State::kClosed) return;
  }
  ArmDeadlineTimer();
  MaybeFinishDrain();
}

// ---- idle detection and heartbeats ----

void Connection::ArmTick() {
  using std::chrono::milliseconds;
  milliseconds period = milliseconds::max();
  if (options_.heartbeat_interval.count() > 0) period = std::min(period, options_.heartbeat_interval);
  if (options_.idle_timeout.count() > 0) period = std::min(period, std::max(milliseconds(1), options_.idle_timeout / 4));
  if (period == milliseconds::max()) return;
  tick_timer_.expires_after(period);
  tick_timer_.async_wait([self = shared_from_this()](const boost::system::error_code& ec) {
    if (!ec) self->OnTick();
  });
}

void Connection::OnTick() {
  if (state() == State::kClosed) return;
  const auto silent = Clock::now() - last_input_;
  if (options_.idle_timeout.count() > 0 && silent >= options_.idle_timeout) {
    SPDLOG_INFO("rpc: closing connection from {}: idle for {} ms", peer_, options_.idle_timeout.count());
    return DoClose(Timeout("idle connection"));
  }
  if (options_.heartbeat_interval.count() > 0 && silent >= options_.heartbeat_interval && !heartbeat_outstanding_) {
    const uint32_t id = next_id_++;
    heartbeat_outstanding_ = true;
    Queue(HeartbeatRequest(options_.wire, id, static_cast<int32_t>(kHeartbeatTimeout.count())));
    AddPending(id, kHeartbeatTimeout, [this, self = shared_from_this()](Result<std::string> r) {
      heartbeat_outstanding_ = false;
      if (r.ok()) {
        heartbeat_misses_ = 0;
        return;
      }
      if (++heartbeat_misses_ >= options_.heartbeat_failures && state() != State::kClosed) {
        SPDLOG_WARN("rpc: closing connection to {}: {} heartbeats unanswered", peer_, heartbeat_misses_);
        DoClose(Timeout("heartbeats unanswered"));
      }
    });
  }
  if (state() != State::kClosed) ArmTick();
}

// ---- output ----

void Connection::Queue(const BoltFrame& frame) {
  if (state() == State::kClosed) return;
  size_t queued;
  {
    std::lock_guard lock(out_mu_);
    EncodeFrame(frame, next_out_);
    queued = next_out_.size();
    if (queued <= options_.max_pending_output && !writing_ && !in_read_batch_ && state() != State::kConnecting)
      StartWriteLocked();
  }
  if (queued > options_.max_pending_output) {
    SPDLOG_WARN("rpc: closing connection to {}: {} bytes of output queued, peer is not reading", peer_, queued);
    DoClose(ResourceExhausted("peer is not reading its input"));
  }
}

void Connection::StartWrite() {
  std::lock_guard lock(out_mu_);
  const State st = state();
  if (!writing_ && !next_out_.empty() && st != State::kConnecting && st != State::kClosed) StartWriteLocked();
}

void Connection::StartWriteLocked() {
  writing_ = true;
  out_.swap(next_out_);
  next_out_.clear();
  asio::async_write(socket_, asio::buffer(out_), [self = shared_from_this()](const boost::system::error_code& ec, size_t) {
    {
      std::lock_guard lock(self->out_mu_);
      self->writing_ = false;
      if (self->state() == State::kClosed) return;
      if (!ec) {
        self->out_.clear();
        if (self->out_.capacity() > kKeepReadBuffer) self->out_.shrink_to_fit();
        if (!self->next_out_.empty()) return self->StartWriteLocked();
      }
    }
    if (ec) {
      SPDLOG_WARN("rpc: write to {} failed: {}", self->peer_, ec.message());
      return self->DoClose(Unavailable("write failed: " + ec.message()));
    }
    self->MaybeFinishDrain();
  });
}

}  // namespace dtx::rpc
