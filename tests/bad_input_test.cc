// Bad input never crashes, hangs or disappears: each case ends as a rejection (with its code and
// a readable reason) or a deadletter record (with the reason and the original bytes), and the
// partition keeps processing what comes after it.

#include <nlohmann/json.hpp>

#include "processors/limits.h"
#include "processors/rejection.h"
#include "processors/tests/harness.h"

namespace auterity {
namespace {

using json = nlohmann::json;
using testing::dead_letters;
using testing::harness;

constexpr const char* tenant = "acme";

const std::string simple_workflow =
    R"({"workflow":"wf","version":1,"steps":[{"id":"a","kind":"task","action":"transform"}]})";

// After the bad record, a good execution must still run: no bad record stops a partition.
void expect_partition_still_works(harness& h, std::string_view id) {
  h.start(tenant, id, "wf");
  h.settle();
  auto e = h.exec(tenant, id);
  ASSERT_TRUE(e.has_value()) << "the execution after the bad record never started";
  EXPECT_EQ(e->status, exec_status::succeeded);
}

void append_raw(harness& h, stream s, std::string bytes) {
  commit_batch b;
  b.add(s, tenant, std::move(bytes));
  ASSERT_TRUE(h.n->get_log().commit(tenant_partition(tenant, h.n->partitions()), b).has_value());
}

class bad_input : public ::testing::Test {
 protected:
  void SetUp() override {
    h.publish(tenant, simple_workflow);
    h.settle();
  }
  harness h{"bad-input", 2};
};

TEST_F(bad_input, garbage_bytes_on_ingress_go_to_deadletter_with_the_reason) {
  const std::string garbage = "\x01\x02 this is not a flatbuffer \xff\xfe";
  append_raw(h, stream::ingress, garbage);
  append_raw(h, stream::ingress, "");
  h.settle();
  auto dl = dead_letters(h);
  ASSERT_EQ(dl.size(), 2u);
  EXPECT_EQ(dl[0].source, "ingress");
  EXPECT_EQ(dl[0].original, garbage) << "the original bytes are kept for the operator";
  EXPECT_NE(dl[0].reason.find("not an Auterity envelope"), std::string::npos) << dl[0].reason;
  EXPECT_NE(dl[1].reason.find("shorter than"), std::string::npos) << dl[1].reason;
  expect_partition_still_works(h, "after-garbage");
}

TEST_F(bad_input, a_flatbuffer_of_another_schema_goes_to_deadletter) {
  // A well-formed FlatBuffer that is not ours: wrong file identifier.
  flatbuffers::FlatBufferBuilder fbb;
  auto s = fbb.CreateString("hello");
  fbb.Finish(s, "XXXX");
  append_raw(h, stream::ingress,
             std::string(reinterpret_cast<const char*>(fbb.GetBufferPointer()), fbb.GetSize()));
  // Our identifier, truncated body: fails verification.
  std::string start = client::start_execution({tenant, "x", "r", 0}, "wf", 0, "{}");
  append_raw(h, stream::ingress, start.substr(0, start.size() / 2));
  h.settle();
  auto dl = dead_letters(h);
  ASSERT_EQ(dl.size(), 2u);
  EXPECT_NE(dl[0].reason.find("identifier"), std::string::npos) << dl[0].reason;
  EXPECT_NE(dl[1].reason.find("verification"), std::string::npos) << dl[1].reason;
  expect_partition_still_works(h, "after-schema");
}

TEST_F(bad_input, garbage_on_acks_and_command_streams_goes_to_deadletter) {
  append_raw(h, stream::acks, "not an ack");
  append_raw(h, stream::commands_step, "not a command");
  h.settle();
  auto dl = dead_letters(h);
  ASSERT_EQ(dl.size(), 2u);
  std::set<std::string> sources = {dl[0].source, dl[1].source};
  EXPECT_EQ(sources, (std::set<std::string>{"acks", "commands.step"}));
  expect_partition_still_works(h, "after-acks");
}

TEST_F(bad_input, unknown_tenant_is_rejected_with_code_and_reason) {
  h.start("nobody", "e1", "wf");
  h.settle();
  auto rej = h.rejections();
  ASSERT_EQ(rej.size(), 1u);
  EXPECT_EQ(rej[0].code, static_cast<uint16_t>(rejection_code::unknown_tenant));
  EXPECT_NE(rej[0].reason.find("nobody"), std::string::npos) << rej[0].reason;
  EXPECT_FALSE(h.exec("nobody", "e1").has_value());
}

TEST_F(bad_input, unknown_workflow_and_duplicate_execution_are_rejected) {
  h.start(tenant, "e1", "no-such-workflow");
  h.start(tenant, "e2", "wf");
  h.start(tenant, "e2", "wf");
  h.settle();
  auto rej = h.rejections();
  ASSERT_EQ(rej.size(), 2u);
  EXPECT_EQ(rej[0].code, static_cast<uint16_t>(rejection_code::unknown_workflow));
  EXPECT_NE(rej[0].reason.find("no-such-workflow"), std::string::npos);
  EXPECT_EQ(rej[1].code, static_cast<uint16_t>(rejection_code::duplicate_execution));
  const auto events = h.events_of("e2");
  EXPECT_EQ(std::count(events.begin(), events.end(), "ExecutionStarted"), 1)
      << "the duplicate start did not run the execution twice";
}

TEST_F(bad_input, cyclic_definition_is_rejected_naming_the_cycle) {
  h.publish(tenant, R"({"workflow":"loop","version":1,"steps":[
      {"id":"a","kind":"task","action":"transform","after":["c"]},
      {"id":"b","kind":"task","action":"transform","after":["a"]},
      {"id":"c","kind":"task","action":"transform","after":["b"]}]})");
  h.settle();
  auto rej = h.rejections();
  ASSERT_EQ(rej.size(), 1u);
  EXPECT_EQ(rej[0].code, static_cast<uint16_t>(rejection_code::definition_cycle));
  EXPECT_NE(rej[0].reason.find("cycle"), std::string::npos) << rej[0].reason;
  h.start(tenant, "e1", "loop");
  h.settle();
  EXPECT_EQ(h.rejections().back().code, static_cast<uint16_t>(rejection_code::unknown_workflow));
}

TEST_F(bad_input, oversize_payloads_are_rejected_naming_the_limit) {
  const std::string big(limits::payload_bytes_max + 1, 'x');
  h.start(tenant, "big", "wf", json{{"blob", big}}.dump());
  json steps = json::array();
  for (size_t i = 0; i <= limits::steps_per_definition_max; ++i) {
    steps.push_back({{"id", fmt::format("s{}", i)}, {"kind", "task"}, {"action", "transform"}});
  }
  h.publish(tenant, json{{"workflow", "huge"}, {"version", 1}, {"steps", steps}}.dump());
  h.settle();
  auto rej = h.rejections();
  ASSERT_EQ(rej.size(), 2u);
  EXPECT_EQ(rej[0].code, static_cast<uint16_t>(rejection_code::payload_too_large));
  EXPECT_NE(rej[0].reason.find("payload_bytes_max"), std::string::npos) << rej[0].reason;
  EXPECT_EQ(rej[1].code, static_cast<uint16_t>(rejection_code::too_many_steps));
  expect_partition_still_works(h, "after-oversize");
}

TEST_F(bad_input, malformed_input_and_wrong_record_types_are_rejected) {
  h.start(tenant, "e1", "wf", "{not json");
  h.start(tenant, "e2", "wf", "[1,2,3]");
  h.start(tenant, "", "wf", "{}");
  // An ack published to ingress by mistake.
  flatbuffers::FlatBufferBuilder fbb;
  auto ack = fbs::CreateStepAck(fbb, fbb.CreateString("x/y/1"));
  envelope_header hd;
  hd.kind = fbs::RecordKind::Command;
  hd.tenant_id = tenant;
  hd.execution_id = "e3";
  hd.record_id = "ack-on-ingress";  // without one it is refused for that first (missing_field)
  h.submit(tenant, finish_envelope(fbb, hd, fbs::Payload::StepAck, ack.Union()));
  h.settle();
  auto rej = h.rejections();
  ASSERT_EQ(rej.size(), 4u);
  EXPECT_EQ(rej[0].code, static_cast<uint16_t>(rejection_code::invalid_input));
  EXPECT_EQ(rej[1].code, static_cast<uint16_t>(rejection_code::invalid_input));
  EXPECT_EQ(rej[2].code, static_cast<uint16_t>(rejection_code::missing_field));
  EXPECT_EQ(rej[3].code, static_cast<uint16_t>(rejection_code::wrong_record));
  EXPECT_NE(rej[3].reason.find("StepAck"), std::string::npos) << rej[3].reason;
  expect_partition_still_works(h, "after-malformed");
}

TEST_F(bad_input, a_newer_schema_version_is_rejected_not_misread) {
  flatbuffers::FlatBufferBuilder fbb;
  auto p = fbs::CreateStartExecution(fbb, fbb.CreateString("wf"), 0, fbb.CreateString("{}"));
  envelope_header hd;
  hd.kind = fbs::RecordKind::Command;
  hd.tenant_id = tenant;
  hd.execution_id = "future";
  hd.schema_version = schema_version_current + 1;
  h.submit(tenant, finish_envelope(fbb, hd, fbs::Payload::StartExecution, p.Union()));
  h.settle();
  auto rej = h.rejections();
  ASSERT_EQ(rej.size(), 1u);
  EXPECT_EQ(rej[0].code, static_cast<uint16_t>(rejection_code::unsupported_version));
  EXPECT_FALSE(h.exec(tenant, "future").has_value());
}

// Checks at the door (processors/README.md, Limits): record ids, timestamps, signal names and
// input nesting are refused when the command arrives, with a code and a reason.

TEST_F(bad_input, record_ids_are_checked_for_length_and_characters) {
  const int64_t now = h.clk.now_ms();
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"", "record id is empty"},
      {std::string(5000, 'r'), "record id is 5000 bytes; record_id_bytes_max is 128"},
      {std::string("crm\0"
                   "123",
                   7),
       "record id has a control character (byte 0x00 at 3)"},
      {"crm\x01", "record id has a control character (byte 0x01 at 3)"},
      {"crm\n1", "record id has a control character (byte 0x0a at 3)"},
      {"crm\xff", "record id is not valid UTF-8 (byte 3)"},
      {std::string(129, 'r'), "record id is 129 bytes; record_id_bytes_max is 128"},
  };
  for (size_t i = 0; i < bad.size(); ++i) {
    const std::string id = fmt::format("bad-{}", i);
    h.submit(tenant, client::start_execution({tenant, id, bad[i].first, now}, "wf", 0, "{}"));
  }
  h.settle();
  auto rej = h.rejections();
  ASSERT_EQ(rej.size(), bad.size());
  for (size_t i = 0; i < bad.size(); ++i) {
    SCOPED_TRACE(i);
    EXPECT_EQ(rej[i].code, static_cast<uint16_t>(rejection_code::missing_field));
    EXPECT_EQ(rej[i].reason, bad[i].second);
    EXPECT_FALSE(h.exec(tenant, fmt::format("bad-{}", i)).has_value());
  }
  // No refused id reaches the log as a cause: the rejection names the command's position.
  for (const record& r : h.read_all(stream::executions)) {
    const fbs::Envelope* e = decode_envelope(r.value);
    ASSERT_NE(e, nullptr);
    EXPECT_EQ(sv(e->causation_id()).find('\0'), std::string_view::npos);
    EXPECT_LE(sv(e->causation_id()).size(), limits::record_id_bytes_max);
  }
  // Good ids: the longest allowed, punctuation, spaces and UTF-8.
  const std::vector<std::string> good = {std::string(128, 'r'), "crm:123/a#b", "web form 7",
                                         "lead-\xc3\xbc-\xe2\x82\xac"};
  for (size_t i = 0; i < good.size(); ++i) {
    h.submit(tenant, client::start_execution({tenant, fmt::format("good-{}", i), good[i], now},
                                             "wf", 0, "{}"));
  }
  h.settle();
  EXPECT_EQ(h.rejections().size(), bad.size());
  for (size_t i = 0; i < good.size(); ++i) {
    auto e = h.exec(tenant, fmt::format("good-{}", i));
    ASSERT_TRUE(e.has_value()) << i;
    EXPECT_EQ(e->status, exec_status::succeeded);
  }
}

TEST_F(bad_input, timestamps_outside_the_window_are_rejected_naming_the_limit) {
  const int64_t now = h.clk.now_ms();
  const auto start = [&](std::string_view id, int64_t ts) {
    h.submit(tenant, client::start_execution({tenant, id, id, ts}, "wf", 0, "{}"));
  };
  start("t-1970", 5);
  start("t-1999", limits::timestamp_ms_min - 1);
  start("t-2h-ahead", now + 2 * 3'600'000);
  start("t-negative", -1);
  start("t-2000", limits::timestamp_ms_min);  // good from here on
  start("t-1h-ahead", now + limits::timestamp_future_ms_max);
  start("t-unset", 0);
  start("t-now", now);
  h.settle();
  auto rej = h.rejections();
  ASSERT_EQ(rej.size(), 4u);
  for (const auto& r : rej) {
    EXPECT_EQ(r.code, static_cast<uint16_t>(rejection_code::invalid_timestamp)) << r.reason;
  }
  EXPECT_EQ(rej[0].reason,
            "timestamp_ms 5 is before 2000-01-01T00:00:00Z (timestamp_ms_min 946684800000)");
  EXPECT_EQ(rej[2].reason, fmt::format("timestamp_ms {} is 7200000 ms ahead of the partition's "
                                       "clock ({}); timestamp_future_ms_max is 3600000",
                                       now + 7'200'000, now));
  for (const char* id : {"t-1970", "t-1999", "t-2h-ahead", "t-negative"}) {
    EXPECT_FALSE(h.exec(tenant, id).has_value()) << id;
  }
  for (const char* id : {"t-2000", "t-1h-ahead", "t-unset", "t-now"}) {
    auto e = h.exec(tenant, id);
    ASSERT_TRUE(e.has_value()) << id;
    EXPECT_EQ(e->status, exec_status::succeeded) << id;
  }
}

TEST_F(bad_input, signal_names_are_checked_against_the_definitions_name_rule) {
  h.publish(tenant, R"({"workflow":"waits","version":1,"steps":[
      {"id":"w","kind":"wait_signal","signal":"customer_replied","timeout_ms":60000}]})");
  h.settle();
  h.start(tenant, "e1", "waits");
  h.settle();
  h.signal(tenant, "e1", "customer replied");           // a space
  h.signal(tenant, "e1", std::string("a\0b", 3));       // a NUL
  h.signal(tenant, "e1", std::string(129, 's'));        // too long
  h.signal(tenant, "e1", "customer:replied");           // ':' is for upstream ids, not names
  h.signal(tenant, "not-started-yet", "no good name");  // refused at the door, not held
  h.settle();
  auto rej = h.rejections();
  ASSERT_EQ(rej.size(), 5u);
  for (const auto& r : rej) {
    EXPECT_EQ(r.code, static_cast<uint16_t>(rejection_code::missing_field)) << r.reason;
    EXPECT_NE(r.reason.find("use 1 to 128 characters from A-Z a-z 0-9 _ . -"), std::string::npos)
        << r.reason;
  }
  EXPECT_EQ(rej[0].reason,
            "signal name \"customer replied\" is invalid: use 1 to 128 characters from A-Z a-z "
            "0-9 _ . -, as in definitions");
  EXPECT_EQ(rej[1].reason.find('\0'), std::string::npos) << "the reason escapes the name";
  for (const std::string& type : h.events_of("not-started-yet")) EXPECT_NE(type, "SignalHeld");
  EXPECT_EQ(h.exec(tenant, "e1")->status, exec_status::running);
  h.signal(tenant, "e1", "customer_replied", R"({"text":"hi"})");
  h.settle();
  EXPECT_EQ(h.exec(tenant, "e1")->status, exec_status::succeeded);
}

// Objects nested `levels` deep: {"a":{"a":...{}}}.
std::string nested(int levels) {
  std::string s;
  for (int i = 1; i < levels; ++i) s += R"({"a":)";
  s += "{}";
  s.append(static_cast<size_t>(levels - 1), '}');
  return s;
}

TEST_F(bad_input, input_nested_deeper_than_steps_allow_is_rejected_at_start) {
  h.start(tenant, "deep-200", "wf", nested(200));
  h.start(tenant, "deep-129", "wf", nested(limits::json_value_depth_max + 1));
  h.start(tenant, "deep-128", "wf", nested(limits::json_value_depth_max));
  h.settle();
  auto rej = h.rejections();
  ASSERT_EQ(rej.size(), 2u);
  for (const auto& r : rej) {
    EXPECT_EQ(r.code, static_cast<uint16_t>(rejection_code::invalid_input));
    EXPECT_EQ(r.reason, "input is nested deeper than 128 levels (json_value_depth_max)");
  }
  EXPECT_FALSE(h.exec(tenant, "deep-200").has_value()) << "rejected at start, not at a step";
  EXPECT_FALSE(h.exec(tenant, "deep-129").has_value());
  auto e = h.exec(tenant, "deep-128");
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->status, exec_status::succeeded);
  // A signal payload that deep is refused too: a waiting step would succeed with it as output.
  h.publish(tenant, R"({"workflow":"waits","version":1,"steps":[
      {"id":"w","kind":"wait_signal","signal":"go","timeout_ms":60000}]})");
  h.settle();
  h.start(tenant, "e1", "waits");
  h.settle();
  h.signal(tenant, "e1", "go", nested(200));
  h.settle();
  EXPECT_EQ(h.rejections().back().reason,
            "signal payload is nested deeper than 128 levels (json_value_depth_max)");
  EXPECT_EQ(h.exec(tenant, "e1")->status, exec_status::running);
}

}  // namespace
}  // namespace auterity
