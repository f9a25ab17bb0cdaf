#!/usr/bin/env bash
# Start collab for the load harness (bench/work/run-matrix.sh START_CMD, durability.sh).
#
#   PORT=4321 DATA=/tmp/d bench/collab-start.sh [extra `collab serve` flags, e.g. --deflate]
#
# The harness needs registered slides bench-0 .. bench-$((BENCH_SLIDES-1)) (rooms exist only for
# registered slides). They are registered BEFORE the real port opens, by a short-lived bootstrap
# server on a private port with the same data dir, so no harness client can ever race the
# registration. A marker file in $DATA skips this on a restart with the same data (durability.sh
# restarts after kill -9). The script then `exec`s the real server, so the PID the harness
# measures (RSS, CPU) is collab itself.
#
# Env (all optional): BENCH_UVLOOP=1 (experiment: run the same `collab serve` with uvloop installed
# as the asyncio event loop policy; collab's own entry point uses asyncio.run() with the default
# loop), COLLAB (the collab binary), COLLAB_SRC (a directory holding a `collab/`
# package to run instead of the working tree, e.g. a `git archive` snapshot of the commit under
# test: it is put first on PYTHONPATH), COLLAB_SECRET (default benchsecret),
# BENCH_SLIDES (default 200), and any COLLAB_* setting. Bench-only settings applied here unless
# already set (see bench/RESULTS.md "Settings"):
#   COLLAB_MAX_CONNECTIONS_PER_USER=2000  every harness client uses the same token (one user);
#                                         rooms200 opens 600 sockets (default limit 50)
#   COLLAB_ROOM_IDLE_SECONDS=1            cold5000's "join after unload" waits only 3 s after the
#                                         last client left (default idle time 30 s)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
COLLAB="${COLLAB:-$repo/.venv/bin/collab}"
PY="${PY:-$repo/.venv/bin/python}"
: "${PORT:?PORT}" "${DATA:?DATA}"
export COLLAB_SECRET="${COLLAB_SECRET:-benchsecret}"
export COLLAB_MAX_CONNECTIONS_PER_USER="${COLLAB_MAX_CONNECTIONS_PER_USER:-2000}"
export COLLAB_ROOM_IDLE_SECONDS="${COLLAB_ROOM_IDLE_SECONDS:-1}"
BENCH_SLIDES="${BENCH_SLIDES:-200}"
if [[ -n "${COLLAB_SRC:-}" ]]; then export PYTHONPATH="$COLLAB_SRC${PYTHONPATH:+:$PYTHONPATH}"; fi
mkdir -p "$DATA"

if [[ ! -e "$DATA/.bench-slides" ]]; then
  bport=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  "$COLLAB" serve --host 127.0.0.1 --port "$bport" --data "$DATA" --log-level warning &
  bpid=$!
  token=$("$COLLAB" token --user bench --name Bench --site Roubaix --role admin --slides '*' --ttl 600)
  "$PY" - "$bport" "$token" "$BENCH_SLIDES" <<'EOF'
import http.client, json, sys, time
port, token, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
deadline = time.monotonic() + 30
while True:
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        c.request("GET", "/healthz"); r = c.getresponse(); r.read()
        if r.status == 200: break
    except OSError:
        pass
    if time.monotonic() > deadline: sys.exit("bootstrap server did not answer /healthz")
    time.sleep(0.05)
hdr = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
for i in range(n):
    body = {"id": f"bench-{i}", "title": f"bench-{i}", "width": 100000, "height": 100000, "mpp": 0.25}
    c.request("POST", "/api/slides", body=json.dumps(body), headers=hdr)
    r = c.getresponse(); r.read()
    if r.status not in (200, 201): sys.exit(f"registering bench-{i}: HTTP {r.status}")
EOF
  kill -TERM "$bpid"
  wait "$bpid" || true
  touch "$DATA/.bench-slides"
fi
if [[ "${BENCH_UVLOOP:-0}" == "1" ]]; then
  exec "$PY" -c 'import sys, uvloop; uvloop.install(); from collab.__main__ import main; sys.exit(main())' \
    serve --host 127.0.0.1 --port "$PORT" --data "$DATA" "$@"
fi
exec "$COLLAB" serve --host 127.0.0.1 --port "$PORT" --data "$DATA" "$@"
