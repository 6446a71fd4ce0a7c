// WorkerPool: a fixed set of threads that run posted tasks in order of arrival. The SDK runs
// business callbacks (TCC Try/Confirm/Cancel from phase 2) here so that rpc I/O threads never
// block on a database.
//
// Thread-safety: Post from any thread. The destructor (or Stop) runs the tasks already posted,
// then joins the threads; tasks posted after Stop are dropped.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace dtx::sdk {

class WorkerPool {
 public:
  explicit WorkerPool(unsigned threads);
  ~WorkerPool();
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  // False when the pool is stopped (the task is dropped).
  bool Post(std::function<void()> task);
  void Stop();
  size_t size() const { return threads_.size(); }

 private:
  void Run();

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> tasks_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace dtx::sdk
