#pragma once
// A node: one engine process on the embedded log — the log, one partition runtime (RocksDB +
// orchestrator) per partition, and the in-process connector workers. The CLI, the tests and
// the benchmarks all start the engine through this class.
//
// Data directory layout:
//   <data>/log/        embedded log (engine/embedded_log.h)
//   <data>/state/pNNN/ RocksDB of partition NNN
//   <data>/outbox/     notifications written by the outbox connector

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "engine/clock.h"
#include "engine/kafka_group.h"
#include "engine/kafka_log.h"
#include "engine/log.h"
#include "engine/metrics.h"
#include "engine/partition_runtime.h"
#include "engine/worker_runtime.h"
#include "processors/execution_state.h"
#include "processors/orchestrator.h"

namespace auterity {

struct node_options {
  std::string data_dir = "auterity-data";  // state (and the embedded log unless kafka is set)
  uint32_t partitions = 4;                 // embedded log only; Kafka: the topics' count
  std::optional<kafka_log_options> kafka;  // run on this Kafka cluster instead
  // Kafka: join the consumer groups and run only the partitions Kafka assigns this instance
  // (scale-out). Off: own every partition (single instance, and read-only tools).
  bool kafka_group = false;
  bool fsync = true;
  // Run the orchestrator's partitions. Off: a worker-only process (`auterity worker`), which
  // joins only the worker groups of `worker_streams`.
  bool orchestrator = true;
  bool workers = true;  // run connector workers in-process
  // Which command streams the in-process workers take (others are left to external workers,
  // e.g. one written in another language: engine/WORKERS.md).
  std::vector<stream> worker_streams = {stream::commands_step, stream::commands_ai,
                                        stream::commands_notify};
  // The connectors' configuration file (connectors/connector_config.h); empty: local actions,
  // no AI provider, every notification to the outbox.
  std::string connectors_file;
  worker_options worker;  // of each in-process worker (concurrency, deadline, batch)
  partition_runtime_options runtime;
  // Serve Prometheus /metrics on this "host:port" (port 0: any free one); empty or "0": off.
  std::string metrics_address;
  // Embedded log: a partition whose committed data is damaged is left offline (not run, its
  // commits refused, reported by offline_partitions() and /metrics) while the others run;
  // off: the open fails (docs/salvage.md).
  bool corrupt_partitions_offline = false;
};

struct node_summary {
  std::map<std::string, uint64_t> executions_by_status;  // "running", "succeeded", ...
  uint64_t events = 0;  // records in executions (events and rejections)
  uint64_t rejections = 0;
  uint64_t deadletters = 0;
  uint64_t stale_acks = 0;
  uint64_t commands = 0;
  bool quiescent = false;  // nothing left to read, no timer pending
};

class node {
 public:
  static result<std::unique_ptr<node>> open(const node_options& options, clock& clk);
  ~node();

  // Recovers every partition (replay from its checkpoint); then start() runs the threads.
  result<void> recover();
  void start();
  void stop();
  // Runs one round of every partition (and, if `workers`, every worker) on the calling thread;
  // returns the work done. For tests and simulations that drive time themselves.
  result<size_t> step(bool workers = true);

  log& get_log() { return *_log; }
  uint32_t partitions() const { return _options.partitions; }
  // A partition's runtime; in group mode a partition not owned is opened (and recovered) on
  // first use, which is only safe once the node is stopped.
  partition_runtime& partition(uint32_t p);
  const orchestrator& orchestrator_of(uint32_t p) const { return *_orchestrators[p]; }
  // Partitions this node runs now.
  std::vector<uint32_t> owned_partitions();
  // Calls fn with the probe of every partition open now (counters only; runtimes come and go
  // with assignments, so nothing is kept).
  void for_each_probe(const std::function<void(uint32_t, const partition_probe&)>& fn);

  result<void> submit(std::string_view tenant, std::string bytes);
  // Reads an execution's stored state (any thread). Reflects committed batches.
  std::optional<execution_state> execution(std::string_view tenant, std::string_view id);
  // Calls fn with partition p's state store if this node runs p now (any thread; the store
  // reflects committed batches); false if it does not. The API's reads go through it.
  bool with_store(uint32_t p, const std::function<void(const state_store&)>& fn);
  // Scans every partition's executions (slow on big stores; for status and demos).
  void for_each_execution(const std::function<void(const execution_state&)>& fn);
  node_summary summary();
  // The port /metrics is served on; 0 if metrics are off.
  uint16_t metrics_port() const;
  // Why this node is not ready to serve, or nullopt: ready once started and every partition it
  // should run is restored (on Kafka: once the group assigned it its partitions, restored each
  // of them). Answers GET /ready on the metrics port (200 or 503 with this reason); any thread.
  std::optional<std::string> not_ready();
  // Why this node cannot go on, if so: its producer was fenced by another process running as
  // the same instance. Everything else (a lost partition, a broker away) is handled in process:
  // the partition steps down and is restored again (docs/ownership-handover.md).
  std::optional<std::string> fatal() const;
  // Why this node must be opened again to serve what it was given, if so (Kafka, group mode):
  // the co-partitioned topics now have another partition count than the log was opened with
  // (noted once every group of the node gave out all of them, or after 30 s: see
  // watch_placement), or the placement header (engine/kafka_placement.h) changed (a scale down
  // retired partitions). Partitions assigned past the count it opened with are not run (nothing
  // is decided on them); the others keep running until the caller stops the node. `run` then opens
  // a new node with the same options, in process (docs/tenant-moves.md, "Instances take up a new
  // partition count in process").
  std::optional<std::string> restart_needed() const;
  // Partition runtimes replaced after a failed commit, and restores that failed and were tried
  // again, since start.
  uint64_t step_downs() const { return _step_downs.load(); }
  // Partitions left offline because their committed data is damaged, with the damage (only
  // with node_options::corrupt_partitions_offline; fixed at open).
  const std::map<uint32_t, std::string>& offline_partitions() const { return _offline; }
  uint64_t restore_failures() const { return _restore_failures.load(); }

 private:
  node(node_options options, clock& clk);
  result<void> open_partition(uint32_t p);  // caller holds _parts_mu
  void close_partition(uint32_t p);         // caller holds _parts_mu
  void on_assigned(const std::vector<uint32_t>& parts);
  void on_revoked(const std::vector<uint32_t>& parts);
  // Opens, recovers and starts p; on failure leaves it closed for the supervisor to retry.
  bool restore(uint32_t p);  // caller holds _parts_mu
  // Replaces failed runtimes and retries failed restores of wanted partitions.
  void supervise();
  void* group_metadata(std::string_view group);
  void start_groups();
  result<void> start_metrics();
  void collect_metrics(metrics_writer& w);
  node_options _options;
  clock& _clock;
  std::map<uint32_t, std::string> _offline;  // partition -> damage_text(), set in open()
  std::unique_ptr<log> _log;
  std::recursive_mutex _parts_mu;                               // guards which partitions are open
  std::vector<orchestrator*> _orchestrators;                    // null: not open
  std::vector<std::unique_ptr<partition_runtime>> _partitions;  // null: not open
  // Partitions this node should run (all, or what Kafka assigned), guarded by _parts_mu; a
  // wanted partition that is not open is restored by the supervisor.
  std::vector<bool> _wanted;
  std::vector<std::chrono::steady_clock::time_point> _retry_at;  // guarded by _parts_mu
  std::thread _supervisor;
  std::atomic<bool> _supervising{false};
  std::atomic<uint64_t> _step_downs{0};
  std::atomic<uint64_t> _restore_failures{0};
  mutable std::mutex _fatal_mu;
  std::optional<std::string> _fatal;  // guarded by _fatal_mu
  std::optional<std::string> _grown;  // guarded by _fatal_mu
  // Drops partitions at or past the log's count from `parts` (logged once: _assigned_past).
  std::vector<uint32_t> known_partitions(const std::vector<uint32_t>& parts);
  // Group mode, from the supervisor every placement_check_interval: notes in _grown a
  // partition count or placement header that differs from the log's (restart_needed()).
  void watch_placement();
  void note_reopen(std::string why);  // sets _grown once
  // The ingress topic has `count` partitions: notes a reopen once all the topics have them and
  // every member of `members` was given an assignment since (or after group_rebalance_wait).
  void grown_to(uint32_t count, const std::vector<kafka_membership*>& members);
  uint32_t _grown_count = 0;  // supervisor thread only, as the three below
  bool _grown_all_topics = false;
  std::chrono::steady_clock::time_point _grown_since{};
  std::vector<uint64_t> _grown_assignments;  // each member's assignments() when first seen
  std::atomic<bool> _assigned_past{false};   // a group assigned a partition past the count
  std::chrono::steady_clock::time_point _next_watch{};  // supervisor thread only
  int64_t _placement_end = -2;  // end of the placement topic last read; -2: not read yet
  std::mutex _members_mu;
  std::vector<std::unique_ptr<kafka_membership>> _members;  // group mode: orchestrator, workers
  std::vector<std::unique_ptr<worker_runtime>> _workers;
  bool _started = false;
  std::atomic<bool> _serving{false};         // between start() and stop(), for not_ready()
  std::atomic<bool> _assigned_once{false};   // group mode: the orchestrator group assigned us
  std::unique_ptr<metrics_server> _metrics;  // scrapes read the members above
  bool _dense_offsets = true;
  bool group_mode() const {
    return _options.kafka && _options.kafka_group;
  }  // embedded log: positions == end offsets when caught up
};

}  // namespace auterity
