#!/usr/bin/env bash
# Installs what is missing (Debian packages), builds, and runs one of:
#   ./build.sh demo [auterity demo flags]   the main job on the embedded log
#   ./build.sh test [ctest flags]           the whole test suite
#   ./build.sh build                        just build
# Environment: BUILD_DIR (default build), AUTERITY_WERROR (default ON: warnings are errors).
set -euo pipefail
cd "$(dirname "$0")"

packages=(
  cmake ninja-build g++ ccache pkg-config
  librocksdb-dev librdkafka-dev libflatbuffers-dev flatbuffers-compiler libfmt-dev
  nlohmann-json3-dev libcli11-dev libssl-dev libgtest-dev prometheus-cpp-dev libboost1.81-dev
  libtomlplusplus-dev
)

# Only the test command needs these: the replay tests render the HTML timeline in headless
# Chromium, the connector tests run protocol servers in Python, and the Kafka tests run a real broker (Kafka from Maven Central on Java 17; a JDK
# and Maven only if the machine has none).
test_packages() {
  packages+=(chromium clang-format)
  # Loopback protocol servers of the connector tests (Python's http.server, aiosmtpd) and the
  # Python worker built from the schema (flatbuffers, confluent-kafka).
  packages+=(python3 python3-aiosmtpd python3-flatbuffers python3-confluent-kafka openssl)
  # The ops tests: a real Prometheus (and promtool) checks the dashboard and alert rules.
  packages+=(prometheus python3-yaml)
  # The secured-Kafka test reads through the gateway's HTTP API with curl.
  packages+=(curl)
  # The API's contract test installs schemathesis from PyPI into a venv (api/README.md).
  packages+=(python3-venv)
  # The fuzz tests (tests/fuzz/): clang with libFuzzer and the sanitizers' runtimes, and
  # llvm-symbolizer for readable crash reports. Debian 12's default clang (14) cannot use
  # libstdc++ 12's std::expected; 19 can.
  packages+=(clang-19 libclang-rt-19-dev llvm-19)
  command -v java >/dev/null 2>&1 || packages+=(default-jre-headless)
  command -v mvn >/dev/null 2>&1 || packages+=(maven)
}

install_missing() {
  local missing=()
  for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "build.sh: installing ${missing[*]}" >&2
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# build [TARGET...]: everything, or only the targets named (the demo needs only `auterity`).
build() {
  local dir=${BUILD_DIR:-build}
  cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DAUTERITY_WERROR="${AUTERITY_WERROR:-ON}" >/dev/null
  ninja -C "$dir" "$@"
}

what=${1:-build}
[ $# -gt 0 ] && shift
[ "$what" = test ] && test_packages
install_missing
if [ "$what" = demo ]; then build auterity; else build; fi
dir=${BUILD_DIR:-build}
case "$what" in
  demo) exec "$dir/cli/auterity" demo "$@" ;;
  test)
    tests/kafka/broker.sh fetch  # Kafka 3.9 jars from Maven Central, cached after the first run
    cd "$dir" && exec ctest --output-on-failure --timeout 900 "$@" ;;
  build) ;;
  *) echo "usage: ./build.sh demo|test|build" >&2; exit 2 ;;
esac
