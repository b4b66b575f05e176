// safetensors files; the format is documented in include/tapegrad/checkpoint.hpp.
//
// The header is parsed by hand: the format needs only objects, strings and arrays of
// integers, and a strict parser of that subset is shorter than wiring in a JSON library and
// rejecting everything else it would accept. The whole file (header, offsets, sizes, BOOL
// bytes) is checked before a single tensor is made, so a bad file never yields part of its
// content and never makes the reader look outside the bytes it read.
#include <algorithm>
#include <array>
#include <bit>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <set>

#include <fmt/format.h>

#include "nn/file_io.hpp"
#include "tapegrad/checkpoint.hpp"
#include "tapegrad/error.hpp"

namespace tapegrad::nn {

namespace {

static_assert(std::endian::native == std::endian::little,
              "safetensors files are little-endian; add byte swapping for this platform");

constexpr std::string_view kLoad = "load_safetensors";
constexpr std::string_view kMetadataKey = "__metadata__";
constexpr std::string_view kSupported = "F32, F64, I64 and BOOL";

constexpr std::array<std::pair<std::string_view, DType>, 4> kDTypes{{
    {"F32", DType::f32}, {"F64", DType::f64}, {"I64", DType::i64}, {"BOOL", DType::boolean}}};
/// The format's other dtypes: named in errors as known but unsupported.
constexpr std::array<std::string_view, 16> kUnsupportedDTypes{
    "F16",  "BF16", "F8_E4M3", "F8_E5M2", "F8_E8M0", "F6_E2M3", "F6_E3M2", "F4",
    "E8M0", "I8",   "U8",      "I16",     "U16",     "I32",     "U32",     "U64"};

std::string_view format_dtype(DType dtype) {
  for (const auto& [name, d] : kDTypes) {
    if (d == dtype) return name;
  }
  return "?";
}

/// The length of the valid UTF-8 prefix of `s` (s.size() when all of it is valid): shortest
/// encodings only, no surrogates, nothing above U+10FFFF.
std::size_t valid_utf8_prefix(std::string_view s) {
  std::size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    std::size_t length = 0;
    std::uint32_t code = 0, min = 0;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      length = 2, code = c & 0x1Fu, min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
      length = 3, code = c & 0x0Fu, min = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
      length = 4, code = c & 0x07u, min = 0x10000;
    } else {
      return i;
    }
    if (s.size() - i < length) return i;
    for (std::size_t k = 1; k < length; ++k) {
      const auto next = static_cast<unsigned char>(s[i + k]);
      if ((next & 0xC0) != 0x80) return i;
      code = (code << 6) | (next & 0x3Fu);
    }
    if (code < min || code > 0x10FFFF || (code >= 0xD800 && code <= 0xDFFF)) return i;
    i += length;
  }
  return s.size();
}

void append_utf8(std::string& out, std::uint32_t code) {
  if (code < 0x80) {
    out += static_cast<char>(code);
  } else if (code < 0x800) {
    out += static_cast<char>(0xC0 | (code >> 6));
    out += static_cast<char>(0x80 | (code & 0x3F));
  } else if (code < 0x10000) {
    out += static_cast<char>(0xE0 | (code >> 12));
    out += static_cast<char>(0x80 | ((code >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (code & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (code >> 18));
    out += static_cast<char>(0x80 | ((code >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((code >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (code & 0x3F));
  }
}

/// `s` with JSON's escapes as serde_json and Python's json.dumps(ensure_ascii=False) write
/// them: `"`, `\` and the control characters; everything else (UTF-8 included) as it is.
void append_escaped(std::string& out, std::string_view s) {
  for (const char ch : s) {
    switch (ch) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (static_cast<unsigned char>(ch) < 0x20) {
          out += fmt::format("\\u{:04x}", static_cast<unsigned>(ch));
        } else {
          out += ch;
        }
    }
  }
}

void append_json_string(std::string& out, std::string_view s) {
  out += '"';
  append_escaped(out, s);
  out += '"';
}

/// A name or metadata string as an error shows it: quoted, escaped, bytes that are not UTF-8
/// as \xNN, cut after 60 bytes.
std::string quoted(std::string_view s) {
  std::string out = "\"";
  std::string_view rest = s.substr(0, 60);
  while (!rest.empty()) {
    const std::size_t valid = valid_utf8_prefix(rest);
    append_escaped(out, rest.substr(0, valid));
    if (valid == rest.size()) break;
    out += fmt::format("\\x{:02x}", static_cast<unsigned char>(rest[valid]));
    rest.remove_prefix(valid + 1);
  }
  if (s.size() > 60) out += "...";
  out += '"';
  return out;
}

/// Throws ValueError unless `s` is valid UTF-8; `what` describes it ("the tensor name ...").
void check_utf8(std::string_view s, std::string_view what) {
  const std::size_t valid = valid_utf8_prefix(s);
  if (valid != s.size()) {
    throw ValueError(fmt::format("save_safetensors: {} is not valid UTF-8 (at byte {})", what,
                                 valid));
  }
}

std::vector<unsigned char> encode(const NamedTensors& tensors,
                                  const std::map<std::string, std::string>& metadata) {
  std::string header = "{";
  if (!metadata.empty()) {
    append_json_string(header, kMetadataKey);
    header += ":{";
    bool first = true;
    for (const auto& [key, value] : metadata) {
      check_utf8(key, fmt::format("the metadata key {}", quoted(key)));
      check_utf8(value, fmt::format("the value {} of metadata key {}", quoted(value), quoted(key)));
      if (!first) header += ',';
      first = false;
      append_json_string(header, key);
      header += ':';
      append_json_string(header, value);
    }
    header += '}';
  }
  std::set<std::string_view> names;
  std::uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    if (name.empty()) throw ValueError("save_safetensors: a tensor has an empty name");
    if (name == kMetadataKey) {
      throw ValueError("save_safetensors: \"__metadata__\" is reserved for the metadata; it "
                       "cannot name a tensor");
    }
    if (!names.insert(name).second) {
      throw ValueError(fmt::format("save_safetensors: the name {} appears twice", quoted(name)));
    }
    if (!t.defined()) {
      throw ValueError(fmt::format("save_safetensors: tensor {} is undefined", quoted(name)));
    }
    check_utf8(name, fmt::format("the tensor name {}", quoted(name)));
    const auto bytes = static_cast<std::uint64_t>(t.numel()) * dtype_size(t.dtype());
    if (header.size() > 1) header += ',';
    append_json_string(header, name);
    header += fmt::format(R"(:{{"dtype":"{}","shape":[{}],"data_offsets":[{},{}]}})",
                          format_dtype(t.dtype()), fmt::join(t.shape(), ","), offset,
                          offset + bytes);
    offset += bytes;
  }
  header += '}';
  header.append((8 - header.size() % 8) % 8, ' ');

  std::vector<unsigned char> out(8 + header.size());
  const auto length = static_cast<std::uint64_t>(header.size());
  std::memcpy(out.data(), &length, 8);
  std::memcpy(out.data() + 8, header.data(), header.size());
  out.reserve(out.size() + offset);
  for (const auto& [name, t] : tensors) {
    const auto* data = static_cast<const unsigned char*>(detail::elements(t));
    out.insert(out.end(), data, data + static_cast<std::size_t>(t.numel()) * dtype_size(t.dtype()));
  }
  return out;
}

/// One tensor of the header, before the data is checked.
struct Entry {
  std::string name;
  DType dtype = DType::f32;
  std::vector<std::int64_t> sizes;
  std::int64_t numel = 1;
  std::uint64_t begin = 0, end = 0;
};

struct Header {
  std::vector<Entry> entries;  // in header order
  std::map<std::string, std::string> metadata;
};

/// Recursive descent over the header's JSON: a top-level object of tensor entries and the
/// metadata object. Every error names the file and the byte where parsing stopped.
class HeaderParser {
 public:
  HeaderParser(const std::string& path, std::string_view text) : path_(path), text_(text) {}

  Header parse() {
    const std::size_t valid = valid_utf8_prefix(text_);
    if (valid != text_.size()) {
      pos_ = valid;
      fail("the header is not valid UTF-8");
    }
    Header header;
    std::set<std::string> keys;
    parse_object("the header", [&](std::string key, std::size_t key_pos) {
      if (!keys.insert(key).second) {
        pos_ = key_pos;
        fail(fmt::format("the key {} appears twice", quoted(key)));
      }
      if (key == kMetadataKey) {
        header.metadata = parse_metadata();
      } else {
        if (key.empty()) {
          pos_ = key_pos;
          fail("a tensor has an empty name");
        }
        header.entries.push_back(parse_entry(std::move(key)));
      }
    });
    skip_whitespace();
    if (pos_ != text_.size()) {
      fail(fmt::format("unexpected {} after the header's JSON object", quoted(text_.substr(pos_))));
    }
    return header;
  }

 private:
  [[noreturn]] void fail(std::string_view what) const {
    throw IoError(fmt::format("{}: '{}' has a malformed header (at byte {} of its {} bytes): {}",
                              kLoad, path_, pos_, text_.size(), what));
  }

  std::string found() const {
    if (pos_ >= text_.size()) return "the end of the header";
    const auto c = static_cast<unsigned char>(text_[pos_]);
    if (c >= 0x20 && c < 0x7F) return fmt::format("'{}'", text_[pos_]);
    return fmt::format("byte 0x{:02x}", c);
  }

  void skip_whitespace() {
    auto space = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; };
    while (pos_ < text_.size() && space(text_[pos_])) ++pos_;
  }

  bool consume(char c) {
    skip_whitespace();
    if (pos_ < text_.size() && text_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }

  void expect(char c, std::string_view context) {
    if (!consume(c)) fail(fmt::format("expected '{}' {}, found {}", c, context, found()));
  }

  /// `{ "key": value, ... }`; on_member(key, position of the key) parses each value.
  template <class OnMember>
  void parse_object(std::string_view what, OnMember&& on_member) {
    expect('{', fmt::format("to open {}", what));
    if (consume('}')) return;
    do {
      skip_whitespace();
      const std::size_t key_pos = pos_;
      std::string key = parse_string(fmt::format("a key of {}", what));
      expect(':', fmt::format("after the key {}", quoted(key)));
      on_member(std::move(key), key_pos);
    } while (consume(','));
    expect('}', fmt::format("or ',' in {}", what));
  }

  unsigned hex_digit() {
    if (pos_ >= text_.size()) fail("the header ends inside a \\u escape");
    const char c = text_[pos_++];
    if (c >= '0' && c <= '9') return static_cast<unsigned>(c - '0');
    if (c >= 'a' && c <= 'f') return static_cast<unsigned>(c - 'a' + 10);
    if (c >= 'A' && c <= 'F') return static_cast<unsigned>(c - 'A' + 10);
    --pos_;
    fail(fmt::format("expected a hex digit in a \\u escape, found {}", found()));
  }

  std::uint32_t code_unit() {
    std::uint32_t unit = 0;
    for (int k = 0; k < 4; ++k) unit = unit * 16 + hex_digit();
    return unit;
  }

  std::string parse_string(std::string_view what) {
    skip_whitespace();
    if (pos_ >= text_.size() || text_[pos_] != '"') {
      fail(fmt::format("expected a string for {}, found {}", what, found()));
    }
    ++pos_;
    std::string out;
    while (true) {
      if (pos_ >= text_.size()) fail(fmt::format("unterminated string in {}", what));
      const char c = text_[pos_];
      if (c == '"') break;
      if (static_cast<unsigned char>(c) < 0x20) {
        fail(fmt::format("{} in a string: control characters must be escaped", found()));
      }
      ++pos_;
      if (c != '\\') {
        out += c;
        continue;
      }
      if (pos_ >= text_.size()) fail(fmt::format("unterminated string in {}", what));
      const char escape = text_[pos_++];
      switch (escape) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          std::uint32_t code = code_unit();
          if (code >= 0xDC00 && code <= 0xDFFF) {
            fail(fmt::format("\\u{:04x} is a lone low surrogate", code));
          }
          if (code >= 0xD800 && code <= 0xDBFF) {
            if (text_.substr(pos_, 2) != "\\u") {
              fail(fmt::format("\\u{:04x} (a high surrogate) is not followed by a \\u escape",
                               code));
            }
            pos_ += 2;
            const std::uint32_t low = code_unit();
            if (low < 0xDC00 || low > 0xDFFF) {
              fail(fmt::format("\\u{:04x} (a high surrogate) is followed by \\u{:04x}, not a low "
                               "surrogate",
                               code, low));
            }
            code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00);
          }
          append_utf8(out, code);
          break;
        }
        default:
          --pos_;
          fail(fmt::format("unknown escape '\\' followed by {} in a string", found()));
      }
    }
    ++pos_;
    return out;
  }

  std::uint64_t parse_uint(std::string_view what) {
    skip_whitespace();
    const std::size_t start = pos_;
    if (pos_ < text_.size() && text_[pos_] == '-') {
      fail(fmt::format("{} must be a non-negative integer, found a negative number", what));
    }
    std::uint64_t value = 0;
    while (pos_ < text_.size() && text_[pos_] >= '0' && text_[pos_] <= '9') {
      const auto digit = static_cast<std::uint64_t>(text_[pos_] - '0');
      if (value > (std::numeric_limits<std::uint64_t>::max() - digit) / 10) {
        pos_ = start;
        fail(fmt::format("{} does not fit in 64 bits", what));
      }
      value = value * 10 + digit;
      ++pos_;
    }
    if (pos_ == start) fail(fmt::format("expected an integer for {}, found {}", what, found()));
    if (text_[start] == '0' && pos_ - start > 1) {
      pos_ = start;
      fail(fmt::format("{} has a leading zero", what));
    }
    if (pos_ < text_.size() && (text_[pos_] == '.' || text_[pos_] == 'e' || text_[pos_] == 'E')) {
      fail(fmt::format("{} must be an integer, found a fraction or an exponent", what));
    }
    return value;
  }

  std::vector<std::uint64_t> parse_uint_array(std::string_view what) {
    expect('[', fmt::format("to open {}", what));
    std::vector<std::uint64_t> out;
    if (consume(']')) return out;
    do {
      // A rank past 8 is refused later, with the sizes; this bounds the list before that.
      if (out.size() > Shape::kMaxRank) {
        fail(fmt::format("{} has more than {} entries", what, Shape::kMaxRank + 1));
      }
      out.push_back(parse_uint(what));
    } while (consume(','));
    expect(']', fmt::format("or ',' in {}", what));
    return out;
  }

  std::map<std::string, std::string> parse_metadata() {
    std::map<std::string, std::string> metadata;
    parse_object("\"__metadata__\"", [&](std::string key, std::size_t key_pos) {
      if (metadata.contains(key)) {
        pos_ = key_pos;
        fail(fmt::format("the metadata key {} appears twice", quoted(key)));
      }
      std::string value = parse_string(fmt::format("the value of metadata key {}", quoted(key)));
      metadata.emplace(std::move(key), std::move(value));
    });
    return metadata;
  }

  Entry parse_entry(std::string name) {
    Entry e;
    e.name = std::move(name);
    const std::string tensor = fmt::format("tensor {}", quoted(e.name));
    std::optional<std::string> dtype;
    std::optional<std::vector<std::uint64_t>> shape, offsets;
    parse_object(tensor, [&](std::string key, std::size_t key_pos) {
      auto once = [&](bool seen) {
        if (seen) {
          pos_ = key_pos;
          fail(fmt::format("{} has the key \"{}\" twice", tensor, key));
        }
      };
      if (key == "dtype") {
        once(dtype.has_value());
        dtype = parse_string(fmt::format("the dtype of {}", tensor));
      } else if (key == "shape") {
        once(shape.has_value());
        shape = parse_uint_array(fmt::format("the shape of {}", tensor));
      } else if (key == "data_offsets") {
        once(offsets.has_value());
        offsets = parse_uint_array(fmt::format("the data_offsets of {}", tensor));
      } else {
        pos_ = key_pos;
        fail(fmt::format("{} has the unknown key {} (expected \"dtype\", \"shape\", "
                         "\"data_offsets\")",
                         tensor, quoted(key)));
      }
    });
    for (const auto& [field, present] : {std::pair{"dtype", dtype.has_value()},
                                         std::pair{"shape", shape.has_value()},
                                         std::pair{"data_offsets", offsets.has_value()}}) {
      if (!present) fail(fmt::format("{} has no \"{}\"", tensor, field));
    }
    const auto known = std::find_if(kDTypes.begin(), kDTypes.end(),
                                    [&](const auto& p) { return p.first == *dtype; });
    if (known == kDTypes.end()) {
      const bool unsupported = std::find(kUnsupportedDTypes.begin(), kUnsupportedDTypes.end(),
                                         *dtype) != kUnsupportedDTypes.end();
      fail(fmt::format("{} has dtype {}, {} (tapegrad reads {})", tensor, quoted(*dtype),
                       unsupported ? "which tapegrad does not support" : "which is not a "
                                                                         "safetensors dtype",
                       kSupported));
    }
    e.dtype = known->second;
    if (shape->size() > Shape::kMaxRank) {
      fail(fmt::format("{} has rank {}; tapegrad tensors have at most {} dims", tensor,
                       shape->size(), Shape::kMaxRank));
    }
    // Each partial product must fit in int64, as for every tapegrad shape.
    for (const std::uint64_t size : *shape) {
      e.sizes.push_back(static_cast<std::int64_t>(size));
      if (size > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()) ||
          (size != 0 && e.numel > std::numeric_limits<std::int64_t>::max() /
                                      static_cast<std::int64_t>(size))) {
        fail(fmt::format("{} has shape [{}], whose sizes multiply past int64", tensor,
                         fmt::join(*shape, ", ")));
      }
      e.numel *= static_cast<std::int64_t>(size);
    }
    if (offsets->size() != 2) {
      fail(fmt::format("the data_offsets of {} are [{}]; expected two: [begin, end]", tensor,
                       fmt::join(*offsets, ", ")));
    }
    e.begin = (*offsets)[0];
    e.end = (*offsets)[1];
    return e;
  }

  const std::string& path_;
  std::string_view text_;
  std::size_t pos_ = 0;
};

/// The file checked from end to end: its header, and each entry's bytes.
struct Parsed {
  Header header;
  std::vector<const Entry*> by_offset;  // entries in data order
  const unsigned char* data = nullptr;
};

Parsed parse_file(const std::string& path, const std::vector<unsigned char>& bytes) {
  if (bytes.size() < 8) {
    throw IoError(fmt::format("{}: '{}' is truncated: {} bytes, shorter than the 8-byte header "
                              "length that starts a safetensors file",
                              kLoad, path, bytes.size()));
  }
  std::uint64_t header_length;
  std::memcpy(&header_length, bytes.data(), 8);
  if (header_length > bytes.size() - 8) {
    throw IoError(fmt::format("{}: '{}' is not a safetensors file or is truncated: its first 8 "
                              "bytes announce a {}-byte header, but only {} bytes follow them",
                              kLoad, path, header_length, bytes.size() - 8));
  }
  Parsed parsed;
  const std::string_view text(reinterpret_cast<const char*>(bytes.data()) + 8,
                              static_cast<std::size_t>(header_length));
  parsed.header = HeaderParser(path, text).parse();
  parsed.data = bytes.data() + 8 + header_length;
  const std::uint64_t data_size = bytes.size() - 8 - header_length;

  auto malformed = [&](const Entry& e, std::string_view what) {
    return IoError(fmt::format("{}: '{}' is malformed: tensor {} ({} {}, data_offsets [{}, {}]) "
                               "{}",
                               kLoad, path, quoted(e.name), format_dtype(e.dtype),
                               Shape(e.sizes), e.begin, e.end, what));
  };
  for (const Entry& e : parsed.header.entries) {
    if (e.begin > e.end) throw malformed(e, "ends before it begins");
    if (e.end > data_size) {
      throw malformed(e, fmt::format("runs past the end of the data, which is {} bytes long",
                                     data_size));
    }
    const std::uint64_t held = e.end - e.begin;
    // numel is compared first: numel * element size could overflow.
    if (static_cast<std::uint64_t>(e.numel) > held) {
      throw malformed(e, fmt::format("holds {} bytes, fewer than its {} elements", held, e.numel));
    }
    const std::uint64_t needed = static_cast<std::uint64_t>(e.numel) * dtype_size(e.dtype);
    if (needed != held) {
      throw malformed(e, fmt::format("holds {} bytes, but {} elements of {} bytes need {}", held,
                                     e.numel, dtype_size(e.dtype), needed));
    }
  }
  for (const Entry& e : parsed.header.entries) parsed.by_offset.push_back(&e);
  std::stable_sort(parsed.by_offset.begin(), parsed.by_offset.end(),
                   [](const Entry* a, const Entry* b) {
                     return std::pair(a->begin, a->end) < std::pair(b->begin, b->end);
                   });
  // The data is covered exactly: each tensor starts where the previous one ended.
  std::uint64_t next = 0;
  for (const Entry* e : parsed.by_offset) {
    if (e->begin < next) {
      throw malformed(*e, fmt::format("overlaps the tensor before it, which ends at byte {}",
                                      next));
    }
    if (e->begin > next) {
      throw malformed(*e, fmt::format("leaves a gap: the data before it ends at byte {}", next));
    }
    next = e->end;
  }
  if (next != data_size) {
    throw IoError(fmt::format("{}: '{}' is malformed: its tensors end at byte {} of its {}-byte "
                              "data (the rest belongs to no tensor)",
                              kLoad, path, next, data_size));
  }
  // A bool that is neither 0 nor 1 is undefined behaviour in C++: refuse it here.
  for (const Entry& e : parsed.header.entries) {
    if (e.dtype != DType::boolean) continue;
    for (std::uint64_t i = e.begin; i < e.end; ++i) {
      if (parsed.data[i] > 1) {
        throw malformed(e, fmt::format("holds the byte {} at element {}; BOOL elements are 0 or 1",
                                       parsed.data[i], i - e.begin));
      }
    }
  }
  return parsed;
}

}  // namespace

void save_safetensors(const std::string& path, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata) {
  detail::write_file_atomically(path, encode(tensors, metadata), "save_safetensors");
}

NamedTensors load_safetensors(const std::string& path) {
  const std::vector<unsigned char> bytes = detail::read_whole_file(path, kLoad);
  const Parsed parsed = parse_file(path, bytes);
  NamedTensors out;
  out.reserve(parsed.by_offset.size());
  for (const Entry* e : parsed.by_offset) {
    Tensor t = empty(Shape(e->sizes), e->dtype);
    if (e->end != e->begin) {
      std::memcpy(detail::elements(t), parsed.data + e->begin, e->end - e->begin);
    }
    out.emplace_back(e->name, std::move(t));
  }
  return out;
}

std::map<std::string, std::string> load_safetensors_metadata(const std::string& path) {
  const std::vector<unsigned char> bytes = detail::read_whole_file(path, kLoad);
  return parse_file(path, bytes).header.metadata;
}

void load_safetensors_into(const std::string& path, const NamedTensors& targets) {
  assign_named(targets, load_safetensors(path), path);
}

}  // namespace tapegrad::nn
