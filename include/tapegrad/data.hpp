#pragma once
/// \file
/// Data: a reader for IDX files (the MNIST and Fashion-MNIST format, gzipped or not), an
/// in-memory Dataset of images and labels, and a DataLoader that batches it with seeded
/// shuffling.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "tapegrad/tensor.hpp"

namespace tapegrad::nn {

/// The content of an IDX file of unsigned bytes (type code 0x08): its sizes and its values.
struct IdxArray {
  std::vector<std::int64_t> sizes;
  std::vector<std::uint8_t> values;  ///< row-major, product(sizes) elements
};

/// Reads an IDX file of unsigned bytes, plain or gzip-compressed (detected from its content,
/// not its name). Throws IoError naming the file on a missing or unreadable file, a bad magic
/// number (the first two bytes must be 0, the third the type 0x08), a corrupt gzip stream, or
/// data shorter or longer than the sizes in the header.
IdxArray read_idx(const std::string& path);

/// How read_idx_images scales the pixel values.
enum class PixelScale {
  unit,  ///< value / 255, in [0, 1]
  raw,   ///< the byte value 0..255 as a float
};

/// An IDX file of images [N, rows, cols] -> f32 [N, 1, rows, cols].
Tensor read_idx_images(const std::string& path, PixelScale scale = PixelScale::unit);
/// An IDX file of labels [N] -> i64 [N].
Tensor read_idx_labels(const std::string& path);

/// Images and their labels, in memory. images: [N, ...] floating, labels: [N] i64. The
/// images may instead be kept as bytes (see from_bytes), as load_mnist does: a quarter of
/// the memory of f32, converted batch by batch by the DataLoader.
class Dataset {
 public:
  Dataset() = default;
  /// Throws ShapeError when the first sizes differ or labels is not 1-D, DTypeError when
  /// labels is not i64 or images not floating.
  Dataset(Tensor images, Tensor labels);
  /// Images of shape [N, ...] kept as bytes: image value = byte * scale, as f32. Throws
  /// ShapeError when bytes does not hold shape's element count or the first sizes differ,
  /// DTypeError when labels is not i64.
  static Dataset from_bytes(std::vector<std::uint8_t> bytes, const Shape& shape, double scale,
                            Tensor labels);

  std::int64_t size() const { return labels_.defined() ? labels_.size(0) : 0; }
  /// The images as one tensor [N, ...]. For a Dataset kept as bytes this converts them all to
  /// a new f32 tensor on each call (the DataLoader never does).
  Tensor images() const;
  /// images().shape() and images().dtype(), without converting anything.
  Shape images_shape() const;
  DType images_dtype() const;
  const Tensor& labels() const { return labels_; }
  /// The first min(n, size()) samples (copied).
  Dataset head(std::int64_t n) const;

 private:
  friend class DataLoader;
  /// Images kept as bytes: value = byte * scale.
  struct Bytes {
    std::vector<std::uint8_t> values;
    Shape shape;
    double scale = 1;
  };
  Tensor images_;
  std::shared_ptr<const Bytes> bytes_;
  Tensor labels_;
};

enum class MnistSplit { train, test };

/// Loads an MNIST-format split from `dir`: train-images-idx3-ubyte and
/// train-labels-idx1-ubyte (or t10k-... for test), each with or without ".gz" (the plain file
/// is used when both exist). Throws IoError naming every path it tried when a file is
/// missing, and when the image and label counts differ.
Dataset load_mnist(const std::string& dir, MnistSplit split,
                   PixelScale scale = PixelScale::unit);

/// One batch: images [B, ...] f32/f64 and labels [B] i64.
struct Batch {
  Tensor images;
  Tensor labels;
};

struct DataLoaderOptions {
  std::int64_t batch_size = 64;
  /// Visit the samples in a new random order every epoch.
  bool shuffle = false;
  /// The order of epoch e depends only on (seed, e): runs are reproducible and a resumed
  /// run sees the same orders as an uninterrupted one.
  std::uint64_t seed = 0;
  /// Skip the last batch when it is smaller than batch_size.
  bool drop_last = false;
  /// When set, every batch is (images - mean) / std.
  std::optional<double> mean{};
  std::optional<double> std{};
};

/// Batches a Dataset. `for (const Batch& b : loader)` runs one epoch; each such loop starts
/// the next epoch (0, 1, 2, ...), or use `loader.epoch(e)` to pick it.
class DataLoader {
 public:
  /// Throws ValueError on batch_size < 1, a std <= 0 or only one of mean/std set.
  DataLoader(Dataset dataset, DataLoaderOptions options);

  class Iterator;
  /// The batches of one epoch; iterating it does not change the loader.
  class Epoch {
   public:
    Iterator begin() const;
    Iterator end() const;
    std::int64_t index() const { return epoch_; }

   private:
    friend class DataLoader;
    Epoch(const DataLoader* loader, std::int64_t epoch,
          std::shared_ptr<const std::vector<std::int64_t>> order)
        : loader_(loader), epoch_(epoch), order_(std::move(order)) {}
    const DataLoader* loader_;
    std::int64_t epoch_;
    std::shared_ptr<const std::vector<std::int64_t>> order_;
  };

  class Iterator {
   public:
    using value_type = Batch;
    using difference_type = std::ptrdiff_t;
    /// Gathers the batch (each dereference builds it anew).
    Batch operator*() const;
    Iterator& operator++();
    bool operator==(const Iterator& other) const { return batch_ == other.batch_; }

   private:
    friend class Epoch;
    friend class DataLoader;
    Iterator(const DataLoader* loader, std::shared_ptr<const std::vector<std::int64_t>> order,
             std::int64_t batch)
        : loader_(loader), order_(std::move(order)), batch_(batch) {}
    const DataLoader* loader_;
    std::shared_ptr<const std::vector<std::int64_t>> order_;
    std::int64_t batch_;
  };

  /// The batches of epoch `e` (its order depends only on seed and e). The Epoch reads this
  /// loader, so a temporary loader cannot hand one out (it would be gone before the loop).
  Epoch epoch(std::int64_t e) const&;
  Epoch epoch(std::int64_t e) const&& = delete;
  /// Runs the next epoch: next_epoch() then counts up.
  Iterator begin();
  Iterator end() const;
  /// The epoch the next range-for loop runs; set it when resuming.
  std::int64_t next_epoch() const { return next_epoch_; }
  void set_next_epoch(std::int64_t e) { next_epoch_ = e; }

  /// Batches per epoch.
  std::int64_t num_batches() const;
  const Dataset& dataset() const { return dataset_; }
  const DataLoaderOptions& options() const { return options_; }
  /// The sample indices of epoch e, in visiting order.
  std::vector<std::int64_t> order(std::int64_t e) const;

 private:
  Batch make_batch(const std::vector<std::int64_t>& order, std::int64_t batch) const;
  Dataset dataset_;
  DataLoaderOptions options_;
  std::int64_t next_epoch_ = 0;
};

}  // namespace tapegrad::nn
