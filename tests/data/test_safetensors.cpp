// safetensors files: bit-exact round trips of every dtype, the exact bytes of the reference
// writer (a Python generator), an IoError naming the file and the value for every kind of
// malformed file, all-or-nothing loading that lists every mismatch, and a LeNet whose weights
// PyTorch wrote giving PyTorch's logits.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <catch2/catch.hpp>
#include <tapegrad/tapegrad.hpp>

#include "named_tensors.hpp"
#include "small_lenet.hpp"
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

const std::string kFixtures = TAPEGRAD_FIXTURE_DIR;
/// "{" as a std::string: `"{" + name` trips GCC 12's -Wrestrict false positive.
const std::string kOpen = "{";

/// A safetensors file made by hand: the header text as given (no padding added) and `data`.
std::vector<unsigned char> file_of(const std::string& header,
                                   const std::vector<unsigned char>& data = {}) {
  std::vector<unsigned char> out(8 + header.size() + data.size());
  const auto length = static_cast<std::uint64_t>(header.size());
  std::memcpy(out.data(), &length, 8);
  std::copy(header.begin(), header.end(), out.begin() + 8);
  std::copy(data.begin(), data.end(), out.end() - static_cast<std::ptrdiff_t>(data.size()));
  return out;
}

std::uint64_t header_length(const std::vector<unsigned char>& bytes) {
  std::uint64_t n;
  std::memcpy(&n, bytes.data(), 8);
  return n;
}

/// The tensors of make_safetensors_reference.py's format_tensors(), in its order.
tg::NamedTensors format_tensors() {
  const double inf = std::numeric_limits<double>::infinity();
  return {
      {"w", tg::from_vector(std::vector<float>{1.5F, -2.25F, 3.0F, 0.1F, -0.0F, 1e30F}, {2, 3})},
      {"x.f64", tg::from_vector(std::vector<double>{1e-300, -0.0, inf, -1.0 / 3.0}, {4},
                                tg::DType::f64)},
      {"step", tg::scalar_tensor(-5, tg::DType::i64)},
      {"mask",
       tg::from_vector(std::vector<std::int64_t>{1, 0, 0, 1}, {2, 2}).to(tg::DType::boolean)},
      {"empty", tg::zeros({0, 3}, tg::DType::f32)},
      {"ids", tg::from_vector(std::vector<std::int64_t>{std::int64_t{1} << 62,
                                                        std::numeric_limits<std::int64_t>::min(),
                                                        7},
                              {3})},
      {"caf\xc3\xa9/\"q\"\\n\t", tg::from_vector(std::vector<double>{4.0}, {1}, tg::DType::f64)},
  };
}

double max_abs_diff(const tg::Tensor& a, const tg::Tensor& b) {
  const auto x = a.to_vector<double>(), y = b.to_vector<double>();
  REQUIRE(x.size() == y.size());
  double worst = 0;
  for (std::size_t i = 0; i < x.size(); ++i) worst = std::max(worst, std::abs(x[i] - y[i]));
  return worst;
}

}  // namespace

TEST_CASE("safetensors round trip is bit-exact for every dtype, 0-dim and empty tensors",
          "[safetensors]") {
  TempDir dir;
  const auto tensors = sample_tensors();
  const std::map<std::string, std::string> metadata{
      {"format", "pt"}, {"epoch", "3"}, {"note", "line\nbreak \"quoted\" \xe2\x9c\x93"}};
  nn::save_safetensors(dir / "a.safetensors", tensors, metadata);
  REQUIRE_FALSE(std::filesystem::exists(dir / "a.safetensors.tmp"));
  const auto loaded = nn::load_safetensors(dir / "a.safetensors");
  require_same(loaded, tensors);  // names and order too
  REQUIRE_FALSE(loaded[0].second.shares_storage(tensors[0].second));
  REQUIRE(nn::load_safetensors_metadata(dir / "a.safetensors") == metadata);

  SECTION("the header is padded with spaces to a multiple of 8 bytes") {
    const auto bytes = read_bytes(dir / "a.safetensors");
    const std::uint64_t n = header_length(bytes);
    REQUIRE(n % 8 == 0);
    REQUIRE(bytes[8] == '{');
    std::size_t data_bytes = 0;
    for (const auto& [name, t] : tensors) {
      data_bytes += static_cast<std::size_t>(t.numel()) * tg::dtype_size(t.dtype());
    }
    REQUIRE(bytes.size() == 8 + n + data_bytes);
  }
  SECTION("no tensors and no metadata: the 8-byte header \"{}\" and six spaces") {
    nn::save_safetensors(dir / "none.safetensors", {});
    REQUIRE(read_bytes(dir / "none.safetensors") == file_of("{}      "));
    REQUIRE(nn::load_safetensors(dir / "none.safetensors").empty());
    REQUIRE(nn::load_safetensors_metadata(dir / "none.safetensors").empty());
  }
  SECTION("saving again replaces the file") {
    nn::save_safetensors(dir / "a.safetensors", {{"only", tg::ones({2})}});
    const auto again = nn::load_safetensors(dir / "a.safetensors");
    REQUIRE(again.size() == 1);
    REQUIRE(again[0].first == "only");
    REQUIRE(nn::load_safetensors_metadata(dir / "a.safetensors").empty());
  }
  SECTION("tensors listed in any header order come back in data order") {
    const std::string header =
        R"({"b":{"dtype":"I64","shape":[],"data_offsets":[4,12]},)"
        R"( "a" : { "shape" : [ 1 ] , "data_offsets" : [ 0 , 4 ] , "dtype" : "F32" } ,)"
        "\n\t\"e\":{\"dtype\":\"F64\",\"shape\":[0],\"data_offsets\":[12,12]}}  ";
    std::vector<unsigned char> data(12, 0);
    data[4] = 9;
    write_bytes(dir / "o.safetensors", file_of(header, data));
    const auto got = nn::load_safetensors(dir / "o.safetensors");
    REQUIRE(got.size() == 3);
    REQUIRE(got[0].first == "a");
    REQUIRE(got[1].first == "b");
    REQUIRE(got[2].first == "e");
    REQUIRE(got[1].second.item<std::int64_t>() == 9);
    REQUIRE(got[2].second.shape() == tg::Shape{0});
  }
}

TEST_CASE("save_safetensors writes the bytes of the reference writer", "[safetensors]") {
  // tests/fixtures/make_safetensors_reference.py writes the header as huggingface/safetensors
  // does: compact JSON, __metadata__ first, UTF-8 names with JSON escapes.
  TempDir dir;
  const std::map<std::string, std::string> metadata{{"format", "pt"},
                                                    {"note", "tapegrad \xe2\x9c\x93"}};
  nn::save_safetensors(dir / "f.safetensors", format_tensors(), metadata);
  const auto expected = read_bytes(kFixtures + "/safetensors_format.safetensors");
  REQUIRE_FALSE(expected.empty());
  const auto got = read_bytes(dir / "f.safetensors");
  REQUIRE(std::string(got.begin(), got.end()) == std::string(expected.begin(), expected.end()));

  SECTION("and reads the generator's file back") {
    require_same(nn::load_safetensors(kFixtures + "/safetensors_format.safetensors"),
                 format_tensors());
    REQUIRE(nn::load_safetensors_metadata(kFixtures + "/safetensors_format.safetensors") ==
            metadata);
  }
}

TEST_CASE("save_safetensors refuses what the format cannot hold and writes nothing",
          "[safetensors][errors]") {
  TempDir dir;
  const std::string path = dir / "s.safetensors";
  auto refuses = [&](const tg::NamedTensors& tensors, const std::string& message,
                     const std::map<std::string, std::string>& metadata = {}) {
    REQUIRE_THROWS_TYPE_WITH(nn::save_safetensors(path, tensors, metadata), tg::ValueError,
                             Contains(message) && Contains("save_safetensors"));
    REQUIRE_FALSE(std::filesystem::exists(path));
    REQUIRE_FALSE(std::filesystem::exists(path + ".tmp"));
  };
  refuses({{"", tg::ones({1})}}, "empty name");
  refuses({{"a", tg::ones({1})}, {"a", tg::ones({2})}}, "\"a\" appears twice");
  refuses({{"__metadata__", tg::ones({1})}}, "reserved");
  refuses({{"u", tg::Tensor{}}}, "\"u\" is undefined");
  refuses({{"bad\xff", tg::ones({1})}},
          "the tensor name \"bad\\xff\" is not valid UTF-8 (at byte 3)");
  refuses({}, "the value \"v\\xc0\\x80\" of metadata key \"k\" is not valid UTF-8 (at byte 1)",
          {{"k", "v\xc0\x80"}});
  refuses({}, "the metadata key \"\\xff\" is not valid UTF-8 (at byte 0)", {{"\xff", "v"}});
  SECTION("an unwritable directory is an IoError") {
    REQUIRE_THROWS_TYPE_WITH(nn::save_safetensors(dir / "no/such/dir.safetensors", {}),
                             tg::IoError, Contains("save_safetensors") && Contains("no/such"));
  }
}

TEST_CASE("every malformed safetensors file is an IoError naming the file and the value",
          "[safetensors][errors]") {
  TempDir dir;
  const std::string path = dir / "bad.safetensors";
  tg::NamedTensors targets{{"w", tg::zeros({2}, tg::DType::f32)}};
  const auto before = snapshot(targets);
  auto rejects = [&](const std::vector<unsigned char>& bytes, const std::string& message) {
    INFO(message);
    write_bytes(path, bytes);
    REQUIRE_THROWS_TYPE_WITH(nn::load_safetensors(path), tg::IoError,
                             Contains("load_safetensors") && Contains(path) && Contains(message));
    REQUIRE_THROWS_AS(nn::load_safetensors_metadata(path), tg::IoError);
    REQUIRE_THROWS_AS(nn::load_safetensors_into(path, targets), tg::IoError);
    require_same(targets, before);
  };
  // One valid tensor entry, to build the cases around.
  auto entry = [](const std::string& name, const std::string& dtype, const std::string& shape,
                  const std::string& offsets) {
    return fmt::format(R"("{}":{{"dtype":"{}","shape":{},"data_offsets":{}}})", name, dtype,
                       shape, offsets);
  };
  const std::string w = entry("w", "F32", "[2]", "[0,8]");
  const std::vector<unsigned char> eight(8, 0);

  SECTION("the file itself") {
    REQUIRE_THROWS_TYPE_WITH(nn::load_safetensors(dir / "nope.safetensors"), tg::IoError,
                             Contains("nope.safetensors") && Contains("No such file"));
    REQUIRE_THROWS_TYPE_WITH(nn::load_safetensors(dir.path().string()), tg::IoError,
                             Contains("is a directory"));
    rejects({}, "0 bytes, shorter than the 8-byte header length");
    rejects({2, 0, 0}, "3 bytes, shorter than the 8-byte header length");
    auto past = file_of(kOpen + w + "}", eight);
    past[0] = 0xff;
    rejects(past, "announce a 255-byte header, but only 62 bytes follow");
    auto huge = file_of("{}");
    std::memset(huge.data(), 0xff, 8);
    rejects(huge, "announce a 18446744073709551615-byte header");
    // A tapegrad checkpoint is not a safetensors file.
    nn::save_checkpoint(dir / "c.tgc", {{"w", tg::ones({2})}});
    REQUIRE_THROWS_TYPE_WITH(nn::load_safetensors(dir / "c.tgc"), tg::IoError,
                             Contains("is not a safetensors file or is truncated"));
  }
  SECTION("JSON syntax") {
    rejects(file_of(""), "expected '{' to open the header, found the end of the header");
    rejects(file_of("[]      "), "expected '{' to open the header, found '['");
    rejects(file_of(kOpen + w), "expected '}' or ',' in the header, found the end");
    rejects(file_of(kOpen + w + ",}", eight),
            "expected a string for a key of the header, found '}'");
    rejects(file_of(kOpen + w + "} x", eight), "unexpected \"x\" after the header's JSON object");
    rejects(file_of(kOpen + w + "}{}", eight), "unexpected \"{}\" after the header's JSON object");
    rejects(file_of(kOpen + w + std::string("}\0", 2), eight), "unexpected \"\\u0000\" after");
    rejects(file_of(R"({"w" "x"})"), "expected ':' after the key \"w\", found '\"'");
    rejects(file_of(R"({"w)"), "unterminated string in a key of the header");
    rejects(file_of("{\"a\tb\":1}"), "byte 0x09 in a string: control characters must be escaped");
    rejects(file_of(R"({"a\x":1})"), "unknown escape '\\' followed by 'x' in a string");
    rejects(file_of(R"({"\u12":1})"), "expected a hex digit in a \\u escape, found '\"'");
    rejects(file_of(R"({"\udc00":1})"), "\\udc00 is a lone low surrogate");
    rejects(file_of(R"({"\ud800x":1})"), "\\ud800 (a high surrogate) is not followed by a \\u");
    rejects(file_of(R"({"\ud800\u0041":1})"), "followed by \\u0041, not a low surrogate");
    rejects(file_of("{\"\xff\":1}"), "the header is not valid UTF-8");
    rejects(file_of("{\"\xc0\x80\":1}"),
            "(at byte 2 of its 8 bytes): the header is not valid UTF-8");
    rejects(file_of("{\"\xed\xa0\x80\":1}"), "not valid UTF-8");  // an encoded surrogate
  }
  SECTION("names and keys") {
    rejects(file_of(kOpen + w + "," + w + "}", eight), "the key \"w\" appears twice");
    rejects(file_of(kOpen + entry("", "F32", "[2]", "[0,8]") + "}", eight),
            "a tensor has an empty name");
    // Escapes are decoded before names are compared: "\u0077" is "w".
    rejects(file_of(kOpen + w + "," + entry("\\u0077", "F32", "[2]", "[0,8]") + "}", eight),
            "the key \"w\" appears twice");
    rejects(file_of(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"extra":1}})", eight),
            "tensor \"w\" has the unknown key \"extra\"");
    rejects(file_of(R"({"w":{"dtype":"F32","dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
                    eight),
            "tensor \"w\" has the key \"dtype\" twice");
    rejects(file_of(R"({"w":{"dtype":"F32","data_offsets":[0,8]}})", eight),
            "tensor \"w\" has no \"shape\"");
    rejects(file_of(R"({"w":{"shape":[2],"data_offsets":[0,8]}})", eight),
            "tensor \"w\" has no \"dtype\"");
    rejects(file_of(R"({"w":{"dtype":"F32","shape":[2]}})", eight),
            "tensor \"w\" has no \"data_offsets\"");
    rejects(file_of(R"({"w":[1]})"), "expected '{' to open tensor \"w\", found '['");
    rejects(file_of(R"({"w":{"dtype":32,"shape":[2],"data_offsets":[0,8]}})", eight),
            "expected a string for the dtype of tensor \"w\", found '3'");
  }
  SECTION("metadata") {
    rejects(file_of(R"({"__metadata__":{"a":"1","a":"2"}})"),
            "the metadata key \"a\" appears twice");
    rejects(file_of(R"({"__metadata__":{"a":1}})"),
            "expected a string for the value of metadata key \"a\", found '1'");
    rejects(file_of(R"({"__metadata__":null})"),
            "expected '{' to open \"__metadata__\", found 'n'");
    rejects(file_of(R"({"__metadata__":{},"__metadata__":{}})"),
            "the key \"__metadata__\" appears twice");
  }
  SECTION("dtypes") {
    rejects(file_of(kOpen + entry("h", "F16", "[4]", "[0,8]") + "}", eight),
            "tensor \"h\" has dtype \"F16\", which tapegrad does not support (tapegrad reads F32, "
            "F64, I64 and BOOL)");
    rejects(file_of(kOpen + entry("h", "BF16", "[4]", "[0,8]") + "}", eight),
            "dtype \"BF16\", which tapegrad does not support");
    rejects(file_of(kOpen + entry("h", "I32", "[2]", "[0,8]") + "}", eight),
            "dtype \"I32\", which tapegrad does not support");
    rejects(file_of(kOpen + entry("h", "f32", "[2]", "[0,8]") + "}", eight),
            "dtype \"f32\", which is not a safetensors dtype");
  }
  SECTION("shapes") {
    rejects(file_of(kOpen + entry("w", "F32", "[-2]", "[0,8]") + "}", eight),
            "the shape of tensor \"w\" must be a non-negative integer, found a negative number");
    rejects(file_of(kOpen + entry("w", "F32", "[2.0]", "[0,8]") + "}", eight),
            "must be an integer, found a fraction or an exponent");
    rejects(file_of(kOpen + entry("w", "F32", "[2e0]", "[0,8]") + "}", eight),
            "found a fraction or an exponent");
    rejects(file_of(kOpen + entry("w", "F32", "[02]", "[0,8]") + "}", eight),
            "the shape of tensor \"w\" has a leading zero");
    rejects(file_of(kOpen + entry("w", "F32", "[\"2\"]", "[0,8]") + "}", eight),
            "expected an integer for the shape of tensor \"w\", found '\"'");
    rejects(file_of(kOpen + entry("w", "F32", "[18446744073709551616]", "[0,8]") + "}", eight),
            "the shape of tensor \"w\" does not fit in 64 bits");
    rejects(file_of(kOpen + entry("w", "F32", "[9223372036854775808]", "[0,8]") + "}", eight),
            "has shape [9223372036854775808], whose sizes multiply past int64");
    rejects(file_of(kOpen + entry("w", "F32", "[4294967296,4294967296]", "[0,8]") + "}", eight),
            "whose sizes multiply past int64");
    rejects(file_of(kOpen + entry("w", "F32", "[1,1,1,1,1,1,1,1,2]", "[0,8]") + "}", eight),
            "tensor \"w\" has rank 9; tapegrad tensors have at most 8 dims");
    rejects(file_of(kOpen + entry("w", "F32", "[1,1,1,1,1,1,1,1,1,1,1,2]", "[0,8]") + "}", eight),
            "the shape of tensor \"w\" has more than 9 entries");
    rejects(file_of(kOpen + entry("w", "F32", "[2 3]", "[0,8]") + "}", eight),
            "expected ']' or ',' in the shape of tensor \"w\", found '3'");
  }
  SECTION("offsets and sizes") {
    rejects(file_of(kOpen + entry("w", "F32", "[2]", "[0,8,8]") + "}", eight),
            "the data_offsets of tensor \"w\" are [0, 8, 8]; expected two");
    rejects(file_of(kOpen + entry("w", "F32", "[2]", "[8]") + "}", eight), "are [8]; expected two");
    rejects(file_of(kOpen + entry("w", "F32", "[0]", "[8,0]") + "}", eight),
            "tensor \"w\" (F32 [0], data_offsets [8, 0]) ends before it begins");
    rejects(file_of(kOpen + entry("w", "F32", "[2]", "[0,8]") + "}", {0, 0, 0, 0}),
            "runs past the end of the data, which is 4 bytes long");
    rejects(file_of(kOpen + entry("w", "F32", "[3]", "[0,8]") + "}", eight),
            "holds 8 bytes, but 3 elements of 4 bytes need 12");
    rejects(file_of(kOpen + entry("w", "F64", "[2]", "[0,8]") + "}", eight),
            "holds 8 bytes, but 2 elements of 8 bytes need 16");
    rejects(file_of(kOpen + entry("w", "F32", "[4611686018427387904]", "[0,8]") + "}", eight),
            "holds 8 bytes, fewer than its 4611686018427387904 elements");
    rejects(file_of(kOpen + entry("a", "F32", "[2]", "[0,8]") + "," +
                        entry("b", "F32", "[1]", "[4,8]") + "}",
                    eight),
            "tensor \"b\" (F32 [1], data_offsets [4, 8]) overlaps the tensor before it, which "
            "ends at byte 8");
    rejects(file_of(kOpen + entry("a", "F32", "[1]", "[4,8]") + "}", eight),
            "tensor \"a\" (F32 [1], data_offsets [4, 8]) leaves a gap: the data before it ends "
            "at byte 0");
    rejects(file_of(kOpen + entry("a", "F32", "[1]", "[0,4]") + "," +
                        entry("b", "F32", "[0]", "[6,6]") + "}",
                    eight),
            "tensor \"b\" (F32 [0], data_offsets [6, 6]) leaves a gap: the data before it ends "
            "at byte 4");
    rejects(file_of(kOpen + entry("w", "F32", "[1]", "[0,4]") + "}", eight),
            "its tensors end at byte 4 of its 8-byte data");
    rejects(file_of("{}", {1}), "its tensors end at byte 0 of its 1-byte data");
    rejects(file_of(kOpen + entry("m", "BOOL", "[3]", "[0,3]") + "}", {1, 0, 2}),
            "holds the byte 2 at element 2; BOOL elements are 0 or 1");
  }
}

TEST_CASE("a damaged safetensors file never crashes and never loads in part",
          "[safetensors][errors]") {
  TempDir dir;
  const tg::NamedTensors saved{{"w", tg::from_vector(std::vector<double>{1, 2, 3, 4, 5, 6},
                                                     {2, 3})},
                               {"n", tg::scalar_tensor(7, tg::DType::i64)},
                               {"m", tg::ones({2}, tg::DType::boolean)},
                               {"e", tg::zeros({0}, tg::DType::f64)}};
  nn::save_safetensors(dir / "good.safetensors", saved, {{"k", "v"}});
  const auto good = read_bytes(dir / "good.safetensors");
  tg::NamedTensors targets = like(saved, 0.0);
  const auto before = snapshot(targets);

  for (std::size_t length = 0; length < good.size(); ++length) {
    INFO("truncated to " << length << " bytes");
    write_bytes(dir / "bad.safetensors",
                {good.begin(), good.begin() + static_cast<std::ptrdiff_t>(length)});
    REQUIRE_THROWS_AS(nn::load_safetensors_into(dir / "bad.safetensors", targets), tg::IoError);
  }
  require_same(targets, before);
  // A flipped bit may leave a valid file (another value, name or key): then it loads, or
  // assign_named refuses the changed names; otherwise an IoError. The targets never change
  // unless the load succeeds.
  for (std::size_t offset = 0; offset < good.size(); ++offset) {
    for (const int mask : {0x01, 0x20, 0x80}) {
      INFO("byte " << offset << " xor " << mask);
      auto bad = good;
      bad[offset] = static_cast<unsigned char>(bad[offset] ^ mask);
      write_bytes(dir / "bad.safetensors", bad);
      try {
        nn::load_safetensors_into(dir / "bad.safetensors", targets);
        targets = like(saved, 0.0);
      } catch (const tg::IoError&) {
        require_same(targets, before);
      } catch (const tg::Error&) {  // assign_named: the names, shapes or dtypes changed
        require_same(targets, before);
      }
    }
  }
}

TEST_CASE("load_safetensors_into is all or nothing and lists every mismatch",
          "[safetensors][errors]") {
  TempDir dir;
  const tg::NamedTensors saved{{"fc.weight", tg::ones({3, 2})},
                               {"fc.bias", tg::ones({3})},
                               {"bn.running_mean", tg::ones({4})},
                               {"bn.num_batches_tracked", tg::scalar_tensor(4, tg::DType::i64)},
                               {"extra.a", tg::ones({1})},
                               {"extra.b", tg::ones({1})}};
  nn::save_safetensors(dir / "m.safetensors", saved);

  SECTION("a matching model loads, requires_grad kept") {
    tg::NamedTensors targets = like(saved, 0.0);
    targets[0].second.set_requires_grad(true);
    nn::load_safetensors_into(dir / "m.safetensors", targets);
    require_same(snapshot(targets), saved);
    REQUIRE(targets[0].second.requires_grad());
  }
  SECTION("every problem in one message") {
    tg::NamedTensors targets{{"fc.weight", tg::zeros({2, 3})},            // shape
                             {"fc.bias", tg::zeros({3}, tg::DType::f64)},  // dtype
                             {"bn.running_mean", tg::zeros({5}, tg::DType::f64)},  // both
                             {"bn.num_batches_tracked", tg::scalar_tensor(0, tg::DType::i64)},
                             {"missing.a", tg::zeros({1})},
                             {"missing.b", tg::zeros({1})}};
    const auto before = snapshot(targets);
    REQUIRE_THROWS_TYPE_WITH(
        nn::load_safetensors_into(dir / "m.safetensors", targets), tg::ValueError,
        Contains("m.safetensors' does not match the targets; nothing was loaded") &&
            Contains("Missing: 'missing.a', 'missing.b'.") &&
            Contains("Unexpected: 'extra.a', 'extra.b'.") &&
            Contains("Shape mismatch: 'fc.weight': expected [2, 3]") &&
            Contains("'bn.running_mean': expected [5]") &&
            Contains("Dtype mismatch: 'fc.bias': expected f64") &&
            Contains("'bn.running_mean': expected f64"));
    require_same(targets, before);

    SECTION("without name problems, a ShapeError that still lists the dtypes") {
      targets.erase(targets.end() - 2, targets.end());
      targets.emplace_back("extra.a", tg::zeros({1}));
      targets.emplace_back("extra.b", tg::zeros({1}));
      REQUIRE_THROWS_TYPE_WITH(nn::load_safetensors_into(dir / "m.safetensors", targets),
                               tg::ShapeError,
                               Contains("Shape mismatch: 'fc.weight'") &&
                                   Contains("Dtype mismatch: 'fc.bias'"));
    }
  }
}

TEST_CASE("a LeNet whose weights PyTorch wrote gives PyTorch's logits", "[safetensors][torch]") {
  // tests/fixtures/make_safetensors_reference.py: SmallLeNet's state_dict, its input and its
  // logits in eval mode, written by torch 1.13.
  auto model = tg::testing::small_lenet();
  const auto file = nn::load_safetensors(kFixtures + "/lenet_torch.safetensors");
  std::set<std::string> torch_names, tapegrad_names;
  for (const auto& [name, t] : file) torch_names.insert(name);
  for (const auto& [name, t] : model->named_state()) tapegrad_names.insert(name);
  REQUIRE(tapegrad_names == torch_names);  // state_dict keys, num_batches_tracked included

  nn::load_safetensors_into(kFixtures + "/lenet_torch.safetensors", model->named_state());
  auto& bn = model->at<nn::BatchNorm2d>(1);
  REQUIRE(bn.num_batches_tracked().dtype() == tg::DType::i64);
  REQUIRE(bn.num_batches_tracked().item<std::int64_t>() == 7);
  REQUIRE(model->at<nn::Conv2d>(0).weight().requires_grad());

  const auto expected = nn::load_safetensors(kFixtures + "/lenet_torch_expected.safetensors");
  REQUIRE(expected.size() == 2);
  REQUIRE(expected[0].first == "input");
  REQUIRE(expected[1].first == "logits");
  model->eval();
  tg::NoGradGuard no_grad;
  const tg::Tensor logits = (*model)(expected[0].second);
  REQUIRE(logits.shape() == tg::Shape{4, 10});
  REQUIRE(logits.dtype() == tg::DType::f32);
  REQUIRE(max_abs_diff(logits, expected[1].second) <= 1e-5);
}
