#!/usr/bin/env bash
# py-spy profile of collab under the fan50 load, GIL-holding samples only (what the event loop
# and its threads actually compute), summarised by inclusive share per function.
#
#   bench/profile_gil.sh OUT.raw     (needs bench/run.sh setup; collab on CPU 1, harness on CPU 0)
set -u
out=$1
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"; W="$here/work"; port=4398; d=$(mktemp -d)
"$here/../.venv/bin/py-spy" --version >/dev/null 2>&1 || "$here/../.venv/bin/pip" install -q py-spy
TOKEN="$(COLLAB_SECRET=benchsecret "$here/../.venv/bin/collab" token --user bench --name Bench --site Roubaix \
  --role admin --slides '*' --ttl 86400 2>/dev/null)"
setsid taskset -c 1 env PORT=$port DATA=$d BENCH_SLIDES=2 "$here/collab-start.sh" > $d/log 2>&1 &
for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.2; done
sleep 1
pid=$(ss -ltnp | grep ":$port " | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2)
taskset -c 0 node "$W/fanout.mjs" --url ws://127.0.0.1:$port/ws/slides --params "token=$TOKEN" --room-prefix bench- \
  --clients 50 --writers 1 --rate 20 --vertices 50 --duration 20 --warmup 3 --server-pid "$pid" > $d/h.log 2>&1 &
h=$!
sleep 5
taskset -c 0 "$here/../.venv/bin/py-spy" record --pid "$pid" --gil --duration 12 --rate 1000 --format raw -o "$out" >/dev/null 2>&1
wait $h
kill -TERM -- -"$(ps -o pgid= "$pid" | tr -d ' ')" 2>/dev/null
"$here/../.venv/bin/python" - "$out" <<'PY'
import sys
from collections import Counter
incl, total = Counter(), 0
for line in open(sys.argv[1]):
    stack, n = line.rsplit(" ", 1); n = int(n); total += n
    for name in {f.split(" (")[0] for f in stack.split(";")}:
        incl[name] += n
print("samples holding the GIL:", total)
for name, n in incl.most_common(50):
    print(f"{100 * n / total:5.1f} %  {name}")
PY
