// Connection: one Bolt connection, either side. Reads frames, answers heartbeats, dispatches
// requests to the ServiceRegistry, matches responses to the calls it sent, and enforces
// per-call deadlines, idle timeouts and heartbeats.
//
// Threading: a Connection lives on one io_context run by one thread; its state is touched only
// there, except its output (next_out_, writing_), guarded by out_mu_. The public methods marked
// "any thread" post to it when called from elsewhere, except SendReply: an answer given on
// another thread (a log write's callback, say) is written to the socket by that thread itself
// when nothing else is being written, sparing the I/O thread a wake-up and the caller a hop.
// Ownership: shared; pending async operations, Responders and Channels hold it.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <mutex>
#include <vector>
#include <memory>
#include <string>
#include <unordered_map>

#include "dtx/rpc/bolt_codec.h"
#include "dtx/rpc/channel.h"
#include "dtx/rpc/service_registry.h"
#include "dtx/rpc/sofa_message.h"

namespace dtx::rpc {

class Connection final : public Channel, public ReplySink, public std::enable_shared_from_this<Connection> {
 public:
  using Clock = std::chrono::steady_clock;

  struct Options {
    size_t max_frame_size = kDefaultMaxFrameSize;
    size_t max_pending_output = 64 * 1024 * 1024;
    std::chrono::milliseconds idle_timeout{0};        // close after this long without input; 0: never
    std::chrono::milliseconds heartbeat_interval{0};  // heartbeat after this long without input; 0: never
    unsigned heartbeat_failures = 3;
    WireFormat wire;          // the format of frames this side starts
    bool learn_wire = false;  // server side: switch to the format of the first frame received
  };
  using CloseHandler = std::function<void(const std::shared_ptr<Connection>&, const Status& reason)>;

  enum class State { kConnecting, kOpen, kDraining, kClosed };

  Connection(boost::asio::io_context& io, Options options, std::shared_ptr<const ServiceRegistry> services,
             CloseHandler on_close);
  ~Connection() override;

  boost::asio::ip::tcp::socket& socket() { return socket_; }
  boost::asio::io_context& io() { return io_; }
  // REQUIRES: on the I/O thread; the socket is connected.
  void Start();
  // Any thread. Fails pending calls with `reason`; idempotent.
  void Close(Status reason);
  // Any thread. Refuses new requests, closes once in-flight requests are answered and written.
  void Drain();

  State state() const { return state_.load(std::memory_order_acquire); }
  const std::string& peer_address() const { return peer_; }

  // Channel, any thread.
  void CallRaw(std::string_view service, std::string_view method, std::string body,
               const CallOptions& options, RawCallback done) override;
  void SendOneway(std::string_view service, std::string_view method, std::string body,
                  const CallOptions& options) override;
  // ReplySink, any thread.
  void SendReply(uint32_t request_id, Result<std::string> result) override;

 private:
  struct PendingCall {
    RawCallback done;
    std::multimap<Clock::time_point, uint32_t>::iterator deadline;
  };

  bool OnIoThread() const { return io_.get_executor().running_in_this_thread(); }
  // Runs `work` on the I/O thread, batching work that arrives from other threads.
  void RunOnIo(std::function<void()> work);
  void SetState(State next);
  void DoClose(const Status& reason);
  void DoRead();
  void OnRead(const boost::system::error_code& ec, size_t n);
  void HandleFrame(const BoltFrame& frame);
  void HandleRequest(const BoltFrame& frame);
  void HandleResponse(const BoltFrame& frame);
  void Answer(uint32_t request_id, const SofaResponse& response);
  void FinishRequest(uint32_t request_id, Result<std::string> result);
  void StartCall(std::string_view service, std::string_view method, std::string_view body,
                 const CallOptions& options, RawCallback done);
  // Registers a call awaiting response `id`, failing with Timeout after `timeout`.
  void AddPending(uint32_t id, std::chrono::milliseconds timeout, RawCallback done);
  void ArmDeadlineTimer();
  void OnDeadline();
  void ArmTick();
  void OnTick();
  void Queue(const BoltFrame& frame);
  // REQUIRES: out_mu_ held, on the I/O thread.
  void StartWriteLocked();
  void StartWrite();
  // Another thread's answer: sends it now if nothing is queued or being written, or queues it.
  void ReplyFromOtherThread(uint32_t request_id, Result<std::string> result);
  void MaybeFinishDrain();

  boost::asio::io_context& io_;
  boost::asio::ip::tcp::socket socket_;
  Options options_;
  std::shared_ptr<const ServiceRegistry> services_;
  CloseHandler on_close_;
  std::string peer_;
  std::atomic<State> state_{State::kConnecting};
  bool wire_learned_ = false;

  // Input: bytes in_[in_begin_, in_end_) are read and not yet decoded.
  std::string in_;
  size_t in_begin_ = 0;
  size_t in_end_ = 0;
  BoltFrame frame_;  // reused so its header vector keeps its capacity
  Clock::time_point last_input_;

  // Output: out_ is being written (by the I/O thread); next_out_ collects frames meanwhile.
  // Another thread writes to the socket itself only while it holds out_mu_, nothing is being
  // written and nothing is queued, so bytes never interleave; the socket is closed under out_mu_.
  std::mutex out_mu_;
  std::string out_;
  std::string next_out_;     // guarded by out_mu_
  bool writing_ = false;     // guarded by out_mu_
  bool in_read_batch_ = false;  // I/O thread: while decoding a read, writes wait for the whole batch

  uint32_t next_id_ = 1;
  std::unordered_map<uint32_t, PendingCall> pending_;
  std::multimap<Clock::time_point, uint32_t> deadlines_;
  boost::asio::steady_timer deadline_timer_;
  Clock::time_point armed_for_ = Clock::time_point::max();
  boost::asio::steady_timer tick_timer_;
  bool heartbeat_outstanding_ = false;
  unsigned heartbeat_misses_ = 0;
  std::atomic<size_t> in_flight_{0};  // requests received and not yet answered

  std::mutex inbox_mu_;
  std::vector<std::function<void()>> inbox_;  // guarded by inbox_mu_
  bool inbox_scheduled_ = false;              // guarded by inbox_mu_
};

}  // namespace dtx::rpc
