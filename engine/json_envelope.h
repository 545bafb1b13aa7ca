#pragma once
// The envelope as JSON, for upstream systems that publish to ingress with any Kafka client.
// Conversion uses FlatBuffers' own JSON parser with the schema compiled into the binary
// (schemas/auterity.fbs), so the JSON field names are exactly the schema's:
//
//   {"kind":"Command","tenant_id":"acme","execution_id":"lead-1","record_id":"crm-123",
//    "payload_type":"StartExecution","payload":{"workflow":"new-lead","input_json":"{}"}}
//
// Thread-safe: each thread keeps its own parser, built on first use (~150 µs).

#include <cstdint>
#include <string>
#include <string_view>

#include "engine/result.h"

namespace auterity {

// Converts a JSON envelope into verified envelope bytes (decode_envelope accepts them; file
// identifier "AUTR"). A missing or zero timestamp_ms is stamped with `arrival_ms` (left 0 if
// `arrival_ms` is 0). The result is a pure function of (`json`, `arrival_ms`). Errors
// (errc::invalid) carry the parser's reason with the line, column and text before it.
result<std::string> envelope_from_json(std::string_view json, int64_t arrival_ms = 0);

// Strict JSON of envelope bytes, one line, default-valued scalars included, in the form
// envelope_from_json reads. Empty if `bytes` is not a valid envelope.
std::string envelope_to_json(std::string_view bytes);

// True if the first non-whitespace byte is '{': the record may be a JSON envelope.
bool looks_like_json_object(std::string_view bytes);

}  // namespace auterity
