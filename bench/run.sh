#!/usr/bin/env bash
# bench/run.sh — collab vs the official y-websocket server (@y/websocket-server, in memory), measured
# side by side in the same run with the shared load harness (../shared/bench: fanout.mjs,
# run-matrix.sh, durability.sh, summarize.py). See bench/RESULTS.md for the numbers.
#
#   bench/run.sh [phase ...]      phases (default: setup matrix durability deflate profile summary)
#     setup       copy ../shared/bench to bench/work/ (gitignored), npm ci for the harness and the
#                 y-websocket server peer only; snapshot the collab commit under test
#     matrix      the standard scenarios, collab and yws-mem interleaved (same scenario back to back,
#                 order alternating per rep) -> results/collab.jsonl, results/yws-mem.jsonl
#     durability  collab: lock-step x DUR_REPS and paced (10 writes/s) x DUR_REPS_PACED, per rep
#                 -> results/collab.jsonl
#     deflate     collab --deflate vs --no-deflate, interleaved -> results/deflate.jsonl
#     experiments collab-baseline vs collab-uvloop vs collab-nocompact (compaction off) vs
#                 collab-presence60 (COLLAB_PRESENCE_HZ=60, aware30 only): launch/settings variants of
#                 the same code (see collab-start.sh) -> results/experiments.jsonl
#     profile     py-spy on the receive-store-relay path under thru-closed load (also with compaction
#                 off, and fan50)
#                 -> results/profile-*.txt
#     summary     summarize.py tables -> results/tables.md, results/deflate-tables.md
#
# Env: REPS (2), REP_START (1; use 3 to add reps to existing files), SCENARIOS (all standard ones),
#      DEFLATE_SCENARIOS (fan10 fan50 aware30 thru-closed), COMMIT (HEAD: the collab commit to
#      measure; exported with `git archive` to bench/work/snap-<sha>, so that edits other people make
#      in the working tree while the bench runs do not change the code under test), QUIET_PCT (20:
#      before each run wait, up to QUIET_MAX=60 s, until processes outside this bench use less than
#      this % of one core), PEERS (collab yws-mem; another name starting with "collab" runs collab
#      under that name, e.g. collab-7ab150f for a second commit), DUR_NAME (collab), EXP_VARIANTS,
#      EXP_SCENARIOS, EXP_OUT (experiments), PROFILE_TAG (prefix of the profile names),
#      PROFILE_ONLY (one thru-closed profile under that name instead of the three).
# A collab name ending in -<commit> (collab-7dd258d, collab-nogeom-7dd258d) runs THAT commit, so two
# commits can be interleaved in one run: setup exports it with `git archive` (collab/, pyproject.toml,
# README.md) to bench/work/snap-<sha> and installs it into its own venv bench/work/venv-<sha>, built
# from that snapshot (its own dependency pins), which the run then starts.
# Every JSON line gets extra fields: bench_foreign_cpu_pct {mean,max} (CPU % of one core used by
# processes outside this bench during the run: other people's tests share the 2 cores),
# bench_collab_commit, bench_rep.
set -uo pipefail
BENCH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$BENCH/.." && pwd)"
W="$BENCH/work"; RES="$BENCH/results"; SHARED="${SHARED:-$ROOT/../shared/bench}"
REPS="${REPS:-2}"; REP_START="${REP_START:-1}"
SCENARIOS="${SCENARIOS:-fan2 fan10 fan50 fan50-np aware30 thru thru-closed rooms200 cold5000}"
DEFLATE_SCENARIOS="${DEFLATE_SCENARIOS:-fan10 fan50 aware30 thru-closed}"
PEERS="${PEERS:-collab yws-mem}"
QUIET_PCT="${QUIET_PCT:-20}"; QUIET_MAX="${QUIET_MAX:-60}"
PY="$ROOT/.venv/bin/python"
phases=("$@"); [[ ${#phases[@]} -gt 0 ]] || phases=(setup matrix durability deflate experiments profile summary)
mkdir -p "$RES"
log() { echo "[run.sh $(date +%T)] $*"; }

SHA="$(git -C "$ROOT" rev-parse "${COMMIT:-HEAD}")"
SNAP="$W/snap-${SHA:0:7}"

setup() {
  if [[ ! -f "$W/fanout.mjs" ]]; then
    mkdir -p "$W" && cp -r "$SHARED/." "$W/" && chmod -R u+w "$W"
  fi
  # One addition to the copied harness: BENCH_YMAP=1 makes writers insert each annotation as a
  # Y.Map (as collab's web client does) instead of a plain JSON object; unset, it is unchanged.
  if ! grep -q BENCH_YMAP "$W/fanout.mjs"; then
    sed -i -e 's|      w.map.set(key, a)|      w.map.set(key, process.env.BENCH_YMAP === "1" ? new Y.Map(Object.entries(a)) : a)|' \
      -e 's|            const v = c.map.get(key)|            const v0 = c.map.get(key); const v = v0 instanceof Y.Map ? { t: v0.get("t") } : v0|' \
      "$W/fanout.mjs"
    [[ $(grep -c 'BENCH_YMAP\|v0 instanceof Y.Map' "$W/fanout.mjs") == 2 ]] || { echo "harness patch failed" >&2; exit 1; }
  fi
  [[ -d "$W/node_modules" ]] || (cd "$W" && npm ci --no-audit --no-fund)
  [[ -d "$W/peers/y-websocket-server/node_modules" ]] || (cd "$W/peers/y-websocket-server" && npm ci --no-audit --no-fund)
  if [[ ! -d "$SNAP/collab" ]]; then
    mkdir -p "$SNAP" && git -C "$ROOT" archive "$SHA" collab | tar -x -C "$SNAP"
  fi
  log "collab under test: $SHA (snapshot $SNAP)"
  local n c
  for n in $PEERS ${EXP_VARIANTS:-} ${DUR_NAME:-}; do
    c="$(commit_of "$n")" || continue
    [[ -x "$W/venv-${c:0:7}/bin/collab" ]] && continue
    rm -rf "$W/snap-${c:0:7}-pkg" && mkdir -p "$W/snap-${c:0:7}-pkg"
    git -C "$ROOT" archive "$c" collab pyproject.toml README.md | tar -x -C "$W/snap-${c:0:7}-pkg"
    # [scale]: from the regrouping on, collab/app.py imports redis (optional extra) whatever the settings
    python3 -m venv "$W/venv-${c:0:7}" && "$W/venv-${c:0:7}/bin/pip" install -q "$W/snap-${c:0:7}-pkg[scale]" \
      || { echo "could not build the venv of $c" >&2; exit 1; }
    log "$n runs $c (venv $W/venv-${c:0:7}, built from its snapshot)"
  done
}
# The commit a run name ends with (collab-nogeom-7dd258d -> the full sha of 7dd258d), or failure.
commit_of() {
  [[ "$1" == collab* && "$1" =~ -([0-9a-f]{7,40})$ ]] || return 1
  git -C "$ROOT" rev-parse --verify -q "${BASH_REMATCH[1]}^{commit}"
}
setup
export COLLAB_SRC="$SNAP"
TOKEN="$(PYTHONPATH="$SNAP" COLLAB_SECRET=benchsecret "$ROOT/.venv/bin/collab" token --user bench --name Bench \
  --site Roubaix --role admin --slides '*' --ttl 86400 2>/dev/null)"
[[ -n "$TOKEN" ]] || { echo "could not mint a token" >&2; exit 1; }

# --- noise: CPU used by processes outside this script's process tree -----------------------------
NOISE="$W/noise.log"
"$PY" - "$$" "$NOISE" <<'EOF' &
import os, sys, time
root, out = int(sys.argv[1]), sys.argv[2]
hz = os.sysconf("SC_CLK_TCK"); me = os.getpid()
def total_busy():
    f = open("/proc/stat").readline().split()[1:]
    v = list(map(int, f)); return sum(v) - v[3] - v[4]          # minus idle, iowait
def procs():
    d = {}
    for p in os.listdir("/proc"):
        if not p.isdigit(): continue
        try: s = open(f"/proc/{p}/stat").read()
        except OSError: continue
        r = s[s.rfind(")") + 2:].split()
        d[int(p)] = (int(r[1]), int(r[11]) + int(r[12]))          # ppid, utime+stime
    return d
def ours(d):
    res = set()
    for pid in d:
        p, seen = pid, 0
        while p > 1 and seen < 64:
            if p == root or p == me: res.add(pid); break
            p = d.get(p, (0, 0))[0]; seen += 1
    return res
prev_t, prev_b, prev_d = time.time(), total_busy(), procs()
with open(out, "a", buffering=1) as f:
    while True:
        time.sleep(0.5)
        if not os.path.exists(f"/proc/{root}"): break
        t, b, d = time.time(), total_busy(), procs()
        mine = ours(d)
        own = sum(d[p][1] - prev_d[p][1] for p in mine if p in prev_d)
        foreign = max(0, (b - prev_b) - own) / hz / (t - prev_t) * 100
        f.write(f"{t:.2f} {foreign:.1f}\n")
        prev_t, prev_b, prev_d = t, b, d
EOF
SAMPLER=$!
trap 'kill $SAMPLER 2>/dev/null' EXIT

wait_quiet() {
  local waited=0
  while (( waited < QUIET_MAX )); do
    local busy; busy=$(tail -4 "$NOISE" 2>/dev/null | awk '{s+=$2; n++} END {print (n ? int(s/n) : 0)}')
    (( busy < QUIET_PCT )) && return 0
    (( waited == 0 )) && log "waiting for a quieter machine (foreign CPU ${busy}% of a core)"
    sleep 2; waited=$((waited + 2))
  done
  log "machine still busy after ${QUIET_MAX}s; running anyway (see bench_foreign_cpu_pct)"
}

# Append the JSON lines of one run-matrix call to $1, relabelled <name>:<scenario>:r<rep>[-k],
# with the foreign-CPU figures of the run's time window.
collect() { # dest tmpfile name rep t0
  "$PY" - "$@" "$NOISE" "${RUN_SHA:-$SHA}" <<'EOF'
import json, sys, time
dest, tmp, name, rep, t0, noise, sha = sys.argv[1:8]
t0, t1 = float(t0), time.time()
samples = []
for line in open(noise):
    try: t, v = map(float, line.split())
    except ValueError: continue
    if t0 <= t <= t1: samples.append(v)
with open(dest, "a") as out:
    for line in open(tmp):
        line = line.strip()
        if not line.startswith("{"): continue
        d = json.loads(line)
        parts = d.get("label", "").split(":")
        if len(parts) >= 3:
            parts[0] = name
            parts[2] = "r" + rep + (parts[2][parts[2].index("-"):] if "-" in parts[2] else "")
            d["label"] = ":".join(parts)
        d["bench_rep"] = int(rep)
        d["bench_collab_commit"] = sha
        d["bench_foreign_cpu_pct"] = {"mean": round(sum(samples) / len(samples), 1) if samples else None,
                                      "max": max(samples) if samples else None}
        out.write(json.dumps(d) + "\n")
        print(f"   -> {d['label']}: foreign CPU mean {d['bench_foreign_cpu_pct']['mean']}% max {d['bench_foreign_cpu_pct']['max']}%")
EOF
}

# one scenario, one server: name = result label/peer (collab, yws-mem, collab-deflate, ...)
run_one() { # name scenario rep dest
  local name="$1" sc="$2" rep="$3" dest="$4" tmp="$W/tmp-$$.jsonl" t0
  rm -f "$tmp"; wait_quiet; t0=$(date +%s.%N)
  # A name with "-ymap" (collab-ymap, yws-mem-ymap, ...) runs the harness with Y.Map annotations.
  if [[ "$name" == *-ymap* ]]; then export BENCH_YMAP=1; else unset BENCH_YMAP; fi
  case "$name" in
    yws-mem*)
      (cd "$W" && REPS=1 OUT="$tmp" ./run-matrix.sh yws-mem "$sc") ;;
    collab*)
      local start="$BENCH/collab-start.sh"
      case "$name" in
        collab-deflate) start="$start --deflate" ;;
        collab-uvloop) start="env BENCH_UVLOOP=1 $start" ;;
        collab-nocompact) start="env COLLAB_COMPACT_AFTER_UPDATES=1000000000 COLLAB_COMPACT_AFTER_BYTES=1000000000000 $start" ;;
        collab-presence60) start="env COLLAB_PRESENCE_HZ=60 $start" ;;
        collab-nogeom*) start="env COLLAB_GEOMETRY_CHECKS=0 $start" ;;   # commits that have the setting
      esac
      local c v
      if c="$(commit_of "$name")"; then   # that commit's own install, not the working tree's snapshot
        v="$W/venv-${c:0:7}"; start="env COLLAB=$v/bin/collab PY=$v/bin/python COLLAB_SRC= $start"; RUN_SHA="$c"
      fi
      local extra="--params token=$TOKEN --room-prefix bench-"
      [[ "$sc" == durability* ]] && extra="--params token=$TOKEN --room bench-0"
      (cd "$W" && START_CMD="$start" URL_PREFIX=/ws/slides EXTRA="$extra" \
        REPS=1 OUT="$tmp" DUR_REPS="${DUR_REPS:-3}" DUR_REPS_PACED="${DUR_REPS_PACED:-1}" \
        ./run-matrix.sh custom "$sc") ;;
  esac 2>&1 | grep -v '^   server log: .*"level":"info"'
  collect "$dest" "$tmp" "$name" "$rep" "$t0"
  rm -f "$tmp"; RUN_SHA=""
}

matrix() {
  for rep in $(seq "$REP_START" $((REP_START + REPS - 1))); do
    local order=($PEERS); (( rep % 2 == 0 )) && order=($(printf '%s\n' $PEERS | tac))
    for sc in $SCENARIOS; do
      for p in "${order[@]}"; do run_one "$p" "$sc" "$rep" "$RES/$p.jsonl"; done
    done
  done
}

durability() {
  for rep in $(seq "$REP_START" $((REP_START + REPS - 1))); do
    run_one "${DUR_NAME:-collab}" durability "$rep" "$RES/${DUR_NAME:-collab}.jsonl"
    run_one "${DUR_NAME:-collab}" durability-paced "$rep" "$RES/${DUR_NAME:-collab}.jsonl"
  done
}

deflate() {
  for rep in $(seq "$REP_START" $((REP_START + REPS - 1))); do
    local order=(collab-nodeflate collab-deflate); (( rep % 2 == 0 )) && order=(collab-deflate collab-nodeflate)
    for sc in $DEFLATE_SCENARIOS; do
      for p in "${order[@]}"; do run_one "$p" "$sc" "$rep" "$RES/deflate.jsonl"; done
    done
  done
}

# Settings / launch experiments on the same code (no change to collab/): uvloop as the event loop,
# compaction disabled. Interleaved with the baseline -> results/experiments.jsonl
experiments() {
  for rep in $(seq "$REP_START" $((REP_START + ${EXP_REPS:-1} - 1))); do
    for sc in ${EXP_SCENARIOS:-thru-closed fan50 aware30}; do
      local variants="collab-baseline collab-uvloop collab-nocompact"
      [[ "$sc" == aware30 ]] && variants="collab-baseline collab-uvloop collab-presence60"
      [[ -n "${EXP_VARIANTS:-}" ]] && variants="$EXP_VARIANTS"
      (( rep % 2 == 0 )) && variants="$(printf '%s\n' $variants | tac | tr '\n' ' ')"   # alternate the order
      for p in $variants; do run_one "$p" "$sc" "$rep" "$RES/${EXP_OUT:-experiments}.jsonl"; done
    done
  done
}

# py-spy on collab under load. Server on CPU 1 (like the matrix), harness and py-spy on CPU 0.
profile_one() { # name duration pyspy_rate fanout-args...
  local name="${PROFILE_TAG:-}$1" dur="$2" rate="$3"; shift 3
  local port=4322 d="$W/data/profile-$name" spid hpid
  rm -rf "$d"; mkdir -p "$d"; wait_quiet
  setsid taskset -c 1 env PORT=$port DATA="$d" "$BENCH/collab-start.sh" >"$d.server.log" 2>&1 &
  spid=$!
  for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
  taskset -c 0 node "$W/fanout.mjs" --url ws://127.0.0.1:$port/ws/slides --params "token=$TOKEN" \
    --room-prefix bench- --server-pid "$spid" --warmup 3 --duration "$dur" --label "collab-profile:$name:r1" \
    --json-out "$RES/profile.jsonl" "$@" > "$W/profile-$name.harness.log" 2>&1 &
  hpid=$!
  sleep 6   # connect + warm-up
  local before; before=$(thread_cpu "$spid")
  taskset -c 0 "$ROOT/.venv/bin/py-spy" record --pid "$spid" --duration 15 --rate "$rate" --format raw \
    -o "$W/profile-$name.raw" >/dev/null 2>&1 || log "py-spy failed for $name"
  local after; after=$(thread_cpu "$spid")
  wait "$hpid"; grep '^# latency\|^# writes\|^# harness' "$W/profile-$name.harness.log"
  kill -TERM -- -"$spid" 2>/dev/null; wait "$spid" 2>/dev/null
  "$PY" "$BENCH/profile_summary.py" "$W/profile-$name.raw" "collab $name (${SHA:0:7}), py-spy $rate Hz, 15 s" \
    "$before" "$after" > "$RES/profile-$name.txt"
  log "profile $name -> $RES/profile-$name.txt"; head -45 "$RES/profile-$name.txt"
}
thread_cpu() { # "tid:comm:ticks,..." of every thread of $1, at this instant
  local t out=""
  for t in /proc/"$1"/task/*; do
    out+="$(basename "$t"):$(tr -d ' :,' < "$t/comm"):$(awk '{sub(/.*\) /, ""); print $12 + $13}' "$t/stat"),"
  done
  echo "$out"
}
profile() {
  "$ROOT/.venv/bin/py-spy" --version >/dev/null 2>&1 || "$ROOT/.venv/bin/pip" install -q py-spy
  if [[ "${PROFILE_ONLY:-}" == fan50* ]]; then   # e.g. PROFILE_ONLY=fan50 PROFILE_TAG=4ef0d5d-
    profile_one "$PROFILE_ONLY" 25 500 --clients 50 --writers 1 --rate 20 --vertices 50
    return
  elif [[ -n "${PROFILE_ONLY:-}" ]]; then   # e.g. PROFILE_ONLY=thru-closed PROFILE_TAG=7ab150f-
    profile_one "$PROFILE_ONLY" 25 100 --clients 10 --writers 10 --rate 1000 --max-inflight 5 --vertices 50
    return
  fi
  profile_one thru-closed 25 100 --clients 10 --writers 10 --rate 1000 --max-inflight 5 --vertices 50
  profile_one fan50 25 500 --clients 50 --writers 1 --rate 20 --vertices 50
  # the same load with compaction disabled: what the relay path costs once compaction is out of the way
  ( export COLLAB_COMPACT_AFTER_UPDATES=1000000000 COLLAB_COMPACT_AFTER_BYTES=1000000000000
    profile_one thru-closed-nocompact 25 100 --clients 10 --writers 10 --rate 1000 --max-inflight 5 --vertices 50 )
}

summary() {
  local files=()
  for p in $PEERS; do [[ -f "$RES/$p.jsonl" ]] && files+=("$RES/$p.jsonl"); done
  python3 "$W/summarize.py" "${files[@]}" --peers "$(echo $PEERS | tr ' ' ,)" > "$RES/tables.md"
  [[ -f "$RES/deflate.jsonl" ]] && python3 "$W/summarize.py" "$RES/deflate.jsonl" \
    --peers collab-nodeflate,collab-deflate > "$RES/deflate-tables.md"
  [[ -f "$RES/experiments.jsonl" ]] && python3 "$W/summarize.py" "$RES/experiments.jsonl" \
    --peers collab-baseline,collab-uvloop,collab-nocompact,collab-presence60 > "$RES/experiments-tables.md"
  log "tables: $RES/tables.md $RES/deflate-tables.md $RES/experiments-tables.md"
}

for ph in "${phases[@]}"; do
  case "$ph" in
    setup) ;;  # done above
    matrix|durability|deflate|experiments|profile|summary) log "== phase $ph"; "$ph" ;;
    *) echo "unknown phase $ph" >&2; exit 2 ;;
  esac
done
log "done"
