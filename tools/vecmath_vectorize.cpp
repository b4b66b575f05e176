// Proof that every function of ops/kernels/vecmath.hpp vectorises: one target_clones loop per
// function, one per line, so that the vectoriser's report names each. Check (no program to run):
//   g++ -std=gnu++20 -O3 -fno-trapping-math -fno-math-errno -fopt-info-vec-optimized -I. -c \
//       tools/vecmath_vectorize.cpp -o /tmp/vecmath_vectorize.o 2>&1 | grep "32 byte"
// must list lines 18 to 30 (the x86-64-v3 clones), and
//   objdump -d --no-show-raw-insn /tmp/vecmath_vectorize.o | awk '/arch_x86_64_v3>:/,/^$/' | grep call
// must print nothing: no libm call in any AVX2 loop.
#include <cstdint>

#include "ops/kernels/vecmath.hpp"

namespace vm = tapegrad::detail::vm;

#define VM_CLONES __attribute__((target_clones("arch=x86-64-v3", "default"), flatten))
#define VM_LOOP(f) \
  VM_CLONES void loop_##f(const float* x, float* y, std::int64_t n) { for (std::int64_t i = 0; i < n; ++i) y[i] = vm::f(x[i]); }

VM_LOOP(exp)
VM_LOOP(expm1)
VM_LOOP(log)
VM_LOOP(log1p)
VM_LOOP(sin)
VM_LOOP(cos)
VM_LOOP(sin_wide)
VM_LOOP(cos_wide)
VM_LOOP(erf)
VM_LOOP(gelu)
VM_LOOP(tanh)
VM_LOOP(sigmoid)
VM_CLONES void loop_pow(const float* x, const float* y, float* z, std::int64_t n) { for (std::int64_t i = 0; i < n; ++i) z[i] = vm::pow(x[i], y[i]); }
