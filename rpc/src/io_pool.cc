#include "dtx/rpc/io_pool.h"

#include <pthread.h>

#include <string>

namespace dtx::rpc {

void RunPolling(boost::asio::io_context& io, std::chrono::microseconds poll) {
  if (poll <= std::chrono::microseconds::zero()) {
    io.run();
    return;
  }
  while (!io.stopped()) {
    const auto until = std::chrono::steady_clock::now() + poll;
    size_t ran = 0;
    do {
      ran = io.poll();
    } while (ran == 0 && !io.stopped() && std::chrono::steady_clock::now() < until);
    if (ran == 0 && !io.stopped()) io.run_one();
  }
}

IoPool::IoPool(unsigned threads, std::chrono::microseconds poll) {
  if (threads == 0) threads = std::max(1u, std::thread::hardware_concurrency());
  for (unsigned i = 0; i < threads; ++i) {
    owned_.push_back(std::make_unique<boost::asio::io_context>(1));
    contexts_.push_back(owned_.back().get());
    guards_.emplace_back(contexts_.back()->get_executor());
  }
  for (unsigned i = 0; i < threads; ++i) {
    threads_.emplace_back([ctx = contexts_[i], i, poll] {
      std::string name = "dtx-io-" + std::to_string(i);
      pthread_setname_np(pthread_self(), name.c_str());
      RunPolling(*ctx, poll);
    });
  }
}

IoPool::IoPool(std::vector<boost::asio::io_context*> contexts) : contexts_(std::move(contexts)) {}

IoPool::~IoPool() { Stop(); }

boost::asio::io_context& IoPool::Next() { return *contexts_[next_.fetch_add(1, std::memory_order_relaxed) % contexts_.size()]; }

void IoPool::Stop() {
  for (auto& g : guards_) g.reset();
  for (auto& c : owned_) c->stop();
  for (auto& t : threads_)
    if (t.joinable() && t.get_id() != std::this_thread::get_id()) t.join();
  for (auto& t : threads_)
    if (t.joinable()) t.detach();
  threads_.clear();
}

}  // namespace dtx::rpc
