#!/usr/bin/env bash
# Presence benchmarks (issues 3 and 6), collab and the y-websocket server side by side, pinned like
# run-matrix.sh (server on CPU 1, harness on CPU 0), one fresh server per run:
#
#   presenter120  one presenter publishes its viewport at 120 Hz, 30 followers watch
#                 (fanout.mjs --mode awareness --clients 31 --writers 1 --rate 120)
#                 collab (30 Hz throttle), collab-nothrottle (COLLAB_PRESENCE_HZ=1e6), yws-mem
#   aware30       the standard 30 clients x 30 Hz scenario, for the throttle's cost at normal rates
#   session30     a tumor-board session room: the presenter pans at 20 Hz, 30 followers
#                 (collab only: /ws/sessions/<id>), plus the bytes each follower receives per second
#
#   bench/presence.sh            -> bench/results/presence.jsonl (one JSON line per run)
#   env: REPS (2), REP_START (1), SCENARIOS (presenter120 aware30), NAMES (collab collab-nothrottle
#        yws-mem), SESSION (1: also session30), DURATION (15), PORT (4331), OUT
# Needs bench/work set up by `bench/run.sh setup` (harness and the y-websocket server installed).
set -euo pipefail
BENCH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"; ROOT="$(cd "$BENCH/.." && pwd)"
W="$BENCH/work"; RES="$BENCH/results"; OUT="${OUT:-$RES/presence.jsonl}"
PORT="${PORT:-4331}"; REPS="${REPS:-2}"; DURATION="${DURATION:-15}"
export COLLAB_SECRET=benchsecret
TOKEN="$("$ROOT/.venv/bin/collab" token --user bench --name Bench --site Roubaix --role admin --slides '*' --ttl 86400)"

start_server() { # name data -> sets SPID
  local name="$1" data="$2"
  rm -rf "$data"; mkdir -p "$data"
  case "$name" in
    yws-mem) setsid taskset -c 1 "$W/peers/start-peer.sh" yws-mem "$PORT" "$data" >"$data.log" 2>&1 & ;;
    collab) PORT=$PORT DATA=$data setsid taskset -c 1 "$BENCH/collab-start.sh" >"$data.log" 2>&1 & ;;
    collab-nothrottle) COLLAB_PRESENCE_HZ=1000000 PORT=$PORT DATA=$data setsid taskset -c 1 "$BENCH/collab-start.sh" >"$data.log" 2>&1 & ;;
  esac
  SPID=$!
  for _ in $(seq 1 300); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && return 0; sleep 0.1; done
  echo "server $name did not start" >&2; exit 1
}
stop_server() { kill -TERM -- "-$SPID" 2>/dev/null || true; wait "$SPID" 2>/dev/null || true; sleep 0.5; }

bytes_out() { curl -s "http://127.0.0.1:$PORT/metrics" | awk '/^collab_bytes_out_total/{print $2}'; }

run() { # name scenario rep
  local name="$1" sc="$2" rep="$3" data="$W/data/presence/$1-$2-r$3" url args extra=""
  start_server "$name" "$data"
  url="ws://127.0.0.1:$PORT"; args=(--mode awareness --duration "$DURATION" --warmup 3 --server-pid "$SPID")
  case "$sc" in
    presenter120) args+=(--clients 31 --writers 1 --rate 120) ;;
    aware30) args+=(--clients 30 --writers 1 --rate 30) ;;
    session30) args+=(--clients 31 --writers 1 --rate 20) ;;
  esac
  if [[ "$name" == collab* ]]; then
    if [[ "$sc" == session30 ]]; then
      sid=$(curl -s -X POST "http://127.0.0.1:$PORT/api/sessions" -H "Authorization: Bearer $TOKEN" \
        -H 'Content-Type: application/json' -d '{"title":"bench board","slides":["bench-0","bench-1"]}' \
        | "$ROOT/.venv/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["id"])')
      url="$url/ws/sessions"; extra="--room $sid"
    else
      url="$url/ws/slides"; extra="--room-prefix bench-"
    fi
    args+=(--params "token=$TOKEN")
  fi
  local b0; b0=$(bytes_out || true)
  # shellcheck disable=SC2086
  line=$(taskset -c 0 node "$W/fanout.mjs" --url "$url" "${args[@]}" $extra --label "$name:$sc:r$rep" --quiet | tail -1)
  local b1; b1=$(bytes_out || true)
  stop_server
  "$ROOT/.venv/bin/python" - "$line" "${b0:-}" "${b1:-}" "$name" "$sc" "$rep" >>"$OUT" <<'PY'
import json, sys
line, b0, b1, name, sc, rep = sys.argv[1:]
d = json.loads(line)
d.update(bench_name=name, bench_scenario=sc, bench_rep=int(rep))
if b0 and b1:
    d["server_bytes_out"] = float(b1) - float(b0)
print(json.dumps(d))
PY
  echo "== $name $sc r$rep: $(echo "$line" | "$ROOT/.venv/bin/python" -c 'import json,sys; d=json.load(sys.stdin); l=d["latency_ms"]; print("p50", l["p50"], "p99", l["p99"], "lost", d["deliveries"]["lost"], "us/delivery", d["server"]["cpu_us_per_delivery"])')"
}

for rep in $(seq "${REP_START:-1}" $(( ${REP_START:-1} + REPS - 1 ))); do
  for sc in ${SCENARIOS:-presenter120 aware30}; do
    for name in ${NAMES:-collab collab-nothrottle yws-mem}; do run "$name" "$sc" "$rep"; done
  done
  [[ "${SESSION:-1}" == "1" ]] && run collab session30 "$rep"
done
