#!/usr/bin/env bash
# Everything issue 16 needs from a lent GPU machine, in one call of at most 8 minutes.
#
# Stages, each under its own `timeout` and capped by what is left of the 8 minutes, each writing
# its own files under $OUT as it finishes (a stage that fails or runs out of time does not stop
# the next one):
#   wheels     install the carried wheels (.whl/, ../shared/gpu/README.md) into /tmp/site
#   env        GPU, torch, CUDA, commit
#   cuda_tests every CUDA test (pytest -k cuda), JUnit XML
#   throughput benchmarks/md_throughput.py, 1-1024 replicas, float32 models
#   size_scan  benchmarks/size_scan.py: one LJ system 4 000 -> 1 000 188 atoms, NequIP to 32 000
#   overhead   benchmarks/calculator_overhead.py on the GPU (water from .gpu_data/)
# and gpu_suite.md (stage table + each stage's Markdown) and gpu_suite.json (stage status).
#
# Prepare on the CPU machine, once:
#   bash ../shared/gpu/fetch_wheels.sh
#   mkdir -p .gpu_data && cp -r ../shared/data/water_dft .gpu_data/
#   printf '/.whl/\n/.gpu_data/\n' >> .git/info/exclude
# Then, with the device tool: command "bash benchmarks/gpu_suite.sh", carry [".whl", ".gpu_data"],
# timeout_s 540; the results come back under $OUT.
#
# Dry run on the CPU (every stage tiny, device cpu, no wheels): GPU_SUITE_DRY=1 bash
# benchmarks/gpu_suite.sh   (OUT defaults to out/gpu_suite).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${OUT:-$ROOT/out/gpu_suite}
mkdir -p "$OUT"
DRY=${GPU_SUITE_DRY:-0}
TOTAL_S=${GPU_SUITE_TOTAL_S:-480}
START=$(date +%s)
STATUS=()

if [ "$DRY" = 1 ]; then
  PY=${PYTHON:-$ROOT/.venv/bin/python}
  DEVICE=cpu
else
  PY=${PYTHON:-python3}
  DEVICE=cuda
fi
export PYTHONUNBUFFERED=1 DRY PY

# stage NAME LIMIT_S COMMAND...: run under min(LIMIT_S, time left), output in $OUT/NAME.log
stage() {
  local name=$1 limit=$2
  shift 2
  local left=$((TOTAL_S - ($(date +%s) - START)))
  if [ "$left" -lt 5 ]; then
    echo "gpu_suite: $name skipped (no time left)"
    STATUS+=("$name skipped 0")
    return
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "gpu_suite: $name (limit ${limit} s)"
  local t0 rc
  t0=$(date +%s)
  if declare -F "$1" >/dev/null; then  # a function of this script: run it in its own bash
    timeout --kill-after=5 "$limit" bash -c "$(declare -f "$1"); $*" >"$OUT/$name.log" 2>&1
  else
    timeout --kill-after=5 "$limit" "$@" >"$OUT/$name.log" 2>&1
  fi
  rc=$?
  local took=$(($(date +%s) - t0))
  [ "$rc" = 124 ] && echo "gpu_suite: $name ran out of time (${limit} s)" >>"$OUT/$name.log"
  echo "gpu_suite: $name rc=$rc in ${took} s"
  STATUS+=("$name $rc $took")
}

install_wheels() {
  if [ "$DRY" = 1 ]; then
    echo "dry run: the venv stands in for the wheels"
    return 0
  fi
  ls .whl/*.whl >/dev/null || { echo "no .whl/: carry it (see the header)"; return 1; }
  "$PY" -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
}

environment() {
  git rev-parse HEAD 2>/dev/null || echo "commit: (no git)"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else '')"
}

if [ "$DRY" = 1 ]; then
  THROUGHPUT=(--device cpu --cases lj --replicas 1 2 --rounds 1 --target-s 0.05 --max-steps 3)
  SCAN=(--device cpu --lj 3 4 --nequip 2 --steps 2 --warmup 1 --budget-s 30)
  OVERHEAD=(--device cpu --quick --rounds 1)
  DATA=${GPU_SUITE_DATA:-$ROOT/../shared/data}
else
  THROUGHPUT=(--device cuda --model-dtype float32 --replicas 1 16 64 256 1024 --rounds 2
    --target-s 0.3 --max-steps 50)
  SCAN=(--device cuda --lj 10 20 40 63 --nequip 6 12 20 --steps 40 --budget-s 55)
  OVERHEAD=(--device cuda --rounds 3)
  DATA=${GPU_SUITE_DATA:-$ROOT/.gpu_data}
fi

stage wheels 40 install_wheels
[ "$DRY" = 1 ] || export PYTHONPATH=/tmp/site:$ROOT
stage env 20 environment
stage cuda_tests 90 "$PY" -m pytest -q -k cuda -p no:cacheprovider --junitxml "$OUT/cuda_tests.xml" \
  tests/calculators tests/md tests/train tests/models tests/cli tests/test_neighbors.py
stage throughput 130 "$PY" benchmarks/md_throughput.py "${THROUGHPUT[@]}" -o "$OUT/md_throughput.json"
stage size_scan 120 "$PY" benchmarks/size_scan.py "${SCAN[@]}" -o "$OUT/size_scan.json" \
  --markdown "$OUT/size_scan.md"
stage overhead 80 "$PY" benchmarks/calculator_overhead.py "${OVERHEAD[@]}" --data "$DATA" \
  -o "$OUT/calculator_overhead.json" --markdown "$OUT/calculator_overhead.md"

# summary: stage table, then what each stage reported
{
  echo "# GPU suite ($(date -u '+%Y-%m-%d %H:%M UTC'), device $DEVICE$([ "$DRY" = 1 ] && echo ', DRY RUN: tiny sizes on the CPU'))"
  echo
  echo "| stage | exit status | seconds |"
  echo "|---|---|---|"
  for s in "${STATUS[@]}"; do
    read -r name rc took <<<"$s"
    echo "| $name | $rc | $took |"
  done
  echo
  echo "## Environment"
  echo '```'
  cat "$OUT/env.log" 2>/dev/null
  echo '```'
  echo "## CUDA tests"
  echo '```'
  tail -n 15 "$OUT/cuda_tests.log" 2>/dev/null
  echo '```'
  echo "## MD throughput"
  grep '^|' "$OUT/throughput.log" 2>/dev/null || echo "(no table: see throughput.log)"
  echo
  cat "$OUT/size_scan.md" 2>/dev/null || echo "(no size scan table: see size_scan.log)"
  echo
  echo "## Calculator overhead"
  cat "$OUT/calculator_overhead.md" 2>/dev/null || echo "(no table: see overhead.log)"
} >"$OUT/gpu_suite.md"
{
  echo "{\"device\": \"$DEVICE\", \"dry_run\": $([ "$DRY" = 1 ] && echo true || echo false), \"stages\": ["
  sep=""
  for s in "${STATUS[@]}"; do
    read -r name rc took <<<"$s"
    echo "$sep{\"stage\": \"$name\", \"exit_status\": \"$rc\", \"seconds\": $took}"
    sep=", "
  done
  echo "]}"
} >"$OUT/gpu_suite.json"
echo "gpu_suite: wrote $OUT/gpu_suite.md and gpu_suite.json in $(($(date +%s) - START)) s"
