#include "participants.h"

#include <algorithm>

namespace dtx::coordinator {

void Participants::Register(const std::shared_ptr<rpc::Channel>& peer, Info info) {
  std::lock_guard lock(mu_);
  const rpc::Channel* key = peer.get();
  if (auto old = by_peer_.find(key); old != by_peer_.end()) {
    for (const auto& r : old->second.info->resource_ids) std::erase(by_resource_[r], key);
  }
  auto shared = std::make_shared<const Info>(std::move(info));
  for (const auto& r : shared->resource_ids) by_resource_[r].push_back(key);
  by_peer_[key] = Entry{peer, std::move(shared)};
}

bool Participants::Remove(const rpc::Channel* peer) {
  std::lock_guard lock(mu_);
  auto it = by_peer_.find(peer);
  if (it == by_peer_.end()) return false;
  for (const auto& r : it->second.info->resource_ids) std::erase(by_resource_[r], peer);
  by_peer_.erase(it);
  return true;
}

std::shared_ptr<const Participants::Info> Participants::Of(const rpc::Channel* peer) const {
  std::lock_guard lock(mu_);
  auto it = by_peer_.find(peer);
  return it == by_peer_.end() ? nullptr : it->second.info;
}

std::shared_ptr<rpc::Channel> Participants::Pick(const std::string& resource_id, const std::string& client_id) const {
  std::lock_guard lock(mu_);
  auto r = by_resource_.find(resource_id);
  if (r == by_resource_.end()) return nullptr;
  std::shared_ptr<rpc::Channel> any;
  for (const rpc::Channel* key : r->second) {
    const Entry& e = by_peer_.at(key);
    auto peer = e.peer.lock();
    if (!peer) continue;
    if (e.info->client_id == client_id) return peer;
    if (!any) any = peer;
  }
  return any;
}

size_t Participants::size() const {
  std::lock_guard lock(mu_);
  return by_peer_.size();
}

}  // namespace dtx::coordinator
