#!/usr/bin/env bash
# A secured single-node Kafka (KRaft) on loopback for the ops tests: SASL_SSL (PLAIN, SCRAM-SHA-256,
# SCRAM-SHA-512), SSL with client certificates (mutual TLS), ACLs on (StandardAuthorizer), and a
# throwaway CA made with openssl. Kafka's jars come from tests/kafka/broker.sh's cache.
#
#   secure_broker.sh start DIR    make certificates, format (SCRAM users), start; prints
#                                 SASL_BOOTSTRAP=..., SSL_BOOTSTRAP=... (also in DIR/env)
#   secure_broker.sh stop DIR     stop the node (SIGTERM, SIGKILL after 20 s)
#   secure_broker.sh acls DIR ARGS...   org.apache.kafka's kafka-acls (AclCommand) as the admin
#
# Principals: User:admin (PLAIN, admin-secret; super user), User:engine (SCRAM-SHA-256/512 and
# PLAIN with engine-secret; the client certificate DIR/engine.pem, CN=engine, maps to it too),
# User:noacl (SCRAM-SHA-512, noacl-secret; no permission at all). DIR/ca.pem is the CA that
# signed the broker; DIR/rogue-ca.pem a CA that did not. DIR/admin.properties: the admin's Java
# client settings. The controller listener is PLAINTEXT on loopback, so User:ANONYMOUS (the
# node talking to itself) is a super user too; no client listener is plaintext.
set -euo pipefail

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
broker_sh="$script_dir/../kafka/broker.sh"
log() { printf 'secure_broker.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

make_certs() {
  local d="$1"
  (
    cd "$d"
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=auterity test CA" \
      -keyout ca.key -out ca.pem 2>/dev/null
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=rogue CA" \
      -keyout rogue-ca.key -out rogue-ca.pem 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >broker.ext
    openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout broker.key -out broker.csr \
      2>/dev/null
    openssl x509 -req -in broker.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
      -extfile broker.ext -out broker.pem 2>/dev/null
    openssl pkcs12 -export -in broker.pem -inkey broker.key -certfile ca.pem -name broker \
      -passout pass:changeit -out broker.p12
    openssl req -newkey rsa:2048 -nodes -subj "/CN=engine" -keyout engine.key -out engine.csr \
      2>/dev/null
    openssl x509 -req -in engine.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
      -out engine.pem 2>/dev/null
  )
}

cmd_start() {
  local d="${1:?start DIR}"
  mkdir -p "$d"
  d="$(cd "$d" && pwd)"
  "$broker_sh" fetch
  make_certs "$d"
  local sasl_port ssl_port ctl_port
  sasl_port="$(free_port)"
  ssl_port="$(free_port)"
  ctl_port="$(free_port)"
  mkdir -p "$d/data"
  cat >"$d/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$ctl_port
listeners=SASL_SSL://127.0.0.1:$sasl_port,SSL://127.0.0.1:$ssl_port,CONTROLLER://127.0.0.1:$ctl_port
advertised.listeners=SASL_SSL://127.0.0.1:$sasl_port,SSL://127.0.0.1:$ssl_port
listener.security.protocol.map=SASL_SSL:SASL_SSL,SSL:SSL,CONTROLLER:PLAINTEXT
inter.broker.listener.name=SASL_SSL
controller.listener.names=CONTROLLER
sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=PLAIN
listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="admin" password="admin-secret" user_admin="admin-secret" user_engine="engine-secret";
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
ssl.keystore.type=PKCS12
ssl.keystore.location=$d/broker.p12
ssl.keystore.password=changeit
ssl.key.password=changeit
ssl.truststore.type=PEM
ssl.truststore.location=$d/ca.pem
listener.name.ssl.ssl.client.auth=required
ssl.principal.mapping.rules=RULE:^CN=([^,]+).*\$/\$1/,DEFAULT
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
super.users=User:admin;User:ANONYMOUS
allow.everyone.if.no.acl.found=false
log.dirs=$d/data
num.partitions=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
PROPS
  cat >"$d/admin.properties" <<PROPS
security.protocol=SASL_SSL
sasl.mechanism=PLAIN
sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="admin" password="admin-secret";
ssl.truststore.type=PEM
ssl.truststore.location=$d/ca.pem
PROPS
  local cp
  cp="$("$broker_sh" classpath)"
  java -XX:TieredStopAtLevel=1 -XX:+UseSerialGC -cp "$cp" \
    -Dlog4j.configuration="file:$script_dir/../kafka/tools-log4j.properties" \
    kafka.tools.StorageTool format --cluster-id "$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | cut -c1-22 | sed 's/^-/A/')" \
    --config "$d/server.properties" \
    --add-scram 'SCRAM-SHA-256=[name=engine,password=engine-secret]' \
    --add-scram 'SCRAM-SHA-512=[name=engine,password=engine-secret]' \
    --add-scram 'SCRAM-SHA-512=[name=noacl,password=noacl-secret]' >"$d/format.log" 2>&1 ||
    { cat "$d/format.log" >&2; die "storage format failed"; }
  setsid java -Xms384m -Xmx384m -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j.configuration="file:$script_dir/../kafka/broker-log4j.properties" \
    -Dauterity.kafka.log="$d/node.log" -cp "$cp" kafka.Kafka "$d/server.properties" \
    </dev/null >>"$d/node.log" 2>&1 &
  echo $! >"$d/node.pid"
  local deadline=$((SECONDS + 90))
  until grep -qF 'Kafka Server started' "$d/node.log" 2>/dev/null; do
    kill -0 "$(cat "$d/node.pid")" 2>/dev/null || { tail -n 40 "$d/node.log" >&2; die "broker exited"; }
    ((SECONDS < deadline)) || { tail -n 40 "$d/node.log" >&2; die "broker not ready in 90 s"; }
    sleep 0.3
  done
  printf 'SASL_BOOTSTRAP=127.0.0.1:%s\nSSL_BOOTSTRAP=127.0.0.1:%s\nDIR=%s\n' \
    "$sasl_port" "$ssl_port" "$d" | tee "$d/env"
}

cmd_stop() {
  local d="${1:?stop DIR}" pid
  [[ -f "$d/node.pid" ]] || return 0
  pid="$(cat "$d/node.pid")"
  if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "$d/server.properties"; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$d/node.pid"
}

cmd_acls() {
  local d="${1:?acls DIR ARGS}"
  shift
  java -XX:TieredStopAtLevel=1 -XX:+UseSerialGC -cp "$("$broker_sh" classpath)" \
    -Dlog4j.configuration="file:$script_dir/../kafka/tools-log4j.properties" \
    kafka.admin.AclCommand "$@"
}

case "${1:-}" in
  start) shift; cmd_start "$@" ;;
  stop) shift; cmd_stop "$@" ;;
  acls) shift; cmd_acls "$@" ;;
  *) die "usage: secure_broker.sh start|stop|acls DIR" ;;
esac
