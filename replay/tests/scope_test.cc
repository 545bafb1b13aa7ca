// A replay scoped to a tenant reads only that tenant's partition and shows only its records —
// checked with two tenants that share a partition (acme-motors and bayside-auto in the golden
// history) — and a verification scoped to a tenant checks only that tenant's history and keys.

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "replay/source.h"
#include "replay/tests/golden.h"
#include "replay/timeline_export.h"
#include "replay/verify.h"

namespace auterity::testing {
namespace {

using json = nlohmann::json;

class scope : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(tenant_partition("acme-motors", 2), tenant_partition("bayside-auto", 2));
    ASSERT_NE(tenant_partition("acme-motors", 2), tenant_partition("crestview-cars", 2));
    auto made = build_data_dir(dir.path, fixture.partitions, fixture.records);
    ASSERT_TRUE(made.has_value()) << made.error().message;
  }

  std::string export_jsonl(const replay_scope& s, timeline_format format = timeline_format::jsonl) {
    auto src = open_embedded_source(dir.path, false);
    EXPECT_TRUE(src.has_value());
    std::FILE* f = std::tmpfile();
    timeline_options o;
    o.scope = s;
    o.format = format;
    EXPECT_TRUE(write_timeline(*src->events, o, f).has_value());
    std::string out(static_cast<size_t>(std::ftell(f)), '\0');
    std::rewind(f);
    EXPECT_EQ(std::fread(out.data(), 1, out.size(), f), out.size());
    std::fclose(f);
    return out;
  }

  // Records of `tenant` in the streams a timeline reads.
  size_t records_of(std::string_view tenant) const {
    size_t n = 0;
    for (const logged_record& r : fixture.records) {
      const bool timeline_stream =
          std::find(std::begin(timeline_streams), std::end(timeline_streams), r.s) !=
          std::end(timeline_streams);
      const fbs::Envelope* e = decode_envelope(r.value);
      n += timeline_stream && e && sv(e->tenant_id()) == tenant;
    }
    return n;
  }

  uint64_t events_of(std::string_view tenant) const {
    uint64_t n = 0;
    for (const logged_record& r : fixture.records) {
      const fbs::Envelope* e = decode_envelope(r.value);
      n += r.s == stream::executions && e && e->kind() == fbs::RecordKind::Event &&
           sv(e->tenant_id()) == tenant;
    }
    return n;
  }

  verify_report verify(const std::string& tenant) {
    auto src = open_embedded_source(dir.path, true);
    EXPECT_TRUE(src.has_value());
    verify_options o;
    o.tenant = tenant;
    o.scratch_dir = dir.path + "/scratch";
    auto r = verify_log(*src->events, src->store_ptrs(), o);
    EXPECT_TRUE(r.has_value());
    return r ? std::move(*r) : verify_report{};
  }

  history_file fixture = load_golden();
  dir_guard dir{scratch_temp_dir("scope")};
};

TEST_F(scope, a_tenant_sees_only_its_own_records_and_all_of_them) {
  for (const char* tenant : {"acme-motors", "bayside-auto", "crestview-cars"}) {
    SCOPED_TRACE(tenant);
    replay_scope s;
    s.tenant = tenant;
    EXPECT_EQ(scope_partitions(s, fixture.partitions),
              std::vector<uint32_t>{tenant_partition(tenant, fixture.partitions)});
    size_t lines = 0;
    std::istringstream in(export_jsonl(s));
    for (std::string line; std::getline(in, line); ++lines) {
      EXPECT_EQ(json::parse(line)["tenant"], tenant) << line.substr(0, 200);
    }
    EXPECT_EQ(lines, records_of(tenant));
    EXPECT_GT(lines, 10u);
    // The text and HTML timelines are filtered the same way.
    const std::string text = export_jsonl(s, timeline_format::text);
    for (const char* other : {"acme-motors", "bayside-auto", "crestview-cars"}) {
      if (std::string_view(other) != tenant) {
        EXPECT_EQ(text.find(other), std::string::npos) << other;
      }
    }
  }
}

TEST_F(scope, an_execution_scope_shows_that_execution_only) {
  replay_scope s;
  s.tenant = "bayside-auto";
  s.execution = "lead-0004";
  std::istringstream in(export_jsonl(s));
  size_t lines = 0;
  for (std::string line; std::getline(in, line); ++lines) {
    const json r = json::parse(line);
    EXPECT_EQ(r["execution"], "lead-0004");
    EXPECT_EQ(r["tenant"], "bayside-auto");
  }
  EXPECT_GT(lines, 12u);  // requests, events, commands and acks
}

TEST_F(scope, a_workflow_and_a_time_window_narrow_the_timeline) {
  replay_scope s;
  s.workflow = "trade-in-appraisal";
  std::istringstream in(export_jsonl(s));
  size_t lines = 0;
  for (std::string line; std::getline(in, line); ++lines) {
    const json r = json::parse(line);
    EXPECT_TRUE(r["execution"] == "appraisal-0001" || r["type"] == "DefinitionPublished") << line;
  }
  EXPECT_GT(lines, 10u);
  s = {};
  s.from_ms = 1'700'000'000'800;  // the replies arrive at +800 ms
  s.to_ms = 1'700'000'000'900;
  std::istringstream window(export_jsonl(s));
  for (std::string line; std::getline(window, line);) {
    const int64_t ts = json::parse(line)["timestamp_ms"];
    EXPECT_GE(ts, *s.from_ms);
    EXPECT_LE(ts, *s.to_ms);
  }
}

TEST_F(scope, a_tenant_verification_ignores_its_neighbour_on_the_same_partition) {
  // Damage bayside-auto's state; acme-motors, on the same partition, still verifies.
  {
    auto store = state_store::open(
        fmt::format("{}/state/p{:03}", dir.path, tenant_partition("bayside-auto", 2)));
    ASSERT_TRUE(store.has_value());
    state_batch b;
    b.del(keys::event_index("bayside-auto", "lead-0003", 2));
    ASSERT_TRUE((*store)->write(b, (*store)->checkpoint()).has_value());
  }
  const verify_report acme = verify("acme-motors");
  EXPECT_TRUE(acme.ok());
  ASSERT_EQ(acme.partitions.size(), 1u);
  EXPECT_EQ(acme.partitions[0].events, events_of("acme-motors"));  // not bayside's
  EXPECT_EQ(acme.partitions[0].events, 49u);
  const verify_report bayside = verify("bayside-auto");
  EXPECT_FALSE(bayside.ok());
  ASSERT_EQ(bayside.partitions[0].state_diffs.size(), 1u);
  EXPECT_NE(bayside.partitions[0].state_diffs[0].text.find("event index bayside-auto/lead-0003 #2"),
            std::string::npos)
      << bayside.partitions[0].state_diffs[0].text;
}

}  // namespace
}  // namespace auterity::testing
