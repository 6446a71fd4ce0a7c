#include "dtx/log/log_store.h"

#include <future>

namespace dtx::log {

WriteResult LogStore::WriteSync(Batch batch) {
  std::promise<WriteResult> promise;
  auto future = promise.get_future();
  Write(std::move(batch), [&promise](const WriteResult& r) { promise.set_value(r); });
  return future.get();
}

}  // namespace dtx::log
