#pragma once
// The engine's configuration file (TOML), its environment variables, and how they meet the
// command-line flags: a flag wins over the environment, the environment over the file, the file
// over the built-in default. `auterity config check FILE` prints the outcome (cli/README.md has
// the reference; ops/auterity.example.toml a complete file).
//
//   data = "state-a"                 # --data            AUTERITY_DATA
//   partitions = 4                   # --partitions      AUTERITY_PARTITIONS
//   fsync = true                     # --no-fsync        AUTERITY_FSYNC (true|false)
//   instance = "a"                   # --instance        AUTERITY_INSTANCE
//   metrics = "127.0.0.1:9464"       # --metrics         AUTERITY_METRICS
//   connectors = "connectors.json"   # --connectors      AUTERITY_CONNECTORS
//   workers = ["step", "ai"]         # --workers         AUTERITY_WORKERS (comma-separated)
//   worker_concurrency = 8           # --worker-concurrency   AUTERITY_WORKER_CONCURRENCY
//   command_deadline_ms = 30000      # --command-deadline-ms  AUTERITY_COMMAND_DEADLINE_MS
//   batch_records = 512              # --batch-records        AUTERITY_BATCH_RECORDS
//   commit_interval_ms = 0           # --commit-interval-ms   AUTERITY_COMMIT_INTERVAL_MS
//   [kafka]
//   bootstrap = "b1:9093,b2:9093"    # --kafka           AUTERITY_KAFKA
//   topic_prefix = ""                # --topic-prefix    AUTERITY_TOPIC_PREFIX
//   committers = 2                   # --committers      AUTERITY_KAFKA_COMMITTERS
//   [kafka.properties]               # librdkafka properties for every client (file only)
//   "security.protocol" = "SASL_SSL"
//   "sasl.password" = "env:AUTERITY_KAFKA_PASSWORD"   # a secret: by reference only
//
// Errors (each a value, errc::invalid, naming the file, line and key): a key the engine does
// not know (with the closest known key as a suggestion), a value of the wrong type or out of
// range, a librdkafka property librdkafka does not know (with a suggestion) or that the engine
// owns (kafka_engine_owned(): transactional.id, isolation.level, enable.idempotence,
// partitioner, ...), a secret given as a literal. Secrets are resolved only by
// resolve_kafka_properties(), and their values are never printed.

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "engine/result.h"

namespace auterity {

// Where a setting came from, for `config check`.
struct setting_source {
  std::string where;  // "FILE:LINE", "environment AUTERITY_DATA"
};

struct engine_config {
  std::optional<std::string> data;
  std::optional<uint32_t> partitions;  // 1..256
  std::optional<bool> fsync;
  std::optional<std::string> instance;
  std::optional<std::string> metrics;
  std::optional<std::string> connectors;
  std::optional<std::vector<std::string>> workers;  // step, ai, notify, none
  std::optional<size_t> worker_concurrency;         // 1..worker_concurrency_max
  std::optional<int64_t> command_deadline_ms;       // 1..3'600'000
  std::optional<size_t> batch_records;              // 1..100'000
  std::optional<int64_t> commit_interval_ms;        // 0..60'000
  std::optional<std::string> kafka_bootstrap;
  std::optional<std::string> topic_prefix;
  std::optional<int> committers;  // 1..kafka_committers_max
  // librdkafka properties as written (secrets still as references).
  std::map<std::string, std::string> kafka_properties;
  std::map<std::string, setting_source> sources;  // by key as written in the file
};

// Reads and validates a TOML file. A missing or unreadable file, a TOML syntax error (with line
// and column) or any of the errors above fail.
result<engine_config> load_config_file(const std::string& path);

// Overrides `config` with the AUTERITY_* variables that are set (the list above); a variable
// with a malformed value fails naming it. `getenv` is injectable for tests.
using env_lookup = char* (*)(const char*);  // std::getenv
result<void> apply_config_env(engine_config& config, env_lookup getenv);

// The librdkafka properties with their secrets resolved (engine/secrets.h), checked by
// librdkafka itself. Fails naming the property (never the secret's value).
result<std::map<std::string, std::string>> resolve_kafka_properties(const engine_config& config);

// The effective configuration, one `key = value    # source` line each, secrets masked.
std::string describe_config(const engine_config& config);

// The file named by `--config FILE` (or `--config=FILE`) among the arguments, else by
// AUTERITY_CONFIG, if any.
std::optional<std::string> config_path_of(int argc, char** argv, env_lookup getenv);

// That file (if any) with the environment applied: what the flags then override.
result<engine_config> load_effective_config(int argc, char** argv, env_lookup getenv);

// The closest of `known` to `word` (edit distance at most a third of its length, at least 2),
// or "".
std::string closest_name(std::string_view word, const std::vector<std::string>& known);

}  // namespace auterity
