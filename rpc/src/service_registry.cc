#include "dtx/rpc/service_registry.h"

#include <stdexcept>

namespace dtx::rpc {

Responder::State::~State() {
  if (!answered.exchange(true)) sink->SendReply(id, Internal("the handler finished without an answer"));
}

void Responder::Send(Result<std::string> result) {
  if (!state_ || state_->answered.exchange(true)) return;  // one-way, or answered already
  if (const CallTiming& t = state_->timing; t.observer)
    t.observer->Answered(t.service, t.method, std::chrono::steady_clock::now() - t.start);
  state_->sink->SendReply(state_->id, std::move(result));
}

void ServiceRegistry::AddRawMethod(std::string service, std::string method, RawHandler handler) {
  auto s = services_.try_emplace(std::move(service)).first;
  auto [it, inserted] = s->second.try_emplace(std::move(method));
  if (!inserted) throw std::logic_error("method registered twice: " + it->first);
  it->second = Method{std::move(handler), s->first, it->first};  // map nodes do not move
}

Result<const ServiceRegistry::RawHandler*> ServiceRegistry::Find(std::string_view service,
                                                                 std::string_view method) const {
  auto m = Lookup(service, method);
  if (!m.ok()) return m.status();
  return &(*m)->handler;
}

Result<const ServiceRegistry::Method*> ServiceRegistry::Lookup(std::string_view service,
                                                              std::string_view method) const {
  auto s = services_.find(service);
  if (s == services_.end()) return NotFound("not found service: " + std::string(service));
  auto m = s->second.find(method);
  if (m == s->second.end()) {
    // The wording SOFARPC servers use.
    return NotFound("Can not find method: " + std::string(service) + "#" + std::string(method) + "()");
  }
  return &m->second;
}

}  // namespace dtx::rpc
