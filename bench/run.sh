#!/usr/bin/env bash
# Runs every benchmark and prints a table: tapegrad's median, libtorch's (when its twin was
# built), and the ratio libtorch/tapegrad measured in this run (> 1: tapegrad is faster).
# Usage: bench/run.sh [BUILD_DIR]   (default: build; configure with TAPEGRAD_BUILD_BENCH=ON)
# BENCH_TORCH_ALLOC=best runs the libtorch twins with glibc keeping and reusing freed memory
# (no page faults on their large tensors; bench/README, session 15), the fairest baseline for
# memory-bound rows; the default is libtorch as a user runs it.
set -euo pipefail
build=${1:-build}
dir=$build/bench
[ -x "$dir/bench_conv_pool" ] || { echo "bench/run.sh: $dir/bench_conv_pool not built" >&2; exit 1; }
# Debian's libtorch calls the generic libblas.so.3 for linear, matmul and its transposed
# convolution: with only the reference BLAS installed those run about 10x slower, which
# would make every such ratio meaningless. libopenblas0-openmp (OpenMP, so that
# torch::set_num_threads governs it) is the fair baseline.
blas=$(readlink -f /usr/lib/x86_64-linux-gnu/libblas.so.3 2>/dev/null || true)
if compgen -G "$dir/bench_*_torch" > /dev/null && [[ "$blas" == */blas/libblas.so.3 ]]; then
  echo "bench/run.sh: libblas.so.3 is the reference BLAS ($blas); libtorch's twins would be unfairly slow." >&2
  echo "  Install an optimised one first: sudo apt-get install libopenblas0-openmp" >&2
  exit 1
fi
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for b in bench_gemm_onednn bench_gemm_blis bench_gemm_openblas bench_tape bench_tape_torch bench_lenet_step bench_lenet_step_torch bench_gradient_penalty bench_gradient_penalty_torch bench_epoch bench_epoch_torch bench_resnet18 bench_resnet18_torch bench_norms bench_norms_torch bench_conv_pool bench_conv_pool_torch bench_memory_ops bench_memory_ops_torch bench_rnn bench_rnn_torch bench_interpolate bench_interpolate_torch bench_attention bench_attention_torch; do
  if [ -x "$dir/$b" ]; then
    tunables=()
    if [[ "$b" == *_torch && "${BENCH_TORCH_ALLOC:-}" == best ]]; then
      # tcache_count=0: posix_memalign's slivers would otherwise sit in the tcache, never
      # coalesced, and every freed large block would stay too small for the next request.
      tunables=(GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=4294967295:glibc.malloc.tcache_count=0)
    fi
    env "${tunables[@]}" "$dir/$b" | tee -a "$out" >&2
  elif [[ "$b" == *_torch ]]; then
    echo "bench/run.sh: libtorch not installed: comparison skipped" >&2
  fi
done
python3 - "$out" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
gemm = [r for r in rows if "m" in r]
if gemm:
    print(f"{'GEMM sgemm':<38}{'threads':>8}{'median ms':>12}{'GFLOP/s':>10}")
    for r in gemm:
        print(f"{r['lib'] + ' ' + str(r['m']) + 'x' + str(r['n']) + 'x' + str(r['k']):<38}{r['threads']:>8}{r['median_ms']:>12.3f}{r['gflops']:>10.1f}")
    print()
ours = {(r["name"], r["threads"]): r for r in rows if r.get("lib") == "tapegrad"}
theirs = {(r["name"], r["threads"]): r for r in rows if r.get("lib") == "libtorch"}
print(f"{'benchmark':<46}{'threads':>8}{'tapegrad ms':>13}{'libtorch ms':>13}{'ratio':>8}")
for key, r in ours.items():
    t = theirs.get(key)
    ratio = f"{t['median_ms'] / r['median_ms']:.2f}" if t else "-"
    lt = f"{t['median_ms']:.3f}" if t else "-"
    print(f"{key[0]:<46}{key[1]:>8}{r['median_ms']:>13.3f}{lt:>13}{ratio:>8}")
for r in rows:
    if "median_gain" in r:
        print(f"{r['name']}: 1 -> 2 threads {r['median_gain']:.2f}x (median of {r['turns']} turns, {r['min_gain']:.2f}-{r['max_gain']:.2f}; "
              f"{r['alternating_gain']:.2f}x timing the first step after each switch; the FMA loop's {r['fma_loop_gain']:.2f}x)")
PY
