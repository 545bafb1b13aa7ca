// The state comparison finds every key where the engine's RocksDB differs from a replay of the
// log (a tampered value, a deleted key, an added one) and says what differs in the key's own
// terms; `state as of` rebuilds an execution at any point of its history; and a real engine's
// state, chain ends included, verifies.

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "processors/tests/harness.h"
#include "replay/source.h"
#include "replay/tests/golden.h"
#include "replay/verify.h"

namespace auterity::testing {
namespace {

class state_diffs : public ::testing::Test {
 protected:
  void SetUp() override {
    auto made = build_data_dir(dir.path, fixture.partitions, fixture.records);
    ASSERT_TRUE(made.has_value()) << made.error().message;
  }

  // Changes partition 1's state (acme-motors and bayside-auto live there).
  void edit_state(const std::function<void(state_store&, state_batch&)>& edit) {
    auto store = state_store::open(fmt::format("{}/state/p001", dir.path));
    ASSERT_TRUE(store.has_value()) << store.error().message;
    state_batch b;
    edit(**store, b);
    ASSERT_TRUE((*store)->write(b, (*store)->checkpoint()).has_value());
  }

  partition_verification verify_partition_1() {
    auto src = open_embedded_source(dir.path, true);
    EXPECT_TRUE(src.has_value());
    verify_options o;
    o.partitions = {1};
    o.scratch_dir = dir.path + "/scratch";
    auto r = verify_log(*src->events, src->store_ptrs(), o);
    EXPECT_TRUE(r.has_value()) << r.error().message;
    return r ? r->partitions.at(0) : partition_verification{};
  }

  history_file fixture = load_golden();
  dir_guard dir{scratch_temp_dir("state")};
};

TEST_F(state_diffs, a_tampered_execution_value_is_listed_with_the_field_that_differs) {
  edit_state([](state_store& s, state_batch& b) {
    auto stored = s.get(keys::execution("bayside-auto", "lead-0003"));
    ASSERT_TRUE(stored && *stored);
    execution_state e;
    ASSERT_TRUE(decode_execution(**stored, e));
    e.steps[0].output_json = R"({"grade":"cold","score":3})";  // the lead score, rewritten
    b.put(keys::execution("bayside-auto", "lead-0003"), encode_execution(e));
  });
  const partition_verification v = verify_partition_1();
  EXPECT_TRUE(v.chain_problems.empty());  // the log is intact: only the state was touched
  ASSERT_EQ(v.state_differences, 1u);
  EXPECT_EQ(v.state_diffs[0].key, "Tbayside-auto\\x00Elead-0003");
  EXPECT_NE(v.state_diffs[0].text.find("execution bayside-auto/lead-0003: step score output"),
            std::string::npos)
      << v.state_diffs[0].text;
  EXPECT_NE(v.state_diffs[0].text.find("cold"), std::string::npos) << v.state_diffs[0].text;
}

TEST_F(state_diffs, a_flipped_byte_in_any_value_and_missing_or_extra_keys_are_listed) {
  edit_state([](state_store& s, state_batch& b) {
    std::string index = **s.get(keys::event_index("acme-motors", "lead-0001", 3));
    index[7] ^= 1;  // the executions offset of event #3, off by one
    b.put(keys::event_index("acme-motors", "lead-0001", 3), index);
    b.del(keys::event_index("acme-motors", "lead-0002", 5));
    b.put(keys::execution("acme-motors", "lead-9999"), "forged");
  });
  const partition_verification v = verify_partition_1();
  ASSERT_EQ(v.state_differences, 3u);
  std::string all;
  for (const state_diff& d : v.state_diffs) all += d.text + "\n";
  EXPECT_NE(all.find("event index acme-motors/lead-0001 #3: executions offset"), std::string::npos)
      << all;
  EXPECT_NE(all.find("event index acme-motors/lead-0002 #5: the replayed history has it"),
            std::string::npos)
      << all;
  EXPECT_NE(all.find("execution acme-motors/lead-9999: the engine's state has it"),
            std::string::npos)
      << all;
}

TEST_F(state_diffs, a_changed_chain_head_in_the_state_shows_in_both_checks) {
  edit_state([](state_store& s, state_batch& b) {
    execution_state e;
    ASSERT_TRUE(decode_execution(**s.get(keys::execution("acme-motors", "lead-0001")), e));
    e.event_count += 1;  // the engine "remembers" an event the log does not have
    b.put(keys::execution("acme-motors", "lead-0001"), encode_execution(e));
  });
  const partition_verification v = verify_partition_1();
  ASSERT_EQ(v.chain_problems.size(), 1u);
  EXPECT_EQ(v.chain_problems[0].kind, chain_problem_kind::truncated);
  EXPECT_EQ(v.chain_problems[0].record_id, "lead-0001#17");
  EXPECT_EQ(v.state_differences, 1u);
}

TEST_F(state_diffs, state_as_of_an_offset_and_a_time) {
  auto src = open_embedded_source(dir.path, false);
  ASSERT_TRUE(src.has_value());
  auto at = [&](rebuild_limit limit) {
    auto r = state_rebuilder::open(dir.path + "/as-of", 1, 2, "bayside-auto");
    EXPECT_TRUE(r.has_value());
    EXPECT_TRUE(rebuild(*src->events, 1, **r, limit).has_value());
    execution_state e;
    auto stored = (*r)->store().get(keys::execution("bayside-auto", "lead-0003"));
    if (!stored || !*stored || !decode_execution(**stored, e)) e.id.clear();
    return e;
  };
  EXPECT_TRUE(at({0, std::nullopt}).id.empty());  // before anything happened
  // Before the customer's reply (+800 ms) the execution waits for it; after, it is done.
  const execution_state waiting = at({UINT64_MAX, 1'700'000'000'700});
  EXPECT_EQ(waiting.status, exec_status::running);
  EXPECT_EQ(waiting.steps[5].status, step_status::waiting);  // wait_reply
  const execution_state done = at({});
  EXPECT_EQ(done.status, exec_status::succeeded);
  EXPECT_EQ(done.steps[5].status, step_status::succeeded);
  // As of an offset: the first event only.
  uint64_t started = 0;
  for (const logged_record& r : fixture.records) {
    const fbs::Envelope* e = decode_envelope(r.value);
    if (r.s == stream::executions && e && sv(e->record_id()) == "lead-0003#0") started = r.offset;
  }
  const execution_state first = at({started + 1, std::nullopt});
  EXPECT_EQ(first.event_count, 1u);
  EXPECT_EQ(first.status, exec_status::running);
}

// A real engine run (workers, timers, retries) verifies against its own RocksDB state, chain
// ends included: the verifier agrees with the engine, not only with itself.
TEST(state_of_a_real_engine, verifies_with_chain_ends_compared) {
  harness h("replay-verify", 2);
  const char* flow = R"({"workflow":"w","version":1,"steps":[
      {"id":"a","kind":"task","action":"flaky","input":{"succeed_on_attempt":2},
       "retry":{"max_attempts":3,"backoff_ms":20}},
      {"id":"b","kind":"notify","after":["a"],"input":{"channel":"sms","to":"+1555","body":"hi"}},
      {"id":"c","kind":"wait_signal","signal":"go","after":["b"],"timeout_ms":50}]})";
  for (const char* tenant : {"acme-motors", "bayside-auto", "crestview-cars"}) {
    h.publish(tenant, flow);
    for (int i = 0; i < 4; ++i) h.start(tenant, fmt::format("x{}", i), "w");
  }
  h.settle();
  h.signal("acme-motors", "x1", "go");
  h.run_for(200);
  std::vector<state_store*> stores;
  for (uint32_t p = 0; p < 2; ++p) stores.push_back(&h.n->partition(p).store());
  verify_options o;
  o.scratch_dir = h.dir + "/scratch";
  auto r = verify_log(h.n->get_log(), stores, o);
  ASSERT_TRUE(r.has_value()) << r.error().message;
  EXPECT_TRUE(r->ok());
  uint64_t events = 0;
  for (const partition_verification& p : r->partitions) {
    EXPECT_TRUE(p.heads_compared);
    EXPECT_TRUE(p.state_compared);
    EXPECT_TRUE(p.chain_problems.empty()) << p.chain_problems[0].text();
    EXPECT_EQ(p.state_differences, 0u) << p.state_diffs[0].text;
    events += p.events;
  }
  EXPECT_GT(events, 60u);
}

}  // namespace
}  // namespace auterity::testing
