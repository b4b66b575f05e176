// PyTorch-like printing: nested brackets, aligned columns, and "..." past 1000 elements
// (the first and last 3 entries of each dim are shown, as PyTorch's summarisation does).
#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include "autograd/dispatch.hpp"
#include "autograd/tensor_impl.hpp"

namespace tapegrad {

namespace {
constexpr std::int64_t kSummariseAbove = 1000;
constexpr std::int64_t kEdgeItems = 3;

template <class T>
std::string cell(T v) {
  if constexpr (std::is_same_v<T, bool>) {
    return v ? "true" : "false";
  } else if constexpr (std::is_integral_v<T>) {
    return fmt::format("{}", v);
  } else {
    if (std::isnan(v)) return "nan";
    if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
    return fmt::format("{:.4f}", v);
  }
}

template <class T>
struct Printer {
  const Shape& shape;
  const T* data;
  bool summarise;
  std::size_t width = 0;
  std::string out;

  bool skipped(std::int64_t i, std::int64_t n) const {
    return summarise && n > 2 * kEdgeItems && i >= kEdgeItems && i < n - kEdgeItems;
  }

  /// Calls f(flat index) for every element that is shown, in order.
  template <class F>
  void for_shown(std::size_t dim, std::int64_t offset, std::int64_t stride, F&& f) const {
    if (dim == shape.size()) {
      f(offset);
      return;
    }
    const std::int64_t n = shape[dim];
    const std::int64_t inner = stride / std::max<std::int64_t>(n, 1);
    for (std::int64_t i = 0; i < n; ++i) {
      if (!skipped(i, n)) for_shown(dim + 1, offset + i * inner, inner, f);
    }
  }

  void print(std::size_t dim, std::int64_t offset, std::int64_t stride, std::size_t indent) {
    if (dim == shape.size()) {
      out += fmt::format("{:>{}}", cell(data[offset]), width);
      return;
    }
    const std::int64_t n = shape[dim];
    const std::int64_t inner = stride / std::max<std::int64_t>(n, 1);
    const bool innermost = dim + 1 == shape.size();
    std::string between = ",";
    if (innermost) {
      between += ' ';
    } else {
      between.append(shape.size() - dim - 1, '\n');
      between.append(indent + 1, ' ');
    }
    out += '[';
    for (std::int64_t i = 0; i < n; ++i) {
      if (skipped(i, n)) {
        if (i == kEdgeItems) {
          out += "...";
          out += between;
        }
        continue;
      }
      print(dim + 1, offset + i * inner, inner, indent + 1);
      if (i + 1 < n) out += between;
    }
    out += ']';
  }
};

}  // namespace

std::string to_string(const Tensor& t) {
  if (!t.defined()) return "tensor(undefined)";
  std::string out = detail::dispatch_all(t.dtype(), [&](auto tag) {
    using T = decltype(tag);
    Printer<T> p{t.shape(), t.data<T>(), t.numel() > kSummariseAbove, 0, {}};
    p.for_shown(0, 0, t.numel(), [&](std::int64_t i) { p.width = std::max(p.width, cell(p.data[i]).size()); });
    p.out = "tensor(";
    if (t.numel() == 0) {
      p.out += "[]";
    } else {
      p.print(0, 0, t.numel(), 7);
    }
    return p.out;
  });
  out += fmt::format(", shape={}, dtype={}", t.shape(), t.dtype());
  if (!t.is_leaf()) {
    out += fmt::format(", grad_fn={}", t.grad_fn_name());
  } else if (t.requires_grad()) {
    out += ", requires_grad=true";
  }
  out += ')';
  return out;
}

}  // namespace tapegrad
