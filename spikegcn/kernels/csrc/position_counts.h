// Per-thread spike counts per position for the compiled passes that count a layer's spikes by position
// (count_per_position in binary_codec.cpp, encode_join in codec_cpu.cpp, conv_exact), the spike tests they count
// with (is_spike, bit_count), and the size below which a pass stays on the calling thread.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

// Below this many elements a pass runs on the calling thread: waking the OpenMP team (futex wake-ups under
// OMP_WAIT_POLICY=PASSIVE) costs more than the work (a batch-1 CNN layer).
constexpr int64_t PARALLEL_MIN = 1 << 15;

// A fire phase is one spike (int8: 0 silent).
constexpr auto is_spike = [](int8_t v) { return (int32_t)(v != 0); };

// Bits set in v. The module is built for the baseline instruction set, where __builtin_popcount is a libgcc call
// per element; this form vectorises in the loops that count binary codes.
inline int32_t bit_count(uint64_t v) {
  v = v - ((v >> 1) & 0x5555555555555555ULL);
  v = (v & 0x3333333333333333ULL) + ((v >> 2) & 0x3333333333333333ULL);
  v = (v + (v >> 4)) & 0x0F0F0F0F0F0F0F0FULL;
  v += v >> 8;
  v += v >> 16;
  v += v >> 32;
  return (int32_t)(v & 0x7f);
}

// One thread's 32-bit counts of P positions, added into the int64 total (nullptr: counting off, every call a
// no-op). added(n) after the counts grew by at most n per position flushes them into the total every 2^20, far
// from the 32-bit limit (binary codes add up to 64 per element); merge() once at the end.
class PositionCounts {
 public:
  PositionCounts(int64_t* total, int64_t P) : total_(total), acc_(total != nullptr ? P : 0, 0) {}
  int32_t* data() { return total_ != nullptr ? acc_.data() : nullptr; }
  template <typename elem_t, typename Count>
  void add(const elem_t* x, int64_t p0, int64_t len, Count count) {  // positions p0 .. p0 + len - 1
    if (total_ == nullptr) return;
    int32_t* a = acc_.data() + p0;
#pragma omp simd
    for (int64_t k = 0; k < len; ++k) a[k] += count(x[k]);
  }
  void added(int64_t n) {
    if (total_ != nullptr && (grown_ += n) >= (int64_t(1) << 20)) merge();
  }
  void merge() {
    if (total_ == nullptr) return;
#pragma omp critical
    for (size_t p = 0; p < acc_.size(); ++p) total_[p] += acc_[p];
    std::fill(acc_.begin(), acc_.end(), 0);
    grown_ = 0;
  }

 private:
  int64_t* total_;
  std::vector<int32_t> acc_;
  int64_t grown_ = 0;
};
