// Radial Bessel and 2D spherical Fourier-Bessel bases of DimeNet with the polynomial envelope,
// forward and backward fused: one pass over the edges (triplets) each, no intermediates.
//   envelope  u_p(x) = 1 + a x^p + b x^(p+1) + c x^(p+2) for x < 1, else 0
//   bessel    out[e, n]     = u_p(x) sin(f_n x) / x,                      x = d / cutoff
//   spherical out[t, l*N+n] = u_p(x) norm_ln j_l(z_ln x) Y_l^0(angle)
#include <ATen/Parallel.h>

#include <cmath>
#include <vector>

#include "cpu/kernels.h"
#include "cpu/vec_math.h"

namespace pamnet_fast {
namespace cpu {

namespace {

constexpr int64_t kBlock = 1024;  // edges per partial sum of the frequency gradient (thread-count free)

template <typename T>
struct Envelope {
  T a, b, c;
  int64_t p;
  explicit Envelope(int64_t p_) : p(p_) {
    a = T(-(p + 1) * (p + 2) / 2.0);
    b = T(p * (p + 2));
    c = T(-p * (p + 1) / 2.0);
  }
  T pow_p(T x) const {
    T r = T(1);
    for (int64_t k = 0; k < p; ++k) r *= x;
    return r;
  }
  T value(T x) const {
    const T xp = pow_p(x);
    return T(1) + a * xp + b * xp * x + c * xp * x * x;
  }
  T derivative(T x) const {  // d u / d x, p >= 1
    T xm1 = T(1);  // x^(p-1)
    for (int64_t k = 1; k < p; ++k) xm1 *= x;
    return a * T(p) * xm1 + b * T(p + 1) * xm1 * x + c * T(p + 2) * xm1 * x * x;
  }
};

template <typename scalar_t>
__attribute__((always_inline)) inline void bessel_rows(scalar_t* __restrict out,
                                                       const scalar_t* __restrict dist,
                                                       const scalar_t* __restrict freq, scalar_t inv_c,
                                                       const Envelope<scalar_t>& env, int64_t begin,
                                                       int64_t end, int64_t N) {
  for (int64_t e = begin; e < end; ++e) {
    scalar_t* o = out + e * N;
    const scalar_t x = dist[e] * inv_c;
    if (!(x < scalar_t(1))) {
      for (int64_t n = 0; n < N; ++n) o[n] = scalar_t(0);
    } else if (x == scalar_t(0)) {
      for (int64_t n = 0; n < N; ++n) o[n] = freq[n];  // the limit of sin(f x) / x, u(0) = 1
    } else {
      const scalar_t u = env.value(x);
      for (int64_t n = 0; n < N; ++n) o[n] = u * (sin_approx(freq[n] * x) / x);
    }
  }
}

PAMNET_FAST_VECTOR_CLONES void bessel_rows_f(float* out, const float* dist, const float* freq,
                                             float inv_c, const Envelope<float>& env, int64_t b,
                                             int64_t e, int64_t N) {
  bessel_rows(out, dist, freq, inv_c, env, b, e, N);
}
void run_bessel(float* out, const float* dist, const float* freq, float inv_c,
                const Envelope<float>& env, int64_t b, int64_t e, int64_t N) {
  bessel_rows_f(out, dist, freq, inv_c, env, b, e, N);
}
void run_bessel(double* out, const double* dist, const double* freq, double inv_c,
                const Envelope<double>& env, int64_t b, int64_t e, int64_t N) {
  bessel_rows(out, dist, freq, inv_c, env, b, e, N);
}

// d/dx [sin(f x) / x] = (f x cos(f x) - sin(f x)) / x^2, by its series where that cancels.
template <typename T>
inline T sinc_derivative(T f, T x) {
  const T fx = f * x;
  if (std::abs(fx) < T(1e-2)) return f * f * fx * (T(-1) / T(3) + fx * fx / T(30));
  return (fx * std::cos(fx) - std::sin(fx)) / (x * x);
}

// Spherical Bessel j_l(z) and its derivative, z >= 0: power series below max(l, 1) + 1/2 (where the
// upward recurrence loses digits), the recurrence above. Mirrors reference.spherical_jn.
void spherical_jn(int64_t l, double z, double* j, double* dj) {
  if (z < std::max<int64_t>(l, 1) + 0.5) {
    double dfact = 1.0;
    for (int64_t k = 1; k <= 2 * l + 1; k += 2) dfact *= double(k);
    double term = 1.0, sum = 1.0, dsum = double(l);  // sum of a_k z^(2k); of a_k (l + 2k) z^(2k)
    for (int64_t k = 1; k < 30; ++k) {
      term *= -z * z / 2.0 / (double(k) * double(2 * l + 2 * k + 1));
      sum += term;
      dsum += term * double(l + 2 * k);
    }
    const double zl = std::pow(z, double(l));
    *j = zl * sum / dfact;
    // d/dz z^(l+2k) = (l+2k) z^(l+2k-1); for l = 0 the k = 0 term vanishes, so no division by z.
    *dj = l == 0 ? (z == 0.0 ? 0.0 : dsum / z * zl / dfact)
                 : std::pow(z, double(l - 1)) * dsum / dfact;
    return;
  }
  const double s = std::sin(z), c = std::cos(z);
  double jm = s / z;                 // j_0
  double jc = s / (z * z) - c / z;   // j_1
  if (l == 0) {
    *j = jm;
    *dj = -jc;
    return;
  }
  for (int64_t k = 1; k < l; ++k) {
    const double jn = double(2 * k + 1) / z * jc - jm;
    jm = jc;
    jc = jn;
  }
  *j = jc;
  *dj = jm - double(l + 1) / z * jc;
}

constexpr int64_t kSeriesTerms = 30;  // as spherical_jn

struct SphericalTables {
  int64_t L, N;
  std::vector<double> zeros, norm, ylm;  // [L*N], [L*N], [L]
  // Power series of j_l(z) / z^l in w = z^2: c[l][k] = (-1/2)^k / (k! (2l+1)!! (2l+3)...(2l+2k+1)),
  // used for z < max(l, 1) + 1/2; terms[l]: the terms whose size there exceeds 1e-18 of the first.
  std::vector<double> series;  // [L * kSeriesTerms]
  std::vector<int64_t> terms;  // [L]
  explicit SphericalTables(const at::Tensor& zeros_t) : L(zeros_t.size(0)), N(zeros_t.size(1)) {
    auto z = zeros_t.to(at::kDouble).cpu().contiguous();
    const double* zp = z.data_ptr<double>();
    zeros.assign(zp, zp + L * N);
    norm.resize(L * N);
    ylm.resize(L);
    series.resize(L * kSeriesTerms);
    terms.assign(L, kSeriesTerms);
    for (int64_t l = 0; l < L; ++l) {
      double dfact = 1.0;
      for (int64_t k = 1; k <= 2 * l + 1; k += 2) dfact *= double(k);
      double c = 1.0 / dfact;
      const double lim = double(std::max<int64_t>(l, 1)) + 0.5;
      double size = 1.0;  // |term k| / |term 0| at z = lim
      for (int64_t k = 0; k < kSeriesTerms; ++k) {
        series[l * kSeriesTerms + k] = c;
        if (size < 1e-18 && terms[l] == kSeriesTerms) terms[l] = k;
        c *= -0.5 / (double(k + 1) * double(2 * l + 2 * k + 3));
        size *= 0.5 * lim * lim / (double(k + 1) * double(2 * l + 2 * k + 3));
      }
      ylm[l] = std::sqrt(double(2 * l + 1) / (4.0 * M_PI));
      for (int64_t n = 0; n < N; ++n) {
        double j, dj;
        spherical_jn(l + 1, zeros[l * N + n], &j, &dj);
        norm[l * N + n] = std::sqrt(2.0) / std::abs(j);
      }
    }
  }
};

// j_l(z) alone (the forward pass): the series (its first `terms` terms) by Horner's rule below
// max(l, 1) + 1/2, else the upward recurrence from one sincos, as spherical_jn.
inline double spherical_jn_value(int64_t l, double z, const double* coef, int64_t terms) {
  if (z < double(std::max<int64_t>(l, 1)) + 0.5) {
    const double w = z * z;
    double sum = coef[terms - 1];
    for (int64_t k = terms - 2; k >= 0; --k) sum = sum * w + coef[k];
    double zl = 1.0;
    for (int64_t k = 0; k < l; ++k) zl *= z;
    return zl * sum;
  }
  double s, c;
  sincos(z, &s, &c);
  const double inv_z = 1.0 / z;
  double jm = s * inv_z;
  if (l == 0) return jm;
  double jc = (s * inv_z - c) * inv_z;
  for (int64_t k = 1; k < l; ++k) {
    const double jn = double(2 * k + 1) * inv_z * jc - jm;
    jm = jc;
    jc = jn;
  }
  return jc;
}

// P_l(x) and P_l'(x) for l < L (Bonnet's recurrence; P'_{l+1} = P'_{l-1} + (2l+1) P_l).
void legendre(int64_t L, double x, double* P, double* dP) {
  P[0] = 1.0;
  dP[0] = 0.0;
  if (L > 1) {
    P[1] = x;
    dP[1] = 1.0;
  }
  for (int64_t l = 1; l + 1 < L; ++l) {
    P[l + 1] = (double(2 * l + 1) * x * P[l] - double(l) * P[l - 1]) / double(l + 1);
    dP[l + 1] = dP[l - 1] + double(2 * l + 1) * P[l];
  }
}

}  // namespace

at::Tensor bessel_basis_kernel(const at::Tensor& dist, const at::Tensor& freq, double cutoff,
                               int64_t envelope_exponent) {
  const int64_t E = dist.numel(), N = freq.numel();
  auto out = at::empty({E, N}, dist.options());
  AT_DISPATCH_FLOATING_TYPES(dist.scalar_type(), "bessel_basis", [&] {
    const Envelope<scalar_t> env(envelope_exponent);
    const scalar_t inv_c = scalar_t(1.0 / cutoff);
    at::parallel_for(0, E, 2048, [&](int64_t begin, int64_t end) {
      run_bessel(out.data_ptr<scalar_t>(), dist.data_ptr<scalar_t>(), freq.data_ptr<scalar_t>(),
                 inv_c, env, begin, end, N);
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> bessel_basis_backward_kernel(const at::Tensor& grad_out,
                                                                const at::Tensor& dist,
                                                                const at::Tensor& freq, double cutoff,
                                                                int64_t envelope_exponent,
                                                                bool need_dist, bool need_freq) {
  const int64_t E = dist.numel(), N = freq.numel();
  at::Tensor grad_dist = need_dist ? at::empty_like(dist) : at::empty({0}, dist.options());
  at::Tensor grad_freq = need_freq ? at::zeros_like(freq) : at::empty({0}, freq.options());
  const int64_t num_blocks = (E + kBlock - 1) / kBlock;
  AT_DISPATCH_FLOATING_TYPES(dist.scalar_type(), "bessel_basis_backward", [&] {
    const Envelope<scalar_t> env(envelope_exponent);
    const scalar_t inv_c = scalar_t(1.0 / cutoff);
    const scalar_t* go = grad_out.data_ptr<scalar_t>();
    const scalar_t* d = dist.data_ptr<scalar_t>();
    const scalar_t* f = freq.data_ptr<scalar_t>();
    scalar_t* gd = need_dist ? grad_dist.data_ptr<scalar_t>() : nullptr;
    std::vector<scalar_t> partial(need_freq ? num_blocks * N : 0, scalar_t(0));
    at::parallel_for(0, num_blocks, 1, [&](int64_t block_begin, int64_t block_end) {
      for (int64_t blk = block_begin; blk < block_end; ++blk) {
        scalar_t* part = need_freq ? partial.data() + blk * N : nullptr;
        for (int64_t e = blk * kBlock; e < std::min(E, (blk + 1) * kBlock); ++e) {
          const scalar_t x = d[e] * inv_c;
          const scalar_t* g = go + e * N;
          if (!(x < scalar_t(1))) {
            if (gd) gd[e] = scalar_t(0);
            continue;
          }
          const scalar_t u = env.value(x), du = env.derivative(x);
          scalar_t acc = scalar_t(0);
          for (int64_t n = 0; n < N; ++n) {
            const scalar_t fx = f[n] * x;
            if (part) part[n] += g[n] * u * std::cos(fx);
            if (gd) {
              const scalar_t sinc = x == scalar_t(0) ? f[n] : std::sin(fx) / x;
              acc += g[n] * (du * sinc + u * sinc_derivative(f[n], x));
            }
          }
          if (gd) gd[e] = acc * inv_c;
        }
      }
    });
    if (need_freq) {
      scalar_t* gf = grad_freq.data_ptr<scalar_t>();
      for (int64_t blk = 0; blk < num_blocks; ++blk)
        for (int64_t n = 0; n < N; ++n) gf[n] += partial[blk * N + n];
    }
  });
  return {grad_dist, grad_freq};
}

at::Tensor spherical_basis_kernel(const at::Tensor& dist, const at::Tensor& angle,
                                  const at::Tensor& zeros, double cutoff, int64_t envelope_exponent) {
  const SphericalTables tab(zeros);
  const int64_t T = dist.numel(), L = tab.L, N = tab.N;
  auto out = at::empty({T, L * N}, dist.options());
  AT_DISPATCH_FLOATING_TYPES(dist.scalar_type(), "spherical_basis", [&] {
    const Envelope<double> env(envelope_exponent);
    const scalar_t* d = dist.data_ptr<scalar_t>();
    const scalar_t* a = angle.data_ptr<scalar_t>();
    scalar_t* o = out.data_ptr<scalar_t>();
    at::parallel_for(0, T, 256, [&](int64_t begin, int64_t end) {
      std::vector<double> P(L), dP(L);
      for (int64_t t = begin; t < end; ++t) {
        const double x = double(d[t]) / cutoff;
        scalar_t* row = o + t * L * N;
        if (!(x < 1.0)) {
          for (int64_t k = 0; k < L * N; ++k) row[k] = scalar_t(0);
          continue;
        }
        const double u = env.value(x);
        legendre(L, std::cos(double(a[t])), P.data(), dP.data());
        for (int64_t l = 0; l < L; ++l) {
          const double* coef = tab.series.data() + l * kSeriesTerms;
          for (int64_t n = 0; n < N; ++n) {
            const double j = spherical_jn_value(l, tab.zeros[l * N + n] * x, coef, tab.terms[l]);
            row[l * N + n] = scalar_t(u * tab.norm[l * N + n] * j * tab.ylm[l] * P[l]);
          }
        }
      }
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> spherical_basis_backward_kernel(
    const at::Tensor& grad_out, const at::Tensor& dist, const at::Tensor& angle,
    const at::Tensor& zeros, double cutoff, int64_t envelope_exponent, bool need_dist,
    bool need_angle) {
  const SphericalTables tab(zeros);
  const int64_t T = dist.numel(), L = tab.L, N = tab.N;
  at::Tensor grad_dist = need_dist ? at::empty_like(dist) : at::empty({0}, dist.options());
  at::Tensor grad_angle = need_angle ? at::empty_like(angle) : at::empty({0}, angle.options());
  AT_DISPATCH_FLOATING_TYPES(dist.scalar_type(), "spherical_basis_backward", [&] {
    const Envelope<double> env(envelope_exponent);
    const scalar_t* go = grad_out.data_ptr<scalar_t>();
    const scalar_t* d = dist.data_ptr<scalar_t>();
    const scalar_t* a = angle.data_ptr<scalar_t>();
    scalar_t* gd = need_dist ? grad_dist.data_ptr<scalar_t>() : nullptr;
    scalar_t* ga = need_angle ? grad_angle.data_ptr<scalar_t>() : nullptr;
    at::parallel_for(0, T, 256, [&](int64_t begin, int64_t end) {
      std::vector<double> P(L), dP(L);
      for (int64_t t = begin; t < end; ++t) {
        const double x = double(d[t]) / cutoff;
        if (!(x < 1.0)) {
          if (gd) gd[t] = scalar_t(0);
          if (ga) ga[t] = scalar_t(0);
          continue;
        }
        const double u = env.value(x), du = env.derivative(x);
        const double theta = double(a[t]);
        legendre(L, std::cos(theta), P.data(), dP.data());
        const double sin_t = std::sin(theta);
        const scalar_t* g = go + t * L * N;
        double acc_d = 0.0, acc_a = 0.0;
        for (int64_t l = 0; l < L; ++l)
          for (int64_t n = 0; n < N; ++n) {
            const double z = tab.zeros[l * N + n];
            double j, dj;
            spherical_jn(l, z * x, &j, &dj);
            const double w = double(g[l * N + n]) * tab.norm[l * N + n] * tab.ylm[l];
            acc_d += w * P[l] * (du * j + u * z * dj);
            acc_a += w * u * j * dP[l] * -sin_t;
          }
        if (gd) gd[t] = scalar_t(acc_d / cutoff);
        if (ga) ga[t] = scalar_t(acc_a);
      }
    });
  });
  return {grad_dist, grad_angle};
}

}  // namespace cpu
}  // namespace pamnet_fast
