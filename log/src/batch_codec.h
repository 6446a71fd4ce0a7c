// The byte form of a Batch, as the SQLite store keeps it in its journal.
//
// Format (docs/log-format.md): a version byte (1), then each operation as a kind byte and its
// fields in order; integers are 8-byte little-endian, strings a 4-byte little-endian length and
// the bytes, a list of strings a 4-byte count and the strings.
//
// A journal entry holds one batch in that form, or a group of batches that committed together:
// a version byte (2), then each batch as a 4-byte little-endian length and its version-1 form.
// Pure functions and a value type; thread-compatible.
#pragma once

#include <string>
#include <string_view>

#include "dtx/common/status.h"
#include "dtx/log/batch.h"

namespace dtx::log {

std::string EncodeBatch(const Batch& batch);
// Corruption when `bytes` is not a whole batch of this format.
Result<Batch> DecodeBatch(std::string_view bytes);

// Builds a group entry, encoding each batch in place.
class GroupEncoder {
 public:
  GroupEncoder();
  void Add(const Batch& batch);
  // Drops the batch Add added last.
  void DropLast();
  size_t count() const { return count_; }
  const std::string& bytes() const { return out_; }
  void Clear();

 private:
  std::string out_;
  size_t count_ = 0;
  size_t last_ = 0;  // where the last batch added begins
};

// The batches of a journal entry of either form; Corruption naming the batch that is damaged.
Result<std::vector<Batch>> DecodeEntry(std::string_view bytes);

}  // namespace dtx::log
