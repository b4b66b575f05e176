// Measures sgemm 1024^3 (and a few CNN-shaped products) for one GEMM library, at 1 and 2
// threads, with nothing set in the environment. Built once per candidate library (see
// bench/CMakeLists.txt and bench/README.md); prints one JSON line per figure.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <vector>
#include <omp.h>

#if defined(GEMM_DNNL)
#include <oneapi/dnnl/dnnl.h>
static const char* kName = "onednn";
static void set_threads(int n) { omp_set_num_threads(n); }
static void sgemm(int m, int n, int k, const float* a, const float* b, float* c) {
  dnnl_sgemm('N', 'N', m, n, k, 1.0f, a, k, b, n, 0.0f, c, n);
}
#else
#if defined(GEMM_BLIS)
#include <blis.h>
static const char* kName = "blis";
static void set_threads(int n) { bli_thread_set_num_threads(n); }
#else
extern "C" void openblas_set_num_threads(int);
static const char* kName = "openblas";
static void set_threads(int n) { openblas_set_num_threads(n); }
#endif
#include <cblas.h>
static void sgemm(int m, int n, int k, const float* a, const float* b, float* c) {
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, k, 1.0f, a, k, b, n, 0.0f, c, n);
}
#endif

int main() {
  struct Shape { int m, n, k; };
  const Shape shapes[] = {{1024, 1024, 1024}, {64, 3136, 576}, {6, 784, 25}, {16, 100, 150}, {256, 196, 1152}};
  std::mt19937 gen(0);
  std::uniform_real_distribution<float> dist(-1.f, 1.f);
  for (int threads : {1, 2}) {
    set_threads(threads);
    for (auto s : shapes) {
      std::vector<float> a(size_t(s.m) * s.k), b(size_t(s.k) * s.n), c(size_t(s.m) * s.n);
      for (auto& v : a) v = dist(gen);
      for (auto& v : b) v = dist(gen);
      const double flops = 2.0 * s.m * s.n * s.k;
      const int reps = flops > 1e9 ? 21 : 201;
      std::vector<double> ms;
      for (int r = 0; r < reps + 3; ++r) {
        auto t0 = std::chrono::steady_clock::now();
        sgemm(s.m, s.n, s.k, a.data(), b.data(), c.data());
        auto t1 = std::chrono::steady_clock::now();
        if (r >= 3) ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
      }
      std::sort(ms.begin(), ms.end());
      const double med = ms[ms.size() / 2];
      std::printf("{\"lib\":\"%s\",\"m\":%d,\"n\":%d,\"k\":%d,\"threads\":%d,\"median_ms\":%.4f,\"gflops\":%.1f}\n",
                  kName, s.m, s.n, s.k, threads, med, flops / med * 1e-6);
    }
  }
}
