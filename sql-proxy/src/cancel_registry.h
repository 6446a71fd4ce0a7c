// CancelRegistry: the keys this proxy handed to its clients (in place of the servers' own
// BackendKeyData), mapped to the server and key that a CancelRequest must reach.
//
// Thread-safety: all methods take one mutex; sessions of every worker share one registry.
#pragma once

#include <cstdint>
#include <mutex>
#include <optional>
#include <random>
#include <unordered_map>

#include "dtx/sql_proxy/pg_message.h"
#include "dtx/sql_proxy/proxy_server.h"

namespace dtx::sql_proxy {

class CancelRegistry {
 public:
  struct Target {
    BackendAddress server;
    BackendKey key;  // the server's own key
  };

  CancelRegistry() : rng_(std::random_device{}()) {}

  // A fresh key for a client, remembered with the server key it stands for.
  BackendKey Add(const Target& target) {
    std::lock_guard lock(mu_);
    BackendKey key;
    do {
      next_pid_ = next_pid_ >= 0x7ffffff0 ? 1 : next_pid_ + 1;
      key.pid = next_pid_;
    } while (entries_.count(key.pid) != 0);
    key.secret = static_cast<int32_t>(rng_());
    entries_[key.pid] = Entry{key.secret, target};
    return key;
  }

  void Remove(BackendKey key) {
    std::lock_guard lock(mu_);
    auto it = entries_.find(key.pid);
    if (it != entries_.end() && it->second.secret == key.secret) entries_.erase(it);
  }

  // The target of a CancelRequest; nullopt unless both pid and secret match.
  std::optional<Target> Find(BackendKey key) const {
    std::lock_guard lock(mu_);
    auto it = entries_.find(key.pid);
    if (it == entries_.end() || it->second.secret != key.secret) return std::nullopt;
    return it->second.target;
  }

 private:
  struct Entry {
    int32_t secret;
    Target target;
  };
  mutable std::mutex mu_;
  std::mt19937 rng_;
  int32_t next_pid_ = 0;
  std::unordered_map<int32_t, Entry> entries_;
};

}  // namespace dtx::sql_proxy
