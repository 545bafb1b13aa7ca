// `partitions plan --kafka` and `partitions scale --kafka` (docs/tenant-moves.md, "On Kafka"):
// every partition's state rebuilt from the executions topic by the gateway's read replica
// (api/replica.h: read_committed, through the processors' appliers), surveyed and planned as on
// the embedded log (node/scale.h); a scale then grows the topics as `topics apply
// --allow-repartition` does, or records the retired partitions in the placement header, and
// publishes the planned moves on ingress.

#include <unistd.h>

#include <librdkafka/rdkafka.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <set>
#include <thread>

#include <fmt/core.h>
#include <fmt/ranges.h>

#include "api/replica.h"
#include "cli/cli.h"
#include "engine/kafka_util.h"
#include "processors/client.h"
#include "processors/orchestrator.h"
#include "topics/catalog.h"

namespace auterity {

namespace {

// How often the survey reports its progress on stderr while it reads the executions topic.
constexpr auto survey_progress_interval = std::chrono::seconds(1);
// How long the replica may stay stuck on one read error before the survey gives up.
constexpr auto survey_stuck_max = std::chrono::seconds(60);

kafka_cluster_access cluster_of(const kafka_log_options& k) {
  return {k.bootstrap, k.client_config};
}

// How often `scale` describes the orchestrator group while it waits, and reports on stderr.
constexpr auto group_wait_poll_interval = std::chrono::seconds(1);

using admin_ptr = kafka_handle<rd_kafka_t, rd_kafka_destroy>;
using queue_ptr = kafka_handle<rd_kafka_queue_t, rd_kafka_queue_destroy>;
using event_ptr = kafka_handle<rd_kafka_event_t, rd_kafka_event_destroy>;
using options_ptr = kafka_handle<rd_kafka_AdminOptions_t, rd_kafka_AdminOptions_destroy>;

// The orchestrator group as `scale` waits on it: the ids of the members that are given
// partitions of this deployment's ingress topic (the group id is the same for every topic
// prefix on a cluster), and those partitions.
struct group_view {
  std::string state;
  std::vector<std::pair<std::string, std::string>> members;  // (instance id, member id)
  std::set<int32_t> assigned;
};

result<group_view> describe_orchestrators(rd_kafka_t* admin, rd_kafka_queue_t* queue,
                                          const std::string& group, const std::string& ingress,
                                          int timeout_ms) {
  options_ptr o(rd_kafka_AdminOptions_new(admin, RD_KAFKA_ADMIN_OP_DESCRIBECONSUMERGROUPS));
  char errstr[256];
  (void)rd_kafka_AdminOptions_set_request_timeout(o.get(), timeout_ms, errstr, sizeof errstr);
  const char* ids[] = {group.c_str()};
  rd_kafka_DescribeConsumerGroups(admin, ids, 1, o.get(), queue);
  event_ptr ev(rd_kafka_queue_poll(queue, timeout_ms + 5'000));
  if (!ev) return fail(errc::timeout, fmt::format("describing {}: no answer", group));
  if (rd_kafka_event_error(ev.get())) {
    return fail(errc::io,
                fmt::format("describing {}: {}", group, rd_kafka_event_error_string(ev.get())));
  }
  size_t n = 0;
  const auto* const* descs = rd_kafka_DescribeConsumerGroups_result_groups(
      rd_kafka_event_DescribeConsumerGroups_result(ev.get()), &n);
  group_view out;
  for (size_t i = 0; i < n; ++i) {
    if (const rd_kafka_error_t* err = rd_kafka_ConsumerGroupDescription_error(descs[i])) {
      return fail(errc::io, fmt::format("describing {}: {}", group, rd_kafka_error_string(err)));
    }
    out.state =
        rd_kafka_consumer_group_state_name(rd_kafka_ConsumerGroupDescription_state(descs[i]));
    for (size_t m = 0; m < rd_kafka_ConsumerGroupDescription_member_count(descs[i]); ++m) {
      const auto* md = rd_kafka_ConsumerGroupDescription_member(descs[i], m);
      const auto* a = rd_kafka_MemberDescription_assignment(md);
      const auto* parts = a ? rd_kafka_MemberAssignment_partitions(a) : nullptr;
      bool ours = false;
      for (int k = 0; parts && k < parts->cnt; ++k) {
        if (ingress != parts->elems[k].topic) continue;
        ours = true;
        out.assigned.insert(parts->elems[k].partition);
      }
      if (!ours) continue;
      const char* instance = rd_kafka_MemberDescription_group_instance_id(md);
      const char* member = rd_kafka_MemberDescription_consumer_id(md);
      out.members.emplace_back(instance ? instance : "?", member ? member : "");
    }
  }
  return out;
}

// Describes the orchestrator group (one admin client for the scale's whole wait).
class group_watch {
 public:
  static result<group_watch> open(const kafka_log_options& k) {
    std::map<std::string, std::string> settings = k.client_config;
    settings["bootstrap.servers"] = k.bootstrap;
    auto conf = kafka_conf_new(settings);
    if (!conf) return std::unexpected(conf.error());
    auto made = kafka_client_new(RD_KAFKA_PRODUCER, *conf, "describing the engine group");
    if (!made) return std::unexpected(made.error());
    group_watch w;
    w._admin.reset(*made);
    w._queue.reset(rd_kafka_queue_new(w._admin.get()));
    w._ingress = k.topic_prefix + std::string(stream_name(stream::ingress));
    w._timeout_ms = std::min(k.request_timeout_ms, 10'000);
    return w;
  }
  result<group_view> describe() {
    return describe_orchestrators(_admin.get(), _queue.get(), group(), _ingress, _timeout_ms);
  }
  static std::string group() { return kafka_group_id(orchestrator_group); }

 private:
  admin_ptr _admin;
  queue_ptr _queue;
  std::string _ingress;
  int _timeout_ms = 10'000;
};

// Waits until the orchestrator group gives out all `partitions` and, when `before` holds the
// member ids from before the topics grew, every member given partitions joined since (an
// instance opens itself again with the new count only once its groups gave it all out:
// docs/tenant-moves.md, "Instances take up a new partition count in process"); a static member
// that rejoins keeps its place but gets a new member id. Reports every second; false after
// `wait` (said why on stderr) or when the group cannot be described.
bool wait_for_instances(group_watch& watch, uint32_t partitions, std::chrono::seconds wait,
                        const std::optional<std::set<std::string>>& before) {
  const auto began = std::chrono::steady_clock::now();
  std::string last;
  for (;;) {
    auto g = watch.describe();
    const auto waited =
        std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() - began);
    if (g && g->members.empty() && (!before || before->empty())) {
      fmt::print(stderr,
                 "auterity: no engine instance runs partitions of this deployment in {}: the "
                 "instances take up {} partitions when they start\n",
                 group_watch::group(), partitions);
      return true;
    }
    if (g) {
      std::vector<std::string> behind;
      for (const auto& [name, id] : g->members) {
        if (before && before->contains(id)) behind.push_back(name);
      }
      size_t assigned = 0;
      for (int32_t p : g->assigned) assigned += p >= 0 && static_cast<uint32_t>(p) < partitions;
      if (behind.empty() && assigned == partitions && g->state == "Stable") {
        fmt::print(stderr, "auterity: the {} instance(s) of {} run {} partitions (after {} s)\n",
                   g->members.size(), group_watch::group(), partitions, waited.count());
        return true;
      }
      last = fmt::format(
          "{} of {} partitions given out; {} of {} instance(s) opened again{}; group {}", assigned,
          partitions, g->members.size() - behind.size(), g->members.size(),
          behind.empty() ? "" : fmt::format(" (not yet: {})", fmt::join(behind, ", ")), g->state);
    } else {
      last = g.error().message;
    }
    if (waited >= wait) {
      fmt::print(stderr, "auterity: the instances did not take up {} partitions within {} s: {}\n",
                 partitions, wait.count(), last);
      return false;
    }
    fmt::print(stderr, "auterity: waiting for the instances to run {} partitions: {} ({} s)\n",
               partitions, last, waited.count());
    std::this_thread::sleep_for(group_wait_poll_interval);
  }
}

}  // namespace

result<kafka_survey> survey_kafka(const kafka_log_options& k, int64_t window_ms) {
  kafka_log_options ro = k;
  ro.read_only = true;  // consumers of its own; it never writes
  ro.appends_only = false;
  auto source = open_kafka_log(ro);
  if (!source) return std::unexpected(source.error());
  kafka_survey out;
  auto events = open_kafka_log(ro);  // the survey's own reads: ingress, the window
  if (!events) return std::unexpected(events.error());
  out.events = std::move(*events);
  uint64_t total = 0;
  for (uint32_t p = 0; p < (*source)->partition_count(); ++p) {
    auto end = (*source)->end_offset(stream::executions, p);
    if (!end) return std::unexpected(end.error());
    total += *end;
  }
  const std::string dir =
      (std::filesystem::temp_directory_path() / fmt::format("auterity-survey-{}", ::getpid()))
          .string();
  struct cleanup {
    std::string dir;
    ~cleanup() {
      std::error_code ec;
      std::filesystem::remove_all(dir, ec);
    }
  } removes{dir};
  const uint32_t partitions = (*source)->partition_count();
  {
    // A fresh directory each survey: the identity only labels its checkpoints.
    auto replica = log_replica::start(std::move(*source), dir,
                                      fmt::format("kafka topic prefix '{}'", k.topic_prefix));
    if (!replica) return std::unexpected(replica.error());
    const auto started = std::chrono::steady_clock::now();
    auto next_report = started + survey_progress_interval;
    std::optional<std::chrono::steady_clock::time_point> stuck_since;
    while (!(*replica)->caught_up()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      const auto now = std::chrono::steady_clock::now();
      const std::string err = (*replica)->last_error();
      if (err.empty()) {
        stuck_since.reset();
      } else if (!stuck_since) {
        stuck_since = now;
      } else if (now - *stuck_since > survey_stuck_max) {
        return fail(errc::io, fmt::format("reading the executions topic: {}", err));
      }
      if (now >= next_report) {
        next_report = now + survey_progress_interval;
        const uint64_t applied = (*replica)->applied();
        fmt::print(stderr,
                   "auterity: reading the executions topic to weigh the tenants: {} of about {} "
                   "records ({:.0f}%){}\n",
                   applied, total, total ? 100.0 * double(applied) / double(total) : 100.0,
                   err.empty() ? "" : "; retrying: " + err);
      }
    }
    fmt::print(stderr, "auterity: read {} records of the executions topic in {:.1f} s\n",
               (*replica)->applied(),
               std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
  }  // the replica stops here; its stores are closed and stay on disk until the survey is done
  std::vector<std::unique_ptr<state_store>> stores;
  std::vector<state_store*> ptrs;
  for (uint32_t p = 0; p < partitions; ++p) {
    state_store_options so;
    so.read_only = true;
    so.block_cache_bytes = 16ull << 20;
    auto s = state_store::open(fmt::format("{}/p{:03}", dir, p), so);
    if (!s) return std::unexpected(s.error());
    ptrs.push_back(s->get());
    stores.push_back(std::move(*s));
  }
  auto survey = survey_placement(*out.events, ptrs, window_ms, /*read_forward=*/true);
  if (!survey) return std::unexpected(survey.error());
  out.survey = std::move(*survey);
  return out;
}

int kafka_apply_scale(const kafka_log_options& k, const placement_header& now,
                      const scale_plan& plan, int64_t now_ms, std::chrono::seconds wait) {
  auto report = [](const error& e) {
    fmt::print(stderr, "auterity: {} ({})\n", e.message, errc_name(e.code));
    return 1;
  };
  auto watch = group_watch::open(k);
  if (!watch) return report(watch.error());
  std::optional<std::set<std::string>> before;  // member ids from before the grow
  if (plan.partitions > plan.partitions_before) {
    auto g = watch->describe();
    if (!g) return report(g.error());
    before.emplace();
    for (const auto& [name, id] : g->members) before->insert(id);
    // Grow the co-partitioned topics; the placement base is recorded first (topics/catalog.h),
    // so no tenant changes partition.
    auto catalog = catalog_for_cluster(
        cluster_of(k), {.partitions = plan.partitions, .replication = 0, .prefix = k.topic_prefix});
    if (!catalog) return report(catalog.error());
    auto lines = apply_catalog(cluster_of(k), *catalog, {.allow_repartition = true});
    if (!lines) return report(lines.error());
    for (const std::string& line : *lines) fmt::print("{}\n", line);
  }
  // Instances size their partitions when they open: one running with the old count refuses a
  // move to a new partition (invalid_move: it does not exist there). Each opens itself again in
  // process once it sees the new count; the moves wait until all of them did (at once when the
  // count did not change, e.g. a rerun after a scale interrupted while it waited).
  if (!plan.moves.empty() && !wait_for_instances(*watch, plan.partitions, wait, before)) {
    fmt::print(
        "the topics have {} partitions; no move published: the engine instances did not all "
        "take up {} partitions within {} s (an instance opens itself again when it sees the "
        "topics grow; restart one that does not), then run this command again: it weighs the "
        "tenants again and publishes the moves\n",
        plan.partitions, plan.partitions, wait.count());
    return 2;
  }
  if (plan.retired != now.retired) {
    auto line = record_placement_retired(cluster_of(k), k.topic_prefix, plan.retired);
    if (!line) return report(line.error());
    fmt::print("{}\n", *line);
  }
  kafka_log_options w = k;
  w.instance_id = fmt::format("cli-scale-{}", ::getpid());
  w.appends_only = true;  // moves are independent commands: no transaction needed
  auto l = open_kafka_log(w);
  if (!l) return report(l.error());
  size_t published = 0;
  for (const planned_move& m : plan.moves) {
    const std::string rid = fmt::format("scale-{}-{}", now_ms, published);
    auto r = client::submit(**l, m.tenant, client::move_tenant({m.tenant, "", rid, now_ms}, m.to));
    if (!r) {
      fmt::print(stderr, "auterity: {} of {} move(s) published\n", published, plan.moves.size());
      return report(r.error());
    }
    ++published;
  }
  fmt::print(
      "{} partitions take tenants; {} move(s) published on ingress: the instances that own the "
      "tenants run them now (a refused one is a rejection with its reason, in the executions "
      "topic); `auterity partitions plan --kafka` shows what is left, and this command again "
      "plans it{}\n",
      plan.active, published,
      plan.retired.empty() ? ""
                           : "; the instances read the retired partitions within a second and "
                             "refuse moves onto them from then on");
  return 0;
}

}  // namespace auterity
