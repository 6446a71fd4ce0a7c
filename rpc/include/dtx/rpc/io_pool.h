// IoPool: N io_contexts, each run by one thread. A connection is pinned to one context, so
// its state needs no lock; work from other threads is posted to it.
//
// A pool may also borrow io_contexts that an application runs on threads of its own (IoPool(
// contexts)): clients built on it then live on those threads, so that an application calling
// them from there hands nothing to another thread. The owner keeps running the contexts until
// every client on the pool is shut down, and Stop() leaves them alone.
#pragma once

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>

#include <atomic>
#include <chrono>
#include <memory>
#include <thread>
#include <vector>

namespace dtx::rpc {

// Runs `io` until it is stopped. With `poll` above zero, a thread out of ready work keeps polling
// for that long before it sleeps: on a core of its own, the next message of a busy peer is then
// picked up without a wake-up, which on a loaded host costs more than handling the message.
void RunPolling(boost::asio::io_context& io, std::chrono::microseconds poll);

class IoPool {
 public:
  // `poll`: see RunPolling (0: the threads sleep as soon as nothing is ready).
  explicit IoPool(unsigned threads, std::chrono::microseconds poll = {});
  // Borrows running io_contexts (not owned; they must outlive the pool and whatever uses it).
  explicit IoPool(std::vector<boost::asio::io_context*> contexts);
  ~IoPool();  // Stop()
  IoPool(const IoPool&) = delete;
  IoPool& operator=(const IoPool&) = delete;

  // The next context, round robin.
  boost::asio::io_context& Next();
  boost::asio::io_context& At(size_t i) { return *contexts_[i]; }
  size_t size() const { return contexts_.size(); }
  // Lets the contexts run out of work and joins the threads; pending handlers are dropped.
  // Borrowed contexts are left running.
  void Stop();

 private:
  using Guard = boost::asio::executor_work_guard<boost::asio::io_context::executor_type>;
  std::vector<std::unique_ptr<boost::asio::io_context>> owned_;
  std::vector<boost::asio::io_context*> contexts_;  // owned_ or borrowed
  std::vector<Guard> guards_;
  std::vector<std::thread> threads_;
  std::atomic<size_t> next_{0};
};

}  // namespace dtx::rpc
