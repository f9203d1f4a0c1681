#!/usr/bin/env bash
# One GPU session of the benchmarks on a 4-GPU machine (nvidia-h100-x4), sized to ONE device call: in the eighth and
# ninth sessions the machine went back after every call (4 calls of 4), its files with it, so what a call starts must
# end within it. benchmarks/gpu_call.sh starts it with PLAN=<the call's number> and packs what exists into $OUT
# every minute (benchmarks/gpu_collect.sh); on a machine that stayed warm it starts the next plan on the same set.
# Timeline (seconds from the start, SESSION_S in all): the benchmark set is generated on MAIN_CPUS (128-166 s with
# whole scenes as tasks; scene parts should bring it near 100 s), benchmarks/speed.py (SPEED=1) and
# benchmarks/distill_overhead.py (OVERHEAD=1) optionally measuring on GPU 3 meanwhile (then give them cores:
# MAIN_CPUS=0-55); then FIRST's items train with FIRST_GPUS GPUs each (under torchrun: a teacher and its student do
# not fit one call on one GPU each, ~320 + ~300 s after the set); then THEN's items (students of FIRST's teachers)
# with THEN_GPUS GPUs each, LANES_PER_GPU at once per group, until LANES_END_S. If a FIRST item did not finish, its
# students cannot run: FALLBACK's items (no teacher from FIRST) take THEN's place, one GPU each.
# Outputs: $G/json (stage JSONs, lanes_first.json, lanes.json, logs, speed.json, distill_overhead*.json).
set -u
G=${G:-/tmp/ftkd_gpu}
SESSION_S=${SESSION_S:-575}
LANES_END_S=$((SESSION_S - 15))
PROFILE=${PROFILE:-bench}
MAIN_CPUS=${MAIN_CPUS:-0-63}      # data generation and training lanes
DATA_WORKERS=${DATA_WORKERS:-62}
SPEED_CPUS=${SPEED_CPUS:-56-63}   # benchmarks/speed.py, alone on GPU 3
COMMIT=${COMMIT:-unknown}         # the sha of the tree sent (the device's copy has no .git)
# The tenth session's plans, one per call (docs/benchmark.md, "Next GPU session"). Plan 1 is what issue 6's
# done-when still lacks: the last protocol stages abl_query_fld and tsa_learned_pvw_1e-5, students of `teacher`
# seed 0. Plan 2: kd_nofuture (issue 6, the past-only KD baseline at the paper's weights, student of
# teacher_nofuture) and issue 10's 1-future-frame chain. Plan 3 (the shorter last call): issue 10's seed 1-2
# teachers on one GPU each.
PLAN=${PLAN:-1}
case "$PLAN" in
    1) PLAN_FIRST="teacher:0"; PLAN_FIRST_GPUS=4
       PLAN_THEN="abl_query_fld:0 tsa_learned_pvw_1e-5:0"; PLAN_THEN_GPUS=2
       PLAN_FALLBACK="teacher_r18:1-2 teacher_future7:1-2" ;;
    2) PLAN_FIRST="teacher_nofuture:0 teacher_future1:0"; PLAN_FIRST_GPUS=2
       PLAN_THEN="kd_nofuture:0 ftkd_future1_pvw_1e-5:0"; PLAN_THEN_GPUS=2
       PLAN_FALLBACK="teacher_r18:1-2 teacher_future7:1-2" ;;
    *) PLAN_FIRST=""; PLAN_FIRST_GPUS=1
       PLAN_THEN="teacher_r18:1-2 teacher_future7:1-2"; PLAN_THEN_GPUS=1
       PLAN_FALLBACK="" ;;
esac
FIRST=${FIRST-$PLAN_FIRST}
FIRST_GPUS=${FIRST_GPUS:-$PLAN_FIRST_GPUS}
THEN=${THEN-$PLAN_THEN}
THEN_GPUS=${THEN_GPUS:-$PLAN_THEN_GPUS}
FALLBACK=${FALLBACK-$PLAN_FALLBACK}
LANES_PER_GPU=${LANES_PER_GPU:-1}  # runs at once on each GPU (group): the ninth session's single runs kept the SM
                                   # busy 43 % of the time (median), but two per GPU would not end within a call
# An item starts only if it should end before the lanes' deadline: its stage's median time once one finished, else
# these estimates. A FIRST item always starts (nothing else can use the call). Estimates of runs over several GPUs
# are guesses (the ninth session's scaling.json: 4 processes ~3x the samples/s of 1): such an item starts if it
# could end, since a run cut by the call's end loses nothing else. One GPU: the ninth session's single runs took
# 297-324 s (teacher_nofuture, teacher_future1, ~250 ms/step); teacher_r18 and teacher_future7 are estimated from
# their 2-per-GPU times (429 and 530 ms/step in the sixth session).
EXPECT=${EXPECT:-"--expect teacher_r18=330 teacher_future7=460 teacher_nofuture=300 teacher_future1=320"}
SPEED=${SPEED:-0}
OVERHEAD=${OVERHEAD:-0}
mkdir -p "$G/json/logs"
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
# NVLink multicast stays off for the torchrun items (the device notes: it can put the host's shared GPUs out of
# service); the machine sets these already, and every process the lanes start inherits them
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
nvidia-smi -L
# GPU utilisation and memory every 15 s (benchmarks/gpu_utilisation.py)
nvidia-smi dmon -s um -d 15 -o T >> "$G/json/logs/dmon.log" 2>&1 &
DMON=$!
(export CUDA_VISIBLE_DEVICES=3
 [ "$SPEED" = 1 ] && timeout 700 taskset -c "$SPEED_CPUS" python3 benchmarks/speed.py --out "$G/json/speed.json" --commit "$COMMIT" --max-seconds 600 \
    > "$G/json/logs/speed.log" 2>&1
 # distillation overhead of the paper-size student + teacher: exact teacher matching, then its top-300 option
 [ "$OVERHEAD" = 1 ] && timeout 300 taskset -c "$SPEED_CPUS" python3 benchmarks/distill_overhead.py --out "$G/json/distill_overhead.json" \
    --commit "$COMMIT" > "$G/json/logs/distill_overhead.log" 2>&1
 [ "$OVERHEAD" = 1 ] && timeout 300 taskset -c "$SPEED_CPUS" python3 benchmarks/distill_overhead.py --out "$G/json/distill_overhead_top300.json" \
    --commit "$COMMIT" --set distill.match_teacher_topk=300 >> "$G/json/logs/distill_overhead.log" 2>&1
 touch "$G/speed.done") &
MEASURE=$!
taskset -c "$MAIN_CPUS" python3 benchmarks/accuracy.py data --profile "$PROFILE" --dataroot "$G/data" --workers "$DATA_WORKERS" \
    --out-json-dir "$G/json" --runs-dir "$G/runs" --commit "$COMMIT" || { touch "$G/done"; exit 1; }
echo "data ready at ${SECONDS}s (plan $PLAN)"
# lanes ITEMS GPUS_PER_LANE LANES_JSON EXTRA...: one benchmarks/lanes.py over the 4 GPUs until the deadline
lanes() {
    # shellcheck disable=SC2086  # the items and the estimates are lists of words
    taskset -c "$MAIN_CPUS" python3 benchmarks/lanes.py $1 --gpus 0,1,2,3 --gpus-per-lane "$2" \
        --lanes-per-gpu "$LANES_PER_GPU" --hold "3=$G/speed.done" --deadline-s $((LANES_END_S - SECONDS)) \
        --lanes-json "$G/json/$3" --profile "$PROFILE" --dataroot "$G/data" --runs-dir "$G/runs" \
        --out-json-dir "$G/json" --loader-workers 6 --commit "$COMMIT" "${@:4}"
}
NEXT=$THEN
NEXT_GPUS=$THEN_GPUS
if [ -n "$FIRST" ] && ! lanes "$FIRST" "$FIRST_GPUS" lanes_first.json --expected-s 0; then
    echo "a FIRST item did not finish at ${SECONDS}s: FALLBACK instead of THEN"
    NEXT=$FALLBACK
    NEXT_GPUS=1
fi
echo "first items ended at ${SECONDS}s"
# shellcheck disable=SC2086
[ -n "$NEXT" ] && lanes "$NEXT" "$NEXT_GPUS" lanes.json --expected-s 150 $EXPECT
echo "lanes ended at ${SECONDS}s"
wait "$MEASURE"
kill "$DMON" 2>/dev/null
touch "$G/done"
