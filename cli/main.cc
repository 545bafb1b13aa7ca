// auterity: the engine's command-line program. See `auterity --help`.

#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <set>
#include <thread>

#include <fmt/chrono.h>
#include <fmt/core.h>
#include <CLI/CLI.hpp>

#include "api/node_access.h"
#include "api/service.h"
#include "cli/api_commands.h"
#include "cli/cli.h"
#include "cli/config.h"
#include "engine/embedded_log.h"
#include "engine/fault.h"
#include "engine/record.h"
#include "node/node.h"
#include "node/scale.h"
#include "processors/client.h"
#include "processors/orchestrator_state.h"
#include "processors/rejection.h"
#include "replay/source.h"
#include "replay/timeline.h"

namespace auterity {

namespace {

std::atomic<bool> g_interrupted{false};
// The first SIGTERM/SIGINT drains (the engine finishes its batches, commits and leaves its
// groups); a second one exits at once, as an operator who repeats Ctrl-C expects.
void on_signal(int sig) {
  if (g_interrupted.exchange(true)) ::_exit(128 + sig);
}

int report(const error& e) {
  fmt::print(stderr, "auterity: {} ({})\n", e.message, errc_name(e.code));
  return 2;
}

struct common_flags {
  std::string data_dir = "auterity-data";
  uint32_t partitions = 0;  // 0: as the directory was created; 4 for a new one
  bool no_fsync = false;
  std::string kafka;  // bootstrap servers; empty: the embedded log
  // Pipelining is off by default (partition_runtime_options::pipeline); --pipeline on turns it on.
  partition_runtime_options runtime;
  std::string instance = "engine-1";
  std::string topic_prefix;
  int committers = kafka_log_options{}.committers;  // Kafka: transactions running at once
  std::string metrics;     // Prometheus /metrics address (`run` only); empty: off
  std::string connectors;  // connector configuration file (`run`, `demo`); empty: local only
  std::vector<std::string> worker_streams = {"step", "ai", "notify"};
  worker_options worker;
  bool orchestrator = true;  // false: `auterity worker`, connector workers only
  std::string config;        // --config: read before parsing (cli/config.h)
  std::map<std::string, std::string> kafka_properties;  // librdkafka, secrets resolved
};

// --connectors and --workers: what the in-process connector workers do.
void add_worker_flags(CLI::App* cmd, common_flags& f) {
  cmd->add_option("--connectors", f.connectors,
                  "Connector configuration (JSON): HTTP steps, AI providers, SMS/WhatsApp/email/"
                  "Slack/webhook channels; see connectors/README.md. Default: local actions "
                  "only, no AI provider (AI steps take their fallback), notifications to the "
                  "outbox file")
      ->check(CLI::ExistingFile);
  cmd->add_option("--workers", f.worker_streams,
                  "Command streams served by in-process workers (step, ai, notify; \"none\": "
                  "leave all to external workers, engine/WORKERS.md)")
      ->delimiter(',')
      ->check(CLI::IsMember({"step", "ai", "notify", "none"}))
      ->capture_default_str();
  cmd->add_option("--worker-concurrency", f.worker.concurrency,
                  "Commands each in-process worker runs at once (its connector calls overlap)")
      ->capture_default_str()
      ->check(CLI::Range(size_t{1}, worker_concurrency_max));
  cmd->add_option("--command-deadline-ms", f.worker.command_deadline_ms,
                  "Deadline of a command that has none of its own (a step without timeout_ms)")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{1}, int64_t{3'600'000}));
}

std::vector<stream> worker_streams_of(const common_flags& f) {
  std::vector<stream> out;
  for (const std::string& w : f.worker_streams) {
    if (w == "step") out.push_back(stream::commands_step);
    if (w == "ai") out.push_back(stream::commands_ai);
    if (w == "notify") out.push_back(stream::commands_notify);
  }
  return out;
}

constexpr uint32_t default_partitions = 4;

void add_common(CLI::App* cmd, common_flags& f) {
  cmd->add_option("--data", f.data_dir, "Data directory (embedded log + state)")
      ->capture_default_str();
  cmd->add_option("--partitions", f.partitions,
                  "Partitions, fixed when the data directory is created (default: the "
                  "directory's count, 4 for a new one)")
      ->check(CLI::Range(1, 256));
  cmd->add_flag("--no-fsync", f.no_fsync,
                "Do not fdatasync commits (faster, not durable against power loss)");
  cmd->add_option("--kafka", f.kafka,
                  "Run on this Kafka cluster (bootstrap servers) instead of the embedded log; "
                  "--data then holds only the local state");
  cmd->add_option("--instance", f.instance,
                  "Engine instance id on Kafka (transactional ids auterity.<id> and "
                  "auterity.<id>.<i>; a restarted instance with the same id fences the old one)")
      ->capture_default_str();
  cmd->add_option("--topic-prefix", f.topic_prefix, "Kafka topic name prefix");
  cmd->add_option("--committers", f.committers,
                  "Kafka transactions in flight at once, each on its own committer and "
                  "transactional ids; partition p commits through committer p mod N "
                  "(docs/pipelined-transactions.md)")
      ->capture_default_str()
      ->check(CLI::Range(1, kafka_committers_max));
  cmd->add_option("--config", f.config,
                  "Configuration file (TOML, cli/README.md; also AUTERITY_CONFIG). A flag wins "
                  "over its AUTERITY_* variable, which wins over the file");
  cmd->add_option("--batch-records", f.runtime.batch_records_max,
                  "Most inputs per stream a partition decides in one batch (one commit)")
      ->capture_default_str()
      ->check(CLI::Range(1, 100000));
  cmd->add_option("--pipeline", f.runtime.pipeline,
                  "on: on Kafka, a partition decides its next batch while the previous one's "
                  "transaction commits, at most one batch ahead (docs/pipelined-transactions.md)")
      ->transform(
          CLI::CheckedTransformer(std::map<std::string, bool>{{"on", true}, {"off", false}}))
      ->default_str(f.runtime.pipeline ? "on" : "off");
  cmd->add_option("--commit-interval-ms", f.runtime.commit_interval_ms,
                  "Least time between two commits of a partition: higher means fewer, larger "
                  "commits (Kafka transactions) and more latency")
      ->capture_default_str()
      ->check(CLI::Range(0, 60000));
}

std::optional<kafka_log_options> kafka_of(const common_flags& f) {
  if (f.kafka.empty()) return std::nullopt;
  kafka_log_options k;
  k.bootstrap = f.kafka;
  k.instance_id = f.instance;
  k.topic_prefix = f.topic_prefix;
  k.committers = f.committers;
  k.client_config = f.kafka_properties;
  return k;
}

uint32_t partitions_for(const common_flags& f) {
  if (f.partitions != 0) return f.partitions;
  auto stored = embedded_log_partitions(f.data_dir + "/log");
  return stored && *stored ? **stored : default_partitions;
}

result<std::unique_ptr<node>> open_node(const common_flags& f, clock& clk, bool workers,
                                        bool kafka_group = false) {
  node_options o;
  o.kafka_group = kafka_group;
  o.data_dir = f.data_dir;
  o.partitions = partitions_for(f);
  o.kafka = kafka_of(f);
  o.runtime = f.runtime;
  o.fsync = !f.no_fsync;
  o.workers = workers;
  o.orchestrator = f.orchestrator;
  o.worker_streams = worker_streams_of(f);
  o.connectors_file = f.connectors;
  o.worker = f.worker;
  o.metrics_address = f.metrics;
  o.corrupt_partitions_offline = true;  // the healthy partitions keep running (docs/salvage.md)
  return node::open(o, clk);
}

// The file's and the environment's settings become the flags' defaults, so a flag given on the
// command line still wins.
void apply_config(const engine_config& c, const std::map<std::string, std::string>& kafka_props,
                  common_flags& f) {
  if (c.data) f.data_dir = *c.data;
  if (c.partitions) f.partitions = *c.partitions;
  if (c.fsync) f.no_fsync = !*c.fsync;
  if (c.instance) f.instance = *c.instance;
  if (c.metrics) f.metrics = *c.metrics;
  if (c.connectors) f.connectors = *c.connectors;
  if (c.workers) f.worker_streams = *c.workers;
  if (c.worker_concurrency) f.worker.concurrency = *c.worker_concurrency;
  if (c.command_deadline_ms) f.worker.command_deadline_ms = *c.command_deadline_ms;
  if (c.batch_records) f.runtime.batch_records_max = *c.batch_records;
  if (c.commit_interval_ms) f.runtime.commit_interval_ms = *c.commit_interval_ms;
  if (c.kafka_bootstrap) f.kafka = *c.kafka_bootstrap;
  if (c.topic_prefix) f.topic_prefix = *c.topic_prefix;
  if (c.committers) f.committers = *c.committers;
  f.kafka_properties = kafka_props;
}

int64_t wall_ms() {
  static system_clock c;
  return c.now_ms();
}

int submit_one(common_flags f, std::string_view tenant, std::string bytes) {
  system_clock clk;
  // A transactional id of its own: the engine's would fence the running engine.
  f.instance = fmt::format("cli-{}", ::getpid());
  auto n = open_node(f, clk, false);
  if (!n) return report(n.error());
  if (auto r = (*n)->submit(tenant, std::move(bytes)); !r) return report(r.error());
  fmt::print("submitted to ingress partition {}\n", tenant_partition(tenant, (*n)->partitions()));
  return 0;
}

// One line of counters for operators: what the engine did since the last line.
struct run_stats {
  uint64_t inputs = 0, events = 0, commits = 0, commit_us = 0;

  static run_stats read(node& n) {
    run_stats s;
    // Only what runs here: on Kafka, another instance runs the rest.
    n.for_each_probe([&](uint32_t, const partition_probe& pr) {
      s.inputs += pr.inputs.load();
      s.events += pr.records_out.load();
      s.commits += pr.batches.load();
      s.commit_us += pr.commit_us_total.load();
    });
    return s;
  }
};

void print_stats(node& n, run_stats& last, double seconds) {
  const run_stats now = run_stats::read(n);
  const node_summary sum = n.summary();
  const uint64_t commits = now.commits - last.commits;
  fmt::print(stderr,
             "auterity: {:.0f} inputs/s, {:.0f} records out/s, {:.0f} commits/s (avg {:.0f} us), "
             "{} rejections, {} stale acks, {} deadletters\n",
             (now.inputs - last.inputs) / seconds, (now.events - last.events) / seconds,
             commits / seconds, commits ? double(now.commit_us - last.commit_us) / commits : 0.0,
             sum.rejections, sum.stale_acks, sum.deadletters);
  last = now;
}

// Exit code of `run` when --verify-on-start finds the log does not match its anchors.
constexpr int exit_anchors_mismatch = 4;
// Exit code of `run` that stopped while a partition was offline (damaged committed data).
constexpr int exit_partition_offline = 5;
// Exit code of `run`/`worker` when the topics grew or the placement header changed while it ran
// and opening the node again in process failed for reopen_wait_s_max: restart it
// (node::restart_needed).
constexpr int exit_restart_needed = 6;
// How long `run` retries opening the node again after the topics grew (a broker away).
constexpr auto reopen_wait_s_max = std::chrono::seconds(60);

// The embedded log's scale with the directory free (the engine stopped, or `run` between its
// stop and its open): survey, plan (plan_text), grow or retire, publish the moves.
struct embedded_scaled {
  std::string plan_text;
  scale_plan plan;
  size_t published = 0;
};
result<embedded_scaled> scale_embedded(const common_flags& f, uint32_t target, int64_t window_ms,
                                       bool dry_run);

// An open, recovered and started node with its anchors: what `run` serves, opened again in
// process when the partition count or the placement header changes.
struct running_node {
  std::unique_ptr<node> n;
  run_anchors anchors;
};

// Exit code of a failed open in `rc` (anchors that do not match: exit_anchors_mismatch).
result<running_node> start_node(const common_flags& f, const anchor_flags& af, clock& clk,
                                int& rc) {
  rc = 1;
  // On Kafka, `run` joins the engine's consumer group: instances split the partitions.
  auto n = open_node(f, clk, true, /*kafka_group=*/true);
  if (!n) return std::unexpected(n.error());
  // Before recovery: a log that does not match its anchors is not decided on.
  // On Kafka only the partitions the instance owns are anchored (docs/anchors.md, "Kafka").
  std::function<std::vector<uint32_t>()> owned;
  if (!f.kafka.empty()) owned = [raw = n->get()] { return raw->owned_partitions(); };
  auto anchors = open_run_anchors(af, (*n)->get_log(), f.data_dir, std::move(owned));
  if (!anchors) {
    if (anchors.error().code == errc::corrupt) rc = exit_anchors_mismatch;
    return std::unexpected(anchors.error());
  }
  if (auto r = (*n)->recover(); !r) return std::unexpected(r.error());
  (*n)->start();
  return running_node{std::move(*n), std::move(*anchors)};
}

// Stops `r` as a clean shutdown does (the anchor covers every commit) and opens the node again
// with the same options: docs/tenant-moves.md, "Instances take up a new partition count in
// process". Retries the open every second for reopen_wait_s_max.
bool reopen_node(const common_flags& f, const anchor_flags& af, clock& clk, running_node& r,
                 const std::string& why) {
  const auto began = std::chrono::steady_clock::now();
  fmt::print(stderr, "auterity: reopening in process: {}\n", why);
  const uint32_t before = r.n->partitions();
  r.anchors.before_stop();
  r.n->stop();
  r.anchors.after_stop();
  r = running_node{};  // the log, the stores and the members are closed before the new open
  const auto stopped = std::chrono::steady_clock::now();
  fault_point("reopen.stopped");
  for (;;) {
    int rc = 0;
    auto opened = start_node(f, af, clk, rc);
    if (opened) {
      r = std::move(*opened);
      break;
    }
    if (std::chrono::steady_clock::now() - began >= reopen_wait_s_max || g_interrupted) {
      fmt::print(stderr, "auterity: reopening failed for {} s: {}; restart the instance\n",
                 reopen_wait_s_max.count(), opened.error().message);
      return false;
    }
    fmt::print(stderr, "auterity: reopening failed, retrying in 1 s: {}\n", opened.error().message);
    std::this_thread::sleep_for(std::chrono::seconds(1));
  }
  r.anchors.at_start();
  auto ms = [](auto d) { return std::chrono::duration_cast<std::chrono::milliseconds>(d).count(); };
  const auto now = std::chrono::steady_clock::now();
  fmt::print(stderr,
             "auterity: reopened in process in {} ms ({} ms stopping, {} ms opening): {} -> {} "
             "partitions in all, placement base {}; the group assigns this instance its share\n",
             ms(now - began), ms(stopped - began), ms(now - stopped), before, r.n->partitions(),
             r.n->get_log().placement().base);
  return true;
}

// The scale requested through the API (POST /v1/partitions/scale) on the embedded log: the API
// and the node stop as on Ctrl-C, the log is scaled as `partitions scale` does with the engine
// stopped, and both open again (docs/tenant-moves.md, "Moves while the engine runs"). The
// outcome goes to `board` once the API serves again. False if the engine could not be opened
// again (said on stderr).
bool scale_in_process(const common_flags& f, const anchor_flags& af, const http_flags& http,
                      clock& clk, running_node& r, std::unique_ptr<api_handle>& api,
                      scale_board& board, uint32_t to) {
  using steady = std::chrono::steady_clock;
  const auto began = steady::now();
  fmt::print(stderr, "auterity: scaling to {} partitions in process: stopping the engine\n", to);
  api.reset();
  r.anchors.before_stop();
  r.n->stop();
  r.anchors.after_stop();
  r = running_node{};
  const auto stopped = steady::now();
  common_flags stored = f;
  stored.partitions = 0;  // the count the log has now
  auto scaled = scale_embedded(stored, to, survey_window_ms_default, /*dry_run=*/false);
  std::string message;
  if (scaled) {
    message = scaled->plan_text +
              fmt::format(
                  "the log has {} partitions, {} taking tenants; {} move(s) published on "
                  "ingress: the engine runs them now\n",
                  scaled->plan.partitions, scaled->plan.active, scaled->published);
  } else {
    message = fmt::format("scale refused or failed: {} ({})\n", scaled.error().message,
                          errc_name(scaled.error().code));
  }
  fmt::print(stderr, "auterity: {}", message);
  const auto scaled_at = steady::now();
  int rc = 0;
  auto opened = start_node(stored, af, clk, rc);
  if (!opened) {
    board.finish(false, message);
    fmt::print(stderr, "auterity: opening the engine again after the scale failed: {}\n",
               opened.error().message);
    return false;
  }
  r = std::move(*opened);
  r.anchors.at_start();
  auto a = start_http(*r.n, f.data_dir, http, clk, &board);
  if (!a) {
    board.finish(false, message);
    fmt::print(stderr, "auterity: opening the API again after the scale failed: {}\n",
               a.error().message);
    return false;
  }
  api = std::move(*a);
  api->set_ready(true);
  board.finish(scaled.has_value(), message);
  auto ms = [](auto d) { return std::chrono::duration_cast<std::chrono::milliseconds>(d).count(); };
  fmt::print(stderr,
             "auterity: serving {} partition(s) again; the engine paused {} ms ({} ms stopping, {} "
             "ms surveying and scaling the log, {} ms opening); HTTP API on port {}\n",
             r.n->partitions(), ms(steady::now() - began), ms(stopped - began),
             ms(scaled_at - stopped), ms(steady::now() - scaled_at), api->port());
  return true;
}

int cmd_run(const common_flags& f, bool until_quiet, int stats_interval_s,
            const http_flags& http = {}, const anchor_flags& af = {}) {
  scale_board board;  // POST /v1/partitions/scale (embedded log): kept across the reopen
  system_clock clk;
  int rc = 1;
  auto started = start_node(f, af, clk, rc);
  if (!started) {
    const int reported = report(started.error());
    return rc == exit_anchors_mismatch ? rc : reported;
  }
  running_node r = std::move(*started);  // r.n changes when the node is opened again
  std::unique_ptr<api_handle> api;
  if (!http.address.empty()) {
    if (!f.kafka.empty()) {
      r.n->stop();
      return report(error{errc::invalid,
                          "--http serves the embedded log; on Kafka run "
                          "`auterity gateway --kafka B --http ADDR`"});
    }
    auto a = start_http(*r.n, f.data_dir, http, clk, &board);
    if (!a) {
      r.n->stop();
      return report(a.error());
    }
    api = std::move(*a);
    api->set_ready(true);
    fmt::print(stderr, "auterity: HTTP API on port {} (/v1/..., api/README.md)\n", api->port());
  }
  for (const auto& [p, damage] : r.n->offline_partitions()) {
    fmt::print(stderr,
               "auterity: partition {} is OFFLINE (its tenants wait; the other partitions run): "
               "{}; salvage it with `auterity repair --data {} --partition {}` (docs/salvage.md)\n",
               p, damage, f.data_dir, p);
  }
  r.anchors.at_start();
  if (uint16_t port = r.n->metrics_port()) {
    fmt::print(stderr, "auterity: Prometheus metrics on port {} (/metrics)\n", port);
  }
  if (!f.orchestrator) {
    fmt::print(stderr,
               "auterity: worker instance {} joined the worker groups on {} ({} partitions in "
               "all; Kafka assigns this instance its share; Ctrl-C to stop)\n",
               f.instance, f.kafka, r.n->partitions());
  } else if (f.kafka.empty()) {
    fmt::print(stderr, "auterity: serving {} partition(s) from {} (Ctrl-C to stop)\n",
               r.n->partitions(), f.data_dir);
  } else {
    fmt::print(stderr,
               "auterity: instance {} joined the engine group on {} ({} partitions in all; "
               "Kafka assigns this instance its share; Ctrl-C to stop)\n",
               f.instance, f.kafka, r.n->partitions());
  }
  int quiet_rounds = 0;
  run_stats last = run_stats::read(*r.n);
  run_stats last_activity = last;
  auto last_print = std::chrono::steady_clock::now();
  while (!g_interrupted) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    if (auto why = r.n->fatal()) {
      // Another process runs as this instance: going on would fight it for the partitions.
      fmt::print(stderr, "auterity: stopping: {}\n", *why);
      api.reset();
      r.n->stop();
      return 3;
    }
    if (auto to = board.take()) {
      if (!scale_in_process(f, af, http, clk, r, api, board, *to)) return 1;
      last = last_activity = run_stats::read(*r.n);
      quiet_rounds = 0;
      continue;
    }
    if (auto why = r.n->restart_needed()) {
      // Only in a Kafka group (the embedded log's count changes through its API): no HTTP API.
      api.reset();
      if (!reopen_node(f, af, clk, r, *why)) return exit_restart_needed;
      last = last_activity = run_stats::read(*r.n);
      quiet_rounds = 0;
      continue;
    }
    const auto now = std::chrono::steady_clock::now();
    r.anchors.tick();
    if (stats_interval_s > 0 && now - last_print >= std::chrono::seconds(stats_interval_s)) {
      print_stats(*r.n, last, std::chrono::duration<double>(now - last_print).count());
      last_print = now;
    }
    if (!until_quiet) continue;
    // Embedded log: quiet = every stream consumed and no timer pending, seen 3 times. Kafka's
    // offsets have gaps, so there: no timer pending, no running execution, and no input
    // processed for 2 s (the runtimes poll every few ms).
    const run_stats activity = run_stats::read(*r.n);
    const bool idle = activity.inputs == last_activity.inputs;
    last_activity = activity;
    const node_summary sum = r.n->summary();
    const bool quiet = f.kafka.empty()
                           ? sum.quiescent
                           : idle && sum.quiescent && !r.n->owned_partitions().empty() &&
                                 !sum.executions_by_status.contains("running");
    quiet_rounds = quiet ? quiet_rounds + 1 : 0;
    if (quiet_rounds >= (f.kafka.empty() ? 3 : 20)) break;
  }
  api.reset();
  // On Kafka the partitions are given up on stop, their state with them: count before.
  std::optional<node_summary> before;
  if (!f.kafka.empty()) before = r.n->summary();
  r.anchors.before_stop();
  r.n->stop();
  r.anchors.after_stop();  // clean shutdown: covers every commit
  node_summary s = before ? *before : r.n->summary();
  for (const auto& [status, count] : s.executions_by_status) {
    fmt::print("{:>10} {}\n", status, count);
  }
  if (!r.n->offline_partitions().empty()) {
    fmt::print(stderr, "auterity: {} partition(s) were offline (damaged committed data)\n",
               r.n->offline_partitions().size());
    return exit_partition_offline;
  }
  return 0;
}

// The read-only commands (status, timeline, dump) open the log and the state as the replay
// commands do (replay/source.h): read-only, creating nothing, never repairing; a missing data
// directory is an error. Damage found in the log is named on stderr.
result<replay_source> open_read_only(const common_flags& f, bool with_state) {
  std::error_code ec;
  if (!f.kafka.empty() && with_state && !std::filesystem::is_directory(f.data_dir, ec)) {
    return fail(errc::not_found, fmt::format("data directory {} does not exist", f.data_dir));
  }
  auto src = f.kafka.empty() ? open_embedded_source(f.data_dir, with_state)
                             : open_kafka_source(f.kafka, f.topic_prefix, f.data_dir, with_state,
                                                 f.kafka_properties);
  if (src) {
    for (const log_damage& d : src->damage) {
      fmt::print(stderr, "auterity: warning: {}\n", damage_text(d));
    }
  }
  return src;
}

int cmd_timeline(const common_flags& f, const std::string& tenant, const std::string& id) {
  auto src = open_read_only(f, /*with_state=*/true);
  if (!src) return report(src.error());
  uint32_t p = home_partition(*src->events, tenant);
  // A moved tenant: follow the placement entries from its default partition (the event index
  // where it lives now covers its history from before the move too).
  for (uint32_t hops = 0; hops < src->events->partition_count() && src->stores[p]; ++hops) {
    auto placed = src->stores[p]->get(keys::placement(tenant));
    placement_entry where;
    if (!placed || !placed->has_value() || !decode_placement(**placed, where) ||
        where.ph != placement_entry::phase::moved_out) {
      break;
    }
    p = where.partition;
  }
  const state_store* store = src->stores[p].get();
  if (!store) {
    return report(
        error{errc::not_found, fmt::format("{}/state/p{:03} holds no state: the timeline reads the "
                                           "engine's event index (`auterity replay timeline` reads "
                                           "the log alone)",
                                           f.data_dir, p)});
  }
  auto entries = load_timeline(*src->events, p, *store, tenant, id);
  if (!entries) return report(entries.error());
  if (entries->empty()) {
    fmt::print(stderr, "auterity: no events for execution '{}' of tenant '{}'\n", id, tenant);
    return 1;
  }
  fmt::print("{}", format_timeline(*entries));
  return 0;
}

// One row per partition: its owner, tenants, running executions, state bytes, input lag and
// events over the survey's window (the rate), and its hottest tenants (most events in the
// window, then most running executions); moved tenants are shown where they live now. The
// survey is the one `partitions plan` and `partitions scale` weigh tenants with (node/scale.h).
int cmd_partitions_show(const common_flags& f, size_t top, int64_t window_ms) {
  auto src = open_read_only(f, /*with_state=*/true);
  if (!src) return report(src.error());
  log& l = *src->events;
  auto survey =
      survey_placement(l, src->store_ptrs(), window_ms, /*read_forward=*/!f.kafka.empty());
  if (!survey) return report(survey.error());
  std::vector<std::vector<const tenant_load*>> by_partition(l.partition_count());
  for (const tenant_load& t : survey->tenants) by_partition[t.partition].push_back(&t);
  // The embedded log has one writer, the engine on --data; on Kafka the group assigns
  // partitions (`auterity status --kafka` names the members).
  const std::string owner = f.kafka.empty() ? "local" : "?";
  fmt::print("{:>9} {:>7} {:>9} {:>8} {:>12} {:>11} {:>8} {:>10} {:>6}  {}\n", "partition",
             "tenants", "moved out", "running", "state bytes", "ingress lag", "acks lag",
             "events/min", "owner", "hottest tenants (running/events in window)");
  for (uint32_t p = 0; p < l.partition_count(); ++p) {
    auto lag = [&](stream s) -> std::string {
      auto end = l.end_offset(s, p);
      auto pos = l.position(orchestrator_group, s, p);
      if (!end || !pos) return "?";
      return std::to_string(*end > *pos ? *end - *pos : 0);
    };
    const partition_survey& ps = survey->partitions[p];
    const std::string rate = survey->window_ms > 0
                                 ? fmt::format("{}{:.1f}", ps.recent_capped ? ">" : "",
                                               static_cast<double>(ps.recent_events) * 60'000.0 /
                                                   static_cast<double>(survey->window_ms))
                                 : std::string("-");
    if (!ps.has_state) {
      fmt::print("{:>9} {:>7} {:>9} {:>8} {:>12} {:>11} {:>8} {:>10} {:>6}  {}\n", p, "-", "-", "-",
                 "-", lag(stream::ingress), lag(stream::acks), rate, "-", "(no state here)");
      continue;
    }
    std::vector<const tenant_load*>& hot = by_partition[p];
    std::ranges::sort(hot, [](const tenant_load* a, const tenant_load* b) {
      if (a->recent_events != b->recent_events) return a->recent_events > b->recent_events;
      if (a->running != b->running) return a->running > b->running;
      return a->tenant < b->tenant;
    });
    std::string hottest;
    for (size_t i = 0; i < hot.size() && i < top; ++i) {
      hottest += fmt::format("{}{}:{}/{}", i ? " " : "", hot[i]->tenant, hot[i]->running,
                             hot[i]->recent_events);
    }
    if (l.placement().is_retired(p)) hottest = "(retired) " + hottest;
    fmt::print("{:>9} {:>7} {:>9} {:>8} {:>12} {:>11} {:>8} {:>10} {:>6}  {}\n", p, ps.tenants,
               ps.moved_out, ps.running, ps.state_bytes, lag(stream::ingress), lag(stream::acks),
               rate, owner, hottest);
  }
  if (survey->window_ms > 0) {
    fmt::print(
        "rate: records on each partition's executions stream in the {} s before the log's "
        "newest event{}\n",
        survey->window_ms / 1000,
        survey->window_end_ms > 0
            ? fmt::format(" ({:%Y-%m-%d %H:%M:%S} UTC)",
                          std::chrono::sys_time<std::chrono::milliseconds>(
                              std::chrono::milliseconds(survey->window_end_ms)))
            : std::string(" (no events)"));
  }
  return 0;
}

// Where the tenants are and what they weigh: the embedded log's state stores (engine stopped),
// or on Kafka every partition's state rebuilt from the executions topic (survey_kafka).
struct surveyed {
  std::optional<replay_source> src;  // the embedded log, read-only
  std::unique_ptr<log> kafka;
  placement_survey survey;
  log& events() { return kafka ? *kafka : *src->events; }
};

result<surveyed> survey_of(const common_flags& f, int64_t window_ms) {
  surveyed out;
  if (!f.kafka.empty()) {
    auto k = survey_kafka(*kafka_of(f), window_ms);
    if (!k) return std::unexpected(k.error());
    out.kafka = std::move(k->events);
    out.survey = std::move(k->survey);
    return out;
  }
  auto src = open_read_only(f, /*with_state=*/true);
  if (!src) return std::unexpected(src.error());
  out.src = std::move(*src);
  auto survey = survey_placement(*out.src->events, out.src->store_ptrs(), window_ms);
  if (!survey) return std::unexpected(survey.error());
  out.survey = std::move(*survey);
  return out;
}

std::string where_flags(const common_flags& f) {
  if (!f.kafka.empty()) {
    return fmt::format(" --kafka {}{}", f.kafka,
                       f.topic_prefix.empty() ? "" : " --topic-prefix " + f.topic_prefix);
  }
  return f.data_dir.empty() ? "" : " --data " + f.data_dir;
}

// Proposes the moves that balance the measured load over `target` partitions (0: the ones
// taking tenants now) and isolate a tenant hot enough for a partition of its own; changes
// nothing. The planner of `partitions scale` (node/scale.h).
int cmd_partitions_plan(const common_flags& f, uint32_t target, int64_t window_ms) {
  auto s = survey_of(f, window_ms);
  if (!s) return report(s.error());
  log& l = s->events();
  if (target == 0)
    target = l.partition_count() - static_cast<uint32_t>(l.placement().retired.size());
  auto plan = plan_scale(s->survey, l.partition_count(), l.placement(), target);
  if (!plan) return report(plan.error());
  fmt::print("{}", format_plan(*plan));
  if (plan->moves.empty()) {
    fmt::print("nothing to move: the load is as even as moving whole tenants makes it\n");
  } else if (plan->partitions != l.partition_count() ||
             plan->active != l.partition_count() - l.placement().retired.size()) {
    fmt::print("apply: auterity partitions scale --to {}{}{}\n", target, where_flags(f),
               f.kafka.empty() ? " (embedded log: engine stopped)" : "");
  } else {
    fmt::print("apply: one `auterity tenants move` per move, e.g.\n");
    for (const planned_move& m : plan->moves) {
      fmt::print("  auterity tenants move {} --to {}{}\n", m.tenant, m.to, where_flags(f));
    }
  }
  return 0;
}

result<embedded_scaled> scale_embedded(const common_flags& f, uint32_t target, int64_t window_ms,
                                       bool dry_run) {
  embedded_scaled out;
  {
    auto s = survey_of(f, window_ms);
    if (!s) return std::unexpected(s.error());
    auto planned =
        plan_scale(s->survey, s->events().partition_count(), s->events().placement(), target);
    if (!planned) return std::unexpected(planned.error());
    out.plan = std::move(*planned);
  }  // the read-only open's shared lock is released here
  out.plan_text = format_plan(out.plan);
  if (dry_run) return out;
  auto published = apply_scale_embedded(f.data_dir + "/log", out.plan, wall_ms());
  if (!published) return std::unexpected(published.error());
  out.published = *published;
  return out;
}

// Plans the moves that spread the tenants over `target` partitions and, unless a dry run,
// grows or retires partitions and publishes the moves (docs/tenant-moves.md, "Scaling"). With
// an engine serving the embedded log's directory, through its API (it scales in process).
int cmd_partitions_scale(const common_flags& f, uint32_t target, bool dry_run, int64_t window_ms,
                         uint32_t wait_s) {
  if (f.kafka.empty() && find_endpoint(f.data_dir)) {
    if (dry_run) {
      // The plan reads the state stores, which the running engine holds: refused (exit 1).
      (void)report(error{errc::locked,
                         fmt::format("an engine serves {}: --dry-run reads the state stores, "
                                     "which it holds; without --dry-run the scale goes through "
                                     "its API (the busiest tenants per partition are on "
                                     "/metrics)",
                                     f.data_dir)});
      return 1;
    }
    return api_scale(f.data_dir, target, static_cast<int>(wait_s));
  }
  if (!f.kafka.empty()) {
    std::optional<scale_plan> plan;
    placement_header header;
    {
      auto s = survey_of(f, window_ms);
      if (!s) return report(s.error());
      header = s->events().placement();
      auto planned = plan_scale(s->survey, s->events().partition_count(), header, target);
      if (!planned) return report(planned.error());
      plan = std::move(*planned);
    }
    fmt::print("{}", format_plan(*plan));
    if (dry_run) {
      fmt::print("dry run: nothing changed\n");
      return 0;
    }
    return kafka_apply_scale(*kafka_of(f), header, *plan, wall_ms(), std::chrono::seconds(wait_s));
  }
  auto scaled = scale_embedded(f, target, window_ms, dry_run);
  if (!scaled) return report(scaled.error());
  fmt::print("{}", scaled->plan_text);
  if (dry_run) {
    fmt::print("dry run: nothing changed\n");
    return 0;
  }
  fmt::print(
      "the log has {} partitions, {} taking tenants; {} move(s) published on ingress: they run "
      "when the engine runs (`auterity run`); `auterity partitions show` shows where tenants "
      "are, and the same command again plans what is left\n",
      scaled->plan.partitions, scaled->plan.active, scaled->published);
  return 0;
}

int cmd_status(const common_flags& f) {
  auto src = open_read_only(f, /*with_state=*/true);
  if (!src) return report(src.error());
  for (const auto& store : src->stores) {
    if (!store) continue;
    auto scanned = store->scan_prefix("T", [](std::string_view key, std::string_view value) {
      const size_t nul = key.find('\0');
      if (nul == std::string_view::npos || nul + 1 >= key.size() || key[nul + 1] != 'E') {
        return true;
      }
      execution_state e;
      if (!decode_execution(value, e)) return true;
      fmt::print("{:<16} {:<24} {:<12} {:<10} {}\n", e.tenant, e.id, e.workflow,
                 exec_status_name(e.status), e.result.substr(0, 80));
      return true;
    });
    if (!scanned) return report(scanned.error());
  }
  int rc = 0;
  for (const log_damage& d : src->damage) {
    if (!d.committed) continue;
    fmt::print(
        "partition {} OFFLINE: damaged committed data ({} at byte {} of {}); the engine "
        "does not run it: `auterity repair --data {} --partition {}`\n",
        d.partition, d.problem, d.bad_pos, d.bad_segment, f.data_dir, d.partition);
    rc = 1;
  }
  return rc;
}

int cmd_dump(const common_flags& f, const std::string& stream_arg, int partition) {
  auto s = stream_from_name(stream_arg);
  if (!s) {
    fmt::print(stderr,
               "auterity: unknown stream '{}' (ingress, executions, commands.step, "
               "commands.ai, commands.notify, acks, definitions, deadletter)\n",
               stream_arg);
    return 2;
  }
  auto src = open_read_only(f, /*with_state=*/false);
  if (!src) return report(src.error());
  log& l = *src->events;
  for (uint32_t p = 0; p < l.partition_count(); ++p) {
    if (partition >= 0 && static_cast<uint32_t>(partition) != p) continue;
    std::vector<record> recs;
    auto end = l.end_offset(*s, p);
    if (!end) return report(end.error());
    for (uint64_t off = 0; off < *end;) {
      recs.clear();
      auto r = l.read(*s, p, off, 1024, 8 << 20, recs);
      if (!r) return report(r.error());
      if (*r == 0) break;
      off = recs.back().offset + 1;
      for (const record& rec : recs) {
        const fbs::Envelope* e = decode_envelope(rec.value);
        fmt::print("{}/{}/{}\t{}\t{}\t{}\n", stream_arg, p, rec.offset,
                   e ? payload_name(e->payload_type()) : "?", e ? sv(e->record_id()) : "",
                   describe_record(rec.value));
      }
    }
  }
  return 0;
}

std::string read_file(const std::string& path, bool& ok) {
  std::ifstream in(path, std::ios::binary);
  ok = static_cast<bool>(in);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// Most bytes `--input @file` / `--input -` read: the engine rejects a JSON field over
// payload_bytes_max (64 KiB) with payload_too_large; reading further would only cost memory.
constexpr size_t json_argument_bytes_max = 1 << 20;

// A JSON argument as given: "@path" reads the file, "-" standard input, anything else is the
// JSON itself. Beyond the OS argument limit, and without shell quoting.
result<std::string> json_argument(const std::string& value, std::string_view flag) {
  if (value != "-" && !value.starts_with("@")) return value;
  std::FILE* in = value == "-" ? stdin : std::fopen(value.c_str() + 1, "rb");
  if (in == nullptr) {
    return fail(errc::io,
                fmt::format("{}: cannot read {}: {}", flag, value.substr(1), std::strerror(errno)));
  }
  std::string text;
  char buf[65536];
  size_t n = 0;
  while ((n = std::fread(buf, 1, sizeof buf, in)) > 0 && text.size() <= json_argument_bytes_max) {
    text.append(buf, n);
  }
  const bool failed = std::ferror(in) != 0;
  if (in != stdin) std::fclose(in);
  if (failed) return fail(errc::io, fmt::format("{}: error reading {}", flag, value));
  if (text.size() > json_argument_bytes_max) {
    return fail(errc::invalid, fmt::format("{}: {} is over {} bytes (the engine takes at most "
                                           "65536: payload_bytes_max)",
                                           flag, value == "-" ? "standard input" : value.substr(1),
                                           json_argument_bytes_max));
  }
  return text;
}

// `start --wait` and `publish --wait`: submits the command (`what`: "start", "publish") and
// prints its outcome, found on the executions stream as the record the engine wrote in answer
// to it (causation = the command's record id): accepted (ExecutionStarted, DefinitionPublished)
// or rejected (CommandRejected: name, code and reason). On the embedded log this process is
// the data directory's one writer, so it decides the command itself (no workers: their
// commands wait for `auterity run`); on Kafka the running engine decides and this process
// reads its answer. Exit codes: 0 accepted, 4 rejected, 1 no answer in time.
int cmd_submit_wait(common_flags f, const std::string& tenant, const std::string& rid,
                    std::string bytes, int wait_s, std::string_view what) {
  system_clock clk;
  f.instance = fmt::format("cli-{}", ::getpid());
  auto n = open_node(f, clk, false);
  if (!n) return report(n.error());
  const bool embedded = f.kafka.empty();
  if (embedded) {
    if (auto r = (*n)->recover(); !r) return report(r.error());
  }
  log& l = (*n)->get_log();
  const uint32_t p = home_partition(l, tenant);
  auto from = l.end_offset(stream::executions, p);
  if (!from) return report(from.error());
  if (auto r = (*n)->submit(tenant, std::move(bytes)); !r) return report(r.error());
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(wait_s);
  uint64_t next = *from;
  std::vector<record> recs;
  while (!g_interrupted && std::chrono::steady_clock::now() < deadline) {
    if (embedded) {
      if (auto r = (*n)->step(false); !r) return report(r.error());
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    auto end = l.end_offset(stream::executions, p);
    if (!end) return report(end.error());
    while (next < *end) {
      recs.clear();
      auto r = l.read(stream::executions, p, next, 1024, 8 << 20, recs);
      if (!r) return report(r.error());
      if (recs.empty()) break;
      next = recs.back().offset + 1;
      for (const record& rec : recs) {
        const fbs::Envelope* e = decode_envelope(rec.value);
        if (!e || sv(e->causation_id()) != rid || sv(e->tenant_id()) != tenant) continue;
        if (auto rej = e->payload_as_CommandRejected()) {
          fmt::print("rejected: {} (code {}): {}\n",
                     rejection_code_name(static_cast<rejection_code>(rej->code())), rej->code(),
                     sv(rej->reason()));
          return 4;
        }
        if (auto started = e->payload_as_ExecutionStarted()) {
          fmt::print("accepted: execution {} of {} v{} started\n", sv(e->execution_id()),
                     sv(started->workflow()), started->version());
          return 0;
        }
        if (auto published = e->payload_as_DefinitionPublished()) {
          fmt::print("accepted: {} v{} published\n", sv(published->workflow()),
                     published->version());
          return 0;
        }
      }
    }
  }
  fmt::print(stderr, "auterity: no answer to {} {} within {} s{}\n", what, rid, wait_s,
             embedded ? "" : ": is an engine (`auterity run --kafka ...`) running?");
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  CLI::App app{
      "auterity: an event-sourced stream-processing engine for dealership workflow executions.\n"
      "With no broker configured everything runs in one process on an embedded log in --data."};
  app.require_subcommand(1);
  common_flags f;

  demo_flags demo;
  common_flags demo_f;
  demo_f.data_dir = "auterity-demo";
  auto* demo_cmd =
      app.add_subcommand("demo",
                         "Run the sample dealership workflow for two tenants end to end and print "
                         "each execution's timeline (the README's first command)");
  add_common(demo_cmd, demo_f);
  add_worker_flags(demo_cmd, demo_f);
  demo_cmd
      ->add_option("--executions", demo.executions, "Executions to start (split over the tenants)")
      ->capture_default_str()
      ->check(CLI::Range(1, 100000));
  demo_cmd->add_flag("--serve", demo.serve, "Keep serving after all executions finished");
  demo_cmd->add_flag("--quiet", demo.quiet, "Print only the summary, not every timeline");
  demo_cmd->add_option("--metrics", demo.metrics_address,
                       "Serve Prometheus /metrics on this address, e.g. 127.0.0.1:9464 (default: "
                       "off)");
  demo_cmd->add_option("--timeout-s", demo.timeout_s, "Give up (exit 1) after this long")
      ->capture_default_str();

  bool until_quiet = false;
  int stats_interval_s = 10;
  auto* run_cmd = app.add_subcommand("run", "Serve the engine on a data directory until Ctrl-C");
  add_common(run_cmd, f);
  add_worker_flags(run_cmd, f);
  run_cmd->add_flag("--until-quiet", until_quiet,
                    "Exit 0 once nothing is left to do (no input, command or timer pending)");
  run_cmd
      ->add_option("--stats-interval-s", stats_interval_s,
                   "Print a line of throughput counters this often (0: never)")
      ->capture_default_str();
  http_flags http;
  add_http_flags(run_cmd, http);
  run_cmd->add_option("--metrics", f.metrics,
                      "Serve Prometheus /metrics on this address, e.g. 127.0.0.1:9464 (port 0: "
                      "any free port; default: off)");
  anchor_flags anchor_f;
  add_anchor_flags(run_cmd, anchor_f);

  common_flags wf;
  wf.orchestrator = false;
  auto* worker_cmd = app.add_subcommand(
      "worker",
      "Run connector workers only, as a process of their own, on Kafka (engine/WORKERS.md): they "
      "join the groups auterity.worker.commands.<step|ai|notify> with the engine's in-process "
      "workers and any other worker, and Kafka splits the partitions among them");
  add_common(worker_cmd, wf);
  add_worker_flags(worker_cmd, wf);
  worker_cmd->add_option("--metrics", wf.metrics,
                         "Serve Prometheus /metrics on this address (port 0: any free port)");

  std::string tenant, execution, workflow, file, params, input = "{}", name, payload = "{}",
                                                         reason = "cancelled by operator";
  std::string request_id;
  uint32_t version = 0;
  auto* pub =
      app.add_subcommand("publish", "Publish a workflow definition (JSON file) for a tenant");
  add_common(pub, f);
  pub->add_option("--tenant", tenant, "Tenant id")->required();
  pub->add_option("file", file, "Definition JSON file")->required()->check(CLI::ExistingFile);
  pub->add_option("--params", params, "Parameter values (JSON object)");
  bool publish_wait = false;
  int publish_wait_s = 10;
  pub->add_flag("--wait", publish_wait,
                "Wait for the engine's answer and print it: accepted, or rejected with the "
                "rejection's name and reason, e.g. a cycle of workflow calls (exit 0 accepted, 4 "
                "rejected, 1 no answer)");
  pub->add_option("--wait-s", publish_wait_s, "How long --wait waits")
      ->capture_default_str()
      ->check(CLI::Range(1, 3600));

  auto* pol = app.add_subcommand(
      "policy",
      "Publish a tenant's AI routing and notification policy (JSON file, processors/POLICY.md); "
      "it replaces the tenant's previous one");
  add_common(pol, f);
  pol->add_option("--tenant", tenant, "Tenant id")->required();
  pol->add_option("file", file, "Policy JSON file")->required()->check(CLI::ExistingFile);

  auto* start = app.add_subcommand("start", "Start an execution of a published workflow");
  add_common(start, f);
  start->add_option("--tenant", tenant, "Tenant id")->required();
  start->add_option("--workflow", workflow, "Workflow id")->required();
  start->add_option("--version", version, "Workflow version (0 = latest)")->capture_default_str();
  start
      ->add_option("--id", execution,
                   "Execution id (chosen by the caller; a retry with the "
                   "same id is rejected as a duplicate, never run twice)")
      ->required();
  start
      ->add_option("--input", input,
                   "Execution input (JSON object); @file.json reads a file, - standard input")
      ->capture_default_str();
  bool wait = false;
  int wait_s = 10;
  start->add_flag("--wait", wait,
                  "Wait for the engine's answer and print it: accepted, or rejected with the "
                  "rejection's name and reason (exit 0 accepted, 4 rejected, 1 no answer)");
  start->add_option("--wait-s", wait_s, "How long --wait waits")
      ->capture_default_str()
      ->check(CLI::Range(1, 3600));

  auto* sig = app.add_subcommand("signal", "Deliver a signal to a running execution");
  add_common(sig, f);
  sig->add_option("--tenant", tenant, "Tenant id")->required();
  sig->add_option("--id", execution, "Execution id")->required();
  sig->add_option("--name", name, "Signal name, e.g. customer_replied")->required();
  sig->add_option("--payload", payload,
                  "Signal payload (JSON); @file.json reads a file, - standard input")
      ->capture_default_str();

  auto* can = app.add_subcommand("cancel", "Cancel a running execution");
  add_common(can, f);
  can->add_option("--tenant", tenant, "Tenant id")->required();
  can->add_option("--id", execution, "Execution id")->required();
  can->add_option("--reason", reason, "Why")->capture_default_str();

  auto* tenants = app.add_subcommand("tenants", "Operator commands on tenants");
  tenants->require_subcommand(1);
  uint32_t move_to = 0;
  auto* tmove = tenants->add_subcommand(
      "move",
      "Move a tenant, with all its running executions, timers, definitions, policy and "
      "windows, to another partition (docs/tenant-moves.md). Published as a command on "
      "ingress, decided in order with the tenant's other commands. With an engine serving "
      "--data's HTTP API (`run --http`) it goes through the API while the engine runs and prints "
      "the decision (exit 0 moved, 1 rejected with the reason, 2 no answer); otherwise it is "
      "written into the log for the next `run`, and a refused move is a rejection "
      "(invalid_move) with the reason, in `dump executions`");
  add_common(tmove, f);
  tmove->add_option("tenant", tenant, "Tenant id")->required();
  tmove->add_option("--to", move_to, "Target partition (0 .. partitions-1)")->required();
  int move_wait_s = 30;
  tmove
      ->add_option("--wait-s", move_wait_s,
                   "With an engine serving --data's API: how long to wait for the move's decision "
                   "and for the tenant to settle on its new partition")
      ->capture_default_str()
      ->check(CLI::Range(1, 3600));

  auto* parts = app.add_subcommand("partitions", "Operator commands on partitions");
  parts->require_subcommand(1);
  size_t hottest = 3;
  int64_t window_min = survey_window_ms_default / 60'000;
  auto* pshow = parts->add_subcommand(
      "show",
      "One row per partition: tenants, tenants moved away, running executions, state bytes, "
      "input lag, events per minute over the last --window-min minutes of the log (by the "
      "records' timestamps), owner, and the hottest tenants (most events in the window, then most "
      "running executions) (read-only; on Kafka, the state of the partitions whose stores are "
      "in --data)");
  add_common(pshow, f);
  pshow->add_option("--hottest", hottest, "Tenants listed per partition")->capture_default_str();
  pshow
      ->add_option("--window-min", window_min,
                   "Minutes before the log's newest event the rate is measured over (0: none)")
      ->check(CLI::Range(0, 24 * 60))
      ->capture_default_str();
  // plan and scale weigh tenants by the load in the same window.
  auto add_load_window = [&window_min](CLI::App* sub) {
    sub->add_option("--window-min", window_min,
                    "Minutes before the log's newest event the load is measured over (0: running "
                    "executions only)")
        ->check(CLI::Range(0, 24 * 60))
        ->capture_default_str();
  };
  uint32_t plan_to = 0;
  auto* pplan = parts->add_subcommand(
      "plan",
      "Propose tenant moves that balance the measured load (running executions + 1 + events in "
      "the window, per tenant) over the partitions and isolate a tenant hot enough for a "
      "partition of its own; prints which tenant moves where and why, changes nothing. Embedded "
      "log: engine stopped; --kafka: while the instances run, from every partition's state "
      "rebuilt from the executions topic (read_committed, progress on stderr)");
  add_common(pplan, f);
  pplan->add_option("--to", plan_to,
                    "Partitions that take tenants afterwards (default: those that take them now)");
  add_load_window(pplan);
  uint32_t scale_to = 0;
  bool scale_dry_run = false;
  auto* pscale = parts->add_subcommand(
      "scale",
      "Change how many partitions take tenants, keeping every placement: up grows the log and "
      "moves tenants onto the new partitions to balance the load (running executions + 1 + "
      "events in the window, per tenant); down moves every tenant off partitions N.. and retires "
      "them (their history "
      "stays). Publishes one `tenants move` per move; the engine runs them. Embedded log: engine "
      "stopped. --kafka: weighs the tenants from the executions topic while the instances run; "
      "up adds partitions as `topics apply --allow-repartition` does, waits until every running "
      "instance took them up (each opens itself again in process, no restart) and publishes the "
      "moves; down records the retired partitions in the placement topic and publishes the "
      "moves (docs/tenant-moves.md, \"Scaling the partition count\"). Exit: 0 planned (and "
      "applied), 1 refused or failed, 2 (--kafka) the instances did not take up the new count "
      "within --wait-s: nothing published, run it again");
  add_common(pscale, f);
  pscale->add_option("--to", scale_to, "Partitions that take tenants afterwards")->required();
  uint32_t scale_wait_s = 120;
  pscale
      ->add_option("--wait-s", scale_wait_s,
                   "--kafka: how long to wait for the instances to take up the new partition "
                   "count before publishing the moves")
      ->capture_default_str()
      ->check(CLI::Range(1, 3600));
  pscale->add_flag("--dry-run", scale_dry_run, "Print the plan, change nothing");
  add_load_window(pscale);

  auto* tl = app.add_subcommand("timeline", "Print an execution's timeline from the log");
  add_common(tl, f);
  tl->add_option("--tenant", tenant, "Tenant id")->required();
  tl->add_option("--id", execution, "Execution id")->required();

  auto* st = app.add_subcommand(
      "status",
      "List executions and their status; with --kafka, the engine's consumer groups: members, "
      "assignments, lag and last commit per partition (executions too if --data is given)");
  add_common(st, f);
  kafka_status_flags kst;
  st->add_flag("--json", kst.json, "With --kafka: the groups as JSON");
  st->add_option("--timeout-ms", kst.timeout_ms, "With --kafka: longest wait for one broker answer")
      ->capture_default_str()
      ->check(CLI::Range(100, 600'000));

  std::string stream_arg;
  int partition = -1;
  auto* dump = app.add_subcommand("dump", "Print the records of a stream, one per line");
  add_common(dump, f);
  dump->add_option("stream", stream_arg,
                   "Stream: ingress, executions, commands.step, "
                   "commands.ai, commands.notify, acks, definitions, "
                   "deadletter")
      ->required();
  dump->add_option("--partition", partition, "Only this partition");

  kafka_defaults kafka_config;
  std::vector<command_runner> runners = {add_replay_commands(app, kafka_config),
                                         add_topics_commands(app, kafka_config),
                                         add_config_commands(app),
                                         add_keys_commands(app),
                                         add_gateway_command(app, kafka_config),
                                         add_anchors_commands(app),
                                         add_repair_commands(app)};

  // `config check` reads its file itself; everything else starts from the configuration file
  // and the environment, which the flags then override.
  if (argc < 2 || std::string_view(argv[1]) != "config") {
    auto config = load_effective_config(argc, argv, std::getenv);
    if (!config) return report(config.error());
    auto kafka_props = resolve_kafka_properties(*config);
    if (!kafka_props) return report(kafka_props.error());
    for (common_flags* c : {&f, &wf, &demo_f}) apply_config(*config, *kafka_props, *c);
    kafka_config = {config->kafka_bootstrap.value_or(""), config->topic_prefix.value_or(""),
                    *kafka_props};
    if (config->metrics) demo.metrics_address = *config->metrics;
  }

  CLI11_PARSE(app, argc, argv);

  for (const command_runner& run : runners) {
    if (std::optional<int> rc = run()) return *rc;
  }

  const std::string rid = request_id.empty() ? fmt::format("cli-{}", wall_ms()) : request_id;
  if (demo_cmd->parsed()) {
    demo.data_dir = demo_f.data_dir;
    demo.partitions = demo_f.partitions ? demo_f.partitions : default_partitions;
    demo.fsync = !demo_f.no_fsync;
    demo.kafka = kafka_of(demo_f);
    demo.runtime = demo_f.runtime;
    demo.connectors_file = demo_f.connectors;
    demo.worker_streams = worker_streams_of(demo_f);
    demo.worker = demo_f.worker;
    return run_demo(demo, g_interrupted);
  }
  if (run_cmd->parsed()) return cmd_run(f, until_quiet, stats_interval_s, http, anchor_f);
  // An engine serving the data directory's API takes commands while it runs (api/README.md);
  // without one they go straight into the log.
  std::optional<local_endpoint> served;
  if (f.kafka.empty() && (pub->parsed() || pol->parsed() || start->parsed() || sig->parsed() ||
                          can->parsed() || tmove->parsed())) {
    served = find_endpoint(f.data_dir);
  }
  if (worker_cmd->parsed()) {
    if (wf.kafka.empty()) {
      return report(error{errc::invalid,
                          "`auterity worker` needs --kafka: the embedded log allows one process "
                          "per data directory, whose `run` serves the workers in process"});
    }
    if (worker_streams_of(wf).empty()) {
      return report(error{errc::invalid, "`auterity worker --workers none` has nothing to run"});
    }
    return cmd_run(wf, /*until_quiet=*/false, stats_interval_s);
  }
  if (pub->parsed()) {
    bool ok = false;
    std::string def = read_file(file, ok);
    if (!ok) return report(error{errc::io, "cannot read " + file});
    if (served) return api_publish(*served, tenant, def, params);
    std::string bytes = client::publish_definition({tenant, "", rid, wall_ms()}, def, params);
    if (publish_wait) {
      return cmd_submit_wait(f, tenant, rid, std::move(bytes), publish_wait_s, "publish");
    }
    return submit_one(f, tenant, std::move(bytes));
  }
  if (pol->parsed()) {
    bool ok = false;
    std::string text = read_file(file, ok);
    if (!ok) return report(error{errc::io, "cannot read " + file});
    if (served) {
      return api_policy(*served, tenant, text);
    }
    return submit_one(f, tenant, client::publish_policy({tenant, "", rid, wall_ms()}, text));
  }
  if (start->parsed()) {
    auto text = json_argument(input, "--input");
    if (!text) return report(text.error());
    if (served) return api_start(*served, tenant, execution, workflow, version, *text);
    std::string bytes =
        client::start_execution({tenant, execution, rid, wall_ms()}, workflow, version, *text);
    if (wait) return cmd_submit_wait(f, tenant, rid, std::move(bytes), wait_s, "start");
    return submit_one(f, tenant, std::move(bytes));
  }
  if (sig->parsed()) {
    auto text = json_argument(payload, "--payload");
    if (!text) return report(text.error());
    if (served) return api_signal(*served, tenant, execution, name, *text);
    return submit_one(f, tenant, client::signal({tenant, execution, rid, wall_ms()}, name, *text));
  }
  if (can->parsed()) {
    if (served) {
      return api_cancel(*served, tenant, execution, reason);
    }
    return submit_one(f, tenant, client::cancel({tenant, execution, rid, wall_ms()}, reason));
  }
  if (tmove->parsed()) {
    if (served) return api_move(*served, tenant, move_to, move_wait_s);
    return submit_one(f, tenant, client::move_tenant({tenant, "", rid, wall_ms()}, move_to));
  }
  if (pshow->parsed()) return cmd_partitions_show(f, hottest, window_min * 60'000);
  if (pplan->parsed()) return cmd_partitions_plan(f, plan_to, window_min * 60'000);
  if (pscale->parsed()) {
    return cmd_partitions_scale(f, scale_to, scale_dry_run, window_min * 60'000, scale_wait_s);
  }
  if (tl->parsed()) return cmd_timeline(f, tenant, execution);
  if (st->parsed()) {
    if (f.kafka.empty()) return cmd_status(f);
    kst.bootstrap = f.kafka;
    kst.topic_prefix = f.topic_prefix;
    kst.properties = f.kafka_properties;
    const int rc = kafka_groups_status(kst);
    if (rc != 0 || st->count("--data") == 0) return rc;
    return cmd_status(f);
  }
  if (dump->parsed()) return cmd_dump(f, stream_arg, partition);
  return 0;
}

}  // namespace auterity

int main(int argc, char** argv) { return auterity::main(argc, argv); }
