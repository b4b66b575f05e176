#pragma once
// TAPEGRAD_MULTIVERSION compiles a function for several x86-64 levels (v4: AVX-512, v3:
// AVX2/FMA, and the baseline) and lets the dynamic loader pick the best one the CPU
// supports (GCC function multiversioning, resolved once through an ifunc). `flatten`
// inlines the loop templates into each version so they are vectorised for it. The library
// itself is built for the baseline, so it still runs on any x86-64.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__)
#define TAPEGRAD_MULTIVERSION \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default"), flatten))
#else
#define TAPEGRAD_MULTIVERSION
#endif
