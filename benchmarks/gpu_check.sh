#!/usr/bin/env bash
# The GPU check of issue 13, item 7: one prepared script that, on one GPU, finishes in under 8 minutes and writes
# one JSON file with
#
#   losses  bench_losses.py in bf16: each EVL-ECG term's forward+backward time at the paper's shapes, and their
#           per-step total as a share of an SFT step (the "< 2 % of a step" check);
#   step    bench_step.py --config gpu-full for TRL's SFTTrainer, the teacher forward and EVL-ECG (s/step, peak GB),
#           against the paper's Table 7 (EVL-ECG 8.54 s / 56.4 GB on one H100, global batch 48);
#   cached  EVL-ECG trained from a teacher cache built on the spot over the run's samples (steps x 48 of them),
#           its build throughput and size, and its step against SFT and the live-teacher step.
#
# Each part runs under its own timeout (defaults below: 60 + 230 + 170 s = 7.7 min at most), so one part running
# long cannot take the others' time; a part that fails or times out is reported as such and the rest still count.
#
#   bash benchmarks/gpu_check.sh --output gpu_check.json
#   bash benchmarks/gpu_check.sh --dry-run --output /tmp/gpu.json   # everything on CPU, tiny config, seconds
#
# Environment: PYTHON (default python), STEPS (timed steps per case, default 2 after 1 warm-up), and the timeouts
# LOSSES_TIMEOUT, STEP_TIMEOUT, CACHED_TIMEOUT (seconds).
set -u -o pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PYTHON=${PYTHON:-python}
OUTPUT=gpu_check.json
DRY_RUN=0

usage() { sed -n '2,20p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) DRY_RUN=1 ;;
        --output) [ $# -ge 2 ] || { echo "gpu_check.sh: --output needs a file name" >&2; exit 2; }; OUTPUT=$2; shift ;;
        --output=*) OUTPUT=${1#--output=} ;;
        -h|--help) usage; exit 0 ;;
        *) echo "gpu_check.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
    esac
    shift
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

if [ "$DRY_RUN" = 1 ]; then
    MODE=dry-run
    CONFIG=tiny
    STEPS=${STEPS:-1}
    LOSSES_TIMEOUT=${LOSSES_TIMEOUT:-60}
    STEP_TIMEOUT=${STEP_TIMEOUT:-90}
    CACHED_TIMEOUT=${CACHED_TIMEOUT:-60}
    LOSSES_ARGS=(--quick --device cpu --dtype bfloat16 --repeats 1 --no-isolate)
    STEP_ARGS=(--config tiny --device cpu --no-isolate)
else
    MODE=gpu
    CONFIG=gpu-full
    STEPS=${STEPS:-2}
    LOSSES_TIMEOUT=${LOSSES_TIMEOUT:-60}
    STEP_TIMEOUT=${STEP_TIMEOUT:-230}
    CACHED_TIMEOUT=${CACHED_TIMEOUT:-170}
    LOSSES_ARGS=(--device cuda --dtype bfloat16 --repeats 10)
    STEP_ARGS=(--config gpu-full --device cuda)
fi
STEP_ARGS+=(--steps "$STEPS" --warmup 1)

# run_part NAME TIMEOUT COMMAND...: the command's output in $WORK/NAME.log, "exit-code milliseconds" in
# $WORK/NAME.status. timeout(1) signals the command's whole process group (bench_step's workers included).
run_part() {
    local name=$1 limit=$2 start end rc
    shift 2
    echo "gpu_check: $name (timeout ${limit} s)" >&2
    start=$(date +%s%N)
    timeout --kill-after=10 "$limit" "$@" >"$WORK/$name.log" 2>&1
    rc=$?
    end=$(date +%s%N)
    echo "$rc $(((end - start) / 1000000))" >"$WORK/$name.status"
    [ "$rc" = 0 ] || { echo "gpu_check: $name failed (exit $rc); last lines:" >&2; tail -n 15 "$WORK/$name.log" >&2; }
}

run_part losses "$LOSSES_TIMEOUT" "$PYTHON" "$HERE/bench_losses.py" "${LOSSES_ARGS[@]}" --json "$WORK/losses.json"
run_part step "$STEP_TIMEOUT" "$PYTHON" "$HERE/bench_step.py" "${STEP_ARGS[@]}" --methods evl --json "$WORK/step.json"
run_part cached "$CACHED_TIMEOUT" "$PYTHON" "$HERE/bench_step.py" "${STEP_ARGS[@]}" --methods evl_cached \
    --skip-references --cache-dir "$WORK/caches" --json "$WORK/cached.json"

"$PYTHON" "$HERE/gpu_check_collect.py" --work "$WORK" --mode "$MODE" --config "$CONFIG" --output "$OUTPUT"
