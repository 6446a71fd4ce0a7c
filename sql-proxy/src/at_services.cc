#include "dtx/sql_proxy/at_services.h"

#include <spdlog/spdlog.h>

#include <thread>

namespace dtx::sql_proxy {

BlockingPool::BlockingPool(unsigned min_threads, unsigned max_threads, std::chrono::milliseconds idle)
    : min_threads_(min_threads), max_threads_(std::max(1u, std::max(min_threads, max_threads))), idle_(idle) {}

BlockingPool::~BlockingPool() {
  std::unique_lock lock(mu_);
  stop_ = true;
  cv_.notify_all();
  exited_.wait(lock, [this] { return alive_ == 0; });
}

unsigned BlockingPool::threads() const {
  std::lock_guard lock(mu_);
  return alive_;
}

void BlockingPool::Post(std::function<void()> task) {
  std::lock_guard lock(mu_);
  tasks_.push_back(std::move(task));
  if (waiting_ >= tasks_.size()) {
    cv_.notify_one();
    return;
  }
  if (alive_ >= max_threads_) {
    cv_.notify_one();  // queued behind the busy ones
    return;
  }
  ++alive_;
  try {
    std::thread([this] { Work(); }).detach();
  } catch (const std::system_error& ex) {
    --alive_;  // the queued task runs on a thread that frees up
    spdlog::warn("blocking pool: cannot start a thread ({}); {} running", ex.what(), alive_);
  }
}

void BlockingPool::Work() {
  std::unique_lock lock(mu_);
  while (true) {
    if (tasks_.empty()) {
      if (stop_) break;
      ++waiting_;
      const bool woken = cv_.wait_for(lock, idle_, [this] { return stop_ || !tasks_.empty(); });
      --waiting_;
      if (!woken && alive_ > min_threads_) break;
      continue;
    }
    auto task = std::move(tasks_.front());
    tasks_.pop_front();
    lock.unlock();
    task();
    task = nullptr;
    lock.lock();
  }
  --alive_;
  exited_.notify_all();
}

}  // namespace dtx::sql_proxy
