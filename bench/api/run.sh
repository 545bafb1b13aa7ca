#!/usr/bin/env bash
# Starts per second through the HTTP API (bench/README.md, "HTTP API"): on the embedded log
# (`auterity run --http`), or with --kafka through `auterity gateway` in front of a throwaway
# 1-node broker (tests/kafka/broker.sh) and one `auterity run --kafka` instance.
# Usage: bench/api/run.sh [BUILD_DIR] [DURATION_S] [CONNECTIONS] [wait|nowait|restart] [--no-fsync|--kafka]
#   wait: every start waits for the engine's decision (?wait_ms): start -> first command latency
#   restart (--kafka only): nowait starts for DURATION_S, then, once the engine has decided them
#     all, the gateway is restarted twice on that history and timed until /v1/ready: resuming
#     its replica from its checkpoint, then rebuilding it (replica/ removed first)
set -euo pipefail
build=${1:-build} duration=${2:-20} conns=${3:-64} mode=${4:-nowait} flag=${5:-}
bin=$build/cli/auterity
here=$(cd "$(dirname "$0")" && pwd)
broker=$here/../../tests/kafka/broker.sh
data=$(mktemp -d "${TMPDIR:-/tmp}/auterity-api-bench.XXXXXX")
pid= engine=
cleanup() {  # under set -e: no command here may fail
  if [[ -n $pid ]]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  if [[ -n $engine ]]; then kill "$engine" 2>/dev/null || true; wait "$engine" 2>/dev/null || true; fi
  if [[ $flag == --kafka ]]; then "$broker" stop --dir "$data/kafka" >/dev/null 2>&1 || true; fi
  if [[ -z ${KEEP:-} ]]; then rm -rf "$data"; fi
}
trap cleanup EXIT
pairs=()
for t in acme globex initech umbrella; do
  pairs+=("$t=$("$bin" keys create --data "$data" --tenant $t --role publisher 2>/dev/null)")
done
echo '{"workflow":"quick","version":1,"steps":[{"id":"a","kind":"task","action":"transform"}]}' >"$data/quick.json"
if [[ $flag == --kafka ]]; then
  eval "$("$broker" start --dir "$data/kafka" | grep -E '^BOOTSTRAP=')"
  "$bin" topics apply --bootstrap "$BOOTSTRAP" --partitions 4 >/dev/null
  "$bin" run --kafka "$BOOTSTRAP" --instance e1 --data "$data/state" --stats-interval-s 5 \
    >"$data/engine.log" 2>&1 &
  engine=$!
  "$bin" gateway --kafka "$BOOTSTRAP" --instance gw1 --data "$data" --http 127.0.0.1:0 \
    --metrics 127.0.0.1:0 --http-rate 1000000 --http-burst 1000000 >"$data/run.log" 2>&1 &
  pid=$!
  for _ in $(seq 300); do grep -q 'HTTP API on port' "$data/run.log" && break; sleep 0.1; done
  port=$(sed -n 's/.*HTTP API on port \([0-9]*\).*/\1/p' "$data/run.log")
  admin=$("$bin" keys create --data "$data" --tenant '*' --role admin 2>/dev/null)
  for t in acme globex initech umbrella; do
    # The first waits while the engine joins its group and restores its partitions.
    curl -sf -o /dev/null -X POST -H "Authorization: Bearer $admin" -H 'Content-Type: application/json' \
      --data "{\"definition\": $(cat "$data/quick.json")}" \
      "http://127.0.0.1:$port/v1/tenants/$t/definitions?wait_ms=60000"
  done
  sleep 1  # the key file is read again within its check interval
else
  "$bin" run --data "$data" --http 127.0.0.1:0 --http-rate 1000000 --http-burst 1000000 \
    --stats-interval-s 5 $flag >"$data/run.log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do [[ -f $data/api/endpoint.json ]] && break; sleep 0.1; done
  port=$(sed -n 's/.*HTTP API on port \([0-9]*\).*/\1/p' "$data/run.log")
  for t in acme globex initech umbrella; do "$bin" publish --data "$data" --tenant $t "$data/quick.json" >/dev/null; done
fi
wrk -t2 -c"$conns" -d"${duration}s" --latency -s "$here/starts.lua" "http://127.0.0.1:$port" -- "${pairs[@]}" \
  $([[ $mode == wait ]] && echo wait)
sleep 2
grep 'inputs/s' "$data/run.log" "$data/engine.log" 2>/dev/null | tail -3
[[ $mode == restart ]] || exit 0
[[ $flag == --kafka ]] || { echo "restart needs --kafka" >&2; exit 2; }
# The replica's offset, summed over partitions, from the gateway's /metrics.
replica_offset() {
  curl -sf "http://127.0.0.1:$1/metrics" | awk '/^auterity_replica_next_offset/ {s += $2} END {print s + 0}'
}
mport=$(sed -n 's/.*Prometheus metrics on port \([0-9]*\).*/\1/p' "$data/run.log")
last=-1
while :; do  # until the engine decided every start and the replica applied it: 5 s unchanged
  now=$(replica_offset "$mport")
  [[ $now == "$last" ]] && break
  last=$now
  sleep 5
done
echo "history: $last executions records (engine and replica idle); load average: $(cut -d' ' -f1-3 /proc/loadavg)"
t0=$(date +%s%N)
kill "$pid"
wait "$pid" 2>/dev/null || true
pid=
echo "stop after the load: $((($(date +%s%N) - t0) / 1000000)) ms"
grep -m1 'read replica flushed' "$data/run.log" | sed 's/^/  /' || true
restart() {  # $1: label; starts the gateway on $data, prints the time until /v1/ready is 200
  local log=$data/restart-$1.log t0 t1 p=
  t0=$(date +%s%N)
  "$bin" gateway --kafka "$BOOTSTRAP" --instance gw1 --data "$data" --http 127.0.0.1:0 >"$log" 2>&1 &
  pid=$!
  while [[ -z $p ]]; do sleep 0.02; p=$(sed -n 's/.*HTTP API on port \([0-9]*\).*/\1/p' "$log"); done
  until curl -sf -o /dev/null "http://127.0.0.1:$p/v1/ready"; do sleep 0.02; done
  t1=$(date +%s%N)
  echo "$1: ready after $(((t1 - t0) / 1000000)) ms (load average $(cut -d' ' -f1-3 /proc/loadavg))"
  until grep -q 'caught up' "$log"; do sleep 0.02; done  # printed within 100 ms of ready
  grep -m1 -E 'resumed from|rebuilt from offset 0 \(' "$log" | sed 's/^/  /'
  grep -m1 'caught up' "$log" | sed 's/^/  /'
  t0=$(date +%s%N)
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  pid=
  echo "  stopped in $((($(date +%s%N) - t0) / 1000000)) ms"
  grep -m1 'read replica flushed' "$log" | sed 's/^/  /' || true
}
restart resume
rm -rf "$data/replica"
restart rebuild
restart resume
