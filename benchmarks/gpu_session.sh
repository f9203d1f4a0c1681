#!/usr/bin/env bash
# One GPU session of the benchmarks on a 4-GPU machine (nvidia-h100-x4), started in the background so that it runs
# on across the device tool's 10-minute calls; benchmarks/gpu_call.sh starts it on a fresh machine, waits for it on a
# warm one, and packs what exists into $OUT at the end of every call (benchmarks/gpu_collect.sh).
# Timeline (seconds from the start, SESSION_S in all): the benchmark set is generated on cores 0-55 while
# benchmarks/speed.py (SPEED=1) and benchmarks/distill_overhead.py (OVERHEAD=1) measure the paper-size models alone
# on GPU 3 and cores 56-63; then the SOLO items run alone on GPU 3 (cores 56-63) while the accuracy protocol runs
# LANES_PER_GPU lanes per GPU on the others (benchmarks/lanes.py, cores 0-55) until LANES_END_S (GPU 3's lanes start
# when its measurements and SOLO items end); then, if SCALING_CMD is set and at least 90 s are left (or SCALING_S were
# kept), benchmarks/scaling.py has all four GPUs to itself.
# Outputs: $G/json (stage JSONs, speed.json, distill_overhead*.json, scaling.json, lanes.json, logs).
set -u
G=${G:-/tmp/ftkd_gpu}
SESSION_S=${SESSION_S:-1450}
SCALING_CMD=${SCALING_CMD:-}       # a bare scaling.py command line: " --budget-s N" is appended to it
SCALING_S=${SCALING_S:-0}  # the end kept for scaling.py (0: it only gets what the lanes leave, if >= 90 s)
LANES_END_S=$((SESSION_S - SCALING_S - 20))
PROFILE=${PROFILE:-bench}
MAIN_CPUS=${MAIN_CPUS:-0-55}      # data generation and training lanes
SPEED_CPUS=${SPEED_CPUS:-56-63}   # benchmarks/speed.py, alone on GPU 3
COMMIT=${COMMIT:-unknown}         # the sha of the tree sent (the device's copy has no .git)
# Priority list of the ninth session (docs/benchmark.md, "Next GPU session"). First what issue 6's done-when still
# lacks: the last protocol stages (`abl_query_fld`, `tsa_learned_pvw_1e-5` after `teacher` seed 0; `kd_nofuture`,
# the past-only KD baseline at the paper's weights, after `teacher_nofuture` seed 0); then issue 10's teacher +
# student chains of seed 0 and the past-only chain of seed 1. Runs take ~300-650 s with 2 runs per GPU (sixth to
# eighth sessions), so a lane holds a teacher and one student: the teachers start at once, the students follow.
FULL_ITEMS="teacher:0 teacher_nofuture:0 abl_query_fld:0 tsa_learned_pvw_1e-5:0 kd_nofuture:0
    teacher_future1:0 teacher_future7:0 teacher_r18:0 ftkd_future1_pvw_1e-5:0 ftkd_future7_pvw_1e-5:0
    ftkd_teacher_r18_pvw_1e-5:0 teacher_nofuture:1 kd_nofuture_pvw_1e-5:1"
# A session shorter than SHORT_S (a fresh machine after the first went back, late in the device time) has no room
# for a teacher and then its student (~380 + ~500 s after the ~160-s set): it trains the teachers of seeds 1 and 2
# that issue 10's horizon and capacity rows need (each row needs 3 seeds) instead.
SHORT_ITEMS="teacher_future7:1-2 teacher_r18:1-2 teacher_future1:1-2 teacher_nofuture:2"
SHORT_S=${SHORT_S:-1400}
# SOLO items need a GPU to themselves: a second lanes.py with one lane on GPU 3 (cores 56-63) runs them once the set
# is generated and the measurements are done (an item starts only if its estimate fits, as in every lane); GPU 3's
# lanes of the main list start after them. StreamPETR at batch 16 for 96 epochs (issue 4) takes ~1,250 s alone: its
# 222 ms/step beside another run in the eighth session would have made it ~1,750 s, longer than the lanes.
SOLO_ITEMS="streampetr_bs16_e96:0"
if [ "$SESSION_S" -ge "$SHORT_S" ]; then
    ITEMS=${ITEMS:-$FULL_ITEMS}
    SOLO=${SOLO-$SOLO_ITEMS}
else
    ITEMS=${ITEMS:-$SHORT_ITEMS}
    SOLO=${SOLO-}
fi
# an item starts only if it should end before the lanes' deadline (median of its stage once one finished), and a
# free lane waits up to 180 s for an earlier item's teacher (not one past its estimate) rather than start a later
# item; the estimates are the sixth to eighth sessions' times with 2 runs per GPU (streampetr_bs16_e96: twice the
# steps of the 697-s streampetr_bs16_e48 run, which had a GPU to itself)
EXPECT=${EXPECT:-"--expected-s 580 --patience-s 180 --expect teacher_long=930 sparsebev=520 teacher_nofuture=380
    teacher_future1=360 teacher=550 teacher_r18=520
    streampetr_sparsebev_init=650 teacher_future7=650 ftkd_streampetr=800 ftkd_streampetr_pvw_1e-5=900
    streampetr=600 streampetr_bs16_e48=750 streampetr_bs16_e96=1300 streampetr_raybias=640 streampetr_heatmap=1000
    streampetr_raybias_heatmap=960"}
# benchmarks/speed.py only when SPEED=1 (measured in the fourth session; its code has not changed since) and
# benchmarks/distill_overhead.py (exact and top-300 matching) only when OVERHEAD=1 (measured in the third session);
# without them GPU 3 trains from the start
SPEED=${SPEED:-0}
OVERHEAD=${OVERHEAD:-0}
LANES_PER_GPU=${LANES_PER_GPU:-2}  # runs at once on each GPU
mkdir -p "$G/json/logs"
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
nvidia-smi -L
# GPU utilisation and memory every 15 s, to decide from data whether a GPU could take more than 2 lanes
nvidia-smi dmon -s um -d 15 -o T > "$G/json/logs/dmon.log" 2>&1 &
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
taskset -c "$MAIN_CPUS" python3 benchmarks/accuracy.py data --profile "$PROFILE" --dataroot "$G/data" --workers 56 \
    --out-json-dir "$G/json" --runs-dir "$G/runs" --commit "$COMMIT" || { touch "$G/done"; exit 1; }
echo "data ready at ${SECONDS}s"
# what every lanes.py instance shares: the protocol's options and the stage estimates
LANE_ARGS="--profile $PROFILE --dataroot $G/data --runs-dir $G/runs --out-json-dir $G/json --loader-workers 6
    --commit $COMMIT $EXPECT"
# shellcheck disable=SC2086  # SOLO, ITEMS and LANE_ARGS are lists of words
([ -n "$SOLO" ] && taskset -c "$SPEED_CPUS" python3 benchmarks/lanes.py $SOLO --gpus 3 --hold "3=$G/speed.done" \
    --deadline-s $((LANES_END_S - SECONDS)) --lanes-json "$G/json/lanes_solo.json" $LANE_ARGS \
    > "$G/json/logs/lanes_solo.log" 2>&1
 touch "$G/solo.done") &
SOLO_JOB=$!
# shellcheck disable=SC2086
taskset -c "$MAIN_CPUS" python3 benchmarks/lanes.py $ITEMS \
    --gpus 0,1,2,3 --lanes-per-gpu "$LANES_PER_GPU" --hold "3=$G/solo.done" --deadline-s $((LANES_END_S - SECONDS)) \
    $LANE_ARGS
echo "lanes ended at ${SECONDS}s"
wait "$MEASURE" "$SOLO_JOB"
LEFT=$((SESSION_S - SECONDS - 10))
if [ -n "$SCALING_CMD" ] && [ "$LEFT" -ge 90 ]; then  # scaling.py's --budget-s is appended: it stops its runs in time
    timeout "$LEFT" bash -c "$SCALING_CMD --budget-s $((LEFT - 10))" > "$G/json/logs/scaling.log" 2>&1
    echo "scaling ended at ${SECONDS}s (exit $?)"
fi
kill "$DMON" 2>/dev/null
touch "$G/done"
