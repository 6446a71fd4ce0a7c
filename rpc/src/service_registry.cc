#include "dtx/rpc/service_registry.h"

#include <stdexcept>

namespace dtx::rpc {

Responder& Responder::operator=(Responder&& other) noexcept {
  if (this != &other) {
    if (sink_) Send(Internal("request dropped"));
    sink_ = std::move(other.sink_);
    id_ = other.id_;
    other.sink_ = nullptr;
  }
  return *this;
}

Responder::~Responder() {
  if (sink_) Send(Internal("the handler finished without an answer"));
}

void Responder::Send(Result<std::string> result) {
  if (!sink_) return;  // answered already, or a one-way request
  auto sink = std::move(sink_);
  sink_ = nullptr;
  sink->SendReply(id_, std::move(result));
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
