#pragma once
// Records as JSON, driven by the record schema itself (schemas/auterity.fbs compiled to a
// binary schema and embedded at build time): every field of every payload type is exported,
// including types and fields added after this code was written (AI routing events, ...).
//
// One JSON Lines object per record, keys in this order:
//   stream, partition, offset, key, kind, type, schema_version, tenant, execution, record_id,
//   causation_id, timestamp (ISO 8601 UTC), timestamp_ms, prev_hash (hex, "" for none),
//   hash (SHA-256 of the record bytes, hex: the next event's prev_hash), payload {fields}
// Payload fields appear in schema order: integers as numbers, enums by name, strings as
// strings (JSON-in-a-string fields such as input_json stay strings: the exact bytes), byte
// vectors as hex, absent strings and tables as null, deprecated fields omitted.
// A record that does not decode gives {stream, partition, offset, key, error, bytes, hash}.

#include <cstdint>
#include <string>
#include <string_view>

#include "engine/log.h"
#include "engine/record.h"

namespace auterity {

struct record_ref {
  stream s = stream::executions;
  uint32_t partition = 0;
  uint64_t offset = 0;
  std::string_view key;
  std::string_view bytes;
};

// Appends one JSON Lines object (no newline).
void append_record_json(std::string& out, const record_ref& r);

// Appends the payload's fields as a JSON object. `html_safe` as in json_text::append_string.
void append_payload_json(std::string& out, const fbs::Envelope& env, bool html_safe = false);

// The payload as compact JSON clipped to `chars_max` characters: the readable fallback for a
// record type that has no hand-written description yet.
std::string payload_summary(const fbs::Envelope& env, size_t chars_max = 200);

}  // namespace auterity
