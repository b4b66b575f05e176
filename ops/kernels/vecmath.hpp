#pragma once
// Branch-free float math that GCC auto-vectorises: element-wise loops over f32 compiled with
// TAPEGRAD_MULTIVERSION (and -fno-trapping-math -fno-math-errno, without which GCC does not
// if-convert the selects) run these 8 lanes at a time on AVX2 instead of calling scalar libm
// per element.
//
// Only arithmetic, std::bit_cast, integer operations on bit patterns and ?: between values
// already computed: no libm (not even std::fma, a libm call on the baseline target; a*b+c
// contracts to an FMA in the AVX2 clone), no data-dependent branches or loops. Some kernels
// (sin_wide, cos_wide, sigmoid, pow) work in double on purpose: 4 lanes per vector, but a
// reduction, a logarithm or a quotient with 29 more bits to spare.
//
// Accuracy: measured EXHAUSTIVELY over all 2^32 inputs by tools/vecmath_accuracy.cpp, in ulp
// of the float result against the exact value (libm in double), for both the AVX2/FMA clone
// and the baseline: the figures per function below are the larger of the two (pow: over all x
// for a few y and 2^27 random pairs). Where the result is subnormal it may be off by one
// subnormal ulp. Special values follow C/PyTorch: NaN in gives NaN out, ±0 keeps its sign
// where libm keeps it, ±inf and the poles as libm.
// Polynomial coefficients: tools/vecmath_coefficients.py.
#include <bit>
#include <cstdint>
#include <limits>

namespace tapegrad::detail::vm {

/// sin and cos reduce in float and are accurate (≤ 2 ulp) for |x| < kTrigFastBelow only:
/// beyond, their result has no meaning (it may be NaN), and the caller recomputes those
/// elements with sin_wide and cos_wide, which reduce in double, at half the speed, and are
/// accurate for |x| < kTrigExactBelow. Beyond that these return +0 for finite x (the caller
/// recomputes those with std::sin / std::cos). All four give NaN for ±inf and NaN.
inline constexpr float kTrigFastBelow = 0x1p11f;
inline constexpr float kTrigExactBelow = 0x1p26f;

namespace impl {

inline constexpr float kInf = std::numeric_limits<float>::infinity();
inline constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

inline std::int32_t bits(float x) { return std::bit_cast<std::int32_t>(x); }
inline float from_bits(std::int32_t i) { return std::bit_cast<float>(i); }
inline std::int64_t bits(double x) { return std::bit_cast<std::int64_t>(x); }
inline double from_bits(std::int64_t i) { return std::bit_cast<double>(i); }

inline float abs(float x) { return from_bits(bits(x) & 0x7fffffff); }
/// |magnitude| with the sign of sign.
inline float copysign(float magnitude, float sign) {
  return from_bits((bits(magnitude) & 0x7fffffff) | (bits(sign) & std::int32_t(0x80000000u)));
}
/// 2^n for n in [-126, 127].
inline float pow2(std::int32_t n) { return from_bits(std::int32_t(std::uint32_t(n + 127) << 23)); }

/// x rounded to the nearest integer (ties to even), as a float and as an integer, for
/// |x| < 2^22: adding 1.5·2^23 leaves the integer in the low mantissa bits. A NaN gives a NaN
/// value and a meaningless integer.
struct Rounded {
  float value;
  std::int32_t integer;
};
inline Rounded round(float x) {
  constexpr float kShifter = 0x1.8p23f;
  const float shifted = x + kShifter;
  return {shifted - kShifter, bits(shifted) - bits(kShifter)};
}
/// The same in double, for |x| < 2^51; the integer is returned as 64 bits.
struct RoundedD {
  double value;
  std::int64_t integer;
};
inline RoundedD round(double x) {
  constexpr double kShifter = 0x1.8p52;
  const double shifted = x + kShifter;
  return {shifted - kShifter, bits(shifted) - bits(kShifter)};
}

/// e^r - 1 for |r| ≤ 0.347 as r + r²/2 + r³·P(r), P a minimax fit of degree 4 (relative
/// error of the fit 2^-31).
inline float expm1_kernel(float r) {
  const float p = (((0x1.9e7c9p-13f * r + 0x1.6d3a66p-10f) * r + 0x1.1112d4p-7f) * r +
                   0x1.5554f8p-5f) * r + 0x1.555554p-3f;
  return r + (r * r) * (0.5f + r * p);
}

/// x = n·ln2 + r with n = round(x/ln2), |r| ≤ 0.347, for |x| ≤ 150. ln2's leading part has 9
/// bits, so n·kLn2Hi (|n| < 2^8) is exact and x - n·kLn2Hi too (Sterbenz).
struct ExpReduced {
  float r;
  std::int32_t n;
};
inline ExpReduced exp_reduce(float x) {
  constexpr float kLog2e = 0x1.715476p+0f;
  constexpr float kLn2Hi = 0x1.63p-1f;           // 0.693359375
  constexpr float kLn2Lo = -0x1.bd0106p-13f;     // ln2 - kLn2Hi
  const Rounded n = round(x * kLog2e);
  return {(x - n.value * kLn2Hi) - n.value * kLn2Lo, n.integer};
}

/// A positive normal u as 2^e·(1 + f) with 1 + f in [√½, √2): f ∈ [-0.293, 0.415).
struct LogSplit {
  float f;
  std::int32_t e;
};
inline LogSplit log_split(float u) {
  // In uint32 (wrapping): the loops also feed negative and NaN lanes through here, whose
  // results the callers replace, and signed overflow there would be undefined.
  constexpr std::uint32_t kSqrtHalfBits = 0x3f3504f3;
  const auto ub = std::uint32_t(bits(u));
  const auto e = std::int32_t(ub - kSqrtHalfBits) >> 23;
  return {from_bits(std::int32_t(ub - (std::uint32_t(e) << 23))) - 1.0f, e};
}

/// e·ln2 + log1p(f) for f ∈ [-0.293, 0.415]: log1p(f) = f - f²/2 + f³·P(f), P a minimax fit
/// of degree 7 (relative error 2^-27.4). ln2's leading part has 9 bits, so e·kLn2Hi is exact.
inline float log_kernel(float f, float e) {
  constexpr float kLn2Hi = 0x1.63p-1f;
  constexpr float kLn2Lo = -0x1.bd0106p-13f;
  const float p =
      ((((((-0x1.38c9dep-4f * f + 0x1.055ec6p-3f) * f - 0x1.0d8242p-3f) * f + 0x1.22d92ep-3f) * f -
         0x1.54728ap-3f) * f + 0x1.99a01cp-3f) * f - 0x1.000226p-2f) * f + 0x1.555554p-2f;
  const float f2 = f * f;
  return (f + (f2 * (f * p - 0.5f) + e * kLn2Lo)) + e * kLn2Hi;
}

/// sin(r) for |r| ≤ π/2 (and a little beyond) in double: r + r³·P(r²), P a minimax fit of
/// degree 5 (relative error 2^-39).
inline double sin_kernel(double r) {
  const double r2 = r * r;
  const double p = ((((0x1.52dc1765a8b3dp-33 * r2 - 0x1.ae03fa89d5bd6p-26) * r2 +
                      0x1.71dcf8574cd9ep-19) * r2 - 0x1.a019fd59849a3p-13) * r2 +
                    0x1.1111110a55f9dp-7) * r2 - 0x1.5555555547132p-3;
  return r + r * (r2 * p);
}

/// sin(x) (Cos false) or cos(x) (Cos true) for |x| < kTrigFastBelow, in float. x = q·π/2 + r
/// with q = round(x·2/π), |q| ≤ 1304, |r| ≤ π/4 (a little beyond where x·2/π rounds), and the
/// result is ±sin(r) or ±cos(r) by the quadrant q (+1 for cos). π/2 = kA + kB + kC + kD, the
/// first three of 12, 13 and 11 bits, so that q times each is exact: x - q·kA is exact
/// (Sterbenz), and the next two subtractions are exact where they cancel and elsewhere give
/// their rounding error by Fast2Sum (wherever they round, the subtrahend is the smaller): r =
/// hi + lo to about 2^-60, and no float below 2^11 comes closer than 2^-27.8 to a multiple of
/// π/2, so r keeps more than 24 good bits.
/// sin(hi + lo) = hi + hi³·S(hi²) + lo and cos(hi + lo) = 1 - hi²/2 + hi⁴·C(hi²) - hi·lo, S and
/// C minimax fits of degree 2 (relative error 2^-27.8 and 2^-33). Only the final rounding
/// and that of the small terms remain: ≤ 1.4 ulp. No guard for |x| ≥ kTrigFastBelow (see
/// there): a select costs more here than the rest of the argument checks.
template <bool Cos>
inline float sin_cos_float(float x) {
  constexpr float k2OverPi = 0x1.45f306p-1f;
  constexpr float kA = 0x1.922p0f, kB = -0x1.2afp-18f, kC = 0x1.0b4p-34f, kD = 0x1.84698ap-48f;
  const Rounded q = round(x * k2OverPi);
  const float t1 = x - q.value * kA;
  const float t2 = t1 - q.value * kB;
  const float hi = t2 - q.value * kC;
  const float lo = (((t1 - t2) - q.value * kB) + ((t2 - hi) - q.value * kC)) - q.value * kD;
  const float r2 = hi * hi;
  const float s = (-0x1.991bf4p-13f * r2 + 0x1.1106c6p-7f) * r2 - 0x1.555544p-3f;
  const float sin_r = hi + (hi * (r2 * s) + lo);
  const float c = (0x1.99e716p-16f * r2 - 0x1.6c0c26p-10f) * r2 + 0x1.55554ap-5f;
  const float cos_r = 1.0f + (r2 * (r2 * c - 0.5f) - hi * lo);
  const std::int32_t quadrant = q.integer + (Cos ? 1 : 0);
  const std::int32_t negate = std::int32_t(std::uint32_t(quadrant & 2) << 30);
  // Odd quadrant: tested on the sign bit, which the vector select reads directly.
  const bool odd = std::int32_t(std::uint32_t(quadrant) << 31) < 0;
  return from_bits(bits(odd ? cos_r : sin_r) ^ negate);
}

/// sin(x) (Cos false) or cos(x) (Cos true) for |x| < kTrigExactBelow. In double: x = m·π/2 + r
/// with m = 2n (sin) or 2n + 1 (cos), n = round(x/π) or round(x/π - ½), so that |r| ≤ π/2 and
/// the result is ±sin(r), negated when n is odd, and for cos once more (cos(nπ + π/2 + r) =
/// (-1)^(n+1) sin r). π/2 is split into a 27-bit part, whose product with m < 2^26 is exact, and
/// a 53-bit part; x - m·kPio2Hi is exact where it cancels, so r keeps ~50 good bits even next
/// to a multiple of π/2.
template <bool Cos>
inline float sin_cos_double(float x) {
  constexpr double kInvPi = 0x1.45f306dc9c883p-2;
  constexpr double kPio2Hi = 0x1.921fb54p+0;
  constexpr double kPio2Mid = 0x1.10b4611a62633p-30;
  const bool in_range = abs(x) < kTrigExactBelow;
  const double xd = in_range ? x : 0.0f;
  const RoundedD n = round(xd * kInvPi - (Cos ? 0.5 : 0.0));
  const double m = 2.0 * n.value + (Cos ? 1.0 : 0.0);
  const double r = (xd - m * kPio2Hi) - m * kPio2Mid;
  const auto negate = std::uint32_t(n.integer + (Cos ? 1 : 0)) << 31;
  const float y = from_bits(bits(float(sin_kernel(r))) ^ std::int32_t(negate));
  return in_range ? y : x - x;
}

/// 2^t for |t| ≤ 1100 in double: t = n + f, |f| ≤ ½, 2^f by its Taylor series to degree 11
/// (relative error 2^-47), 2^n from the exponent bits. Exact enough that rounding the result to
/// float, normal, subnormal or overflowing, is a single rounding.
inline double exp2_double(double t) {
  constexpr double kLn2 = 0x1.62e42fefa39efp-1;
  const RoundedD n = round(t);
  const double z = (t - n.value) * kLn2;
  double p = 1.0 / 39916800.0;  // 1/11!
  p = p * z + 1.0 / 3628800.0;
  p = p * z + 1.0 / 362880.0;
  p = p * z + 1.0 / 40320.0;
  p = p * z + 1.0 / 5040.0;
  p = p * z + 1.0 / 720.0;
  p = p * z + 1.0 / 120.0;
  p = p * z + 1.0 / 24.0;
  p = p * z + 1.0 / 6.0;
  p = p * z + 0.5;
  p = p * z + 1.0;
  p = p * z + 1.0;
  return p * from_bits(std::int64_t(std::uint64_t(n.integer + 1023) << 52));
}

}  // namespace impl

/// e^x. Method: x = n·ln2 + r (two-part ln2), e^r = 1 + expm1_kernel(r), times 2^n applied as
/// two factors 2^⌊n/2⌋·2^(n-⌊n/2⌋) so that results down to the subnormals (x ≥ -104, below
/// which the result rounds to +0) and up to the overflow (x > 88.72 gives +inf) come out of
/// one final rounding. Max error 0.98 ulp (subnormal results: 1 subnormal ulp).
inline float exp(float x) {
  const float clamped = x > 88.8f ? 88.8f : (x < -104.0f ? -104.0f : x);  // NaN stays NaN
  const auto [r, n] = impl::exp_reduce(clamped);
  const std::int32_t half = n >> 1;
  return (1.0f + impl::expm1_kernel(r)) * impl::pow2(half) * impl::pow2(n - half);
}

/// e^x - 1. Method: the reduction of exp, then with t = 2^(n-1):
/// e^x - 1 = 2·((t - ½) + t·(e^r - 1)), exact for n = 0 (so |x| < 0.347 keeps full relative
/// accuracy) and free of overflow up to n = 128. Clamped to [-17.5, 88.8]: -1 and +inf beyond.
/// Max error 1.45 ulp (where n = 1 and 1 + 2·expm1(r) cancels: x near 0.35).
inline float expm1(float x) {
  const float clamped = x > 88.8f ? 88.8f : (x < -17.5f ? -17.5f : x);
  const auto [r, n] = impl::exp_reduce(clamped);
  const float t = impl::pow2(n - 1);
  const float y = 2.0f * ((t - 0.5f) + t * impl::expm1_kernel(r));
  return x == 0 ? x : y;  // expm1(-0) = -0
}

/// Natural logarithm. Method: x = 2^e·(1 + f), 1 + f ∈ [√½, √2), log x = e·ln2 + log1p(f) by
/// f - f²/2 + f³·P(f); subnormal x are scaled by 2^23 first. log(±0) = -inf, log(x < 0)
/// = NaN, log(+inf) = +inf. Max error 0.92 ulp.
inline float log(float x) {
  const bool subnormal = x < std::numeric_limits<float>::min();
  const auto [f, e] = impl::log_split(subnormal ? x * 0x1p23f : x);
  const float y = impl::log_kernel(f, float(subnormal ? e - 23 : e));
  const float special = x == 0 ? -impl::kInf : (x == impl::kInf ? x : impl::kNaN);
  return x > 0 && x < impl::kInf ? y : special;
}

/// log(1 + x). Method: u = 1 + x rounded, c = x - (u - 1) its rounding error; u = 2^e·(1 + f)
/// as in log, and log(1 + x) = e·ln2 + log1p(f + c·2^-e). log1p(-1) = -inf, log1p(x < -1) =
/// NaN, log1p(±0) = ±0, log1p(+inf) = +inf. Max error 1.53 ulp (e = 1, x near 0.44, where
/// e·ln2 and log1p(f) < 0 partly cancel).
inline float log1p(float x) {
  const float u = 1.0f + x;
  const auto [f, e] = impl::log_split(u);
  // c is 0 once x ≥ 2^25, so the scale need not go below 2^-126.
  const float c = (x - (u - 1.0f)) * impl::pow2(-(e > 126 ? 126 : e));
  const float y = impl::log_kernel(f + c, float(e));
  const float special = x == -1 ? -impl::kInf : (x == impl::kInf ? x : impl::kNaN);
  const float finite = x > -1 && x < impl::kInf ? y : special;
  return x == 0 ? x : finite;
}

/// Sine, accurate for |x| < kTrigFastBelow (see sin_cos_float); sin(±0) = ±0. Max error
/// 1.39 ulp.
inline float sin(float x) {
  const float y = impl::sin_cos_float<false>(x);
  return x == 0 ? x : y;
}

/// Cosine, accurate for |x| < kTrigFastBelow (see sin_cos_float). Max error 1.38 ulp.
inline float cos(float x) { return impl::sin_cos_float<true>(x); }

/// Sine, accurate for |x| < kTrigExactBelow (see sin_cos_double); sin(±0) = ±0. Max error
/// 0.50 ulp.
inline float sin_wide(float x) {
  const float y = impl::sin_cos_double<false>(x);
  return x == 0 ? x : y;
}

/// Cosine, accurate for |x| < kTrigExactBelow (see sin_cos_double). Max error 0.50 ulp.
inline float cos_wide(float x) { return impl::sin_cos_double<true>(x); }

/// Error function. Method: |x| < 0.921875: x + x·P(x²) (P of degree 6: 2/√π - 1 + ...);
/// above: 1 - e^(-x²)·Q(|x| - 0.921875) with the sign of x, Q of degree 9 fitted to
/// erfc(x)·e^(x²) for the absolute error of erf; |x| is clamped to 3.9375, where erf rounds
/// to ±1. Max error 1.06 ulp (baseline clone; 0.93 with FMA).
inline float erf(float x) {
  const float a = impl::abs(x);
  const float x2 = x * x;
  const float p = (((((0x1.4f2da2p-14f * x2 - 0x1.a5fe48p-11f) * x2 + 0x1.544954p-8f) * x2 -
                     0x1.b80112p-6f) * x2 + 0x1.ce2d64p-4f) * x2 - 0x1.81274p-2f) * x2 +
                  0x1.06eba8p-3f;
  const float small = x + x * p;
  const float ac = a > 3.9375f ? 3.9375f : a;  // NaN stays NaN
  const float t = ac - 0.921875f;
  const float q =
      ((((((((0x1.38398p-16f * t - 0x1.405048p-16f) * t - 0x1.a8ce58p-11f) * t + 0x1.53bffp-8f) * t -
           0x1.1ee874p-6f) * t + 0x1.63d782p-5f) * t - 0x1.77a1d4p-4f) * t + 0x1.65148ap-3f) * t -
       0x1.320754p-2f) * t + 0x1.ccb52p-2f;
  const float large = impl::copysign(1.0f - exp(-(ac * ac)) * q, x);
  return a < 0.921875f ? small : large;
}

/// gelu(x) = x·Φ(x), Φ the normal CDF (PyTorch's gelu with approximate='none'), in one piece
/// where x·½·(1 + erf(x/√2)) takes both of erf's pieces and, for x < 0, cancels in 1 + erf.
/// Method (impl::normal_tail): with a = |x|/√2 and t = 1/(1 + a/2), h = Φ(-|x|) = ½·erfc(a) =
/// e^(-x²/2)·t·R(1 - t), R a minimax fit of degree 8 (relative error 2^-25.8); Φ(x) = 1 - h for
/// x > 0, h below. x² is split exactly (x = xh + xl, xh of 12 bits) so that e^(-x²/2) keeps its
/// accuracy where it is tiny. Below kGeluZeroBelow (-6.36, where gelu(x) > -6.4e-10) the result
/// is -0, as x·½·(1 + erf(x/√2)) in float gives from about -5.5 on (erf rounds to -1). Max
/// error 7.07 ulp, the one kernel here above 2: h is a product of five roundings (the quotient,
/// R, e^(-x²/2), the products); x·½·(1 + erf(x/√2)) has no bound at all in ulp below x = -3.
inline constexpr float kGeluZeroBelow = -0x1.97p2f;

namespace impl {
/// Φ(-|x|) and e^(-x²/2) by gelu's method, t and R(1 - t) at x clamped to ±|kGeluZeroBelow|
/// (R's fitted range), and e^(-x²/2): at that clamped x too (gelu), or, kWide, at x itself up
/// to |x| = 14.5, from where it rounds to 0, its 2^n applied as two factors so that subnormal
/// results come out right (gelu_grad). h is Φ(-|x|) for |x| ≤ |kGeluZeroBelow|; beyond, some
/// value below Φ(kGeluZeroBelow).
struct NormalTail {
  float h, e;
};
/// |x| from which e^(-x²/2) rounds to 0 in float (normal_tail<true> clamps x there).
inline constexpr float kNormalTailZeroFrom = 14.5f;
template <bool kWide>
inline NormalTail normal_tail(float x) {
  constexpr float kSqrtHalf = 0x1.6a09e6p-1f;
  const float xc = x < kGeluZeroBelow ? kGeluZeroBelow : (x > -kGeluZeroBelow ? -kGeluZeroBelow : x);
  const float t = 1.0f / (1.0f + 0.5f * (abs(xc) * kSqrtHalf));
  const float u = 1.0f - t;
  const float r_of_u =
      (((((((-0x1.764614p-6f * u + 0x1.328de6p-4f) * u - 0x1.abfc32p-5f) * u - 0x1.9b8f84p-6f) * u -
          0x1.c1b052p-5f) * u + 0x1.b49366p-4f) * u + 0x1.f20ef2p-3f) * u - 0x1.41bac4p-1f) * u +
      0.5f;
  constexpr float bound = kNormalTailZeroFrom;
  const float xw = !kWide ? xc : (x < -bound ? -bound : (x > bound ? bound : x));
  const float xh = from_bits(bits(xw) & std::int32_t(0xfffff000u));
  const float xl = xw - xh;  // x² = xh² + xl·(x + xh), xh² exact
  const auto [r, n] = exp_reduce(-0.5f * (xh * xh));
  const float m = 1.0f + expm1_kernel(r - 0.5f * (xl * (xw + xh)));
  const std::int32_t half = n >> 1;
  const float e = kWide ? m * pow2(half) * pow2(n - half) : m * pow2(n);
  return {e * (t * r_of_u), e};
}
}  // namespace impl

inline float gelu(float x) {
  const float h = impl::normal_tail<false>(x).h;
  const float cdf = x > 0 ? 1.0f - h : h;
  return x * (x < kGeluZeroBelow ? 0.0f : cdf);
}

/// gelu's derivative Φ(x) + x·φ(x), φ(x) = e^(-x²/2)/√(2π), by gelu's method: one e^(-x²/2)
/// serves both terms (x·½·(1 + erf(x/√2)) + x·φ(x) takes three exponentials). Below
/// kGeluZeroBelow, past R's fitted range, Φ(x) = φ(x)·m(|x|) with m the Mills ratio by the fifth
/// convergent of its continued fraction 1/(a + 1/(a + 2/(a + 3/(a + 4/a)))) (relative error
/// below 6e-7 there, where Φ is at most 2.5 % of the sum). Max error 5.6 ulp of Φ(x) + |x|·φ(x),
/// the size of the terms (the sum itself cancels to 0 near x = -0.75, in PyTorch's formula as
/// here), for |x| < 13; 10.9 beyond, where e^(-x²/2) is subnormal (as in PyTorch's formula).
/// ±inf give NaN (∞·0), as PyTorch's.
inline float gelu_grad(float x) {
  constexpr float kInvSqrt2Pi = 0x1.988454p-2f;
  const auto [h, e] = impl::normal_tail<true>(x);
  const float pdf = e * kInvSqrt2Pi;
  constexpr float bound = impl::kNormalTailZeroFrom;  // pdf is 0 beyond
  const float a = impl::abs(x) < bound ? impl::abs(x) : bound, a2 = a * a;
  const float mills = (a2 * (a2 + 9.0f) + 8.0f) / (a * (a2 * (a2 + 10.0f) + 15.0f));
  const float cdf = x > 0 ? 1.0f - h : (x < kGeluZeroBelow ? pdf * mills : h);
  return cdf + x * pdf;
}

/// Hyperbolic tangent. Method: |x| < 0.625: x + x³·P(x²), P of degree 6; above, with
/// e = expm1(2|x|) and the sign of x: e/(e + 2) below 0.875, 1 - 2/(e + 2) from there, |x|
/// clamped to 9.5 where tanh rounds to ±1. tanh(±0) = ±0. Max error 1.19 ulp.
inline float tanh(float x) {
  const float a = impl::abs(x);
  const float x2 = x * x;
  const float p = (((((-0x1.27feacp-10f * x2 + 0x1.e1e718p-9f) * x2 - 0x1.26ab54p-7f) * x2 +
                     0x1.670a5ap-6f) * x2 - 0x1.ba29ep-5f) * x2 + 0x1.11114ep-3f) * x2 -
                  0x1.555556p-2f;
  const float small = x + x * (x2 * p);
  const float e = expm1(2.0f * (a > 9.5f ? 9.5f : a));
  // e/(e + 2) = 1 - 2/(e + 2): the second rounds less once 2/(e + 2) is small against 1.
  const float d = (a < 0.875f ? e : 2.0f) / (e + 2.0f);
  const float large = impl::copysign(a < 0.875f ? d : 1.0f - d, x);
  const float y = a < 0.625f ? small : large;
  return x == 0 ? x : y;
}

/// 1/(1 + e^-x) without overflow: with e = e^-|x| ≤ 1, 1/(1 + e) for x ≥ 0 and e/(1 + e)
/// below. In double (e by exp2_double, |x| clamped to 150 where sigmoid(-|x|) rounds to 0),
/// rounded to float once: in float, e's own rounding and that of 1 + e add up to 2.4 ulp where
/// sigmoid(x) falls just below a power of 2 while e^x does not. Max error 0.50 ulp.
inline float sigmoid(float x) {
  constexpr double kLog2e = 0x1.71547652b82fep+0;
  const float a = impl::abs(x);
  const double e = impl::exp2_double(-double(a > 150.0f ? 150.0f : a) * kLog2e);  // NaN stays
  return float((x >= 0 ? 1.0 : e) / (1.0 + e));
}

/// x^y with the full C/IEEE pow semantics (pow(x, ±0) = 1 even for NaN x, pow(1, y) = 1
/// even for NaN y, pow(-1, ±inf) = 1, x < 0 finite with y not an integer gives NaN, odd
/// integer y keeps x's sign, ±0 and ±inf as C's Annex F). Method, in double: log2|x| from
/// |x| = 2^e·m, m ∈ [√½, √2), ln m = 2·atanh(s), s = (m - 1)/(m + 1), by its Taylor series to
/// s^15 (relative error 2^-45); t = y·log2|x| clamped to ±200; 2^t by exp2_double; one
/// rounding to float, so subnormal and overflowing results are right too.
inline float pow(float x, float y) {
  const float ax = impl::abs(x);
  const bool subnormal = ax < std::numeric_limits<float>::min();
  const auto [f, e] = impl::log_split(subnormal ? ax * 0x1p23f : ax);
  const double m1 = f;  // m - 1, exact
  const double s = m1 / (m1 + 2.0);
  const double s2 = s * s;
  double p = 2.0 / 15.0;
  p = p * s2 + 2.0 / 13.0;
  p = p * s2 + 2.0 / 11.0;
  p = p * s2 + 2.0 / 9.0;
  p = p * s2 + 2.0 / 7.0;
  p = p * s2 + 2.0 / 5.0;
  p = p * s2 + 2.0 / 3.0;
  constexpr double kLog2e = 0x1.71547652b82fep+0;
  const double ln_m = 2.0 * s + s * (s2 * p);
  const double log2_finite = double(subnormal ? e - 23 : e) + ln_m * kLog2e;
  const double log2_ax = ax == 0 ? -std::numeric_limits<double>::infinity()
                                 : (ax < impl::kInf ? log2_finite : double(ax));  // +inf, NaN
  const double t = double(y) * log2_ax;  // NaN for NaN x or y
  const double tc = t > 200.0 ? 200.0 : (t < -200.0 ? -200.0 : t);
  const float magnitude = float(impl::exp2_double(tc));
  // y an integer (every |y| ≥ 2^23 is, ±inf counts as an even one), and odd?
  const float ay = impl::abs(y);
  // For |y| < 2^23, |y| + 2^23 has a unit last place: it holds round(|y|) and its parity.
  const float shifted = ay + 0x1p23f;
  const bool y_integer = (ay >= 0x1p23f) | (shifted - 0x1p23f == ay);
  // The sign bit of x where y is an odd integer, else 0.
  const std::int32_t odd_bit =
      std::int32_t(std::uint32_t(impl::bits(ay < 0x1p23f ? shifted : ay)) << 31);
  const std::int32_t sign = y_integer & (ay < 0x1p24f) ? odd_bit & impl::bits(x) : 0;
  const bool one = (y == 0) | (x == 1.0f) | ((ax == 1.0f) & (ay == impl::kInf));
  const float one_or_mag = one ? 1.0f : magnitude;
  const float signed_mag = impl::from_bits(impl::bits(one_or_mag) | sign);
  const bool nan = (x < 0) & (ax < impl::kInf) & !y_integer & (y != 0);
  return nan ? impl::kNaN : signed_mag;
}

}  // namespace tapegrad::detail::vm
