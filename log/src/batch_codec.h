// The byte form of a Batch, as the SQLite store keeps it in its journal.
//
// Format (docs/log-format.md): a version byte (1), then each operation as a kind byte and its
// fields in order; integers are 8-byte little-endian, strings a 4-byte little-endian length and
// the bytes, a list of strings a 4-byte count and the strings. Pure functions; thread-safe.
#pragma once

#include <string>
#include <string_view>

#include "dtx/common/status.h"
#include "dtx/log/batch.h"

namespace dtx::log {

std::string EncodeBatch(const Batch& batch);
// Corruption when `bytes` is not a whole batch of this format.
Result<Batch> DecodeBatch(std::string_view bytes);

}  // namespace dtx::log
