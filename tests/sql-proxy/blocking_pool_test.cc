// BlockingPool: tasks that block never hold up the ones behind them (the pool grows), idle
// threads go away, and the destructor runs what is queued.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "dtx/sql_proxy/at_services.h"

namespace dtx::sql_proxy {
namespace {

TEST(BlockingPool, BlockedTasksDoNotHoldUpOthers) {
  BlockingPool pool(2, 1000, std::chrono::milliseconds(200));
  std::mutex mu;
  std::condition_variable cv;
  bool release = false;
  std::atomic<int> started{0};
  // 300 tasks that each wait for the release: with a fixed pool smaller than that, the last
  // ones (and the one that releases them) would never start.
  for (int k = 0; k < 300; ++k) {
    pool.Post([&] {
      started.fetch_add(1);
      std::unique_lock lock(mu);
      cv.wait(lock, [&] { return release; });
    });
  }
  std::atomic<bool> ran{false};
  pool.Post([&] { ran = true; });
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while ((!ran || started < 300) && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_TRUE(ran);
  EXPECT_EQ(started.load(), 300);
  EXPECT_GE(pool.threads(), 300u);
  {
    std::lock_guard lock(mu);
    release = true;
  }
  cv.notify_all();
  // Idle threads exit, down to the minimum.
  while (pool.threads() > 2 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(pool.threads(), 2u);
}

TEST(BlockingPool, CapsItsThreadsAndQueuesTheRest) {
  std::atomic<int> done{0};
  {
    BlockingPool pool(0, 3);
    for (int k = 0; k < 50; ++k) {
      pool.Post([&] {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
        done.fetch_add(1);
      });
      EXPECT_LE(pool.threads(), 3u);
    }
  }  // the destructor runs what is queued
  EXPECT_EQ(done.load(), 50);
}

}  // namespace
}  // namespace dtx::sql_proxy
