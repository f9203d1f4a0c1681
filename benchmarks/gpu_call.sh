#!/usr/bin/env bash
# One device-tool call of a GPU session, the same command for every call but its plan (timeout_s 600, carry
# [".whl"]):
#   COMMIT=<sha> BUDGET_S=<device time left> PLAN=<the call's number, 1..3> bash benchmarks/gpu_call.sh
# In the eighth and ninth sessions the machine went back after every call, so each call expects to be the last on
# its machine: on a fresh machine it installs the wheels and starts benchmarks/gpu_session.sh with plan PLAN, sized
# to end within this call (SESSION_S = the smaller of CALL_S and the device time left after the machine's start).
# On a warm machine whose session still runs it only waits; on one whose session ended it starts plan PLAN on the
# set already there. Either way it waits until the session ends or CALL_S seconds have passed, packing the results
# into $OUT every minute (a call killed at its limit still returns them).
set -u
G=${G:-/tmp/ftkd_gpu}
CALL_S=${CALL_S:-575}
START_S=${START_S:-75}       # a fresh machine's start and the transfers (35-72 s in the ninth session)
MIN_SESSION_S=${MIN_SESSION_S:-420}  # the set (~100-170 s) and one run (~300 s); on a warm machine the set is there
: "${PLAN:?PLAN (1, 2, 3: the number of this call in the session) picks the items of a session it starts}"
cd "$(dirname "$0")/.."
if [ -f "$G/session.log" ] && [ ! -f "$G/done" ]; then
    echo "warm machine: the session started $(( $(date +%s) - $(stat -c %Y "$G/started") )) s ago goes on"
else
    : "${BUDGET_S:?BUDGET_S (device time left, s) sizes the session this call starts}"
    if [ -f "$G/session.log" ]; then
        LEFT=$((BUDGET_S - 20)) NEED=$((MIN_SESSION_S - 120))
    else
        LEFT=$((BUDGET_S - START_S)) NEED=$MIN_SESSION_S
    fi
    SESSION_S=$(( LEFT < CALL_S ? LEFT : CALL_S ))
    if [ "$SESSION_S" -lt "$NEED" ]; then
        echo "$SESSION_S s for a session, under the $NEED s it needs: nothing starts; give the machine back"
        exit 0
    fi
    if [ ! -f "$G/session.log" ]; then
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 1
    fi
    mkdir -p "$G" && touch "$G/started" && rm -f "$G/done"
    echo "plan $PLAN: a session of $SESSION_S s starts"
    (export PYTHONPATH=/tmp/site:$PWD GIT_DIR=/nonexistent SESSION_S PLAN COMMIT
     setsid nohup bash benchmarks/gpu_session.sh >> "$G/session.log" 2>&1 < /dev/null &)
fi
for tick in $(seq 1 $((CALL_S / 5))); do
    [ -f "$G/done" ] && break
    [ $((tick % 12)) = 0 ] && bash benchmarks/gpu_collect.sh > /dev/null 2>&1
    sleep 5
done
bash benchmarks/gpu_collect.sh
