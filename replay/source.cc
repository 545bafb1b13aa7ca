#include "replay/source.h"

#include <filesystem>

#include <fmt/core.h>

#include "engine/embedded_log.h"
#include "engine/kafka_log.h"

namespace auterity {

std::vector<state_store*> replay_source::store_ptrs() const {
  std::vector<state_store*> out;
  for (const auto& s : stores) out.push_back(s.get());
  return out;
}

namespace {

// The state stores <data_dir>/state/pNNN that exist, never creating one.
result<void> open_stores(replay_source& src, const std::string& data_dir, bool with_state) {
  const uint32_t partitions = src.events->partition_count();
  src.stores.resize(partitions);
  if (!with_state) return {};
  for (uint32_t p = 0; p < partitions; ++p) {
    const std::string dir = fmt::format("{}/state/p{:03}", data_dir, p);
    std::error_code ec;
    if (!std::filesystem::exists(dir + "/CURRENT", ec)) continue;
    state_store_options so;
    so.create_if_missing = false;  // never invent an empty state to compare with
    so.read_only = true;           // an audit changes no byte of the evidence
    // Replay reads the stores in sequential scans (chain ends, the state comparison) and does
    // at most a few point reads: a small cache keeps memory low.
    so.block_cache_bytes = 16ull << 20;
    auto s = state_store::open(dir, so);
    if (!s) return std::unexpected(s.error());
    src.stores[p] = std::move(*s);
  }
  return {};
}

}  // namespace

result<replay_source> open_kafka_source(const std::string& bootstrap,
                                        const std::string& topic_prefix,
                                        const std::string& data_dir, bool with_state,
                                        const std::map<std::string, std::string>& properties) {
  kafka_log_options o;
  o.bootstrap = bootstrap;
  o.client_config = properties;
  o.topic_prefix = topic_prefix;
  o.instance_id = "replay";
  o.read_only = true;
  auto l = open_kafka_log(o);
  if (!l) return std::unexpected(l.error());
  replay_source src;
  src.events = std::move(*l);
  if (auto r = open_stores(src, data_dir, with_state); !r) return std::unexpected(r.error());
  return src;
}

result<replay_source> open_embedded_source(const std::string& data_dir, bool with_state) {
  std::error_code ec;
  if (!std::filesystem::is_directory(data_dir, ec)) {
    return fail(errc::not_found, fmt::format("data directory {} does not exist", data_dir));
  }
  const std::string log_dir = data_dir + "/log";
  auto partitions = embedded_log_partitions(log_dir);
  if (!partitions) return std::unexpected(partitions.error());
  if (!*partitions) {
    return fail(errc::not_found,
                fmt::format("{} holds no embedded log (expected {}/meta)", data_dir, log_dir));
  }
  std::vector<log_damage> damage;
  embedded_log_options lo;
  lo.partitions = **partitions;
  lo.read_only = true;
  lo.on_damage = [&damage](const log_damage& d) { damage.push_back(d); };  // during the open only
  auto l = open_embedded_log(log_dir, lo);
  if (!l) return std::unexpected(l.error());
  replay_source src;
  src.events = std::move(*l);
  src.damage = std::move(damage);
  if (auto r = open_stores(src, data_dir, with_state); !r) return std::unexpected(r.error());
  return src;
}

}  // namespace auterity
