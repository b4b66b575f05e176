#pragma once
// What the fuzz targets share: the per-process file the readers read (they take a path), how
// a target reports a finding, bitwise tensor comparison, and the pieces of the checkpoint
// format that the targets and the seeds write by hand.
#include <fcntl.h>
#include <unistd.h>
#include <zlib.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <tapegrad/tapegrad.hpp>

namespace tapegrad::fuzz {

/// Prints what went wrong and aborts: libFuzzer reports a deadly signal and saves the input
/// as a crash artifact.
template <class... Args>
[[noreturn]] void finding(fmt::format_string<Args...> format, Args&&... args) {
  fmt::print(stderr, "tapegrad fuzz finding: {}\n",
             fmt::format(format, std::forward<Args>(args)...));
  std::fflush(stderr);
  std::abort();
}

/// `$TMPDIR/tapegrad-fuzz-<stem>-<pid>`: one file per process, so parallel fuzzers (-jobs,
/// -fork) never share one. Every input overwrites it; it is removed at exit. After a crash
/// it stays behind with the crashing input (libFuzzer ends with _Exit then).
class TempFile {
 public:
  explicit TempFile(std::string_view stem)
      : path_((std::filesystem::temp_directory_path() /
               fmt::format("tapegrad-fuzz-{}-{}", stem, ::getpid()))
                  .string()) {}
  ~TempFile() { ::unlink(path_.c_str()); }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;

  /// Replaces the file with one of `size` bytes; failing to write is the harness's fault,
  /// not a finding, so it exits instead of aborting. A new file each time, not O_TRUNC:
  /// ext4 flushes a truncated-and-rewritten file at close, which made a run 10x slower.
  const std::string& write(const void* data, std::size_t size) const {
    ::unlink(path_.c_str());
    const int fd = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    std::size_t done = 0;
    while (fd >= 0 && done < size) {
      const ssize_t n = ::write(fd, static_cast<const char*>(data) + done, size - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      done += static_cast<std::size_t>(n);
    }
    if (fd < 0 || done != size || ::close(fd) != 0) {
      fmt::print(stderr, "fuzz harness: cannot write {} bytes to '{}': {}\n", size, path_,
                 std::strerror(errno));
      std::exit(2);
    }
    return path_;
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

using Bytes = std::vector<unsigned char>;

/// Appends the bytes of `value` as they sit in memory (little-endian, as checkpoints are).
template <class T>
void put(Bytes& out, T value) {
  const auto* p = reinterpret_cast<const unsigned char*>(&value);
  out.insert(out.end(), p, p + sizeof(T));
}

/// zlib's CRC-32 of the first `count` bytes, as a checkpoint's last 4 bytes hold it.
inline std::uint32_t crc_of(const Bytes& bytes, std::size_t count) {
  return static_cast<std::uint32_t>(
      crc32(crc32(0L, Z_NULL, 0), bytes.data(), static_cast<uInt>(count)));
}

/// Same shape, dtype and bytes (NaN payloads and -0.0 included).
inline bool same_bits(const Tensor& a, const Tensor& b) {
  if (!a.defined() || !b.defined()) return a.defined() == b.defined();
  if (a.shape() != b.shape() || a.dtype() != b.dtype()) return false;
  const auto bytes = static_cast<std::size_t>(a.numel()) * dtype_size(a.dtype());
  if (bytes == 0) return true;
  switch (a.dtype()) {
    case DType::f32: return std::memcmp(a.data<float>(), b.data<float>(), bytes) == 0;
    case DType::f64: return std::memcmp(a.data<double>(), b.data<double>(), bytes) == 0;
    case DType::i64: return std::memcmp(a.data<std::int64_t>(), b.data<std::int64_t>(), bytes) == 0;
    case DType::boolean: return std::memcmp(a.data<bool>(), b.data<bool>(), bytes) == 0;
  }
  return false;
}

/// The model fuzz_checkpoint loads into, the same at every call; fuzz_make_seeds saves its
/// state as a seed. Parameters and buffers of f32 and i64, of ranks 0 to 2.
inline std::shared_ptr<nn::Module> checkpoint_model() {
  manual_seed(0);
  return nn::sequential({nn::linear(3, 2), nn::batch_norm2d(2)});
}

/// Runs `body`. An `Expected` (a tapegrad::Error subclass: the one the function documents)
/// is the normal outcome for a bad file: returns false. Another tapegrad::Error, or any
/// other exception, is a finding. Returns true when `body` returned.
template <class Expected = Error, class F>
bool succeeds(std::string_view what, F&& body) {
  try {
    body();
    return true;
  } catch (const Error& e) {
    if (dynamic_cast<const Expected*>(&e) != nullptr) return false;
    finding("{} threw a tapegrad::Error of another class than it documents: {}", what, e.what());
  } catch (const std::exception& e) {
    finding("{} threw a std::exception that is not a tapegrad::Error: {}", what, e.what());
  } catch (...) {
    finding("{} threw something that is not a std::exception", what);
  }
}

}  // namespace tapegrad::fuzz
