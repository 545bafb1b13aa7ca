// The JSON envelope on ingress (engine/json_envelope.h): any bytes a Kafka client publishes.
// Properties: never crashes; what converts verifies as an envelope, renders back to JSON, and
// that JSON converts again to the same bytes (the conversion is a pure function of its input).

#include <cstdint>
#include <string>
#include <string_view>

#include "engine/json_envelope.h"
#include "engine/record.h"
#include "tests/fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace auterity;
  const std::string_view json(reinterpret_cast<const char*>(data), size);
  (void)looks_like_json_object(json);
  constexpr int64_t arrival_ms = 1'700'000'000'000;
  auto bytes = envelope_from_json(json, arrival_ms);
  if (!bytes) {
    FUZZ_CHECK(!bytes.error().message.empty(), "a rejection without a reason");
    return 0;
  }
  std::string why;
  const fbs::Envelope* env = decode_envelope(*bytes, &why);
  FUZZ_CHECK(env != nullptr, "converted envelope does not verify: %s", why.c_str());
  FUZZ_CHECK(env->timestamp_ms() != 0, "not stamped");
  const std::string text = envelope_to_json(*bytes);
  FUZZ_CHECK(!text.empty(), "a converted envelope does not render");
  auto again = envelope_from_json(text, arrival_ms);
  FUZZ_CHECK(again.has_value(), "rendered envelope does not convert: %s\n%s",
             again.error().message.c_str(), text.c_str());
  FUZZ_CHECK(envelope_to_json(*again) == text, "round trip changed the envelope:\n%s\n%s",
             text.c_str(), envelope_to_json(*again).c_str());
  return 0;
}
