#!/usr/bin/env bash
# One device-tool call of a GPU session, the same command for every call but its plan (timeout_s 600, carry
# [".whl"]):
#   COMMIT=<sha> BUDGET_S=<device time left> PLAN=<k> CALLS=<1-3> FRESH_PLAN=<k'> FRESH_CALLS=<n> \
#       bash benchmarks/gpu_call.sh
# A machine goes back 30 s after a call unless the next call comes (in the eighth and ninth sessions after every call;
# in the tenth and eleventh it stayed warm for calls issued at once). On a fresh machine this installs the wheels and
# starts benchmarks/gpu_session.sh with plan FRESH_PLAN sized for FRESH_CALLS calls (default 1), or with PLAN sized
# for CALLS calls when FRESH_PLAN is not given (SESSION_S = the smaller of CALLS x CALL_S and the device time left
# after the machine's start): the session runs on, under setsid, through the next call if the machine stays warm. On a
# warm machine whose session still runs it only waits; on one whose session ended it starts plan PLAN (CALLS calls) on
# the set already there. Either way it waits until the session ends or CALL_S seconds have passed, packing the results
# into $OUT every minute (a call killed at its limit still returns them).
set -u
G=${G:-/tmp/ftkd_gpu}
CALL_S=${CALL_S:-575}
START_S=${START_S:-75}       # a fresh machine's start and the transfers (35-72 s in the ninth session)
MIN_SESSION_S=${MIN_SESSION_S:-900}  # the set (~170 s), a teacher (~350 s), its student (~430 s); warm: no set
: "${PLAN:?PLAN (one of the plans of gpu_session.sh) picks the items of a session this call starts}"
CALLS=${CALLS:-1}
cd "$(dirname "$0")/.."
if [ -f "$G/session.log" ] && [ ! -f "$G/done" ]; then
    echo "warm machine: the session started $(( $(date +%s) - $(stat -c %Y "$G/started") )) s ago goes on"
else
    : "${BUDGET_S:?BUDGET_S (device time left, s) sizes the session this call starts}"
    if [ -f "$G/session.log" ]; then
        LEFT=$((BUDGET_S - 20)) NEED=$((MIN_SESSION_S - 120))
    else
        LEFT=$((BUDGET_S - START_S)) NEED=$MIN_SESSION_S
        [ -n "${FRESH_PLAN:-}" ] && PLAN=$FRESH_PLAN CALLS=${FRESH_CALLS:-1}
    fi
    SPAN=$((CALLS * CALL_S))
    SESSION_S=$(( LEFT < SPAN ? LEFT : SPAN ))
    if [ "$SESSION_S" -lt "$NEED" ]; then
        echo "$SESSION_S s for a session, under the $NEED s it needs: nothing starts; give the machine back"
        exit 0
    fi
    if [ ! -f "$G/session.log" ]; then
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 1
    fi
    mkdir -p "$G" && touch "$G/started" && rm -f "$G/done"
    echo "plan $PLAN: a session of $SESSION_S s starts ($CALLS call(s))"
    (export PYTHONPATH=/tmp/site:$PWD GIT_DIR=/nonexistent SESSION_S PLAN COMMIT
     setsid nohup bash benchmarks/gpu_session.sh >> "$G/session.log" 2>&1 < /dev/null &)
fi
for tick in $(seq 1 $((CALL_S / 5))); do
    [ -f "$G/done" ] && break
    [ $((tick % 12)) = 0 ] && bash benchmarks/gpu_collect.sh > /dev/null 2>&1
    sleep 5
done
bash benchmarks/gpu_collect.sh
