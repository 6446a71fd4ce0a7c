// Participants: the registered resource managers and the connections phase 2 goes over.
// Thread-safe.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "dtx/rpc/channel.h"

namespace dtx::coordinator {

class Participants {
 public:
  struct Info {
    std::string client_id;
    std::string application;
    std::vector<std::string> resource_ids;
  };

  void Register(const std::shared_ptr<rpc::Channel>& peer, Info info);
  // Forgets a closed connection; returns whether it was registered.
  bool Remove(const rpc::Channel* peer);
  // The registration of this connection, if any.
  std::shared_ptr<const Info> Of(const rpc::Channel* peer) const;
  // A connection serving `resource_id`, preferring the participant `client_id`.
  std::shared_ptr<rpc::Channel> Pick(const std::string& resource_id, const std::string& client_id) const;
  size_t size() const;

 private:
  struct Entry {
    std::weak_ptr<rpc::Channel> peer;
    std::shared_ptr<const Info> info;
  };
  mutable std::mutex mu_;
  std::map<const rpc::Channel*, Entry> by_peer_;
  std::map<std::string, std::vector<const rpc::Channel*>> by_resource_;
};

}  // namespace dtx::coordinator
