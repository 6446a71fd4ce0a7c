// ServiceRegistry: the services and methods a Server (or a Client, for calls its peer makes
// back) answers, with typed handlers for Protobuf request/response pairs.
//
// A handler runs on an I/O thread and must not block it. It answers through its Responder,
// at once or later from any thread (after a durable write completes, say): the Responder can be
// stored and copied. A Responder dropped without an answer answers with an error, so a caller
// never waits for a reply that cannot come.
//
// A CallObserver (SetObserver) is told how long each call took to answer, for metrics.
//
// Thread-safety: register every method and the observer before the registry is handed to a
// Server or Client; after that it is only read, from many threads.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>

#include "dtx/common/status.h"
#include "dtx/rpc/bolt_frame.h"
#include "dtx/rpc/channel.h"

namespace dtx::rpc {

// Where a reply goes. Implemented by the connection; thread-safe.
class ReplySink {
 public:
  virtual ~ReplySink() = default;
  virtual void SendReply(uint32_t request_id, Result<std::string> result) = 0;
};

// Told how long calls take, for metrics. Called from any thread: must be thread-safe and cheap.
class CallObserver {
 public:
  virtual ~CallObserver() = default;
  // A request to service/method was answered `elapsed` after it was decoded (when the handler,
  // or a later callback on any thread, gave its answer).
  virtual void Answered(std::string_view service, std::string_view method, std::chrono::nanoseconds elapsed) = 0;
  // An answer given on a thread other than its connection's waited `elapsed` before it was queued
  // for the socket (its hand-off to the connection's I/O thread; 0 when written by the answering
  // thread itself).
  virtual void Delivered(std::chrono::nanoseconds elapsed, bool handed_off) = 0;
};

// What a Responder reports to a CallObserver. The views point into the registry.
struct CallTiming {
  CallObserver* observer = nullptr;
  std::string_view service, method;
  std::chrono::steady_clock::time_point start;
};

// The obligation to answer one request. Copies share it: the first Reply or Fail on any copy
// answers, later ones are ignored, and if the last copy goes away unanswered the caller gets an
// error. Thread-safe.
class Responder {
 public:
  Responder() = default;  // answers nothing (one-way requests)
  Responder(std::shared_ptr<ReplySink> sink, uint32_t request_id, CallTiming timing = {})
      : state_(std::make_shared<State>(std::move(sink), request_id, timing)) {}

  // Answers with a serialized response message.
  void Reply(std::string body) { Send(std::move(body)); }
  // Answers with an application error; the caller sees a RemoteError with this message.
  // REQUIRES: !status.ok()
  void Fail(const Status& status) { Send(status); }
  bool answered() const { return !state_ || state_->answered.load(); }

 private:
  struct State {
    State(std::shared_ptr<ReplySink> s, uint32_t i, CallTiming t) : sink(std::move(s)), id(i), timing(t) {}
    ~State();
    std::shared_ptr<ReplySink> sink;
    uint32_t id;
    CallTiming timing;
    std::atomic<bool> answered{false};
  };
  void Send(Result<std::string> result);
  std::shared_ptr<State> state_;
};

template <typename Resp>
class TypedResponder {
 public:
  explicit TypedResponder(Responder r) : r_(std::move(r)) {}
  void Reply(const Resp& response) {
    std::string body;
    if (!response.SerializeToString(&body)) return r_.Fail(Internal("response failed to serialize"));
    r_.Reply(std::move(body));
  }
  void Fail(const Status& status) { r_.Fail(status); }
  // Answers with `result`'s value or its error.
  void Finish(const Result<Resp>& result) { result.ok() ? Reply(*result) : Fail(result.status()); }

 private:
  Responder r_;
};

// What a handler knows about its call.
struct CallContext {
  std::string_view service;
  std::string_view method;
  const HeaderMap& headers;        // every request header; valid during the handler call only
  const std::string& peer_address;  // "ip:port"
  // The connection the request came on, as a Channel for calls back to the peer. Holding it
  // keeps the connection object (not the socket) alive; calls fail once it has closed.
  std::shared_ptr<Channel> peer;
};

class ServiceRegistry {
 public:
  // `body` is valid during the call only.
  using RawHandler = std::function<void(const CallContext& ctx, std::string_view body, Responder responder)>;

  struct Method {
    RawHandler handler;
    std::string_view service, method;  // the registry's own keys
  };

  // REQUIRES: service/method not registered yet.
  void AddRawMethod(std::string service, std::string method, RawHandler handler);
  // REQUIRES: before the registry is handed to a Server or Client.
  void SetObserver(std::shared_ptr<CallObserver> observer) { observer_ = std::move(observer); }
  CallObserver* observer() const { return observer_.get(); }

  // handler(const CallContext&, Req&& request, TypedResponder<Resp> responder)
  template <typename Req, typename Resp, typename Handler>
  void AddMethod(std::string service, std::string method, Handler handler) {
    AddRawMethod(std::move(service), std::move(method),
                 [handler = std::move(handler)](const CallContext& ctx, std::string_view body, Responder r) {
                   Req request;
                   if (!request.ParseFromArray(body.data(), static_cast<int>(body.size()))) {
                     r.Fail(InvalidArgument("request body is not a valid " +
                                            std::string(Req::descriptor()->full_name())));
                     return;
                   }
                   handler(ctx, std::move(request), TypedResponder<Resp>(std::move(r)));
                 });
  }

  // handler(const CallContext&, const Req&) -> Result<Resp>, for answers known at once.
  template <typename Req, typename Resp, typename Handler>
  void AddSyncMethod(std::string service, std::string method, Handler handler) {
    AddMethod<Req, Resp>(std::move(service), std::move(method),
                         [handler = std::move(handler)](const CallContext& ctx, Req&& req, TypedResponder<Resp> r) {
                           r.Finish(handler(ctx, req));
                         });
  }

  // The handler for service/method, or a NotFound status with the message a SOFARPC
  // client expects ("not found service: <service>", "Can not find method: <service>#<method>()").
  Result<const RawHandler*> Find(std::string_view service, std::string_view method) const;
  // The same, with the names as the registry keeps them.
  Result<const Method*> Lookup(std::string_view service, std::string_view method) const;

 private:
  struct Hash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  using Methods = std::unordered_map<std::string, Method, Hash, std::equal_to<>>;
  std::unordered_map<std::string, Methods, Hash, std::equal_to<>> services_;
  std::shared_ptr<CallObserver> observer_;
};

}  // namespace dtx::rpc
