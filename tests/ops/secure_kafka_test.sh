#!/usr/bin/env bash
# The engine on a secured Kafka (tests/ops/secure_broker.sh): SASL_SSL with SCRAM-SHA-512,
# SCRAM-SHA-256 and PLAIN, mutual TLS, ACLs on with exactly the README's kafka-acls lines, all
# settings from a configuration file with the password by reference. A wrong password, an
# untrusted broker certificate, a refused client certificate and a missing ACL each stop the
# engine with exit 2 and a message naming the cause.
#   secure_kafka_test.sh AUTERITY_BIN README
set -euo pipefail

bin="${1:?auterity binary}"
readme="${2:?README.md}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
broker="$here/secure_broker.sh"
work="$(mktemp -d "${TMPDIR:-/tmp}/auterity-secure.XXXXXX")"
failures=0
passed=0
cleanup() { "$broker" stop "$work/kafka" || true; rm -rf "$work"; }
trap cleanup EXIT

check() {  # check NAME COND...: counts and reports one assertion
  local name="$1"
  shift
  if "$@"; then
    passed=$((passed + 1))
    echo "ok: $name"
  else
    failures=$((failures + 1))
    echo "FAILED: $name; the command printed:"
    sed 's/^/    /' <<<"${out:-}"
  fi
}
contains() { grep -qF -- "$2" <<<"$1"; }
lacks() { ! grep -qF -- "$2" <<<"$1"; }

eval "$("$broker" start "$work/kafka" | grep -E '^(SASL_BOOTSTRAP|SSL_BOOTSTRAP|DIR)=')"

secret=engine-secret
export AUTERITY_TEST_KAFKA_PASSWORD="$secret"
write_config() {  # write_config FILE MECHANISM CA [BOOTSTRAP PROTOCOL]
  cat >"$1" <<TOML
data = "$work/state"
instance = "a"
[kafka]
bootstrap = "${4:-$SASL_BOOTSTRAP}"
topic_prefix = "t."
[kafka.properties]
"security.protocol" = "${5:-SASL_SSL}"
"ssl.ca.location" = "$3"
TOML
  if [[ -n "$2" ]]; then
    cat >>"$1" <<TOML
"sasl.mechanism" = "$2"
"sasl.username" = "engine"
"sasl.password" = "env:AUTERITY_TEST_KAFKA_PASSWORD"
TOML
  fi
}
write_config "$work/scram512.toml" SCRAM-SHA-512 "$DIR/ca.pem"
# The cluster's admin (PLAIN, superuser on the test broker) creates the topics with `topics
# apply`, its SASL settings from a configuration file like the engine's.
export AUTERITY_TEST_ADMIN_PASSWORD=admin-secret
cat >"$work/admin.toml" <<TOML
[kafka]
bootstrap = "$SASL_BOOTSTRAP"
topic_prefix = "t."
[kafka.properties]
"security.protocol" = "SASL_SSL"
"ssl.ca.location" = "$DIR/ca.pem"
"sasl.mechanism" = "PLAIN"
"sasl.username" = "admin"
"sasl.password" = "env:AUTERITY_TEST_ADMIN_PASSWORD"
TOML
set +e
out="$("$bin" topics apply --config "$work/admin.toml" --partitions 2 --replication 1 2>&1)"
rc=$?
set -e
check "topics apply over SASL_SSL from the config: exit 0" test "$rc" -eq 0
check "topics apply: created the prefixed topics" contains "$out" "created t.executions"
write_config "$work/scram256.toml" SCRAM-SHA-256 "$DIR/ca.pem"
write_config "$work/plain.toml" PLAIN "$DIR/ca.pem"
write_config "$work/rogue.toml" SCRAM-SHA-512 "$DIR/rogue-ca.pem"
write_config "$work/nocert.toml" "" "$DIR/ca.pem" "$SSL_BOOTSTRAP" SSL
cp "$work/nocert.toml" "$work/mtls.toml"
printf '"ssl.certificate.location" = "%s"\n"ssl.key.location" = "%s"\n' \
  "$DIR/engine.pem" "$DIR/engine.key" >>"$work/mtls.toml"

run_engine() {  # run_engine CONFIG [ENV...]: `run --until-quiet`; sets out and rc
  local cfg="$1"
  shift
  set +e
  out="$(env "$@" timeout 120 "$bin" run --config "$cfg" --until-quiet 2>&1)"
  rc=$?
  set -e
}

# 1. No ACLs yet: the engine's principal is authenticated but may not use the topics.
run_engine "$work/scram512.toml"
check "missing ACL: exit 2" test "$rc" -eq 2
check "missing ACL: names the topic and the missing permission" \
  contains "$out" "Kafka refused to describe topic t.ingress: the principal lacks Describe, Read and Write"

# 2. The README's kafka-acls lines, as written.
acl_script="$(awk '/<!-- kafka-acls begin -->/{on=1; next} /<!-- kafka-acls end -->/{on=0} on && !/^```/' "$readme")"
check "README has three kafka-acls commands" test "$(grep -c '^kafka-acls.sh' <<<"$acl_script")" -eq 3
kafka-acls.sh() { "$broker" acls "$DIR" "$@" >/dev/null; }
(
  BOOTSTRAP="$SASL_BOOTSTRAP" PRINCIPAL=User:engine PREFIX=t.
  cd "$DIR"
  eval "$acl_script"
)

# 3. Wrong password, untrusted broker certificate, refused client certificate.
run_engine "$work/scram512.toml" AUTERITY_TEST_KAFKA_PASSWORD=wrong
check "wrong password: exit 2" test "$rc" -eq 2
check "wrong password: says authentication failed" contains "$out" "Kafka authentication failed"
check "wrong password: names the mechanism" contains "$out" "SCRAM-SHA-512"
run_engine "$work/rogue.toml"
check "untrusted broker certificate: exit 2" test "$rc" -eq 2
check "untrusted broker certificate: says so" contains "$out" "certificate verify failed"
run_engine "$work/nocert.toml"
check "no client certificate on mutual TLS: exit 2" test "$rc" -eq 2
check "no client certificate: says the broker refused the handshake" \
  contains "$out" "Kafka TLS handshake refused"

# 4. End to end over SASL_SSL: publish, start over each mechanism, run until quiet.
cat >"$work/hello.json" <<'JSON'
{"workflow": "hello", "version": 1, "steps": [
  {"id": "greet", "kind": "task", "action": "transform", "input": {"text": "hello"}}]}
JSON
submit() {
  set +e
  out="$("$bin" "$@" 2>&1)"
  rc=$?
  set -e
}
submit publish --config "$work/scram512.toml" --tenant acme "$work/hello.json"
check "publish over SCRAM-SHA-512" test "$rc" -eq 0
i=0
for cfg in scram512 scram256 plain; do
  i=$((i + 1))
  submit start --config "$work/$cfg.toml" --tenant acme --workflow hello --id "run-$i"
  check "start over $cfg (a transactional write)" test "$rc" -eq 0
done
run_engine "$work/scram512.toml"
check "engine over SASL_SSL: exit 0" test "$rc" -eq 0
check "engine over SASL_SSL: three executions succeeded" contains "$out" " succeeded 3"
check "the password is never printed" lacks "$out" "$secret"

# 5. Mutual TLS: the certificate's CN=engine is the same principal, so the same ACLs.
submit start --config "$work/mtls.toml" --tenant acme --workflow hello --id run-mtls
check "start over mutual TLS" test "$rc" -eq 0
rm -rf "$work/state"
run_engine "$work/mtls.toml"
check "engine over mutual TLS: exit 0" test "$rc" -eq 0
check "engine over mutual TLS: the fourth execution succeeded" contains "$out" " succeeded 4"

# 5a. The gateway over SASL_SSL: its replica reads the executions topic with the configured
# properties, and answers a read of an execution the engine ran.
key="$("$bin" keys create --data "$work/gw" --tenant acme --role auditor | tail -n 1)"
"$bin" gateway --config "$work/scram512.toml" --instance gw --data "$work/gw" \
  --http 127.0.0.1:0 >"$work/gw.log" 2>&1 &
gateway=$!
for _ in $(seq 1 300); do grep -q "read replica caught up" "$work/gw.log" && break; sleep 0.1; done
port="$(sed -n 's/.*HTTP API on port \([0-9]*\).*/\1/p' "$work/gw.log" | head -n 1)"
set +e
out="$(curl -s -H "Authorization: Bearer $key" "http://127.0.0.1:${port:-1}/v1/tenants/acme/executions/run-mtls" 2>&1)"
set -e
kill -TERM "$gateway"
wait "$gateway" || true
check "gateway over SASL_SSL: its replica caught up" contains "$(cat "$work/gw.log")" "read replica caught up"
check "gateway over SASL_SSL: reads an execution the engine ran" contains "$out" '"status":"succeeded"'
check "gateway: the password is never printed" lacks "$(cat "$work/gw.log")" "$secret"

# 5b. `replay verify` over SASL_SSL: the auditor's reader gets the configured properties.
submit replay verify --config "$work/mtls.toml" --kafka "$SSL_BOOTSTRAP" --topic-prefix t. \
  --data "$work/state" --no-progress
check "replay verify over mutual TLS: exit 0 (chains and state verified)" test "$rc" -eq 0

# 5c. `status --kafka` over SASL_SSL: the configured properties reach its admin client and
# reader; the engine's principal may describe its groups and read their offsets.
submit status --config "$work/scram512.toml" --json
check "status over SCRAM-SHA-512: exit 0" test "$rc" -eq 0
check "status: the orchestrator group's committed ingress, drained" \
  python3 -c 'import json, sys
g = {g["group"]: g for g in json.loads(sys.argv[1])["groups"]}["auterity.orchestrator"]
parts = [p for p in g["partitions"] if p["topic"] == "t.ingress" and p["end"] > 0]
sys.exit(0 if parts and all(p["committed"] is not None and p["lag"] == 0 for p in parts) else 1)' \
  "$out"

# 6. SIGTERM drains: the engine finishes, commits, leaves its groups and exits 0.
"$bin" run --config "$work/mtls.toml" >"$work/term.log" 2>&1 &
engine=$!
for _ in $(seq 1 300); do grep -q "assigned, restored" "$work/term.log" && break; sleep 0.1; done
kill -TERM "$engine"
set +e
wait "$engine"
rc=$?
set -e
out="$(cat "$work/term.log")"
check "SIGTERM: exit 0" test "$rc" -eq 0
check "SIGTERM: the partitions were released (the group left)" contains "$out" "released"

# 7. config check masks the secret.
submit config check "$work/scram512.toml"
check "config check: valid" test "$rc" -eq 0
check "config check: secret masked" contains "$out" '"****" (env:AUTERITY_TEST_KAFKA_PASSWORD, resolves)'
check "config check: secret not printed" lacks "$out" "$secret"

echo "$passed passed, $failures failed"
[[ "$failures" -eq 0 ]]
