// `partitions plan --kafka` and `partitions scale --kafka` (docs/tenant-moves.md, "On Kafka"):
// every partition's state rebuilt from the executions topic by the gateway's read replica
// (api/replica.h: read_committed, through the processors' appliers), surveyed and planned as on
// the embedded log (node/scale.h); a scale then grows the topics as `topics apply
// --allow-repartition` does, or records the retired partitions in the placement header, and
// publishes the planned moves on ingress.

#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <thread>

#include <fmt/core.h>

#include "api/replica.h"
#include "cli/cli.h"
#include "processors/client.h"
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
                      const scale_plan& plan, int64_t now_ms) {
  auto report = [](const error& e) {
    fmt::print(stderr, "auterity: {} ({})\n", e.message, errc_name(e.code));
    return 1;
  };
  if (plan.partitions > plan.partitions_before) {
    // Grow the co-partitioned topics; the placement base is recorded first (topics/catalog.h),
    // so no tenant changes partition.
    auto catalog = catalog_for_cluster(
        cluster_of(k), {.partitions = plan.partitions, .replication = 0, .prefix = k.topic_prefix});
    if (!catalog) return report(catalog.error());
    auto lines = apply_catalog(cluster_of(k), *catalog, {.allow_repartition = true});
    if (!lines) return report(lines.error());
    for (const std::string& line : *lines) fmt::print("{}\n", line);
    // Instances size their partitions when they open: one running with the old count refuses a
    // move to a new partition (invalid_move: it does not exist there). So the moves wait for
    // the next run, after the restart.
    fmt::print(
        "the topics have {} partitions now; no move published yet. Restart every engine instance "
        "(`auterity run --kafka`: an instance runs the partitions it opened with), then run this "
        "command again: it weighs the tenants again and publishes the moves onto the new "
        "partitions\n",
        plan.partitions);
    return 0;
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
      plan.retired.empty()
          ? ""
          : "; restart the instances so that they refuse moves to the retired partitions");
  return 0;
}

}  // namespace auterity
