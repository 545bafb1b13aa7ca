#pragma once
// Gathering what happened to each execution from the streams of a partition, and the view a
// timeline shows of it.
//
// A timeline reads ingress (the upstream requests), executions (events and rejections),
// commands.* (what workers were asked: task, AI call, notification with channel and
// recipient) and acks (what they answered, with AI model, tokens and cost), merged in time
// order (scan.h). The collector files each record under its execution — every envelope
// carries tenant and execution id — and hands an execution's history over once it ended and a
// grace period passed (late acks of cancelled steps still join it), or when the scan ends.
//
// Memory: the records of the executions still open (or within their grace period), at most
// buffered_bytes_max in all: past that the oldest history is handed over in parts (marked
// continued). The bookkeeping for --workflow and the grace period holds open executions only.

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "engine/log.h"
#include "engine/result.h"
#include "replay/scan.h"

namespace auterity {

// What a replay selects. Empty strings select everything.
struct replay_scope {
  std::string tenant;
  std::string execution;
  std::string workflow;            // executions of this workflow (by their ExecutionStarted)
  std::optional<int64_t> from_ms;  // records with from <= timestamp <= to
  std::optional<int64_t> to_ms;
  bool all_partitions = false;  // read every partition, not only the tenant's placement
  // The partitions a tenant lived on (resolve_partitions()); empty: its default partition.
  std::vector<uint32_t> partitions;

  bool in_window(int64_t ts) const {
    return (!from_ms || ts >= *from_ms) && (!to_ms || ts <= *to_ms);
  }
};

// The partitions a scope reads: every partition unless a tenant is given (and not
// all_partitions); for a tenant, scope.partitions if resolve_partitions() filled it, else its
// default partition (tenant_partition against the placement base, engine/log.h; 0:
// partition_count).
std::vector<uint32_t> scope_partitions(const replay_scope& scope, uint32_t partition_count,
                                       uint32_t base = 0);

// A tenant's stay on one partition: from its default partition on, each move
// (docs/tenant-moves.md) ends a stay with the tenant's TenantMovedOut on that partition, and
// the next stay is on the partition it names.
struct tenant_stay {
  uint32_t partition = 0;
  uint64_t moved_out_offset = UINT64_MAX;  // its TenantMovedOut in executions; MAX: still there
  int64_t left_ms = INT64_MAX;             // that event's time
};
inline constexpr size_t tenant_stays_max = 4096;  // moves followed; more is refused (a loop)
// Follows the tenant's moves through the executions streams: each partition's stream is read
// at most once in all (a later stay on it resumes after the earlier TenantMovedOut). Cost: one
// pass over the executions of the partitions the tenant lived on.
result<std::vector<tenant_stay>> tenant_stays(log& l, std::string_view tenant);
// For a tenant scope (not all_partitions): fills scope.partitions with every partition the
// tenant lived on, so its history before and after a move is read.
result<void> resolve_partitions(log& l, replay_scope& scope);

// The streams a timeline reads. For records of the same millisecond this order breaks ties
// (after causes are pulled forward, see merged_reader).
inline constexpr stream timeline_streams[] = {stream::ingress,         stream::executions,
                                              stream::commands_step,   stream::commands_ai,
                                              stream::commands_notify, stream::acks};

struct history_record {
  stream s;
  uint64_t offset;
  std::string key;
  std::string bytes;
};

// The records of one execution (execution empty: a tenant's records that belong to no
// execution, such as definitions) in the order the scan met them.
struct history {
  uint32_t partition = 0;
  std::string tenant;
  std::string execution;
  std::string workflow;       // from ExecutionStarted ("" if not seen)
  bool continued = false;     // an earlier part of it was handed over already
  bool more_follows = false;  // handed over early (memory limit); the rest comes later
  std::vector<history_record> records;
  size_t bytes = 0;
};

struct collector_limits {
  int64_t late_grace_ms = 60'000;           // records this long after the end still join
  size_t buffered_bytes_max = 64ull << 20;  // records of all histories held at once
};

// Files records under their histories. In `streaming` mode records are handed over one by
// one as they come (JSON Lines needs no grouping), after the same scope checks.
class history_collector {
 public:
  using history_sink = std::function<result<void>(history&&)>;
  using record_sink = std::function<result<void>(const scanned_record&)>;

  history_collector(uint32_t partition, const replay_scope& scope, history_sink on_history,
                    collector_limits limits = {});
  history_collector(uint32_t partition, const replay_scope& scope, record_sink on_record);

  result<void> add(const scanned_record& r);
  result<void> finish();

  uint64_t records_in_scope() const { return _in_scope; }

 private:
  struct entry {
    history h;
    uint64_t order = 0;  // when it was first met: the hand-over order at the end
    std::optional<int64_t> ended_ms;
    bool started = false;
  };

  bool tenant_selected(const scanned_record& r) const;
  entry& entry_for(const scanned_record& r);
  void learn(entry& e, const fbs::Envelope& env);
  bool workflow_selected(const entry& e, const fbs::Envelope* env) const;
  result<void> keep(entry& e, const scanned_record& r);
  result<void> hand_over_ended(int64_t now_ms);
  result<void> hand_over(const std::string& key, bool more_follows);
  result<void> trim_memory();

  uint32_t _partition;
  replay_scope _scope;
  history_sink _on_history;
  record_sink _on_record;
  collector_limits _limits;
  std::unordered_map<std::string, entry> _entries;  // by tenant '\0' execution
  std::multimap<int64_t, std::string> _ended;       // end time -> key
  uint64_t _next_order = 0;
  size_t _buffered = 0;
  uint64_t _in_scope = 0;
};

// ---------------------------------------------------------------------------------- views

struct timeline_line {
  stream s = stream::executions;
  uint64_t offset = 0;
  int64_t ts_ms = 0;
  std::string kind;  // event, rejection, request, command, ack, undecodable
  std::string type;
  std::string record_id;
  std::string causation_id;
  std::string text;
  std::vector<std::string> details;  // the command an event sent and the ack that caused it
};

// One attempt of a step: from StepScheduled to the event that ended it.
struct step_bar {
  std::string step;
  uint32_t attempt = 0;
  int64_t start_ms = 0;
  int64_t end_ms = 0;
  // succeeded, failed, retry (failed, retried later), timed_out, skipped, cancelled (the
  // execution ended first), running (no end in the scan)
  std::string outcome;
  std::string detail;
};

struct execution_view {
  uint32_t partition = 0;
  std::string tenant;
  std::string execution;
  std::string workflow;
  uint32_t version = 0;
  std::string status;  // running, succeeded, failed, cancelled; "" if its start is not shown
  int64_t first_ms = 0;
  int64_t last_ms = 0;
  bool continued = false;
  bool more_follows = false;
  uint64_t events = 0;
  uint64_t rejections = 0;
  uint64_t notifications_sent = 0;  // notification commands acknowledged with Success
  uint64_t ai_calls = 0;            // acks that carry AI usage
  uint64_t ai_tokens_in = 0;
  uint64_t ai_tokens_out = 0;
  int64_t ai_cost_micros = 0;    // as the acks report it (connectors do not price)
  uint64_t ai_priced_calls = 0;  // AiUsageRecorded events (tenants with an AI policy)
  uint64_t ai_priced_tokens_in = 0;
  uint64_t ai_priced_tokens_out = 0;
  int64_t ai_priced_cost_micros = 0;  // their cost, priced by the router
  std::vector<timeline_line> lines;
  std::vector<step_bar> bars;
};

execution_view build_view(const history& h);

// Short stream names for timeline lines: in, ex, step, ai, notify, ack.
std::string_view stream_tag(stream s);

}  // namespace auterity
