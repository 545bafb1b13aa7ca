#include "replay/timeline.h"

#include <fmt/core.h>

#include "engine/record.h"
#include "processors/execution_state.h"
#include "replay/describe.h"

namespace auterity {

result<std::vector<timeline_entry>> load_timeline(log& l, uint32_t partition,
                                                  const state_store& store, std::string_view tenant,
                                                  std::string_view execution) {
  // An index entry is the event's offset in this partition's executions stream, or, for an
  // event written before the tenant moved here, its offset and the partition it is on.
  std::vector<std::pair<uint32_t, uint64_t>> offsets;
  auto scanned = store.scan_prefix(
      keys::event_index_prefix(tenant, execution), [&](std::string_view, std::string_view v) {
        offsets.emplace_back(v.size() == 12 ? keys::get_be32(v.substr(8)) : partition,
                             keys::get_be64(v));
        return true;
      });
  if (!scanned) return std::unexpected(scanned.error());
  std::vector<timeline_entry> out;
  std::vector<record> recs;
  for (auto [p, off] : offsets) {
    recs.clear();
    if (p >= l.partition_count()) continue;
    auto n = l.read(stream::executions, p, off, 1, 1 << 20, recs);
    if (!n) return std::unexpected(n.error());
    if (*n == 0) continue;  // indexed but not yet readable: cannot happen after a commit
    const fbs::Envelope* e = decode_envelope(recs[0].value);
    if (!e) continue;
    out.push_back({off, e->timestamp_ms(), std::string(payload_name(e->payload_type())),
                   std::string(sv(e->record_id())), std::string(sv(e->causation_id())),
                   describe(*e)});
  }
  return out;
}

std::string format_timeline(const std::vector<timeline_entry>& entries) {
  std::string out;
  if (entries.empty()) return out;
  const int64_t t0 = entries.front().timestamp_ms;
  for (const timeline_entry& e : entries) {
    out += fmt::format("  +{:7.3f}s  {:<20} {}\n", (double(e.timestamp_ms) - double(t0)) / 1000.0,
                       e.type, e.description);
  }
  return out;
}

}  // namespace auterity
