#!/bin/sh
# A long run of the deterministic simulator: N seeds from FROM (random if not given).
#   tests/sim/run.sh 100000          # prints the seeds it runs, a summary, failures with their
#   tests/sim/run.sh 20000 5000000   # one-line reproduce commands; exit 1 if any seed failed
set -eu
here=$(cd "$(dirname "$0")/../.." && pwd)
bin=${AUTERITY_SIM_BIN:-$here/build/tests/sim/auterity_sim}
[ -x "$bin" ] || { echo "run.sh: build it first: ninja -C build auterity_sim" >&2; exit 2; }
exec "$bin" --seeds "${1:-20000}" --from "${2:-random}"
