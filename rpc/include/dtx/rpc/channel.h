// Channel: something that can call a SOFARPC service on a peer. A Client is a Channel over its
// pool of connections; the connection a request arrived on is a Channel to that peer, so a
// server can call services that a connected client serves (calls in both directions).
//
// Thread-safety: every method may be called from any thread. Callbacks run on the I/O thread
// of the connection that carried the call and must not block it.
#pragma once

#include <chrono>
#include <functional>
#include <future>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "dtx/common/status.h"

namespace dtx::rpc {

struct CallOptions {
  std::chrono::milliseconds timeout{3000};
  std::string target_app;
  // Extra request headers, e.g. a propagated transaction id.
  std::vector<std::pair<std::string, std::string>> headers;
};

class Channel {
 public:
  using RawCallback = std::function<void(Result<std::string> response_body)>;

  virtual ~Channel() = default;

  // Sends `body` (a serialized request message) to service/method and calls `done` exactly
  // once: with the serialized response, or with Timeout, Unavailable (no connection, or it
  // closed before the answer), or RemoteError (the peer answered with an error).
  virtual void CallRaw(std::string_view service, std::string_view method, std::string body,
                       const CallOptions& options, RawCallback done) = 0;

  // Sends `body` as a Bolt oneway request: the peer runs the method and sends no answer, so
  // nothing tells whether it arrived. For notices whose loss something else repairs. Channels
  // without oneway sends make a call and drop its answer.
  virtual void SendOneway(std::string_view service, std::string_view method, std::string body,
                          const CallOptions& options) {
    CallRaw(service, method, std::move(body), options, [](Result<std::string>) {});
  }
  template <typename Req>
  void Notify(std::string_view service, std::string_view method, const Req& request, const CallOptions& options) {
    std::string body;
    if (request.SerializeToString(&body)) SendOneway(service, method, std::move(body), options);
  }

  // Typed form for Protobuf messages. `done` receives Result<Resp>.
  template <typename Resp, typename Req, typename Done>
  void Call(std::string_view service, std::string_view method, const Req& request,
            const CallOptions& options, Done&& done) {
    std::string body;
    if (!request.SerializeToString(&body)) {
      done(Result<Resp>(Internal("request message failed to serialize")));
      return;
    }
    CallRaw(service, method, std::move(body), options,
            [done = std::forward<Done>(done)](Result<std::string> r) mutable {
              if (!r.ok()) return done(Result<Resp>(r.status()));
              Resp response;
              if (!response.ParseFromString(*r)) {
                return done(Result<Resp>(Corruption("response body is not a valid " +
                                                    std::string(Resp::descriptor()->full_name()))));
              }
              done(Result<Resp>(std::move(response)));
            });
  }

  // Blocking form. REQUIRES: not called on an rpc I/O thread (it would wait on itself).
  template <typename Resp, typename Req>
  Result<Resp> CallSync(std::string_view service, std::string_view method, const Req& request,
                        const CallOptions& options = {}) {
    std::promise<Result<Resp>> promise;
    auto future = promise.get_future();
    Call<Resp>(service, method, request, options,
               [&promise](Result<Resp> r) { promise.set_value(std::move(r)); });
    return future.get();
  }
};

}  // namespace dtx::rpc
