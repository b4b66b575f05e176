// IDX files: plain and gzipped files written here, every kind of damage, load_mnist's
// pairing of images and labels, and the real Fashion-MNIST test set when it is installed.
#include <zlib.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <catch2/catch.hpp>
#include <tapegrad/tapegrad.hpp>

#include "temp_dir.hpp"

namespace tg = tapegrad;
namespace nn = tapegrad::nn;
using Catch::Matchers::Contains;
using tg::testing::read_bytes;
using tg::testing::TempDir;
using tg::testing::write_bytes;

namespace {

std::vector<unsigned char> idx_bytes(const std::vector<std::uint32_t>& sizes,
                                     const std::vector<unsigned char>& values) {
  std::vector<unsigned char> out{0, 0, 0x08, static_cast<unsigned char>(sizes.size())};
  for (std::uint32_t s : sizes) {
    for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<unsigned char>(s >> shift));
  }
  out.insert(out.end(), values.begin(), values.end());
  return out;
}

void write_gz(const std::string& path, const std::vector<unsigned char>& bytes) {
  gzFile f = gzopen(path.c_str(), "wb");
  REQUIRE(f != nullptr);
  REQUIRE(gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size())) == static_cast<int>(bytes.size()));
  REQUIRE(gzclose(f) == Z_OK);
}

/// n images of rows x cols with pixel (i, r, c) = (i * 7 + r * cols + c) % 256.
std::vector<unsigned char> pixels(std::uint32_t n, std::uint32_t rows, std::uint32_t cols) {
  std::vector<unsigned char> v;
  for (std::uint32_t i = 0; i < n; ++i) {
    for (std::uint32_t k = 0; k < rows * cols; ++k) v.push_back(static_cast<unsigned char>((i * 7 + k) % 256));
  }
  return v;
}

}  // namespace

TEST_CASE("read_idx reads plain and gzipped files alike", "[idx]") {
  TempDir dir;
  const auto values = pixels(3, 4, 5);
  const auto bytes = idx_bytes({3, 4, 5}, values);
  write_bytes(dir / "plain", bytes);
  write_gz(dir / "packed.gz", bytes);
  write_gz(dir / "packed-without-suffix", bytes);
  for (const std::string name : {"plain", "packed.gz", "packed-without-suffix"}) {
    INFO(name);
    const nn::IdxArray idx = nn::read_idx(dir / name);
    REQUIRE(idx.sizes == std::vector<std::int64_t>{3, 4, 5});
    REQUIRE(idx.values == std::vector<std::uint8_t>(values.begin(), values.end()));

    const tg::Tensor images = nn::read_idx_images(dir / name);
    REQUIRE(images.shape() == tg::Shape{3, 1, 4, 5});
    REQUIRE(images.dtype() == tg::DType::f32);
    REQUIRE(images.at({2, 0, 3, 1}) == Approx((2 * 7 + 3 * 5 + 1) / 255.0));
    const tg::Tensor raw = nn::read_idx_images(dir / name, nn::PixelScale::raw);
    REQUIRE(raw.at({1, 0, 0, 4}) == 7 + 4);
  }
  write_gz(dir / "labels.gz", idx_bytes({4}, {9, 0, 3, 255}));
  const tg::Tensor labels = nn::read_idx_labels(dir / "labels.gz");
  REQUIRE(labels.dtype() == tg::DType::i64);
  REQUIRE(labels.to_vector<std::int64_t>() == std::vector<std::int64_t>{9, 0, 3, 255});

  SECTION("zero images") {
    write_bytes(dir / "none", idx_bytes({0, 28, 28}, {}));
    REQUIRE(nn::read_idx_images(dir / "none").shape() == tg::Shape{0, 1, 28, 28});
  }
}

TEST_CASE("read_idx rejects bad magic, truncation, extra data and corrupt gzip", "[idx][errors]") {
  TempDir dir;
  const auto good = idx_bytes({2, 3, 3}, pixels(2, 3, 3));
  const std::string path = dir / "bad";

  SECTION("missing file") {
    REQUIRE_THROWS_TYPE_WITH(nn::read_idx(dir / "nope"), tg::IoError,
                           Contains("nope") && Contains("No such file"));
  }
  SECTION("wrong magic") {
    auto bad = good;
    bad[2] = 0x0D;  // float data: not what MNIST holds
    write_bytes(path, bad);
    REQUIRE_THROWS_TYPE_WITH(nn::read_idx(path), tg::IoError,
                           Contains("magic number is 00 00 0d 03") && Contains("expected 00 00 08"));
    bad = good;
    bad[0] = 0x1f;
    write_bytes(path, bad);
    REQUIRE_THROWS_TYPE_WITH(nn::read_idx(path), tg::IoError, Contains("not an IDX file"));
  }
  SECTION("every truncation, plain and gzipped") {
    for (std::size_t length = 0; length < good.size(); ++length) {
      INFO("truncated to " << length);
      const std::vector<unsigned char> cut(good.begin(), good.begin() + static_cast<std::ptrdiff_t>(length));
      write_bytes(path, cut);
      REQUIRE_THROWS_AS(nn::read_idx(path), tg::IoError);
      write_gz(path + ".gz", cut);
      REQUIRE_THROWS_AS(nn::read_idx(path + ".gz"), tg::IoError);
    }
    write_bytes(path, {good.begin(), good.end() - 1});
    REQUIRE_THROWS_TYPE_WITH(nn::read_idx(path), tg::IoError,
                           Contains("truncated") && Contains("[2, 3, 3] need 18 values, the file holds 17"));
  }
  SECTION("extra data") {
    auto bad = good;
    bad.push_back(1);
    write_bytes(path, bad);
    REQUIRE_THROWS_TYPE_WITH(nn::read_idx(path), tg::IoError, Contains("more data than its sizes"));
  }
  SECTION("a gzip stream cut short or damaged") {
    write_gz(path + ".gz", good);
    const auto packed = read_bytes(path + ".gz");
    for (std::size_t length = 10; length < packed.size(); ++length) {
      INFO("compressed file cut to " << length);
      write_bytes(path, {packed.begin(), packed.begin() + static_cast<std::ptrdiff_t>(length)});
      REQUIRE_THROWS_AS(nn::read_idx(path), tg::IoError);
    }
    for (std::size_t offset = 10; offset < packed.size(); ++offset) {
      INFO("compressed byte " << offset << " flipped");
      auto bad = packed;
      bad[offset] ^= 0x21;
      write_bytes(path, bad);
      REQUIRE_THROWS_AS(nn::read_idx(path), tg::IoError);
    }
  }
  SECTION("images and labels need their rank") {
    write_bytes(path, idx_bytes({4}, {1, 2, 3, 4}));
    REQUIRE_THROWS_TYPE_WITH(nn::read_idx_images(path), tg::IoError, Contains("holds sizes [4]"));
    write_bytes(path, good);
    REQUIRE_THROWS_TYPE_WITH(nn::read_idx_labels(path), tg::IoError, Contains("[2, 3, 3]"));
  }
}

TEST_CASE("load_mnist pairs images with labels and says what is missing", "[idx][mnist]") {
  TempDir dir;
  write_gz(dir / "train-images-idx3-ubyte.gz", idx_bytes({5, 2, 2}, pixels(5, 2, 2)));
  write_bytes(dir / "train-labels-idx1-ubyte", idx_bytes({5}, {0, 1, 2, 3, 4}));
  const nn::Dataset train = nn::load_mnist(dir.path().string(), nn::MnistSplit::train);
  REQUIRE(train.size() == 5);
  REQUIRE(train.images().shape() == tg::Shape{5, 1, 2, 2});
  REQUIRE(train.labels().to_vector<std::int64_t>() == std::vector<std::int64_t>{0, 1, 2, 3, 4});

  REQUIRE_THROWS_TYPE_WITH(nn::load_mnist(dir.path().string(), nn::MnistSplit::test), tg::IoError,
                         Contains("t10k-images-idx3-ubyte'") && Contains("t10k-images-idx3-ubyte.gz'"));
  write_bytes(dir / "t10k-images-idx3-ubyte", idx_bytes({3, 2, 2}, pixels(3, 2, 2)));
  write_bytes(dir / "t10k-labels-idx1-ubyte", idx_bytes({4}, {0, 1, 2, 3}));
  REQUIRE_THROWS_TYPE_WITH(nn::load_mnist(dir.path().string(), nn::MnistSplit::test), tg::IoError,
                         Contains("holds 3 images") && Contains("holds 4 labels"));
}

TEST_CASE("the real Fashion-MNIST test set reads as 10,000 labelled 28x28 images", "[idx][mnist]") {
  const std::string dir = "/usr/share/datasets/fashion-mnist";
  if (!std::filesystem::exists(dir + "/t10k-images-idx3-ubyte.gz")) {
    WARN("Fashion-MNIST is not installed in " << dir
                                              << " (apt-get install dataset-fashion-mnist); skipped");
    return;
  }
  const nn::Dataset test = nn::load_mnist(dir, nn::MnistSplit::test);
  REQUIRE(test.images().shape() == tg::Shape{10000, 1, 28, 28});
  std::vector<int> per_class(10, 0);
  for (std::int64_t label : test.labels().to_vector<std::int64_t>()) {
    REQUIRE(label >= 0);
    REQUIRE(label < 10);
    ++per_class[static_cast<std::size_t>(label)];
  }
  REQUIRE(per_class == std::vector<int>(10, 1000));
  const auto px = test.images().to_vector<float>();
  REQUIRE(*std::min_element(px.begin(), px.end()) == 0.0f);
  REQUIRE(*std::max_element(px.begin(), px.end()) == 1.0f);
  const double mean = std::accumulate(px.begin(), px.end(), 0.0) / static_cast<double>(px.size());
  REQUIRE(mean == Approx(0.2868).margin(0.002));  // Fashion-MNIST's known test-set mean
}
