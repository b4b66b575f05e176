// Checkpoints: exact round trips of every dtype and odd shape, all-or-nothing loading, and
// an error (never a crash, never a partial load) for every kind of damaged file.
#include <unistd.h>
#include <zlib.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <limits>
#include <string>
#include <vector>

#include <catch2/catch.hpp>
#include <tapegrad/tapegrad.hpp>

#include "named_tensors.hpp"
#include "temp_dir.hpp"

namespace tg = tapegrad;
namespace nn = tapegrad::nn;
using Catch::Matchers::Contains;
using tg::testing::like;
using tg::testing::read_bytes;
using tg::testing::require_same;
using tg::testing::same_bits;
using tg::testing::sample_tensors;
using tg::testing::snapshot;
using tg::testing::TempDir;
using tg::testing::write_bytes;

namespace {

void store_u32(std::vector<unsigned char>& bytes, std::size_t offset, std::uint32_t value) {
  std::memcpy(bytes.data() + offset, &value, 4);
}

/// Recomputes the trailing CRC-32 so that only the deliberate damage remains.
void fix_crc(std::vector<unsigned char>& bytes) {
  const auto crc = static_cast<std::uint32_t>(
      crc32(crc32(0L, Z_NULL, 0), bytes.data(), static_cast<uInt>(bytes.size() - 4)));
  store_u32(bytes, bytes.size() - 4, crc);
}

}  // namespace

TEST_CASE("checkpoint round trip is bit-exact for every dtype, 0-dim and empty tensors",
          "[checkpoint]") {
  TempDir dir;
  const auto tensors = sample_tensors();
  nn::save_checkpoint(dir / "a.tgc", tensors);
  REQUIRE_FALSE(std::filesystem::exists(dir / "a.tgc.tmp"));
  const auto loaded = nn::load_checkpoint(dir / "a.tgc");
  require_same(loaded, tensors);
  REQUIRE_FALSE(loaded[0].second.shares_storage(tensors[0].second));

  SECTION("an empty list") {
    nn::save_checkpoint(dir / "none.tgc", {});
    REQUIRE(nn::load_checkpoint(dir / "none.tgc").empty());
    REQUIRE(read_bytes(dir / "none.tgc").size() == 36);
  }
  SECTION("the header is the documented one") {
    const auto bytes = read_bytes(dir / "a.tgc");
    REQUIRE(std::memcmp(bytes.data(), "TGCKPT\r\n", 8) == 0);
    std::uint32_t version;
    std::uint64_t count, payload;
    std::memcpy(&version, bytes.data() + 8, 4);
    std::memcpy(&count, bytes.data() + 16, 8);
    std::memcpy(&payload, bytes.data() + 24, 8);
    REQUIRE(version == 1);
    REQUIRE(count == tensors.size());
    REQUIRE(payload == bytes.size() - 36);
  }
  SECTION("saving again replaces the file") {
    nn::save_checkpoint(dir / "a.tgc", {{"only", tg::ones({2})}});
    const auto again = nn::load_checkpoint(dir / "a.tgc");
    REQUIRE(again.size() == 1);
    REQUIRE(again[0].first == "only");
  }
}

TEST_CASE("load_into copies into existing tensors, parameters included", "[checkpoint]") {
  TempDir dir;
  const auto tensors = sample_tensors();
  nn::save_checkpoint(dir / "a.tgc", tensors);
  auto targets = like(tensors, 3.0);
  targets[0].second.set_requires_grad(true);
  const tg::Tensor alias = targets[1].second;  // a handle elsewhere sees the new values
  nn::load_into(dir / "a.tgc", targets);
  require_same(targets, tensors);
  REQUIRE(same_bits(alias, tensors[1].second));
  REQUIRE(targets[0].second.requires_grad());
  REQUIRE(tg::live_tape_records() == 0);

  SECTION("in another order") {
    auto reversed = like(tensors, 5.0);
    std::reverse(reversed.begin(), reversed.end());
    nn::load_into(dir / "a.tgc", reversed);
    for (const auto& [name, t] : reversed) {
      const auto it = std::find_if(tensors.begin(), tensors.end(),
                                   [&, name = name](const auto& p) { return p.first == name; });
      REQUIRE(same_bits(t, it->second));
    }
  }
}

TEST_CASE("load_into rejects missing, extra, mis-shaped and wrong-dtype tensors and loads nothing",
          "[checkpoint][errors]") {
  TempDir dir;
  const tg::NamedTensors saved{{"fc.weight", tg::ones({3, 2})},
                               {"fc.bias", tg::ones({3})},
                               {"bn.num_batches", tg::scalar_tensor(4, tg::DType::i64)}};
  nn::save_checkpoint(dir / "m.tgc", saved);
  tg::NamedTensors targets{{"fc.weight", tg::zeros({3, 2})},
                           {"fc.bias", tg::zeros({3})},
                           {"bn.num_batches", tg::scalar_tensor(0, tg::DType::i64)}};
  auto check_untouched = [&](tg::NamedTensors t) {
    for (const auto& [name, tensor] : t) {
      INFO(name);
      for (double v : tensor.to_vector<double>()) REQUIRE(v == 0.0);
    }
  };

  SECTION("missing in the file") {
    targets.emplace_back("fc2.weight", tg::zeros({1}));
    REQUIRE_THROWS_TYPE_WITH(nn::load_into(dir / "m.tgc", targets), tg::ValueError,
                           Contains("Missing: 'fc2.weight'") && Contains("m.tgc"));
    check_untouched(targets);
  }
  SECTION("extra in the file") {
    targets.erase(targets.begin() + 1);
    REQUIRE_THROWS_TYPE_WITH(nn::load_into(dir / "m.tgc", targets), tg::ValueError,
                           Contains("Unexpected: 'fc.bias'"));
    check_untouched(targets);
  }
  SECTION("mis-shaped") {
    targets[0].second = tg::zeros({2, 3});
    REQUIRE_THROWS_TYPE_WITH(nn::load_into(dir / "m.tgc", targets), tg::ShapeError,
                           Contains("'fc.weight': expected [2, 3]") && Contains("has [3, 2]"));
    check_untouched(targets);
  }
  SECTION("wrong dtype") {
    targets[1].second = tg::zeros({3}, tg::DType::f64);
    REQUIRE_THROWS_TYPE_WITH(nn::load_into(dir / "m.tgc", targets), tg::DTypeError,
                           Contains("'fc.bias': expected f64") && Contains("has f32"));
    check_untouched(targets);
  }
  SECTION("every problem at once, in one message") {
    targets[0].second = tg::zeros({2, 3});
    targets[1].second = tg::zeros({3}, tg::DType::f64);
    targets.emplace_back("fc2.weight", tg::zeros({1}));
    REQUIRE_THROWS_TYPE_WITH(nn::load_into(dir / "m.tgc", targets), tg::ValueError,
                             Contains("Missing: 'fc2.weight'") &&
                                 Contains("Shape mismatch: 'fc.weight': expected [2, 3]") &&
                                 Contains("Dtype mismatch: 'fc.bias': expected f64"));
    check_untouched(targets);
  }
  SECTION("a missing file") {
    REQUIRE_THROWS_TYPE_WITH(nn::load_into(dir / "nope.tgc", targets), tg::IoError,
                           Contains("nope.tgc") && Contains("No such file"));
    check_untouched(targets);
  }
  SECTION("a directory") {
    REQUIRE_THROWS_AS(nn::load_checkpoint(dir.path().string()), tg::IoError);
  }
}

TEST_CASE("every truncation and every flipped byte gives an IoError and loads nothing",
          "[checkpoint][errors]") {
  TempDir dir;
  const tg::NamedTensors saved{{"w", tg::from_vector(std::vector<double>{1, 2, 3, 4, 5, 6}, {2, 3})},
                               {"b", tg::scalar_tensor(7, tg::DType::i64)},
                               {"e", tg::zeros({0}, tg::DType::f64)}};
  nn::save_checkpoint(dir / "good.tgc", saved);
  const auto good = read_bytes(dir / "good.tgc");
  REQUIRE(good.size() > 36);
  tg::NamedTensors targets = like(saved, 0.0);
  const auto before = snapshot(targets);

  for (std::size_t length = 0; length < good.size(); ++length) {
    INFO("truncated to " << length << " bytes");
    write_bytes(dir / "bad.tgc", {good.begin(), good.begin() + static_cast<std::ptrdiff_t>(length)});
    REQUIRE_THROWS_AS(nn::load_checkpoint(dir / "bad.tgc"), tg::IoError);
    REQUIRE_THROWS_AS(nn::load_into(dir / "bad.tgc", targets), tg::IoError);
  }
  for (std::size_t offset = 0; offset < good.size(); ++offset) {
    INFO("byte " << offset << " flipped");
    auto bad = good;
    bad[offset] ^= 0x5a;
    write_bytes(dir / "bad.tgc", bad);
    REQUIRE_THROWS_AS(nn::load_into(dir / "bad.tgc", targets), tg::IoError);
  }
  SECTION("a byte appended") {
    auto bad = good;
    bad.push_back(0);
    write_bytes(dir / "bad.tgc", bad);
    REQUIRE_THROWS_TYPE_WITH(nn::load_checkpoint(dir / "bad.tgc"), tg::IoError,
                           Contains("longer than its header says"));
  }
  require_same(targets, before);
}

TEST_CASE("damaged checkpoints give messages that name the file and the values",
          "[checkpoint][errors]") {
  TempDir dir;
  nn::save_checkpoint(dir / "good.tgc", {{"w", tg::ones({2, 2})}});
  const auto good = read_bytes(dir / "good.tgc");
  const std::string path = dir / "bad.tgc";

  SECTION("wrong magic") {
    auto bad = good;
    bad[0] = 'X';
    write_bytes(path, bad);
    REQUIRE_THROWS_TYPE_WITH(nn::load_checkpoint(path), tg::IoError,
                           Contains("bad.tgc") && Contains("not a tapegrad checkpoint"));
  }
  SECTION("a file of another kind") {
    write_bytes(path, {'h', 'e', 'l', 'l', 'o'});
    REQUIRE_THROWS_TYPE_WITH(nn::load_checkpoint(path), tg::IoError, Contains("magic"));
  }
  SECTION("a newer version") {
    auto bad = good;
    store_u32(bad, 8, 2);
    fix_crc(bad);
    write_bytes(path, bad);
    REQUIRE_THROWS_TYPE_WITH(nn::load_checkpoint(path), tg::IoError,
                           Contains("format version 2") && Contains("reads version 1"));
  }
  SECTION("bad checksum") {
    auto bad = good;
    bad[bad.size() - 10] ^= 1;  // inside the data of "w"
    write_bytes(path, bad);
    REQUIRE_THROWS_TYPE_WITH(nn::load_checkpoint(path), tg::IoError,
                           Contains("corrupted") && Contains("CRC-32"));
  }
  SECTION("truncated") {
    write_bytes(path, {good.begin(), good.end() - 9});
    REQUIRE_THROWS_TYPE_WITH(nn::load_checkpoint(path), tg::IoError,
                           Contains("truncated") && Contains("announces a 39-byte payload, the file holds 30"));
  }
  // Damage behind a valid checksum: the parser still checks every field.
  SECTION("unknown dtype code") {
    auto bad = good;
    bad[32 + 4 + 1] = 9;  // after the name length and the name "w"
    fix_crc(bad);
    write_bytes(path, bad);
    REQUIRE_THROWS_TYPE_WITH(nn::load_checkpoint(path), tg::IoError,
                           Contains("'w' has dtype code 9"));
  }
  SECTION("a count larger than the records") {
    auto bad = good;
    bad[16] = 2;
    fix_crc(bad);
    write_bytes(path, bad);
    REQUIRE_THROWS_TYPE_WITH(nn::load_checkpoint(path), tg::IoError,
                           Contains("the name length of record 1"));
  }
  SECTION("a shape larger than the file") {
    auto bad = good;
    const std::int64_t huge = std::int64_t{1} << 40;
    std::memcpy(bad.data() + 32 + 4 + 1 + 2, &huge, 8);
    fix_crc(bad);
    write_bytes(path, bad);
    REQUIRE_THROWS_TYPE_WITH(nn::load_checkpoint(path), tg::IoError,
                           Contains("[1099511627776, 2]") && Contains("larger than the file"));
  }
  SECTION("a negative size") {
    auto bad = good;
    const std::int64_t negative = -2;
    std::memcpy(bad.data() + 32 + 4 + 1 + 2, &negative, 8);
    fix_crc(bad);
    write_bytes(path, bad);
    REQUIRE_THROWS_TYPE_WITH(nn::load_checkpoint(path), tg::IoError, Contains("shape [-2]"));
  }
}

TEST_CASE("a failed save leaves the previous checkpoint intact", "[checkpoint][atomic]") {
  TempDir dir;
  const std::string path = dir / "model.tgc";
  const tg::NamedTensors old_tensors{{"w", tg::full({2}, 1.0)}};
  nn::save_checkpoint(path, old_tensors);
  const auto old_bytes = read_bytes(path);
  const tg::NamedTensors new_tensors{{"w", tg::full({2}, 2.0)}};

  SECTION("the temporary file cannot be created") {
    std::filesystem::create_directory(path + ".tmp");  // open(O_WRONLY) on it fails
    REQUIRE_THROWS_TYPE_WITH(nn::save_checkpoint(path, new_tensors), tg::IoError,
                           Contains("model.tgc.tmp"));
    REQUIRE(read_bytes(path) == old_bytes);
  }
  SECTION("the directory is read-only") {
    if (::geteuid() == 0) {
      WARN("running as root: permissions do not stop writes; skipping the read-only case");
    } else {
      std::filesystem::permissions(dir.path(), std::filesystem::perms::owner_read |
                                                   std::filesystem::perms::owner_exec);
      REQUIRE_THROWS_TYPE_WITH(nn::save_checkpoint(path, new_tensors), tg::IoError,
                             Contains("cannot create"));
      std::filesystem::permissions(dir.path(), std::filesystem::perms::owner_all);
      REQUIRE(read_bytes(path) == old_bytes);
    }
  }
  SECTION("the device is full") {
    // /dev/full accepts open and fails every write with ENOSPC: a save into a directory
    // whose "<path>.tmp" is a symlink to it fails while writing, after the file was opened.
    if (!std::filesystem::exists("/dev/full")) {
      WARN("no /dev/full; skipping");
    } else {
      std::filesystem::create_symlink("/dev/full", path + ".tmp");
      REQUIRE_THROWS_WITH(nn::save_checkpoint(path, new_tensors),
                          Contains("writing") && Contains("No space left"));
      REQUIRE(read_bytes(path) == old_bytes);
      REQUIRE_FALSE(std::filesystem::exists(path + ".tmp"));
    }
  }
  SECTION("bad input is rejected before anything is written") {
    REQUIRE_THROWS_TYPE_WITH(nn::save_checkpoint(path, {{"w", tg::Tensor()}}), tg::ValueError,
                           Contains("'w' is undefined"));
    REQUIRE_THROWS_TYPE_WITH(nn::save_checkpoint(path, {{"w", tg::ones({1})}, {"w", tg::ones({1})}}),
                           tg::ValueError, Contains("'w' appears twice"));
    REQUIRE_THROWS_TYPE_WITH(nn::save_checkpoint(path, {{"", tg::ones({1})}}), tg::ValueError,
                           Contains("empty name"));
    REQUIRE(read_bytes(path) == old_bytes);
    REQUIRE_FALSE(std::filesystem::exists(path + ".tmp"));
  }
  auto loaded = nn::load_checkpoint(path);
  REQUIRE(loaded[0].second.to_vector<double>() == std::vector<double>{1, 1});
}

TEST_CASE("prefixes group a model and an optimizer in one checkpoint", "[checkpoint]") {
  const tg::NamedTensors model{{"fc.weight", tg::ones({2})}, {"fc.bias", tg::zeros({1})}};
  const tg::NamedTensors optim{{"step", tg::scalar_tensor(3, tg::DType::i64)}};
  tg::NamedTensors all = nn::add_prefix(model, "model.");
  for (auto& p : nn::add_prefix(optim, "optimizer.")) all.push_back(p);
  REQUIRE(all[0].first == "model.fc.weight");
  REQUIRE(all[2].first == "optimizer.step");
  const auto back = nn::strip_prefix(all, "model.");
  REQUIRE(back.size() == 2);
  REQUIRE(back[1].first == "fc.bias");
  REQUIRE(back[1].second.shares_storage(model[1].second));
  REQUIRE(nn::strip_prefix(all, "optimizer.")[0].first == "step");
}
