#include "engine/record.h"

#include <openssl/evp.h>

#include <memory>

#include "engine/assert.h"

namespace auterity {

namespace {

struct md_deleter {
  void operator()(EVP_MD* md) const { EVP_MD_free(md); }
};
struct ctx_deleter {
  void operator()(EVP_MD_CTX* c) const { EVP_MD_CTX_free(c); }
};

// OpenSSL 3's one-shot SHA256() looks the algorithm up on every call (a lock and a reference
// count; a fifth of the chain check's time): fetch it once per thread and reuse the context.
struct hasher {
  std::unique_ptr<EVP_MD, md_deleter> md{EVP_MD_fetch(nullptr, "SHA256", nullptr)};
  std::unique_ptr<EVP_MD_CTX, ctx_deleter> ctx{EVP_MD_CTX_new()};
};

}  // namespace

hash256 sha256(std::string_view bytes) {
  thread_local hasher h;
  vassert(h.md && h.ctx, "OpenSSL has no SHA-256");
  hash256 out;
  unsigned int n = 0;
  const bool ok = EVP_DigestInit_ex2(h.ctx.get(), h.md.get(), nullptr) &&
                  EVP_DigestUpdate(h.ctx.get(), bytes.data(), bytes.size()) &&
                  EVP_DigestFinal_ex(h.ctx.get(), out.data(), &n);
  vassert(ok && n == out.size(), "SHA-256 failed");
  return out;
}

std::string hex(const uint8_t* data, size_t size) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out(size * 2, '0');
  for (size_t i = 0; i < size; ++i) {
    out[2 * i] = digits[data[i] >> 4];
    out[2 * i + 1] = digits[data[i] & 0xf];
  }
  return out;
}

const fbs::Envelope* decode_envelope(std::string_view bytes, std::string* why) {
  auto set = [&](const char* reason) {
    if (why) *why = reason;
    return nullptr;
  };
  if (bytes.size() < 8) return set("record shorter than a FlatBuffers header (8 bytes)");
  auto data = reinterpret_cast<const uint8_t*>(bytes.data());
  if (!flatbuffers::BufferHasIdentifier(data, fbs::EnvelopeIdentifier())) {
    return set("not an Auterity envelope (file identifier is not \"AUTR\")");
  }
  flatbuffers::Verifier verifier(data, bytes.size());
  if (!fbs::VerifyEnvelopeBuffer(verifier)) {
    return set("envelope failed FlatBuffers verification (truncated or corrupt)");
  }
  const fbs::Envelope* env = fbs::GetEnvelope(data);
  if (env->payload_type() == fbs::Payload::NONE || env->payload() == nullptr) {
    return set("envelope has no payload");
  }
  if (static_cast<uint8_t>(env->payload_type()) > static_cast<uint8_t>(fbs::Payload::MAX)) {
    return set("envelope payload type unknown to this engine version");
  }
  return env;
}

std::string finish_envelope(flatbuffers::FlatBufferBuilder& fbb, const envelope_header& h,
                            fbs::Payload type, flatbuffers::Offset<void> payload) {
  auto tenant = fbb.CreateString(h.tenant_id.data(), h.tenant_id.size());
  auto execution = fbb.CreateString(h.execution_id.data(), h.execution_id.size());
  auto record_id = fbb.CreateString(h.record_id.data(), h.record_id.size());
  auto causation = fbb.CreateString(h.causation_id.data(), h.causation_id.size());
  flatbuffers::Offset<flatbuffers::Vector<uint8_t>> prev;
  if (h.prev_hash) prev = fbb.CreateVector(h.prev_hash->data(), h.prev_hash->size());
  fbs::EnvelopeBuilder b(fbb);
  b.add_timestamp_ms(h.timestamp_ms);
  b.add_tenant_id(tenant);
  b.add_execution_id(execution);
  b.add_record_id(record_id);
  b.add_causation_id(causation);
  if (h.prev_hash) b.add_prev_hash(prev);
  b.add_payload(payload);
  b.add_schema_version(h.schema_version);
  b.add_kind(h.kind);
  b.add_payload_type(type);
  fbb.Finish(b.Finish(), fbs::EnvelopeIdentifier());
  std::string out(reinterpret_cast<const char*>(fbb.GetBufferPointer()), fbb.GetSize());
  fbb.Clear();
  return out;
}

std::string_view payload_name(fbs::Payload type) {
  const char* name = fbs::EnumNamePayload(type);
  return name && *name ? name : "Unknown";
}

uint32_t tenant_partition(std::string_view key, uint32_t partitions) {
  // Kafka's murmur2 (seed 0x9747b28c), as its Java default partitioner uses for keyed records.
  constexpr uint32_t m = 0x5bd1e995;
  constexpr int r = 24;
  auto data = reinterpret_cast<const uint8_t*>(key.data());
  const uint32_t length = static_cast<uint32_t>(key.size());
  uint32_t h = 0x9747b28c ^ length;
  const uint32_t blocks = length / 4;
  for (uint32_t i = 0; i < blocks; ++i) {
    const uint8_t* p = data + 4 * i;
    uint32_t k = p[0] | (p[1] << 8) | (p[2] << 16) | (uint32_t(p[3]) << 24);
    k *= m;
    k ^= k >> r;
    k *= m;
    h *= m;
    h ^= k;
  }
  const uint8_t* tail = data + 4 * blocks;
  switch (length % 4) {
    case 3:
      h ^= tail[2] << 16;
      [[fallthrough]];
    case 2:
      h ^= tail[1] << 8;
      [[fallthrough]];
    case 1:
      h ^= tail[0];
      h *= m;
  }
  h ^= h >> 13;
  h *= m;
  h ^= h >> 15;
  return (h & 0x7fffffff) % partitions;
}

}  // namespace auterity
