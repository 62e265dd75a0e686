#!/usr/bin/env bash
# The GPU check: one script, one GPU, under 8 minutes (each step has a timeout; their sum,
# 460 s, bounds it). Results go into ${OUT:-./fedjax-gen-out/gpu_check}:
#
#  (a) the round benchmark (`python -m fedjax_gen_bench.round_bench`, i.e. `fedjax-gen
#      bench`) for simple_cnn and cnn4 at 10 / 100 / 1000 clients per round: the fused
#      round with every client of the round in one vmapped chunk (`fedjax_gen_auto`, the
#      plan a run picks on a GPU) against chunks of 10 clients (`fedjax_gen_chunk10`), once
#      with XLA's native convolution (`--conv-impl xla`, round_bench_xla/) and once with
#      im2col (`--conv-impl im2col`, round_bench_im2col/);
#  (b) experiments/benchmarks/sweep.py at R = 1 / 8 / 32 seeds: `StackedRuns` (one vmapped
#      round) against R `Simulation`s one after another (sweep/);
#  (c) a 50-round NIID-Bench FedAvg run, label skew Dir(0.5) (`fedjax-gen run niid_fmnist`,
#      its defaults: 10 clients, all per round, 10 local epochs, simple CNN), and its
#      summary's wall_time_s (niid_fedavg/).
#
# At the end: a summary of each step (status, seconds, where its results are) in
# summary.txt, and the small result files (no checkpoints) in gpu_check_results.tar.gz.
#
#   bash experiments/benchmarks/gpu_check.sh            # on a GPU (refused on a CPU)
#   bash experiments/benchmarks/gpu_check.sh --smoke    # tiny sizes, on this CPU, ~2-3 min
#
# Environment: OUT (the output folder), PYTHON (default python3), FASHION_MNIST_DIR (a
# folder with the four Fashion-MNIST IDX .gz files, for (c) where the default
# /usr/share/datasets/fashion-mnist is missing; --smoke writes a tiny synthetic set
# instead), T_BENCH_XLA, T_BENCH_IM2COL, T_SWEEP, T_RUN (the steps' timeouts, seconds).
# XLA_PYTHON_CLIENT_PREALLOCATE defaults to false here: the round benchmark keeps one
# process per runner alive at once, which JAX's default preallocation (75% of the GPU
# each) would not fit. A step that fails or times out does not stop the next; the script
# exits 1 if any did.
set -euo pipefail

SMOKE=0
for arg in "$@"; do
  case "$arg" in
    --smoke) SMOKE=1 ;;
    -h|--help) sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument '$arg' (only --smoke)" >&2; exit 2 ;;
  esac
done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
OUT="${OUT:-./fedjax-gen-out/gpu_check}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
PY="${PYTHON:-python3}"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"  # this checkout, installed or not
export PYTHONUNBUFFERED=1
export XLA_PYTHON_CLIENT_PREALLOCATE="${XLA_PYTHON_CLIENT_PREALLOCATE:-false}"
SUMMARY="$OUT/summary.txt"
: > "$SUMMARY"
FAILED=0
START=$SECONDS

# step NAME TIMEOUT_S CMD...: runs CMD under a timeout, its output shown and kept in
# NAME.log; records its status and seconds in summary.txt.
step() {
  local name="$1" limit="$2"
  shift 2
  echo
  echo "=== [$name] timeout ${limit}s: $*"
  local t0=$SECONDS rc=0
  timeout --kill-after=15 "$limit" "$@" 2>&1 | tee "$OUT/$name.log" || rc=$?
  local status="ok"
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    status="TIMEOUT after ${limit}s"
  elif [ "$rc" -ne 0 ]; then
    status="FAILED (exit $rc)"
  fi
  [ "$status" = "ok" ] || FAILED=1
  printf '%-16s %-24s %5ds\n' "$name" "$status" "$((SECONDS - t0))" >> "$SUMMARY"
  echo "=== [$name] $status in $((SECONDS - t0))s"
}

BACKEND="$("$PY" -c 'import jax; print(jax.default_backend())')"
echo "gpu_check: backend $BACKEND, smoke $SMOKE, output $OUT, python $PY"
if [ "$SMOKE" -eq 0 ] && [ "$BACKEND" = "cpu" ]; then
  echo "gpu_check: no GPU here (JAX's backend is cpu): its full sizes are meant for one;" \
       "run with --smoke for the tiny CPU check." >&2
  exit 2
fi

if [ "$SMOKE" -eq 1 ]; then
  BENCH_ARGS=(--models simple_cnn --clients 2 --runners fedjax_gen_auto fedjax_gen_chunkall
              --repeats 1 --max-seconds 60)
  SWEEP_ARGS=(--smoke --models simple_cnn --timeout 150)
  T_BENCH_XLA="${T_BENCH_XLA:-150}" T_BENCH_IM2COL="${T_BENCH_IM2COL:-150}"
  T_SWEEP="${T_SWEEP:-180}" T_RUN="${T_RUN:-150}"
  # Fashion-MNIST-shaped IDX files of random pixels: 600 train, 100 test images.
  DATA_DIR="$OUT/tiny_fmnist"
  "$PY" - "$DATA_DIR" <<'EOF'
import gzip, os, sys
import numpy as np
folder = sys.argv[1]
os.makedirs(folder, exist_ok=True)
rng = np.random.default_rng(0)
for split, n in (("train", 600), ("t10k", 100)):
  for kind, arr in (("images-idx3", rng.integers(0, 256, (n, 28, 28), np.uint8)),
                    ("labels-idx1", np.arange(n, dtype=np.uint8) % 10)):
    header = bytes([0, 0, 8, arr.ndim]) + np.asarray(arr.shape, ">i4").tobytes()
    with gzip.open(os.path.join(folder, f"{split}-{kind}-ubyte.gz"), "wb") as f:
      f.write(header + arr.tobytes())
EOF
  RUN_ARGS=(rounds=2 local_epochs=1 "data.dir=$DATA_DIR")
else
  BENCH_ARGS=(--models simple_cnn cnn4 --clients 10 100 1000
              --runners fedjax_gen_auto fedjax_gen_chunk10 --repeats 2 --max-seconds 60)
  SWEEP_ARGS=(--runs 1 8 32 --repeats 3 --timeout 60)
  T_BENCH_XLA="${T_BENCH_XLA:-110}" T_BENCH_IM2COL="${T_BENCH_IM2COL:-90}"
  T_SWEEP="${T_SWEEP:-110}" T_RUN="${T_RUN:-150}"
  DATA_DIR="${FASHION_MNIST_DIR:-}"
  if [ -n "$DATA_DIR" ]; then
    DATA_DIR="$(cd "$DATA_DIR" && pwd)"
  elif [ ! -d /usr/share/datasets/fashion-mnist ]; then
    echo "gpu_check: warning: /usr/share/datasets/fashion-mnist is missing and" \
         "FASHION_MNIST_DIR is unset: step run_niid will fail." >&2
  fi
  RUN_ARGS=(rounds=50 ${DATA_DIR:+"data.dir=$DATA_DIR"})
fi

# (a) the round benchmark: fused vmapped (auto) vs chunked, native vs im2col convolution.
for conv in xla im2col; do
  limit_var="T_BENCH_${conv^^}"
  step "bench_$conv" "${!limit_var}" "$PY" -m fedjax_gen_bench.round_bench "${BENCH_ARGS[@]}" \
    --conv-impl "$conv" --out "$OUT/round_bench_$conv" \
    --note "gpu_check.sh: fedjax_gen runners with --conv-impl $conv."
done

# (b) seeds side by side: StackedRuns vs Simulations one after another.
step sweep "$T_SWEEP" "$PY" experiments/benchmarks/sweep.py "${SWEEP_ARGS[@]}" \
  --out "$OUT/sweep"

# (c) NIID-Bench FedAvg, Dir(0.5), 50 rounds (2 tiny ones with --smoke): wall time.
WORKDIR="$OUT/niid_fedavg"
rm -rf "$WORKDIR"  # a fresh run, not a resumed one
step run_niid "$T_RUN" "$PY" -m fedjax_gen run niid_fmnist algorithm=fedavg \
  partition=dirichlet alpha=0.5 progress=false "${RUN_ARGS[@]}" --workdir "$WORKDIR"
if [ -f "$WORKDIR/summary.json" ]; then
  WALL="$("$PY" -c 'import json, sys; s = json.load(open(sys.argv[1]))
print("%.1f s for %d rounds" % (s["wall_time_s"], s["rounds"]))' "$WORKDIR/summary.json")"
  echo "run_niid: wall_time_s $WALL"
  echo "run_niid wall time: $WALL ($WORKDIR/summary.json)" >> "$SUMMARY"
fi

cat >> "$SUMMARY" <<EOF

backend $BACKEND, smoke $SMOKE, $((SECONDS - START)) s in all. Results in $OUT:
  round_bench_xla/, round_bench_im2col/   benchmarks/results/round_bench_$BACKEND.json, BENCHMARKS.md
  sweep/                                   benchmarks/results/sweep_$BACKEND.json, BENCHMARKS.md
  niid_fedavg/                             summary.json (wall_time_s), metrics
  <step>.log                               each step's output
  gpu_check_results.tar.gz                 all of the above but checkpoints
EOF

# The small result files in one archive (checkpoints left out), written beside, then moved.
ARCHIVE="$(mktemp "${TMPDIR:-/tmp}/gpu_check_results.XXXXXX")"
tar -czf "$ARCHIVE" -C "$OUT" --exclude=checkpoints --exclude=gpu_check_results.tar.gz \
  --exclude=tiny_fmnist .
mv "$ARCHIVE" "$OUT/gpu_check_results.tar.gz"

echo
echo "=== gpu_check summary ($SUMMARY)"
cat "$SUMMARY"
exit "$FAILED"
