// Branch-free float exp/sin/cos that GCC auto-vectorizes (glibc's expf/sinf only vectorize under
// -ffast-math, which would break the exactness of everything else). Accuracy: a few ulp over the
// ranges used (|x| < 88 for exp, |x| < 1e4 for sin/cos), far below the tolerance of float32 training.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

// One build runs well on any x86-64: GCC compiles the marked functions once per ISA and picks the
// best at load time.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define PAMNET_FAST_VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define PAMNET_FAST_VECTOR_CLONES
#endif

namespace pamnet_fast {
namespace cpu {

// Calls the float or the double version of a kernel (the cloned functions above cannot be templates).
template <typename scalar_t, typename FloatFn, typename DoubleFn, typename... Args>
inline void call_for(FloatFn float_fn, DoubleFn double_fn, Args... args) {
  if constexpr (std::is_same_v<scalar_t, float>) {
    float_fn(args...);
  } else {
    double_fn(args...);
  }
}

// Round to the nearest integer (|x| < 2^22) by adding and removing 1.5 * 2^23: plain float arithmetic
// that vectorizes, where std::floor becomes a library call without -fno-trapping-math.
inline float round_nearest(float x) {
  const float magic = 12582912.0f;
  return (x + magic) - magic;
}

inline float bits_to_float(int32_t i) {
  float f;
  std::memcpy(&f, &i, sizeof(f));
  return f;
}

// exp(x) for float: x = n ln2 + r, |r| <= ln2 / 2, exp(r) by a degree-6 polynomial, 2^n from bits.
inline float exp_approx(float x) {
  x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
  const float fn = round_nearest(x * 1.44269504088896341f);
  const float r = (x - fn * 0.693359375f) - fn * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  return p * bits_to_float((static_cast<int32_t>(fn) + 127) << 23);
}

inline double exp_approx(double x) { return std::exp(x); }

// sin(x) for float: x = k pi/2 + r (Cody-Waite in three parts), then the sin or cos polynomial of r.
inline float sin_approx(float x) {
  const float fk = round_nearest(x * 0.636619772367581343f);
  const float r = ((x - fk * 1.5703125f) - fk * 4.83751296997070312e-4f) - fk * 7.54978995489188216e-8f;
  const float r2 = r * r;
  const float s = r + r * r2 * (-1.6666654611e-1f + r2 * (8.3321608736e-3f + r2 * -1.9515295891e-4f));
  const float c = 1.0f - 0.5f * r2 + r2 * r2 * (4.166664568298827e-2f + r2 * (-1.388731625493765e-3f +
                                                  r2 * 2.443315711809948e-5f));
  const int32_t k = static_cast<int32_t>(fk);
  const float v = (k & 1) ? c : s;
  return (k & 2) ? -v : v;
}

inline float cos_approx(float x) { return sin_approx(x + 1.57079632679489662f); }

inline double sin_approx(double x) { return std::sin(x); }
inline double cos_approx(double x) { return std::cos(x); }

template <typename scalar_t>
inline scalar_t sigmoid(scalar_t x) {
  return scalar_t(1) / (scalar_t(1) + exp_approx(-x));
}

}  // namespace cpu
}  // namespace pamnet_fast
