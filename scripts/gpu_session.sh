#!/usr/bin/env bash
# One call on a GPU machine: build the extension there, then one job, leaving logs, JSONL and
# summaries under $OUT (device tool) or ./out. Usage:
#   bash scripts/gpu_session.sh JOB [pytest -k expression | sanitizer tool]
# JOB, each sized for the device tool's 10-minute limit per call (at most 8 files in $OUT):
#   tests          the GPU test files of the kernels, engines and probe -> tests.log
#   tests-more     the other test files with GPU paths (top-k passes, placement, test loss,
#                  toy tiles, sweeps on the GPU) -> tests-more.log
#   bench-overlap  overlap benchmarks, one pytest process per backend (a CUDA fault or a
#                  timeout costs only that backend) -> bench-overlap.jsonl, bench-overlap.log;
#                  SUPERKERN_BENCH_BACKENDS="cuda:200 triton-default" picks backends[:seconds]
#   bench-toy      toy-model benchmarks (Triton kernels, then the torch engine) ->
#                  bench-toy.jsonl, bench-toy.log
#   quick          bench/gpu_quick.py, the public op against naive PyTorch -> quick.json
#   sanitize       compute-sanitizer (memcheck, or the tool named: racecheck, synccheck) on
#                  small cuda and triton overlap calls in every precision
#   small          the full small grid (1020 models, 20000 steps; the toy-engine issue's "under
#                  3 minutes"), stopped before the call's limit and resumed by the next call
#                  on the same warm machine -> small-results.jsonl, small-fit.{json,txt};
#                  a launch in flight at the limit is lost, so if one launch (240 models)
#                  outlasts a call, pass SWEEP_ARGS="--max-instances 60" (also for fig1)
#   fig1           the full-size Fig. 1 sweep (48 models, 20000 steps), stopped at 480 s;
#                  results live in runs/ of the machine's working copy, so the next call on
#                  the same (warm) machine resumes it; PREC=tf32x3 (tf32, bf16) runs that
#                  precision and compares its exponents with the fp32 run if present
#   all            both test jobs, both benches and quick (a machine without the 10-minute
#                  limit)
# Every case of a bench is appended to the JSONL as it finishes (bench/conftest.py), so a
# timeout loses at most the case in flight. bench-summary.md: bench/summarize.py tables.
# The build is incremental while the machine stays warm; a fresh machine rebuilds (~40 s).
# Every job ends by SUPERKERN_JOB_SECONDS (default 570) after the script starts, build
# included, inside the device tool's 600 s: each step's limit is cut to the time left.
# The GEMM peaks are measured once per machine (build/bench-peaks.json) and shared by every
# bench process. The exit code is 1 when the build or any step failed or was skipped for lack
# of time (a sweep stopped at the limit, to resume, is not a failure), 2 for an unknown job.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-out}"; mkdir -p "$OUT"
what="${1:-all}"; kexpr="${2:-}"
case "$what" in
  tests|tests-more|bench-overlap|bench-toy|quick|small|fig1|sanitize|all) ;;
  *) echo "unknown job '$what': tests, tests-more, bench-overlap, bench-toy, quick, small," \
       "sanitize, fig1, all"; exit 2 ;;
esac
START=$(date +%s); fail=0
if [ "$what" = all ]; then DEADLINE=$(( START + 100000 )); else
  DEADLINE=$(( START + ${SUPERKERN_JOB_SECONDS:-570} )); fi
left() { echo $(( DEADLINE - $(date +%s) )); }
cap() { local l; l=$(left); [ "$1" -lt "$l" ] && l=$1; [ "$l" -lt 1 ] && l=1; echo "$l"; }
# enough SECONDS WHAT: false (and the job failed) when less than SECONDS are left for WHAT
# (`timeout 0` would mean no limit at all)
enough() { [ "$(left)" -ge "$1" ] && return 0
  echo "$2: skipped, $(left) s left of the job" | tee -a "$LOG"; fail=1; return 1; }
export SUPERKERN_BENCH_PEAKS="$PWD/build/bench-peaks.json"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
[ -d /usr/local/cuda/bin ] && export PATH="/usr/local/cuda/bin:$PATH"  # CMake must find nvcc
PY=python3
# pytest-timeout is in the GPU machine's image; without it the per-case limits are dropped
# (the outer `timeout` still bounds each job) instead of pytest refusing --timeout.
tmo() { $PY -c "import pytest_timeout" 2>/dev/null && echo "--timeout=$1"; }
LOG="$OUT/session.log"
{
  nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,memory.total --format=csv
  $PY -c "import sys, torch, triton; print('python', sys.version.split()[0], 'torch',
    torch.__version__, 'triton', triton.__version__, 'cuda', torch.version.cuda)"
  nvcc --version | tail -1
  t0=$(date +%s); mkdir -p build
  SUPERKERN_CUDA_ARCH="${SUPERKERN_CUDA_ARCH:-90}" CMAKE_BUILD_PARALLEL_LEVEL=16 \
    $PY setup.py -q build_ext --inplace >build/superkern-build.log 2>&1 || {
      echo "BUILD FAILED (CUDA); retrying without CUDA; full log: superkern-build.log"
      grep -E "error" build/superkern-build.log | head -20
      cp build/superkern-build.log "$OUT/superkern-build.log"
      touch build/build-failed
      SUPERKERN_NO_CUDA=1 $PY setup.py -q build_ext --inplace >>build/superkern-build.log 2>&1; }
  tail -3 build/superkern-build.log
  echo "build: $(( $(date +%s) - t0 )) s"
  $PY -m superkern env
  [ -f "$SUPERKERN_BENCH_PEAKS" ] && echo "GEMM peaks measured earlier on this machine:" \
    && cat "$SUPERKERN_BENCH_PEAKS"
} 2>&1 | tee "$LOG"
[ -f build/build-failed ] && { fail=1; rm -f build/build-failed; }

run_tests() {  # run_tests LOG_NAME FILE...
  # The offline sm_90 compile checks are CI's job (real launches cover them here).
  # --maxfail keeps one early failure from hiding the rest.
  local name="$1"; shift
  enough 30 "tests $name" || return
  local sel="not compiles_for_sm90${kexpr:+ and ($kexpr)}"
  timeout "$(cap 450)" $PY -m pytest -q --maxfail=25 $(tmo 300) -p no:randomly -k "$sel" "$@" \
    2>&1 | tee "$OUT/$name.log" | tail -30
  [ "${PIPESTATUS[0]}" = 0 ] || fail=1
}

bench_file() {  # bench_file NAME FILE PROCESS_LIMIT_S CASE_LIMIT_S [ENV=VALUE ...]
  local name="$1" file="$2" lim="$3" case_lim="$4"; shift 4
  local t1; t1=$(date +%s); lim=$(cap "$lim")
  enough 30 "$file $*" || return
  [ "$case_lim" -lt "$lim" ] || case_lim=$(( lim - 5 ))
  env "$@" SUPERKERN_BENCH_JSONL="$OUT/$name.jsonl" timeout "$lim" $PY -m pytest -q \
    "bench/$file.py" ${kexpr:+-k "$kexpr"} $(tmo "$case_lim") -p no:cacheprovider \
    --benchmark-columns=median,min,max,rounds >>"$OUT/$name.log" 2>&1
  local rc=$? cases; cases=$(grep -vc -e '"started"' -e '"ended"' "$OUT/$name.jsonl" 2>/dev/null)
  [ "$rc" = 0 ] || fail=1
  echo "$file $*: exit $rc after $(( $(date +%s) - t1 )) s (limit $lim)," \
    "${cases:-0} cases in $name.jsonl" | tee -a "$LOG"
}

sweep_job() {  # sweep_job NAME PRESET [--set ...]: run (resume) a built-in sweep, then fit it
  local run="$1" preset="$2"; shift 2
  mkdir -p runs
  enough 90 "$run sweep" || return
  local t1; t1=$(date +%s)
  # stopped 60 s before the job's end: the fits below need that time
  timeout "$(( $(cap 480) - 60 ))" $PY -m superkern sweep "$preset" --out "runs/gpu-$run" \
    --no-weights --no-progress "$@" 2>&1 | tee -a "$LOG" | tail -5
  local rc=${PIPESTATUS[0]} state="done"
  [ "$rc" = 124 ] && \
    state="stopped at the call's limit; the next call on this warm machine resumes it"
  [ "$rc" = 0 ] || [ "$rc" = 124 ] || { fail=1; state="failed"; }
  local done_n; done_n=$(wc -l 2>/dev/null < "runs/gpu-$run/results.jsonl" || echo 0)
  echo "$run sweep: exit $rc ($state), $(( $(date +%s) - t1 )) s this call," \
    "$done_n models done" | tee -a "$LOG"
  cp "runs/gpu-$run/results.jsonl" "$OUT/$run-results.jsonl" 2>/dev/null
  timeout "$(cap 40)" $PY -m superkern fit "runs/gpu-$run" --json "$OUT/$run-fit.json" \
    >"$OUT/$run-fit.txt" 2>&1
  timeout "$(cap 20)" $PY -m superkern fit "runs/gpu-$run" --loss test \
    >>"$OUT/$run-fit.txt" 2>&1  # App. B's
  grep -E "alpha_m|^cell|gamma=-1|test loss" "$OUT/$run-fit.txt" | head -30
}

summary() {
  ls "$OUT"/bench-*.jsonl >/dev/null 2>&1 && \
    $PY bench/summarize.py "$OUT"/bench-*.jsonl > "$OUT/bench-summary.md" && \
    echo "tables for bench/RESULTS.md: $OUT/bench-summary.md" | tee -a "$LOG"
}

case "$what" in
  tests|all)
    run_tests tests tests/test_overlap.py tests/test_overlap_triton.py \
      tests/test_overlap_cuda.py tests/test_overlap_cuda_launcher.py tests/test_overlap_stream.py \
      tests/test_overlap_edges.py tests/test_toy_triton_edges.py \
      tests/test_toy_triton.py tests/test_toy_triton_tf32.py tests/test_toy_engine_triton.py \
      tests/test_toy_train.py tests/test_probe.py ;;&
  tests-more|all)
    run_tests tests-more tests/test_overlap_triton_topk.py tests/test_probe_placement.py \
      tests/test_toy_test_loss.py tests/test_toy_triton_tiles.py \
      tests/test_sweep_test_backfill.py tests/test_sweep_shard.py ;;&
  bench-overlap|all)
    # Most important first. The torch reference (tens of seconds per round on the large
    # heads) runs only when SUPERKERN_BENCH_BACKENDS names it.
    # Seconds per backend process: the default Triton kernel gets the most.
    specs="triton-default:130 naive:90 cuda:110 compiled:90 triton-tma:90"
    for spec in ${SUPERKERN_BENCH_BACKENDS:-$specs}; do
      be="${spec%%:*}"; lim="${spec##*:}"; [ "$lim" = "$be" ] && lim=100
      bench_file bench-overlap test_bench_overlap "$lim" $(( lim - 10 )) \
        SUPERKERN_BENCH_BACKENDS="$be"
    done
    summary ;;&
  bench-toy|all)
    # The eager peers first (three short CUDA cases: the speed-ups need them), then the
    # Triton cases in their priority order (bench/test_bench_toy_triton.py).
    bench_file bench-toy test_bench_toy 100 80
    bench_file bench-toy test_bench_toy_triton 420 120
    summary ;;&
  quick|all)
    if enough 30 "quick"; then
      timeout "$(cap 400)" $PY bench/gpu_quick.py --precisions bf16,tf32 \
        --json "$OUT/quick.json" \
        2>&1 | tee -a "$LOG" | tail -20
      [ "${PIPESTATUS[0]}" = 0 ] || fail=1
    fi ;;&
  small)
    sweep_job small small ${SWEEP_ARGS:-} ;;
  fig1)
    prec="${PREC:-fp32}"; run="fig1"; [ "$prec" = fp32 ] || run="fig1-$prec"
    sweep_job "$run" fig1 --set "precision=\"$prec\"" ${SWEEP_ARGS:-}
    if [ "$run" != fig1 ] && [ -d runs/gpu-fig1 ]; then
      $PY -m superkern fit runs/gpu-fig1 --against "runs/gpu-$run" 2>&1 \
        | tee "$OUT/$run-vs-fp32.txt"
    fi ;;
  sanitize)
    cat > build/sanitize_case.py <<'PYEOF'
import sys, torch, superkern
from superkern.ops.overlap_cuda import overlap_partials_cuda
backend = sys.argv[1]
g = torch.Generator(device="cuda").manual_seed(0)
for prec in ("fp32", "tf32", "bf16", "fp16"):
    W = torch.randn(300, 40, device="cuda", generator=g)
    W[7] = W[3]
    st = superkern.overlap_stats(W, bins=64, topk=5, per_row=True, precision=prec,
                                 backend=backend)
    print(backend, prec, f"mean_abs {st.mean_abs:.6f} max {st.max_abs:.6f} pair {st.max_pair}")
if backend == "cuda":  # the cross-pair (split) schedule on its own
    X = torch.randn(300, 40, device="cuda", generator=g).to(torch.bfloat16)
    part = overlap_partials_cuda(X, torch.ones(300, device="cuda"), bins=16, topk=3,
                                 precision="bf16", split=128)
    print("split ok", part.sum_sq)
PYEOF
    tool="${kexpr:-memcheck}"
    for b in cuda triton; do  # no pipeline around the loop: `fail` must survive it
      enough 30 "sanitize $tool $b" || continue
      timeout "$(cap 240)" compute-sanitizer --tool "$tool" --error-exitcode 9 \
        $PY build/sanitize_case.py "$b" \
        >"$OUT/sanitize-$tool-$b.log" 2>&1
      rc=$?; [ "$rc" = 0 ] || fail=1
      clean=$(grep -c 'ERROR SUMMARY: 0 errors' "$OUT/sanitize-$tool-$b.log")
      echo "sanitize $tool $b: exit $rc ($clean clean summaries)" | tee -a "$LOG"
    done ;;
  *) ;;  # the jobs above that fall through with ;;& (checked at the top)
esac
echo "job $what: $(( $(date +%s) - START )) s, exit $fail" | tee -a "$LOG"
exit "$fail"
