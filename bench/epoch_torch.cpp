// libtorch's twin of epoch.cpp: the same LeNet-5, SGD with momentum, batch 64, shuffled,
// normalised Fashion-MNIST epoch at 1 and 2 threads, its wall time and the process's peak
// resident memory. libtorch's MNIST reader takes uncompressed files only, so the gzipped IDX
// files are read here with zlib; images are held as f32 [N, 1, 28, 28] (as a libtorch user
// would), batches gathered with index_select.
#include <zlib.h>

#include <chrono>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "harness.hpp"

namespace {

/// The values of a gzipped IDX file of unsigned bytes, and its sizes.
std::vector<std::uint8_t> read_idx_gz(const std::string& path, std::vector<std::int64_t>& sizes) {
  gzFile f = gzopen(path.c_str(), "rb");
  if (f == nullptr) throw std::runtime_error("cannot open " + path);
  std::vector<std::uint8_t> data;
  unsigned char buf[1 << 16];
  int n = 0;
  while ((n = gzread(f, buf, sizeof buf)) > 0) data.insert(data.end(), buf, buf + n);
  gzclose(f);
  if (data.size() < 4 || data[2] != 0x08) throw std::runtime_error("not an IDX file of bytes: " + path);
  const std::size_t rank = data[3];
  std::size_t count = 1;
  for (std::size_t d = 0; d < rank; ++d) {
    const std::uint8_t* p = data.data() + 4 + 4 * d;
    sizes.push_back((std::int64_t{p[0]} << 24) | (p[1] << 16) | (p[2] << 8) | p[3]);
    count *= static_cast<std::size_t>(sizes.back());
  }
  const std::size_t header = 4 + 4 * rank;
  if (data.size() != header + count) throw std::runtime_error("truncated IDX file: " + path);
  return {data.begin() + static_cast<std::ptrdiff_t>(header), data.end()};
}

}  // namespace

int main() {
  const std::string dir = "/usr/share/datasets/fashion-mnist/";
  torch::Tensor images, labels;
  try {
    std::vector<std::int64_t> isizes, lsizes;
    auto pixels = read_idx_gz(dir + "train-images-idx3-ubyte.gz", isizes);
    auto label_bytes = read_idx_gz(dir + "train-labels-idx1-ubyte.gz", lsizes);
    images = torch::from_blob(pixels.data(), {isizes[0], 1, isizes[1], isizes[2]}, torch::kUInt8)
                 .to(torch::kFloat32)
                 .div_(255.0)
                 .sub_(0.2860)
                 .div_(0.3530);
    labels = torch::from_blob(label_bytes.data(), {lsizes[0]}, torch::kUInt8).to(torch::kInt64);
  } catch (const std::exception& e) {
    std::printf("{\"lib\":\"libtorch\",\"name\":\"lenet_epoch\",\"skipped\":\"%s\"}\n", e.what());
    return 0;
  }
  for (int threads : {1, 2}) {
    if (!bench::wanted_threads(threads)) continue;
    torch::set_num_threads(threads);
    torch::manual_seed(0);
    torch::nn::Sequential model(
        torch::nn::Conv2d(torch::nn::Conv2dOptions(1, 6, 5).padding(2)), torch::nn::ReLU(),
        torch::nn::MaxPool2d(2), torch::nn::Conv2d(6, 16, 5), torch::nn::ReLU(), torch::nn::MaxPool2d(2),
        torch::nn::Flatten(), torch::nn::Linear(400, 120), torch::nn::ReLU(), torch::nn::Linear(120, 84),
        torch::nn::ReLU(), torch::nn::Linear(84, 10));
    torch::optim::SGD optimizer(model->parameters(), torch::optim::SGDOptions(0.05).momentum(0.9));
    const std::int64_t n = images.size(0), batch = 64;
    const auto t0 = std::chrono::steady_clock::now();
    const torch::Tensor order = torch::randperm(n);
    for (std::int64_t b = 0; b < n; b += batch) {
      const torch::Tensor idx = order.slice(0, b, std::min(b + batch, n));
      const torch::Tensor loss =
          torch::nn::functional::cross_entropy(model->forward(images.index_select(0, idx)), labels.index_select(0, idx));
      optimizer.zero_grad();
      loss.backward();
      optimizer.step();
    }
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    bench::print("libtorch", "lenet_epoch", threads, {ms, ms, ms, 1},
                 "\"peak_rss_mb\":" + std::to_string(bench::peak_rss_mb()));
  }
}
