#!/usr/bin/env bash
# Usage: check_conform.sh <flatc> <current.fbs> <released.fbs>...
# Fails if the current schema breaks compatibility with any released copy.
set -u
flatc=$1 current=$2; shift 2
[ $# -gt 0 ] || { echo "no released schemas found"; exit 1; }
status=0
for released in "$@"; do
  if out=$("$flatc" --conform "$released" "$current" 2>&1); then
    echo "ok: $(basename "$current") conforms to $(basename "$released")"
  else
    echo "BREAKING: $(basename "$current") does not conform to $(basename "$released"):"
    echo "$out"
    status=1
  fi
done
exit $status
