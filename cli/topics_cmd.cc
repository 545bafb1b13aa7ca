// `auterity topics apply|describe`: the topic catalog (topics/catalog.h) on a Kafka cluster.

#include <algorithm>
#include <memory>

#include <fmt/core.h>
#include <CLI/CLI.hpp>

#include "cli/cli.h"
#include "topics/catalog.h"

namespace auterity {

namespace {

// Exit codes of both commands.
constexpr int exit_matches = 0;
constexpr int exit_differs = 1;  // describe: something differs; apply --dry-run: would change
constexpr int exit_error = 2;

struct topics_flags {
  std::string bootstrap;
  std::map<std::string, std::string> properties;  // the configuration's kafka.properties
  std::string config;  // read by main() before parsing (load_effective_config)
  std::string prefix;
  uint32_t partitions = 0;  // 0: as the topics have it, topic_partitions_default if none exist
  int16_t replication = 0;  // 0: as the topics have it, else min(3, brokers)
  int min_insync = 0;       // 0: 2 when replication >= 3, else 1
  bool allow_repartition = false;
  bool dry_run = false;
  int admin_timeout_ms = admin_timeout_ms_default;
};

kafka_cluster_access access(const topics_flags& f) { return {f.bootstrap, f.properties}; }

int report(const error& e) {
  fmt::print(stderr, "auterity: {} ({})\n", e.message, errc_name(e.code));
  return exit_error;
}

// The catalog the flags ask for; what is not given follows the cluster (topics/catalog.h).
result<std::vector<topic_spec>> resolve_catalog(const topics_flags& f) {
  return catalog_for_cluster(access(f),
                             {.partitions = f.partitions,
                              .replication = f.replication,
                              .min_insync_replicas = f.min_insync,
                              .prefix = f.prefix},
                             f.admin_timeout_ms);
}

int cmd_apply(const topics_flags& f) {
  auto catalog = resolve_catalog(f);
  if (!catalog) return report(catalog.error());
  apply_options opts;
  opts.allow_repartition = f.allow_repartition;
  opts.dry_run = f.dry_run;
  opts.admin_timeout_ms = f.admin_timeout_ms;
  auto lines = apply_catalog(access(f), *catalog, opts);
  if (!lines) return report(lines.error());
  bool changes = false;
  for (const std::string& line : *lines) {
    fmt::print("{}\n", line);
    changes = changes || !line.starts_with("ok: ");
  }
  return f.dry_run && changes ? exit_differs : exit_matches;
}

std::string human_ms(const std::string& ms) {
  constexpr int64_t hour_ms = 3600 * 1000, day_ms = 24 * hour_ms;
  if (ms.empty()) return "?";
  if (ms == "-1") return "forever";
  int64_t v = 0;
  try {
    v = std::stoll(ms);
  } catch (const std::exception&) {
    return ms;
  }
  if (v > 0 && v % day_ms == 0) return fmt::format("{}d", v / day_ms);
  if (v > 0 && v % hour_ms == 0) return fmt::format("{}h", v / hour_ms);
  return fmt::format("{}ms", v);
}

std::string config_value(const topic_state& s, std::string_view name) {
  for (const auto& [n, v] : s.configs) {
    if (n == name) return v;
  }
  return "";
}

std::vector<std::string> table_row(const topic_state& s) {
  std::string verdict = topic_verdict_name(s.verdict);
  if (s.verdict == topic_verdict::differs) {
    for (size_t i = 0; i < s.differences.size(); ++i) {
      verdict += (i == 0 ? ": " : ", ") + s.differences[i];
    }
  }
  if (!s.exists) return {s.want.name, "-", "-", "-", "-", "-", "-", verdict};
  return {s.want.name,
          std::to_string(s.partitions),
          std::to_string(s.replication),
          config_value(s, "cleanup.policy"),
          human_ms(config_value(s, "retention.ms")),
          config_value(s, "min.insync.replicas"),
          config_value(s, "max.message.bytes"),
          verdict};
}

void print_table(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> width(rows.front().size(), 0);
  for (const auto& row : rows) {
    for (size_t i = 0; i < row.size(); ++i) width[i] = std::max(width[i], row[i].size());
  }
  for (const auto& row : rows) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      line += i + 1 == row.size() ? row[i] : fmt::format("{:<{}}  ", row[i], width[i]);
    }
    fmt::print("{}\n", line);
  }
}

int cmd_describe(const topics_flags& f) {
  auto catalog = resolve_catalog(f);
  if (!catalog) return report(catalog.error());
  auto states = describe_catalog(access(f), *catalog, f.admin_timeout_ms);
  if (!states) return report(states.error());
  const topic_spec& first = catalog->front();
  fmt::print("catalog: {} partitions, rf {}, min.insync.replicas {}{}\n", first.partitions,
             first.replication, first.min_insync_replicas,
             f.prefix.empty() ? "" : fmt::format(", prefix '{}'", f.prefix));
  std::vector<std::vector<std::string>> rows = {{"topic", "partitions", "rf", "cleanup",
                                                 "retention", "min.insync", "max.message.bytes",
                                                 "verdict"}};
  bool all_ok = true;
  for (const topic_state& s : *states) {
    rows.push_back(table_row(s));
    all_ok = all_ok && s.verdict == topic_verdict::ok;
  }
  print_table(rows);
  return all_ok ? exit_matches : exit_differs;
}

void add_cluster_flags(CLI::App* cmd, topics_flags& f) {
  cmd->add_option("--bootstrap", f.bootstrap,
                  "Kafka bootstrap servers, host:port[,host:port...] (or kafka.bootstrap in "
                  "--config; the file's kafka.properties, e.g. SASL/TLS, are used too)");
  cmd->add_option(
      "--config", f.config,
      "Configuration file (TOML, cli/README.md; also AUTERITY_CONFIG): kafka.bootstrap, "
      "kafka.topic_prefix and kafka.properties");
  cmd->add_option("--prefix", f.prefix,
                  "Prefix of every topic name (several deployments on one cluster), e.g. 'prod.'");
  cmd->add_option("--partitions", f.partitions,
                  "Partitions of every topic (all are co-partitioned by tenant). Default: what "
                  "the existing topics have (the largest count), 4 if none exists")
      ->check(CLI::Range(1u, topic_partitions_max));
  cmd->add_option("--replication", f.replication,
                  "Replication factor. Default: what the existing topics have, else "
                  "min(3, brokers)")
      ->check(CLI::Range(int16_t{1}, topic_replication_max));
  cmd->add_option("--min-insync", f.min_insync,
                  "min.insync.replicas (acks=all writes fail below it). Default: 2 when the "
                  "replication factor is 3 or more, else 1")
      ->check(CLI::Range(1, int{topic_replication_max}));
  cmd->add_option("--admin-timeout-ms", f.admin_timeout_ms,
                  "Timeout of each admin request to the cluster (admin_timeout_ms)")
      ->capture_default_str()
      ->check(CLI::Range(1, 3600 * 1000));
}

constexpr const char* catalog_footer =
    "\nThe catalog: one topic per stream (ingress, executions, commands.step, commands.ai,\n"
    "commands.notify, acks, definitions, deadletter), all keyed by tenant and co-partitioned.\n"
    "executions: retention forever (the event log is the source of truth); definitions:\n"
    "compacted; deadletter: 30 days; the others: 7 days. max.message.bytes fits the engine's\n"
    "1 MiB record limit. See topics/README.md.\n";

// A topics subcommand with the cluster flags; its help ends with the catalog, then `footer`.
CLI::App* add_topics_subcommand(CLI::App* topics, const std::string& name,
                                const std::string& description, const std::string& footer,
                                topics_flags& f) {
  auto* cmd = topics->add_subcommand(name, description);
  add_cluster_flags(cmd, f);
  cmd->footer(catalog_footer + footer);
  return cmd;
}

CLI::App* add_apply(CLI::App* topics, topics_flags& f) {
  auto* cmd = add_topics_subcommand(
      topics, "apply",
      "Create missing topics and set configs that differ from the catalog (idempotent; prints "
      "one line per topic: created / raised / set / ok)",
      "\nRefuses, changing nothing: fewer partitions than a topic has (Kafka cannot shrink),\na "
      "different replication factor on an existing topic, a repartition without\n"
      "--allow-repartition. Other topic-level settings an operator made are kept.\n\nExit: 0 "
      "done (or nothing to do), 1 --dry-run found changes to make, 2 error or refused.",
      f);
  cmd->add_flag("--allow-repartition", f.allow_repartition,
                "Allow raising the partition count of existing topics. The count before is "
                "recorded first as the placement base, so tenants keep their partitions; "
                "running instances take the new partitions up within seconds, without a "
                "restart (topics/README.md)");
  cmd->add_flag("--dry-run", f.dry_run,
                "Print what would change and let the brokers validate it; change nothing");
  return cmd;
}

CLI::App* add_describe(CLI::App* topics, topics_flags& f) {
  return add_topics_subcommand(
      topics, "describe",
      "Show each topic's partitions, replication and configs against the catalog, with a "
      "verdict per topic (ok / missing / differs: what)",
      "\nExit: 0 everything matches the catalog, 1 something is missing or differs, 2 error.", f);
}

}  // namespace

command_runner add_topics_commands(CLI::App& app, const kafka_defaults& defaults) {
  auto flags = std::make_shared<topics_flags>();
  auto* topics =
      app.add_subcommand("topics",
                         "The Kafka topic catalog: create/update the topics (apply) or compare the "
                         "cluster with the catalog (describe)");
  topics->require_subcommand(1);
  CLI::App* apply = add_apply(topics, *flags);
  CLI::App* describe = add_describe(topics, *flags);
  return [flags, apply, describe, &defaults]() -> std::optional<int> {
    if (!apply->parsed() && !describe->parsed()) return std::nullopt;
    if (flags->bootstrap.empty()) flags->bootstrap = defaults.bootstrap;
    if (flags->prefix.empty()) flags->prefix = defaults.topic_prefix;
    flags->properties = defaults.properties;
    if (flags->bootstrap.empty()) {
      fmt::print(stderr, "auterity: topics needs --bootstrap (or kafka.bootstrap in the config)\n");
      return exit_error;
    }
    if (apply->parsed()) return cmd_apply(*flags);
    if (describe->parsed()) return cmd_describe(*flags);
    return std::nullopt;
  };
}

}  // namespace auterity
