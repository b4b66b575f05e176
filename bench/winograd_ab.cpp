// The driver of bench/winograd_ab.sh: two versions of the Winograd kernels (suffixes _A and _B)
// timed on ResNet-18's stride-1 layers (batch 32), their calls alternating.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include <omp.h>

#include "ops/kernels/winograd.hpp"

namespace tapegrad::detail {
#define TAPEGRAD_WINOGRAD_VERSION(V)                                                                              \
  void winograd_forward_##V(const ConvGeometry&, const float*, const float*, const float*, float*, WinogradTile, \
                            bool);                                                                              \
  void winograd_input_grad_##V(const ConvGeometry&, const float*, const float*, const float*, float*,           \
                               WinogradTile, bool);                                                             \
  void winograd_weight_grad_##V(const ConvGeometry&, const float*, const float*, float*, bool, WinogradTile, bool);
TAPEGRAD_WINOGRAD_VERSION(A)
TAPEGRAD_WINOGRAD_VERSION(B)
}  // namespace tapegrad::detail

namespace {

namespace td = tapegrad::detail;

double now_ms() {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

bool wanted(const char* variable, const char* value) {
  const char* list = std::getenv(variable);
  return list == nullptr || std::strstr(list, value) != nullptr;
}

}  // namespace

int main(int argc, char** argv) {
  const int reps = argc > 1 ? std::max(1, std::atoi(argv[1])) : 21;
  const bool parallel = omp_get_max_threads() > 1;
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> uniform(-0.5f, 0.5f);
  for (const int channels : {64, 128, 256, 512}) {
    if (!wanted("LAYER", std::to_string(channels).c_str())) continue;
    const int size = 2048 / channels;  // 32², 16², 8², 4²
    td::ConvGeometry g;
    g.batch = 32;
    g.channels = g.out_channels = channels;
    g.h = g.w = {size, 3, 1, 1, 1, 1, size};
    std::vector<float> x(std::size_t(32) * channels * size * size), gy(x.size()), y(x.size()), gx(x.size());
    std::vector<float> w(std::size_t(9) * channels * channels), gw(w.size());
    for (auto* v : {&x, &gy, &w}) {
      for (float& e : *v) e = uniform(rng);
    }
    const td::WinogradTile tile =
        std::getenv("TILE") != nullptr ? td::WinogradTile(std::atoi(std::getenv("TILE"))) : td::winograd_tile_for(g);
    const char* kinds[] = {"fwd", "igrad", "wgrad"};
    for (int kind = 0; kind < 3; ++kind) {
      if (!wanted("ONLY", kinds[kind])) continue;
      std::vector<double> times[2];
      for (int r = 0; r < reps; ++r) {
        for (int turn = 0; turn < 2; ++turn) {
          const bool a = (r + turn) % 2 == 0;  // A first in even rounds, B first in odd ones
          const double t0 = now_ms();
          if (kind == 0) {
            (a ? td::winograd_forward_A : td::winograd_forward_B)(g, x.data(), w.data(), nullptr, y.data(), tile, parallel);
          } else if (kind == 1) {
            (a ? td::winograd_input_grad_A : td::winograd_input_grad_B)(g, gy.data(), w.data(), nullptr, gx.data(), tile,
                                                                        parallel);
          } else {
            (a ? td::winograd_weight_grad_A : td::winograd_weight_grad_B)(g, x.data(), gy.data(), gw.data(), false, tile,
                                                                          parallel);
          }
          times[a ? 0 : 1].push_back(now_ms() - t0);
        }
      }
      for (auto& t : times) std::sort(t.begin(), t.end());
      const double med_a = times[0][reps / 2], med_b = times[1][reps / 2];
      std::printf("%3d@%-2d F%d %-5s A med %6.2f min %6.2f | B med %6.2f min %6.2f | B/A med %.3f min %.3f\n", channels,
                  size, int(tile), kinds[kind], med_a, times[0][0], med_b, times[1][0], med_b / med_a,
                  times[1][0] / times[0][0]);
    }
  }
}
