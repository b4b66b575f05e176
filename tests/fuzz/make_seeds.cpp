// Writes the seed corpora of the fuzz targets: `fuzz_make_seeds DIR` fills DIR/checkpoint
// and DIR/idx with small valid files (the build runs it, so the seeds always follow the
// current formats), since mutating valid files reaches the deep checks much sooner than
// random bytes would, and with the inputs of the bugs fuzzing found, so that every run
// checks them again.
#include <zlib.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "fuzz_support.hpp"

namespace tg = tapegrad;
namespace nn = tapegrad::nn;
namespace fs = std::filesystem;
using tg::fuzz::Bytes;

namespace {

void write_file(const fs::path& path, const Bytes& bytes, bool gzipped = false) {
  if (gzipped) {
    gzFile f = gzopen(path.c_str(), "wb");
    if (f == nullptr || gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size())) !=
                            static_cast<int>(bytes.size()) ||
        gzclose(f) != Z_OK) {
      throw tg::IoError(fmt::format("fuzz_make_seeds: cannot write '{}'", path.string()));
    }
    return;
  }
  FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr || std::fwrite(bytes.data(), 1, bytes.size(), f) != bytes.size() ||
      std::fclose(f) != 0) {
    throw tg::IoError(fmt::format("fuzz_make_seeds: cannot write '{}'", path.string()));
  }
}

/// An IDX file of unsigned bytes with `sizes` and then `count` values.
Bytes idx_bytes(const std::vector<std::uint32_t>& sizes, std::size_t count) {
  Bytes out{0, 0, 0x08, static_cast<unsigned char>(sizes.size())};
  for (std::uint32_t s : sizes) {
    for (int shift = 24; shift >= 0; shift -= 8) {
      out.push_back(static_cast<unsigned char>(s >> shift));
    }
  }
  for (std::size_t i = 0; i < count; ++i) out.push_back(static_cast<unsigned char>(i * 37 % 256));
  return out;
}

/// A valid one: as many values as the sizes multiply to.
Bytes idx_bytes(const std::vector<std::uint32_t>& sizes) {
  std::size_t count = 1;
  for (std::uint32_t s : sizes) count *= s;
  return idx_bytes(sizes, count);
}

/// A checkpoint of one f32 tensor "w" of shape `sizes` without values, written by hand:
/// save_checkpoint cannot write a shape that no tensor has.
Bytes checkpoint_of_shape(const std::vector<std::int64_t>& sizes) {
  Bytes out{'T', 'G', 'C', 'K', 'P', 'T', '\r', '\n'};
  tg::fuzz::put(out, std::uint32_t{1});   // version
  tg::fuzz::put(out, std::uint32_t{0});   // reserved
  tg::fuzz::put(out, std::uint64_t{1});   // count
  tg::fuzz::put(out, std::uint64_t{0});   // payload size, set below
  tg::fuzz::put(out, std::uint32_t{1});   // name length
  out.push_back('w');
  tg::fuzz::put(out, std::uint8_t{0});    // f32
  tg::fuzz::put(out, static_cast<std::uint8_t>(sizes.size()));
  for (std::int64_t s : sizes) tg::fuzz::put(out, s);
  const auto payload = static_cast<std::uint64_t>(out.size() - 32);
  std::memcpy(out.data() + 24, &payload, sizeof payload);
  tg::fuzz::put(out, tg::fuzz::crc_of(out, out.size()));
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    fmt::print(stderr, "usage: fuzz_make_seeds DIR\n");
    return 2;
  }
  const fs::path dir = argv[1];
  fs::create_directories(dir / "checkpoint");
  fs::create_directories(dir / "idx");

  // Checkpoints: the fuzzed model's own state (loads), the same with a changed shape and with
  // an extra tensor (assign_named's errors), every dtype and odd shape, and no tensor at all.
  const tg::NamedTensors state = tg::fuzz::checkpoint_model()->named_state();
  nn::save_checkpoint((dir / "checkpoint" / "model.tgc").string(), state);
  tg::NamedTensors reshaped = state;
  reshaped[0].second = tg::zeros({3, 2});
  nn::save_checkpoint((dir / "checkpoint" / "model-reshaped.tgc").string(), reshaped);
  tg::NamedTensors extra = state;
  extra.emplace_back("2.weight", tg::ones({1}, tg::DType::f64));
  nn::save_checkpoint((dir / "checkpoint" / "model-extra.tgc").string(), extra);
  nn::save_checkpoint((dir / "checkpoint" / "mixed.tgc").string(),
                      {{"f64", tg::arange(3.0, tg::DType::f64)},
                       {"i64", tg::scalar_tensor(-7, tg::DType::i64)},
                       {"bool", tg::gt(tg::arange(4.0), 1.5)},
                       {"empty", tg::zeros({0, 3})},
                       {"rank8", tg::ones({1, 1, 1, 2, 1, 1, 1, 1})}});
  nn::save_checkpoint((dir / "checkpoint" / "none.tgc").string(), {});
  // Bug found by fuzzing: sizes whose product overflows int64 before a 0 passed the reader's
  // checks, and empty() then threw a ValueError that did not name the file.
  const std::int64_t big = std::int64_t{1} << 62;
  write_file(dir / "checkpoint" / "regression-overflowing-shape.tgc",
             checkpoint_of_shape({big, big, 0}));

  // IDX: images, labels, zero images, other ranks, and a gzipped file.
  write_file(dir / "idx" / "images-2x3x3", idx_bytes({2, 3, 3}));
  write_file(dir / "idx" / "labels-5", idx_bytes({5}));
  write_file(dir / "idx" / "images-0x28x28", idx_bytes({0, 28, 28}));
  write_file(dir / "idx" / "rank2-2x2", idx_bytes({2, 2}));
  write_file(dir / "idx" / "rank8", idx_bytes({1, 1, 2, 1, 1, 1, 1, 1}));
  write_file(dir / "idx" / "images-1x2x2.gz", idx_bytes({1, 2, 2}), true);
  // Bugs found by fuzzing and review: a 12-byte header made read_idx allocate 8.6 GB before
  // it found the file short, and sizes multiplying to 2^64 wrapped to 0 values and passed.
  write_file(dir / "idx" / "regression-huge-header", idx_bytes({2, 0xffff0002u}, 3));
  write_file(dir / "idx" / "regression-wrapping-sizes", idx_bytes({65536, 65536, 65536, 65536}, 0));
  return 0;
}
