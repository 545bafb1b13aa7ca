// FlatBuffers verify and decode (engine/record.h) and everything the tools do with a decoded
// record (replay/record_json.h: `auterity dump`, replay/describe.h: timelines), on any bytes a
// producer or a damaged store hands them. Properties: never crashes; the JSON export of any
// record is one line; a record that verifies renders to JSON that converts back.

#include <cstdint>
#include <string>
#include <string_view>

#include "engine/json_envelope.h"
#include "engine/record.h"
#include "replay/describe.h"
#include "replay/record_json.h"
#include "tests/fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace auterity;
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  std::string line;
  append_record_json(line, {stream::ingress, 0, 7, "acme", bytes});
  FUZZ_CHECK(line.find('\n') == std::string::npos, "dump line holds a newline: %s", line.c_str());
  std::string why;
  const fbs::Envelope* env = decode_envelope(bytes, &why);
  if (!env) {
    FUZZ_CHECK(!why.empty(), "a refusal without a reason");
    return 0;
  }
  (void)describe(*env);
  (void)describe_command(*env);
  (void)describe_ack(*env);
  if (env->payload_type() == fbs::Payload::StepAck)
    (void)describe_usage(*env->payload_as_StepAck());
  (void)payload_summary(*env);
  std::string payload;
  append_payload_json(payload, *env, /*html_safe=*/true);
  const std::string text = envelope_to_json(bytes);
  if (text.empty()) return 0;  // a string that is not UTF-8: dump shows it, JSON cannot carry it
  auto again = envelope_from_json(text);
  FUZZ_CHECK(again.has_value(), "rendered envelope does not convert: %s\n%s",
             again.error().message.c_str(), text.c_str());
  return 0;
}
