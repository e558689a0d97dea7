// Output buffers of the feature-row kernels (E x F gradients, N x F sums).
//
// Large outputs are written once, row by row, right after allocation, so their cost is mostly first-touch
// page faults: with 4 KiB pages, allocating and writing two 512 MB gradients took 0.38 s here against
// 0.05 s with 2 MiB transparent huge pages (E = 1e6, F = 128), more than the arithmetic of the kernel.
// We therefore ask Linux for huge pages on the (untouched) interior of large outputs, the same advice
// PyTorch gives under THP_MEM_ALLOC_ENABLE=1. It is only advice: the kernel may ignore it (THP
// disabled), and values are the same either way.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace pamnet_fast {
namespace cpu {

inline void advise_huge_pages(const at::Tensor& t) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHuge = uintptr_t(2) << 20;
  constexpr size_t kMinBytes = size_t(8) << 20;  // smaller buffers come from reused heap memory
  const size_t bytes = t.nbytes();
  if (!t.device().is_cpu() || bytes < kMinBytes) return;
  const uintptr_t start = reinterpret_cast<uintptr_t>(t.data_ptr());
  const uintptr_t begin = (start + kHuge - 1) & ~(kHuge - 1);
  const uintptr_t end = (start + bytes) & ~(kHuge - 1);
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
#else
  (void)t;
#endif
}

// at::empty / at::empty_like for an output the kernel fills completely.
inline at::Tensor empty_output(at::IntArrayRef sizes, const at::TensorOptions& options) {
  at::Tensor t = at::empty(sizes, options);
  advise_huge_pages(t);
  return t;
}

inline at::Tensor empty_output_like(const at::Tensor& like) {
  return empty_output(like.sizes(), like.options());
}

}  // namespace cpu
}  // namespace pamnet_fast
