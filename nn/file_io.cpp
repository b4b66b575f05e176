#include "nn/file_io.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>

#include <fmt/format.h>

#include "tapegrad/error.hpp"

namespace tapegrad::nn::detail {

namespace {

/// Writes all of `bytes` to `fd`, retrying short writes.
void write_all(int fd, const std::vector<unsigned char>& bytes, const std::string& tmp,
               std::string_view fn) {
  std::size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw IoError(fmt::format("{}: writing '{}' failed after {} of {} bytes: {}", fn, tmp, done,
                                bytes.size(), std::strerror(errno)));
    }
    done += static_cast<std::size_t>(n);
  }
}

void fsync_parent_dir(const std::string& path) {
  std::filesystem::path parent = std::filesystem::path(path).parent_path();
  if (parent.empty()) parent = ".";
  const int dir = ::open(parent.c_str(), O_RDONLY | O_DIRECTORY);
  if (dir < 0) return;  // the rename happened; syncing the directory is best effort
  ::fsync(dir);
  ::close(dir);
}

}  // namespace

std::vector<unsigned char> read_whole_file(const std::string& path, std::string_view fn) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    throw IoError(fmt::format("{}: '{}' is a directory, not a file", fn, path));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) throw IoError(fmt::format("{}: cannot open '{}': {}", fn, path, std::strerror(errno)));
  std::vector<unsigned char> bytes{std::istreambuf_iterator<char>(in),
                                   std::istreambuf_iterator<char>()};
  if (in.bad()) throw IoError(fmt::format("{}: error while reading '{}'", fn, path));
  return bytes;
}

void write_file_atomically(const std::string& path, const std::vector<unsigned char>& bytes,
                           std::string_view fn) {
  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    throw IoError(fmt::format("{}: cannot create '{}' (for '{}'): {}", fn, tmp, path,
                              std::strerror(errno)));
  }
  try {
    write_all(fd, bytes, tmp, fn);
    if (::fsync(fd) != 0) {
      throw IoError(fmt::format("{}: fsync of '{}' failed: {}", fn, tmp, std::strerror(errno)));
    }
  } catch (...) {
    ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  if (::close(fd) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    throw IoError(fmt::format("{}: closing '{}' failed: {}", fn, tmp, std::strerror(err)));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    throw IoError(fmt::format("{}: cannot rename '{}' to '{}': {}", fn, tmp, path,
                              std::strerror(err)));
  }
  fsync_parent_dir(path);
}

}  // namespace tapegrad::nn::detail
