#include "replay/verify.h"

#include <filesystem>
#include <map>
#include <unordered_map>

#include <fmt/core.h>

#include "engine/record.h"
#include "processors/orchestrator.h"

namespace auterity {

std::string printable_key(std::string_view key) {
  std::string out;
  for (unsigned char c : key) {
    if (c >= 0x20 && c < 0x7f) {
      out.push_back(static_cast<char>(c));
    } else {
      out += fmt::format("\\x{:02x}", c);
    }
  }
  return out;
}

namespace {

result<std::map<std::string, std::string>> snapshot(const state_store& s) {
  std::map<std::string, std::string> out;
  auto r = s.scan_all([&](std::string_view k, std::string_view v) {
    out.emplace(k, v);
    return true;
  });
  if (!r) return std::unexpected(r.error());
  return out;
}

}  // namespace

result<std::vector<std::string>> compare_with_replay(log& l, uint32_t partition,
                                                     const state_store& live,
                                                     const std::string& scratch_dir) {
  std::error_code ec;
  std::filesystem::remove_all(scratch_dir, ec);
  auto rebuilt = state_store::open(scratch_dir);
  if (!rebuilt) return std::unexpected(rebuilt.error());
  orchestrator o(orchestrator_options{l.partition_count()});
  if (auto r = o.open(**rebuilt, partition); !r) return std::unexpected(r.error());
  const uint64_t end = live.checkpoint();
  std::vector<record> recs;
  state_batch batch;
  for (uint64_t from = 0; from < end;) {
    recs.clear();
    auto n = l.read(stream::executions, partition, from, std::min<uint64_t>(1024, end - from),
                    8 << 20, recs);
    if (!n) return std::unexpected(n.error());
    if (*n == 0) break;
    for (const record& r : recs) o.replay(r.offset, r.value);
    from = recs.back().offset + 1;
    o.flush(batch, {});
    if (auto w = (*rebuilt)->write(batch, from); !w) return std::unexpected(w.error());
  }
  auto a = snapshot(live);
  if (!a) return std::unexpected(a.error());
  auto b = snapshot(**rebuilt);
  if (!b) return std::unexpected(b.error());
  std::vector<std::string> diffs;
  if ((*rebuilt)->checkpoint() != end) {
    diffs.push_back(fmt::format("log ends at {} but the live checkpoint is {}",
                                (*rebuilt)->checkpoint(), end));
  }
  for (const auto& [k, v] : *a) {
    auto it = b->find(k);
    if (it == b->end()) {
      diffs.push_back("only in live state: " + printable_key(k));
    } else if (it->second != v) {
      diffs.push_back(fmt::format("differs: {} ({} bytes live, {} bytes rebuilt)",
                                  printable_key(k), v.size(), it->second.size()));
    }
  }
  for (const auto& [k, v] : *b) {
    if (!a->contains(k)) diffs.push_back("only in rebuilt state: " + printable_key(k));
  }
  rebuilt->reset();
  std::filesystem::remove_all(scratch_dir, ec);
  return diffs;
}

result<chain_report> verify_chains(log& l, uint32_t partition) {
  struct chain {
    hash256 last{};
    uint64_t count = 0;
    bool broken = false;
  };
  std::unordered_map<std::string, chain> chains;
  chain_report report;
  std::vector<record> recs;
  const uint64_t end = l.end_offset(stream::executions, partition);
  for (uint64_t from = 0; from < end;) {
    recs.clear();
    auto n = l.read(stream::executions, partition, from, 1024, 8 << 20, recs);
    if (!n) return std::unexpected(n.error());
    if (*n == 0) break;
    from = recs.back().offset + 1;
    for (const record& r : recs) {
      std::string why;
      const fbs::Envelope* e = decode_envelope(r.value, &why);
      if (!e) {
        report.problems.push_back(fmt::format("offset {}: undecodable: {}", r.offset, why));
        continue;
      }
      if (e->kind() != fbs::RecordKind::Event) continue;
      report.events++;
      const std::string key =
          fmt::format("{}/{}", sv(e->tenant_id()), sv(e->execution_id()));
      chain& c = chains[key];
      if (c.broken) continue;
      const auto* prev = e->prev_hash();
      const bool first = c.count == 0;
      const bool ok = first ? (prev == nullptr || prev->size() == 0)
                            : (prev != nullptr && prev->size() == c.last.size() &&
                               std::equal(prev->begin(), prev->end(), c.last.begin()));
      if (!ok) {
        c.broken = true;
        report.problems.push_back(fmt::format(
            "offset {}: event {} of {} does not follow the previous event (expected prev_hash "
            "{}, found {}): history removed, altered or reordered before it",
            r.offset, sv(e->record_id()), key, first ? "none" : hex(c.last),
            prev ? hex(prev->data(), prev->size()) : "none"));
        continue;
      }
      c.last = sha256(r.value);
      c.count++;
    }
  }
  report.executions = chains.size();
  return report;
}

}  // namespace auterity
