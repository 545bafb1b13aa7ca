#include "topics/catalog.h"

#include <librdkafka/rdkafka.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <thread>

#include <fmt/format.h>

#include "engine/kafka_placement.h"
#include "engine/kafka_util.h"

namespace auterity {

namespace {

// --- librdkafka objects, each freed by its own destroy function ----------------------------

using conf_ptr = kafka_handle<rd_kafka_conf_t, rd_kafka_conf_destroy>;
using kafka_ptr = kafka_handle<rd_kafka_t, rd_kafka_destroy>;
using queue_ptr = kafka_handle<rd_kafka_queue_t, rd_kafka_queue_destroy>;
using event_ptr = kafka_handle<rd_kafka_event_t, rd_kafka_event_destroy>;
using admin_options_ptr = kafka_handle<rd_kafka_AdminOptions_t, rd_kafka_AdminOptions_destroy>;
using new_topic_ptr = kafka_handle<rd_kafka_NewTopic_t, rd_kafka_NewTopic_destroy>;
using new_partitions_ptr = kafka_handle<rd_kafka_NewPartitions_t, rd_kafka_NewPartitions_destroy>;
using config_resource_ptr =
    kafka_handle<rd_kafka_ConfigResource_t, rd_kafka_ConfigResource_destroy>;
using metadata_ptr = kafka_handle<const rd_kafka_metadata_t, rd_kafka_metadata_destroy>;

// The result of an admin request arrives within its request timeout; this is only a backstop.
constexpr int result_grace_ms = 5000;
// How often apply re-reads the cluster while waiting for its changes to show.
constexpr int settle_poll_ms = 100;
constexpr size_t errstr_bytes = 512;

using config_list = std::vector<std::pair<std::string, std::string>>;

std::string join(const std::vector<std::string>& items, std::string_view sep) {
  std::string out;
  for (const std::string& s : items) {
    if (!out.empty()) out += sep;
    out += s;
  }
  return out;
}

// --- admin client ------------------------------------------------------------------------

// librdkafka logs connection failures from its own threads. Keep the last one for error
// messages (a bare "timed out" says nothing) instead of letting it print to stderr.
struct log_sink {
  std::mutex mu;
  std::string last;
};

void on_log(const rd_kafka_t* rk, int level, const char*, const char* line) {
  constexpr int log_warning = 4;  // syslog levels: 3 error, 4 warning
  if (level > log_warning) return;
  auto* sink = static_cast<log_sink*>(rd_kafka_opaque(rk));
  if (sink == nullptr) return;
  std::string_view text = line;
  // "[thrd:host:port/bootstrap]: host:port/bootstrap: Connect to ... failed: ..."
  if (text.starts_with("[thrd:")) {
    if (size_t end = text.find("]: "); end != std::string_view::npos) text.remove_prefix(end + 3);
  }
  std::lock_guard lock(sink->mu);
  sink->last = text;
}

struct topic_failure {
  std::string topic;
  rd_kafka_resp_err_t err;
  std::string message;  // the broker's, if it sent one
};

struct topic_meta {
  uint32_t partitions = 0;
  int16_t replication = 0;
};

struct cluster_meta {
  uint32_t brokers = 0;
  std::map<std::string, topic_meta, std::less<>> topics;
};

struct config_entry {
  std::optional<std::string> value;  // nullopt: sensitive, the broker does not tell
  bool topic_override = false;       // set on the topic itself (DYNAMIC_TOPIC_CONFIG)
};
using topic_config = std::map<std::string, config_entry, std::less<>>;

class admin_client {
 public:
  static result<admin_client> open(const kafka_cluster_access& cluster, int admin_timeout_ms);

  result<cluster_meta> metadata();
  result<std::map<std::string, topic_config>> describe_configs(
      const std::vector<std::string>& topics);
  result<void> create_topics(const std::vector<const topic_spec*>& specs, bool validate_only);
  result<void> create_partitions(const std::vector<std::pair<std::string, uint32_t>>& totals,
                                 bool validate_only);
  result<void> alter_configs(const std::vector<std::pair<std::string, config_list>>& configs,
                             bool validate_only);

  int timeout_ms() const { return timeout_ms_; }
  error broker_error(std::string_view what, rd_kafka_resp_err_t err, const char* detail) const;

 private:
  admin_client() = default;
  result<admin_options_ptr> options(rd_kafka_admin_op_t op, bool validate_only) const;
  result<event_ptr> wait_result(std::string_view what, rd_kafka_event_type_t type);
  std::string last_log() const;

  std::unique_ptr<log_sink> sink_;  // declared first: outlives rk_, which logs into it
  kafka_ptr rk_;
  queue_ptr queue_;
  int timeout_ms_ = admin_timeout_ms_default;
};

result<conf_ptr> make_conf(const kafka_cluster_access& cluster, log_sink* sink) {
  conf_ptr conf(rd_kafka_conf_new());
  char errstr[errstr_bytes];
  // The operator's properties first (security); ours after them win.
  for (const auto& [name, value] : cluster.properties) {
    if (rd_kafka_conf_set(conf.get(), name.c_str(), value.c_str(), errstr, sizeof errstr) !=
        RD_KAFKA_CONF_OK) {
      return fail(errc::invalid, fmt::format("kafka client setting {}: {}", name, errstr));
    }
  }
  const std::pair<const char*, const char*> settings[] = {
      {"bootstrap.servers", cluster.bootstrap.c_str()},
      {"client.id", "auterity-topics"},
      {"log.connection.close", "false"},
  };
  for (const auto& [name, value] : settings) {
    if (rd_kafka_conf_set(conf.get(), name, value, errstr, sizeof errstr) != RD_KAFKA_CONF_OK) {
      return fail(errc::invalid,
                  fmt::format("kafka client setting {}={}: {}", name, value, errstr));
    }
  }
  rd_kafka_conf_set_opaque(conf.get(), sink);
  rd_kafka_conf_set_log_cb(conf.get(), on_log);
  return conf;
}

result<admin_client> admin_client::open(const kafka_cluster_access& cluster, int admin_timeout_ms) {
  if (cluster.bootstrap.empty()) return fail(errc::invalid, "no Kafka bootstrap servers given");
  if (admin_timeout_ms <= 0) {
    return fail(errc::invalid,
                fmt::format("admin_timeout_ms must be > 0 (got {})", admin_timeout_ms));
  }
  admin_client c;
  c.timeout_ms_ = admin_timeout_ms;
  c.sink_ = std::make_unique<log_sink>();
  auto conf = make_conf(cluster, c.sink_.get());
  if (!conf) return std::unexpected(conf.error());
  char errstr[errstr_bytes];
  c.rk_.reset(rd_kafka_new(RD_KAFKA_PRODUCER, conf->get(), errstr, sizeof errstr));
  if (!c.rk_) return fail(errc::invalid, fmt::format("cannot create a Kafka client: {}", errstr));
  (void)conf->release();  // rd_kafka_new took it
  c.queue_.reset(rd_kafka_queue_new(c.rk_.get()));
  return c;
}

std::string admin_client::last_log() const {
  std::lock_guard lock(sink_->mu);
  return sink_->last;
}

error admin_client::broker_error(std::string_view what, rd_kafka_resp_err_t err,
                                 const char* detail) const {
  const bool timed_out = err == RD_KAFKA_RESP_ERR__TIMED_OUT ||
                         err == RD_KAFKA_RESP_ERR__TIMED_OUT_QUEUE ||
                         err == RD_KAFKA_RESP_ERR__TRANSPORT;
  const char* text = detail && *detail ? detail : rd_kafka_err2str(err);
  std::string msg = timed_out
                        ? fmt::format("{}: no answer within admin_timeout_ms={}", what, timeout_ms_)
                        : fmt::format("{}: {} ({})", what, text, rd_kafka_err2name(err));
  if (timed_out) {
    if (std::string last = last_log(); !last.empty()) msg += "; last client error: " + last;
  }
  return error{errc::io, std::move(msg)};
}

result<admin_options_ptr> admin_client::options(rd_kafka_admin_op_t op, bool validate_only) const {
  // Options are checked against the op: each may only get what it supports.
  const bool creates =
      op == RD_KAFKA_ADMIN_OP_CREATETOPICS || op == RD_KAFKA_ADMIN_OP_CREATEPARTITIONS;
  const bool changes = creates || op == RD_KAFKA_ADMIN_OP_ALTERCONFIGS;
  admin_options_ptr opts(rd_kafka_AdminOptions_new(rk_.get(), op));
  char errstr[errstr_bytes];
  rd_kafka_resp_err_t err =
      rd_kafka_AdminOptions_set_request_timeout(opts.get(), timeout_ms_, errstr, sizeof errstr);
  if (!err && creates) {
    // How long the controller waits for the new topics/partitions before it answers.
    err =
        rd_kafka_AdminOptions_set_operation_timeout(opts.get(), timeout_ms_, errstr, sizeof errstr);
  }
  if (!err && changes) {
    err = rd_kafka_AdminOptions_set_validate_only(opts.get(), validate_only, errstr, sizeof errstr);
  }
  if (err) return fail(errc::invalid, fmt::format("admin options: {}", errstr));
  return opts;
}

result<event_ptr> admin_client::wait_result(std::string_view what, rd_kafka_event_type_t type) {
  event_ptr ev(rd_kafka_queue_poll(queue_.get(), timeout_ms_ + result_grace_ms));
  if (!ev) return std::unexpected(broker_error(what, RD_KAFKA_RESP_ERR__TIMED_OUT, nullptr));
  if (rd_kafka_event_type(ev.get()) != type) {
    return fail(errc::io,
                fmt::format("{}: unexpected reply ({})", what, rd_kafka_event_name(ev.get())));
  }
  if (rd_kafka_resp_err_t err = rd_kafka_event_error(ev.get())) {
    return std::unexpected(broker_error(what, err, rd_kafka_event_error_string(ev.get())));
  }
  return ev;
}

topic_meta read_topic_meta(const rd_kafka_metadata_topic_t& t) {
  topic_meta m;
  m.partitions = static_cast<uint32_t>(t.partition_cnt);
  for (int i = 0; i < t.partition_cnt; ++i) {
    const auto replicas = static_cast<int16_t>(t.partitions[i].replica_cnt);
    m.replication = i == 0 ? replicas : std::min(m.replication, replicas);
  }
  return m;
}

result<cluster_meta> admin_client::metadata() {
  const rd_kafka_metadata_t* raw = nullptr;
  rd_kafka_resp_err_t err = rd_kafka_metadata(rk_.get(), 1, nullptr, &raw, timeout_ms_);
  if (err) return std::unexpected(broker_error("reading cluster metadata", err, nullptr));
  metadata_ptr md(raw);
  cluster_meta out;
  out.brokers = static_cast<uint32_t>(md->broker_cnt);
  for (int i = 0; i < md->topic_cnt; ++i) {
    const rd_kafka_metadata_topic_t& t = md->topics[i];
    // A topic still being created or deleted can show up with an error and no partitions.
    if (t.err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART || t.partition_cnt <= 0) continue;
    out.topics.emplace(t.topic, read_topic_meta(t));
  }
  return out;
}

error group_failures(std::string_view verb, const std::vector<topic_failure>& failures) {
  // Eight topics usually fail for one reason; say it once with every topic it concerns.
  std::map<std::string, std::vector<std::string>> by_reason;
  for (const topic_failure& f : failures) {
    const std::string text = f.message.empty() ? rd_kafka_err2str(f.err) : f.message;
    const std::string reason = fmt::format("{} ({})", text, rd_kafka_err2name(f.err));
    by_reason[reason].push_back(f.topic);
  }
  std::vector<std::string> parts;
  for (const auto& [reason, topics] : by_reason) {
    parts.push_back(fmt::format("cannot {} {}: {}", verb, join(topics, ", "), reason));
  }
  return error{errc::io, join(parts, "; ")};
}

std::optional<topic_failure> topic_result_failure(const rd_kafka_topic_result_t* r) {
  rd_kafka_resp_err_t err = rd_kafka_topic_result_error(r);
  // Another `apply` may have created it a moment ago; apply checks the outcome afterwards.
  if (!err || err == RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) return std::nullopt;
  const char* msg = rd_kafka_topic_result_error_string(r);
  return topic_failure{rd_kafka_topic_result_name(r), err, msg ? msg : ""};
}

result<new_topic_ptr> make_new_topic(const topic_spec& spec) {
  char errstr[errstr_bytes];
  new_topic_ptr nt(rd_kafka_NewTopic_new(spec.name.c_str(), static_cast<int>(spec.partitions),
                                         spec.replication, errstr, sizeof errstr));
  if (!nt) return fail(errc::invalid, fmt::format("topic {}: {}", spec.name, errstr));
  for (const auto& [name, value] : topic_configs(spec)) {
    if (rd_kafka_NewTopic_set_config(nt.get(), name.c_str(), value.c_str())) {
      return fail(errc::invalid, fmt::format("topic {}: cannot set {}={}", spec.name, name, value));
    }
  }
  return nt;
}

result<void> admin_client::create_topics(const std::vector<const topic_spec*>& specs,
                                         bool validate_only) {
  if (specs.empty()) return {};
  std::vector<new_topic_ptr> owned;
  std::vector<rd_kafka_NewTopic_t*> raw;
  for (const topic_spec* spec : specs) {
    auto nt = make_new_topic(*spec);
    if (!nt) return std::unexpected(nt.error());
    raw.push_back(nt->get());
    owned.push_back(std::move(*nt));
  }
  auto opts = options(RD_KAFKA_ADMIN_OP_CREATETOPICS, validate_only);
  if (!opts) return std::unexpected(opts.error());
  rd_kafka_CreateTopics(rk_.get(), raw.data(), raw.size(), opts->get(), queue_.get());
  auto ev = wait_result("creating topics", RD_KAFKA_EVENT_CREATETOPICS_RESULT);
  if (!ev) return std::unexpected(ev.error());
  size_t n = 0;
  const rd_kafka_topic_result_t** results =
      rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(ev->get()), &n);
  std::vector<topic_failure> failures;
  for (size_t i = 0; i < n; ++i) {
    if (auto f = topic_result_failure(results[i])) failures.push_back(std::move(*f));
  }
  if (!failures.empty()) return std::unexpected(group_failures("create", failures));
  return {};
}

result<void> admin_client::create_partitions(
    const std::vector<std::pair<std::string, uint32_t>>& totals, bool validate_only) {
  if (totals.empty()) return {};
  std::vector<new_partitions_ptr> owned;
  std::vector<rd_kafka_NewPartitions_t*> raw;
  char errstr[errstr_bytes];
  for (const auto& [topic, total] : totals) {
    owned.emplace_back(rd_kafka_NewPartitions_new(topic.c_str(), total, errstr, sizeof errstr));
    if (!owned.back()) return fail(errc::invalid, fmt::format("topic {}: {}", topic, errstr));
    raw.push_back(owned.back().get());
  }
  auto opts = options(RD_KAFKA_ADMIN_OP_CREATEPARTITIONS, validate_only);
  if (!opts) return std::unexpected(opts.error());
  rd_kafka_CreatePartitions(rk_.get(), raw.data(), raw.size(), opts->get(), queue_.get());
  auto ev = wait_result("adding partitions", RD_KAFKA_EVENT_CREATEPARTITIONS_RESULT);
  if (!ev) return std::unexpected(ev.error());
  size_t n = 0;
  const rd_kafka_topic_result_t** results = rd_kafka_CreatePartitions_result_topics(
      rd_kafka_event_CreatePartitions_result(ev->get()), &n);
  std::vector<topic_failure> failures;
  for (size_t i = 0; i < n; ++i) {
    if (auto f = topic_result_failure(results[i])) failures.push_back(std::move(*f));
  }
  if (!failures.empty()) return std::unexpected(group_failures("add partitions to", failures));
  return {};
}

topic_config read_topic_config(const rd_kafka_ConfigResource_t* res) {
  topic_config out;
  size_t n = 0;
  const rd_kafka_ConfigEntry_t** entries = rd_kafka_ConfigResource_configs(res, &n);
  for (size_t i = 0; i < n; ++i) {
    const char* value = rd_kafka_ConfigEntry_value(entries[i]);
    config_entry e;
    if (value) e.value = value;
    e.topic_override =
        rd_kafka_ConfigEntry_source(entries[i]) == RD_KAFKA_CONFIG_SOURCE_DYNAMIC_TOPIC_CONFIG;
    out.emplace(rd_kafka_ConfigEntry_name(entries[i]), std::move(e));
  }
  return out;
}

std::optional<topic_failure> resource_failure(const rd_kafka_ConfigResource_t* res) {
  rd_kafka_resp_err_t err = rd_kafka_ConfigResource_error(res);
  if (!err) return std::nullopt;
  const char* msg = rd_kafka_ConfigResource_error_string(res);
  return topic_failure{rd_kafka_ConfigResource_name(res), err, msg ? msg : ""};
}

result<std::map<std::string, topic_config>> admin_client::describe_configs(
    const std::vector<std::string>& topics) {
  std::map<std::string, topic_config> out;
  if (topics.empty()) return out;
  std::vector<config_resource_ptr> owned;
  std::vector<rd_kafka_ConfigResource_t*> raw;
  for (const std::string& t : topics) {
    owned.emplace_back(rd_kafka_ConfigResource_new(RD_KAFKA_RESOURCE_TOPIC, t.c_str()));
    raw.push_back(owned.back().get());
  }
  auto opts = options(RD_KAFKA_ADMIN_OP_DESCRIBECONFIGS, false);
  if (!opts) return std::unexpected(opts.error());
  rd_kafka_DescribeConfigs(rk_.get(), raw.data(), raw.size(), opts->get(), queue_.get());
  auto ev = wait_result("reading topic configs", RD_KAFKA_EVENT_DESCRIBECONFIGS_RESULT);
  if (!ev) return std::unexpected(ev.error());
  size_t n = 0;
  const rd_kafka_ConfigResource_t** results = rd_kafka_DescribeConfigs_result_resources(
      rd_kafka_event_DescribeConfigs_result(ev->get()), &n);
  std::vector<topic_failure> failures;
  for (size_t i = 0; i < n; ++i) {
    if (auto f = resource_failure(results[i])) {
      failures.push_back(std::move(*f));
      continue;
    }
    out.emplace(rd_kafka_ConfigResource_name(results[i]), read_topic_config(results[i]));
  }
  if (!failures.empty()) return std::unexpected(group_failures("read the configs of", failures));
  return out;
}

result<void> admin_client::alter_configs(
    const std::vector<std::pair<std::string, config_list>>& configs, bool validate_only) {
  if (configs.empty()) return {};
  std::vector<config_resource_ptr> owned;
  std::vector<rd_kafka_ConfigResource_t*> raw;
  for (const auto& [topic, entries] : configs) {
    owned.emplace_back(rd_kafka_ConfigResource_new(RD_KAFKA_RESOURCE_TOPIC, topic.c_str()));
    for (const auto& [name, value] : entries) {
      if (rd_kafka_ConfigResource_set_config(owned.back().get(), name.c_str(), value.c_str())) {
        return fail(errc::invalid, fmt::format("topic {}: cannot set {}={}", topic, name, value));
      }
    }
    raw.push_back(owned.back().get());
  }
  auto opts = options(RD_KAFKA_ADMIN_OP_ALTERCONFIGS, validate_only);
  if (!opts) return std::unexpected(opts.error());
  rd_kafka_AlterConfigs(rk_.get(), raw.data(), raw.size(), opts->get(), queue_.get());
  auto ev = wait_result("changing topic configs", RD_KAFKA_EVENT_ALTERCONFIGS_RESULT);
  if (!ev) return std::unexpected(ev.error());
  size_t n = 0;
  const rd_kafka_ConfigResource_t** results =
      rd_kafka_AlterConfigs_result_resources(rd_kafka_event_AlterConfigs_result(ev->get()), &n);
  std::vector<topic_failure> failures;
  for (size_t i = 0; i < n; ++i) {
    if (auto f = resource_failure(results[i])) failures.push_back(std::move(*f));
  }
  if (!failures.empty()) return std::unexpected(group_failures("change the configs of", failures));
  return {};
}

// --- comparing the cluster with the catalog ----------------------------------------------

struct observed_topic {
  bool exists = false;
  topic_meta meta;
  topic_config configs;
};

result<std::vector<observed_topic>> observe(admin_client& c,
                                            const std::vector<topic_spec>& catalog) {
  auto md = c.metadata();
  if (!md) return std::unexpected(md.error());
  std::vector<observed_topic> out(catalog.size());
  std::vector<std::string> existing;
  for (size_t i = 0; i < catalog.size(); ++i) {
    auto it = md->topics.find(catalog[i].name);
    if (it == md->topics.end()) continue;
    out[i].exists = true;
    out[i].meta = it->second;
    existing.push_back(catalog[i].name);
  }
  auto configs = c.describe_configs(existing);
  if (!configs) return std::unexpected(configs.error());
  for (size_t i = 0; i < catalog.size(); ++i) {
    if (auto it = configs->find(catalog[i].name); it != configs->end()) {
      out[i].configs = std::move(it->second);
    }
  }
  return out;
}

topic_state compare(const topic_spec& want, const observed_topic& have) {
  topic_state s;
  s.want = want;
  s.exists = have.exists;
  if (!have.exists) {
    s.verdict = topic_verdict::missing;
    s.differences.push_back("missing");
    return s;
  }
  s.partitions = have.meta.partitions;
  s.replication = have.meta.replication;
  if (s.partitions != want.partitions) {
    s.differences.push_back(fmt::format("partitions {} (want {})", s.partitions, want.partitions));
  }
  if (s.replication != want.replication) {
    s.differences.push_back(fmt::format("rf {} (want {})", s.replication, want.replication));
  }
  for (const auto& [name, value] : topic_configs(want)) {
    auto it = have.configs.find(name);
    std::string actual = it != have.configs.end() ? it->second.value.value_or("") : "";
    if (actual != value) {
      s.differences.push_back(fmt::format("{}={} (want {})", name, actual, value));
    }
    s.configs.emplace_back(name, std::move(actual));
  }
  s.verdict = s.differences.empty() ? topic_verdict::ok : topic_verdict::differs;
  return s;
}

std::vector<topic_state> compare_all(const std::vector<topic_spec>& catalog,
                                     const std::vector<observed_topic>& observed) {
  std::vector<topic_state> out;
  for (size_t i = 0; i < catalog.size(); ++i) out.push_back(compare(catalog[i], observed[i]));
  return out;
}

// --- planning ----------------------------------------------------------------------------

struct config_change {
  std::string topic;
  config_list changed;  // catalog values that differ, for the report
  config_list full;     // everything the topic will have set on itself (AlterConfigs replaces)
};

struct plan {
  std::vector<const topic_spec*> create;
  std::vector<std::pair<std::string, uint32_t>> grow;  // topic, new partition total
  std::vector<config_change> alter;
  std::vector<std::string> lines;  // one per action, in catalog order
  // What apply will not do, as reason -> topics (eight topics usually share one reason).
  std::map<std::string, std::vector<std::string>> refusals;

  void refuse(const std::string& topic, std::string reason) {
    refusals[std::move(reason)].push_back(topic);
  }
  std::string refusal_text() const {
    std::vector<std::string> parts;
    for (const auto& [reason, topics] : refusals) {
      parts.push_back(join(topics, ", ") + ": " + reason);
    }
    return join(parts, "; ");
  }
};

// "created" when done, "would create" in a dry run.
std::string verb(bool dry_run, std::string_view done, std::string_view planned) {
  return dry_run ? fmt::format("would {}", planned) : std::string(done);
}

std::string describe_new_topic(const topic_spec& spec) {
  std::vector<std::string> parts = {fmt::format("{} partitions", spec.partitions),
                                    fmt::format("rf {}", spec.replication)};
  for (const auto& [name, value] : topic_configs(spec)) parts.push_back(name + "=" + value);
  return fmt::format("{} ({})", spec.name, join(parts, ", "));
}

// AlterConfigs (the only config call in librdkafka 2.0.2; IncrementalAlterConfigs came in
// 2.2) replaces a topic's whole config: anything not sent reverts to the broker default. So
// send the topic's current overrides with the catalog's values laid over them.
result<config_list> merged_overrides(const topic_spec& want, const topic_config& current) {
  std::map<std::string, std::string> merged;
  for (const auto& [name, entry] : current) {
    if (!entry.topic_override) continue;
    if (!entry.value) {
      return fail(errc::invalid,
                  fmt::format("sensitive override {} would be erased by changing the topic's "
                              "configs; set the catalog's values by hand",
                              name));
    }
    merged[name] = *entry.value;
  }
  for (const auto& [name, value] : topic_configs(want)) merged[name] = value;
  return config_list(merged.begin(), merged.end());
}

void plan_partitions(const topic_spec& want, const observed_topic& have, const apply_options& opts,
                     plan& p) {
  const uint32_t n = have.meta.partitions;
  if (n == want.partitions) return;
  if (n > want.partitions) {
    p.refuse(want.name, fmt::format("{} partitions, the catalog wants {}: Kafka cannot remove "
                                    "partitions",
                                    n, want.partitions));
  } else if (want.co_partitioned && !opts.allow_repartition) {
    p.refuse(want.name,
             fmt::format("{} partitions, the catalog wants {}: more partitions move tenants away "
                         "from their state and unread records (allow_repartition / "
                         "--allow-repartition, with the engine stopped)",
                         n, want.partitions));
  } else {
    p.grow.emplace_back(want.name, want.partitions);
    p.lines.push_back(fmt::format("{} partitions of {} from {} to {}",
                                  verb(opts.dry_run, "raised", "raise"), want.name, n,
                                  want.partitions));
  }
}

void plan_configs(const topic_spec& want, const observed_topic& have, const apply_options& opts,
                  plan& p) {
  config_change change{want.name, {}, {}};
  for (const auto& [name, value] : topic_configs(want)) {
    auto it = have.configs.find(name);
    if (it != have.configs.end() && it->second.value == value) continue;
    change.changed.emplace_back(name, value);
    p.lines.push_back(
        fmt::format("{} {}={} on {}", verb(opts.dry_run, "set", "set"), name, value, want.name));
  }
  if (change.changed.empty()) return;
  auto full = merged_overrides(want, have.configs);
  if (!full) {
    p.refuse(want.name, full.error().message);
    return;
  }
  change.full = std::move(*full);
  p.alter.push_back(std::move(change));
}

size_t refusal_count(const plan& p) {
  size_t n = 0;
  for (const auto& [reason, topics] : p.refusals) n += topics.size();
  return n;
}

void plan_topic(const topic_spec& want, const observed_topic& have, const apply_options& opts,
                plan& p) {
  if (!have.exists) {
    p.create.push_back(&want);
    p.lines.push_back(
        fmt::format("{} {}", verb(opts.dry_run, "created", "create"), describe_new_topic(want)));
    return;
  }
  const size_t lines_before = p.lines.size();
  const size_t refusals_before = refusal_count(p);
  if (have.meta.replication != want.replication) {
    p.refuse(want.name, fmt::format("replication factor {}, the catalog wants {}: apply does not "
                                    "move replicas (kafka-reassign-partitions does)",
                                    have.meta.replication, want.replication));
  }
  plan_partitions(want, have, opts, p);
  plan_configs(want, have, opts, p);
  if (p.lines.size() == lines_before && refusal_count(p) == refusals_before) {
    p.lines.push_back("ok: " + want.name);
  }
}

plan make_plan(const std::vector<topic_spec>& catalog, const std::vector<observed_topic>& observed,
               const apply_options& opts) {
  plan p;
  for (size_t i = 0; i < catalog.size(); ++i) plan_topic(catalog[i], observed[i], opts, p);
  return p;
}

result<void> execute(admin_client& c, const plan& p, bool dry_run) {
  if (auto r = c.create_topics(p.create, dry_run); !r) return r;
  if (auto r = c.create_partitions(p.grow, dry_run); !r) return r;
  std::vector<std::pair<std::string, config_list>> alter;
  for (const config_change& change : p.alter) alter.emplace_back(change.topic, change.full);
  return c.alter_configs(alter, dry_run);
}

// What still differs from the catalog, one line per topic; empty when all match. The broker
// that answers may not know a new topic yet, so an error is one more thing to wait for.
std::vector<std::string> not_matching(admin_client& c, const std::vector<topic_spec>& catalog) {
  auto observed = observe(c, catalog);
  if (!observed) return {observed.error().message};
  std::vector<std::string> out;
  for (const topic_state& s : compare_all(catalog, *observed)) {
    if (s.verdict != topic_verdict::ok) {
      out.push_back(s.want.name + ": " + join(s.differences, ", "));
    }
  }
  return out;
}

// Brokers learn of new topics, partitions and configs through the metadata log, a moment after
// the controller accepted them; wait until the cluster reports the catalog.
result<void> await_catalog(admin_client& c, const std::vector<topic_spec>& catalog) {
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(c.timeout_ms());
  while (true) {
    const std::vector<std::string> pending = not_matching(c, catalog);
    if (pending.empty()) return {};
    if (std::chrono::steady_clock::now() >= deadline) {
      return fail(errc::io, fmt::format("applied, but after admin_timeout_ms={} the cluster still "
                                        "reports {}",
                                        c.timeout_ms(), join(pending, "; ")));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(settle_poll_ms));
  }
}

// --- co-partitioning ---------------------------------------------------------------------

std::string apply_hint(std::string_view prefix) {
  return prefix.empty() ? "run `auterity topics apply`"
                        : fmt::format("run `auterity topics apply --prefix {}`", prefix);
}

// "ingress, executions have 4, acks has 2": most common count first.
std::string describe_disagreement(const std::map<uint32_t, std::vector<std::string>>& by_count) {
  std::vector<std::pair<uint32_t, std::vector<std::string>>> groups(by_count.begin(),
                                                                    by_count.end());
  std::stable_sort(groups.begin(), groups.end(),
                   [](const auto& a, const auto& b) { return a.second.size() > b.second.size(); });
  std::vector<std::string> parts;
  for (const auto& [count, topics] : groups) {
    parts.push_back(
        fmt::format("{} {} {}", join(topics, ", "), topics.size() == 1 ? "has" : "have", count));
  }
  return join(parts, ", ");
}

}  // namespace

// --- public ------------------------------------------------------------------------------

std::vector<std::pair<std::string, std::string>> topic_configs(const topic_spec& spec) {
  return {
      {"cleanup.policy", spec.cleanup_policy},
      {"retention.ms", std::to_string(spec.retention_ms)},
      {"min.insync.replicas", std::to_string(spec.min_insync_replicas)},
      {"max.message.bytes", std::to_string(spec.max_message_bytes)},
  };
}

std::vector<topic_spec> default_catalog(const catalog_options& o) {
  const int min_insync =
      o.min_insync_replicas > 0 ? o.min_insync_replicas : (o.replication >= 3 ? 2 : 1);
  std::vector<topic_spec> out;
  for (int i = 0; i < stream_count; ++i) {
    topic_spec t;
    t.s = static_cast<stream>(i);
    t.name = o.prefix + std::string(stream_name(t.s));
    t.partitions = o.partitions;
    t.replication = o.replication;
    t.min_insync_replicas = min_insync;
    if (t.s == stream::executions) t.retention_ms = retention_forever_ms;
    if (t.s == stream::deadletter) t.retention_ms = retention_deadletter_ms;
    if (t.s == stream::definitions) {
      t.cleanup_policy = "compact";
      t.retention_ms = retention_forever_ms;
    }
    out.push_back(std::move(t));
  }
  return out;
}

result<void> validate_catalog(const std::vector<topic_spec>& catalog) {
  std::set<std::string> names;
  std::optional<uint32_t> shared;
  for (const topic_spec& t : catalog) {
    if (t.name.empty() || !names.insert(t.name).second) {
      return fail(errc::invalid, fmt::format("topic name '{}' is empty or repeated", t.name));
    }
    if (t.partitions < 1 || t.partitions > topic_partitions_max) {
      return fail(errc::invalid, fmt::format("{}: partitions must be 1..{} (got {})", t.name,
                                             topic_partitions_max, t.partitions));
    }
    if (t.replication < 1 || t.replication > topic_replication_max) {
      return fail(errc::invalid, fmt::format("{}: replication must be 1..{} (got {})", t.name,
                                             topic_replication_max, t.replication));
    }
    if (t.min_insync_replicas < 1 || t.min_insync_replicas > t.replication) {
      return fail(errc::invalid,
                  fmt::format("{}: min.insync.replicas must be 1..{} (the replication factor), "
                              "got {}",
                              t.name, t.replication, t.min_insync_replicas));
    }
    if (!t.co_partitioned) continue;
    if (shared && *shared != t.partitions) {
      return fail(errc::invalid, fmt::format("{}: co-partitioned topics must share one partition "
                                             "count ({} vs {})",
                                             t.name, t.partitions, *shared));
    }
    shared = t.partitions;
  }
  return {};
}

const char* topic_verdict_name(topic_verdict v) {
  switch (v) {
    case topic_verdict::ok:
      return "ok";
    case topic_verdict::missing:
      return "missing";
    case topic_verdict::differs:
      return "differs";
  }
  return "?";
}

result<std::vector<topic_state>> describe_catalog(const kafka_cluster_access& cluster,
                                                  const std::vector<topic_spec>& catalog,
                                                  int admin_timeout_ms) {
  auto c = admin_client::open(cluster, admin_timeout_ms);
  if (!c) return std::unexpected(c.error());
  auto observed = observe(*c, catalog);
  if (!observed) return std::unexpected(observed.error());
  return compare_all(catalog, *observed);
}

namespace {

// The placement topic of the deployment whose executions topic is `executions` (same prefix,
// replication and min.insync.replicas; one partition, compacted, kept forever), created if it
// is missing. Returns its header, if it holds one.
result<std::optional<placement_header>> ensure_placement_topic(admin_client& c,
                                                               const kafka_cluster_access& cluster,
                                                               const topic_spec& executions,
                                                               std::string& name, int timeout_ms) {
  const std::string prefix =
      executions.name.substr(0, executions.name.size() - stream_name(stream::executions).size());
  topic_spec spec;
  spec.s = stream::definitions;  // unused for this topic: it is not one of the streams
  spec.name = prefix + std::string(placement_topic_suffix);
  spec.partitions = 1;
  spec.replication = executions.replication;
  spec.co_partitioned = false;
  spec.cleanup_policy = "compact";
  spec.retention_ms = retention_forever_ms;
  spec.min_insync_replicas = executions.min_insync_replicas;
  name = spec.name;
  auto md = c.metadata();
  if (!md) return std::unexpected(md.error());
  if (md->topics.contains(spec.name)) {
    std::map<std::string, std::string> conf = cluster.properties;
    conf["bootstrap.servers"] = cluster.bootstrap;
    return read_kafka_placement(conf, spec.name, timeout_ms);
  }
  if (auto r = c.create_topics({&spec}, false); !r) return std::unexpected(r.error());
  return std::nullopt;
}

// Writes the header to the placement topic; the leader of a topic just created may take a
// moment to be known: a few attempts.
result<void> write_placement(const kafka_cluster_access& cluster, const std::string& topic,
                             const placement_header& h, int timeout_ms) {
  std::map<std::string, std::string> conf = cluster.properties;
  conf["bootstrap.servers"] = cluster.bootstrap;
  result<void> written;
  for (int attempt = 0; attempt < 10; ++attempt) {
    written = write_kafka_placement(conf, topic, h, timeout_ms);
    if (written) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
  return written;
}

// Before the co-partitioned topics get more partitions: the placement header records the count
// they have now as the base (engine/kafka_placement.h), unless a header is there already, so
// every tenant keeps its default partition and the new partitions start empty. Returns the line
// for the output, or nullopt if nothing was to be done.
result<std::optional<std::string>> record_placement_base(
    admin_client& c, const kafka_cluster_access& cluster, const std::vector<topic_spec>& catalog,
    const std::vector<observed_topic>& observed, const plan& p, int timeout_ms) {
  const topic_spec* executions = nullptr;
  uint32_t now = 0;
  for (size_t i = 0; i < catalog.size(); ++i) {
    if (catalog[i].s != stream::executions || !observed[i].exists) continue;
    executions = &catalog[i];
    now = observed[i].meta.partitions;
  }
  const bool grows = std::ranges::any_of(p.grow, [&](const auto& g) {
    return std::ranges::any_of(
        catalog, [&](const topic_spec& t) { return t.co_partitioned && t.name == g.first; });
  });
  if (!executions || !grows) return std::nullopt;
  std::string topic;
  auto have = ensure_placement_topic(c, cluster, *executions, topic, timeout_ms);
  if (!have) return std::unexpected(have.error());
  if (*have)
    return std::optional<std::string>(fmt::format("ok: {} (base {})", topic, (*have)->base));
  if (auto w = write_placement(cluster, topic, placement_header{now, {}}, timeout_ms); !w) {
    return std::unexpected(w.error());
  }
  return std::optional<std::string>(
      fmt::format("recorded placement base {} in {}: tenants keep their partitions", now, topic));
}

}  // namespace

result<std::vector<std::string>> apply_catalog(const kafka_cluster_access& cluster,
                                               const std::vector<topic_spec>& catalog,
                                               const apply_options& options) {
  if (auto v = validate_catalog(catalog); !v) return std::unexpected(v.error());
  auto c = admin_client::open(cluster, options.admin_timeout_ms);
  if (!c) return std::unexpected(c.error());
  auto observed = observe(*c, catalog);
  if (!observed) return std::unexpected(observed.error());
  plan p = make_plan(catalog, *observed, options);
  if (!p.refusals.empty()) {
    return fail(errc::invalid, "refusing to apply, nothing changed: " + p.refusal_text());
  }
  if (!options.dry_run) {
    auto base = record_placement_base(*c, cluster, catalog, *observed, p, options.admin_timeout_ms);
    if (!base) return std::unexpected(base.error());
    if (*base) p.lines.push_back(**base);
  }
  if (auto r = execute(*c, p, options.dry_run); !r) return std::unexpected(r.error());
  if (!options.dry_run) {
    if (auto r = await_catalog(*c, catalog); !r) return std::unexpected(r.error());
  }
  return p.lines;
}

result<uint32_t> check_copartitioned(const kafka_cluster_access& cluster, std::string_view prefix,
                                     int admin_timeout_ms) {
  auto c = admin_client::open(cluster, admin_timeout_ms);
  if (!c) return std::unexpected(c.error());
  auto md = c->metadata();
  if (!md) return std::unexpected(md.error());
  std::vector<std::string> missing;
  std::map<uint32_t, std::vector<std::string>> by_count;
  for (const topic_spec& t : default_catalog({.prefix = std::string(prefix)})) {
    auto it = md->topics.find(t.name);
    if (it == md->topics.end()) {
      missing.push_back(t.name);
    } else {
      by_count[it->second.partitions].push_back(t.name);
    }
  }
  if (!missing.empty()) {
    return fail(errc::not_found, fmt::format("co-partitioned topics missing: {}; {}",
                                             join(missing, ", "), apply_hint(prefix)));
  }
  if (by_count.size() > 1) {
    return fail(errc::invalid,
                fmt::format("co-partitioned topics disagree on partition count: {}; {}",
                            describe_disagreement(by_count), apply_hint(prefix)));
  }
  return by_count.begin()->first;
}

result<cluster_shape> probe_cluster(const kafka_cluster_access& cluster, std::string_view prefix,
                                    int admin_timeout_ms) {
  auto c = admin_client::open(cluster, admin_timeout_ms);
  if (!c) return std::unexpected(c.error());
  auto md = c->metadata();
  if (!md) return std::unexpected(md.error());
  cluster_shape shape;
  shape.brokers = md->brokers;
  for (const topic_spec& t : default_catalog({.prefix = std::string(prefix)})) {
    auto it = md->topics.find(t.name);
    if (it == md->topics.end()) continue;
    shape.partitions_max = std::max(shape.partitions_max, it->second.partitions);
    shape.replication_max = std::max(shape.replication_max, it->second.replication);
  }
  return shape;
}

result<std::vector<topic_spec>> catalog_for_cluster(const kafka_cluster_access& cluster,
                                                    const catalog_options& wanted,
                                                    int admin_timeout_ms) {
  constexpr int16_t replication_default_max = 3;
  auto shape = probe_cluster(cluster, wanted.prefix, admin_timeout_ms);
  if (!shape) return std::unexpected(shape.error());
  catalog_options o = wanted;
  o.partitions = wanted.partitions       ? wanted.partitions
                 : shape->partitions_max ? shape->partitions_max
                                         : topic_partitions_default;
  const auto by_brokers = static_cast<int16_t>(
      std::min<uint32_t>(replication_default_max, std::max(shape->brokers, 1u)));
  o.replication = wanted.replication       ? wanted.replication
                  : shape->replication_max ? shape->replication_max
                                           : by_brokers;
  std::vector<topic_spec> catalog = default_catalog(o);
  if (auto v = validate_catalog(catalog); !v) return std::unexpected(v.error());
  return catalog;
}

result<std::string> record_placement_retired(const kafka_cluster_access& cluster,
                                             std::string_view prefix,
                                             const std::vector<uint32_t>& retired,
                                             int admin_timeout_ms) {
  auto catalog = catalog_for_cluster(
      cluster, {.partitions = 0, .replication = 0, .prefix = std::string(prefix)},
      admin_timeout_ms);
  if (!catalog) return std::unexpected(catalog.error());
  auto c = admin_client::open(cluster, admin_timeout_ms);
  if (!c) return std::unexpected(c.error());
  const topic_spec& executions = (*catalog)[static_cast<size_t>(stream::executions)];
  for (uint32_t r : retired) {
    if (r >= executions.partitions) {
      return fail(errc::invalid, fmt::format("partition {} cannot be retired: the topics have {}",
                                             r, executions.partitions));
    }
  }
  std::string topic;
  auto have = ensure_placement_topic(*c, cluster, executions, topic, admin_timeout_ms);
  if (!have) return std::unexpected(have.error());
  placement_header h{*have ? (*have)->base : executions.partitions, retired};
  std::ranges::sort(h.retired);
  if (*have && (*have)->retired == h.retired) {
    return fmt::format("ok: {} (base {}, retired as planned)", topic, h.base);
  }
  if (auto w = write_placement(cluster, topic, h, admin_timeout_ms); !w) {
    return std::unexpected(w.error());
  }
  std::string list;
  for (uint32_t r : h.retired) list += fmt::format("{}{}", list.empty() ? "" : ",", r);
  return fmt::format("recorded in {}: base {}, retired {}", topic, h.base,
                     list.empty() ? std::string("none") : list);
}

}  // namespace auterity
