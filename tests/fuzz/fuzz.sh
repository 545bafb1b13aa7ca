#!/usr/bin/env bash
# libFuzzer targets of tests/fuzz/ (tests/README.md, "Fuzzing").
#   fuzz.sh build [DIR]                    configure DIR (default build/fuzz) with clang and
#                                          -DAUTERITY_FUZZ=ON, build the targets
#   fuzz.sh run TARGET SECONDS [DIR]       the whole corpus, then SECONDS of fuzzing; new inputs
#                                          go to a temp dir, the corpus is not changed
#   fuzz.sh long SECONDS [DIR] [TARGET..]  each target (default all) for SECONDS, then new inputs
#                                          that add coverage are merged into its corpus
#   fuzz.sh repro TARGET FILE [DIR]        run one input (a crash file) once
# Every run prints one line: target, seconds, executions, executions/s, edges covered (cov),
# features (ft), corpus size, and the crash file and the command to reproduce it, if any.
# Environment: AUTERITY_FUZZ_CXX (default clang++-19), AUTERITY_FUZZ_JOBS (ninja -j, default 2).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
targets=(fuzz_json_envelope fuzz_envelope fuzz_orchestrator fuzz_definition fuzz_policy
  fuzz_log_recovery)

# Symbolized stack traces in crash reports (Debian: llvm-19).
for s in llvm-symbolizer-19 llvm-symbolizer; do
  if command -v "$s" >/dev/null; then
    export ASAN_SYMBOLIZER_PATH=${ASAN_SYMBOLIZER_PATH:-$(command -v "$s")}
    break
  fi
done
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1}

corpus_of() { echo "$here/corpus/${1#fuzz_}"; }
dict_of() {
  case "$1" in
    fuzz_json_envelope | fuzz_definition | fuzz_policy) echo "-dict=$here/json.dict" ;;
  esac
}

build() {
  local dir=$1 cxx=${AUTERITY_FUZZ_CXX:-clang++-19}
  command -v "$cxx" >/dev/null || { echo "fuzz.sh: no $cxx (Debian: clang-19 libclang-rt-19-dev)" >&2; exit 2; }
  cmake -S "$root" -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_CXX_COMPILER="$cxx" -DAUTERITY_FUZZ=ON -DAUTERITY_WERROR=ON >/dev/null
  ninja -C "$dir" -j"${AUTERITY_FUZZ_JOBS:-2}" fuzz_targets
}

# run TARGET SECONDS DIR OUT_CORPUS: fuzzes with new inputs written to OUT_CORPUS.
run() {
  local t=$1 secs=$2 dir=$3 out=$4
  local bin="$dir/tests/fuzz/$t" corpus
  corpus=$(corpus_of "$t")
  [ -x "$bin" ] || { echo "fuzz.sh: $bin is not built (fuzz.sh build $dir)" >&2; exit 2; }
  mkdir -p "$dir/artifacts/$t" "$out"
  local log="$dir/artifacts/$t/last.log" rc=0
  # -timeout: an input running longer is a hang (a crash for libFuzzer); -rss_limit_mb likewise.
  "$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$dir/artifacts/$t/" $(dict_of "$t") "$out" "$corpus" >"$log" 2>&1 || rc=$?
  local execs rate cov ft corp crash
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
  cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1 | cut -d' ' -f2)
  ft=$(grep -oE 'ft: [0-9]+' "$log" | tail -1 | cut -d' ' -f2)
  corp=$(grep -oE 'corp: [0-9]+' "$log" | tail -1 | cut -d' ' -f2)
  crash=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)
  echo "$t: ${secs}s, ${execs:-?} executions, ${rate:-?}/s, cov ${cov:-?}, ft ${ft:-?}, corpus ${corp:-?}, exit $rc"
  if [ "$rc" -ne 0 ]; then
    tail -n 60 "$log" >&2
    [ -n "$crash" ] && echo "crash input: $crash; reproduce: $0 repro $t $crash $dir" >&2
    return 1
  fi
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
  build) build "${1:-$root/build/fuzz}" ;;
  run)
    [ $# -ge 2 ] || { echo "usage: fuzz.sh run TARGET SECONDS [DIR]" >&2; exit 2; }
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    run "$1" "$2" "${3:-$root/build/fuzz}" "$tmp"
    ;;
  long)
    [ $# -ge 1 ] || { echo "usage: fuzz.sh long SECONDS [DIR] [TARGET...]" >&2; exit 2; }
    secs=$1 dir=${2:-$root/build/fuzz}
    shift $(($# >= 2 ? 2 : 1))
    [ $# -gt 0 ] && targets=("$@")
    failed=0
    for t in "${targets[@]}"; do
      new="$dir/artifacts/$t/new"
      rm -rf "$new"
      run "$t" "$secs" "$dir" "$new" || failed=1
      # Keep only the new inputs that add coverage (libFuzzer's merge), in the repository.
      "$dir/tests/fuzz/$t" -merge=1 "$(corpus_of "$t")" "$new" >/dev/null 2>&1 || true
    done
    exit $failed
    ;;
  repro)
    [ $# -ge 2 ] || { echo "usage: fuzz.sh repro TARGET FILE [DIR]" >&2; exit 2; }
    exec "${3:-$root/build/fuzz}/tests/fuzz/$1" "$2"
    ;;
  *) sed -n '2,12p' "$0" >&2; exit 2 ;;
esac
