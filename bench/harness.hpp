#pragma once
// Timing for the benchmarks: warm-up, then the median, min and max of >= 20 repetitions,
// printed as one JSON line per figure.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include <sys/resource.h>

namespace bench {

struct Stats {
  double median_ms, min_ms, max_ms;
  int reps;
};

template <class F>
Stats measure(F&& f, int reps = 20, int warmup = 3, double min_total_ms = 300.0) {
  for (int i = 0; i < warmup; ++i) f();
  std::vector<double> ms;
  double total = 0;
  while (static_cast<int>(ms.size()) < reps || (total < min_total_ms && ms.size() < 2000)) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    const auto t1 = std::chrono::steady_clock::now();
    ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
    total += ms.back();
  }
  std::sort(ms.begin(), ms.end());
  return {ms[ms.size() / 2], ms.front(), ms.back(), static_cast<int>(ms.size())};
}

/// False when BENCH_FILTER is set and `name` does not contain it (to time a few rows).
inline bool wanted(const std::string& name) {
  const char* filter = std::getenv("BENCH_FILTER");
  return filter == nullptr || name.find(filter) != std::string::npos;
}

/// False when BENCH_THREADS is set to another thread count (to time or profile one of them).
inline bool wanted_threads(int threads) {
  const char* only = std::getenv("BENCH_THREADS");
  return only == nullptr || std::atoi(only) == threads;
}

/// Peak resident set size of this process so far, in MB.
inline double peak_rss_mb() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_maxrss) / 1024.0;
}

/// {"lib":..., "name":..., "threads":..., "median_ms":..., ...} plus `extra` ("\"gflops\":1.2").
inline void print(const char* lib, const std::string& name, int threads, const Stats& s,
                  const std::string& extra = "") {
  std::printf("{\"lib\":\"%s\",\"name\":\"%s\",\"threads\":%d,\"median_ms\":%.4f,\"min_ms\":%.4f,"
              "\"max_ms\":%.4f,\"reps\":%d%s%s}\n",
              lib, name.c_str(), threads, s.median_ms, s.min_ms, s.max_ms, s.reps,
              extra.empty() ? "" : ",", extra.c_str());
  std::fflush(stdout);
}

}  // namespace bench
