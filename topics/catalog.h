#pragma once
// The topic catalog: every Kafka topic the engine uses, as data (partitions, replication,
// retention, cleanup policy, min.insync.replicas, message size), and the admin operations that
// make a cluster match it. One topic per stream of engine/log.h, named like the stream, with an
// optional prefix so several deployments (or tests) can share a cluster.
//
// All streams are keyed by tenant and co-partitioned: a tenant lives in partition p of every
// topic, so every catalog shares one partition count, and changing it moves tenants.
//
// The functions below open a short-lived librdkafka admin client per call; they block for at
// most about admin_timeout_ms per broker request and are safe to call from any thread.

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "engine/log.h"
#include "engine/result.h"

namespace auterity {

// Limits and defaults, named with their unit.
inline constexpr uint32_t topic_partitions_default = 4;  // the embedded log's default too
inline constexpr uint32_t topic_partitions_max = 4096;
inline constexpr int16_t topic_replication_max = 16;
inline constexpr int64_t retention_forever_ms = -1;
inline constexpr int64_t retention_transient_ms = 7LL * 24 * 3600 * 1000;    // 7 days
inline constexpr int64_t retention_deadletter_ms = 30LL * 24 * 3600 * 1000;  // 30 days
// A record at the engine's limit (record_bytes_max of key + value) plus record and batch
// headers must fit; Kafka's default (1048588 bytes) is smaller than that.
inline constexpr int64_t topic_message_bytes_max = int64_t{record_bytes_max} + 64 * 1024;
inline constexpr int admin_timeout_ms_default = 30000;

struct topic_spec {
  stream s = stream::ingress;
  std::string name;  // prefix + stream_name(s)
  uint32_t partitions = topic_partitions_default;
  int16_t replication = 1;
  bool co_partitioned = true;  // keyed by tenant: must share the partition count
  std::string cleanup_policy = "delete";
  int64_t retention_ms = retention_transient_ms;
  int min_insync_replicas = 1;
  int64_t max_message_bytes = topic_message_bytes_max;
};

// The broker-side topic configs the catalog manages, as (name, value) in a fixed order:
// cleanup.policy, retention.ms, min.insync.replicas, max.message.bytes.
std::vector<std::pair<std::string, std::string>> topic_configs(const topic_spec& spec);

struct catalog_options {
  uint32_t partitions = topic_partitions_default;
  int16_t replication = 1;
  int min_insync_replicas = 0;  // 0: 2 when replication >= 3, else 1
  std::string prefix;
};

// The engine's eight topics, in stream order.
std::vector<topic_spec> default_catalog(const catalog_options& options);

// Checks what apply_catalog relies on: names set and unique, partitions and replication in
// range, 1 <= min.insync.replicas <= replication, co-partitioned topics share one count.
result<void> validate_catalog(const std::vector<topic_spec>& catalog);

enum class topic_verdict : uint8_t { ok, missing, differs };
const char* topic_verdict_name(topic_verdict v);

// One topic as the cluster has it, next to what the catalog wants.
struct topic_state {
  topic_spec want;
  bool exists = false;
  uint32_t partitions = 0;
  int16_t replication = 0;  // smallest replica count over the topic's partitions
  // Actual values of the configs in topic_configs(want), same order; "" if the broker hid one.
  std::vector<std::pair<std::string, std::string>> configs;
  // Readable, one per mismatch: "partitions 2 (want 4)", "retention.ms=3600000 (want -1)".
  std::vector<std::string> differences;
  topic_verdict verdict = topic_verdict::missing;
};

// How to reach the cluster: bootstrap servers and the operator's librdkafka properties
// (security.protocol, sasl.*, ssl.*: `kafka.properties` of the configuration file, secrets
// resolved), which every admin and placement client gets. A bare bootstrap string converts.
struct kafka_cluster_access {
  std::string bootstrap;
  std::map<std::string, std::string> properties;
  kafka_cluster_access(std::string b, std::map<std::string, std::string> p = {})  // NOLINT
      : bootstrap(std::move(b)), properties(std::move(p)) {}
  kafka_cluster_access(const char* b) : bootstrap(b) {}  // NOLINT
};

result<std::vector<topic_state>> describe_catalog(const kafka_cluster_access& cluster,
                                                  const std::vector<topic_spec>& catalog,
                                                  int admin_timeout_ms = admin_timeout_ms_default);

struct apply_options {
  // Raising the partition count of existing co-partitioned topics; refused unless set. Before
  // it, the placement header (engine/kafka_placement.h) records the count now as the base, so
  // tenants keep their default partitions and the new ones start empty (tenants go there by
  // `tenants move`). Restart the instances afterwards: an instance runs the partitions it opened
  // with, and one given a partition past them stops (exit 6).
  bool allow_repartition = false;
  // Send every request with validate_only (the broker checks it, nothing changes).
  bool dry_run = false;
  int admin_timeout_ms = admin_timeout_ms_default;  // per broker request
};

// Makes the cluster match the catalog: creates missing topics, raises partition counts (see
// allow_repartition), sets configs that differ while keeping other topic-level overrides.
// Refuses, before changing anything, what Kafka or the engine cannot take: fewer partitions,
// a different replication factor on an existing topic, a refused repartition. Returns one
// readable line per topic action ("created executions (4 partitions, rf 1, ...)",
// "set min.insync.replicas=2 on acks", "ok: ingress"); "would ..." in a dry run. Unless it is a
// dry run, returns only once the cluster reports the catalog's state.
result<std::vector<std::string>> apply_catalog(const kafka_cluster_access& cluster,
                                               const std::vector<topic_spec>& catalog,
                                               const apply_options& options = {});

// The engine's start check: all eight topics (with `prefix`) exist and share one partition
// count, which is returned. Otherwise an error naming the missing topics (errc::not_found) or
// the partition count of each disagreeing topic (errc::invalid).
result<uint32_t> check_copartitioned(const kafka_cluster_access& cluster, std::string_view prefix,
                                     int admin_timeout_ms = admin_timeout_ms_default);

// What the cluster has now, to pick defaults for a catalog: broker count and the largest
// partition count and replication factor among the existing topics of the default catalog
// with `prefix` (0 when none exists).
struct cluster_shape {
  uint32_t brokers = 0;
  uint32_t partitions_max = 0;
  int16_t replication_max = 0;
};
result<cluster_shape> probe_cluster(const kafka_cluster_access& cluster, std::string_view prefix,
                                    int admin_timeout_ms = admin_timeout_ms_default);

// Records `retired` (partitions that take no tenants: `partitions scale --kafka` down) in the
// deployment's placement header (engine/kafka_placement.h), keeping its base — the header's, or
// the partition count now if there is none (the topic is then created), so no tenant's default
// partition changes. Running instances read the header when they open. Returns the line for the
// output; errc::invalid for a partition the topics do not have.
result<std::string> record_placement_retired(const kafka_cluster_access& cluster,
                                             std::string_view prefix,
                                             const std::vector<uint32_t>& retired,
                                             int admin_timeout_ms = admin_timeout_ms_default);

// The catalog with `wanted`'s settings, where what is not given (0) follows the cluster, so that
// applying it to an existing deployment changes nothing it does not have to: partitions as the
// existing topics have them (the largest count; topic_partitions_default if none exists),
// replication as they have it (else min(3, brokers)); validated (validate_catalog).
result<std::vector<topic_spec>> catalog_for_cluster(
    const kafka_cluster_access& cluster, const catalog_options& wanted,
    int admin_timeout_ms = admin_timeout_ms_default);

}  // namespace auterity
