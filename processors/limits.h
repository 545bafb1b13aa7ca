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

}  // namespace auterity::limits
