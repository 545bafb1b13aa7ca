#pragma once
// Upstream commands: what a dealership CRM, a web form or the CLI publishes to ingress. Each
// builder returns an envelope; submit() places it on the tenant's partition.

#include <cstdint>
#include <string>
#include <string_view>

#include "engine/log.h"

namespace auterity::client {

struct command_header {
  std::string_view tenant;
  std::string_view execution;   // empty for definitions
  std::string_view request_id;  // upstream's id of this request; becomes record_id
  int64_t timestamp_ms = 0;     // when the command entered the system
};

std::string publish_definition(const command_header& h, std::string_view definition_json,
                               std::string_view params_json = "");
// The tenant's AI routing and notification policy (processors/POLICY.md); replaces the one in
// force. h.execution stays empty.
std::string publish_policy(const command_header& h, std::string_view policy_json);
std::string start_execution(const command_header& h, std::string_view workflow, uint32_t version,
                            std::string_view input_json);
std::string signal(const command_header& h, std::string_view name, std::string_view payload_json);
std::string cancel(const command_header& h, std::string_view reason);
// Operator command: moves the tenant with all its state to partition `to` (docs/tenant-moves.md).
// h.execution stays empty.
std::string move_tenant(const command_header& h, uint32_t to);

// Appends one ingress record to the tenant's partition (default placement).
result<void> submit(log& l, std::string_view tenant, std::string bytes);

}  // namespace auterity::client
