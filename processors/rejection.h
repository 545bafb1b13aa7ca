#pragma once
// Rejection codes: stable numbers, carried in CommandRejected records and shown to users.
// Append only; never renumber.

#include <cstdint>
#include <string_view>

namespace auterity {

enum class rejection_code : uint16_t {
  unknown_tenant = 1,        // no workflow was ever published for the tenant
  unknown_workflow = 2,      // no such workflow (or version) for the tenant
  unknown_execution = 3,     // signal/cancel/ack for an execution this partition does not hold
                             // (a signal: once its hold window ends, or if it cannot be held)
  invalid_input = 4,         // input or payload JSON malformed or not an object
  invalid_definition = 5,    // definition JSON fails validation (reason says where)
  definition_cycle = 6,      // the step graph has a cycle, or the definition would close a
                             // cycle of workflow calls
  payload_too_large = 7,     // a field exceeds payload_bytes_max
  duplicate_execution = 8,   // an execution with this id exists already
  execution_finished = 9,    // signal/cancel for an execution that has ended
  too_many_steps = 10,       // steps_per_definition_max exceeded
  unsupported_version = 11,  // envelope schema_version newer than this engine knows
  wrong_record = 12,         // a record kind/type that does not belong on the stream
  version_conflict = 13,     // a definition version was already published with other content
  missing_field = 14,        // a required envelope field (tenant, execution id) is empty
  invalid_policy = 15,       // a tenant policy fails validation (reason names the field)
  invalid_timestamp = 16,    // a command's timestamp_ms before 2000 or too far in the future
  invalid_move = 17,         // a tenant move refused: no such partition, already there, too large
};

std::string_view rejection_code_name(rejection_code code);

}  // namespace auterity
