#!/usr/bin/env bash
# schemathesis (PyPI, pinned) against `auterity run --http` on the embedded log, from
# api/openapi.json: no 5xx, and every status, content type, header and body as the document
# says. Installs schemathesis into a venv in the build directory the first time (network).
# Usage: schemathesis_test.sh AUTERITY_BIN OPENAPI_JSON WORK_DIR
set -euo pipefail
bin=$1 doc=$2 work=$3
version=4.32.5
venv=$work/venv
if [[ ! -x $venv/bin/schemathesis ]] || ! "$venv/bin/schemathesis" --version | grep -q "$version"; then
  rm -rf "$venv"
  # Debian's python3 (python3-venv) rather than whatever python3 is first on PATH.
  py=/usr/bin/python3; [[ -x $py ]] || py=python3
  "$py" -m venv "$venv"
  "$venv/bin/pip" install -q "schemathesis==$version"
fi
data=$(mktemp -d "${TMPDIR:-/tmp}/auterity-schemathesis.XXXXXX")
pid=
cleanup() {
  [[ -n $pid ]] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  rm -rf "$data"
}
trap cleanup EXIT
admin=$("$bin" keys create --data "$data" --tenant '*' --role admin 2>/dev/null)
op=$("$bin" keys create --data "$data" --tenant acme --role operator 2>/dev/null)
# The rate limit is out of the way: schemathesis sends as fast as it can.
"$bin" run --data "$data" --no-fsync --http 127.0.0.1:0 --http-rate 1000000 --http-burst 1000000 \
  --stats-interval-s 0 >"$data/run.log" 2>&1 &
pid=$!
for _ in $(seq 100); do [[ -f $data/api/endpoint.json ]] && break; sleep 0.1; done
port=$(sed -n 's/.*HTTP API on port \([0-9]*\).*/\1/p' "$data/run.log")
url=http://127.0.0.1:$port
# Something to find: a workflow, an execution waiting for a signal (through the CLI, which
# finds the engine's API in the data directory).
echo '{"workflow":"waits","version":1,"steps":[{"id":"w","kind":"wait_signal","signal":"go","timeout_ms":600000}]}' >"$data/waits.json"
"$bin" publish --data "$data" --tenant acme "$data/waits.json"
"$bin" start --data "$data" --tenant acme --workflow waits --id lead-1 --input '{"name":"Maria"}'
status=0
for key in "$admin" "$op"; do
  # The event stream is left out: it stays open while its execution runs (api_test covers it);
  # so is the scale: it stops and reopens the engine on a new port (api_scale_test covers it).
  "$venv/bin/schemathesis" run "$doc" --url "$url" -H "Authorization: Bearer $key" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance \
    --exclude-path-regex '/events$|/partitions/scale$' --max-examples 25 --seed 11 --request-timeout 40 \
    --no-color --generation-database none || status=1
done
kill -0 "$pid" || { echo "the engine died"; cat "$data/run.log"; exit 1; }
exit $status
