#!/usr/bin/env bash
# Builds tapegrad on Debian 12 and runs it. Both commands first install the Debian packages
# that are missing, then configure and build incrementally in build/ (Release):
#   scripts/tapegrad.sh main [args...]   build and run the main job with args
#   scripts/tapegrad.sh test             build everything and run the whole ctest suite, then
#                                        the sanitizer + fuzz stage in build-ci-san/
# TAPEGRAD_JOBS sets the build's parallel jobs (default: the number of cores, at most 2).
# TAPEGRAD_CI_SANITIZE=0 skips test's sanitizer + fuzz stage (default 1: it runs, in CI too);
# TAPEGRAD_FUZZ_SECONDS sets how long that stage runs each fuzz target (default 20).
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly repo_root
readonly build_dir="$repo_root/build"
readonly san_build_dir="$repo_root/build-ci-san"

# What find_package in CMakeLists.txt needs (fmt, Boost headers incl. Boost.Graph, oneDNN,
# whose CMake config also requires OpenCL, Catch2; OpenMP comes with g++), plus zlib and the
# Fashion-MNIST files for the training job.
readonly packages=(
  build-essential cmake libfmt-dev libboost-dev libdnnl-dev ocl-icd-opencl-dev catch2
  zlib1g-dev dataset-fashion-mnist
)
# The sanitizer + fuzz stage's clang: libFuzzer and the sanitizer runtimes are only
# recommended by clang, and clang's OpenMP is a package of its own.
readonly san_packages=(clang libclang-rt-14-dev libomp-dev)

default_jobs=$(nproc 2>/dev/null || echo 1)
((default_jobs > 2)) && default_jobs=2
readonly jobs=${TAPEGRAD_JOBS:-$default_jobs}
readonly run_san_stage=${TAPEGRAD_CI_SANITIZE:-1}
readonly fuzz_seconds=${TAPEGRAD_FUZZ_SECONDS:-20}

die() {
  echo "tapegrad.sh: $*" >&2
  exit 1
}

# install_missing_packages package...: installs those that are missing.
install_missing_packages() {
  command -v dpkg-query >/dev/null || die "this script installs Debian packages; install the equivalents of: $*"
  local missing=() package
  for package in "$@"; do
    if [[ "$(dpkg-query -W -f='${db:Status-Status}' "$package" 2>/dev/null)" != installed ]]; then
      missing+=("$package")
    fi
  done
  ((${#missing[@]} == 0)) && return 0
  if ((EUID != 0)); then
    echo "tapegrad.sh: missing Debian packages: ${missing[*]}; install them with" >&2
    echo "  sudo apt-get update && sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
    exit 1
  fi
  echo "tapegrad.sh: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update
  apt-get install -y --no-install-recommends "${missing[@]}"
}

configure() {
  # In CI the benchmarks' libtorch twins are not built (see bench/CMakeLists.txt), and
  # install:add_subdirectory does not compile tapegrad a second time (tests/install).
  local full=ON
  [[ "${CI:-}" == true ]] && full=OFF
  cmake -S "$repo_root" -B "$build_dir" -DCMAKE_BUILD_TYPE=Release \
    -DTAPEGRAD_BUILD_TESTS=ON -DTAPEGRAD_BUILD_EXAMPLES=ON -DTAPEGRAD_BENCH_TORCH="$full" \
    -DTAPEGRAD_TEST_SUBPROJECT_BUILD="$full"
}

# The training job once examples/CMakeLists.txt defines it, the smallest example until then.
main_job() {
  if grep -Eq '\(\s*train_fashion_mnist(\s|\))' "$repo_root/examples/CMakeLists.txt"; then
    echo train_fashion_mnist
  else
    echo scalar_neuron
  fi
}

cmd_main() {
  install_missing_packages "${packages[@]}"
  configure
  local job
  job=$(main_job)
  cmake --build "$build_dir" --parallel "$jobs" --target "$job"
  echo "tapegrad.sh: running $job${*:+ $*}"
  "$build_dir/examples/$job" "$@"
}

# The sanitizer + fuzz stage, in its own build directory: clang at -O1 with ASan, UBSan
# (every report fatal) and libFuzzer's instrumentation (TAPEGRAD_FUZZ=ON). It builds and runs
# the test executables below under the sanitizers, leak checking included, and runs each fuzz
# target of tests/fuzz for $fuzz_seconds seconds from its seed corpus. From a clean directory
# it takes about 4 minutes on 2 cores, nearly all of it compiling.
readonly san_tests=(autograd_tests bounds_tests checker_tests data_tests nn_tests reliability_tests)
# Whole-network checks: minutes of arithmetic under the sanitizers and nothing their small
# twins in the same executables do not already reach.
readonly san_skipped="ResNet-18"
sanitize_and_fuzz() {
  echo "tapegrad.sh: sanitizer + fuzz stage in $san_build_dir (TAPEGRAD_CI_SANITIZE=0 skips it)"
  cmake -S "$repo_root" -B "$san_build_dir" -DCMAKE_CXX_COMPILER=clang++ \
    -DCMAKE_BUILD_TYPE=Debug "-DCMAKE_CXX_FLAGS_DEBUG=-O1 -gline-tables-only" \
    -DTAPEGRAD_FUZZ=ON -DTAPEGRAD_FUZZ_SECONDS="$fuzz_seconds" -DTAPEGRAD_BUILD_TESTS=ON \
    -DTAPEGRAD_BUILD_EXAMPLES=OFF -DTAPEGRAD_BUILD_BENCH=OFF -DTAPEGRAD_INSTALL=OFF
  cmake --build "$san_build_dir" --parallel "$jobs" \
    --target "${san_tests[@]}" fuzz_checkpoint fuzz_idx
  local selected
  selected="^(($(IFS='|'; echo "${san_tests[*]}")):|fuzz:)"
  ASAN_OPTIONS=detect_leaks=1:check_initialization_order=1:strict_init_order=1 \
    UBSAN_OPTIONS=print_stacktrace=1 OMP_WAIT_POLICY=passive \
    ctest --test-dir "$san_build_dir" --output-on-failure --no-tests=error -j "$jobs" \
    --timeout 300 -R "$selected" -E "$san_skipped"
}

cmd_test() {
  local stage_packages=()
  [[ "$run_san_stage" == 0 ]] || stage_packages=("${san_packages[@]}")
  install_missing_packages "${packages[@]}" "${stage_packages[@]}"
  configure
  cmake --build "$build_dir" --parallel "$jobs"
  # --timeout is the limit of each test that sets no TIMEOUT property of its own.
  # OMP_WAIT_POLICY=passive: with two test processes of two OpenMP threads each on two cores,
  # threads that spin while they wait for work took the cores from the ones with work (the
  # examples ran 2.5x slower under ctest -j2 than with idle threads sleeping).
  OMP_WAIT_POLICY=passive ctest --test-dir "$build_dir" --output-on-failure --no-tests=error -j "$jobs" --timeout 300
  if [[ "$run_san_stage" == 0 ]]; then
    echo "tapegrad.sh: TAPEGRAD_CI_SANITIZE=0: skipping the sanitizer + fuzz stage"
  else
    sanitize_and_fuzz
  fi
}

case "${1:-}" in
  main) shift; cmd_main "$@" ;;
  test) shift; (($# == 0)) || die "test takes no arguments"; cmd_test ;;
  *) die "usage: scripts/tapegrad.sh main [args...] | scripts/tapegrad.sh test" ;;
esac
