// Fused CPU step of AdamP and SGDP (the host side is adamp_torch/_cpu.py).
//
// Per tensor, at most three passes over memory, with float32 math (float64 for float64
// storage) and one rounding of every result to the storage dtype:
//   1. statistics: sums of P*P, G*G, P*G per row, whose cosines decide the branch (a
//      block of rows stops testing once one fails: the channel view is then out, and only
//      the totals the layer view needs are left to add, in one plain pass);
//   2. layer branch only: <P, U>, for its single coefficient;
//   3. state and weights in one pass (channel branch: row by row, the updates of a row
//      are held while its coefficient <P_r, U_r> / (|P_r| + eps)^2 is taken).
// Tensors with fewer than two dimensions are never projected: pass 3 only.
// AdamP and SGDP differ only in their per-element rule (Adam, Sgd below). Sums run in
// vector lanes over fixed blocks, so results do not depend on the thread count.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <optional>
#include <type_traits>
#include <vector>

namespace {

constexpr int64_t kBlock = 1 << 15;     // elements per parallel block
constexpr int64_t kRowChunk = 1 << 12;  // elements of whole rows handled at a time

// Storage <-> compute conversions. bfloat16 is carried as its bits (uint16_t) and rounded
// to nearest even like c10::BFloat16; float16 is the compiler's _Float16 (IEEE rounding).
template <typename S>
struct IO {
  using C = S;
  static inline C load(S x) { return x; }
  static inline S store(C x) { return x; }
};
template <>
struct IO<uint16_t> {
  using C = float;
  static inline float load(uint16_t x) {
    uint32_t bits = static_cast<uint32_t>(x) << 16;
    float f;
    std::memcpy(&f, &bits, sizeof f);
    return f;
  }
  static inline uint16_t store(float f) {
    uint32_t bits;
    std::memcpy(&bits, &f, sizeof f);
    uint32_t rounded = (bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16;
    return f != f ? static_cast<uint16_t>(0x7FC0) : static_cast<uint16_t>(rounded);
  }
};
template <>
struct IO<_Float16> {
  using C = float;
  static inline float load(_Float16 x) { return static_cast<float>(x); }
  static inline _Float16 store(float f) { return static_cast<_Float16>(f); }
};

template <typename C>
inline C cosine(C pg, C pp, C gg, C eps) {
  // std::max(NaN, eps) is NaN, like clamp_min: a NaN cosine never passes the test
  return std::abs(pg) / (std::max(std::sqrt(pp), eps) * std::max(std::sqrt(gg), eps));
}

template <typename C>
struct Totals {
  C pp = 0, gg = 0, pg = 0;
  int64_t failing = 0;
};

// sum(a*a), sum(b*b), sum(a*b) over n elements: summed in vector lanes (`omp simd`), in
// pieces of kRowChunk elements whose sums are then added (a two-level sum: the rounding
// error grows with the piece and the piece count, not with n).
template <typename S, typename C>
inline void sums3(const S* a, const S* b, int64_t n, C& aa, C& bb, C& ab) {
  aa = bb = ab = 0;
  for (int64_t lo = 0; lo < n; lo += kRowChunk) {
    const int64_t hi = std::min(n, lo + kRowChunk);
    C sa = 0, sb = 0, sab = 0;
#pragma omp simd reduction(+ : sa, sb, sab)
    for (int64_t j = lo; j < hi; ++j) {
      C x = IO<S>::load(a[j]), y = IO<S>::load(b[j]);
      sa += x * x;
      sb += y * y;
      sab += x * y;
    }
    aa += sa;
    bb += sb;
    ab += sab;
  }
}

// sum(a*a) and sum(a*u) for storage a and compute-dtype u, summed like sums3.
template <typename S, typename C>
inline void sums2(const S* a, const C* u, int64_t n, C& aa, C& au) {
  aa = au = 0;
  for (int64_t lo = 0; lo < n; lo += kRowChunk) {
    const int64_t hi = std::min(n, lo + kRowChunk);
    C sa = 0, su = 0;
#pragma omp simd reduction(+ : sa, su)
    for (int64_t j = lo; j < hi; ++j) {
      C x = IO<S>::load(a[j]);
      sa += x * x;
      su += x * u[j];
    }
    aa += sa;
    au += su;
  }
}

inline int64_t blocks_of(int64_t numel, int64_t units) {
  return std::max<int64_t>(1, std::min<int64_t>(units, (numel + kBlock - 1) / kBlock));
}

// Per-row sums of `m` consecutive rows of `n` elements (N > 0: n known at compile time,
// so that rows of one or a few elements are vectorized across rows).
template <int64_t N, typename S, typename C>
inline void row_sums3(const S* a, const S* b, int64_t m, int64_t n, C* aa, C* bb, C* ab) {
  if (N == 0 && n >= 16) {
    for (int64_t k = 0; k < m; ++k) sums3(a + k * n, b + k * n, n, aa[k], bb[k], ab[k]);
    return;
  }
  const int64_t len = N > 0 ? N : n;
  for (int64_t k = 0; k < m; ++k) {
    C sa = 0, sb = 0, sab = 0;
    for (int64_t j = 0; j < len; ++j) {
      C x = IO<S>::load(a[k * len + j]), y = IO<S>::load(b[k * len + j]);
      sa += x * x;
      sb += y * y;
      sab += x * y;
    }
    aa[k] = sa;
    bb[k] = sb;
    ab[k] = sab;
  }
}

// Calls f with the row length as a compile-time constant for the shortest rows.
template <typename F>
inline void by_row_length(int64_t n, F f) {
  switch (n) {
    case 1: f(std::integral_constant<int64_t, 1>{}); break;
    case 2: f(std::integral_constant<int64_t, 2>{}); break;
    case 4: f(std::integral_constant<int64_t, 4>{}); break;
    default: f(std::integral_constant<int64_t, 0>{});
  }
}

// Rows per chunk: whole rows of about kRowChunk elements (at least one row).
inline int64_t chunk_rows(int64_t n) { return std::max<int64_t>(1, kRowChunk / std::max<int64_t>(n, 1)); }

// Pass 1: the test's sums over a projectable tensor of `rows` rows of `n` elements.
template <typename S, typename C>
Totals<C> statistics(const S* p, const S* g, int64_t rows, int64_t n, C threshold, C eps) {
  const int64_t nb = blocks_of(rows * n, rows);
  const int64_t step = chunk_rows(n);
  std::vector<Totals<C>> parts(nb);
  at::parallel_for(0, nb, 1, [&](int64_t b0, int64_t b1) {
    std::vector<C> pp(step), gg(step), pg(step);
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t r1 = rows * (b + 1) / nb;
      Totals<C> t;
      int64_t r = rows * b / nb;
      for (; r < r1 && t.failing == 0; r += step) {
        const int64_t m = std::min(step, r1 - r);
        by_row_length(n, [&](auto len) {
          row_sums3<decltype(len)::value>(p + r * n, g + r * n, m, n, pp.data(), gg.data(),
                                          pg.data());
        });
        int32_t failing = 0;  // (32 bits: the same lane width as a float compare)
        C spp = 0, sgg = 0, spg = 0;
#pragma omp simd reduction(| : failing) reduction(+ : spp, sgg, spg)
        for (int64_t k = 0; k < m; ++k) {
          failing |= !(cosine(pg[k], pp[k], gg[k], eps) < threshold);
          spp += pp[k];
          sgg += gg[k];
          spg += pg[k];
        }
        t.failing = failing > 0;
        t.pp += spp;
        t.gg += sgg;
        t.pg += spg;
      }
      if (r < r1) {  // a row failed: the channel view is out, only totals are left to add
        C pp1, gg1, pg1;
        sums3(p + r * n, g + r * n, (r1 - r) * n, pp1, gg1, pg1);
        t.pp += pp1;
        t.gg += gg1;
        t.pg += pg1;
      }
      parts[b] = t;
    }
  });
  Totals<C> total;
  for (const auto& t : parts) {
    total.pp += t.pp;
    total.gg += t.gg;
    total.pg += t.pg;
    total.failing += t.failing;
  }
  return total;
}

enum Branch : int32_t { kNone = 0, kChannel = 1, kLayer = 2 };

template <typename C>
struct Decision {
  Branch branch = kNone;
  C pp = 0;  // the whole tensor's |P|^2 (the layer coefficient's norm)
};

template <typename S, typename C>
Decision<C> decide(const S* p, const S* g, int64_t rows, int64_t n, double delta, C eps) {
  const C thr_channel = static_cast<C>(delta / std::sqrt(static_cast<double>(n)));
  const C thr_layer = static_cast<C>(delta / std::sqrt(static_cast<double>(rows * n)));
  Totals<C> t = statistics<S, C>(p, g, rows, n, thr_channel, eps);
  Decision<C> d;
  d.pp = t.pp;
  if (t.failing == 0) {
    d.branch = kChannel;
  } else if (cosine(t.pg, t.pp, t.gg, eps) < thr_layer) {
    d.branch = kLayer;
  }
  return d;
}

template <typename C>
inline C coefficient(C pu, C pp, C eps) {
  C norm = std::sqrt(pp) + eps;
  return pu / (norm * norm);
}

// Runs body(lo, hi) over [0, numel) in fixed blocks; returns the blocks' C results added
// in order (deterministic).
template <typename C, typename F>
C blocked_sum(int64_t numel, F body) {
  const int64_t nb = blocks_of(numel, numel);
  std::vector<C> parts(nb);
  at::parallel_for(0, nb, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) parts[b] = body(numel * b / nb, numel * (b + 1) / nb);
  });
  C total = 0;
  for (C x : parts) total += x;
  return total;
}

template <typename F>
void blocked(int64_t numel, F body) {
  const int64_t nb = blocks_of(numel, numel);
  at::parallel_for(0, nb, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) body(numel * b / nb, numel * (b + 1) / nb);
  });
}

// -- the passes, over a rule --------------------------------------------------------------
//
// A rule K is one optimizer's per-element math: K::State holds the new state of one
// element; k.update(i, st) computes it and returns the unprojected update U; k.keep(i, st)
// stores the state that does not depend on the projection; k.put(i, pi, proj, decay)
// writes the weight from the projected update proj = U - coef * P (and any state that
// does depend on it).

// No projection, or one coefficient for the whole tensor (layer branch).
template <bool PROJECT, typename K, typename C>
void apply(const K& k, int64_t lo, int64_t hi, C decay, C coef) {
  for (int64_t i = lo; i < hi; ++i) {
    typename K::State st;
    C u = k.update(i, st);
    C pi = IO<typename K::S>::load(k.p[i]);
    k.keep(i, st);
    k.put(i, pi, PROJECT ? u - coef * pi : u, decay);
  }
}

// <P, U> over [lo, hi) (layer branch), without storing anything.
template <typename K, typename C = typename K::C>
C dot_pu(const K& k, int64_t lo, int64_t hi) {
  C s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t i = lo; i < hi; ++i) {
    typename K::State st;
    s += IO<typename K::S>::load(k.p[i]) * k.update(i, st);
  }
  return s;
}

// Channel branch, rows of at most 16 elements (N > 0: exactly N): one pass, each row's
// updates held in registers while its coefficient is taken.
template <int64_t N, typename K, typename C = typename K::C>
void short_rows(const K& k, int64_t r0, int64_t r1, int64_t n, C decay, C eps) {
  const int64_t len = N > 0 ? N : n;
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t lo = r * len;
    typename K::State st[16];
    C u[16], pp = 0, pu = 0;
    for (int64_t j = 0; j < len; ++j) {
      u[j] = k.update(lo + j, st[j]);
      C pi = IO<typename K::S>::load(k.p[lo + j]);
      pp += pi * pi;
      pu += pi * u[j];
    }
    const C coef = coefficient(pu, pp, eps);
    for (int64_t j = 0; j < len; ++j) {
      C pi = IO<typename K::S>::load(k.p[lo + j]);
      k.keep(lo + j, st[j]);
      k.put(lo + j, pi, u[j] - coef * pi, decay);
    }
  }
}

// Channel branch, longer rows, a chunk of whole rows at a time: the updates are formed
// into a buffer (the state stored), each row's coefficient taken, then the weights written.
template <typename K, typename C = typename K::C>
void long_rows(const K& k, int64_t r0, int64_t r1, int64_t n, C decay, C eps, C* u) {
  const int64_t step = chunk_rows(n);
  for (int64_t r = r0; r < r1; r += step) {
    const int64_t m = std::min(step, r1 - r);
    for (int64_t i = r * n; i < (r + m) * n; ++i) {
      typename K::State st;
      u[i - r * n] = k.update(i, st);
      k.keep(i, st);
    }
    for (int64_t q = 0; q < m; ++q) {
      const int64_t lo = (r + q) * n;
      const C* uq = u + q * n;
      C pp, pu;
      sums2(k.p + lo, uq, n, pp, pu);
      const C coef = coefficient(pu, pp, eps);
      for (int64_t j = 0; j < n; ++j) {
        C pi = IO<typename K::S>::load(k.p[lo + j]);
        k.put(lo + j, pi, uq[j] - coef * pi, decay);
      }
    }
  }
}

// One tensor: the test, then the branch's passes. decay(ratio) is the weight factor for a
// weight-decay ratio (1 unprojected, wd_ratio projected). Returns the branch.
template <typename K, typename Decay, typename C = typename K::C>
int32_t step_tensor(const K& k, const at::Tensor& param, double delta, C eps, Decay decay_of,
                    double wd_ratio) {
  const int64_t numel = param.numel();
  Decision<C> d;
  int64_t rows = 1, n = numel;
  if (param.dim() >= 2 && numel > 0) {
    rows = param.size(0);
    n = numel / rows;
    d = decide<typename K::S, C>(k.p, k.g, rows, n, delta, eps);
  }
  const C decay = static_cast<C>(decay_of(d.branch == kNone ? 1.0 : wd_ratio));
  if (d.branch == kNone) {
    blocked(numel, [&](int64_t lo, int64_t hi) { apply<false>(k, lo, hi, decay, C(0)); });
  } else if (d.branch == kLayer) {
    C pu = blocked_sum<C>(numel, [&](int64_t lo, int64_t hi) { return dot_pu(k, lo, hi); });
    C coef = coefficient(pu, d.pp, eps);
    blocked(numel, [&](int64_t lo, int64_t hi) { apply<true>(k, lo, hi, decay, coef); });
  } else {
    const int64_t nb = blocks_of(numel, rows);
    at::parallel_for(0, nb, 1, [&](int64_t b0, int64_t b1) {
      std::vector<C> u(n > 16 ? std::min(chunk_rows(n), rows) * n : 0);
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t r0 = rows * b / nb, r1 = rows * (b + 1) / nb;
        if (n > 16) {
          long_rows(k, r0, r1, n, decay, eps, u.data());
        } else {
          by_row_length(n, [&](auto len) {
            short_rows<decltype(len)::value>(k, r0, r1, n, decay, eps);
          });
        }
      }
    });
  }
  return d.branch;
}

// -- AdamP and SGDP ------------------------------------------------------------------------

template <typename C>
struct AdamScalars {
  C b1, b2, omb1, omb2, eps, sqrt_bc2, step_size, sign;
};

template <typename Storage, typename Compute, bool NESTEROV>
struct Adam {
  using S = Storage;
  using C = Compute;
  struct State {
    C m, v;
  };
  S* p;
  const S* g;
  S* m;
  S* v;
  AdamScalars<C> a;

  // New moments and the unprojected update (the authors' operation order).
  inline C update(int64_t i, State& st) const {
    C gi = a.sign * IO<S>::load(g[i]);
    st.m = IO<S>::load(m[i]) * a.b1 + a.omb1 * gi;
    st.v = IO<S>::load(v[i]) * a.b2 + a.omb2 * (gi * gi);
    C denom = std::sqrt(st.v) / a.sqrt_bc2 + a.eps;
    return NESTEROV ? (a.b1 * st.m + a.omb1 * gi) / denom : st.m / denom;
  }
  inline void keep(int64_t i, const State& st) const {
    m[i] = IO<S>::store(st.m);
    v[i] = IO<S>::store(st.v);
  }
  inline void put(int64_t i, C pi, C proj, C decay) const {
    p[i] = IO<S>::store(pi * decay - a.step_size * proj);
  }
};

template <typename C>
struct SgdScalars {
  C momentum, damp, lr, sign;
};

template <typename Storage, typename Compute, bool NESTEROV, bool PROJECT_BUFFER>
struct Sgd {
  using S = Storage;
  using C = Compute;
  struct State {
    C b;
  };
  S* p;
  const S* g;
  S* b;
  SgdScalars<C> a;

  // New buffer and the unprojected direction.
  inline C update(int64_t i, State& st) const {
    C gi = a.sign * IO<S>::load(g[i]);
    st.b = IO<S>::load(b[i]) * a.momentum + a.damp * gi;
    return NESTEROV ? gi + a.momentum * st.b : st.b;
  }
  inline void keep(int64_t i, const State& st) const {
    if (!PROJECT_BUFFER) b[i] = IO<S>::store(st.b);
  }
  // The authors' SGDP without Nesterov keeps the projected direction as its buffer.
  inline void put(int64_t i, C pi, C proj, C decay) const {
    if (PROJECT_BUFFER) b[i] = IO<S>::store(proj);
    p[i] = IO<S>::store(pi * decay - a.lr * proj);
  }
};

template <typename S, typename C, bool NESTEROV>
int32_t adamp_tensor(
    const at::Tensor& param, const at::Tensor& grad, const at::Tensor& exp_avg,
    const at::Tensor& exp_avg_sq, AdamScalars<C> a, double lr, double weight_decay,
    double delta, double wd_ratio) {
  Adam<S, C, NESTEROV> k{
      static_cast<S*>(param.data_ptr()), static_cast<const S*>(grad.data_ptr()),
      static_cast<S*>(exp_avg.data_ptr()), static_cast<S*>(exp_avg_sq.data_ptr()), a};
  auto decay = [&](double ratio) { return 1.0 - lr * weight_decay * ratio; };
  return step_tensor(k, param, delta, a.eps, decay, wd_ratio);
}

template <typename S, typename C, bool NESTEROV, bool PROJECT_BUFFER>
int32_t sgdp_tensor(
    const at::Tensor& param, const at::Tensor& grad, const at::Tensor& buf, SgdScalars<C> a,
    double lr, double weight_decay, double momentum, double eps, double delta,
    double wd_ratio) {
  Sgd<S, C, NESTEROV, PROJECT_BUFFER> k{
      static_cast<S*>(param.data_ptr()), static_cast<const S*>(grad.data_ptr()),
      static_cast<S*>(buf.data_ptr()), a};
  auto decay = [&](double ratio) { return 1.0 - lr * weight_decay * ratio / (1.0 - momentum); };
  return step_tensor(k, param, delta, static_cast<C>(eps), decay, wd_ratio);
}

// -- dispatch ------------------------------------------------------------------------------

template <typename F>
void by_dtype(at::ScalarType dtype, F f) {
  switch (dtype) {
    case at::kFloat: f(float{}); break;
    case at::kDouble: f(double{}); break;
    case at::kBFloat16: f(uint16_t{}); break;
    case at::kHalf: f(_Float16{}); break;
    default: TORCH_CHECK(false, "adamp_cpu: unsupported dtype ", dtype);
  }
}

void record(const std::optional<at::Tensor>& branches, size_t t, int32_t branch) {
  if (branches.has_value()) branches->data_ptr<int32_t>()[t] = branch;
}

// What the passes rely on, checked for every tensor (they walk raw memory): one CPU dtype,
// each parameter a dense block whose rows (axis 0) are contiguous blocks in order, and its
// gradient and state laid out the same way.
void check_lists(at::TensorList params, std::initializer_list<at::TensorList> others) {
  for (const auto& list : others) {
    TORCH_CHECK(list.size() == params.size(), "adamp_cpu: list lengths differ");
  }
  for (size_t t = 0; t < params.size(); ++t) {
    const at::Tensor& p = params[t];
    TORCH_CHECK(p.device().is_cpu() && p.layout() == at::kStrided &&
                    p.scalar_type() == params[0].scalar_type(),
                "adamp_cpu: params[", t, "] is not a dense CPU tensor of the first one's dtype");
    TORCH_CHECK(p.is_non_overlapping_and_dense() && !p.is_conj() && !p.is_neg() &&
                    (p.dim() < 2 || p.size(0) < 2 || p.stride(0) * p.size(0) == p.numel()),
                "adamp_cpu: params[", t, "]'s rows are not contiguous blocks in order");
    for (const auto& list : others) {
      const at::Tensor& o = list[t];
      TORCH_CHECK(o.device().is_cpu() && o.layout() == at::kStrided &&
                      o.scalar_type() == p.scalar_type() && o.sizes() == p.sizes() &&
                      o.strides() == p.strides() && !o.is_conj() && !o.is_neg(),
                  "adamp_cpu: a gradient or state of params[", t,
                  "] is not laid out like its parameter");
    }
  }
}

double next_step(const at::Tensor& step) {
  float* s = step.data_ptr<float>();
  *s += 1.0f;
  return *s;
}

void adamp_step(
    at::TensorList params, at::TensorList grads, at::TensorList exp_avgs,
    at::TensorList exp_avg_sqs, at::TensorList steps, double lr, double beta1, double beta2,
    double eps, double weight_decay, double delta, double wd_ratio, bool nesterov,
    bool maximize, const std::optional<at::Tensor>& branches) {
  check_lists(params, {grads, exp_avgs, exp_avg_sqs});
  TORCH_CHECK(steps.size() == params.size(), "adamp_cpu: list lengths differ");
  for (const auto& step : steps) {
    TORCH_CHECK(step.device().is_cpu() && step.scalar_type() == at::kFloat && step.numel() == 1,
                "adamp_cpu: step counts must be one-element float32 CPU tensors");
  }
  if (params.empty()) return;
  by_dtype(params[0].scalar_type(), [&](auto tag) {
    using S = decltype(tag);
    using C = typename IO<S>::C;
    for (size_t t = 0; t < params.size(); ++t) {
      const double step = next_step(steps[t]);
      const double bc1 = 1.0 - std::pow(beta1, step), bc2 = 1.0 - std::pow(beta2, step);
      AdamScalars<C> a;
      a.b1 = static_cast<C>(beta1);
      a.b2 = static_cast<C>(beta2);
      a.omb1 = static_cast<C>(1.0 - beta1);
      a.omb2 = static_cast<C>(1.0 - beta2);
      a.eps = static_cast<C>(eps);
      a.sqrt_bc2 = static_cast<C>(std::sqrt(bc2));
      a.step_size = static_cast<C>(lr / bc1);
      a.sign = static_cast<C>(maximize ? -1 : 1);
      auto run = nesterov ? adamp_tensor<S, C, true> : adamp_tensor<S, C, false>;
      record(branches, t,
             run(params[t], grads[t], exp_avgs[t], exp_avg_sqs[t], a, lr, weight_decay, delta,
                 wd_ratio));
    }
  });
}

void sgdp_step(
    at::TensorList params, at::TensorList grads, at::TensorList buffers, double lr,
    double momentum, double dampening, double weight_decay, bool nesterov, double eps,
    double delta, double wd_ratio, bool project_buffer, bool maximize,
    const std::optional<at::Tensor>& branches) {
  check_lists(params, {grads, buffers});
  if (params.empty()) return;
  by_dtype(params[0].scalar_type(), [&](auto tag) {
    using S = decltype(tag);
    using C = typename IO<S>::C;
    SgdScalars<C> a{static_cast<C>(momentum), static_cast<C>(1.0 - dampening),
                    static_cast<C>(lr), static_cast<C>(maximize ? -1 : 1)};
    auto run = nesterov ? (project_buffer ? sgdp_tensor<S, C, true, true>
                                          : sgdp_tensor<S, C, true, false>)
                        : (project_buffer ? sgdp_tensor<S, C, false, true>
                                          : sgdp_tensor<S, C, false, false>);
    for (size_t t = 0; t < params.size(); ++t) {
      record(branches, t,
             run(params[t], grads[t], buffers[t], a, lr, weight_decay, momentum, eps, delta,
                 wd_ratio));
    }
  });
}

}  // namespace

TORCH_LIBRARY(adamp_cpu, m) {
  m.def(
      "adamp_step(Tensor(a!)[] params, Tensor[] grads, Tensor(b!)[] exp_avgs, "
      "Tensor(c!)[] exp_avg_sqs, Tensor(d!)[] steps, float lr, float beta1, float beta2, "
      "float eps, float weight_decay, float delta, float wd_ratio, bool nesterov, "
      "bool maximize, Tensor(e!)? branches) -> ()",
      &adamp_step);
  m.def(
      "sgdp_step(Tensor(a!)[] params, Tensor[] grads, Tensor(b!)[] buffers, float lr, "
      "float momentum, float dampening, float weight_decay, bool nesterov, float eps, "
      "float delta, float wd_ratio, bool project_buffer, bool maximize, "
      "Tensor(c!)? branches) -> ()",
      &sgdp_step);
}
