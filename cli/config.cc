#include "cli/config.h"

#include <librdkafka/rdkafka.h>

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <set>

#include <fmt/core.h>
#include <toml++/toml.h>

#include "engine/kafka_log.h"
#include "engine/kafka_util.h"
#include "engine/secrets.h"
#include "engine/worker_runtime.h"

namespace auterity {

namespace {

struct int_limits {
  int64_t lo, hi;
};

constexpr int_limits partitions_range{1, 256};
constexpr int_limits worker_concurrency_range{1, static_cast<int64_t>(worker_concurrency_max)};
constexpr int_limits command_deadline_range{1, 3'600'000};
constexpr int_limits batch_records_range{1, 100'000};
constexpr int_limits commit_interval_range{0, 60'000};
constexpr int_limits committers_range{1, kafka_committers_max};

const std::vector<std::string> top_keys = {"data",
                                           "partitions",
                                           "fsync",
                                           "instance",
                                           "metrics",
                                           "connectors",
                                           "workers",
                                           "worker_concurrency",
                                           "command_deadline_ms",
                                           "batch_records",
                                           "commit_interval_ms",
                                           "kafka"};
const std::vector<std::string> kafka_keys = {"bootstrap", "topic_prefix", "committers",
                                             "properties"};
const std::set<std::string> worker_names = {"step", "ai", "notify", "none"};

std::string at(const std::string& path, const toml::source_region& r) {
  return fmt::format("{}:{}", path, r.begin.line);
}

std::string suggestion(std::string_view word, const std::vector<std::string>& known) {
  const std::string best = closest_name(word, known);
  return best.empty() ? "" : fmt::format("; did you mean {}?", best);
}

// Every property name librdkafka knows, for suggestions (its own table, printed by
// rd_kafka_conf_properties_show; read once).
const std::vector<std::string>& librdkafka_properties() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> out;
    char* buf = nullptr;
    size_t size = 0;
    FILE* f = open_memstream(&buf, &size);
    if (!f) return out;
    rd_kafka_conf_properties_show(f);
    std::fclose(f);
    std::string_view text(buf, size);
    while (!text.empty()) {
      const size_t eol = text.find('\n');
      std::string_view line = text.substr(0, eol);
      text = eol == std::string_view::npos ? std::string_view() : text.substr(eol + 1);
      const size_t end = line.find_first_of(" \t|");
      std::string_view name = line.substr(0, end);
      if (!name.empty() && name.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789._") ==
                               std::string_view::npos) {
        out.emplace_back(name);
      }
    }
    std::free(buf);
    return out;
  }();
  return names;
}

result<int64_t> ranged(const std::string& where, std::string_view key, int64_t v, int_limits l) {
  if (v < l.lo || v > l.hi) {
    return fail(errc::invalid,
                fmt::format("{}: {} = {} is out of range {}..{}", where, key, v, l.lo, l.hi));
  }
  return v;
}

result<int64_t> integer_of(const std::string& where, std::string_view key, const toml::node& n,
                           int_limits l) {
  auto v = n.value<int64_t>();
  if (!n.is_integer() || !v) {
    return fail(errc::invalid, fmt::format("{}: {} must be an integer", where, key));
  }
  return ranged(where, key, *v, l);
}

result<std::string> string_of(const std::string& where, std::string_view key, const toml::node& n) {
  if (!n.is_string())
    return fail(errc::invalid, fmt::format("{}: {} must be a string", where, key));
  return *n.value<std::string>();
}

result<void> check_workers(const std::string& where, const std::vector<std::string>& ws) {
  for (const std::string& w : ws) {
    if (!worker_names.contains(w)) {
      return fail(errc::invalid, fmt::format("{}: workers: unknown stream \"{}\" (step, ai, "
                                             "notify or none)",
                                             where, w));
    }
  }
  return {};
}

// A property as the operator wrote it: neither the engine's own nor an unknown name, and a
// secret only by reference.
result<void> check_kafka_property(const std::string& where, const std::string& key,
                                  const std::string& value) {
  if (auto why = kafka_engine_owned(key)) {
    return fail(errc::invalid,
                fmt::format("{}: kafka.properties: {} is set by the engine and cannot be "
                            "overridden ({})",
                            where, key, *why));
  }
  const auto& known = librdkafka_properties();
  if (!known.empty() && std::find(known.begin(), known.end(), key) == known.end()) {
    return fail(errc::invalid, fmt::format("{}: kafka.properties: unknown librdkafka property "
                                           "{}{}",
                                           where, key, suggestion(key, known)));
  }
  if (kafka_secret_setting(key) && !value.starts_with("env:") && !value.starts_with("file:")) {
    return fail(errc::invalid,
                fmt::format("{}: kafka.properties: {} is a secret: give it by reference, "
                            "\"env:NAME\" or \"file:/path\", not as a literal value",
                            where, key));
  }
  return {};
}

// [kafka.properties]: quoted dotted names ("sasl.mechanism" = ...) or nested tables
// (sasl.mechanism = ... in TOML is sasl -> mechanism); both flatten to librdkafka's names.
result<void> read_properties(const std::string& path, const toml::table& t,
                             const std::string& prefix, engine_config& out) {
  for (auto&& [k, v] : t) {
    const std::string name = prefix + std::string(k.str());
    const std::string where = at(path, k.source());
    if (const toml::table* sub = v.as_table()) {
      if (auto r = read_properties(path, *sub, name + ".", out); !r) return r;
      continue;
    }
    std::string value;
    if (v.is_string()) {
      value = *v.value<std::string>();
    } else if (v.is_integer()) {
      value = std::to_string(*v.value<int64_t>());
    } else if (v.is_boolean()) {
      value = *v.value<bool>() ? "true" : "false";
    } else {
      return fail(errc::invalid, fmt::format("{}: kafka.properties: {} must be a string, an "
                                             "integer or a boolean",
                                             where, name));
    }
    if (auto r = check_kafka_property(where, name, value); !r) return r;
    out.kafka_properties[name] = value;
    out.sources["kafka.properties." + name] = {where};
  }
  return {};
}

result<void> read_kafka(const std::string& path, const toml::table& t, engine_config& out) {
  for (auto&& [k, v] : t) {
    const std::string key(k.str());
    const std::string where = at(path, k.source());
    if (key == "bootstrap") {
      auto s = string_of(where, "kafka.bootstrap", v);
      if (!s) return std::unexpected(s.error());
      out.kafka_bootstrap = *s;
    } else if (key == "topic_prefix") {
      auto s = string_of(where, "kafka.topic_prefix", v);
      if (!s) return std::unexpected(s.error());
      out.topic_prefix = *s;
    } else if (key == "committers") {
      auto n = integer_of(where, "kafka.committers", v, committers_range);
      if (!n) return std::unexpected(n.error());
      out.committers = static_cast<int>(*n);
    } else if (key == "properties") {
      const toml::table* props = v.as_table();
      if (!props) {
        return fail(errc::invalid, fmt::format("{}: kafka.properties must be a table", where));
      }
      if (auto r = read_properties(path, *props, "", out); !r) return r;
      continue;
    } else {
      return fail(errc::invalid, fmt::format("{}: unknown key kafka.{}{}", where, key,
                                             suggestion(key, kafka_keys)));
    }
    out.sources["kafka." + key] = {where};
  }
  return {};
}

result<void> read_top(const std::string& path, const toml::table& t, engine_config& out) {
  for (auto&& [k, v] : t) {
    const std::string key(k.str());
    const std::string where = at(path, k.source());
    auto str = [&](std::optional<std::string>& field) -> result<void> {
      auto s = string_of(where, key, v);
      if (!s) return std::unexpected(s.error());
      field = *s;
      return {};
    };
    auto num = [&]<typename T>(std::optional<T>& field, int_limits l) -> result<void> {
      auto n = integer_of(where, key, v, l);
      if (!n) return std::unexpected(n.error());
      field = static_cast<T>(*n);
      return {};
    };
    result<void> r;
    if (key == "data") {
      r = str(out.data);
    } else if (key == "instance") {
      r = str(out.instance);
    } else if (key == "metrics") {
      r = str(out.metrics);
    } else if (key == "connectors") {
      r = str(out.connectors);
    } else if (key == "partitions") {
      r = num(out.partitions, partitions_range);
    } else if (key == "worker_concurrency") {
      r = num(out.worker_concurrency, worker_concurrency_range);
    } else if (key == "command_deadline_ms") {
      r = num(out.command_deadline_ms, command_deadline_range);
    } else if (key == "batch_records") {
      r = num(out.batch_records, batch_records_range);
    } else if (key == "commit_interval_ms") {
      r = num(out.commit_interval_ms, commit_interval_range);
    } else if (key == "fsync") {
      if (!v.is_boolean())
        return fail(errc::invalid, fmt::format("{}: fsync must be true or "
                                               "false",
                                               where));
      out.fsync = *v.value<bool>();
    } else if (key == "workers") {
      const toml::array* a = v.as_array();
      std::vector<std::string> ws;
      if (a) {
        for (const toml::node& e : *a) {
          if (!e.is_string()) a = nullptr;
          if (!a) break;
          ws.push_back(*e.value<std::string>());
        }
      }
      if (!a) {
        return fail(errc::invalid, fmt::format("{}: workers must be an array of strings", where));
      }
      r = check_workers(where, ws);
      out.workers = ws;
    } else if (key == "kafka") {
      const toml::table* kt = v.as_table();
      if (!kt) return fail(errc::invalid, fmt::format("{}: kafka must be a table", where));
      if (auto kr = read_kafka(path, *kt, out); !kr) return kr;
      continue;
    } else {
      return fail(errc::invalid,
                  fmt::format("{}: unknown key {}{}", where, key, suggestion(key, top_keys)));
    }
    if (!r) return r;
    out.sources[key] = {where};
  }
  return {};
}

result<int64_t> env_integer(const char* name, const char* text, int_limits l) {
  int64_t v = 0;
  const std::string_view s(text);
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size()) {
    return fail(errc::invalid, fmt::format("environment {}: \"{}\" is not an integer", name, s));
  }
  return ranged(fmt::format("environment {}", name), name, v, l);
}

}  // namespace

std::string closest_name(std::string_view word, const std::vector<std::string>& known) {
  std::string best;
  size_t best_d = std::numeric_limits<size_t>::max();
  for (const std::string& k : known) {
    // Levenshtein distance, one row at a time.
    std::vector<size_t> row(k.size() + 1);
    for (size_t j = 0; j <= k.size(); ++j) row[j] = j;
    for (size_t i = 1; i <= word.size(); ++i) {
      size_t diag = row[0];
      row[0] = i;
      for (size_t j = 1; j <= k.size(); ++j) {
        const size_t up = row[j];
        row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (word[i - 1] == k[j - 1] ? 0 : 1)});
        diag = up;
      }
    }
    if (row[k.size()] < best_d) {
      best_d = row[k.size()];
      best = k;
    }
  }
  return best_d <= std::max<size_t>(2, word.size() / 3) ? best : "";
}

result<engine_config> load_config_file(const std::string& path) {
  toml::table root;
  try {
    root = toml::parse_file(path);
  } catch (const toml::parse_error& e) {
    const auto& b = e.source().begin;
    if (b.line == 0) {
      return fail(errc::invalid, fmt::format("{}: {}", path, e.description()));
    }
    return fail(errc::invalid,
                fmt::format("{}:{}:{}: {}", path, b.line, b.column, e.description()));
  }
  engine_config out;
  if (auto r = read_top(path, root, out); !r) return std::unexpected(r.error());
  return out;
}

result<void> apply_config_env(engine_config& c, env_lookup getenv) {
  auto str = [&](const char* name, std::optional<std::string>& field, const char* key) {
    if (const char* v = getenv(name)) {
      field = v;
      c.sources[key] = {fmt::format("environment {}", name)};
    }
  };
  str("AUTERITY_DATA", c.data, "data");
  str("AUTERITY_INSTANCE", c.instance, "instance");
  str("AUTERITY_METRICS", c.metrics, "metrics");
  str("AUTERITY_CONNECTORS", c.connectors, "connectors");
  str("AUTERITY_KAFKA", c.kafka_bootstrap, "kafka.bootstrap");
  str("AUTERITY_TOPIC_PREFIX", c.topic_prefix, "kafka.topic_prefix");

  struct numeric {
    const char* name;
    const char* key;
    int_limits limits;
    std::function<void(int64_t)> set;
  };
  const numeric numerics[] = {
      {"AUTERITY_PARTITIONS", "partitions", partitions_range,
       [&](int64_t v) { c.partitions = static_cast<uint32_t>(v); }},
      {"AUTERITY_WORKER_CONCURRENCY", "worker_concurrency", worker_concurrency_range,
       [&](int64_t v) { c.worker_concurrency = static_cast<size_t>(v); }},
      {"AUTERITY_COMMAND_DEADLINE_MS", "command_deadline_ms", command_deadline_range,
       [&](int64_t v) { c.command_deadline_ms = v; }},
      {"AUTERITY_BATCH_RECORDS", "batch_records", batch_records_range,
       [&](int64_t v) { c.batch_records = static_cast<size_t>(v); }},
      {"AUTERITY_COMMIT_INTERVAL_MS", "commit_interval_ms", commit_interval_range,
       [&](int64_t v) { c.commit_interval_ms = v; }},
      {"AUTERITY_KAFKA_COMMITTERS", "kafka.committers", committers_range,
       [&](int64_t v) { c.committers = static_cast<int>(v); }},
  };
  for (const numeric& n : numerics) {
    const char* v = getenv(n.name);
    if (!v) continue;
    auto parsed = env_integer(n.name, v, n.limits);
    if (!parsed) return std::unexpected(parsed.error());
    n.set(*parsed);
    c.sources[n.key] = {fmt::format("environment {}", n.name)};
  }
  if (const char* v = getenv("AUTERITY_FSYNC")) {
    const std::string_view s(v);
    if (s != "true" && s != "false") {
      return fail(errc::invalid,
                  fmt::format("environment AUTERITY_FSYNC: \"{}\" is not true or false", s));
    }
    c.fsync = s == "true";
    c.sources["fsync"] = {"environment AUTERITY_FSYNC"};
  }
  if (const char* v = getenv("AUTERITY_WORKERS")) {
    std::vector<std::string> ws;
    std::string_view s(v);
    while (!s.empty()) {
      const size_t comma = s.find(',');
      ws.emplace_back(s.substr(0, comma));
      s = comma == std::string_view::npos ? std::string_view() : s.substr(comma + 1);
    }
    if (auto r = check_workers("environment AUTERITY_WORKERS", ws); !r) return r;
    c.workers = ws;
    c.sources["workers"] = {"environment AUTERITY_WORKERS"};
  }
  return {};
}

result<std::map<std::string, std::string>> resolve_kafka_properties(const engine_config& config) {
  std::map<std::string, std::string> out;
  for (const auto& [k, v] : config.kafka_properties) {
    if (kafka_secret_setting(k)) {
      auto secret = resolve_secret(v);
      if (!secret) {
        return fail(secret.error().code,
                    fmt::format("kafka.properties: {}: {}", k, secret.error().message));
      }
      out[k] = *secret;
    } else {
      out[k] = v;
    }
  }
  // librdkafka checks names and values (e.g. an unknown sasl.mechanism); its message names
  // the setting and its value, so a secret's value must not reach it through that message.
  for (const auto& [k, v] : out) {
    auto conf = kafka_conf_new({{k, v}});
    if (!conf) {
      return fail(errc::invalid,
                  kafka_secret_setting(k)
                      ? fmt::format("kafka.properties: {}: librdkafka refuses the value", k)
                      : fmt::format("kafka.properties: {}", conf.error().message));
    }
    rd_kafka_conf_destroy(*conf);
  }
  return out;
}

std::string describe_config(const engine_config& c) {
  std::string out;
  auto source = [&](const std::string& key) {
    auto it = c.sources.find(key);
    return it == c.sources.end() ? std::string("default") : it->second.where;
  };
  auto line = [&](const std::string& key, const std::string& value) {
    out += fmt::format("{:<44} # {}\n", fmt::format("{} = {}", key, value), source(key));
  };
  auto quoted = [](const std::string& s) { return fmt::format("\"{}\"", s); };
  auto opt_str = [&](const char* key, const std::optional<std::string>& v, const char* dflt) {
    line(key, v ? quoted(*v) : dflt);
  };
  auto opt_num = [&]<typename T>(const char* key, const std::optional<T>& v, const char* dflt) {
    line(key, v ? std::to_string(*v) : dflt);
  };
  opt_str("data", c.data, "\"auterity-data\" (demo: \"auterity-demo\")");
  opt_num("partitions", c.partitions, "(the data directory's count; 4 for a new one)");
  line("fsync", c.fsync.value_or(true) ? "true" : "false");
  opt_str("instance", c.instance, "\"engine-1\"");
  opt_str("metrics", c.metrics, "(off)");
  opt_str("connectors", c.connectors, "(local actions only)");
  if (c.workers) {
    std::string ws;
    for (const std::string& w : *c.workers) ws += (ws.empty() ? "" : ", ") + quoted(w);
    line("workers", "[" + ws + "]");
  } else {
    line("workers", "[\"step\", \"ai\", \"notify\"]");
  }
  opt_num("worker_concurrency", c.worker_concurrency, "8");
  opt_num("command_deadline_ms", c.command_deadline_ms, "30000");
  opt_num("batch_records", c.batch_records, "512");
  opt_num("commit_interval_ms", c.commit_interval_ms, "0");
  opt_str("kafka.bootstrap", c.kafka_bootstrap, "(none: the embedded log)");
  opt_str("kafka.topic_prefix", c.topic_prefix, "\"\"");
  opt_num("kafka.committers", c.committers, std::to_string(kafka_log_options{}.committers).c_str());
  for (const auto& [k, v] : c.kafka_properties) {
    const std::string key = "kafka.properties." + k;
    if (!kafka_secret_setting(k)) {
      line(key, quoted(v));
      continue;
    }
    // The reference is no secret; the value it names is never printed.
    auto resolved = resolve_secret(v);
    line(key, fmt::format("\"****\" ({}, {})", v, resolved ? "resolves" : "DOES NOT RESOLVE"));
  }
  return out;
}

std::optional<std::string> config_path_of(int argc, char** argv, env_lookup getenv) {
  for (int i = 1; i < argc; ++i) {
    const std::string_view a(argv[i]);
    if (a == "--") break;
    if (a == "--config" && i + 1 < argc) return std::string(argv[i + 1]);
    if (a.starts_with("--config=")) return std::string(a.substr(9));
  }
  if (const char* v = getenv("AUTERITY_CONFIG"); v && *v) return std::string(v);
  return std::nullopt;
}

result<engine_config> load_effective_config(int argc, char** argv, env_lookup getenv) {
  engine_config c;
  if (auto path = config_path_of(argc, argv, getenv)) {
    auto loaded = load_config_file(*path);
    if (!loaded) return loaded;
    c = std::move(*loaded);
  }
  if (auto r = apply_config_env(c, getenv); !r) return std::unexpected(r.error());
  return c;
}

}  // namespace auterity
