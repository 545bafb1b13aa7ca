// The topic catalog against a real Kafka broker on loopback, started (and stopped, even when a
// test fails) through tests/kafka/broker.sh. Each test uses its own topic prefix, so the tests
// share one broker and do not depend on their order.
//
// What the catalog code reports is checked against librdkafka calls made here directly
// (metadata, DescribeConfigs), not only against its own describe.

#include <librdkafka/rdkafka.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <map>
#include <memory>
#include <optional>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "engine/kafka_util.h"
#include "topics/catalog.h"

namespace auterity {
namespace {

constexpr int timeout_ms = 30000;
constexpr uint32_t partitions = 4;

// --- the broker --------------------------------------------------------------------------

struct command_output {
  int exit_code = -1;
  std::string out;
};

command_output run(const std::string& command) {
  command_output r;
  FILE* p = popen(command.c_str(), "r");
  if (p == nullptr) return r;
  std::array<char, 4096> buf;
  while (size_t n = fread(buf.data(), 1, buf.size(), p)) r.out.append(buf.data(), n);
  const int status = pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

std::string value_of(const std::string& out, std::string_view key) {
  const std::string want = std::string(key) + "=";
  size_t at = out.find(want);
  if (at == std::string::npos) return "";
  at += want.size();
  return out.substr(at, out.find('\n', at) - at);
}

class broker : public ::testing::Test {
 protected:
  // --owner: broker.sh stops the cluster by itself if this process dies without TearDown.
  static void SetUpTestSuite() {
    command_output r =
        run(fmt::format("{} start --nodes 1 --owner {}", AUTERITY_BROKER_SH, getpid()));
    bootstrap_ = value_of(r.out, "BOOTSTRAP");
    dir_ = value_of(r.out, "DIR");
    if (r.exit_code != 0 || bootstrap_.empty()) {
      start_error_ = fmt::format("broker.sh start exited {}: {}", r.exit_code, r.out);
      bootstrap_.clear();
    }
  }

  static void TearDownTestSuite() {
    if (dir_.empty()) return;
    const bool passed = !::testing::UnitTest::GetInstance()->current_test_suite()->Failed();
    // A failed run keeps the broker's data and logs for a look.
    run(fmt::format("{} stop --dir {}{}", AUTERITY_BROKER_SH, dir_, passed ? " --rm" : ""));
    if (!passed) fmt::print(stderr, "broker logs kept in {}\n", dir_);
  }

  void SetUp() override { ASSERT_FALSE(bootstrap_.empty()) << start_error_; }

  static inline std::string bootstrap_, dir_, start_error_;
};

// --- librdkafka, directly -----------------------------------------------------------------

using kafka_ptr = kafka_handle<rd_kafka_t, rd_kafka_destroy>;
using queue_ptr = kafka_handle<rd_kafka_queue_t, rd_kafka_queue_destroy>;
using event_ptr = kafka_handle<rd_kafka_event_t, rd_kafka_event_destroy>;
using resource_ptr = kafka_handle<rd_kafka_ConfigResource_t, rd_kafka_ConfigResource_destroy>;
using new_topic_ptr = kafka_handle<rd_kafka_NewTopic_t, rd_kafka_NewTopic_destroy>;
using metadata_ptr = kafka_handle<const rd_kafka_metadata_t, rd_kafka_metadata_destroy>;

kafka_ptr raw_client(const std::string& bootstrap) {
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  char errstr[512];
  rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap.c_str(), errstr, sizeof errstr);
  kafka_ptr rk(rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr));
  if (!rk) rd_kafka_conf_destroy(conf);
  return rk;
}

struct raw_topic {
  int partitions = 0;
  int replicas = 0;  // of partition 0
};

std::optional<raw_topic> raw_metadata(const std::string& bootstrap, const std::string& topic) {
  kafka_ptr rk = raw_client(bootstrap);
  const rd_kafka_metadata_t* raw = nullptr;
  if (rd_kafka_metadata(rk.get(), 1, nullptr, &raw, timeout_ms)) return std::nullopt;
  metadata_ptr md(raw);
  for (int i = 0; i < md->topic_cnt; ++i) {
    const rd_kafka_metadata_topic_t& t = md->topics[i];
    if (topic != t.topic || t.partition_cnt == 0) continue;
    return raw_topic{t.partition_cnt, t.partitions[0].replica_cnt};
  }
  return std::nullopt;
}

event_ptr wait_event(rd_kafka_queue_t* q) { return event_ptr(rd_kafka_queue_poll(q, timeout_ms)); }

std::map<std::string, std::string> raw_configs(const std::string& bootstrap,
                                               const std::string& topic) {
  kafka_ptr rk = raw_client(bootstrap);
  queue_ptr q(rd_kafka_queue_new(rk.get()));
  resource_ptr res(rd_kafka_ConfigResource_new(RD_KAFKA_RESOURCE_TOPIC, topic.c_str()));
  rd_kafka_ConfigResource_t* arr[] = {res.get()};
  rd_kafka_DescribeConfigs(rk.get(), arr, 1, nullptr, q.get());
  event_ptr ev = wait_event(q.get());
  std::map<std::string, std::string> out;
  if (!ev || rd_kafka_event_error(ev.get())) return out;
  size_t n = 0;
  auto** results = rd_kafka_DescribeConfigs_result_resources(
      rd_kafka_event_DescribeConfigs_result(ev.get()), &n);
  if (n != 1 || rd_kafka_ConfigResource_error(results[0])) return out;
  auto** entries = rd_kafka_ConfigResource_configs(results[0], &n);
  for (size_t i = 0; i < n; ++i) {
    const char* v = rd_kafka_ConfigEntry_value(entries[i]);
    out[rd_kafka_ConfigEntry_name(entries[i])] = v ? v : "";
  }
  return out;
}

// Plain AlterConfigs, as an operator's tool would send it: replaces the topic's whole config.
std::string raw_alter_request(const std::string& bootstrap, const std::string& topic,
                              const std::map<std::string, std::string>& configs) {
  kafka_ptr rk = raw_client(bootstrap);
  queue_ptr q(rd_kafka_queue_new(rk.get()));
  resource_ptr res(rd_kafka_ConfigResource_new(RD_KAFKA_RESOURCE_TOPIC, topic.c_str()));
  for (const auto& [k, v] : configs) {
    rd_kafka_ConfigResource_set_config(res.get(), k.c_str(), v.c_str());
  }
  rd_kafka_ConfigResource_t* arr[] = {res.get()};
  rd_kafka_AlterConfigs(rk.get(), arr, 1, nullptr, q.get());
  event_ptr ev = wait_event(q.get());
  if (!ev) return "no result";
  if (rd_kafka_event_error(ev.get())) return rd_kafka_event_error_string(ev.get());
  size_t n = 0;
  auto** results =
      rd_kafka_AlterConfigs_result_resources(rd_kafka_event_AlterConfigs_result(ev.get()), &n);
  if (n == 1 && rd_kafka_ConfigResource_error(results[0])) {
    return rd_kafka_err2str(rd_kafka_ConfigResource_error(results[0]));
  }
  return "";
}

// The broker acknowledges before DescribeConfigs shows the change (it travels through the
// metadata log); wait for it, so the test sees the drift it made.
std::string raw_alter(const std::string& bootstrap, const std::string& topic,
                      const std::map<std::string, std::string>& configs) {
  if (std::string err = raw_alter_request(bootstrap, topic, configs); !err.empty()) return err;
  for (int i = 0; i < 100; ++i) {
    std::map<std::string, std::string> now = raw_configs(bootstrap, topic);
    bool visible = true;
    for (const auto& [k, v] : configs) visible = visible && now[k] == v;
    if (visible) return "";
    usleep(100 * 1000);
  }
  return "the change did not show in DescribeConfigs within 10 s";
}

std::string raw_create(const std::string& bootstrap, const std::string& topic, int parts) {
  kafka_ptr rk = raw_client(bootstrap);
  queue_ptr q(rd_kafka_queue_new(rk.get()));
  char errstr[512];
  new_topic_ptr nt(rd_kafka_NewTopic_new(topic.c_str(), parts, 1, errstr, sizeof errstr));
  rd_kafka_NewTopic_t* arr[] = {nt.get()};
  rd_kafka_CreateTopics(rk.get(), arr, 1, nullptr, q.get());
  event_ptr ev = wait_event(q.get());
  if (!ev) return "no result";
  if (rd_kafka_event_error(ev.get())) return rd_kafka_event_error_string(ev.get());
  size_t n = 0;
  auto** results =
      rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(ev.get()), &n);
  if (n == 1 && rd_kafka_topic_result_error(results[0])) {
    return rd_kafka_topic_result_error_string(results[0]);
  }
  // Wait until the metadata shows it, as apply does.
  for (int i = 0; i < 100 && !raw_metadata(bootstrap, topic); ++i) usleep(100 * 1000);
  return "";
}

// --- helpers --------------------------------------------------------------------------------

std::vector<topic_spec> catalog_for(const std::string& prefix, uint32_t parts = partitions) {
  return default_catalog({.partitions = parts, .replication = 1, .prefix = prefix});
}

const topic_state& state_of(const std::vector<topic_state>& states, const std::string& name) {
  for (const topic_state& s : states) {
    if (s.want.name == name) return s;
  }
  static const topic_state none;
  ADD_FAILURE() << "no state for " << name;
  return none;
}

bool contains(const std::vector<std::string>& lines, const std::string& line) {
  return std::find(lines.begin(), lines.end(), line) != lines.end();
}

std::string joined(const std::vector<std::string>& lines) {
  std::string out;
  for (const std::string& l : lines) out += l + "\n";
  return out;
}

// --- catalog as data (no broker) --------------------------------------------------------

TEST(topic_catalog, holds_the_eight_streams_co_partitioned_with_their_settings) {
  const std::vector<topic_spec> c =
      default_catalog({.partitions = 6, .replication = 3, .prefix = "p."});
  ASSERT_EQ(c.size(), size_t{stream_count});
  for (const topic_spec& t : c) {
    EXPECT_EQ(t.name, "p." + std::string(stream_name(t.s)));
    EXPECT_EQ(t.partitions, 6u);
    EXPECT_TRUE(t.co_partitioned);
    EXPECT_EQ(t.min_insync_replicas, 2) << t.name;
    EXPECT_EQ(t.cleanup_policy, t.s == stream::definitions ? "compact" : "delete") << t.name;
    EXPECT_GT(t.max_message_bytes, int64_t{record_bytes_max});
  }
  EXPECT_EQ(c[static_cast<size_t>(stream::executions)].retention_ms, -1);
  EXPECT_EQ(c[static_cast<size_t>(stream::ingress)].retention_ms, retention_transient_ms);
  EXPECT_TRUE(validate_catalog(c));

  std::vector<topic_spec> bad = catalog_for("");
  bad[3].min_insync_replicas = 2;  // above rf 1: every acks=all write would fail
  ASSERT_FALSE(validate_catalog(bad));
  EXPECT_NE(validate_catalog(bad).error().message.find("min.insync.replicas"), std::string::npos);
  bad = catalog_for("");
  bad[5].partitions = 8;
  EXPECT_FALSE(validate_catalog(bad));
}

TEST(topic_catalog, unreachable_cluster_is_an_error_naming_the_timeout) {
  auto r = check_copartitioned("127.0.0.1:1", "", 1500);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("admin_timeout_ms=1500"), std::string::npos)
      << r.error().message;
  EXPECT_NE(r.error().message.find("Connection refused"), std::string::npos) << r.error().message;
}

// --- against the broker -------------------------------------------------------------------

TEST_F(broker, apply_creates_every_topic_with_the_catalog_settings_then_is_a_no_op) {
  const std::vector<topic_spec> catalog = catalog_for("a.");
  auto first = apply_catalog(bootstrap_, catalog, {.admin_timeout_ms = timeout_ms});
  ASSERT_TRUE(first) << first.error().message;
  ASSERT_EQ(first->size(), catalog.size()) << joined(*first);
  EXPECT_TRUE(contains(*first,
                       "created a.executions (4 partitions, rf 1, cleanup.policy=delete, "
                       "retention.ms=-1, min.insync.replicas=1, max.message.bytes=" +
                           std::to_string(topic_message_bytes_max) + ")"))
      << joined(*first);

  for (const topic_spec& t : catalog) {
    std::optional<raw_topic> md = raw_metadata(bootstrap_, t.name);
    ASSERT_TRUE(md) << t.name << " missing from the metadata";
    EXPECT_EQ(md->partitions, 4) << t.name;
    EXPECT_EQ(md->replicas, 1) << t.name;
    std::map<std::string, std::string> configs = raw_configs(bootstrap_, t.name);
    EXPECT_EQ(configs["cleanup.policy"], t.cleanup_policy) << t.name;
    EXPECT_EQ(configs["retention.ms"], std::to_string(t.retention_ms)) << t.name;
    EXPECT_EQ(configs["min.insync.replicas"], "1") << t.name;
    EXPECT_EQ(configs["max.message.bytes"], std::to_string(topic_message_bytes_max)) << t.name;
  }
  EXPECT_EQ(raw_configs(bootstrap_, "a.executions")["retention.ms"], "-1");
  EXPECT_EQ(raw_configs(bootstrap_, "a.definitions")["cleanup.policy"], "compact");

  auto states = describe_catalog(bootstrap_, catalog, timeout_ms);
  ASSERT_TRUE(states) << states.error().message;
  for (const topic_state& s : *states) {
    EXPECT_EQ(s.verdict, topic_verdict::ok) << s.want.name << ": " << joined(s.differences);
  }

  auto second = apply_catalog(bootstrap_, catalog, {.admin_timeout_ms = timeout_ms});
  ASSERT_TRUE(second) << second.error().message;
  std::vector<std::string> all_ok;
  for (const topic_spec& t : catalog) all_ok.push_back("ok: " + t.name);
  EXPECT_EQ(*second, all_ok);

  auto common = check_copartitioned(bootstrap_, "a.", timeout_ms);
  ASSERT_TRUE(common) << common.error().message;
  EXPECT_EQ(*common, 4u);
}

TEST_F(broker, describe_reports_config_drift_and_apply_repairs_it_keeping_other_overrides) {
  const std::vector<topic_spec> catalog = catalog_for("d.");
  auto created = apply_catalog(bootstrap_, catalog, {.admin_timeout_ms = timeout_ms});
  ASSERT_TRUE(created) << created.error().message;

  // An operator shortens retention and sets segment.ms with a whole-config AlterConfigs, which
  // also drops the catalog's other overrides on the topic.
  ASSERT_EQ(
      raw_alter(bootstrap_, "d.acks", {{"retention.ms", "3600000"}, {"segment.ms", "7200000"}}),
      "");
  ASSERT_EQ(raw_configs(bootstrap_, "d.acks")["retention.ms"], "3600000");

  auto drift = describe_catalog(bootstrap_, catalog, timeout_ms);
  ASSERT_TRUE(drift) << drift.error().message;
  const topic_state& acks = state_of(*drift, "d.acks");
  EXPECT_EQ(acks.verdict, topic_verdict::differs);
  EXPECT_TRUE(contains(acks.differences, "retention.ms=3600000 (want 604800000)"))
      << joined(acks.differences);
  EXPECT_EQ(state_of(*drift, "d.ingress").verdict, topic_verdict::ok);

  auto repaired = apply_catalog(bootstrap_, catalog, {.admin_timeout_ms = timeout_ms});
  ASSERT_TRUE(repaired) << repaired.error().message;
  EXPECT_TRUE(contains(*repaired, "set retention.ms=604800000 on d.acks")) << joined(*repaired);
  EXPECT_TRUE(contains(*repaired, "ok: d.ingress")) << joined(*repaired);

  std::map<std::string, std::string> now = raw_configs(bootstrap_, "d.acks");
  EXPECT_EQ(now["retention.ms"], "604800000");
  EXPECT_EQ(now["max.message.bytes"], std::to_string(topic_message_bytes_max));
  EXPECT_EQ(now["segment.ms"], "7200000") << "apply erased an override it does not manage";
  auto after = describe_catalog(bootstrap_, catalog, timeout_ms);
  ASSERT_TRUE(after) << after.error().message;
  EXPECT_EQ(state_of(*after, "d.acks").verdict, topic_verdict::ok)
      << joined(state_of(*after, "d.acks").differences);
}

TEST_F(broker, check_copartitioned_names_missing_and_disagreeing_topics) {
  auto nothing = check_copartitioned(bootstrap_, "c.", timeout_ms);
  ASSERT_FALSE(nothing);
  EXPECT_EQ(nothing.error().code, errc::not_found);

  // Everything but acks through the catalog.
  std::vector<topic_spec> without_acks = catalog_for("c.");
  std::erase_if(without_acks, [](const topic_spec& t) { return t.s == stream::acks; });
  auto applied = apply_catalog(bootstrap_, without_acks, {.admin_timeout_ms = timeout_ms});
  ASSERT_TRUE(applied) << applied.error().message;
  auto missing = check_copartitioned(bootstrap_, "c.", timeout_ms);
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code, errc::not_found);
  EXPECT_EQ(missing.error().message,
            "co-partitioned topics missing: c.acks; run `auterity topics apply --prefix c.`");

  // acks by hand, with another partition count.
  ASSERT_EQ(raw_create(bootstrap_, "c.acks", 2), "");
  auto disagree = check_copartitioned(bootstrap_, "c.", timeout_ms);
  ASSERT_FALSE(disagree);
  EXPECT_EQ(disagree.error().code, errc::invalid);
  EXPECT_EQ(disagree.error().message,
            "co-partitioned topics disagree on partition count: c.ingress, c.executions, "
            "c.commands.step, c.commands.ai, c.commands.notify, c.definitions, c.deadletter "
            "have 4, c.acks has 2; run `auterity topics apply --prefix c.`");

  // apply will not move tenants unless told to.
  auto refused = apply_catalog(bootstrap_, catalog_for("c."), {.admin_timeout_ms = timeout_ms});
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().message.find("c.acks: 2 partitions, the catalog wants 4"),
            std::string::npos)
      << refused.error().message;
  EXPECT_NE(refused.error().message.find("allow_repartition"), std::string::npos);
  EXPECT_EQ(raw_metadata(bootstrap_, "c.acks")->partitions, 2) << "a refused apply changed it";

  auto raised = apply_catalog(bootstrap_, catalog_for("c."),
                              {.allow_repartition = true, .admin_timeout_ms = timeout_ms});
  ASSERT_TRUE(raised) << raised.error().message;
  EXPECT_TRUE(contains(*raised, "raised partitions of c.acks from 2 to 4")) << joined(*raised);
  auto agreed = check_copartitioned(bootstrap_, "c.", timeout_ms);
  ASSERT_TRUE(agreed) << agreed.error().message;
  EXPECT_EQ(*agreed, 4u);
}

TEST_F(broker, apply_refuses_to_shrink_and_passes_on_the_brokers_refusal) {
  ASSERT_TRUE(apply_catalog(bootstrap_, catalog_for("s."), {.admin_timeout_ms = timeout_ms}));
  auto shrink = apply_catalog(bootstrap_, catalog_for("s.", 2), {.admin_timeout_ms = timeout_ms});
  ASSERT_FALSE(shrink);
  EXPECT_NE(shrink.error().message.find("Kafka cannot remove partitions"), std::string::npos)
      << shrink.error().message;

  // Replication 3 on a one-broker cluster: the broker says why, for every topic at once.
  auto rf3 = default_catalog({.partitions = 1, .replication = 3, .prefix = "rf."});
  auto refused = apply_catalog(bootstrap_, rf3, {.admin_timeout_ms = timeout_ms});
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().message.find("INVALID_REPLICATION_FACTOR"), std::string::npos)
      << refused.error().message;
  EXPECT_NE(refused.error().message.find("only 1 broker"), std::string::npos)
      << refused.error().message;
  EXPECT_FALSE(raw_metadata(bootstrap_, "rf.ingress"));
}

TEST_F(broker, cli_exit_codes_follow_the_verdict) {
  const std::string bin = AUTERITY_BIN;
  const std::string flags = fmt::format("--bootstrap {} --prefix cli.", bootstrap_);
  command_output missing = run(fmt::format("{} topics describe {} 2>&1", bin, flags));
  EXPECT_EQ(missing.exit_code, 1) << missing.out;
  EXPECT_NE(missing.out.find("cli.ingress"), std::string::npos) << missing.out;

  command_output dry =
      run(fmt::format("{} topics apply {} --partitions 3 --dry-run 2>&1", bin, flags));
  EXPECT_EQ(dry.exit_code, 1) << dry.out;
  EXPECT_NE(dry.out.find("would create cli.acks (3 partitions"), std::string::npos) << dry.out;
  EXPECT_FALSE(raw_metadata(bootstrap_, "cli.acks")) << "a dry run created a topic";

  command_output apply = run(fmt::format("{} topics apply {} --partitions 3 2>&1", bin, flags));
  EXPECT_EQ(apply.exit_code, 0) << apply.out;
  EXPECT_NE(apply.out.find("created cli.acks (3 partitions"), std::string::npos) << apply.out;

  // No --partitions: the catalog follows the existing topics (3), so all match.
  command_output ok = run(fmt::format("{} topics describe {} 2>&1", bin, flags));
  EXPECT_EQ(ok.exit_code, 0) << ok.out;
  EXPECT_NE(ok.out.find("forever"), std::string::npos) << ok.out;

  ASSERT_EQ(raw_alter(bootstrap_, "cli.deadletter", {{"retention.ms", "1000"}}), "");
  command_output drift = run(fmt::format("{} topics describe {} 2>&1", bin, flags));
  EXPECT_EQ(drift.exit_code, 1) << drift.out;
  EXPECT_NE(drift.out.find("retention.ms=1000 (want 2592000000)"), std::string::npos) << drift.out;

  command_output down = run(
      fmt::format("{} topics describe --bootstrap 127.0.0.1:1 --admin-timeout-ms 1000 2>&1", bin));
  EXPECT_EQ(down.exit_code, 2) << down.out;
  EXPECT_NE(down.out.find("admin_timeout_ms=1000"), std::string::npos) << down.out;
}

}  // namespace
}  // namespace auterity
