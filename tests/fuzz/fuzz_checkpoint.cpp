// libFuzzer target for the checkpoint reader (nn/checkpoint.cpp): load_checkpoint and
// load_into on arbitrary bytes.
//
// A tapegrad::Error is the normal answer to a bad file (for load_checkpoint, the IoError its
// header documents). Findings are: a crash or sanitizer report (leaks included), any other
// exception, a failed load_into that changed the model
// (checkpoints load all or nothing), and a successful load whose result is not exactly what
// the file holds, checked by re-encoding it as include/tapegrad/checkpoint.hpp documents.
//
// Every input is tried twice: as it is, and with its payload size and CRC-32 rewritten to
// match. Mutated bytes almost never carry a valid checksum, so the second form is what takes
// the fuzzer to the record parser and to assign_named behind the checks.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "fuzz_support.hpp"

namespace tg = tapegrad;
namespace nn = tapegrad::nn;
using tg::fuzz::Bytes;
using tg::fuzz::crc_of;
using tg::fuzz::finding;
using tg::fuzz::put;
using tg::fuzz::same_bits;
using tg::fuzz::succeeds;

namespace {

constexpr std::size_t kHeaderSize = 32;
constexpr std::size_t kCrcSize = 4;

/// The file that the documented format gives for `tensors`, written independently of
/// nn/checkpoint.cpp. `reserved` is the file's own: readers ignore that field.
Bytes encode_as_documented(const tg::NamedTensors& tensors, std::uint32_t reserved) {
  Bytes out{'T', 'G', 'C', 'K', 'P', 'T', '\r', '\n'};
  put(out, std::uint32_t{1});
  put(out, reserved);
  put(out, static_cast<std::uint64_t>(tensors.size()));
  put(out, std::uint64_t{0});  // payload size, set below
  for (const auto& [name, t] : tensors) {
    put(out, static_cast<std::uint32_t>(name.size()));
    out.insert(out.end(), name.begin(), name.end());
    std::uint8_t code = 0;
    const void* elements = nullptr;
    // A DType without a case here is a build error, not a finding at run time (the build
    // has no -Werror, and a loaded tensor of that dtype would leave elements null).
#pragma GCC diagnostic push
#pragma GCC diagnostic error "-Wswitch"
    switch (t.dtype()) {
      case tg::DType::f32: code = 0, elements = t.data<float>(); break;
      case tg::DType::f64: code = 1, elements = t.data<double>(); break;
      case tg::DType::i64: code = 2, elements = t.data<std::int64_t>(); break;
      case tg::DType::boolean: code = 3, elements = t.data<bool>(); break;
    }
#pragma GCC diagnostic pop
    put(out, code);
    put(out, static_cast<std::uint8_t>(t.dim()));
    for (std::int64_t s : t.shape()) put(out, s);
    const std::size_t bytes = static_cast<std::size_t>(t.numel()) * tg::dtype_size(t.dtype());
    const auto* data = static_cast<const unsigned char*>(elements);
    if (bytes != 0) out.insert(out.end(), data, data + bytes);
  }
  const auto payload = static_cast<std::uint64_t>(out.size() - kHeaderSize);
  std::memcpy(out.data() + 24, &payload, sizeof payload);
  put(out, crc_of(out, out.size()));
  return out;
}

/// `bytes` with the header's payload size and the trailing CRC-32 made to fit its length.
std::optional<Bytes> with_matching_size_and_crc(const Bytes& bytes) {
  if (bytes.size() < kHeaderSize + kCrcSize) return std::nullopt;
  Bytes out = bytes;
  const auto payload = static_cast<std::uint64_t>(out.size() - kHeaderSize - kCrcSize);
  std::memcpy(out.data() + 24, &payload, sizeof payload);
  const std::uint32_t crc = crc_of(out, out.size() - kCrcSize);
  std::memcpy(out.data() + out.size() - kCrcSize, &crc, kCrcSize);
  return out;
}

tg::NamedTensors deep_copy(const tg::NamedTensors& tensors) {
  tg::NamedTensors out;
  for (const auto& [name, t] : tensors) out.emplace_back(name, t.detach().clone());
  return out;
}

/// load_checkpoint must return exactly what the file holds, or throw the IoError it documents
/// for every damaged file.
std::optional<tg::NamedTensors> check_load_checkpoint(const std::string& path, const Bytes& file) {
  std::optional<tg::NamedTensors> loaded;
  if (!succeeds<tg::IoError>("load_checkpoint", [&] { loaded = nn::load_checkpoint(path); })) {
    return std::nullopt;
  }
  for (const auto& [name, t] : *loaded) {
    if (!t.defined()) finding("load_checkpoint returned an undefined tensor '{}'", name);
  }
  std::uint32_t reserved = 0;
  std::memcpy(&reserved, file.data() + 12, sizeof reserved);
  if (encode_as_documented(*loaded, reserved) != file) {
    finding("load_checkpoint accepted a {}-byte file that is not the documented encoding of the "
            "{} tensors it returned",
            file.size(), loaded->size());
  }
  return loaded;
}

/// load_into a model: all or nothing. `loaded` is what load_checkpoint made of the same file.
void check_load_into(const std::string& path, const std::optional<tg::NamedTensors>& loaded) {
  const auto model = tg::fuzz::checkpoint_model();
  const tg::NamedTensors state = model->named_state();
  const tg::NamedTensors before = deep_copy(state);
  const bool loaded_into = succeeds("load_into", [&] { nn::load_into(path, state); });
  const tg::NamedTensors after = model->named_state();
  if (after.size() != state.size()) finding("load_into changed the model's list of tensors");
  for (std::size_t i = 0; i < after.size(); ++i) {
    const auto& [name, t] = after[i];
    const tg::Tensor& handle = state[i].second;
    if (!t.shares_storage(handle) || t.requires_grad() != handle.requires_grad()) {
      finding("load_into replaced the model's tensor '{}' instead of copying into it", name);
    }
    if (!loaded_into && !same_bits(t, before[i].second)) {
      finding("load_into failed but changed '{}': a half-loaded model", name);
    }
  }
  if (!loaded_into) return;
  if (!loaded) finding("load_into succeeded on a file that load_checkpoint rejects");
  if (loaded->size() != after.size()) {
    finding("load_into accepted {} tensors for a model of {}", loaded->size(), after.size());
  }
  for (const auto& target : after) {
    const auto it = std::find_if(loaded->begin(), loaded->end(),
                                 [&](const auto& p) { return p.first == target.first; });
    if (it == loaded->end() || !same_bits(target.second, it->second)) {
      finding("after load_into, '{}' differs from the file", target.first);
    }
  }
}

void check_file(const tg::fuzz::TempFile& file, const Bytes& bytes) {
  const std::string& path = file.write(bytes.data(), bytes.size());
  const auto loaded = check_load_checkpoint(path, bytes);
  check_load_into(path, loaded);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const tg::fuzz::TempFile file("checkpoint");
  const Bytes bytes(data, data + size);
  check_file(file, bytes);
  if (auto fixed = with_matching_size_and_crc(bytes); fixed && *fixed != bytes) {
    check_file(file, *fixed);
  }
  return 0;
}
