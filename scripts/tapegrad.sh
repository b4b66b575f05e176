#!/usr/bin/env bash
# Builds tapegrad on Debian 12 and runs it. Both commands first install the Debian packages
# that are missing, then configure and build incrementally in build/ (Release):
#   scripts/tapegrad.sh main [args...]   build and run the main job with args
#   scripts/tapegrad.sh test             build everything and run the whole ctest suite
# TAPEGRAD_JOBS sets the build's parallel jobs (default: the number of cores, at most 2).
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly repo_root
readonly build_dir="$repo_root/build"

# What find_package in CMakeLists.txt needs (fmt, Boost headers incl. Boost.Graph, oneDNN,
# whose CMake config also requires OpenCL, Catch2; OpenMP comes with g++), plus zlib and the
# Fashion-MNIST files for the training job.
readonly packages=(
  build-essential cmake libfmt-dev libboost-dev libdnnl-dev ocl-icd-opencl-dev catch2
  zlib1g-dev dataset-fashion-mnist
)

default_jobs=$(nproc 2>/dev/null || echo 1)
((default_jobs > 2)) && default_jobs=2
readonly jobs=${TAPEGRAD_JOBS:-$default_jobs}

die() {
  echo "tapegrad.sh: $*" >&2
  exit 1
}

install_missing_packages() {
  command -v dpkg-query >/dev/null || die "this script installs Debian packages; install the equivalents of: ${packages[*]}"
  local missing=() package
  for package in "${packages[@]}"; do
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
  cmake -S "$repo_root" -B "$build_dir" -DCMAKE_BUILD_TYPE=Release \
    -DTAPEGRAD_BUILD_TESTS=ON -DTAPEGRAD_BUILD_EXAMPLES=ON
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
  install_missing_packages
  configure
  local job
  job=$(main_job)
  cmake --build "$build_dir" --parallel "$jobs" --target "$job"
  echo "tapegrad.sh: running $job${*:+ $*}"
  "$build_dir/examples/$job" "$@"
}

cmd_test() {
  install_missing_packages
  configure
  cmake --build "$build_dir" --parallel "$jobs"
  # --timeout is the limit of each test that sets no TIMEOUT property of its own.
  ctest --test-dir "$build_dir" --output-on-failure --no-tests=error -j "$jobs" --timeout 300
}

case "${1:-}" in
  main) shift; cmd_main "$@" ;;
  test) shift; (($# == 0)) || die "test takes no arguments"; cmd_test ;;
  *) die "usage: scripts/tapegrad.sh main [args...] | scripts/tapegrad.sh test" ;;
esac
