// libFuzzer target for the IDX reader (nn/data.cpp): read_idx, read_idx_images and
// read_idx_labels on arbitrary bytes, read as a plain file and gzip-compressed.
//
// A tapegrad::Error is the normal answer to a bad file (for read_idx, the IoError it
// documents). Findings are: a crash or sanitizer report (leaks included), any other
// exception, and any answer that differs from the one worked out here from the format alone:
// read_idx must accept exactly the complete IDX files of unsigned bytes (1..8 dims, as many
// values as the sizes multiply to, nothing after them) and return their sizes and values;
// read_idx_images must accept exactly those of 3 dims (unless their [N, 1, rows, cols] is no
// valid tensor shape) and read_idx_labels those of 1 dim. The gzipped copy must read the
// same as the plain file.
// A plain input that itself starts with the gzip magic is decompressed by the reader; for it
// only read_idx's contract (values.size() == product(sizes)) is checked.
#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "fuzz_support.hpp"

namespace tg = tapegrad;
namespace nn = tapegrad::nn;
using tg::fuzz::Bytes;
using tg::fuzz::finding;
using tg::fuzz::succeeds;

namespace {

std::string sizes_string(const std::vector<std::int64_t>& sizes) {
  return fmt::format("[{}]", fmt::join(sizes, ", "));
}

/// The product of `sizes` (each in 0..2^32-1), or nullopt when it is 2^64 or more.
std::optional<std::uint64_t> product(const std::vector<std::int64_t>& sizes) {
  if (std::find(sizes.begin(), sizes.end(), 0) != sizes.end()) return 0;
  std::uint64_t count = 1;
  for (std::int64_t size : sizes) {
    const auto n = static_cast<std::uint64_t>(size);
    if (count > std::numeric_limits<std::uint64_t>::max() / n) return std::nullopt;
    count *= n;
  }
  return count;
}

/// What read_idx must return for `bytes` read as they are: nullopt when they are not a
/// complete IDX file of unsigned bytes. Worked out independently of nn/data.cpp.
std::optional<nn::IdxArray> expected_idx(const Bytes& bytes) {
  if (bytes.size() < 4 || bytes[0] != 0 || bytes[1] != 0 || bytes[2] != 0x08 || bytes[3] == 0 ||
      bytes[3] > tg::Shape::kMaxRank) {
    return std::nullopt;
  }
  const std::size_t header = 4 + 4 * std::size_t{bytes[3]};
  if (bytes.size() < header) return std::nullopt;
  nn::IdxArray out;
  for (std::size_t at = 4; at < header; at += 4) {
    out.sizes.push_back((std::int64_t{bytes[at]} << 24) | (std::int64_t{bytes[at + 1]} << 16) |
                        (std::int64_t{bytes[at + 2]} << 8) | std::int64_t{bytes[at + 3]});
  }
  if (product(out.sizes) != bytes.size() - header) return std::nullopt;
  out.values.assign(bytes.begin() + static_cast<std::ptrdiff_t>(header), bytes.end());
  return out;
}

/// The contract of any array read_idx returns, whatever the file.
void check_contract(const nn::IdxArray& idx) {
  if (idx.sizes.empty() || idx.sizes.size() > tg::Shape::kMaxRank) {
    finding("read_idx returned {} sizes", idx.sizes.size());
  }
  for (std::int64_t size : idx.sizes) {
    if (size < 0 || size > std::numeric_limits<std::uint32_t>::max()) {
      finding("read_idx returned sizes {}", sizes_string(idx.sizes));
    }
  }
  if (product(idx.sizes) != idx.values.size()) {
    finding("read_idx returned sizes {} (product {}) with {} values", sizes_string(idx.sizes),
            product(idx.sizes) ? fmt::to_string(*product(idx.sizes)) : "2^64 or more",
            idx.values.size());
  }
}

/// read_idx on `path` must give `expected` (nullopt: a tapegrad::Error). `known` is false
/// when the answer cannot be worked out (a plain input in gzip format): then only the
/// contract is checked.
std::optional<nn::IdxArray> check_read_idx(const std::string& path, std::string_view form,
                                           const std::optional<nn::IdxArray>& expected,
                                           bool known) {
  std::optional<nn::IdxArray> got;
  succeeds<tg::IoError>("read_idx", [&] { got = nn::read_idx(path); });
  if (got) check_contract(*got);
  if (!known) return got;
  if (expected && !got) {
    finding("read_idx rejected a valid {} IDX file of sizes {}", form,
            sizes_string(expected->sizes));
  }
  if (!expected && got) {
    finding("read_idx accepted a malformed {} file as sizes {} with {} values", form,
            sizes_string(got->sizes), got->values.size());
  }
  if (got && (got->sizes != expected->sizes || got->values != expected->values)) {
    finding("read_idx read the {} file as sizes {}, the file holds sizes {}", form,
            sizes_string(got->sizes), sizes_string(expected->sizes));
  }
  return got;
}

/// read_idx_images and read_idx_labels accept exactly the arrays of their rank.
void check_images_and_labels(const std::string& path, const std::optional<nn::IdxArray>& idx,
                             bool known) {
  std::optional<tg::Tensor> raw, unit, labels;
  succeeds("read_idx_images", [&] { raw = nn::read_idx_images(path, nn::PixelScale::raw); });
  succeeds("read_idx_images", [&] { unit = nn::read_idx_images(path); });
  succeeds("read_idx_labels", [&] { labels = nn::read_idx_labels(path); });
  if (!known) return;
  const std::size_t rank = idx ? idx->sizes.size() : 0;
  // Sizes such as [2^32-1, 2^32-1, 0] make a valid file of no values but no valid tensor.
  const bool images_valid =
      rank == 3 && succeeds("empty", [&] {
        tg::empty({idx->sizes[0], 1, idx->sizes[1], idx->sizes[2]});
      });
  if (raw.has_value() != images_valid || unit.has_value() != images_valid) {
    finding("read_idx_images {} a file of sizes {}", raw ? "accepted" : "rejected",
            idx ? sizes_string(idx->sizes) : "(none: malformed)");
  }
  if (labels.has_value() != (rank == 1)) {
    finding("read_idx_labels {} a file of sizes {}", labels ? "accepted" : "rejected",
            idx ? sizes_string(idx->sizes) : "(none: malformed)");
  }
  if (images_valid) {
    const auto& s = idx->sizes;
    if (raw->shape() != tg::Shape{s[0], 1, s[1], s[2]} || raw->dtype() != tg::DType::f32 ||
        unit->shape() != raw->shape() || unit->dtype() != tg::DType::f32) {
      finding("read_idx_images gave {} {} and {} {} for sizes {}", raw->shape(), raw->dtype(),
              unit->shape(), unit->dtype(), sizes_string(s));
    }
    const float* r = raw->data<float>();
    const float* u = unit->data<float>();
    for (std::size_t i = 0; i < idx->values.size(); ++i) {
      if (r[i] != static_cast<float>(idx->values[i]) ||
          std::abs(u[i] - static_cast<float>(idx->values[i]) / 255.0f) > 1e-6f) {
        finding("read_idx_images: pixel {} is {} raw, {} unit; the file holds {}", i, r[i], u[i],
                idx->values[i]);
      }
    }
  }
  if (rank == 1) {
    const std::vector<std::int64_t> expected(idx->values.begin(), idx->values.end());
    if (labels->shape() != tg::Shape{idx->sizes[0]} || labels->dtype() != tg::DType::i64 ||
        labels->to_vector<std::int64_t>() != expected) {
      finding("read_idx_labels gave {} {} for sizes {}", labels->shape(), labels->dtype(),
              sizes_string(idx->sizes));
    }
  }
}

/// `bytes` in gzip format.
Bytes gzip(const Bytes& bytes) {
  z_stream z{};
  if (deflateInit2(&z, 1, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
    finding("fuzz harness: deflateInit2 failed");
  }
  Bytes out(deflateBound(&z, static_cast<uLong>(bytes.size())) + 32);
  z.next_in = const_cast<Bytef*>(bytes.data());
  z.avail_in = static_cast<uInt>(bytes.size());
  z.next_out = out.data();
  z.avail_out = static_cast<uInt>(out.size());
  if (deflate(&z, Z_FINISH) != Z_STREAM_END) finding("fuzz harness: deflate did not finish");
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const tg::fuzz::TempFile plain_file("idx");
  static const tg::fuzz::TempFile gz_file("idx-gz");
  const Bytes bytes(data, data + size);
  const auto expected = expected_idx(bytes);
  // zlib reads a file that starts with the gzip magic as gzip, whatever its name.
  const bool plain_known = !(size >= 2 && data[0] == 0x1f && data[1] == 0x8b);

  const std::string& plain = plain_file.write(bytes.data(), bytes.size());
  const auto got = check_read_idx(plain, "plain", expected, plain_known);
  check_images_and_labels(plain, plain_known ? expected : got, plain_known);

  const Bytes packed = gzip(bytes);
  check_read_idx(gz_file.write(packed.data(), packed.size()), "gzipped", expected, true);
  return 0;
}
