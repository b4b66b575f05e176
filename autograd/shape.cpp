#include "tapegrad/shape.hpp"

#include <fmt/format.h>

#include "tapegrad/error.hpp"

namespace tapegrad {

std::string_view dtype_name(DType dtype) {
  switch (dtype) {
    case DType::f32: return "f32";
    case DType::f64: return "f64";
    case DType::i64: return "i64";
    case DType::boolean: return "bool";
  }
  return "?";
}

std::size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::f32: return 4;
    case DType::boolean: return 1;
    case DType::f64:
    case DType::i64: return 8;
  }
  return 8;
}

Shape::Shape(std::initializer_list<std::int64_t> sizes)
    : Shape(std::span<const std::int64_t>(sizes.begin(), sizes.size())) {}

Shape::Shape(std::span<const std::int64_t> sizes) {
  if (sizes.size() > kMaxRank) {
    throw ShapeError(fmt::format("Shape: rank {} exceeds the maximum rank {}", sizes.size(), kMaxRank));
  }
  for (std::int64_t s : sizes) sizes_[rank_++] = s;
}

void Shape::push_back(std::int64_t size) {
  if (rank_ == kMaxRank) {
    throw ShapeError(fmt::format("Shape: rank would exceed the maximum rank {}", kMaxRank));
  }
  sizes_[rank_++] = size;
}

std::int64_t Shape::numel() const {
  std::int64_t n = 1;
  for (std::int64_t s : *this) n *= s;
  return n;
}

bool operator==(const Shape& a, const Shape& b) {
  if (a.rank_ != b.rank_) return false;
  for (std::size_t i = 0; i < a.rank_; ++i) {
    if (a.sizes_[i] != b.sizes_[i]) return false;
  }
  return true;
}

std::string to_string(const Shape& shape) { return fmt::format("[{}]", fmt::join(shape, ", ")); }

}  // namespace tapegrad
