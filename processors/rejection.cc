#include "processors/rejection.h"

namespace auterity {

std::string_view rejection_code_name(rejection_code code) {
  switch (code) {
    case rejection_code::unknown_tenant:
      return "unknown_tenant";
    case rejection_code::unknown_workflow:
      return "unknown_workflow";
    case rejection_code::unknown_execution:
      return "unknown_execution";
    case rejection_code::invalid_input:
      return "invalid_input";
    case rejection_code::invalid_definition:
      return "invalid_definition";
    case rejection_code::definition_cycle:
      return "definition_cycle";
    case rejection_code::payload_too_large:
      return "payload_too_large";
    case rejection_code::duplicate_execution:
      return "duplicate_execution";
    case rejection_code::execution_finished:
      return "execution_finished";
    case rejection_code::too_many_steps:
      return "too_many_steps";
    case rejection_code::unsupported_version:
      return "unsupported_version";
    case rejection_code::wrong_record:
      return "wrong_record";
    case rejection_code::version_conflict:
      return "version_conflict";
    case rejection_code::missing_field:
      return "missing_field";
    case rejection_code::invalid_policy:
      return "invalid_policy";
    case rejection_code::invalid_timestamp:
      return "invalid_timestamp";
    case rejection_code::invalid_move:
      return "invalid_move";
  }
  // A number read from a newer record: shown, never interpreted.
  return "unknown";
}

}  // namespace auterity
