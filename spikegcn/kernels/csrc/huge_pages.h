// Large kernel outputs on transparent huge pages. torch's CPU allocator maps a fresh region for every large tensor,
// and the kernel that writes it then faults it in 4 KiB page by page: a 100 MB decode of a large graph's chunk
// sources is 25,600 page faults, a fifth of the chunk's time. Advising the new tensor's 2 MiB-aligned interior
// (MADV_HUGEPAGE) before its first write makes that about 50 faults where the kernel's THP mode is "madvise"; with
// THP off or "always" the hint changes nothing. Only the tensor's own pages are advised, and a refused hint is
// harmless.
#pragma once

#include <torch/extension.h>

#include <cstdint>
#include <cstdlib>
#include <string>
#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace {

// Advise the 2 MiB-aligned interior of [p, p + n) for huge pages (regions under 8 MiB are left alone).
// SPIKEGCN_HUGE_PAGES=0 turns the hint off (a fragmented machine may stall in the kernel's compaction for them).
inline void advise_huge(void* p, size_t n) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  static const bool on = [] {
    const char* e = std::getenv("SPIKEGCN_HUGE_PAGES");
    return e == nullptr || std::string(e) != "0";
  }();
  if (!on) return;
  constexpr uintptr_t HUGE_PAGE = uintptr_t(1) << 21;
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  const uintptr_t lo = (a + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1), hi = (a + n) & ~(HUGE_PAGE - 1);
  if (n >= 4 * HUGE_PAGE && hi > lo) madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_HUGEPAGE);
#else
  (void)p;
  (void)n;
#endif
}

// torch::empty (CPU), its pages advised before anything writes them.
inline torch::Tensor empty_huge(at::IntArrayRef sizes, at::ScalarType dtype) {
  auto t = torch::empty(sizes, dtype);
  advise_huge(t.data_ptr(), t.nbytes());
  return t;
}

}  // namespace
