#include "engine/json_envelope.h"

#include <array>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "engine/record.h"

namespace auterity {
namespace {

constexpr int64_t sent_ms = 1'700'000'000'123;

template <typename F>
std::string envelope(fbs::RecordKind kind, fbs::Payload type, F&& build,
                     const hash256* prev = nullptr) {
  flatbuffers::FlatBufferBuilder fbb;
  flatbuffers::Offset<void> payload = build(fbb);
  envelope_header h;
  h.kind = kind;
  h.tenant_id = "acme";
  h.execution_id = "lead-1";
  h.record_id = "crm-123";
  h.causation_id = "web/42";
  h.timestamp_ms = sent_ms;
  h.prev_hash = prev;
  return finish_envelope(fbb, h, type, payload);
}

template <typename F>
std::string command(fbs::Payload type, F&& build) {
  return envelope(fbs::RecordKind::Command, type, std::forward<F>(build));
}

// Strings an upstream really sends: nested JSON, quotes, newlines, non-ASCII.
constexpr const char* maria =
    "Mar\xc3\xad"
    "a";
const std::string input_json =
    std::string("{\"name\":\"") + maria + "\",\"note\":\"line1\\nline2\",\"n\":1}";

std::vector<std::string> ingress_commands() {
  return {
      command(fbs::Payload::PublishDefinition,
              [](auto& b) {
                return fbs::CreatePublishDefinitionDirect(b, R"({"workflow":"w","steps":[]})",
                                                          R"({"dealer":"Acme"})")
                    .Union();
              }),
      command(
          fbs::Payload::StartExecution,
          [](auto& b) {
            return fbs::CreateStartExecutionDirect(b, "new-lead", 3, input_json.c_str()).Union();
          }),
      command(fbs::Payload::Signal,
              [](auto& b) {
                return fbs::CreateSignalDirect(b, "customer_replied", "{\"text\":\"Sat\"}").Union();
              }),
      command(
          fbs::Payload::CancelExecution,
          [](auto& b) { return fbs::CreateCancelExecutionDirect(b, "duplicate lead").Union(); }),
  };
}

// Other records the replay tools print: nested table + enum, byte vector, longs, prev_hash.
std::vector<std::string> other_records() {
  hash256 prev{};
  for (size_t i = 0; i < prev.size(); ++i) prev[i] = static_cast<uint8_t>(i * 7);
  return {
      command(fbs::Payload::StepAck,
              [](auto& b) {
                auto usage = fbs::CreateUsageDirect(b, "small", 120, 45, 310);
                return fbs::CreateStepAckDirect(b, "lead-1/score/1", "score", 1,
                                                fbs::AckStatus::RetryableFailure, "", "timeout",
                                                usage)
                    .Union();
              }),
      envelope(
          fbs::RecordKind::Event, fbs::Payload::StepScheduled,
          [](auto& b) {
            return fbs::CreateStepScheduledDirect(b, "score", 2, "lead-1/score/2", "{}",
                                                  sent_ms + 30'000)
                .Union();
          },
          &prev),
      envelope(fbs::RecordKind::Rejection, fbs::Payload::DeadLetter,
               [](auto& b) {
                 std::vector<uint8_t> original = {0, 1, 2, 0xfe, 0xff};
                 return fbs::CreateDeadLetterDirect(b, "bad", "ingress", 1, 77, &original).Union();
               }),
  };
}

std::string to_bytes(const result<std::string>& r) {
  EXPECT_TRUE(r.has_value()) << r.error().message;
  return r ? *r : std::string();
}

// ------------------------------------------------------------------------------ round trip

void expect_round_trip(const std::string& original) {
  const fbs::Envelope* in = decode_envelope(original);
  ASSERT_NE(in, nullptr);
  SCOPED_TRACE(std::string(payload_name(in->payload_type())));
  const std::string json = envelope_to_json(original);
  ASSERT_FALSE(json.empty());
  const std::string bytes = to_bytes(envelope_from_json(json));
  const fbs::Envelope* out = decode_envelope(bytes);
  ASSERT_NE(out, nullptr) << "the converted envelope verifies, with the AUTR identifier";
  // The JSON holds every field, defaults included: equal JSON is equal field by field.
  EXPECT_EQ(envelope_to_json(bytes), json);
  EXPECT_EQ(out->payload_type(), in->payload_type());
  EXPECT_EQ(out->timestamp_ms(), sent_ms);
  EXPECT_EQ(sv(out->causation_id()), "web/42");
  // FlatBuffers may lay out the same fields in another order than finish_envelope, but the
  // conversion itself is a pure function: converting its own output again gives the same bytes.
  EXPECT_EQ(to_bytes(envelope_from_json(envelope_to_json(bytes))), bytes);
}

TEST(json_envelope, every_ingress_command_round_trips_binary_json_binary) {
  for (const std::string& c : ingress_commands()) expect_round_trip(c);
}

TEST(json_envelope, events_acks_and_deadletters_round_trip_too) {
  for (const std::string& r : other_records()) expect_round_trip(r);
}

TEST(json_envelope, json_uses_the_schema_field_names_with_defaults_spelled_out) {
  const std::string json = envelope_to_json(ingress_commands()[1]);
  EXPECT_EQ(json.find('\n'), std::string::npos) << "one line: " << json;
  for (const char* part :
       {"\"kind\": \"Command\"", "\"schema_version\": 1", "\"tenant_id\": \"acme\"",
        "\"timestamp_ms\": 1700000000123", "\"payload_type\": \"StartExecution\"",
        "\"workflow\": \"new-lead\"", "\"version\": 3", "Mar\\u00EDa"}) {
    EXPECT_NE(json.find(part), std::string::npos) << part << " in " << json;
  }
}

TEST(json_envelope, to_json_of_bytes_that_are_not_an_envelope_is_empty) {
  EXPECT_EQ(envelope_to_json(""), "");
  EXPECT_EQ(envelope_to_json("{\"kind\":\"Command\"}"), "");
  const std::string start = ingress_commands()[1];
  EXPECT_EQ(envelope_to_json(start.substr(0, start.size() / 2)), "");
}

// ----------------------------------------------------------------------------- conversion

constexpr const char* start_json =
    R"({"kind":"Command","tenant_id":"acme","execution_id":"lead-1","record_id":"crm-123",)"
    R"("timestamp_ms":0,"payload_type":"StartExecution",)"
    R"("payload":{"workflow":"new-lead","input_json":"{\"name\":\"Maria\"}"}})";

TEST(json_envelope, a_json_start_converts_into_a_verified_envelope) {
  const std::string bytes = to_bytes(envelope_from_json(start_json));
  std::string why;
  const fbs::Envelope* env = decode_envelope(bytes, &why);
  ASSERT_NE(env, nullptr) << why;
  EXPECT_TRUE(flatbuffers::BufferHasIdentifier(bytes.data(), "AUTR"));
  EXPECT_EQ(env->kind(), fbs::RecordKind::Command);
  EXPECT_EQ(env->schema_version(), schema_version_current);
  EXPECT_EQ(sv(env->tenant_id()), "acme");
  EXPECT_EQ(sv(env->execution_id()), "lead-1");
  EXPECT_EQ(sv(env->record_id()), "crm-123");
  EXPECT_EQ(env->timestamp_ms(), 0) << "no arrival time given: left as published";
  ASSERT_EQ(env->payload_type(), fbs::Payload::StartExecution);
  auto p = env->payload_as_StartExecution();
  EXPECT_EQ(sv(p->workflow()), "new-lead");
  EXPECT_EQ(p->version(), 0u);
  EXPECT_EQ(sv(p->input_json()), R"({"name":"Maria"})");
}

TEST(json_envelope, whitespace_and_field_order_do_not_matter) {
  const std::string spaced = R"(
    { "payload": { "input_json": "{\"name\":\"Maria\"}", "workflow": "new-lead" },
      "payload_type": "StartExecution", "record_id": "crm-123", "timestamp_ms": 0,
      "execution_id": "lead-1", "tenant_id": "acme", "kind": "Command" }
  )";
  EXPECT_EQ(envelope_to_json(to_bytes(envelope_from_json(spaced))),
            envelope_to_json(to_bytes(envelope_from_json(start_json))));
}

int64_t timestamp_of(const std::string& bytes) {
  const fbs::Envelope* env = decode_envelope(bytes);
  EXPECT_NE(env, nullptr);
  return env ? env->timestamp_ms() : -1;
}

TEST(json_envelope, a_missing_or_zero_timestamp_is_stamped_with_the_arrival_time) {
  constexpr int64_t arrival = 1'700'000'555'000;
  const std::string zero = to_bytes(envelope_from_json(start_json, arrival));
  EXPECT_EQ(timestamp_of(zero), arrival);

  std::string absent = start_json;
  absent.erase(absent.find(R"("timestamp_ms":0,)"), 17);
  ASSERT_EQ(absent.find("timestamp_ms"), std::string::npos);
  EXPECT_EQ(to_bytes(envelope_from_json(absent, arrival)), zero)
      << "absent and zero are the same envelope";

  std::string given = start_json;
  given.replace(given.find(R"("timestamp_ms":0)"), 16, R"("timestamp_ms":1234)");
  EXPECT_EQ(timestamp_of(to_bytes(envelope_from_json(given, arrival))), 1234)
      << "the upstream's own time is kept";

  // Stamping changes the timestamp and nothing else.
  std::string expected = envelope_to_json(to_bytes(envelope_from_json(start_json)));
  const std::string zero_field = "\"timestamp_ms\": 0";
  ASSERT_NE(expected.find(zero_field), std::string::npos) << expected;
  expected.replace(expected.find(zero_field), zero_field.size(),
                   "\"timestamp_ms\": " + std::to_string(arrival));
  EXPECT_EQ(envelope_to_json(zero), expected);
}

TEST(json_envelope, conversion_is_deterministic_across_threads) {
  const std::string expected = to_bytes(envelope_from_json(start_json, 42));
  std::array<std::string, 4> got;
  std::vector<std::thread> threads;
  for (size_t t = 0; t < got.size(); ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 200; ++i) {
        auto r = envelope_from_json(i % 2 ? start_json : "{\"bogus\":1}", 42);
        if (i % 2) got[t] = r ? *r : "failed";
      }
    });
  }
  for (auto& th : threads) th.join();
  for (const std::string& g : got) EXPECT_EQ(g, expected);
}

// --------------------------------------------------------------------------------- errors

std::string error_of(std::string_view json) {
  auto r = envelope_from_json(json, 1);
  EXPECT_FALSE(r.has_value()) << "accepted: " << json;
  if (r) return {};
  EXPECT_EQ(r.error().code, errc::invalid);
  return r.error().message;
}

void expect_contains(const std::string& message, std::string_view part) {
  EXPECT_NE(message.find(part), std::string::npos) << "'" << part << "' not in: " << message;
}

TEST(json_envelope, an_unknown_field_is_named_with_where_it_is) {
  const std::string m = error_of(R"({"kind":"Command","tenant":"acme"})");
  expect_contains(m, "unknown field: tenant");
  // FlatBuffers' column is where it stopped: after the field's value.
  expect_contains(m, R"((line 1, column 33, after '{"kind":"Command","tenant":"acme"'))");
}

TEST(json_envelope, a_wrong_type_says_what_was_expected_and_where) {
  const std::string m = error_of(R"({"payload_type":"StartExecution","payload":{"workflow":7}})");
  expect_contains(m, "expecting: string constant instead got: integer constant");
  expect_contains(m, R"("workflow":7')");
  expect_contains(error_of(R"({"prev_hash":[1,2,300]})"), "constant does not fit [0; 255]");
}

TEST(json_envelope, text_that_is_not_json_is_rejected) {
  expect_contains(error_of("hello"), "expecting: { instead got: hello");
  expect_contains(error_of(""), "input file is empty");
  // Strict JSON: field names are quoted, no trailing comma.
  expect_contains(error_of(R"({kind:"Command"})"), "expecting: string constant");
  expect_contains(error_of(R"({"kind":"Command",})"), "expecting: string constant");
  expect_contains(error_of(R"({"kind":"Command"} {})"), "expecting: end of file");
}

TEST(json_envelope, an_unknown_payload_type_is_named) {
  expect_contains(error_of(R"({"payload_type":"StartWorkflow","payload":{}})"),
                  "unknown enum value: StartWorkflow");
  expect_contains(error_of(R"({"kind":"Comand","payload_type":"Signal","payload":{}})"),
                  "unknown enum value: Comand");
}

TEST(json_envelope, a_missing_payload_is_rejected) {
  expect_contains(error_of(R"({"kind":"Command","tenant_id":"acme"})"), "envelope has no payload");
  expect_contains(error_of(R"({"payload_type":"StartExecution"})"), "envelope has no payload");
  expect_contains(error_of(R"({"payload":{"workflow":"w"}})"), "payload_type missing");
  expect_contains(error_of(R"({"payload":{"workflow":"w"},"kind":"Command"})"),
                  "payload_type missing");
  // The parser finds the type before the payload or right after it, not further away.
  EXPECT_TRUE(envelope_from_json(R"({"payload":{"name":"go"},"payload_type":"Signal"})"));
  expect_contains(
      error_of(R"({"payload":{"name":"go"},"kind":"Command","payload_type":"Signal"})"),
      "missing type field for this union value: payload: put payload_type before payload (");
}

TEST(json_envelope, schema_text_in_the_input_is_refused_and_changes_nothing) {
  expect_contains(error_of("table Evil { x: int; } root_type Evil; {\"x\": 1}"),
                  "expecting: { instead got: table");
  expect_contains(error_of(R"({"kind":"Command"} table Evil { x: int; })"),
                  "expecting: end of file");
  EXPECT_TRUE(envelope_from_json(start_json).has_value()) << "the schema is still ours";
}

TEST(json_envelope, reasons_are_valid_text_whatever_the_input) {
  for (const char* bad : {"{\"tenant_id\":\"a\xff\xfe\"}", "{\"tenant_id\":\"a\x01\"}"}) {
    const std::string m = error_of(bad);
    for (unsigned char c : m) EXPECT_TRUE(c >= 0x20 && c < 0x7f) << m;
  }
  expect_contains(error_of("{\"tenant_id\":\"a\xff\"}"), "illegal UTF-8 sequence");
  expect_contains(error_of(std::string("{\"kind\":\"Command\"}\0trailing", 27)), "NUL byte");
}

TEST(json_envelope, the_parser_recovers_after_errors) {
  for (int i = 0; i < 3; ++i) {
    error_of(R"({"payload":{"workflow": )");
    EXPECT_TRUE(envelope_from_json(start_json).has_value());
  }
}

TEST(json_envelope, deep_nesting_is_refused_without_exhausting_the_stack) {
  expect_contains(error_of("{\"payload\":" + std::string(100'000, '[')), "maximum parsing depth");
  std::string nested = R"({"payload_type":"Signal","payload":)";
  for (int i = 0; i < 100'000; ++i) nested += R"({"payload_type":"Signal","payload":)";
  EXPECT_FALSE(envelope_from_json(nested).has_value());
}

uint64_t test_seed() {
  const char* env = std::getenv("AUTERITY_TEST_SEED");
  const uint64_t seed = env ? std::strtoull(env, nullptr, 10) : std::random_device{}();
  std::printf("seed %llu (rerun: AUTERITY_TEST_SEED=%llu)\n", static_cast<unsigned long long>(seed),
              static_cast<unsigned long long>(seed));
  return seed;
}

void mutate(std::string& s, std::mt19937_64& rng) {
  static const std::string alphabet = "{}[]\":,\\u0123456789abcdefnrtl- \x01\xc3\xa9\xff";
  const size_t edits = 1 + rng() % 4;
  for (size_t e = 0; e < edits; ++e) {
    const size_t at = rng() % (s.size() + 1);
    const char c = alphabet[rng() % alphabet.size()];
    switch (rng() % 3) {
      case 0:
        s.insert(at, 1, c);
        break;
      case 1:
        if (at < s.size()) s.erase(at, 1);
        break;
      default:
        if (at < s.size()) s[at] = c;
        break;
    }
  }
}

// Outside input: mutated JSON never crashes the converter; what it accepts verifies and
// renders back to JSON it accepts again; what it refuses has a printable reason.
TEST(json_envelope, fuzzed_json_is_converted_or_refused_never_crashes) {
  const uint64_t seed = test_seed();
  SCOPED_TRACE(::testing::Message() << "AUTERITY_TEST_SEED=" << seed);
  std::mt19937_64 rng(seed);
  size_t accepted = 0;
  for (int i = 0; i < 3000; ++i) {
    std::string s = start_json;
    mutate(s, rng);
    auto r = envelope_from_json(s, 7);
    if (!r) {
      ASSERT_FALSE(r.error().message.empty()) << s;
      for (unsigned char c : r.error().message) ASSERT_TRUE(c >= 0x20) << r.error().message;
      continue;
    }
    ++accepted;
    ASSERT_NE(decode_envelope(*r), nullptr) << s;
    const std::string json = envelope_to_json(*r);
    ASSERT_FALSE(json.empty()) << s;
    ASSERT_EQ(envelope_to_json(to_bytes(envelope_from_json(json, 7))), json) << s;
  }
  EXPECT_GT(accepted, 0u) << "the mutations never left a valid envelope: the test tests nothing";
}

TEST(json_envelope, looks_like_json_object_checks_the_first_non_space_byte) {
  EXPECT_TRUE(looks_like_json_object("{}"));
  EXPECT_TRUE(looks_like_json_object(" \r\n\t{\"kind\":1}"));
  EXPECT_FALSE(looks_like_json_object(""));
  EXPECT_FALSE(looks_like_json_object("   "));
  EXPECT_FALSE(looks_like_json_object("[{}]"));
  EXPECT_FALSE(looks_like_json_object(ingress_commands()[1]));
}

}  // namespace
}  // namespace auterity
