// Checkpoint files; the format is documented in include/tapegrad/checkpoint.hpp.
//
// Loading reads the whole file, checks the header, the size and the checksum before it
// parses a single record, and parses every record with bounds checks anyway (a file can
// carry a valid checksum and still be malformed). Tensors are created only after all of it
// passed, so a bad file never yields part of its content.
#include "tapegrad/checkpoint.hpp"

#include <zlib.h>

#include <array>
#include <bit>
#include <cstdint>
#include <cstring>
#include <limits>
#include <map>
#include <set>

#include <fmt/format.h>

#include "tapegrad/autograd.hpp"
#include "tapegrad/error.hpp"
#include "nn/file_io.hpp"

namespace tapegrad::nn {

namespace {

// Tensor data is written as it sits in memory.
static_assert(std::endian::native == std::endian::little,
              "checkpoint files are little-endian; add byte swapping for this platform");

constexpr std::array<char, 8> kMagic{'T', 'G', 'C', 'K', 'P', 'T', '\r', '\n'};
constexpr std::uint32_t kVersion = 1;
constexpr std::size_t kHeaderSize = 32;
constexpr std::size_t kCrcSize = 4;

std::uint32_t crc32_of(const std::vector<unsigned char>& bytes, std::size_t count) {
  // zlib's crc32 takes a uInt length: feed large buffers in chunks.
  uLong crc = crc32(0L, Z_NULL, 0);
  std::size_t done = 0;
  while (done < count) {
    const std::size_t chunk = std::min<std::size_t>(count - done, 1u << 30);
    crc = crc32(crc, bytes.data() + done, static_cast<uInt>(chunk));
    done += chunk;
  }
  return static_cast<std::uint32_t>(crc);
}

template <class T>
void put(std::vector<unsigned char>& out, T value) {
  const auto* p = reinterpret_cast<const unsigned char*>(&value);
  out.insert(out.end(), p, p + sizeof(T));
}

std::uint8_t dtype_code(DType dtype) {
  switch (dtype) {
    case DType::f32: return 0;
    case DType::f64: return 1;
    case DType::i64: return 2;
    case DType::boolean: return 3;
  }
  return 255;
}

std::string shape_string(const std::vector<std::int64_t>& sizes) {
  return fmt::format("[{}]", fmt::join(sizes, ", "));
}

/// Reads fixed-size fields from the file's bytes, throwing IoError past the end.
class Reader {
 public:
  Reader(const std::string& path, const std::vector<unsigned char>& bytes, std::size_t end)
      : path_(path), bytes_(bytes), end_(end) {}

  template <class T>
  T get(std::string_view what) {
    need(sizeof(T), what);
    T value;
    std::memcpy(&value, bytes_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return value;
  }
  const unsigned char* take(std::size_t count, std::string_view what) {
    need(count, what);
    const unsigned char* p = bytes_.data() + pos_;
    pos_ += count;
    return p;
  }
  std::size_t pos() const { return pos_; }

 private:
  void need(std::size_t count, std::string_view what) const {
    if (count > end_ - pos_) {
      throw IoError(fmt::format(
          "load_checkpoint: '{}' is malformed: {} needs {} bytes at offset {}, but the "
          "payload ends at offset {}",
          path_, what, count, pos_, end_));
    }
  }
  const std::string& path_;
  const std::vector<unsigned char>& bytes_;
  std::size_t end_;
  std::size_t pos_ = 0;
};

std::vector<unsigned char> encode(const NamedTensors& tensors) {
  std::set<std::string_view> names;
  std::vector<unsigned char> out(kHeaderSize);
  for (const auto& [name, t] : tensors) {
    if (name.empty()) throw ValueError("save_checkpoint: a tensor has an empty name");
    if (!names.insert(name).second) {
      throw ValueError(fmt::format("save_checkpoint: the name '{}' appears twice", name));
    }
    if (!t.defined()) {
      throw ValueError(fmt::format("save_checkpoint: tensor '{}' is undefined", name));
    }
    if (name.size() > std::numeric_limits<std::uint32_t>::max()) {
      throw ValueError("save_checkpoint: a tensor name is longer than 4 GiB");
    }
    put(out, static_cast<std::uint32_t>(name.size()));
    out.insert(out.end(), name.begin(), name.end());
    put(out, dtype_code(t.dtype()));
    put(out, static_cast<std::uint8_t>(t.dim()));
    for (std::int64_t size : t.shape()) put(out, size);
    const auto* data = static_cast<const unsigned char*>(detail::elements(t));
    out.insert(out.end(), data, data + static_cast<std::size_t>(t.numel()) * dtype_size(t.dtype()));
  }
  std::memcpy(out.data(), kMagic.data(), kMagic.size());
  std::vector<unsigned char> header;
  put(header, kVersion);
  put(header, std::uint32_t{0});
  put(header, static_cast<std::uint64_t>(tensors.size()));
  put(header, static_cast<std::uint64_t>(out.size() - kHeaderSize));
  std::memcpy(out.data() + kMagic.size(), header.data(), header.size());
  put(out, crc32_of(out, out.size()));
  return out;
}

}  // namespace

void save_checkpoint(const std::string& path, const NamedTensors& tensors) {
  detail::write_file_atomically(path, encode(tensors), "save_checkpoint");
}

NamedTensors load_checkpoint(const std::string& path) {
  const std::vector<unsigned char> bytes = detail::read_whole_file(path, "load_checkpoint");
  if (bytes.size() < kMagic.size() ||
      std::memcmp(bytes.data(), kMagic.data(), kMagic.size()) != 0) {
    throw IoError(fmt::format(
        "load_checkpoint: '{}' is not a tapegrad checkpoint: it does not start with the magic "
        "bytes \"TGCKPT\\r\\n\" ({} bytes long)",
        path, bytes.size()));
  }
  if (bytes.size() < kHeaderSize + kCrcSize) {
    throw IoError(fmt::format("load_checkpoint: '{}' is truncated: {} bytes, shorter than the "
                              "{}-byte header and checksum",
                              path, bytes.size(), kHeaderSize + kCrcSize));
  }
  Reader header(path, bytes, kHeaderSize);
  header.take(kMagic.size(), "magic");
  const auto version = header.get<std::uint32_t>("version");
  if (version != kVersion) {
    throw IoError(fmt::format("load_checkpoint: '{}' has format version {}; this tapegrad reads "
                              "version {}",
                              path, version, kVersion));
  }
  header.get<std::uint32_t>("reserved");
  const auto count = header.get<std::uint64_t>("count");
  const auto payload_size = header.get<std::uint64_t>("payload size");
  const std::size_t available = bytes.size() - kHeaderSize - kCrcSize;
  if (payload_size != available) {
    throw IoError(fmt::format(
        "load_checkpoint: '{}' is {}: the header announces a {}-byte payload, the file holds {} "
        "({} bytes in all)",
        path, payload_size > available ? "truncated" : "longer than its header says",
        payload_size, available, bytes.size()));
  }
  std::uint32_t stored_crc;
  std::memcpy(&stored_crc, bytes.data() + bytes.size() - kCrcSize, kCrcSize);
  const std::uint32_t crc = crc32_of(bytes, bytes.size() - kCrcSize);
  if (crc != stored_crc) {
    throw IoError(fmt::format("load_checkpoint: '{}' is corrupted: CRC-32 is {:#010x}, the file "
                              "says {:#010x}",
                              path, crc, stored_crc));
  }

  struct Record {
    std::string name;
    DType dtype;
    std::vector<std::int64_t> sizes;
    const unsigned char* data;
    std::size_t data_bytes;
  };
  std::vector<Record> records;
  std::set<std::string> names;
  Reader reader(path, bytes, bytes.size() - kCrcSize);
  reader.take(kHeaderSize, "header");
  for (std::uint64_t i = 0; i < count; ++i) {
    Record r;
    const auto name_length = reader.get<std::uint32_t>(fmt::format("the name length of record {}", i));
    const unsigned char* name = reader.take(name_length, fmt::format("the name of record {}", i));
    r.name.assign(reinterpret_cast<const char*>(name), name_length);
    if (r.name.empty() || !names.insert(r.name).second) {
      throw IoError(fmt::format("load_checkpoint: '{}' is malformed: record {} has {} name '{}'",
                                path, i, r.name.empty() ? "an empty" : "a duplicate", r.name));
    }
    const auto code = reader.get<std::uint8_t>(fmt::format("the dtype of '{}'", r.name));
    if (code > 3) {
      throw IoError(fmt::format("load_checkpoint: '{}' is malformed: tensor '{}' has dtype code "
                                "{} (0 = f32, 1 = f64, 2 = i64, 3 = bool)",
                                path, r.name, code));
    }
    constexpr std::array<DType, 4> kCodes{DType::f32, DType::f64, DType::i64, DType::boolean};
    r.dtype = kCodes[code];
    const auto rank = reader.get<std::uint8_t>(fmt::format("the rank of '{}'", r.name));
    if (rank > Shape::kMaxRank) {
      throw IoError(fmt::format("load_checkpoint: '{}' is malformed: tensor '{}' has rank {}, "
                                "more than {}",
                                path, r.name, rank, Shape::kMaxRank));
    }
    // The sizes follow the rule of every tensor shape: each partial product fits in int64,
    // so [2^62, 2^62, 0] is refused here although it multiplies to 0 (empty() would refuse
    // it later with a ValueError that does not name the file).
    std::int64_t numel = 1;
    bool overflow = false;
    for (std::uint8_t d = 0; d < rank; ++d) {
      const auto size = reader.get<std::int64_t>(fmt::format("the sizes of '{}'", r.name));
      r.sizes.push_back(size);
      if (size < 0) {
        throw IoError(fmt::format("load_checkpoint: '{}' is malformed: tensor '{}' has shape {}",
                                  path, r.name, shape_string(r.sizes)));
      }
      if (size != 0 && numel > std::numeric_limits<std::int64_t>::max() / size) overflow = true;
      else numel *= size;
    }
    if (overflow) {
      throw IoError(fmt::format("load_checkpoint: '{}' is malformed: tensor '{}' has shape {}, "
                                "whose sizes multiply past int64",
                                path, r.name, shape_string(r.sizes)));
    }
    if (static_cast<std::uint64_t>(numel) > bytes.size()) {
      throw IoError(fmt::format("load_checkpoint: '{}' is malformed: tensor '{}' of shape {} is "
                                "larger than the file",
                                path, r.name, shape_string(r.sizes)));
    }
    r.data_bytes = static_cast<std::size_t>(numel) * dtype_size(r.dtype);
    r.data = reader.take(r.data_bytes, fmt::format("the data of '{}' ({} {}, shape {})", r.name,
                                                   r.dtype, numel, shape_string(r.sizes)));
    records.push_back(std::move(r));
  }
  if (reader.pos() != bytes.size() - kCrcSize) {
    throw IoError(fmt::format("load_checkpoint: '{}' is malformed: {} bytes follow the last of "
                              "its {} records",
                              path, bytes.size() - kCrcSize - reader.pos(), count));
  }

  NamedTensors out;
  out.reserve(records.size());
  for (const Record& r : records) {
    Tensor t = empty(Shape(r.sizes), r.dtype);
    if (r.data_bytes != 0) {
      std::memcpy(detail::elements(t), r.data, r.data_bytes);
    }
    out.emplace_back(r.name, std::move(t));
  }
  return out;
}

void assign_named(const NamedTensors& targets, const NamedTensors& values,
                  std::string_view origin) {
  std::map<std::string_view, const Tensor*> by_name;
  for (const auto& [name, t] : values) by_name.emplace(name, &t);
  std::vector<std::string> missing;
  std::vector<std::string> shape_errors;
  std::vector<std::string> dtype_errors;
  std::set<std::string_view> target_names;
  for (const auto& [name, target] : targets) {
    target_names.insert(name);
    auto it = by_name.find(name);
    if (it == by_name.end()) {
      missing.push_back(name);
      continue;
    }
    const Tensor& value = *it->second;
    if (!target.defined() || !value.defined()) {
      throw ValueError(fmt::format("load: tensor '{}' is undefined ({})", name,
                                   target.defined() ? origin : "target"));
    }
    if (target.shape() != value.shape()) {
      shape_errors.push_back(fmt::format("'{}': expected {}, {} has {}", name, target.shape(),
                                         origin, value.shape()));
    }
    if (target.dtype() != value.dtype()) {
      dtype_errors.push_back(fmt::format("'{}': expected {}, {} has {}", name, target.dtype(),
                                         origin, value.dtype()));
    }
  }
  std::vector<std::string> extra;
  for (const auto& [name, t] : values) {
    if (!target_names.contains(name)) extra.push_back(name);
  }
  if (missing.empty() && extra.empty() && shape_errors.empty() && dtype_errors.empty()) {
    NoGradGuard no_grad;
    for (const auto& [name, target] : targets) {
      Tensor dst = target;
      dst.copy_(*by_name.at(name));
    }
    return;
  }
  // One message lists every problem; the exception type is that of the first kind found.
  std::string message = fmt::format("load: '{}' does not match the targets; nothing was loaded.",
                                    origin);
  if (!missing.empty()) message += fmt::format(" Missing: '{}'.", fmt::join(missing, "', '"));
  if (!extra.empty()) message += fmt::format(" Unexpected: '{}'.", fmt::join(extra, "', '"));
  if (!shape_errors.empty()) {
    message += fmt::format(" Shape mismatch: {}.", fmt::join(shape_errors, "; "));
  }
  if (!dtype_errors.empty()) {
    message += fmt::format(" Dtype mismatch: {}.", fmt::join(dtype_errors, "; "));
  }
  if (!missing.empty() || !extra.empty()) throw ValueError(message);
  if (!shape_errors.empty()) throw ShapeError(message);
  throw DTypeError(message);
}

void load_into(const std::string& path, const NamedTensors& targets) {
  assign_named(targets, load_checkpoint(path), path);
}

NamedTensors strip_prefix(const NamedTensors& tensors, std::string_view prefix) {
  NamedTensors out;
  for (const auto& [name, t] : tensors) {
    if (name.starts_with(prefix)) out.emplace_back(name.substr(prefix.size()), t);
  }
  return out;
}

NamedTensors add_prefix(const NamedTensors& tensors, std::string_view prefix) {
  NamedTensors out;
  out.reserve(tensors.size());
  for (const auto& [name, t] : tensors) out.emplace_back(fmt::format("{}{}", prefix, name), t);
  return out;
}

}  // namespace tapegrad::nn
