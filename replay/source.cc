#include "replay/source.h"

#include <filesystem>

#include <fmt/core.h>

#include "engine/embedded_log.h"

namespace auterity {

std::vector<state_store*> replay_source::store_ptrs() const {
  std::vector<state_store*> out;
  for (const auto& s : stores) out.push_back(s.get());
  return out;
}

result<replay_source> open_embedded_source(const std::string& data_dir, bool with_state) {
  const std::string log_dir = data_dir + "/log";
  auto partitions = embedded_log_partitions(log_dir);
  if (!partitions) return std::unexpected(partitions.error());
  if (!*partitions) {
    return fail(errc::not_found,
                fmt::format("{} holds no embedded log (expected {}/meta)", data_dir, log_dir));
  }
  embedded_log_options lo;
  lo.partitions = **partitions;
  lo.fsync = false;  // replay only reads; recovery's cut of a torn tail needs no sync either
  auto l = open_embedded_log(log_dir, lo);
  if (!l) return std::unexpected(l.error());
  replay_source src;
  src.events = std::move(*l);
  src.stores.resize(lo.partitions);
  if (!with_state) return src;
  for (uint32_t p = 0; p < lo.partitions; ++p) {
    const std::string dir = fmt::format("{}/state/p{:03}", data_dir, p);
    std::error_code ec;
    if (!std::filesystem::exists(dir + "/CURRENT", ec)) continue;
    state_store_options so;
    so.create_if_missing = false;  // never invent an empty state to compare with
    // Replay reads the stores in sequential scans (chain ends, the state comparison) and does
    // at most a few point reads: a small cache keeps memory low.
    so.block_cache_bytes = 16ull << 20;
    auto s = state_store::open(dir, so);
    if (!s) return std::unexpected(s.error());
    src.stores[p] = std::move(*s);
  }
  return src;
}

}  // namespace auterity
