#pragma once
// Whole-file reads and atomic writes shared by the tensor file formats (checkpoint.cpp,
// safetensors.cpp). Internal: not a public header.
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "tapegrad/tensor.hpp"

namespace tapegrad::nn::detail {

/// Every byte of the file at `path`. Throws IoError starting with `fn` (the public function
/// that reads) on a directory, a missing or unreadable file.
std::vector<unsigned char> read_whole_file(const std::string& path, std::string_view fn);

/// Writes `bytes` to `<path>.tmp`, flushes it to disk (fsync), renames it over `path` and
/// syncs the directory, so an interrupted write leaves the previous file intact. Throws
/// IoError starting with `fn`, naming the file and the system's reason; the temporary file
/// is removed on failure.
void write_file_atomically(const std::string& path, const std::vector<unsigned char>& bytes,
                           std::string_view fn);

/// The first byte of t's elements, whatever its dtype (TensorT: Tensor or const Tensor).
template <class TensorT>
auto elements(TensorT& t) -> std::conditional_t<std::is_const_v<TensorT>, const void*, void*> {
  switch (t.dtype()) {
    case DType::f32: return t.template data<float>();
    case DType::f64: return t.template data<double>();
    case DType::i64: return t.template data<std::int64_t>();
    case DType::boolean: return t.template data<bool>();
  }
  return nullptr;
}

}  // namespace tapegrad::nn::detail
