#!/usr/bin/env bash
# The fault suite's long mode: random faults of every class (fault points, SIGSTOP, SIGKILL
# with and without wiped --data, worker process kills, broker node kills) on a 3-node cluster
# under steady load for N minutes, then the same checks as ci mode.
#
#   tests/faults/soak.sh [MINUTES] [fault_suite.py options...]   e.g. soak.sh 60 --seed 42
#
# BUILD_DIR (default build) holds the binary and the generated Python classes.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
build="${BUILD_DIR:-$root/build}"
minutes=30
if (($#)) && [[ "$1" =~ ^[0-9]+([.][0-9]+)?$ ]]; then minutes="$1"; shift; fi
exec /usr/bin/python3 "$root/tests/faults/fault_suite.py" --mode soak --minutes "$minutes" \
  --auterity "$build/cli/auterity" --broker-sh "$root/tests/kafka/broker.sh" \
  --python-gen "$build/generated/python" "$@"
