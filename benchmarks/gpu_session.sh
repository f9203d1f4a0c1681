#!/usr/bin/env bash
# One GPU session of the benchmarks on a machine of several GPUs (nvidia-h100-x4, nvidia-h100-x2), sized by
# benchmarks/gpu_call.sh to one device call or to several (a machine goes back 30 s after a call unless the next one
# comes: in the eighth and ninth sessions after every call; in the tenth and eleventh it stayed warm for a call
# issued at once; its files go with it).
# gpu_call.sh starts it with PLAN=<k> and packs what exists into $OUT every minute (benchmarks/gpu_collect.sh); on a
# machine that stayed warm a later call waits for it, or starts the next plan on the same set.
# Timeline (seconds from the start, SESSION_S in all): the benchmark set is generated on MAIN_CPUS (111-115 s on 62
# workers in the tenth session), benchmarks/speed.py (SPEED=1) and benchmarks/distill_overhead.py (OVERHEAD=1)
# optionally measuring on the last GPU meanwhile (then give them cores: MAIN_CPUS=0-55); then FIRST's items train
# with FIRST_GPUS GPUs each (more than one: under torchrun); then THEN's items (students of FIRST's teachers, or
# teachers followed by their students) with THEN_GPUS GPUs each, LANES_PER_GPU at once per group, until LANES_END_S.
# If a FIRST item did not finish, its students cannot run: FALLBACK's items (no teacher from FIRST) take THEN's place,
# one GPU each. The machine's GPUs and cores are counted: the same script serves 2 and 4 GPUs.
# Outputs: $G/json (stage JSONs, lanes_first.json, lanes.json, logs, speed.json, distill_overhead*.json).
set -u
G=${G:-/tmp/ftkd_gpu}
SESSION_S=${SESSION_S:-575}
LANES_END_S=$((SESSION_S - 15))
PROFILE=${PROFILE:-bench}
NGPU=$(nvidia-smi -L | grep -c '^GPU')
NCPU=$(nproc)
GPUS=$(seq -s, 0 $((NGPU - 1)))
LAST_GPU=$((NGPU - 1))
MAIN_CPUS=${MAIN_CPUS:-0-$((NCPU - 1))}      # data generation and training lanes
DATA_WORKERS=${DATA_WORKERS:-$((NCPU - 2))}
SPEED_CPUS=${SPEED_CPUS:-$((NCPU - 8))-$((NCPU - 1))}   # benchmarks/speed.py, alone on the last GPU
COMMIT=${COMMIT:-unknown}         # the sha of the tree sent (the device's copy has no .git)
# The plans (docs/benchmark.md, "Next GPU session"). A session started with setsid runs on across calls while the
# machine stays warm (it did for calls issued at once in the tenth to thirteenth and fifteenth sessions; not in the
# eighth and ninth, nor after the first call of the fourteenth). Issue 10's rows all have 3 seeds; two rows are left:
# seed 2 of the loss-balance check `ftkd_future7_pvw_2e-6`, after its `teacher_future7` (a student needs its teacher
# trained again on its machine: the teacher's checkpoint goes back with the machine), and `streampetr_bs16_e96`, one
# ~1,300-s run (the 48-epoch run took 647 s on an H100), which fits only a session that stays warm for three calls.
# Plan 4 (any number of GPUs, CALLS=3 in gpu_call.sh, a 1,665-s session): both, one GPU each (the chain ends at
# ~950 s, the StreamPETR run at ~1,475 s). Any other plan number (5 in docs/benchmark.md), the STANDALONE items, is
# what a later call that finds a fresh machine starts for the two calls left (FRESH_PLAN=5 FRESH_CALLS=2, ~1,040 s):
# the chain alone (the fourteenth session's two-call restart ran two chains in 878 s); the set, a teacher and its
# student take ~950 s, more than one call (gpu_call.sh's MIN_SESSION_S).
PLAN=${PLAN:-4}
# Items that need nothing a FIRST item trains (each teacher before its students): the items of any plan but 4, and
# FALLBACK's when a FIRST item failed
STANDALONE="teacher_future7:2 ftkd_future7_pvw_2e-6:2"
case "$PLAN" in
    4) PLAN_FIRST=""
       PLAN_THEN="teacher_future7:2 streampetr_bs16_e96:0 ftkd_future7_pvw_2e-6:2" ;;
    *) PLAN_FIRST=""
       PLAN_THEN=$STANDALONE ;;
esac
FIRST=${FIRST-$PLAN_FIRST}
FIRST_GPUS=${FIRST_GPUS:-1}
THEN=${THEN-$PLAN_THEN}
THEN_GPUS=${THEN_GPUS:-1}
FALLBACK=${FALLBACK-$STANDALONE}
LANES_PER_GPU=${LANES_PER_GPU:-1}  # runs at once on each GPU (group): the ninth session's single runs kept the SM
                                   # busy 43 % of the time (median), but two per GPU would not end within a call
# data.num_workers of each training process: 14 (4 processes x 14 of 64 cores, 2 x 14 of 32), fewer on a machine of
# fewer cores per GPU. With 6 (the tenth session) a ResNet-18 teacher waited 30-220 ms per step for its data.
PER_GPU=$(((NCPU - 4) / NGPU))
PER_GPU=$((PER_GPU < 1 ? 1 : PER_GPU))
LOADER_WORKERS=${LOADER_WORKERS:-$((PER_GPU < 14 ? PER_GPU : 14))}
# An item starts only if it should end before the lanes' deadline: its stage's median time once one finished, else
# these estimates. A FIRST item always starts (nothing else can use the call). Runs train to their end in one chunk
# (accuracy.py --one-chunk: a stopped run's checkpoint goes back with the machine). One GPU: the ninth session's
# single runs took 297-324 s (teacher_nofuture, teacher_future1, ~250 ms/step); teacher_r18 reached step 959 of 960
# in 349 s beside one other run in the tenth (data-bound); teacher_future7 took 331-365 s alone on an H200
# (thirteenth to fifteenth sessions). Students (every stage without an estimate: --expected-s 400 below) took 360-370 s
# on 2 GPUs under torchrun in the tenth session; alone on one GPU their step computes in ~330 ms at 8 samples
# (docs/results/distill_overhead_small_b8.json), ~320 s for 960 steps before data waits and the evaluation. The
# 7-future-frame teacher's students took 426, 446 and 373 s alone on an H200 (twelfth to fourteenth sessions), the
# balance check's 412 and 402 s (fifteenth): its estimate is 420 s. StreamPETR at batch 16 for 48 epochs took 647 s on
# an H100 (154 ms/step): 96 epochs, ~1,300 s. An item that cannot end by the deadline does not start.
EXPECT=${EXPECT:-"--expect teacher_r18=380 teacher_future7=380 teacher_nofuture=300 teacher_future1=320 ftkd_future7_pvw_1e-5=450 ftkd_future7_pvw_2e-6=420 streampetr_bs16_e96=1300"}
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
(export CUDA_VISIBLE_DEVICES=$LAST_GPU
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
echo "data ready at ${SECONDS}s (plan $PLAN, $NGPU GPUs, $NCPU cores, $LOADER_WORKERS loader workers)"
# lanes ITEMS GPUS_PER_LANE LANES_JSON EXTRA...: one benchmarks/lanes.py over the GPUs until the deadline
lanes() {
    # shellcheck disable=SC2086  # the items and the estimates are lists of words
    taskset -c "$MAIN_CPUS" python3 benchmarks/lanes.py $1 --gpus "$GPUS" --gpus-per-lane "$2" \
        --lanes-per-gpu "$LANES_PER_GPU" --hold "$LAST_GPU=$G/speed.done" --deadline-s $((LANES_END_S - SECONDS)) \
        --lanes-json "$G/json/$3" --profile "$PROFILE" --dataroot "$G/data" --runs-dir "$G/runs" \
        --out-json-dir "$G/json" --loader-workers "$LOADER_WORKERS" --one-chunk --commit "$COMMIT" "${@:4}"
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
[ -n "$NEXT" ] && lanes "$NEXT" "$NEXT_GPUS" lanes.json --expected-s 400 $EXPECT
echo "lanes ended at ${SECONDS}s"
wait "$MEASURE"
kill "$DMON" 2>/dev/null
touch "$G/done"
