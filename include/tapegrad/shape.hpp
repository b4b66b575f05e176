#pragma once
/// \file
/// Shape: the sizes of a tensor, stored inline (no heap allocation) up to kMaxRank dims.
#include <array>
#include <cstdint>
#include <initializer_list>
#include <span>
#include <string>
#include <vector>

#include <fmt/format.h>

namespace tapegrad {

/// Element types. f32 and f64 are differentiable; i64 holds indices and class labels;
/// boolean (one byte per element, as PyTorch's torch.bool) holds masks: what comparisons
/// return and where / masked_fill read.
enum class DType : std::uint8_t { f32, f64, i64, boolean };

/// "f32", "f64", "i64" or "bool".
std::string_view dtype_name(DType dtype);
/// Size of one element in bytes.
std::size_t dtype_size(DType dtype);
/// True for f32 and f64.
constexpr bool is_floating(DType dtype) { return dtype == DType::f32 || dtype == DType::f64; }

/// Sizes of a tensor, outermost first (NCHW for images). Rank 0 is a scalar.
class Shape {
 public:
  static constexpr std::size_t kMaxRank = 8;

  Shape() = default;
  Shape(std::initializer_list<std::int64_t> sizes);  // NOLINT: shapes read best as {2, 3}
  explicit Shape(std::span<const std::int64_t> sizes);
  explicit Shape(const std::vector<std::int64_t>& sizes)
      : Shape(std::span<const std::int64_t>(sizes)) {}

  std::size_t size() const { return rank_; }
  bool empty() const { return rank_ == 0; }
  std::int64_t operator[](std::size_t i) const { return sizes_[i]; }
  std::int64_t& operator[](std::size_t i) { return sizes_[i]; }
  const std::int64_t* begin() const { return sizes_.data(); }
  const std::int64_t* end() const { return sizes_.data() + rank_; }
  std::int64_t* begin() { return sizes_.data(); }
  std::int64_t* end() { return sizes_.data() + rank_; }
  std::int64_t back() const { return sizes_[rank_ - 1]; }
  void push_back(std::int64_t size);
  std::vector<std::int64_t> to_vector() const { return {begin(), end()}; }

  /// Product of the sizes (1 for rank 0). Assumes the shape was validated.
  std::int64_t numel() const;

  friend bool operator==(const Shape& a, const Shape& b);

 private:
  std::array<std::int64_t, kMaxRank> sizes_{};
  std::size_t rank_ = 0;
};

/// "[2, 3, 28, 28]"
std::string to_string(const Shape& shape);

}  // namespace tapegrad

template <>
struct fmt::formatter<tapegrad::Shape> : fmt::formatter<std::string_view> {
  auto format(const tapegrad::Shape& s, format_context& ctx) const {
    return fmt::formatter<std::string_view>::format(tapegrad::to_string(s), ctx);
  }
};

template <>
struct fmt::formatter<tapegrad::DType> : fmt::formatter<std::string_view> {
  auto format(tapegrad::DType d, format_context& ctx) const {
    return fmt::formatter<std::string_view>::format(tapegrad::dtype_name(d), ctx);
  }
};
