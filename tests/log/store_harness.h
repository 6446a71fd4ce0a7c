// Store harnesses for the LogStore contract tests: each opens a store of one kind over the same
// durable state every time (the memory harness starts empty each time).
#pragma once

#include <memory>
#include <string>

#include "dtx/log/log_store.h"

namespace dtx::log::testing {

class StoreHarness {
 public:
  virtual ~StoreHarness() = default;
  // Opens the store; a second Open after closing the first sees what the first acknowledged
  // (for durable stores). Fails the calling test on error.
  virtual std::unique_ptr<LogStore> Open() = 0;
  virtual bool durable() const = 0;
  virtual std::string name() const = 0;
};

std::unique_ptr<StoreHarness> MakeMemoryHarness();
std::unique_ptr<StoreHarness> MakeSqliteHarness();
// Uses the PostgreSQL server named by the DTX_TEST_PG_URI environment variable (scripts/test.sh
// starts one), in a fresh schema per harness. Returns null when the variable is not set.
std::unique_ptr<StoreHarness> MakePostgresHarness();

}  // namespace dtx::log::testing
