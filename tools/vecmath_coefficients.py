#!/usr/bin/python3
"""Fits the polynomial coefficients of ops/kernels/vecmath.hpp (numpy and the standard library only).

Run: /usr/bin/python3 tools/vecmath_coefficients.py

Each fit is a near-minimax polynomial found by Lawson's iteration (weighted least squares whose
weights grow where the error is largest) on Chebyshev nodes, for the error measure the header
needs: relative error of the function for exp/expm1, log1p, sin, tanh and erf near 0, absolute
error of erf(x) for the erfc branch. The f32 fits are rounded to float one coefficient at a
time (the others refitted after each rounding) and their error is re-measured with the rounded
coefficients. The targets are computed by series or by math.erf /
math.erfc in double, accurate far below float's precision.
Prints each set as C++ hex literals, in the order the header's Horner evaluation uses
(highest degree first), with the achieved max error in units of 2^-24.
"""
import math
import re

import numpy as np


def series(terms, x):
    """sum of c_k * x^k for the given list of c_k, evaluated in float64 (terms are small)."""
    acc = np.zeros_like(x)
    for c in reversed(terms):
        acc = acc * x + c
    return acc


def lawson(basis, target, weight, iterations=200):
    """Coefficients c minimising max |weight * (basis @ c - target)|, approximately."""
    a = basis * weight[:, None]
    b = target * weight
    scale = np.linalg.norm(a, axis=0)
    w = np.ones_like(target) / len(target)
    for _ in range(iterations):
        sw = np.sqrt(w)
        c, *_ = np.linalg.lstsq(a / scale * sw[:, None], b * sw, rcond=None)
        err = np.abs(a / scale @ c - b)
        w = w * err
        w /= w.sum()
    return c / scale


def nodes(lo, hi, n=4000):
    k = np.arange(n)
    return (lo + hi) / 2 + (hi - lo) / 2 * np.cos((2 * k + 1) * np.pi / (2 * n))


def fit(name, lo, hi, degrees, target_fn, weight_fn, var_fn=lambda x: x, f32=True):
    """Fits sum_k c_k var(x)^degrees[k] to target(x); reports max |weight*(p - target)|."""
    x = nodes(lo, hi)
    v = var_fn(x)
    basis = np.stack([v ** d for d in degrees], axis=1)
    target = target_fn(x)
    weight = weight_fn(x)
    if f32:
        # Round the coefficients to float one at a time, lowest degree (largest) first, refitting
        # the others to absorb each rounding.
        c = np.zeros(len(degrees))
        for k in range(len(degrees)):
            rest = lawson(basis[:, k:], target - basis[:, :k] @ c[:k], weight)
            c[k] = np.float32(rest[0])
    else:
        c = lawson(basis, target, weight)
    xs = np.linspace(lo, hi, 200001)
    vs = var_fn(xs)
    err = np.max(np.abs(weight_fn(xs) * (np.stack([vs ** d for d in degrees], axis=1) @ c - target_fn(xs))))
    kind = "float" if f32 else "double"
    print(f"// {name}: [{lo:.6g}, {hi:.6g}], powers {list(degrees)}, max error {err * 2**24:.4f} x 2^-24")
    for d, ck in reversed(list(zip(degrees, c))):
        lit = re.sub(r"\.?0+p", "p", float(ck).hex()) + ("f" if f32 else "")
        print(f"  {lit},  // {kind} c{d} = {ck:.9g}")
    return c


vec = np.vectorize

# expm1(r) = r + r^2/2 + r^3 P(r) on |r| <= ln2/2 (plus margin for the rounded n).
inv_fact = [1 / math.factorial(k) for k in range(3, 30)]
fit("expm1 P(r)", -0.3470, 0.3470, range(0, 5),
    lambda r: series(inv_fact, r),
    lambda r: np.abs(r ** 3 / np.where(r == 0, 1.0, np.expm1(r))))

# log1p(f) = f - f^2/2 + f^3 P(f) on f = m - 1, m in [sqrt(1/2), sqrt(2)).
log_terms = [(-1) ** (k + 1) / k for k in range(3, 200)]
fit("log1p P(f)", math.sqrt(0.5) - 1, math.sqrt(2) - 1, range(0, 8),
    lambda f: series(log_terms, f),
    lambda f: np.abs(f ** 3 / np.log1p(f)))

# sin(r) = r + r^3 P(r^2) on |r| <= pi/2 (plus margin), in double.
sin_terms = [(-1) ** k / math.factorial(2 * k + 1) for k in range(1, 20)]
fit("sin P(r^2)", 1e-3, math.pi / 2 * 1.0001, range(0, 6),
    lambda r: series(sin_terms, r * r),
    lambda r: np.abs(r ** 3 / np.sin(r)),
    var_fn=lambda r: r * r, f32=False)

# sin(r) = r + r^3 S(r^2) and cos(r) = 1 - r^2/2 + r^4 C(r^2) on |r| <= pi/4 (plus margin), in
# float: the kernels of the float-reduced sin and cos.
cos_terms = [(-1) ** k / math.factorial(2 * k) for k in range(2, 20)]
fit("sin S(r^2)", 1e-3, math.pi / 4 * 1.002, range(0, 3),
    lambda r: series(sin_terms, r * r),
    lambda r: np.abs(r ** 3 / np.sin(r)),
    var_fn=lambda r: r * r)
fit("cos C(r^2)", 1e-3, math.pi / 4 * 1.002, range(0, 3),
    lambda r: series(cos_terms, r * r),
    lambda r: np.abs(r ** 4 / np.cos(r)),
    var_fn=lambda r: r * r)

# tanh(x) = x + x^3 P(x^2) on |x| < 0.625; the target (tanh x - x)/x^3 in long double.
def tanh_ratio(x):
    xl = x.astype(np.longdouble)
    return ((np.tanh(xl) - xl) / xl ** 3).astype(np.float64)

fit("tanh P(x^2)", 1e-3, 0.625, range(0, 7),
    tanh_ratio,
    lambda x: np.abs(x ** 3 / np.tanh(x)),
    var_fn=lambda x: x * x)

# erf(x) = x + x P(x^2) on |x| < 0.921875: the leading 2/sqrt(pi) = 1 + 0.128..., so that its
# rounding to float costs 2^-27 rather than 2^-24.
fit("erf P(x^2)", 1e-4, 0.921875, range(0, 7),
    lambda x: vec(math.erf)(x) / x - 1,
    lambda x: np.abs(x / vec(math.erf)(x)),
    var_fn=lambda x: x * x)

# erf(x) = 1 - e^(-x^2) Q(t), t = x - 0.921875, on [0.921875, 3.9375]; the error measured is
# that of erf itself, e^(-x^2) |Q - erfc(x) e^(x^2)|, so Q may be loose where erfc is tiny. The
# shifted variable keeps Horner's rounding small where that weight is largest.
fit("erfc Q(x - 0.921875)", 0.921875, 3.9375, range(0, 10),
    lambda x: vec(math.erfc)(x) * np.exp(x * x),
    lambda x: np.exp(-x * x),
    var_fn=lambda x: x - 0.921875)

# gelu: Phi(-|x|) = erfc(a)/2 = e^(-a^2) t R(1 - t), a = |x|/sqrt(2), t = 1/(1 + a/2), on
# [0, 4.5] (x down to kGeluZeroBelow), relative error: erfc(a) e^(a^2) / 2 falls like t, so R
# is nearly flat, and in u = 1 - t Horner starts from R(0) = 1/2 where a is small.
fit("gelu R(1 - t)", 0.0, 4.5, range(0, 9),
    lambda a: vec(math.erfc)(a) * np.exp(a * a) / 2 * (1 + 0.5 * a),
    lambda a: 1.0 / (vec(math.erfc)(a) * np.exp(a * a) / 2 * (1 + 0.5 * a)),
    var_fn=lambda a: 1.0 - 1.0 / (1.0 + 0.5 * a))
