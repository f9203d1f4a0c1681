#!/usr/bin/env bash
# Pack what benchmarks/gpu_session.sh has produced so far into $OUT/results.tgz and print where it stands. The
# archives are written beside and renamed into place, so a call killed at its limit returns the last whole pair.
G=${G:-/tmp/ftkd_gpu}
tail -n 5 "$G/session.log" 2>/dev/null
python3 - "$G"/json/lanes*.json <<'PY'
import json, sys, pathlib
for path in map(pathlib.Path, sys.argv[1:]):
    if not path.is_file():
        continue
    for row in json.loads(path.read_text())["items"]:
        print(f"{row['stage']:<18} s{row['seed']} {row['state']:<8} {row['lane']:<7} {row['seconds'] or ''}")
PY
for f in "$G"/json/*_seed*.json; do [ -f "$f" ] && python3 -c "import json,sys; r=json.load(open(sys.argv[1])); m=r.get('metrics'); print(r['stage'], r['seed'], m and 'NDS %.4f mAP %.4f mAVE %.4f' % (m['NDS'], m['mAP'], m['mAVE']), r.get('train',{}).get('ms_per_step_median'), r.get('train',{}).get('wall_s'))" "$f"; done
tar czf "$OUT/.results.tgz.part" -C "$G" json session.log 2>/dev/null && mv "$OUT/.results.tgz.part" "$OUT/results.tgz"
# the training logs of every run folder (small), for benchmarks/loss_balance.py
(cd "$G/runs" 2>/dev/null && find . \( -name log.jsonl -o -name config.json -o -name accuracy_chunks.json \) \
    -not -path "*/checkpoints/*" -print0 | tar czf "$OUT/.runlogs.tgz.part" --null -T - && mv "$OUT/.runlogs.tgz.part" "$OUT/runlogs.tgz")
ls -la "$OUT"
