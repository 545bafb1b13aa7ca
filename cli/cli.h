#pragma once
// Subcommands implemented outside main.cc.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "engine/anchors.h"
#include "engine/kafka_log.h"
#include "engine/log.h"
#include "engine/partition_runtime.h"
#include "engine/worker_runtime.h"
#include "node/scale.h"

namespace CLI {
class App;
}

namespace auterity {

struct demo_flags {
  std::string data_dir = "auterity-demo";
  uint32_t partitions = 4;
  bool fsync = true;
  uint32_t executions = 8;
  bool serve = false;
  bool quiet = false;
  int timeout_s = 60;
  std::optional<kafka_log_options> kafka;  // run on Kafka instead of the embedded log
  partition_runtime_options runtime;
  std::string metrics_address;  // Prometheus /metrics; empty: off
  std::string connectors_file;  // connectors/connector_config.h; empty: local only
  std::vector<stream> worker_streams = {stream::commands_step, stream::commands_ai,
                                        stream::commands_notify};
  worker_options worker;
};

// The main job: the sample dealership workflow for two tenants, end to end.
int run_demo(const demo_flags& flags, const std::atomic<bool>& interrupted);

// Subcommand groups that live in files of their own register on the app and return a runner;
// after parsing, main() calls each runner: it returns an exit code if one of its subcommands
// was chosen, nullopt otherwise.
using command_runner = std::function<std::optional<int>()>;

// The configuration's Kafka settings (--config, AUTERITY_*: cli/README.md), for subcommands
// declared before the configuration is read: main() fills it after reading it and before any
// runner runs. A subcommand's own flags win over it.
struct kafka_defaults {
  std::string bootstrap;
  std::string topic_prefix;
  std::map<std::string, std::string> properties;  // librdkafka, secrets resolved
};
command_runner add_replay_commands(CLI::App& app, const kafka_defaults& defaults);  // replay_cmd.cc
command_runner add_topics_commands(CLI::App& app, const kafka_defaults& defaults);  // topics_cmd.cc
command_runner add_config_commands(CLI::App& app);   // cli/config_cmd.cc
command_runner add_anchors_commands(CLI::App& app);  // cli/anchors_cmd.cc
command_runner add_repair_commands(CLI::App& app);   // cli/repair_cmd.cc

// `auterity status --kafka B` (cli/status_cmd.cc): the engine's consumer groups as the brokers
// see them — members, assignments, lag and the last commit per partition. Exit 0, 1 if a
// group could not be described or its offsets not listed, 2 if the cluster cannot be asked.
struct kafka_status_flags {
  std::string bootstrap;
  std::string topic_prefix;
  std::map<std::string, std::string> properties;  // librdkafka, secrets resolved
  bool json = false;
  int timeout_ms = 10'000;  // longest wait for one broker answer, and for reading the gaps
};
int kafka_groups_status(const kafka_status_flags& flags);

// `partitions plan|scale --kafka` (cli/partitions_kafka.cc; docs/tenant-moves.md, "On
// Kafka"). The survey of a Kafka deployment: every partition's state rebuilt from the
// executions topic (read_committed) by a read replica (api/replica.h) in a scratch directory,
// with progress on stderr, then weighed as on the embedded log (node/scale.h); `events` is the
// read-only log it read, for the plan.
struct kafka_survey {
  std::unique_ptr<log> events;
  placement_survey survey;
};
result<kafka_survey> survey_kafka(const kafka_log_options& k, int64_t window_ms);
// Applies a plan to a Kafka deployment whose header is `now`: grows the topics (the placement
// base recorded first) or records the retired partitions; then, if there are moves, waits up
// to `wait` until the orchestrator group gives out every partition and (after a grow) every
// member running this deployment's partitions joined again, i.e. opened the log with the
// plan's count (the instances open themselves again in process
// when the topics grow: docs/tenant-moves.md), with progress on stderr, and publishes one
// MoveTenant per move on ingress. Exit 0 done, 1 failed, 2 the instances did not take up the
// count within `wait` (nothing published: run it again).
int kafka_apply_scale(const kafka_log_options& k, const placement_header& now,
                      const scale_plan& plan, int64_t now_ms, std::chrono::seconds wait);

// Anchors written by `auterity run` (docs/anchors.md; cli/anchors_cmd.cc).
struct anchor_flags {
  std::string key;  // file:/path or env:NAME of the Ed25519 private key; empty: no anchors
  int interval_s = 60;
  std::string file;  // empty: <data>/anchors/anchors.jsonl
  bool verify_on_start = false;
};
void add_anchor_flags(CLI::App* run, anchor_flags& f);

// When `run` writes anchors (docs/anchors.md): at start, every interval_s if anything grew,
// and at clean shutdown; on Kafka only of the partitions the instance owns at that moment, and
// also as soon as it is assigned partitions it did not own (their previous owner's last records
// are then anchored at once, not an interval later). A failed write is reported on stderr, not
// fatal: the next anchor covers more. Without a key every call does nothing. One thread.
class run_anchors {
 public:
  // `owned`: the partitions the instance owns now (node::owned_partitions), or empty: every
  // partition (the embedded log).
  run_anchors(std::unique_ptr<anchor_writer> writer, std::function<std::vector<uint32_t>()> owned,
              int interval_s);
  run_anchors() = default;
  bool enabled() const { return _writer != nullptr; }
  void at_start();
  // From the run loop (every ~100 ms).
  void tick();
  // Before the node stops (on Kafka stopping gives the partitions up: remember them) and after
  // (the anchor then covers every commit of the instance).
  void before_stop();
  void after_stop();

 private:
  void write(bool force, const std::optional<std::vector<uint32_t>>& partitions);
  std::optional<std::vector<uint32_t>> owned_now();
  std::unique_ptr<anchor_writer> _writer;
  std::function<std::vector<uint32_t>()> _owned;
  std::chrono::seconds _interval{60};
  std::chrono::steady_clock::time_point _last_write, _last_owned_check;
  std::vector<uint32_t> _anchored_owned;  // Kafka: the owned set at the last check
  std::optional<std::vector<uint32_t>> _owned_at_stop;
};

// Reads the key and opens the writer (no writer without a key). With --verify-on-start, fails
// with errc::corrupt if the log does not match an anchor of the file; on Kafka that checks,
// before the instance joins the group, every partition the file anchors (docs/anchors.md).
result<run_anchors> open_run_anchors(const anchor_flags& f, log& l, const std::string& data_dir,
                                     std::function<std::vector<uint32_t>()> owned);

}  // namespace auterity
