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

struct Printer {
  const Shape& shape;
  std::vector<std::string> cells;  // every element, already formatted
  std::size_t width = 0;
  bool summarise = false;
  std::string out;

  bool skipped(std::int64_t i, std::int64_t n) const {
    return summarise && n > 2 * kEdgeItems && i >= kEdgeItems && i < n - kEdgeItems;
  }

  void print(std::size_t dim, std::int64_t offset, std::int64_t stride, std::size_t indent) {
    if (dim == shape.size()) {
      out += fmt::format("{:>{}}", cells[static_cast<std::size_t>(offset)], width);
      return;
    }
    const std::int64_t n = shape[dim];
    const std::int64_t inner = stride / std::max<std::int64_t>(n, 1);
    out += '[';
    for (std::int64_t i = 0; i < n; ++i) {
      if (skipped(i, n)) {
        if (i == kEdgeItems) out += dim + 1 == shape.size() ? "...," : "...,\n";
        if (i == kEdgeItems && dim + 1 < shape.size()) out += std::string(indent + 1, ' ');
        continue;
      }
      print(dim + 1, offset + i * inner, inner, indent + 1);
      if (i + 1 < n) {
        if (dim + 1 == shape.size()) {
          out += ", ";
        } else {
          out += ',';
          out += std::string(shape.size() - dim - 1, '\n');
          out += std::string(indent + 1, ' ');
        }
      }
    }
    out += ']';
  }
};

template <class T>
std::string cell(T v) {
  if constexpr (std::is_integral_v<T>) {
    return fmt::format("{}", v);
  } else {
    if (std::isnan(v)) return "nan";
    if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
    return fmt::format("{:.4f}", v);
  }
}
}  // namespace

std::string to_string(const Tensor& t) {
  if (!t.defined()) return "tensor(undefined)";
  const Shape& shape = t.shape();
  Printer p{shape, {}, 0, t.numel() > kSummariseAbove, {}};
  detail::dispatch_all(t.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* data = t.data<T>();
    p.cells.reserve(static_cast<std::size_t>(t.numel()));
    for (std::int64_t i = 0; i < t.numel(); ++i) p.cells.push_back(cell(data[i]));
  });
  for (const auto& c : p.cells) p.width = std::max(p.width, c.size());
  p.out = "tensor(";
  if (t.numel() == 0) {
    p.out += "[]";
  } else {
    p.print(0, 0, t.numel(), 7);
  }
  p.out += fmt::format(", shape={}, dtype={}", shape, t.dtype());
  if (!t.is_leaf()) {
    p.out += fmt::format(", grad_fn={}", t.grad_fn_name());
  } else if (t.requires_grad()) {
    p.out += ", requires_grad=true";
  }
  p.out += ')';
  return p.out;
}

}  // namespace tapegrad
