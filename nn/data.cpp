// IDX files, Dataset and DataLoader.
//
// IDX (http://yann.lecun.com/exdb/mnist/): bytes 0 and 1 are zero, byte 2 is the element
// type (0x08 = unsigned byte), byte 3 the number of dims; then one big-endian u32 per dim,
// then the values row-major. zlib's gz* functions read gzip and plain files alike.
#include "tapegrad/data.hpp"

#include <sys/stat.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <filesystem>
#include <limits>
#include <random>
#include <string_view>
#include <type_traits>

#include <fmt/format.h>

#include "tapegrad/error.hpp"

namespace tapegrad::nn {

namespace {

constexpr std::uint8_t kIdxUnsignedByte = 0x08;

/// A gzFile that closes itself.
class GzFile {
 public:
  explicit GzFile(const std::string& path) : path_(path) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) {
      throw IoError(fmt::format("read_idx: cannot open '{}': {}", path, std::strerror(errno)));
    }
    if (S_ISDIR(st.st_mode)) {
      throw IoError(fmt::format("read_idx: '{}' is a directory, not an IDX file", path));
    }
    file_ = gzopen(path.c_str(), "rb");
    if (file_ == nullptr) {
      throw IoError(fmt::format("read_idx: cannot open '{}': {}", path,
                                errno != 0 ? std::strerror(errno) : "out of memory"));
    }
    gzbuffer(file_, 1 << 17);
  }
  ~GzFile() { gzclose(file_); }
  GzFile(const GzFile&) = delete;
  GzFile& operator=(const GzFile&) = delete;

  /// Reads up to `count` bytes; returns how many were read (less only at the end of data).
  std::size_t read(void* dst, std::size_t count) {
    std::size_t done = 0;
    while (done < count) {
      const auto chunk = static_cast<unsigned>(std::min<std::size_t>(count - done, INT_MAX / 2));
      const int n = gzread(file_, static_cast<char*>(dst) + done, chunk);
      if (n < 0) throw_zlib_error();
      if (n == 0) break;
      done += static_cast<std::size_t>(n);
    }
    // A gzip stream cut short (even inside its CRC trailer) reads as a short count plus
    // Z_BUF_ERROR; a plain file that ends is just a short count.
    int code = Z_OK;
    gzerror(file_, &code);
    if (code != Z_OK) throw_zlib_error();
    return done;
  }

 private:
  [[noreturn]] void throw_zlib_error() {
    int code = Z_OK;
    const char* message = gzerror(file_, &code);
    throw IoError(fmt::format("read_idx: '{}' is truncated or corrupt: zlib says \"{}\" (code {})", path_,
                              message, code));
  }
  std::string path_;
  gzFile file_;
};

std::uint32_t big_endian_u32(const unsigned char* p) {
  return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) |
         std::uint32_t{p[3]};
}

std::string sizes_string(const std::vector<std::int64_t>& sizes) {
  return fmt::format("[{}]", fmt::join(sizes, ", "));
}

/// Draws uniformly from [0, n) with rejection, so the sequence is the same on every
/// standard library (std::uniform_int_distribution is not).
std::uint64_t uniform_below(std::mt19937_64& gen, std::uint64_t n) {
  const std::uint64_t limit = std::numeric_limits<std::uint64_t>::max() -
                              std::numeric_limits<std::uint64_t>::max() % n;
  std::uint64_t x = gen();
  while (x >= limit) x = gen();
  return x % n;
}

}  // namespace

IdxArray read_idx(const std::string& path) {
  GzFile file(path);
  unsigned char magic[4];
  const std::size_t got = file.read(magic, 4);
  if (got < 4) {
    throw IoError(fmt::format("read_idx: '{}' is truncated: {} bytes, shorter than the 4-byte "
                              "IDX magic number",
                              path, got));
  }
  if (magic[0] != 0 || magic[1] != 0 || magic[2] != kIdxUnsignedByte || magic[3] == 0 ||
      magic[3] > Shape::kMaxRank) {
    throw IoError(fmt::format(
        "read_idx: '{}' is not an IDX file of unsigned bytes: magic number is {:02x} {:02x} "
        "{:02x} {:02x}, expected 00 00 08 followed by the number of dims (1..{})",
        path, magic[0], magic[1], magic[2], magic[3], Shape::kMaxRank));
  }
  IdxArray out;
  // The count stops growing at the limit instead of wrapping: sizes [65536, 65536, 65536,
  // 65536] would wrap to 0 values and pass for a file that holds none.
  const std::size_t limit = max_tensor_bytes();
  std::size_t count = 1;
  bool has_zero = false;
  bool over_limit = false;
  for (unsigned d = 0; d < magic[3]; ++d) {
    unsigned char size[4];
    if (file.read(size, 4) < 4) {
      throw IoError(fmt::format("read_idx: '{}' is truncated inside its header ({} dims "
                                "announced, {} sizes present)",
                                path, magic[3], d));
    }
    const std::uint32_t n = big_endian_u32(size);
    out.sizes.push_back(n);
    if (n == 0) has_zero = true;
    else if (count > limit / n) over_limit = true;
    else count *= n;
  }
  if (over_limit && !has_zero) {
    throw IoError(fmt::format("read_idx: '{}' announces sizes {}, more values than the {} bytes "
                              "a tensor may use",
                              path, sizes_string(out.sizes), limit));
  }
  if (has_zero) count = 0;
  // The buffer grows only as data arrives (doubling from 1 MiB), never ahead of it on the
  // header's word: 16 bytes may announce gigabytes, and a short file must cost what it holds.
  std::size_t read = 0;
  while (read < count) {
    const std::size_t chunk = std::min(count - read, std::max<std::size_t>(read, 1 << 20));
    out.values.resize(read + chunk);
    const std::size_t arrived = file.read(out.values.data() + read, chunk);
    read += arrived;
    if (arrived < chunk) break;
  }
  if (read < count) {
    throw IoError(fmt::format("read_idx: '{}' is truncated: sizes {} need {} values, the file "
                              "holds {}",
                              path, sizes_string(out.sizes), count, read));
  }
  unsigned char extra;
  if (file.read(&extra, 1) != 0) {
    throw IoError(fmt::format("read_idx: '{}' holds more data than its sizes {} announce ({} "
                              "values)",
                              path, sizes_string(out.sizes), count));
  }
  return out;
}

namespace {

/// An IDX file of images [N, rows, cols]; `fn` names the caller in the error.
IdxArray read_image_bytes(const std::string& path, std::string_view fn) {
  IdxArray idx = read_idx(path);
  if (idx.sizes.size() != 3) {
    throw IoError(fmt::format("{}: '{}' holds sizes {}; images need 3 dims [N, rows, cols]", fn,
                              path, sizes_string(idx.sizes)));
  }
  return idx;
}

Shape image_shape(const IdxArray& images) { return {images.sizes[0], 1, images.sizes[1], images.sizes[2]}; }

double pixel_factor(PixelScale scale) { return scale == PixelScale::unit ? 1.0 / 255.0 : 1.0; }

/// An f32 tensor of `shape` holding byte * scale.
Tensor bytes_to_f32(const std::vector<std::uint8_t>& bytes, const Shape& shape, double scale) {
  Tensor out = empty(shape, DType::f32);
  float* dst = out.data<float>();
  const auto factor = static_cast<float>(scale);
  for (std::size_t i = 0; i < bytes.size(); ++i) dst[i] = static_cast<float>(bytes[i]) * factor;
  return out;
}

}  // namespace

Tensor read_idx_images(const std::string& path, PixelScale scale) {
  const IdxArray idx = read_image_bytes(path, "read_idx_images");
  return bytes_to_f32(idx.values, image_shape(idx), pixel_factor(scale));
}

Tensor read_idx_labels(const std::string& path) {
  const IdxArray idx = read_idx(path);
  if (idx.sizes.size() != 1) {
    throw IoError(fmt::format("read_idx_labels: '{}' holds sizes {}; labels need 1 dim [N]", path,
                              sizes_string(idx.sizes)));
  }
  Tensor labels = empty({idx.sizes[0]}, DType::i64);
  std::copy(idx.values.begin(), idx.values.end(), labels.data<std::int64_t>());
  return labels;
}

// ---- Dataset ---------------------------------------------------------------------------------

Dataset::Dataset(Tensor images, Tensor labels)
    : images_(std::move(images)), labels_(std::move(labels)) {
  if (!images_.defined() || !labels_.defined()) {
    throw ValueError("Dataset: images and labels must be defined tensors");
  }
  if (!is_floating(images_.dtype())) {
    throw DTypeError(fmt::format("Dataset: images must be f32 or f64, got {}", images_.dtype()));
  }
  if (labels_.dtype() != DType::i64) {
    throw DTypeError(fmt::format("Dataset: labels must be i64, got {}", labels_.dtype()));
  }
  if (labels_.dim() != 1 || images_.dim() < 1 || images_.size(0) != labels_.size(0)) {
    throw ShapeError(fmt::format("Dataset: images [N, ...] and labels [N] must have the same N; "
                                 "got images {} and labels {}",
                                 images_.shape(), labels_.shape()));
  }
}

Dataset Dataset::from_bytes(std::vector<std::uint8_t> bytes, const Shape& shape, double scale,
                            Tensor labels) {
  if (!labels.defined()) throw ValueError("Dataset::from_bytes: labels must be a defined tensor");
  if (labels.dtype() != DType::i64) {
    throw DTypeError(fmt::format("Dataset::from_bytes: labels must be i64, got {}", labels.dtype()));
  }
  if (shape.size() < 1 || static_cast<std::uint64_t>(shape.numel()) != bytes.size() ||
      labels.dim() != 1 || shape[0] != labels.size(0)) {
    throw ShapeError(fmt::format("Dataset::from_bytes: {} bytes for images {} and labels {}: the "
                                 "bytes must fill the images [N, ...] and labels be [N]",
                                 bytes.size(), shape, labels.shape()));
  }
  Dataset d;
  d.bytes_ = std::make_shared<const Bytes>(Bytes{std::move(bytes), shape, scale});
  d.labels_ = std::move(labels);
  return d;
}

Tensor Dataset::images() const {
  return bytes_ ? bytes_to_f32(bytes_->values, bytes_->shape, bytes_->scale) : images_;
}

Shape Dataset::images_shape() const { return bytes_ ? bytes_->shape : images_.defined() ? images_.shape() : Shape{}; }

DType Dataset::images_dtype() const { return bytes_ ? DType::f32 : images_.dtype(); }

Dataset Dataset::head(std::int64_t n) const {
  n = std::clamp<std::int64_t>(n, 0, size());
  Tensor labels = empty({n}, DType::i64);
  std::copy_n(labels_.data<std::int64_t>(), n, labels.data<std::int64_t>());
  Shape image_shape = images_shape();
  image_shape[0] = n;
  if (bytes_) {
    const auto count = static_cast<std::ptrdiff_t>(image_shape.numel());
    return from_bytes({bytes_->values.begin(), bytes_->values.begin() + count}, image_shape, bytes_->scale,
                      labels);
  }
  Tensor images = empty(image_shape, images_.dtype());
  const std::size_t image_bytes =
      static_cast<std::size_t>(images.numel()) * dtype_size(images.dtype());
  if (image_bytes != 0) {
    const void* src = images_.dtype() == DType::f32 ? static_cast<const void*>(images_.data<float>())
                                                    : images_.data<double>();
    void* dst = images.dtype() == DType::f32 ? static_cast<void*>(images.data<float>())
                                             : images.data<double>();
    std::memcpy(dst, src, image_bytes);
  }
  return Dataset(images, labels);
}

Dataset load_mnist(const std::string& dir, MnistSplit split, PixelScale scale) {
  const std::string prefix = split == MnistSplit::train ? "train" : "t10k";
  auto find = [&](const std::string& stem) {
    const std::filesystem::path plain = std::filesystem::path(dir) / stem;
    const std::filesystem::path gz = std::filesystem::path(dir) / (stem + ".gz");
    std::error_code ec;
    if (std::filesystem::is_regular_file(plain, ec)) return plain.string();
    if (std::filesystem::is_regular_file(gz, ec)) return gz.string();
    throw IoError(fmt::format("load_mnist: missing {} file: looked for '{}' and '{}'", stem,
                              plain.string(), gz.string()));
  };
  const std::string images_path = find(prefix + "-images-idx3-ubyte");
  const std::string labels_path = find(prefix + "-labels-idx1-ubyte");
  // The pixels stay bytes (47 MB for the training set instead of 188 MB as f32).
  IdxArray images = read_image_bytes(images_path, "load_mnist");
  Tensor labels = read_idx_labels(labels_path);
  if (images.sizes[0] != labels.size(0)) {
    throw IoError(fmt::format("load_mnist: '{}' holds {} images but '{}' holds {} labels",
                              images_path, images.sizes[0], labels_path, labels.size(0)));
  }
  const Shape shape = image_shape(images);
  return Dataset::from_bytes(std::move(images.values), shape, pixel_factor(scale), labels);
}

// ---- DataLoader ------------------------------------------------------------------------------

DataLoader::DataLoader(Dataset dataset, DataLoaderOptions options)
    : dataset_(std::move(dataset)), options_(options) {
  if (options_.batch_size < 1) {
    throw ValueError(fmt::format("DataLoader: batch_size must be >= 1, got {}",
                                 options_.batch_size));
  }
  if (options_.mean.has_value() != options_.std.has_value()) {
    throw ValueError("DataLoader: set both mean and std for normalisation, or neither");
  }
  if (options_.std.has_value() && !(*options_.std > 0)) {
    throw ValueError(fmt::format("DataLoader: std must be > 0, got {}", *options_.std));
  }
}

std::int64_t DataLoader::num_batches() const {
  const std::int64_t n = dataset_.size();
  const std::int64_t b = options_.batch_size;
  return options_.drop_last ? n / b : (n + b - 1) / b;
}

std::vector<std::int64_t> DataLoader::order(std::int64_t e) const {
  std::vector<std::int64_t> order(static_cast<std::size_t>(dataset_.size()));
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = static_cast<std::int64_t>(i);
  if (options_.shuffle) {
    // seed_seq and mt19937_64 are fully specified by the standard: same orders everywhere.
    std::seed_seq seq{static_cast<std::uint32_t>(options_.seed),
                      static_cast<std::uint32_t>(options_.seed >> 32),
                      static_cast<std::uint32_t>(e), static_cast<std::uint32_t>(e >> 32)};
    std::mt19937_64 gen(seq);
    for (std::size_t i = order.size(); i > 1; --i) {
      std::swap(order[i - 1], order[uniform_below(gen, i)]);
    }
  }
  return order;
}

DataLoader::Epoch DataLoader::epoch(std::int64_t e) const& {
  return Epoch(this, e, std::make_shared<const std::vector<std::int64_t>>(order(e)));
}

DataLoader::Iterator DataLoader::begin() { return epoch(next_epoch_++).begin(); }
DataLoader::Iterator DataLoader::end() const { return Iterator(this, nullptr, num_batches()); }

DataLoader::Iterator DataLoader::Epoch::begin() const { return Iterator(loader_, order_, 0); }
DataLoader::Iterator DataLoader::Epoch::end() const {
  return Iterator(loader_, order_, loader_->num_batches());
}

Batch DataLoader::Iterator::operator*() const { return loader_->make_batch(*order_, batch_); }

DataLoader::Iterator& DataLoader::Iterator::operator++() {
  ++batch_;
  return *this;
}

Batch DataLoader::make_batch(const std::vector<std::int64_t>& order, std::int64_t batch) const {
  const std::int64_t b = options_.batch_size;
  const std::int64_t begin = batch * b;
  const std::int64_t count = std::min<std::int64_t>(b, dataset_.size() - begin);
  Shape shape = dataset_.images_shape();
  const std::int64_t per_sample = dataset_.size() == 0 ? 0 : shape.numel() / dataset_.size();
  shape[0] = count;
  Batch out{empty(shape, dataset_.images_dtype()), empty({count}, DType::i64)};
  const std::int64_t* labels = dataset_.labels().data<std::int64_t>();
  std::int64_t* dst_labels = out.labels.data<std::int64_t>();
  // Sample values are scale * stored value (scale: 1 for float images); with mean and std
  // set, (value - mean) / std.
  auto gather = [&](auto* dst, const auto* src, double scale) {
    const double mean = options_.mean.value_or(0.0);
    const double inv_std = 1.0 / options_.std.value_or(1.0);
    using T = std::remove_cv_t<std::remove_pointer_t<decltype(dst)>>;
    const auto a = static_cast<T>(scale * inv_std), c = static_cast<T>(-mean * inv_std);
    for (std::int64_t i = 0; i < count; ++i) {
      const std::int64_t index = order[static_cast<std::size_t>(begin + i)];
      dst_labels[i] = labels[index];
      const auto* from = src + index * per_sample;
      T* to = dst + i * per_sample;
      if (options_.mean || scale != 1.0) {
        for (std::int64_t k = 0; k < per_sample; ++k) to[k] = static_cast<T>(from[k]) * a + c;
      } else {
        std::copy_n(from, per_sample, to);
      }
    }
  };
  if (dataset_.bytes_) {
    gather(out.images.data<float>(), dataset_.bytes_->values.data(), dataset_.bytes_->scale);
  } else if (dataset_.images_dtype() == DType::f32) {
    gather(out.images.data<float>(), dataset_.images_.data<float>(), 1.0);
  } else {
    gather(out.images.data<double>(), dataset_.images_.data<double>(), 1.0);
  }
  return out;
}

}  // namespace tapegrad::nn
