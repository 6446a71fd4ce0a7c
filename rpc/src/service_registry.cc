#include "dtx/rpc/service_registry.h"

#include <stdexcept>

namespace dtx::rpc {

Responder::State::~State() {
  if (!answered.exchange(true)) sink->SendReply(id, Internal("the handler finished without an answer"));
}

void Responder::Send(Result<std::string> result) {
  if (!state_ || state_->answered.exchange(true)) return;  // one-way, or answered already
  state_->sink->SendReply(state_->id, std::move(result));
}

void ServiceRegistry::AddRawMethod(std::string service, std::string method, RawHandler handler) {
  auto& methods = services_[std::move(service)];
  auto [it, inserted] = methods.emplace(std::move(method), std::move(handler));
  if (!inserted) throw std::logic_error("method registered twice: " + it->first);
}

Result<const ServiceRegistry::RawHandler*> ServiceRegistry::Find(std::string_view service,
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
