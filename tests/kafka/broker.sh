#!/usr/bin/env bash
# A real Apache Kafka (KRaft) cluster on loopback for tests and benchmarks.
# See tests/kafka/README.md; `broker.sh --help` for the commands.
set -euo pipefail

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
readonly script_dir
readonly script_path="$script_dir/${BASH_SOURCE[0]##*/}"
readonly kafka_version="${AUTERITY_KAFKA_VERSION:-3.9.1}"
readonly cache_dir="${AUTERITY_KAFKA_CACHE:-$HOME/.cache/auterity/kafka-$kafka_version}"
readonly cache_marker="$cache_dir/.fetched"
readonly heap_max="${AUTERITY_KAFKA_HEAP:-512m}"
readonly start_timeout_s="${AUTERITY_KAFKA_START_TIMEOUT_S:-90}"
readonly stop_timeout_s="${AUTERITY_KAFKA_STOP_TIMEOUT_S:-30}"
readonly fetch_lock_timeout_s=600
readonly port_pick_attempts_max=100
readonly bind_retries_max=3
# Below Linux's ephemeral range (32768+), so outgoing connections never sit on our ports.
readonly port_range_lo=20000
readonly port_range_hi=32000
readonly ready_line='Kafka Server started'
# Short-lived JVMs (storage format, CLI tools): C1 only and serial GC start in about half the time.
readonly tool_jvm_opts=(-XX:TieredStopAtLevel=1 -XX:+UseSerialGC -Xshare:auto)

usage() {
  cat <<EOF
Usage: broker.sh COMMAND [OPTIONS]

A throwaway Apache Kafka $kafka_version cluster (KRaft, each node broker+controller) on 127.0.0.1.

Commands:
  fetch                       Download Kafka and its runtime jars from Maven Central into the
                              cache (once; later calls return at once). CI runs this to warm it.
  start [--nodes 1|3] [--dir DIR] [--fresh] [--port-base N] [--prop KEY=VALUE]... [--owner PID]
                              Format storage, start the nodes, wait until all are serving, then
                              print BOOTSTRAP=... and DIR=... on stdout (eval-able; all else
                              goes to stderr) and into DIR/bootstrap.env. DIR defaults to a new
                              mktemp dir; an existing DIR from an earlier start restarts that
                              cluster with its data, unless --fresh (stop it, delete it, start
                              a new one).
                              --port-base N: node i listens on N+2(i-1) (PLAINTEXT) and
                              N+2(i-1)+1 (CONTROLLER); default: free ports picked at random.
                              --prop: extra server.properties line for every node (repeatable).
                              --owner PID: stop the cluster when process PID exits.
  stop --dir DIR [--rm]       SIGTERM every node, SIGKILL any still up after ${stop_timeout_s} s;
                              --rm then deletes DIR.
  kill-node N --dir DIR       SIGKILL node N (fault injection).
  start-node N --dir DIR      Restart node N (after kill-node) and wait until it serves.
  status --dir DIR            One line per node; exit 0 if all run, 3 otherwise.
  env --dir DIR               Print BOOTSTRAP=... and DIR=... again.
  run-class CLASS [ARGS...]   Run a Kafka main class on the cached classpath, e.g.
                              org.apache.kafka.tools.TopicCommand --bootstrap-server ... --list
  classpath                   Print the java classpath of the cache.

Environment:
  AUTERITY_KAFKA_CACHE        jar cache (default \$HOME/.cache/auterity/kafka-<version>)
  AUTERITY_KAFKA_VERSION      Kafka version (default 3.9.1)
  AUTERITY_KAFKA_HEAP         max heap per node (default 512m)
  AUTERITY_KAFKA_JVM_OPTS     extra JVM options for every node
  AUTERITY_KAFKA_START_TIMEOUT_S  readiness timeout per start (default 90)
  AUTERITY_KAFKA_STOP_TIMEOUT_S   SIGTERM grace before SIGKILL (default 30)
  AUTERITY_KAFKA_ATTACH       DIR of a running cluster: 'start' starts nothing and prints that
                              cluster's BOOTSTRAP/DIR; 'stop --dir' of it leaves it running.
                              For running several programs that start their own broker (the
                              tests' fixture, kafka_bench) one after another on one broker.
EOF
}

log() { printf 'broker.sh: %s\n' "$*" >&2; }
now_ms() { local t="${EPOCHREALTIME/./}"; echo $((t / 1000)); }
since() { local ms=$(($(now_ms) - $1)); printf '%d.%d s' $((ms / 1000)) $((ms % 1000 / 100)); }
die() { log "error: $*"; exit 1; }

classpath() { printf '%s/*' "$cache_dir"; }

# --- fetch ------------------------------------------------------------------------------------

pom_digest() { sha256sum "$script_dir/pom.xml" | cut -d' ' -f1; }

cache_is_complete() {
  [[ -f "$cache_marker" ]] && [[ "$(cat "$cache_marker")" == "$kafka_version $(pom_digest)" ]]
}

cmd_fetch() {
  cache_is_complete && return 0
  command -v mvn >/dev/null || die "mvn not found (Debian: apt-get install maven)"
  command -v java >/dev/null || die "java not found (Debian: apt-get install default-jre-headless)"
  mkdir -p "$(dirname "$cache_dir")"
  # Parallel test processes may all fetch on a cold cache: one downloads, the others wait.
  exec 9>"$cache_dir.lock"
  flock -w "$fetch_lock_timeout_s" 9 || die "timed out waiting for $cache_dir.lock"
  if cache_is_complete; then exec 9>&-; return 0; fi

  local staging="$cache_dir.partial.$$" started
  started="$(now_ms)"
  rm -rf "$staging"
  mkdir -p "$staging"
  log "fetching Kafka $kafka_version from Maven Central into $cache_dir"
  if ! mvn -q -B -f "$script_dir/pom.xml" -Dkafka.version="$kafka_version" \
      dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$staging" \
      >"$staging.log" 2>&1; then
    tail -n 40 "$staging.log" >&2
    rm -rf "$staging"
    die "mvn failed (full log: $staging.log)"
  fi
  [[ -f "$staging/kafka_2.13-$kafka_version.jar" ]] || die "kafka_2.13-$kafka_version.jar missing after mvn"
  printf '%s %s\n' "$kafka_version" "$(pom_digest)" >"$staging/.fetched"
  rm -rf "$cache_dir" "$staging.log"
  mv "$staging" "$cache_dir"
  log "fetched $(find "$cache_dir" -name '*.jar' | wc -l) jars ($(du -sh "$cache_dir" | cut -f1)) in $(since "$started")"
  exec 9>&-
}

# --- cluster state ----------------------------------------------------------------------------
# DIR/cluster.env holds nodes, port_base and cluster_id; per node i: DIR/node<i>/server.properties,
# DIR/node<i>/data (log.dirs), DIR/node<i>.log, DIR/node<i>.pid.

broker_port() { echo $((port_base + 2 * ($1 - 1))); }
controller_port() { echo $((port_base + 2 * ($1 - 1) + 1)); }

bootstrap_servers() {
  local i out=""
  for ((i = 1; i <= nodes; i++)); do out+="${out:+,}127.0.0.1:$(broker_port "$i")"; done
  echo "$out"
}

load_cluster() {
  [[ -n "${dir:-}" ]] || die "--dir DIR is required"
  [[ -f "$dir/cluster.env" ]] || die "$dir is not a broker.sh cluster (no cluster.env)"
  dir="$(cd "$dir" && pwd)"
  # shellcheck source=/dev/null
  source "$dir/cluster.env"
  all_nodes
}

# BOOTSTRAP is only digits, dots, colons and commas, so it needs no quoting (%q would escape
# the commas and a caller reading the line literally would get backslashes).
print_env() { printf 'BOOTSTRAP=%s\nDIR=%q\n' "$(bootstrap_servers)" "$dir"; }

# Pid of node $1 if it is running and is really that node's JVM (pids get reused).
node_pid() {
  local pid_file="$dir/node$1.pid" pid
  [[ -f "$pid_file" ]] || return 1
  pid="$(cat "$pid_file")"
  [[ -r "/proc/$pid/cmdline" ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$dir/node$1/server.properties" || return 1
  echo "$pid"
}

# --- ports ------------------------------------------------------------------------------------

# Every local TCP port some socket is bound to (listening or connected), from /proc, so no
# extra tool (ss, python) is needed on a fresh machine.
bound_ports() {
  local _sl local_addr _rest
  for f in /proc/net/tcp /proc/net/tcp6; do
    [[ -r "$f" ]] || continue
    while read -r _sl local_addr _rest; do
      [[ "$local_addr" == *:* ]] || continue
      echo $((16#${local_addr##*:}))
    done < <(tail -n +2 "$f")
  done
}

pick_port_base() {
  local want=$((2 * nodes)) attempt base p ok
  local -A taken=()
  while read -r p; do taken[$p]=1; done < <(bound_ports)
  for ((attempt = 0; attempt < port_pick_attempts_max; attempt++)); do
    base=$((port_range_lo + (RANDOM * 32768 + RANDOM) % (port_range_hi - port_range_lo - want)))
    ok=1
    for ((p = base; p < base + want; p++)); do
      if [[ -n "${taken[$p]:-}" ]]; then ok=0; break; fi
    done
    if ((ok)); then echo "$base"; return 0; fi
  done
  die "no $want free consecutive ports in $port_range_lo-$port_range_hi"
}

# --- start ------------------------------------------------------------------------------------

new_cluster_id() {
  # Same shape as Kafka's Uuid.randomUuid(): 16 random bytes, URL-safe base64, no padding,
  # never starting with '-' (it would read as a CLI option).
  local id
  while :; do
    id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | cut -c1-22)"
    [[ "$id" != -* ]] && break
  done
  echo "$id"
}

write_server_properties() {
  local i="$1" rf isr voters="" j
  if ((nodes == 1)); then rf=1 isr=1; else rf=3 isr=2; fi
  for ((j = 1; j <= nodes; j++)); do voters+="${voters:+,}$j@127.0.0.1:$(controller_port "$j")"; done
  mkdir -p "$dir/node$i/data"
  {
    cat <<EOF
# Written by tests/kafka/broker.sh
process.roles=broker,controller
node.id=$i
controller.quorum.voters=$voters
listeners=PLAINTEXT://127.0.0.1:$(broker_port "$i"),CONTROLLER://127.0.0.1:$(controller_port "$i")
advertised.listeners=PLAINTEXT://127.0.0.1:$(broker_port "$i")
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
log.dirs=$dir/node$i/data
num.partitions=1
default.replication.factor=$rf
min.insync.replicas=$isr
offsets.topic.replication.factor=$rf
transaction.state.log.replication.factor=$rf
transaction.state.log.min.isr=$isr
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
EOF
    if ((${#extra_props[@]})); then
      echo "# --prop"
      printf '%s\n' "${extra_props[@]}"
    fi
  } >"$dir/node$i/server.properties"
}

format_node() {
  local i="$1"
  if ! java "${tool_jvm_opts[@]}" -cp "$(classpath)" -Dlog4j.configuration="file:$script_dir/tools-log4j.properties" \
      kafka.tools.StorageTool format --cluster-id "$cluster_id" \
      --config "$dir/node$i/server.properties" >"$dir/node$i.format.log" 2>&1; then
    cat "$dir/node$i.format.log" >&2
    return 1
  fi
}

# Launch node $1 in the background (own session, so the caller's Ctrl-C or process group kill
# does not take it down half way through a test) and record where its log starts.
launch_node() {
  local i="$1"
  local log_file="$dir/node$i.log"
  touch "$log_file"
  stat -c %s "$log_file" >"$dir/node$i.logstart"
  # shellcheck disable=SC2086  # AUTERITY_KAFKA_JVM_OPTS is a list of options
  setsid java -Xms"$heap_max" -Xmx"$heap_max" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true \
    ${AUTERITY_KAFKA_JVM_OPTS:-} \
    -Dlog4j.configuration="file:$script_dir/broker-log4j.properties" -Dauterity.kafka.log="$log_file" \
    -cp "$(classpath)" kafka.Kafka "$dir/node$i/server.properties" \
    </dev/null >>"$log_file" 2>&1 &
  local pid=$!
  echo "$pid" >"$dir/node$i.pid"
  # Until setsid has exec'd java the pid's cmdline is bash's, and node_pid would not know it.
  local deadline=$((SECONDS + 10))
  while kill -0 "$pid" 2>/dev/null && ! node_pid "$i" >/dev/null && ((SECONDS < deadline)); do
    sleep 0.02
  done
}

node_is_ready() {
  local i="$1" from
  from="$(cat "$dir/node$i.logstart")"
  tail -c +"$((from + 1))" "$dir/node$i.log" | grep -qF "$ready_line" || return 1
  (exec 3<>"/dev/tcp/127.0.0.1/$(broker_port "$i")") 2>/dev/null
}

node_log_since_start() {
  local i="$1" from
  from="$(cat "$dir/node$i.logstart")"
  tail -c +"$((from + 1))" "$dir/node$i.log"
}

# Wait until every node in "$@" serves. Returns 0, or 1 (timeout / a node died) after printing
# the failing node's log tail; returns 2 instead if a node could not bind its port.
wait_ready() {
  local deadline=$((SECONDS + start_timeout_s)) i pending
  while :; do
    pending=()
    for i in "$@"; do
      if ! node_pid "$i" >/dev/null; then
        local bind_error
        if bind_error="$(node_log_since_start "$i" | grep -m1 -E 'BindException|Address already in use')"; then
          log "node $i could not bind its ports: $bind_error"
          return 2
        fi
        log "node $i exited during startup; last lines of $dir/node$i.log:"
        node_log_since_start "$i" | tail -n 40 >&2
        return 1
      fi
      node_is_ready "$i" || pending+=("$i")
    done
    ((${#pending[@]} == 0)) && return 0
    if ((SECONDS >= deadline)); then
      for i in "${pending[@]}"; do
        log "node $i not ready after ${start_timeout_s} s; last lines of $dir/node$i.log:"
        node_log_since_start "$i" | tail -n 40 >&2
      done
      return 1
    fi
    sleep 0.2
  done
}

# Stop the nodes in "$@": SIGTERM all at once (a KRaft quorum must stay up while brokers do
# their controlled shutdown), then SIGKILL whatever is left after the grace period.
stop_nodes() {
  local i pid deadline=$((SECONDS + stop_timeout_s))
  local -A pids=()
  for i in "$@"; do
    if pid="$(node_pid "$i")"; then pids[$i]="$pid"; kill -TERM "$pid" 2>/dev/null || true; fi
  done
  while ((${#pids[@]})) && ((SECONDS < deadline)); do
    for i in "${!pids[@]}"; do kill -0 "${pids[$i]}" 2>/dev/null || unset "pids[$i]"; done
    ((${#pids[@]})) && sleep 0.2
  done
  for i in "${!pids[@]}"; do
    log "node $i (pid ${pids[$i]}) still up after ${stop_timeout_s} s; SIGKILL"
    kill -KILL "${pids[$i]}" 2>/dev/null || true
    wait_gone "${pids[$i]}"
  done
  for i in "$@"; do rm -f "$dir/node$i.pid"; done
}

wait_gone() { while kill -0 "$1" 2>/dev/null; do sleep 0.05; done; }

all_nodes() {
  node_ids=()
  local i
  for ((i = 1; i <= nodes; i++)); do node_ids+=("$i"); done
}

start_watcher() {
  local owner="$1"
  [[ -d "/proc/$owner" ]] || die "--owner $owner: no such process"
  setsid bash "$script_path" _watch --dir "$dir" --owner "$owner" </dev/null >>"$dir/watch.log" 2>&1 &
  echo $! >"$dir/watch.pid"
}

stop_watcher() {
  local pid
  [[ -f "$dir/watch.pid" ]] || return 0
  pid="$(cat "$dir/watch.pid")"
  rm -f "$dir/watch.pid"
  [[ "$pid" == "$$" ]] && return 0
  if [[ -r "/proc/$pid/cmdline" ]] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "_watch --dir $dir "; then
    kill -TERM "$pid" 2>/dev/null || true
  fi
}

abandon_start() {
  stop_nodes "${node_ids[@]}"
  stop_watcher
}

cmd_start() {
  if [[ -n "${AUTERITY_KAFKA_ATTACH:-}" ]]; then
    dir="$AUTERITY_KAFKA_ATTACH"
    load_cluster
    cmd_status --dir "$dir" >&2 || die "AUTERITY_KAFKA_ATTACH: the cluster in $dir is not running"
    log "attached to the running cluster in $dir (AUTERITY_KAFKA_ATTACH)"
    print_env
    return
  fi
  nodes=1 port_base="" owner=""
  local given_port_base="" new_cluster=0 fresh=0 attempt rc i started
  started="$(now_ms)"
  extra_props=()
  while (($#)); do
    case "$1" in
      --nodes) nodes="${2:?--nodes needs 1 or 3}"; shift 2 ;;
      --dir) dir="${2:?--dir needs a path}"; shift 2 ;;
      --port-base) given_port_base="${2:?--port-base needs a port}"; shift 2 ;;
      --prop) extra_props+=("${2:?--prop needs KEY=VALUE}"); shift 2 ;;
      --owner) owner="${2:?--owner needs a pid}"; shift 2 ;;
      --fresh) fresh=1; shift ;;
      *) die "start: unknown option $1 (see --help)" ;;
    esac
  done
  [[ "$nodes" == 1 || "$nodes" == 3 ]] || die "--nodes must be 1 or 3"
  all_nodes
  if [[ -n "$given_port_base" ]]; then
    if ! [[ "$given_port_base" =~ ^[0-9]+$ ]] || ((given_port_base < 1024 || given_port_base > 65535 - 6)); then
      die "--port-base must be a port number (1024-65529)"
    fi
  fi
  cmd_fetch

  if ((fresh)) && [[ -n "${dir:-}" && -f "$dir/cluster.env" ]]; then
    log "--fresh: stopping and deleting the cluster in $dir"
    (cmd_stop --dir "$dir" --rm)
  fi
  if [[ -n "${dir:-}" && -f "$dir/cluster.env" ]]; then
    # Restart a stopped cluster with its data; its shape was fixed when it was formatted.
    local want_nodes="$nodes"
    load_cluster
    [[ "$want_nodes" == "$nodes" ]] || die "$dir holds a $nodes-node cluster (--nodes $want_nodes)"
    [[ -z "$given_port_base" || "$given_port_base" == "$port_base" ]] ||
      die "$dir listens on port base $port_base (--port-base $given_port_base)"
    ((${#extra_props[@]} == 0)) || die "--prop only applies when a cluster is created; edit $dir/node*/server.properties"
    for i in "${node_ids[@]}"; do
      if node_pid "$i" >/dev/null; then die "node $i of $dir is already running"; fi
    done
  else
    if [[ -z "${dir:-}" ]]; then
      dir="$(mktemp -d "${TMPDIR:-/tmp}/auterity-kafka.XXXXXX")"
    else
      mkdir -p "$dir"
      [[ -z "$(ls -A "$dir")" ]] || die "$dir is neither empty nor a broker.sh cluster"
    fi
    dir="$(cd "$dir" && pwd)"
    new_cluster=1
  fi

  # From here on nothing may outlive a failed or interrupted start (e.g. a ctest timeout).
  # (The --owner watcher starts once cluster.env exists: it reads the cluster from it.)
  local watching=0
  trap 'log "interrupted; stopping $dir"; abandon_start; exit 130' INT TERM HUP

  for ((attempt = 1; ; attempt++)); do
    if ((new_cluster)); then
      port_base="${given_port_base:-$(pick_port_base)}"
      cluster_id="$(new_cluster_id)"
      printf 'nodes=%q\nport_base=%q\ncluster_id=%q\n' "$nodes" "$port_base" "$cluster_id" >"$dir/cluster.env"
      log "formatting $nodes node(s) in $dir (cluster id $cluster_id)"
      local format_pids=()
      for i in "${node_ids[@]}"; do
        write_server_properties "$i"
        format_node "$i" & format_pids+=("$!")
      done
      for i in "${format_pids[@]}"; do
        if ! wait "$i"; then abandon_start; die "formatting storage failed"; fi
      done
    fi
    if [[ -n "$owner" ]] && ((!watching)); then start_watcher "$owner"; watching=1; fi
    log "starting $nodes node(s), PLAINTEXT on $(bootstrap_servers)"
    for i in "${node_ids[@]}"; do launch_node "$i"; done
    rc=0
    wait_ready "${node_ids[@]}" || rc=$?
    ((rc == 0)) && break
    stop_nodes "${node_ids[@]}"
    if ((rc == 2 && new_cluster)) && [[ -z "$given_port_base" ]] && ((attempt < bind_retries_max)); then
      log "ports taken meanwhile; retrying with other ports"
      for i in "${node_ids[@]}"; do rm -rf "$dir/node$i" "$dir/node$i".*; done
      continue
    fi
    abandon_start
    die "cluster in $dir did not start"
  done
  trap - INT TERM HUP

  log "$nodes node(s) ready in $(since "$started")"
  print_env >"$dir/bootstrap.env"
  print_env
}

# --- other commands ---------------------------------------------------------------------------

parse_dir_opts() {
  remove_dir=0
  while (($#)); do
    case "$1" in
      --dir) dir="${2:?--dir needs a path}"; shift 2 ;;
      --rm) remove_dir=1; shift ;;
      --owner) owner="${2:?}"; shift 2 ;;
      *) die "unknown option $1 (see --help)" ;;
    esac
  done
  load_cluster
}

node_arg() {
  [[ "${1:-}" =~ ^[0-9]+$ ]] || die "expected a node number, got '${1:-}'"
  ((${1} >= 1 && ${1} <= nodes)) || die "node $1 does not exist (cluster has $nodes)"
}

cmd_stop() {
  local started
  started="$(now_ms)"
  parse_dir_opts "$@"
  if [[ -n "${AUTERITY_KAFKA_ATTACH:-}" && "$dir" -ef "$AUTERITY_KAFKA_ATTACH" ]]; then
    log "left $dir running (AUTERITY_KAFKA_ATTACH)"
    return
  fi
  stop_watcher
  stop_nodes "${node_ids[@]}"
  log "stopped $dir in $(since "$started")"
  if ((remove_dir)); then rm -rf "$dir"; fi
}

cmd_kill_node() {
  local n="${1:-}" pid
  shift || true
  parse_dir_opts "$@"
  node_arg "$n"
  pid="$(node_pid "$n")" || die "node $n is not running"
  kill -KILL "$pid"
  wait_gone "$pid"
  rm -f "$dir/node$n.pid"
  log "killed node $n (pid $pid)"
}

cmd_start_node() {
  local n="${1:-}" started
  started="$(now_ms)"
  shift || true
  parse_dir_opts "$@"
  node_arg "$n"
  if node_pid "$n" >/dev/null; then die "node $n is already running"; fi
  launch_node "$n"
  if ! wait_ready "$n"; then
    stop_nodes "$n"
    die "node $n did not start"
  fi
  log "node $n ready in $(since "$started")"
}

cmd_status() {
  parse_dir_opts "$@"
  local i pid down=0
  for i in "${node_ids[@]}"; do
    if pid="$(node_pid "$i")"; then
      echo "node$i running pid=$pid broker=127.0.0.1:$(broker_port "$i") controller=127.0.0.1:$(controller_port "$i")"
    else
      echo "node$i stopped broker=127.0.0.1:$(broker_port "$i") controller=127.0.0.1:$(controller_port "$i")"
      down=1
    fi
  done
  ((down == 0)) || return 3
}

# Background watcher behind `start --owner PID`.
cmd_watch() {
  parse_dir_opts "$@"
  while kill -0 "$owner" 2>/dev/null; do sleep 1; done
  log "owner $owner exited; stopping $dir"
  stop_watcher
  stop_nodes "${node_ids[@]}"
}

cmd_run_class() {
  (($#)) || die "run-class needs a main class"
  cmd_fetch
  exec java "${tool_jvm_opts[@]}" -Xmx256m -cp "$(classpath)" -Dlog4j.configuration="file:$script_dir/tools-log4j.properties" "$@"
}

main() {
  local command="${1:-}"
  shift || true
  case "$command" in
    fetch) cmd_fetch; log "cache ready: $cache_dir" ;;
    start) cmd_start "$@" ;;
    stop) cmd_stop "$@" ;;
    kill-node) cmd_kill_node "$@" ;;
    start-node) cmd_start_node "$@" ;;
    status) cmd_status "$@" ;;
    env) parse_dir_opts "$@"; print_env ;;
    run-class) cmd_run_class "$@" ;;
    classpath) cmd_fetch; classpath; echo ;;
    _watch) cmd_watch "$@" ;;
    -h | --help | help) usage ;;
    "") usage >&2; exit 2 ;;
    *) log "unknown command '$command'"; usage >&2; exit 2 ;;
  esac
}

main "$@"
