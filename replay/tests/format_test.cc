// The exports' building blocks: JSON text that is valid whatever bytes a record holds, times as
// auditors type them, and the JSON Lines record export driven by the schema.

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "replay/describe.h"
#include "replay/json_text.h"
#include "replay/record_json.h"
#include "replay/tests/golden.h"
#include "replay/time_text.h"

namespace auterity::testing {
namespace {

using json = nlohmann::json;

TEST(json_text, escapes_and_keeps_any_bytes_valid) {
  EXPECT_EQ(json_text::quote("a\"b\\c\n\t\x01"), R"("a\"b\\c\n\t\u0001")");
  EXPECT_EQ(json_text::quote("café ✓"), "\"café ✓\"");  // valid UTF-8 passes through
  EXPECT_EQ(json_text::quote("bad \xff\xfe end"), R"("bad \ufffd\ufffd end")");
  EXPECT_EQ(json_text::quote("\xe2\x82"), R"("\ufffd\ufffd")");            // a cut sequence
  EXPECT_EQ(json_text::quote("\xed\xa0\x80"), R"("\ufffd\ufffd\ufffd")");  // a surrogate
  EXPECT_EQ(json_text::quote("</script>", true), R"("\u003c/script\u003e")");
  for (int b = 0; b < 256; ++b) {  // every byte value yields parseable JSON
    const std::string s(1, static_cast<char>(b));
    EXPECT_TRUE(json::accept(json_text::quote(s))) << b;
  }
}

TEST(time_text, formats_and_parses_utc) {
  EXPECT_EQ(format_time_ms(1'700'000'000'123), "2023-11-14T22:13:20.123Z");
  EXPECT_EQ(format_time_ms(0), "1970-01-01T00:00:00.000Z");
  EXPECT_EQ(format_time_ms(-1), "1969-12-31T23:59:59.999Z");
  EXPECT_EQ(parse_time_ms("2023-11-14T22:13:20.123Z"), 1'700'000'000'123);
  EXPECT_EQ(parse_time_ms("2023-11-14T22:13:20.1234"), 1'700'000'000'123);
  EXPECT_EQ(parse_time_ms("2023-11-14 22:13:20"), 1'700'000'000'000);
  EXPECT_EQ(parse_time_ms("2023-11-14T23:13:20+01:00"), 1'700'000'000'000);
  EXPECT_EQ(parse_time_ms("2023-11-14"), 1'699'920'000'000);
  EXPECT_EQ(parse_time_ms("2024-02-29T00:00"), 1'709'164'800'000);
  EXPECT_EQ(parse_time_ms("@1700000000123"), 1'700'000'000'123);
  for (const char* bad : {"", "@", "@12x", "2023-13-01", "2023-11-14T25:00", "yesterday",
                          "2023-11-14T22:13:20Zjunk", "1700000000"}) {
    EXPECT_FALSE(parse_time_ms(bad).has_value()) << bad;
  }
  for (int64_t ms : {int64_t{0}, int64_t{951'782'400'000}, int64_t{4'102'444'800'999}}) {
    EXPECT_EQ(parse_time_ms(format_time_ms(ms)), ms);
  }
}

TEST(time_text, as_of_is_an_offset_or_a_time) {
  EXPECT_EQ(parse_as_of("57")->offset, 57u);
  EXPECT_FALSE(parse_as_of("57")->time_ms.has_value());
  EXPECT_EQ(parse_as_of("@1700000000000")->time_ms, 1'700'000'000'000);
  EXPECT_EQ(parse_as_of("2023-11-14T22:13:20Z")->time_ms, 1'700'000'000'000);
  EXPECT_FALSE(parse_as_of("-3").has_value());
  EXPECT_FALSE(parse_as_of("later").has_value());
}

TEST(record_json, every_golden_record_exports_with_every_schema_field) {
  const history_file h = load_golden();
  std::map<std::string, std::string> previous_hash;  // chain -> hash of its last event
  for (const logged_record& r : h.records) {
    std::string line;
    append_record_json(line, {r.s, r.partition, r.offset, r.key, r.value});
    const json j = json::parse(line);
    ASSERT_EQ(j["stream"], stream_name(r.s));
    ASSERT_EQ(j["offset"], r.offset);
    ASSERT_TRUE(j["payload"].is_object()) << line;
    const fbs::Envelope* e = decode_envelope(r.value);
    EXPECT_EQ(j["type"], payload_name(e->payload_type()));
    EXPECT_EQ(j["record_id"], sv(e->record_id()));
    EXPECT_EQ(j["timestamp"], format_time_ms(e->timestamp_ms()));
    // Tools can check the chains from the export alone: prev_hash names the previous hash.
    if (r.s == stream::executions && j["kind"] == "Event") {
      const std::string chain = std::string(j["tenant"]) + "/" + std::string(j["execution"]);
      EXPECT_EQ(j["prev_hash"], previous_hash[chain]) << line.substr(0, 200);
      previous_hash[chain] = j["hash"];
    }
  }
  // Fields come from the schema: nested tables, enums by name.
  std::string ack;
  for (const logged_record& r : h.records) {
    if (r.s == stream::acks && r.value.find("relay-small") != std::string::npos) {
      append_record_json(ack, {r.s, r.partition, r.offset, r.key, r.value});
      break;
    }
  }
  const json a = json::parse(ack);
  EXPECT_EQ(a["payload"]["status"], "Success");
  EXPECT_EQ(a["payload"]["usage"]["model"], "relay-small-2024-05");
  EXPECT_EQ(a["payload"]["usage"]["output_tokens"], 23);
  EXPECT_EQ(a["payload"].size(), 7u);  // command_id, step, attempt, status, output, error, usage
}

TEST(record_json, an_undecodable_record_is_exported_as_such) {
  std::string line;
  append_record_json(line, {stream::executions, 1, 9, "acme", "\x01\x02garbage"});
  const json j = json::parse(line);
  EXPECT_EQ(j["offset"], 9);
  EXPECT_TRUE(j["error"].get<std::string>().starts_with("undecodable"));
}

TEST(describe, usage_and_costs_read_as_money) {
  EXPECT_EQ(format_cost_micros(249), "$0.000249");
  EXPECT_EQ(format_cost_micros(12'500'000), "$12.500000");
  EXPECT_EQ(format_cost_micros(-5), "-$0.000005");
  EXPECT_EQ(clip("héllo wörld", 2), "h… (13 bytes)");  // never cuts inside a character
}

}  // namespace
}  // namespace auterity::testing
