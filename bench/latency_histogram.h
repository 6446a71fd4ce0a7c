// LatencyHistogram: counts of durations in nanoseconds in log-linear buckets, for benchmarks.
//
// A bucket keeps a value's top 7 significant bits (as HdrHistogram does with its sub-buckets),
// so a percentile read back, the midpoint of its bucket, is within 1/128 (0.8%) of the value
// recorded. 2304 buckets (18 KiB) cover 0 ns to 2^41 ns (36 min); larger values land in the last one.
// Record is a few instructions and never allocates.
//
// Thread-safety: none. Each thread records into its own histogram; merge them once the threads
// have stopped recording.
#pragma once

#include <algorithm>
#include <array>
#include <bit>
#include <cstdint>
#include <limits>

namespace dtx::bench {

class LatencyHistogram {
 public:
  void Record(uint64_t ns) {
    ++counts_[BucketOf(ns)];
    ++count_;
    sum_ += ns;
    min_ = std::min(min_, ns);
    max_ = std::max(max_, ns);
  }

  void Merge(const LatencyHistogram& other) {
    for (size_t i = 0; i < kBuckets; ++i) counts_[i] += other.counts_[i];
    count_ += other.count_;
    sum_ += other.sum_;
    min_ = std::min(min_, other.min_);
    max_ = std::max(max_, other.max_);
  }

  uint64_t count() const { return count_; }
  uint64_t min() const { return count_ ? min_ : 0; }
  uint64_t max() const { return max_; }
  double mean() const { return count_ ? static_cast<double>(sum_) / static_cast<double>(count_) : 0; }

  // The value below which a fraction q (0..1) of the recorded values lie; 0 when empty.
  uint64_t ValueAt(double q) const {
    if (count_ == 0) return 0;
    const auto rank = static_cast<uint64_t>(std::max(1.0, q * static_cast<double>(count_) + 0.5));
    uint64_t seen = 0;
    for (size_t i = 0; i < kBuckets; ++i) {
      seen += counts_[i];
      if (seen >= rank) return std::clamp(Midpoint(i), min(), max_);
    }
    return max_;
  }

 private:
  static constexpr unsigned kSubBits = 7;
  static constexpr uint64_t kSub = uint64_t{1} << kSubBits;  // values below this are exact
  static constexpr uint64_t kHalf = kSub / 2;                 // buckets per power of two above
  static constexpr unsigned kMaxBits = 40;
  static constexpr size_t kBuckets = kSub + (kMaxBits - kSubBits + 1) * kHalf;

  static size_t BucketOf(uint64_t v) {
    if (v < kSub) return static_cast<size_t>(v);
    const unsigned shift = static_cast<unsigned>(std::bit_width(v)) - kSubBits;  // >= 1
    const size_t i = kSub + (shift - 1) * kHalf + static_cast<size_t>((v >> shift) - kHalf);
    return std::min(i, kBuckets - 1);
  }

  static uint64_t Midpoint(size_t i) {
    if (i < kSub) return i;
    const size_t k = i - kSub;
    const unsigned shift = static_cast<unsigned>(k / kHalf) + 1;
    const uint64_t low = (kHalf + k % kHalf) << shift;
    return low + ((uint64_t{1} << shift) - 1) / 2;
  }

  std::array<uint64_t, kBuckets> counts_{};
  uint64_t count_ = 0;
  uint64_t sum_ = 0;
  uint64_t min_ = std::numeric_limits<uint64_t>::max();
  uint64_t max_ = 0;
};

}  // namespace dtx::bench
