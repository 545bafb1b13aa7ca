// Upstream systems may publish the envelope to ingress as JSON (engine/json_envelope.h): such a
// record runs exactly like its binary form, and one that does not convert ends in deadletter
// with the parser's reason and the original bytes.

#include <algorithm>
#include <string>
#include <vector>

#include "processors/rejection.h"
#include "processors/tests/harness.h"

namespace auterity {
namespace {

using testing::dead_letters;
using testing::harness;

constexpr const char* tenant = "acme";

// A task, then a wait for signal "go": the execution needs a start and a signal to finish.
const std::string workflow =
    R"({"workflow":"wf","version":1,"steps":[)"
    R"({"id":"a","kind":"task","action":"transform"},)"
    R"({"id":"w","kind":"wait_signal","signal":"go","after":["a"],"timeout_ms":60000}]})";

// As an upstream would write it by hand: pretty-printed, no timestamp (the engine stamps it).
const std::string json_start = R"(
{
  "kind": "Command",
  "tenant_id": "acme",
  "execution_id": "lead-1",
  "record_id": "crm-123",
  "payload_type": "StartExecution",
  "payload": {"workflow": "wf", "input_json": "{\"name\":\"Maria\"}"}
}
)";

const std::string json_signal =
    R"({"kind":"Command","tenant_id":"acme","execution_id":"lead-1","record_id":"crm-124",)"
    R"("payload_type":"Signal","payload":{"name":"go","payload_json":"{}"}})";

// What a Kafka client does: raw bytes on the tenant's partition of a stream.
void append_raw(harness& h, stream s, std::string bytes) {
  commit_batch b;
  b.add(s, tenant, std::move(bytes));
  ASSERT_TRUE(h.n->get_log().commit(tenant_partition(tenant, h.n->partitions()), b).has_value());
}

class json_ingress : public ::testing::Test {
 protected:
  void SetUp() override {
    h.publish(tenant, workflow);
    h.settle();
  }
  harness h{"json-ingress", 2};
};

TEST_F(json_ingress, a_json_start_and_signal_run_the_execution_to_the_end) {
  append_raw(h, stream::ingress, json_start);
  h.settle();
  auto e = h.exec(tenant, "lead-1");
  ASSERT_TRUE(e.has_value()) << "the JSON start did not start the execution";
  EXPECT_EQ(e->status, exec_status::running) << "waits for signal 'go'";

  append_raw(h, stream::ingress, json_signal);
  h.settle();
  e = h.exec(tenant, "lead-1");
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->status, exec_status::succeeded);
  const std::vector<std::string> events = h.events_of("lead-1");
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.front(), "ExecutionStarted");
  EXPECT_NE(std::find(events.begin(), events.end(), "SignalReceived"), events.end());
  EXPECT_EQ(events.back(), "ExecutionSucceeded");
  EXPECT_TRUE(dead_letters(h).empty());
  EXPECT_TRUE(h.rejections().empty());

  // The log keeps the record as the upstream published it, not its conversion.
  std::vector<std::string> ingress;
  for (const record& r : h.read_all(stream::ingress)) ingress.push_back(r.value);
  EXPECT_NE(std::find(ingress.begin(), ingress.end(), json_start), ingress.end());
}

TEST_F(json_ingress, a_malformed_json_envelope_goes_to_deadletter_with_the_parser_reason) {
  const std::string typo =
      R"({"kind":"Command","tenant_id":"acme","execution_id":"lead-2","record_id":"r",)"
      R"("payload_type":"StartExecution","payload":{"workflow":"wf","versoin":1}})";
  const std::string truncated = json_start.substr(0, json_start.size() / 2);
  append_raw(h, stream::ingress, typo);
  append_raw(h, stream::ingress, truncated);
  h.settle();
  auto dl = dead_letters(h);
  ASSERT_EQ(dl.size(), 2u);
  EXPECT_EQ(dl[0].source, "ingress");
  EXPECT_EQ(dl[0].original, typo) << "the original bytes are kept for the operator";
  EXPECT_EQ(dl[0].reason.rfind("JSON envelope rejected: unknown field: versoin", 0), 0u)
      << dl[0].reason;
  EXPECT_NE(dl[0].reason.find("line 1"), std::string::npos) << dl[0].reason;
  EXPECT_EQ(dl[1].reason.rfind("JSON envelope rejected: ", 0), 0u) << dl[1].reason;
  EXPECT_EQ(dl[1].original, truncated);
  EXPECT_FALSE(h.exec(tenant, "lead-2").has_value());

  // The partition keeps going: a good JSON start after the bad ones runs.
  append_raw(h, stream::ingress, json_start);
  h.settle();
  EXPECT_TRUE(h.exec(tenant, "lead-1").has_value());
}

TEST_F(json_ingress, a_json_envelope_without_payload_goes_to_deadletter) {
  append_raw(h, stream::ingress, R"({"kind":"Command","tenant_id":"acme"})");
  h.settle();
  auto dl = dead_letters(h);
  ASSERT_EQ(dl.size(), 1u);
  EXPECT_EQ(dl[0].reason, "JSON envelope rejected: envelope has no payload");
}

TEST_F(json_ingress, a_converted_command_meets_the_same_rules_as_a_binary_one) {
  std::string unknown = json_start;
  unknown.replace(unknown.find(R"("workflow": "wf")"), 16, R"("workflow": "nope")");
  append_raw(h, stream::ingress, unknown);
  append_raw(h, stream::ingress, json_start);
  append_raw(h, stream::ingress, json_start);  // a retried start: same execution id
  h.settle();
  auto rej = h.rejections();
  ASSERT_EQ(rej.size(), 2u);
  EXPECT_EQ(rej[0].code, static_cast<uint16_t>(rejection_code::unknown_workflow));
  EXPECT_EQ(rej[1].code, static_cast<uint16_t>(rejection_code::duplicate_execution));
  EXPECT_EQ(rej[1].execution, "lead-1");
}

TEST_F(json_ingress, only_ingress_takes_json) {
  // Acks come from workers, which write the binary envelope: JSON there is not converted.
  append_raw(h, stream::acks, json_signal);
  h.settle();
  auto dl = dead_letters(h);
  ASSERT_EQ(dl.size(), 1u);
  EXPECT_EQ(dl[0].source, "acks");
  EXPECT_NE(dl[0].reason.find("not an Auterity envelope"), std::string::npos) << dl[0].reason;
}

}  // namespace
}  // namespace auterity
