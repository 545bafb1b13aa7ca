#pragma once
// The orchestrator's state: what it keeps per execution, per tenant and per timer, and where
// each lives in the partition's RocksDB. Only the appliers (appliers.cc) change it.
//
// Keys (all of a tenant under one prefix, so a tenant scans and deletes as a range):
//   R<tenant>                                  tenant registry (value empty)
//   T<tenant>\0C                               tenant chain: event count + last hash
//   T<tenant>\0D<workflow>\0<version:be32>     published definition (normalised JSON)
//   T<tenant>\0L<workflow>                     latest version (be32)
//   T<tenant>\0E<execution>                    execution state (encode_execution)
//   T<tenant>\0H<execution>\0<seq:be32>        event index: executions offset (be64)
//   T<tenant>\0M<due:be64><execution>\0<step:be16>  timer (value empty); step 0xFFFF: the end
//                                              of the hold window of <execution>'s held signals
//   T<tenant>\0S<execution>\0<seq:be32>        a signal held for an execution id not known yet
//                                              (encode_held_signal), seq in arrival order;
//                                              deleted when released (HeldSignalsReleased)
//   T<tenant>\0P                               tenant policy: version (be32) + normalised JSON
//   T<tenant>\0U<YYYY-MM-DD>                   AI spend of a UTC day, micro-USD (be64); pruned
//                                              62 days after (retention:: in tenant_policy.h)
//   T<tenant>\0V<YYYY-MM>                      AI spend of a UTC month, micro-USD (be64);
//                                              pruned 24 months after
//   T<tenant>\0N<channel>                      notifications admitted in the channel's current
//                                              rate-limit window: window start (be64) + count
//                                              (be32); a new window replaces the old one
//   T<tenant>\0X<content hash: 32 bytes>       last admission of this notification content:
//                                              time (be64) + command id; pruned once past the
//                                              dedup window, at most 20,000 per tenant
// The U, V, N and X keys of a tenant are read as a whole (prefix scans) by prefetch; the
// appliers prune U, V and X (POLICY.md, Retention).

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "engine/record.h"

namespace auterity {

enum class exec_status : uint8_t { running = 0, succeeded = 1, failed = 2, cancelled = 3 };
std::string_view exec_status_name(exec_status s);

enum class step_status : uint8_t {
  pending = 0,
  running = 1,     // a command is out; timer = attempt timeout
  waiting = 2,     // wait_signal; timer = signal timeout
  delaying = 3,    // delay; timer = end of delay
  retry_wait = 4,  // timer = next attempt
  succeeded = 5,
  failed = 6,
  timed_out = 7,
  skipped = 8,
  cancelled = 9,
  deferred = 10,  // notify: held back by the tenant policy; timer = when to ask again
};
std::string_view step_status_name(step_status s);
// Succeeded, failed, timed out or skipped: dependents may proceed.
bool step_resolved(step_status s);

// One routed attempt of an ai step (AiRouted), for failover and pricing its usage.
struct ai_attempt {
  uint32_t attempt = 0;
  std::string provider;
  std::string model;
  int64_t input_per_1k_micros = 0;
  int64_t output_per_1k_micros = 0;
  bool failover = false;        // replaced a failed attempt without using a retry
  bool usage_recorded = false;  // an AiUsageRecorded priced this attempt's usage
  auto operator<=>(const ai_attempt&) const = default;
};

// One item of a foreach step. Statuses: pending, running (command out), retry_wait,
// succeeded, failed, timed_out (retries used up).
struct item_state {
  step_status status = step_status::pending;
  uint32_t attempt = 0;
  int64_t timer_at_ms = 0;  // 0: no timer
  std::string output_json;
  std::string error;
  std::string child;  // a workflow body: the child execution of the latest attempt
  auto operator<=>(const item_state&) const = default;
};

struct step_state {
  step_status status = step_status::pending;
  uint32_t attempt = 0;
  int64_t timer_at_ms = 0;  // 0: no timer
  std::string output_json;
  std::string error;
  std::vector<ai_attempt> ai;     // routed attempts, oldest first (tenants with an AI policy)
  std::string items_json;         // foreach: the list, fixed when the step started
  std::vector<item_state> items;  // foreach: one per element of items_json
  std::string child;              // workflow: the child execution of the latest attempt

  // Attempts that used the retry budget: failovers do not.
  uint32_t retry_attempts() const;
  // The routed attempt `attempt`, if any.
  const ai_attempt* ai_of(uint32_t attempt) const;
  // Candidate names ("provider/model") tried since the last attempt that was not a failover.
  std::vector<std::string> ai_tried_in_round() const;
};

struct execution_state {
  std::string tenant;
  std::string id;
  std::string workflow;
  uint32_t version = 0;
  exec_status status = exec_status::running;
  std::string input_json;
  uint32_t event_count = 0;
  hash256 last_hash{};
  int64_t started_ms = 0;
  int64_t ended_ms = 0;
  std::string result;  // output JSON, failure or cancel reason
  std::vector<step_state> steps;
  std::vector<std::pair<std::string, std::string>> signals;  // received, not yet consumed
  // A sub-workflow's link to the execution (same tenant) whose `workflow` step started it, and
  // its nesting depth (1: child of a top-level execution). Empty / 0 for a top-level one.
  std::string parent;
  std::string parent_step;
  uint32_t depth = 0;
};

std::string encode_execution(const execution_state& e);
bool decode_execution(std::string_view bytes, execution_state& out);
// The status alone, from the head of an encoded execution (no steps or input decoded): false if
// the head is malformed.
bool peek_execution_status(std::string_view bytes, exec_status& out);

// A signal held for an execution id the partition does not know yet (SignalHeld), until its
// start arrives or its hold window ends (processors/README.md, Signals before their start).
struct held_signal {
  std::string name;
  std::string payload_json;       // normalised
  std::string command_id;         // the Signal's record id: causation of its delivery or rejection
  uint32_t source_partition = 0;  // where the Signal was read on ingress
  uint64_t source_offset = 0;
  int64_t held_ms = 0;        // when it was held
  int64_t expires_at_ms = 0;  // end of the execution id's hold window
  // What it counts against limits::signals_held_bytes_per_tenant_max.
  size_t bytes() const { return name.size() + payload_json.size(); }
  auto operator<=>(const held_signal&) const = default;
};

std::string encode_held_signal(const held_signal& h);
bool decode_held_signal(std::string_view bytes, held_signal& out);

struct tenant_chain {
  uint32_t event_count = 0;
  hash256 last_hash{};
};
std::string encode_chain(const tenant_chain& c);
bool decode_chain(std::string_view bytes, tenant_chain& out);

namespace keys {
std::string tenant_registry(std::string_view tenant);
std::string placement(std::string_view tenant);      // O<tenant>: where it lives (tenant moves)
std::string tenant_prefix(std::string_view tenant);  // T<tenant>\0
std::string tenant_chain(std::string_view tenant);
std::string definition(std::string_view tenant, std::string_view workflow, uint32_t version);
std::string latest(std::string_view tenant, std::string_view workflow);
std::string execution(std::string_view tenant, std::string_view execution);
std::string event_index(std::string_view tenant, std::string_view execution, uint32_t seq);
std::string event_index_prefix(std::string_view tenant, std::string_view execution);
std::string timer(std::string_view tenant, int64_t due_ms, std::string_view execution,
                  uint16_t step);
std::string timer_prefix(std::string_view tenant);
std::string policy(std::string_view tenant);
std::string held_signal(std::string_view tenant, std::string_view execution, uint32_t seq);
std::string held_signal_prefix(std::string_view tenant);  // T<tenant>\0S
// The execution id of a held signal key of `tenant`; false if it is not one.
bool parse_held_signal(std::string_view key, std::string_view tenant, std::string& execution);
std::string ai_spend_day(std::string_view tenant, std::string_view day);      // "YYYY-MM-DD"
std::string ai_spend_month(std::string_view tenant, std::string_view month);  // "YYYY-MM"
std::string notify_window(std::string_view tenant, std::string_view channel);
std::string notify_dedup(std::string_view tenant, const hash256& content);
// Parses a timer key; false if it is not one.
bool parse_timer(std::string_view key, std::string& tenant, int64_t& due_ms, std::string& execution,
                 uint16_t& step);
void put_be32(std::string& out, uint32_t v);
void put_be64(std::string& out, uint64_t v);
uint32_t get_be32(std::string_view in);
uint64_t get_be64(std::string_view in);
}  // namespace keys

}  // namespace auterity
