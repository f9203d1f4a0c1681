#!/usr/bin/env bash
# One device-tool call of a GPU session, the same command for every call (timeout_s 600, carry [".whl"]):
#   COMMIT=<sha> BUDGET_S=<device time left> bash benchmarks/gpu_call.sh
# On a warm machine that runs benchmarks/gpu_session.sh (started by an earlier call) it only waits. On a fresh one
# (the first call, or the machine went back between calls and took the session with it, as in the eighth session)
# it installs the wheels and starts a session sized to the device time left: SESSION_S = BUDGET_S - START_S (the
# machine's start, the gaps between calls, the transfers). Either way it waits until the session ends or CALL_S
# seconds have passed, packing the results into $OUT every minute (a call killed at its limit still returns them).
# A fresh session shorter than MIN_SESSION_S would spend its time generating the set and fit no run: none starts.
set -u
G=${G:-/tmp/ftkd_gpu}
CALL_S=${CALL_S:-560}
START_S=${START_S:-170}
MIN_SESSION_S=${MIN_SESSION_S:-600}
cd "$(dirname "$0")/.."
if [ -f "$G/session.log" ]; then
    echo "warm machine: the session started $(( $(date +%s) - $(stat -c %Y "$G/started") )) s ago goes on"
else
    : "${BUDGET_S:?BUDGET_S (device time left, s) sizes the session this fresh machine starts}"
    if [ $((BUDGET_S - START_S)) -lt "$MIN_SESSION_S" ]; then
        echo "fresh machine, $((BUDGET_S - START_S)) s for a session: too short to train anything; give the machine back"
        exit 0
    fi
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 1
    mkdir -p "$G" && touch "$G/started"
    echo "fresh machine: a session of $((BUDGET_S - START_S)) s starts"
    (export PYTHONPATH=/tmp/site:$PWD GIT_DIR=/nonexistent SESSION_S=$((BUDGET_S - START_S))
     setsid nohup bash benchmarks/gpu_session.sh > "$G/session.log" 2>&1 < /dev/null &)
fi
for tick in $(seq 1 $((CALL_S / 5))); do
    [ -f "$G/done" ] && break
    [ $((tick % 12)) = 0 ] && bash benchmarks/gpu_collect.sh > /dev/null 2>&1
    sleep 5
done
bash benchmarks/gpu_collect.sh
