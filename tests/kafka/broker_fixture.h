#pragma once
// A real Kafka cluster on loopback for tests, started and stopped through tests/kafka/broker.sh
// (Kafka 3.9 from Maven Central, KRaft). The cluster also stops by itself if the test process
// dies (--owner), so a crashed test leaves no broker behind.

#include <unistd.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include <fmt/core.h>

#ifndef AUTERITY_BROKER_SH
#error "define AUTERITY_BROKER_SH (path of tests/kafka/broker.sh)"
#endif

namespace auterity::testing {

class kafka_cluster {
 public:
  // Starts `nodes` brokers; on failure `error()` says why (with the script's output).
  explicit kafka_cluster(int nodes) {
    const std::string out = run(
        fmt::format("{} start --nodes {} --owner {} 2>&1", AUTERITY_BROKER_SH, nodes, ::getpid()));
    _bootstrap = field(out, "BOOTSTRAP=");
    _dir = field(out, "DIR=");
    if (_bootstrap.empty() || _dir.empty()) _error = "broker.sh start failed:\n" + out;
  }
  ~kafka_cluster() {
    if (!_dir.empty()) run(fmt::format("{} stop --dir {} --rm 2>&1", AUTERITY_BROKER_SH, _dir));
  }
  kafka_cluster(const kafka_cluster&) = delete;
  kafka_cluster& operator=(const kafka_cluster&) = delete;

  const std::string& bootstrap() const { return _bootstrap; }
  const std::string& error() const { return _error; }
  const std::string& dir() const { return _dir; }  // broker.sh's files: nodeN.pid, logs
  void kill_node(int n) {
    run(fmt::format("{} kill-node {} --dir {} 2>&1", AUTERITY_BROKER_SH, n, _dir));
  }
  void start_node(int n) {
    run(fmt::format("{} start-node {} --dir {} 2>&1", AUTERITY_BROKER_SH, n, _dir));
  }

 private:
  static std::string run(const std::string& command) {
    std::string out;
    FILE* p = ::popen(command.c_str(), "r");
    if (!p) return "popen failed";
    std::array<char, 4096> buf;
    size_t n;
    while ((n = std::fread(buf.data(), 1, buf.size(), p)) > 0) out.append(buf.data(), n);
    ::pclose(p);
    return out;
  }
  static std::string field(const std::string& out, const std::string& name) {
    size_t at = out.rfind(name);
    if (at == std::string::npos) return "";
    at += name.size();
    return out.substr(at, out.find('\n', at) - at);
  }

  std::string _bootstrap;
  std::string _dir;
  std::string _error;
};

}  // namespace auterity::testing
