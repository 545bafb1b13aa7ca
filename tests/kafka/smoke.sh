#!/usr/bin/env bash
# End-to-end check of broker.sh on this machine (see README.md, "Smoke check"):
#   1 node:  topic, console produce/consume, AUTERITY_KAFKA_ATTACH, transactions (TxSmoke),
#            stop, nothing left running.
#   3 nodes: the same, then acks=all produce with one node SIGKILLed mid-stream (RF 3,
#            min.insync.replicas 2): every record delivered and read back exactly once;
#            transactions still commit; the node restarts and rejoins every ISR; stop.
# Needs kcat (Debian: kcat) and a JDK (TxSmoke.java runs through Java's source launcher).
# Prints timings on stderr. Usage: tests/kafka/smoke.sh [1|3|all]
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
readonly here
readonly broker="$here/broker.sh"
readonly fault_records=20000
readonly fault_records_per_tick=200 # every 0.1 s: 2,000 records/s, so the stream spans ~10 s
readonly fault_kill_after_s=2
readonly isr_wait_s_max=60

say() { printf 'smoke: %s\n' "$*" >&2; }
fail() { say "FAILED: $*"; exit 1; }
now_ms() { local t="${EPOCHREALTIME/./}"; echo $((t / 1000)); }
since() { local ms=$(($(now_ms) - $1)); printf '%d.%d s' $((ms / 1000)) $((ms % 1000 / 100)); }

command -v kcat >/dev/null || fail "kcat not found (Debian: apt-get install kcat)"
command -v javac >/dev/null || fail "a JDK is needed for TxSmoke.java (Debian: default-jdk-headless)"

cluster_dir=""
cleanup() {
  if [[ -n "$cluster_dir" && -d "$cluster_dir" ]]; then "$broker" stop --dir "$cluster_dir" || true; fi
}
trap cleanup EXIT

topic() { "$broker" run-class org.apache.kafka.tools.TopicCommand --bootstrap-server "$BOOTSTRAP" "$@" >/dev/null; }

tx_smoke() { "$broker" run-class "$here/TxSmoke.java" "$BOOTSTRAP" "$@" >&2; }

# No process of this cluster may outlive `stop`.
assert_no_process_left() {
  if pgrep -f -- "$1/node" >/dev/null; then
    pgrep -af -- "$1/node" >&2
    fail "processes of $1 still running after stop"
  fi
}

start_cluster() {
  local t
  t="$(now_ms)"
  eval "$("$broker" start --nodes "$1")"
  cluster_dir="$DIR"
  say "$1-node cluster ready in $(since "$t"): BOOTSTRAP=$BOOTSTRAP"
}

stop_cluster() {
  local t
  t="$(now_ms)"
  "$broker" stop --dir "$DIR"
  say "stopped in $(since "$t")"
  if grep -q 'SIGKILL' "$DIR"/*.log 2>/dev/null; then fail "a node needed SIGKILL to stop"; fi
  assert_no_process_left "$DIR"
  rm -rf "$DIR"
  cluster_dir=""
}

console_roundtrip() {
  local rf="$1" got
  topic --create --topic console --partitions 3 --replication-factor "$rf"
  printf 'one\ntwo\nthree\n' | "$broker" run-class kafka.tools.ConsoleProducer \
    --bootstrap-server "$BOOTSTRAP" --topic console --producer-property acks=all
  got="$("$broker" run-class org.apache.kafka.tools.consumer.ConsoleConsumer --bootstrap-server "$BOOTSTRAP" \
    --topic console --from-beginning --max-messages 3 --timeout-ms 30000 2>/dev/null | sort | tr '\n' ' ')"
  [[ "$got" == "one three two " ]] || fail "console consumer read '$got'"
  say "console producer/consumer: 3 records round-tripped"
}

# AUTERITY_KAFKA_ATTACH: `start` hands out the running cluster, `stop --rm` of it is a no-op.
attach_check() {
  local out
  out="$(AUTERITY_KAFKA_ATTACH="$DIR" "$broker" start --nodes 1)"
  [[ "$out" == *"BOOTSTRAP=$BOOTSTRAP"* ]] || fail "attached start printed '$out'"
  AUTERITY_KAFKA_ATTACH="$DIR" "$broker" stop --dir "$DIR" --rm
  "$broker" status --dir "$DIR" >/dev/null || fail "stop of an attached cluster stopped it"
  say "AUTERITY_KAFKA_ATTACH: start printed the running cluster, stop left it running"
}

one_node() {
  start_cluster 1
  console_roundtrip 1
  attach_check
  topic --create --topic tx.in --partitions 2
  topic --create --topic tx.out --partitions 2
  tx_smoke tx.in tx.out
  stop_cluster
}

# True once metadata lists partitions and every one has 3 in-sync replicas.
isr_full() {
  local isrs
  isrs="$(kcat -b "$BOOTSTRAP" -L 2>/dev/null | grep 'isrs:')" || return 1
  ! grep -vq 'isrs: [0-9]*,[0-9]*,[0-9]*$' <<<"$isrs"
}

wait_full_isr() {
  local t="$1" deadline=$((SECONDS + isr_wait_s_max))
  until isr_full; do
    ((SECONDS < deadline)) || fail "ISRs not back to 3 replicas after ${isr_wait_s_max} s"
    sleep 0.2
  done
  say "every partition back to 3 in-sync replicas $(since "$t") after the restart began"
}

# rec-1 .. rec-N at a steady rate, so the producer is mid-stream when a node dies.
paced_records() {
  local i
  for ((i = 1; i <= fault_records; i++)); do
    echo "rec-$i"
    ((i % fault_records_per_tick)) || sleep 0.1
  done
}

three_nodes() {
  local t producer_pid got unique
  start_cluster 3
  console_roundtrip 3
  for name in tx.in tx.out tx2.in tx2.out fault; do
    topic --create --topic "$name" --partitions 3 --replication-factor 3 --config min.insync.replicas=2
  done
  tx_smoke tx.in tx.out

  # acks=all + idempotence: a record is acknowledged only once 2 replicas hold it; the kill must
  # cost latency, never a record, and never a duplicate.
  paced_records | kcat -P -b "$BOOTSTRAP" -t fault -X acks=all \
    -X enable.idempotence=true -X message.timeout.ms=120000 -X linger.ms=5 -X queue.buffering.max.messages=1000 \
    2>>"$DIR/smoke-producer.log" &
  producer_pid=$!
  sleep "$fault_kill_after_s"
  "$broker" kill-node 2 --dir "$DIR"
  t="$(now_ms)"
  wait "$producer_pid" || fail "producer lost records with node 2 down (see $DIR/smoke-producer.log)"
  say "producer finished $(since "$t") after the kill, every record acknowledged"
  got="$(kcat -C -b "$BOOTSTRAP" -t fault -o beginning -e -q -X isolation.level=read_committed | wc -l)"
  unique="$(kcat -C -b "$BOOTSTRAP" -t fault -o beginning -e -q | sort -u | wc -l)"
  [[ "$got" == "$fault_records" && "$unique" == "$fault_records" ]] ||
    fail "read $got records ($unique distinct), want $fault_records"
  say "read back $got records, $unique distinct, with node 2 down"

  tx_smoke tx2.in tx2.out
  say "transactions commit with node 2 down"

  t="$(now_ms)"
  "$broker" start-node 2 --dir "$DIR"
  wait_full_isr "$t"
  "$broker" status --dir "$DIR" >&2
  stop_cluster
}

t0="$(now_ms)"
"$broker" fetch
say "fetch: $(since "$t0")"
case "${1:-all}" in
  1) one_node ;;
  3) three_nodes ;;
  all) one_node; three_nodes ;;
  *) fail "usage: smoke.sh [1|3|all]" ;;
esac
say "all checks passed"
