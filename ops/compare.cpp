// Ops whose results carry no gradient, so they are plain functions, not recorded: the
// comparisons and logical ops, which return bool masks (for where and masked_fill), and
// argsort and one_hot, which return i64 indices. As PyTorch:
// - eq, ne, lt, le, gt, ge compare two tensors of one dtype (any dtype) with NumPy
//   broadcasting, or a tensor with a number; NaN compares false, except ne (true).
// - logical_and/or/xor/not read any dtype as nonzero = true.
// - argsort sorts stably, so equal values keep their order in both directions; NaN sorts
//   above every number (last ascending, first descending).
// - one_hot(indices, num_classes) appends a dim of num_classes (max index + 1 when -1).
#include <algorithm>
#include <cmath>
#include <functional>
#include <numeric>

#include "ops/detail/elementwise.hpp"

namespace tapegrad {
namespace {

void check_defined(std::string_view op, const Tensor& t, std::string_view what) {
  if (!t.defined()) throw ValueError(fmt::format("{}: {} is an undefined tensor", op, what));
}

/// out = f(a, b) as bool, broadcast, a and b read as A and B and compared in their common type.
template <class A, class B, class F>
Tensor compare_as(std::string_view op, const Tensor& a, const Tensor& b, F f) {
  const Shape shape = detail::broadcast_shapes(op, a.shape(), b.shape());
  Tensor out = detail::make_tensor(shape, DType::boolean);
  bool* po = out.data<bool>();
  const A* pa = a.data<A>();
  const B* pb = b.data<B>();
  using C = std::common_type_t<A, B>;
  detail::each_broadcast<2>(shape, {a.shape(), b.shape()}, [&](std::int64_t i, const auto& at) {
    po[i] = f(static_cast<C>(pa[at[0]]), static_cast<C>(pb[at[1]]));
  });
  return out;
}

/// A comparison: a and b of one dtype, or (`with_number`) b a 0-dim f64 number compared with
/// an i64 or bool tensor (see operand()). Only those pairs are compiled: all 16 pairs of
/// dtypes for each of the 9 ops here took 45 s to build.
template <class F>
Tensor compare(std::string_view op, const Tensor& a, const Tensor& b, bool with_number, F f) {
  check_defined(op, a, "first operand");
  check_defined(op, b, "second operand");
  if (!with_number && a.dtype() != b.dtype()) {
    throw DTypeError(fmt::format("{}: operands have different dtypes, {} {} and {} {}; convert one with .to()", op,
                                 a.shape(), a.dtype(), b.shape(), b.dtype()));
  }
  Tensor out;
  detail::dispatch_all(a.dtype(), [&](auto ta) {
    using A = decltype(ta);
    if constexpr (std::is_integral_v<A>) {
      if (b.dtype() == DType::f64) {
        out = compare_as<A, double>(op, a, b, f);
        return;
      }
    }
    out = compare_as<A, A>(op, a, b, f);
  });
  return out;
}

/// A logical op: a and b of any dtypes, each read as bool (nonzero and NaN are true).
template <class F>
Tensor logical(std::string_view op, const Tensor& a, const Tensor& b, F f) {
  check_defined(op, a, "first operand");
  check_defined(op, b, "second operand");
  return compare_as<bool, bool>(op, a.detach().to(DType::boolean), b.detach().to(DType::boolean), f);
}

/// A number as a 0-dim tensor of x's dtype, for comparing x with it (as double for i64
/// and bool, so that 2 < 2.5 holds).
Tensor operand(const Tensor& x, double value) {
  const bool exact = x.defined() && is_floating(x.dtype());
  return full({}, value, exact ? x.dtype() : DType::f64);
}

template <class T>
bool is_nan(T v) {
  if constexpr (std::is_floating_point_v<T>) return std::isnan(v);
  return false;
}

}  // namespace

Tensor eq(const Tensor& a, const Tensor& b) { return compare("eq", a, b, false, std::equal_to<>{}); }
Tensor eq(const Tensor& a, double b) { return compare("eq", a, operand(a, b), true, std::equal_to<>{}); }
Tensor ne(const Tensor& a, const Tensor& b) { return compare("ne", a, b, false, std::not_equal_to<>{}); }
Tensor ne(const Tensor& a, double b) { return compare("ne", a, operand(a, b), true, std::not_equal_to<>{}); }
Tensor lt(const Tensor& a, const Tensor& b) { return compare("lt", a, b, false, std::less<>{}); }
Tensor lt(const Tensor& a, double b) { return compare("lt", a, operand(a, b), true, std::less<>{}); }
Tensor le(const Tensor& a, const Tensor& b) { return compare("le", a, b, false, std::less_equal<>{}); }
Tensor le(const Tensor& a, double b) { return compare("le", a, operand(a, b), true, std::less_equal<>{}); }
Tensor gt(const Tensor& a, const Tensor& b) { return compare("gt", a, b, false, std::greater<>{}); }
Tensor gt(const Tensor& a, double b) { return compare("gt", a, operand(a, b), true, std::greater<>{}); }
Tensor ge(const Tensor& a, const Tensor& b) { return compare("ge", a, b, false, std::greater_equal<>{}); }
Tensor ge(const Tensor& a, double b) { return compare("ge", a, operand(a, b), true, std::greater_equal<>{}); }

Tensor logical_and(const Tensor& a, const Tensor& b) { return logical("logical_and", a, b, std::logical_and<>{}); }
Tensor logical_or(const Tensor& a, const Tensor& b) { return logical("logical_or", a, b, std::logical_or<>{}); }
Tensor logical_xor(const Tensor& a, const Tensor& b) { return logical("logical_xor", a, b, std::not_equal_to<>{}); }
Tensor logical_not(const Tensor& x) {
  if (!x.defined()) throw ValueError("logical_not: input is an undefined tensor");
  return logical("logical_not", x, full({}, 0.0, DType::boolean), std::equal_to<>{});
}

Tensor argsort(const Tensor& x, std::int64_t dim, bool descending) {
  check_defined("argsort", x, "input");
  const std::size_t d = detail::normalize_dim("argsort", dim, x.dim());
  const detail::DimSplit split(x.dim() == 0 ? Shape{1} : x.shape(), x.dim() == 0 ? 0 : d);
  Tensor out = detail::make_tensor(x.shape(), DType::i64);
  std::int64_t* po = out.data<std::int64_t>();
  detail::dispatch_all(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* px = x.data<T>();
    std::vector<std::int64_t> order(static_cast<std::size_t>(split.n));
    for (std::int64_t o = 0; o < split.outer; ++o) {
      for (std::int64_t i = 0; i < split.inner; ++i) {
        const T* line = px + o * split.n * split.inner + i;
        auto at = [&](std::int64_t k) { return line[k * split.inner]; };
        std::iota(order.begin(), order.end(), std::int64_t{0});
        std::stable_sort(order.begin(), order.end(), [&](std::int64_t p, std::int64_t q) {
          const T u = at(p), v = at(q);
          if (descending) return (is_nan(u) && !is_nan(v)) || u > v;
          return (!is_nan(u) && is_nan(v)) || u < v;
        });
        for (std::int64_t k = 0; k < split.n; ++k) po[(o * split.n + k) * split.inner + i] = order[static_cast<std::size_t>(k)];
      }
    }
  });
  return out;
}

Tensor one_hot(const Tensor& indices, std::int64_t num_classes) {
  check_defined("one_hot", indices, "indices");
  if (indices.dtype() != DType::i64) {
    throw DTypeError(fmt::format("one_hot: indices must be i64, got {} {}", indices.dtype(), indices.shape()));
  }
  const std::int64_t* pi = indices.data<std::int64_t>();
  const std::int64_t n = indices.numel();
  if (num_classes < -1) throw ValueError(fmt::format("one_hot: num_classes must be -1 or at least 0, got {}", num_classes));
  if (num_classes == -1) {
    if (n == 0) {
      throw ValueError(fmt::format("one_hot: cannot infer the number of classes from the empty indices {}; "
                                   "pass num_classes", indices.shape()));
    }
    num_classes = *std::max_element(pi, pi + n) + 1;
  }
  for (std::int64_t i = 0; i < n; ++i) {
    if (pi[i] < 0 || pi[i] >= num_classes) {
      throw ValueError(fmt::format("one_hot: index {} (element {} of {}) is outside [0, {})", pi[i], i,
                                   indices.shape(), num_classes));
    }
  }
  Shape shape = indices.shape();
  shape.push_back(num_classes);
  Tensor out = zeros(shape, DType::i64);
  std::int64_t* po = out.data<std::int64_t>();
  for (std::int64_t i = 0; i < n; ++i) po[i * num_classes + pi[i]] = 1;
  return out;
}

}  // namespace tapegrad
