#pragma once
// One readable line per record, for the timelines and `auterity dump`.
//
// Each payload type has a describer in a table keyed by type (describe.cc). A type without one
// — for instance an AI routing event added by a later issue before its describer is written —
// is still shown, as its type name and fields (from the schema, see record_json.h), so the
// timeline never hides a record. Adding a describer is one function plus one table entry.

#include <cstdint>
#include <string>
#include <string_view>

#include "engine/record.h"

namespace auterity {

// "step score succeeded: {...}", "REJECTED start-7 (duplicate_execution, code 8): ...", "notify sms
// to +1555..."
std::string describe(const fbs::Envelope& e);

// What a command asks a worker to do: "task lead_score", "AI call (tier standard)",
// "sms to +15550100001: \"Hi Maria…\"".
std::string describe_command(const fbs::Envelope& e);

// What a worker answered: "Success", "RetryableFailure: timeout", plus the AI usage when the
// ack carries one: "model gpt-4o-mini, 152 in + 40 out tokens, cost $0.000123".
std::string describe_ack(const fbs::Envelope& e);

// The AI usage of an ack, empty if it has none.
std::string describe_usage(const fbs::StepAck& ack);

// "$0.000123" for 123 micro-dollars.
std::string format_cost_micros(int64_t micros);

// `s` cut to `max` bytes (at a UTF-8 boundary) with "… (N bytes)" appended when cut.
std::string clip(std::string_view s, size_t max = 100);

}  // namespace auterity
