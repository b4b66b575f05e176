// Throughput of ops/kernels/vecmath.hpp against scalar std:: (libm), and the proof that every
// function vectorises: each runs through the same target_clones loop the library uses.
//
// Build, check the vectoriser's report (every loop "vectorized using 32 byte vectors" in the
// x86-64-v3 clone) and run (not part of the CMake build):
//   g++ -std=gnu++20 -O3 -fno-trapping-math -fno-math-errno -fopt-info-vec-optimized -I. \
//       tools/vecmath_bench.cpp -o /tmp/vecmath_bench 2>&1 | grep vecmath_bench.cpp:3[0-9]
//   objdump -d --no-show-raw-insn /tmp/vecmath_bench | less   # no call in the loop<..>.arch_x86_64_v3
//   /tmp/vecmath_bench
//
// Each function runs over 16 Mi floats in blocks of 16 Ki floats (64 KiB in and 64 KiB out,
// within L2), each block repeated 8 times; it prints ns per element of thread CPU time (best of
// 3), for the vecmath version (the clone the CPU picks) and std::.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>

#include <time.h>

#include "ops/kernels/vecmath.hpp"

namespace vm = tapegrad::detail::vm;

template <class F>
__attribute__((target_clones("arch=x86-64-v3", "default"), flatten, noinline)) void loop(
    const float* x, float* y, std::int64_t n, F f) {
  for (std::int64_t i = 0; i < n; ++i) y[i] = f(x[i]);
}

template <class F>
__attribute__((target_clones("arch=x86-64-v3", "default"), flatten, noinline)) void loop2(
    const float* x, const float* y, float* z, std::int64_t n, F f) {
  for (std::int64_t i = 0; i < n; ++i) z[i] = f(x[i], y[i]);
}

namespace {

constexpr std::int64_t kTotal = std::int64_t(16) << 20;
constexpr std::int64_t kBlock = std::int64_t(16) << 10;
constexpr int kRepeats = 8;

/// CPU time of this thread: the machine is shared, and time spent descheduled is not ours.
double thread_ns() {
  timespec t{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return double(t.tv_sec) * 1e9 + double(t.tv_nsec);
}

template <class Run>
double ns_per_element(Run run) {
  run();  // warm up
  double best = 1e30;
  for (int trial = 0; trial < 3; ++trial) {
    const double start = thread_ns();
    for (std::int64_t offset = 0; offset < kTotal; offset += kBlock)
      for (int r = 0; r < kRepeats; ++r) run(offset);
    best = std::min(best, (thread_ns() - start) / double(kTotal * kRepeats));
  }
  return best;
}

}  // namespace

int main() {
  std::mt19937 rng(42);
  std::vector<float> wide(kTotal), unit(kTotal), positive(kTotal), exponent(kTotal), out(kTotal);
  std::uniform_real_distribution<float> wide_dist(-10.0f, 10.0f), unit_dist(-0.999f, 4.0f),
      pos_dist(1e-3f, 1e3f), exp_dist(-3.0f, 3.0f);
  for (std::int64_t i = 0; i < kTotal; ++i)
    wide[i] = wide_dist(rng), unit[i] = unit_dist(rng), positive[i] = pos_dist(rng),
    exponent[i] = exp_dist(rng);

  std::printf("%-8s %12s %12s %8s   (ns/element, inputs)\n", "function", "vecmath", "std::", "speedup");
  auto row = [&](const char* name, const char* range, const std::vector<float>& in, auto fast, auto slow) {
    auto run = [&](auto f) {
      return ns_per_element([&](std::int64_t offset = 0) { loop(in.data() + offset, out.data() + offset, kBlock, f); });
    };
    const double a = run(fast), b = run(slow);
    std::printf("%-8s %12.3f %12.3f %7.1fx   %s\n", name, a, b, b / a, range);
  };
  // clang-format off
  row("exp",     "[-10, 10]",    wide,     [](float x) { return vm::exp(x); },     [](float x) { return std::exp(x); });
  row("expm1",   "[-10, 10]",    wide,     [](float x) { return vm::expm1(x); },   [](float x) { return std::expm1(x); });
  row("log",     "[1e-3, 1e3]",  positive, [](float x) { return vm::log(x); },     [](float x) { return std::log(x); });
  row("log1p",   "[-0.999, 4]",  unit,     [](float x) { return vm::log1p(x); },   [](float x) { return std::log1p(x); });
  row("sin",     "[-10, 10]",    wide,     [](float x) { return vm::sin(x); },     [](float x) { return std::sin(x); });
  row("cos",     "[-10, 10]",    wide,     [](float x) { return vm::cos(x); },     [](float x) { return std::cos(x); });
  row("erf",     "[-10, 10]",    wide,     [](float x) { return vm::erf(x); },     [](float x) { return std::erf(x); });
  row("tanh",    "[-10, 10]",    wide,     [](float x) { return vm::tanh(x); },    [](float x) { return std::tanh(x); });
  row("sigmoid", "[-10, 10]",    wide,     [](float x) { return vm::sigmoid(x); }, [](float x) { return 1.0f / (1.0f + std::exp(-x)); });
  // clang-format on
  {
    auto run = [&](auto f) {
      return ns_per_element([&](std::int64_t offset = 0) {
        loop2(positive.data() + offset, exponent.data() + offset, out.data() + offset, kBlock, f);
      });
    };
    const double a = run([](float x, float y) { return vm::pow(x, y); });
    const double b = run([](float x, float y) { return std::pow(x, y); });
    std::printf("%-8s %12.3f %12.3f %7.1fx   %s\n", "pow", a, b, b / a, "x in [1e-3, 1e3], y in [-3, 3]");
  }
}
