#!/usr/bin/env bash
# One lease on a GPU machine: build the extension there, run the GPU tests and the benchmarks,
# and leave logs and JSON under $OUT (device tool) or ./out. Usage:
#   bash scripts/gpu_session.sh [tests|bench|all|fig1|sanitize] [extra pytest -k expression]
# Under the device tool's 10-minute limit per command, run `tests` and `bench` as two calls
# (`all` is both, for a machine without that limit). The build is incremental between calls.
# sanitize [memcheck|racecheck|synccheck]: one compute-sanitizer tool (default memcheck; one
# tool per call fits the limit) on small cuda and triton overlap calls in every precision,
# with histogram, top-k and the split mode.
# fig1: the full-size Fig. 1 sweep (48 models, 20000 steps) on the GPU, then its fit; it stops
# at 540 s and a rerun with the same OUT resumes. PREC=tf32x3 (or tf32, bf16) runs it in that
# precision into $OUT/fig1-$PREC and compares its exponents with $OUT/fig1 (fp32) if present.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-out}"; mkdir -p "$OUT"
what="${1:-all}"; kexpr="${2:-}"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
[ -d /usr/local/cuda/bin ] && export PATH="/usr/local/cuda/bin:$PATH"  # CMake must find nvcc
PY=python3
{
  nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,memory.total --format=csv
  $PY -c "import sys,torch,triton;print('python',sys.version.split()[0],'torch',torch.__version__,'triton',triton.__version__,'cuda',torch.version.cuda)"
  nvcc --version | tail -1
} 2>&1 | tee "$OUT/env.txt"
t0=$(date +%s)
SUPERKERN_CUDA_ARCH="${SUPERKERN_CUDA_ARCH:-90}" CMAKE_BUILD_PARALLEL_LEVEL=16 \
  $PY setup.py -q build_ext --inplace >"$OUT/build.log" 2>&1 || {
    echo "BUILD FAILED (CUDA); retrying without CUDA"; grep -E "error" "$OUT/build.log" | head -20
    SUPERKERN_NO_CUDA=1 $PY setup.py -q build_ext --inplace >>"$OUT/build.log" 2>&1; }
echo "build: $(( $(date +%s) - t0 )) s"
$PY -m superkern env | tee -a "$OUT/env.txt"
if [ "$what" = tests ] || [ "$what" = all ]; then
  # Every GPU test file; the offline sm_90 compile checks are CI's job (real launches cover
  # them here). --maxfail keeps one early failure from hiding the rest.
  sel="not compiles_for_sm90${kexpr:+ and ($kexpr)}"
  timeout 450 $PY -m pytest -q --maxfail=25 --timeout=300 -p no:randomly -k "$sel" \
    tests/test_overlap.py tests/test_overlap_triton.py tests/test_overlap_cuda.py \
    tests/test_overlap_cuda_launcher.py tests/test_overlap_stream.py tests/test_toy_triton.py \
    tests/test_toy_triton_tf32.py tests/test_toy_engine_triton.py tests/test_toy_train.py \
    tests/test_probe.py \
    2>&1 | tee "$OUT/tests.log" | tail -30
fi
if [ "$what" = bench ] || [ "$what" = all ]; then
  # One pytest per file: pytest-benchmark writes its JSON only when a session ends, so a
  # timeout loses just that file. The torch reference (tens of seconds per round on the
  # large heads) is left out unless SUPERKERN_BENCH_BACKENDS names it.
  export SUPERKERN_BENCH_BACKENDS="${SUPERKERN_BENCH_BACKENDS:-naive,compiled,cuda,triton-default,triton-tma}"
  for spec in "test_bench_overlap:270" "test_bench_toy_triton:150" "test_bench_toy:90"; do
    f="${spec%%:*}"; lim="${spec##*:}"
    timeout "$lim" $PY -m pytest -q "bench/$f.py" ${kexpr:+-k "$kexpr"} \
      --benchmark-json="$OUT/$f.json" --benchmark-columns=median,min,max,rounds \
      2>&1 | tee "$OUT/$f.log" | tail -25
    echo "$f: exit ${PIPESTATUS[0]}"
  done
  ls "$OUT"/test_bench_*.json >/dev/null 2>&1 && \
    $PY bench/summarize.py "$OUT"/test_bench_*.json > "$OUT/bench-summary.md" && \
    echo "tables for bench/RESULTS.md: $OUT/bench-summary.md"
fi
if [ "$what" = fig1 ]; then
  prec="${PREC:-fp32}"; run="fig1"; [ "$prec" = fp32 ] || run="fig1-$prec"
  t1=$(date +%s)
  timeout 540 $PY -m superkern sweep fig1 --out "$OUT/$run" --no-weights --no-progress \
    --set "precision=\"$prec\"" 2>&1 | tee "$OUT/$run.log" | tail -5
  echo "$run sweep: $(( $(date +%s) - t1 )) s" | tee -a "$OUT/$run.log"
  $PY -m superkern fit "$OUT/$run" --json "$OUT/$run-fit.json" 2>&1 | tee "$OUT/$run-fit.txt" | head -12
  if [ "$run" != fig1 ] && [ -d "$OUT/fig1" ]; then
    $PY -m superkern fit "$OUT/fig1" --against "$OUT/$run" 2>&1 | tee "$OUT/$run-vs-fp32.txt"
  fi
fi
if [ "$what" = sanitize ]; then
  cat > "$OUT/sanitize_case.py" <<'PYEOF'
import sys, torch, superkern
from superkern.ops.overlap_cuda import overlap_partials_cuda
backend = sys.argv[1]
g = torch.Generator(device="cuda").manual_seed(0)
for prec in ("fp32", "tf32", "bf16", "fp16"):
    W = torch.randn(300, 40, device="cuda", generator=g)
    W[7] = W[3]
    st = superkern.overlap_stats(W, bins=64, topk=5, per_row=True, precision=prec, backend=backend)
    print(backend, prec, f"mean_abs {st.mean_abs:.6f} max {st.max_abs:.6f} pair {st.max_pair}")
if backend == "cuda":  # the cross-pair (split) schedule on its own
    X = torch.randn(300, 40, device="cuda", generator=g).to(torch.bfloat16)
    part = overlap_partials_cuda(X, torch.ones(300, device="cuda"), bins=16, topk=3,
                                 precision="bf16", split=128)
    print("split ok", part.sum_sq)
PYEOF
  tool="${kexpr:-memcheck}"
  for b in cuda triton; do
    timeout 240 compute-sanitizer --tool "$tool" --error-exitcode 9 $PY "$OUT/sanitize_case.py" "$b" \
      >"$OUT/sanitize-$tool-$b.log" 2>&1
    echo "sanitize $tool $b: exit $? ($(grep -c 'ERROR SUMMARY: 0 errors' "$OUT/sanitize-$tool-$b.log") clean summaries)"
  done | tee -a "$OUT/sanitize.txt"
fi
