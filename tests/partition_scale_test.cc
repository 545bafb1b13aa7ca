// Scaling the partition count on the embedded log (docs/tenant-moves.md, "Scaling the partition
// count"), as an operator and the tenants' users would notice it: 4 -> 8 -> 3 partitions with
// running executions; afterwards the tenants are spread over the partitions that take tenants,
// none is left on a retired one, every execution finishes exactly once (its signals keyed by
// tenant and hashed with the new count land on other partitions and are forwarded), the state of
// every partition equals the replay of its log and every chain verifies. A rerun before the
// engine ran the moves plans none twice; bad requests are refused with the reason.

#include <map>
#include <set>

#include <nlohmann/json.hpp>

#include "engine/embedded_log.h"
#include "node/scale.h"
#include "processors/orchestrator_state.h"
#include "processors/tests/harness.h"
#include "processors/tests/replay_check.h"
#include "replay/source.h"
#include "replay/verify.h"

namespace auterity {
namespace {

using json = nlohmann::json;
using testing::harness;

constexpr uint32_t initial = 4;
constexpr int tenants = 16;

std::string tenant(int i) { return fmt::format("dealer-{:02}", i); }
int executions_of(int i) { return i % 4 + 1; }  // some tenants are heavier than others

// A task, a wait for the customer's reply (the execution runs until it comes), a task.
std::string workflow() {
  json steps = json::array(
      {{{"id", "a"}, {"kind", "task"}, {"action", "transform"}, {"input", {{"x", "{{input.x}}"}}}},
       {{"id", "w"}, {"kind", "wait_signal"}, {"signal", "reply"}, {"after", {"a"}}},
       {{"id", "b"}, {"kind", "task"}, {"action", "transform"}, {"after", {"w"}}}});
  return json{{"workflow", "wf"}, {"version", 1}, {"steps", steps}}.dump();
}

std::unique_ptr<node> reopen(harness& h, uint32_t partitions) {
  h.n.reset();
  node_options o = harness::options(partitions, /*workers=*/true);
  o.data_dir = h.dir;
  auto n = node::open(o, h.clk);
  EXPECT_TRUE(n.has_value()) << n.error().message;
  if (!n) return nullptr;
  auto r = (*n)->recover();
  EXPECT_TRUE(r.has_value()) << r.error().message;
  return std::move(*n);
}

// What `auterity partitions scale` does, with the engine stopped.
result<scale_plan> plan(harness& h, uint32_t target) {
  h.n.reset();
  auto src = open_embedded_source(h.dir, /*with_state=*/true);
  if (!src) return std::unexpected(src.error());
  auto survey = survey_placement(*src->events, src->store_ptrs());
  if (!survey) return std::unexpected(survey.error());
  return plan_scale(*survey, src->events->partition_count(), src->events->placement(), target);
}

// Closes the engine (the survey reads its directory as `partitions scale` does).
placement_survey survey(harness& h) {
  h.n.reset();
  auto src = open_embedded_source(h.dir, /*with_state=*/true);
  EXPECT_TRUE(src.has_value()) << src.error().message;
  auto s = survey_placement(*src->events, src->store_ptrs());
  EXPECT_TRUE(s.has_value()) << s.error().message;
  return s ? *s : placement_survey{};
}

uint64_t max_load(const std::vector<uint64_t>& loads, uint32_t active) {
  uint64_t m = 0;
  for (uint32_t p = 0; p < active; ++p) m = std::max(m, loads[p]);
  return m;
}

void start_all(harness& h) {
  for (int i = 0; i < tenants; ++i) {
    h.publish(tenant(i), workflow());
    for (int e = 0; e < executions_of(i); ++e) {
      h.start(tenant(i), fmt::format("lead-{}", e), "wf", fmt::format(R"({{"x":{}}})", e));
    }
  }
  h.settle();
}

void reply_all(harness& h) {
  for (int i = 0; i < tenants; ++i) {
    for (int e = 0; e < executions_of(i); ++e) {
      h.signal(tenant(i), fmt::format("lead-{}", e), "reply", R"({"ok":true})");
    }
  }
  h.settle();
}

void expect_exactly_once_and_replayable(harness& h) {
  std::map<std::string, int> ended;
  for (const record& r : h.read_all(stream::executions)) {
    const fbs::Envelope* e = decode_envelope(r.value);
    ASSERT_NE(e, nullptr);
    if (e->payload_type() == fbs::Payload::ExecutionSucceeded) {
      ended[fmt::format("{}/{}", sv(e->tenant_id()), sv(e->execution_id()))]++;
    }
  }
  size_t expected = 0;
  for (int i = 0; i < tenants; ++i) {
    for (int e = 0; e < executions_of(i); ++e) {
      ++expected;
      auto x = h.exec(tenant(i), fmt::format("lead-{}", e));
      ASSERT_TRUE(x.has_value()) << tenant(i) << "/lead-" << e << " not found";
      EXPECT_EQ(x->status, exec_status::succeeded) << tenant(i) << "/lead-" << e;
    }
  }
  ++expected;  // the newcomer's
  EXPECT_EQ(ended.size(), expected);
  for (const auto& [id, n] : ended) EXPECT_EQ(n, 1) << id << " ended " << n << " times";
  std::set<std::string> ids;
  for (const record& r : h.read_all(stream::commands_step)) {
    const fbs::Envelope* e = decode_envelope(r.value);
    EXPECT_TRUE(ids.insert(fmt::format("{}/{}", sv(e->tenant_id()), sv(e->record_id()))).second)
        << "command " << sv(e->record_id()) << " written twice";
  }
  EXPECT_EQ(ids.size(), 2 * expected) << "steps a and b of every execution";
  EXPECT_TRUE(h.dead_letters().empty());
  testing::expect_replay_rebuilds_the_state(h);
}

TEST(partition_scale, four_to_eight_to_three_keeps_every_execution_exactly_once) {
  harness h("scale", harness::options(initial, true));
  start_all(h);

  // Up: 4 -> 8. The plan moves tenants onto the new partitions and lowers the hottest load.
  auto up = plan(h, 8);
  ASSERT_TRUE(up.has_value()) << up.error().message;
  EXPECT_EQ(up->partitions, 8u);
  EXPECT_TRUE(up->retired.empty());
  ASSERT_FALSE(up->moves.empty());
  for (const planned_move& m : up->moves) EXPECT_LT(m.to, 8u);
  EXPECT_LT(max_load(up->load_after, 8), max_load(up->load_before, initial));
  auto published = apply_scale_embedded(h.dir + "/log", *up, h.clk.now_ms());
  ASSERT_TRUE(published.has_value()) << published.error().message;
  EXPECT_EQ(*published, up->moves.size());

  // A rerun before the engine ran the moves plans none of them again.
  auto again = plan(h, 8);
  ASSERT_TRUE(again.has_value()) << again.error().message;
  EXPECT_EQ(again->pending, up->moves.size());
  for (const planned_move& m : again->moves) {
    for (const planned_move& first : up->moves) EXPECT_NE(m.tenant, first.tenant) << "moved twice";
  }

  h.n = reopen(h, 8);
  ASSERT_TRUE(h.n);
  EXPECT_EQ(h.n->get_log().placement().base, initial) << "adding partitions moves no tenant";
  h.settle();
  std::set<uint32_t> used;
  for (const tenant_load& t : survey(h).tenants) used.insert(t.partition);
  EXPECT_TRUE(std::ranges::any_of(used, [](uint32_t p) { return p >= initial; }))
      << "no tenant on the new partitions";
  h.n = reopen(h, 8);
  ASSERT_TRUE(h.n);
  for (const planned_move& m : up->moves) {
    auto e = h.exec(m.tenant, "lead-0");
    ASSERT_TRUE(e.has_value()) << m.tenant << " lost in the move";
    EXPECT_EQ(e->status, exec_status::running);
  }
  // A tenant that first appears now is decided on its home (hashed with the base), wherever its
  // records land.
  h.publish("newcomer", workflow());
  h.start("newcomer", "lead-0", "wf", R"({"x":1})");
  h.settle();
  ASSERT_TRUE(h.exec("newcomer", "lead-0").has_value());

  // Down: 8 -> 3. Every tenant leaves partitions 3..7, which are retired.
  auto down = plan(h, 3);
  ASSERT_TRUE(down.has_value()) << down.error().message;
  EXPECT_EQ(down->partitions, 8u) << "partitions are never deleted";
  EXPECT_EQ(down->retired, (std::vector<uint32_t>{3, 4, 5, 6, 7}));
  for (const planned_move& m : down->moves) EXPECT_LT(m.to, 3u);
  ASSERT_TRUE(apply_scale_embedded(h.dir + "/log", *down, h.clk.now_ms()).has_value());
  h.n = reopen(h, 8);
  ASSERT_TRUE(h.n);
  EXPECT_EQ(h.n->get_log().placement().retired, down->retired);
  h.settle();
  for (const tenant_load& t : survey(h).tenants) {
    EXPECT_LT(t.partition, 3u) << t.tenant << " left on a retired partition";
  }
  // A move to a retired partition is refused with the reason.
  h.n = reopen(h, 8);
  ASSERT_TRUE(h.n);
  h.submit(tenant(0), client::move_tenant({tenant(0), "", "to-retired", h.clk.now_ms()}, 5));
  h.settle();
  auto rejected = h.rejections();
  ASSERT_EQ(rejected.size(), 1u);
  EXPECT_NE(rejected[0].reason.find("retired"), std::string::npos) << rejected[0].reason;

  // The customers reply (signals keyed by tenant, hashed with 8 partitions): everything ends.
  reply_all(h);
  h.signal("newcomer", "lead-0", "reply", "{}");
  h.settle();
  ASSERT_EQ(h.exec("newcomer", "lead-0")->status, exec_status::succeeded);
  expect_exactly_once_and_replayable(h);
}

TEST(partition_scale, bad_requests_are_refused_with_the_reason) {
  harness h("scale-bad", harness::options(initial, true));
  start_all(h);
  auto zero = plan(h, 0);
  ASSERT_FALSE(zero.has_value());
  EXPECT_EQ(zero.error().code, errc::invalid);
  auto huge = plan(h, 5000);
  ASSERT_FALSE(huge.has_value());
  EXPECT_NE(huge.error().message.find("1..1000"), std::string::npos) << huge.error().message;
  // The log never shrinks; a running engine holds the directory.
  auto shrink = scale_embedded_log(h.dir + "/log", 2, {});
  ASSERT_FALSE(shrink.has_value());
  EXPECT_NE(shrink.error().message.find("never shrinks"), std::string::npos);
  h.n = reopen(h, initial);
  ASSERT_TRUE(h.n);
  auto busy = scale_embedded_log(h.dir + "/log", 8, {});
  ASSERT_FALSE(busy.has_value());
  EXPECT_EQ(busy.error().code, errc::locked);
  // A log scaled by this version is refused by the partition count it no longer has.
  h.n.reset();
  ASSERT_TRUE(scale_embedded_log(h.dir + "/log", 6, {}).has_value());
  node_options o = harness::options(initial, true);
  o.data_dir = h.dir;
  auto wrong = node::open(o, h.clk);
  ASSERT_FALSE(wrong.has_value());
  EXPECT_NE(wrong.error().message.find("6 partitions"), std::string::npos) << wrong.error().message;
}

}  // namespace
}  // namespace auterity
