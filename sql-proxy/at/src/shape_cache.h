// The bounded LRU of statement shapes behind Analyze (see dtx/at/statement_shape.h).
//
// Thread-safety: every member is mutex-guarded; the shapes it hands out are immutable and shared.
#pragma once

#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

#include "dtx/at/statement_shape.h"

namespace dtx::at {

class ShapeCache {
 public:
  static ShapeCache& Global();
  ShapeCache();

  struct Lookup {
    bool found = false;
    std::shared_ptr<const StatementShape> shape;  // null when found: the key is kept for exact texts only
  };
  Lookup Find(std::string_view key);
  // A null shape marks a shape key whose statements must be analysed by their exact text.
  void Insert(std::string key, std::shared_ptr<const StatementShape> shape);
  void Clear();
  void SetLimits(size_t max_entries, size_t max_bytes);
  ShapeCacheStats Stats();

 private:
  struct Entry {
    std::string key;
    std::shared_ptr<const StatementShape> shape;
    size_t bytes = 0;
  };
  void EvictLocked();

  std::mutex mu_;
  std::list<Entry> lru_;  // most recent first
  std::unordered_map<std::string_view, std::list<Entry>::iterator> index_;  // views of Entry::key
  size_t max_entries_ = 4096;
  size_t max_bytes_ = 16u << 20;
  size_t bytes_ = 0;
  uint64_t hits_ = 0, misses_ = 0;
};

}  // namespace dtx::at
