#pragma once
// Named limits of the orchestrator. Each is enforced where records enter the orchestrator and
// documented in processors/README.md.

#include <cstddef>
#include <cstdint>

namespace auterity::limits {

inline constexpr size_t payload_bytes_max = 64 * 1024;      // any JSON field of a command/ack
inline constexpr size_t steps_per_definition_max = 64;      // steps in one workflow
inline constexpr uint32_t events_per_execution_max = 2048;  // events in one execution's history
inline constexpr size_t id_bytes_max = 128;                 // tenant, execution, workflow, step ids
inline constexpr uint32_t retry_attempts_max = 20;          // retry.max_attempts upper bound
inline constexpr uint64_t timer_ms_max = 366ull * 24 * 3600 * 1000;  // any timeout/delay/backoff
inline constexpr size_t switch_cases_max = 32;  // cases of one switch step (and a default)
// Items of one foreach step: a list longer than this fails the step when it starts. Each item
// writes at least two events (scheduled, succeeded), so 1 000 items fit in
// events_per_execution_max with room for the rest of the workflow; retries and timeouts of
// many items can still reach the history limit, which then fails the execution.
inline constexpr size_t foreach_items_max = 1'000;
inline constexpr uint32_t foreach_concurrency_max = 100;  // items of one foreach running at once
// Sub-workflows (processors/DEFINITIONS.md): how many levels of children a top-level execution
// may have below it (a child is at depth 1, its own child at 2, ...). A `workflow` step that
// would start a child deeper than this fails with the reason. Publish rejects a self-call and a
// definition that would close a cycle of calls up to this + 1 workflows around; the limit stops
// whatever recursion that cannot see (older logs, versions published while an execution runs).
inline constexpr uint32_t subworkflow_depth_max = 4;  // levels
// A child's execution id is "<parent id>/<step>/<attempt>": longer than this (deep nesting of
// long ids), the step fails instead of starting it.
inline constexpr size_t subworkflow_id_bytes_max = 512;  // bytes

// Checked at the door, on every ingress command (processors/README.md, Limits):
// a record id is 1..record_id_bytes_max bytes of UTF-8 with no control character;
inline constexpr size_t record_id_bytes_max = 128;
// a timestamp_ms, when given (0: not given), is at or after 2000-01-01T00:00:00Z and at most
// timestamp_future_ms_max ahead of the partition's clock (the batch time). An hour allows for
// an upstream clock that is off, not for a date typed wrong.
inline constexpr int64_t timestamp_ms_min = 946'684'800'000;   // 2000-01-01T00:00:00Z, ms
inline constexpr int64_t timestamp_future_ms_max = 3'600'000;  // 1 hour, ms
// JSON nesting of an execution's input, a signal payload and a step output: steps render
// their inputs from these, so a start or signal deeper than this is rejected when it arrives,
// not at the first step.
inline constexpr int json_value_depth_max = 128;  // levels of objects and arrays

// Signals for an execution id the partition does not know yet are held for its start
// (processors/README.md, Signals before their start). The window opens with the first signal
// held for an id. It must outlast the worst delay of a start forwarded from the wrong
// partition: one transaction on the wrong partition and one on the owner, tens of ms, seconds
// while a partition moves to another node; 30 s covers that many times over and still answers
// a signal for a mistyped id within a minute.
inline constexpr int64_t signal_hold_ms = 30'000;
inline constexpr size_t signals_held_per_execution_max = 64;  // held for one execution id
inline constexpr size_t signals_held_per_tenant_max = 1'000;  // held for all of a tenant's ids
// Bytes of names and payloads held per tenant: held signals stay in memory until released.
inline constexpr size_t signals_held_bytes_per_tenant_max = 4 << 20;

// Tenant moves (docs/tenant-moves.md): the source sends the tenant's state in chunks of about
// move_chunk_bytes_max (a chunk is one record, under record_bytes_max); one state entry (an
// execution, a definition) must fit one chunk; the whole state must fit the move's single
// transaction and the memory that builds it.
inline constexpr size_t move_chunk_bytes_max = 512 << 10;
inline constexpr size_t move_entry_bytes_max = 960 << 10;
inline constexpr size_t move_state_bytes_max = 256 << 20;

}  // namespace auterity::limits
