#!/usr/bin/env bash
# Builds the Kafka Streams baseline (README.md): Java 17 and Maven, dependencies from Maven
# Central cached in ~/.m2 (a second build works offline). Prints the java command line to run
# it on its last line of stdout: CLASSPATH=... (eval-able).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
readonly here
java_major="$(java -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p')"
if [[ -z "$java_major" ]] || ((${java_major%%.*} < 17)); then
  echo "build.sh: Java 17 or newer needed (found '${java_major:-none}')" >&2
  exit 1
fi
command -v mvn >/dev/null || { echo "build.sh: mvn (Maven) not found" >&2; exit 1; }
offline=()
# Everything already in ~/.m2: do not ask the registry again.
if [[ -f "$here/target/kstreams-baseline-1.jar" && -d "$here/target/lib" ]]; then offline=(-o); fi
if ! mvn -q -B "${offline[@]}" -f "$here/pom.xml" package >&2; then
  ((${#offline[@]})) || exit 1
  mvn -q -B -f "$here/pom.xml" package >&2
fi
echo "CLASSPATH=$here/target/kstreams-baseline-1.jar:$here/target/lib/*"
