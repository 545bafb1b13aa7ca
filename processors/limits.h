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

}  // namespace auterity::limits
