#!/usr/bin/env bash
# Starts per second through the HTTP API on the embedded log (bench/README.md, "HTTP API").
# Usage: bench/api/run.sh [BUILD_DIR] [DURATION_S] [CONNECTIONS] [wait|nowait] [--no-fsync]
#   wait: every start waits for the engine's decision (?wait_ms): start -> first command latency
set -euo pipefail
build=${1:-build} duration=${2:-20} conns=${3:-64} mode=${4:-nowait} fsync=${5:-}
bin=$build/cli/auterity
here=$(cd "$(dirname "$0")" && pwd)
data=$(mktemp -d "${TMPDIR:-/tmp}/auterity-api-bench.XXXXXX")
pid=
cleanup() { [[ -n $pid ]] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; [[ -n ${KEEP:-} ]] || rm -rf "$data"; }
trap cleanup EXIT
pairs=()
for t in acme globex initech umbrella; do
  pairs+=("$t=$("$bin" keys create --data "$data" --tenant $t --role publisher 2>/dev/null)")
done
"$bin" run --data "$data" --http 127.0.0.1:0 --http-rate 1000000 --http-burst 1000000 \
  --stats-interval-s 5 $fsync >"$data/run.log" 2>&1 &
pid=$!
for _ in $(seq 100); do [[ -f $data/api/endpoint.json ]] && break; sleep 0.1; done
port=$(sed -n 's/.*HTTP API on port \([0-9]*\).*/\1/p' "$data/run.log")
echo '{"workflow":"quick","version":1,"steps":[{"id":"a","kind":"task","action":"transform"}]}' >"$data/quick.json"
for t in acme globex initech umbrella; do "$bin" publish --data "$data" --tenant $t "$data/quick.json" >/dev/null; done
wrk -t2 -c"$conns" -d"${duration}s" --latency -s "$here/starts.lua" "http://127.0.0.1:$port" -- "${pairs[@]}" \
  $([[ $mode == wait ]] && echo wait)
sleep 2
grep 'inputs/s' "$data/run.log" | tail -3
