#!/bin/bash
# In-process A/B of two versions of ops/kernels/winograd.cpp on ResNet-18's stride-1 layers.
# On a noisy shared host two binaries run one after the other drift apart by 10-50 %; here
# both versions live in one process (their public symbols renamed with objcopy) and their
# calls alternate, so drift hits both alike. Medians and minima of each, and B/A.
#
#   bench/winograd_ab.sh A.cpp B.cpp [reps] [build dir]
#   e.g. git show HEAD~1:ops/kernels/winograd.cpp > /tmp/a.cpp
#        bench/winograd_ab.sh /tmp/a.cpp ops/kernels/winograd.cpp 21
# Environment: ONLY=fwd,igrad,wgrad (kernels), LAYER=64|128|256|512, TILE=2|4 (force a tile).
# Needs a Release build of the library (build/libtapegrad.a).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
a=$1 b=$2 reps=${3:-21} build=${4:-$root/build}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
flags=(-DBOOST_ALL_NO_LIB -DFMT_SHARED -I"$root/include" -I"$root" -O3 -DNDEBUG -fPIC -fno-trapping-math
       -fno-math-errno -fopenmp -std=gnu++20)
for v in A B; do
  src=$a
  [ "$v" = B ] && src=$b
  cp "$src" "$work/$v.cpp"
  g++ "${flags[@]}" -c "$work/$v.cpp" -o "$work/$v.raw.o"
  renames=()
  for sym in $(nm "$work/$v.raw.o" | awk '$2 == "T" {print $3}' | grep -E 'winograd_(forward|input_grad|weight_grad|fits|tile_for)'); do
    old=$(echo "$sym" | grep -oE '[0-9]+winograd_[a-z_]+' | head -1)
    ident="${old#"${old%%[a-z]*}"}_$v"   # the identifier without its length prefix, + _A or _B
    renames+=(--redefine-sym "$sym=${sym/$old/${#ident}$ident}")
  done
  objcopy "${renames[@]}" "$work/$v.raw.o" "$work/$v.o"
done
g++ -O2 -std=c++20 -fopenmp -I"$root" -I"$root/include" "$root/bench/winograd_ab.cpp" "$work/A.o" "$work/B.o" \
  "$build/libtapegrad.a" -lfmt -ldnnl -lz -o "$work/ab"
for t in 1 2; do
  echo "threads=$t"
  OMP_NUM_THREADS=$t "$work/ab" "$reps"
done
