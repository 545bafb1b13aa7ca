#pragma once
// Building, checking and hashing envelopes (schemas/auterity.fbs).

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include "schemas/auterity_generated.h"

namespace auterity {

namespace fbs = auterity::schema;

// The envelope version this engine writes. Older versions are read through their own appliers.
inline constexpr uint16_t schema_version_current = 1;

using hash256 = std::array<uint8_t, 32>;
hash256 sha256(std::string_view bytes);
std::string hex(const uint8_t* data, size_t size);
inline std::string hex(const hash256& h) { return hex(h.data(), h.size()); }

// Returns the envelope if `bytes` is a well-formed Envelope buffer (flatbuffers verifier and
// the "AUTR" identifier), otherwise nullptr with `why` set.
const fbs::Envelope* decode_envelope(std::string_view bytes, std::string* why = nullptr);

// Fields every envelope carries besides the payload.
struct envelope_header {
  fbs::RecordKind kind = fbs::RecordKind::Event;
  std::string_view tenant_id;
  std::string_view execution_id;
  std::string_view record_id;
  std::string_view causation_id;
  int64_t timestamp_ms = 0;
  const hash256* prev_hash = nullptr;  // null: no previous event
  uint16_t schema_version = schema_version_current;
};

// Finishes `fbb` with an envelope around an already built payload and returns the bytes.
std::string finish_envelope(flatbuffers::FlatBufferBuilder& fbb, const envelope_header& h,
                            fbs::Payload type, flatbuffers::Offset<void> payload);

inline std::string_view sv(const flatbuffers::String* s) {
  return s ? std::string_view(s->data(), s->size()) : std::string_view();
}
// The bytes of a [ubyte] field (empty if absent).
inline std::string_view sv(const flatbuffers::Vector<uint8_t>* v) {
  return v ? std::string_view(reinterpret_cast<const char*>(v->data()), v->size())
           : std::string_view();
}

std::string_view payload_name(fbs::Payload type);

// Default placement of a tenant: Kafka's default partitioner (murmur2 of the key, positive,
// modulo the partition count), so an upstream Kafka producer keyed by tenant id lands on the
// right partition without knowing our code.
uint32_t tenant_partition(std::string_view tenant_id, uint32_t partitions);

}  // namespace auterity
