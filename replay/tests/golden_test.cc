// A history written with schema v1 (the golden fixture, frozen) still replays with the current
// engine: its hash chains verify, the appliers rebuild exactly the states the v1 engine held
// when it wrote the history, and the timeline tells what happened. When schema v2 arrives the
// v1 appliers stay (processors/appliers.cc keys them by version), and this test keeps proving
// that they still do their job on real v1 records.

#include <fstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "replay/source.h"
#include "replay/tests/golden.h"
#include "replay/timeline_export.h"
#include "replay/verify.h"

namespace auterity::testing {
namespace {

class golden : public ::testing::Test {
 protected:
  void SetUp() override {
    auto l = write_log(dir.path, fixture.partitions, fixture.records);
    ASSERT_TRUE(l.has_value()) << l.error().message;
    events = std::move(*l);
  }

  std::string timeline(const replay_scope& scope) {
    std::FILE* f = std::tmpfile();
    timeline_options o;
    o.scope = scope;
    auto stats = write_timeline(*events, o, f);
    EXPECT_TRUE(stats.has_value()) << stats.error().message;
    std::string out(static_cast<size_t>(std::ftell(f)), '\0');
    std::rewind(f);
    EXPECT_EQ(std::fread(out.data(), 1, out.size(), f), out.size());
    std::fclose(f);
    return out;
  }

  history_file fixture = load_golden();
  dir_guard dir{scratch_temp_dir("golden")};
  std::unique_ptr<log> events;
};

TEST_F(golden, is_a_schema_v1_history) {
  size_t events_seen = 0;
  for (const logged_record& r : fixture.records) {
    const fbs::Envelope* e = decode_envelope(r.value);
    ASSERT_NE(e, nullptr) << stream_name(r.s) << "@" << r.offset;
    EXPECT_EQ(e->schema_version(), 1) << stream_name(r.s) << "@" << r.offset;
    events_seen += r.s == stream::executions && e->kind() == fbs::RecordKind::Event;
  }
  EXPECT_EQ(events_seen, 101u);
}

TEST_F(golden, its_hash_chains_verify) {
  for (uint32_t p = 0; p < events->partition_count(); ++p) {
    auto r = verify_chains(*events, p);
    ASSERT_TRUE(r.has_value()) << r.error().message;
    EXPECT_TRUE(r->problems.empty()) << r->problems.front();
  }
}

TEST_F(golden, replay_rebuilds_the_states_the_v1_engine_held) {
  std::ifstream expected_file(test_data(golden_expected));
  std::vector<std::string> expected;
  for (std::string line; std::getline(expected_file, line);) expected.push_back(line);
  ASSERT_EQ(expected.size(), 6u);

  std::vector<std::unique_ptr<state_rebuilder>> rebuilt;
  for (uint32_t p = 0; p < events->partition_count(); ++p) {
    auto r = state_rebuilder::open(fmt::format("{}/rebuilt/p{}", dir.path, p), p,
                                   events->partition_count());
    ASSERT_TRUE(r.has_value()) << r.error().message;
    auto done = rebuild(*events, p, **r, {});
    ASSERT_TRUE(done.has_value()) << done.error().message;
    EXPECT_EQ((*r)->skipped_total(), 0u)
        << "a v1 record was not applied: " << (*r)->skipped().front().reason;
    rebuilt.push_back(std::move(*r));
  }
  for (const std::string& line : expected) {
    const auto fields = nlohmann::json::parse(line);
    const std::string tenant = fields["tenant"], id = fields["execution"];
    const state_store& s = rebuilt[tenant_partition(tenant, fixture.partitions)]->store();
    auto stored = s.get(keys::execution(tenant, id));
    ASSERT_TRUE(stored && *stored) << tenant << "/" << id << " missing after replay";
    execution_state e;
    ASSERT_TRUE(decode_execution(**stored, e));
    EXPECT_EQ(state_summary(e, step_names_of(s, e)), line);
  }
}

TEST_F(golden, the_timeline_tells_what_happened) {
  const std::string text = timeline({});
  for (const char* id :
       {"lead-0001", "lead-0002", "appraisal-0001", "lead-0003", "lead-0004", "lead-0005"}) {
    EXPECT_NE(text.find(fmt::format("/ {} ·", id)), std::string::npos) << id;
  }
  // AI calls with model, tokens and cost; notifications with channel and recipient; causes.
  EXPECT_NE(text.find("AI model relay-small-2024-05, 37 in + 23 out tokens, cost $0.000249"),
            std::string::npos);
  EXPECT_NE(text.find("notification: sms to +15550100001"), std::string::npos);
  EXPECT_NE(text.find("notification: slack to #sales"), std::string::npos);
  EXPECT_NE(text.find("<- ack/lead-0002/draft/1"), std::string::npos);
  EXPECT_NE(text.find("step valuation attempt 1 failed"), std::string::npos);  // the retry
  EXPECT_NE(text.find("execution cancelled: customer bought elsewhere"), std::string::npos);
  EXPECT_NE(text.find("REJECTED start-lead-0001-retry (duplicate_execution, code 8)"),
            std::string::npos);
  EXPECT_NE(text.find("model quota for this tenant is spent"), std::string::npos);
}

}  // namespace
}  // namespace auterity::testing
