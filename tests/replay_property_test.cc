// Replay equivalence (after Zeebe's ReplayStateRandomizedPropertyTest): random workflows and
// random inputs, signals, cancels, duplicate acks and garbage, driven with a simulated clock;
// then the state is rebuilt from the log through the appliers and compared with the live
// RocksDB state byte for byte, and every hash chain is checked. Prints its seed; rerun one with
// AUTERITY_TEST_SEED=<seed>.

#include <cstdlib>
#include <random>

#include <nlohmann/json.hpp>

#include "processors/tests/harness.h"
#include "replay/verify.h"

namespace auterity {
namespace {

using json = nlohmann::json;
using testing::harness;

class workload {
 public:
  explicit workload(uint64_t seed) : _rng(seed) {}

  int uniform(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(_rng); }
  bool chance(double p) { return std::bernoulli_distribution(p)(_rng); }

  json workflow(const std::string& id, int version) {
    const int n = uniform(1, 7);
    json steps = json::array();
    for (int i = 0; i < n; ++i) steps.push_back(step(i));
    return json{{"workflow", id}, {"version", version}, {"steps", steps}};
  }

 private:
  json step(int i) {
    json s = {{"id", fmt::format("s{}", i)}};
    json after = json::array();
    for (int j = 0; j < i; ++j) {
      if (chance(0.35)) after.push_back(fmt::format("s{}", j));
    }
    if (!after.empty()) s["after"] = after;
    json input = {{"v", "{{input.v}}"}};
    if (!after.empty()) {
      const std::string dep = after[uniform(0, static_cast<int>(after.size()) - 1)];
      input["dep"] = fmt::format("{{{{steps.{}.status}}}}", dep);
      if (chance(0.25))
        s["when"] = {{"path", fmt::format("steps.{}.status", dep)}, {"equals", "succeeded"}};
    }
    if (chance(0.5)) s["on_failure"] = "continue";
    const int kind = uniform(0, 99);
    if (kind < 45) {
      s["kind"] = "task";
      const int action = uniform(0, 99);
      if (action < 50) {
        s["action"] = "transform";
      } else if (action < 85) {
        s["action"] = "flaky";
        input["succeed_on_attempt"] = uniform(1, 4);
      } else {
        s["action"] = "fail";
        input["error"] = "boom";
      }
      s["retry"] = {{"max_attempts", uniform(1, 3)}, {"backoff_ms", uniform(1, 30)}};
      if (chance(0.3)) s["timeout_ms"] = uniform(1, 20);
    } else if (kind < 60) {
      s["kind"] = "notify";
      input["channel"] = "sms";
      input["to"] = "+15550100000";
      input["body"] = "hello {{input.v}}";
    } else if (kind < 75) {
      s["kind"] = "delay";
      s["delay_ms"] = uniform(1, 50);
      return s;
    } else if (kind < 90) {
      s["kind"] = "wait_signal";
      s["signal"] = fmt::format("sig{}", uniform(0, 2));
      if (chance(0.7)) s["timeout_ms"] = uniform(5, 100);
      return s;
    } else {
      s["kind"] = "ai";
      input["prompt"] = "draft a reply to {{input.v}}";
    }
    s["input"] = input;
    return s;
  }

  std::mt19937_64 _rng;
};

struct totals {
  uint64_t events = 0;
  uint64_t retries = 0;
  uint64_t timeouts = 0;
  uint64_t succeeded = 0;
  uint64_t failed = 0;
  uint64_t stale_acks = 0;
  uint64_t deadletters = 0;
  uint64_t rejections = 0;
};

void run_seed(uint64_t seed, totals& t) {
  SCOPED_TRACE(fmt::format("seed {} (rerun with AUTERITY_TEST_SEED={})", seed, seed));
  workload w(seed);
  harness h(fmt::format("prop-{}", seed), 3);
  const std::vector<std::string> tenants = {"acme", "bayside", "crestview"};
  std::vector<std::pair<std::string, std::string>> flows;  // tenant, workflow
  for (const std::string& tenant : tenants) {
    const int count = w.uniform(1, 3);
    for (int i = 0; i < count; ++i) {
      const std::string id = fmt::format("wf{}", i);
      h.publish(tenant, w.workflow(id, 1).dump());
      if (w.chance(0.3)) h.publish(tenant, w.workflow(id, 2).dump());
      flows.emplace_back(tenant, id);
    }
  }
  std::vector<std::pair<std::string, std::string>> started;  // tenant, execution
  log& l = h.n->get_log();
  auto round = [&](bool inject) {
    if (inject && w.chance(0.3)) {
      const auto& [tenant, id] = flows[w.uniform(0, static_cast<int>(flows.size()) - 1)];
      const std::string exec = fmt::format("x{}", started.size());
      h.start(tenant, exec, id, json{{"v", w.uniform(0, 1000)}}.dump());
      started.emplace_back(tenant, exec);
    }
    if (inject && !started.empty() && w.chance(0.2)) {
      const auto& [tenant, exec] = started[w.uniform(0, static_cast<int>(started.size()) - 1)];
      h.signal(tenant, exec, fmt::format("sig{}", w.uniform(0, 2)), R"({"text":"hi"})");
    }
    if (inject && !started.empty() && w.chance(0.02)) {
      const auto& [tenant, exec] = started[w.uniform(0, static_cast<int>(started.size()) - 1)];
      h.submit(tenant, client::cancel({tenant, exec, "cancel", h.clk.now_ms()}, "random"));
    }
    if (inject && w.chance(0.08)) {  // a redelivered ack
      const uint32_t p = w.uniform(0, 2);
      const uint64_t end = *l.end_offset(stream::acks, p);
      if (end > 0) {
        std::vector<record> recs;
        ASSERT_TRUE(
            l.read(stream::acks, p, w.uniform(0, static_cast<int>(end) - 1), 1, 1 << 20, recs));
        commit_batch b;
        b.add(stream::acks, recs[0].key, recs[0].value);
        ASSERT_TRUE(l.commit(p, b).has_value());
      }
    }
    if (inject && w.chance(0.02)) {  // garbage on ingress
      commit_batch b;
      b.add(stream::ingress, "junk", std::string(static_cast<size_t>(w.uniform(0, 40)), '\x7f'));
      ASSERT_TRUE(l.commit(w.uniform(0, 2), b).has_value());
    }
    h.clk.advance(w.uniform(0, 15));
    auto r = h.n->step(/*workers=*/!inject || w.chance(0.6));  // slow workers: timeouts, late acks
    ASSERT_TRUE(r.has_value()) << r.error().message;
  };
  for (int i = 0; i < 400; ++i) round(true);
  for (int i = 0; i < 200 && !h.n->summary().quiescent; ++i) round(false);

  for (uint32_t p = 0; p < 3; ++p) {
    auto diffs = compare_with_replay(l, p, h.n->partition(p).store(), h.dir + "/rebuilt");
    ASSERT_TRUE(diffs.has_value()) << diffs.error().message;
    EXPECT_TRUE(diffs->empty()) << "partition " << p << ": state differs from replay: "
                                << (diffs->empty() ? "" : diffs->front()) << " (+" << diffs->size()
                                << " differences)";
    auto chains = verify_chains(l, p);
    ASSERT_TRUE(chains.has_value());
    EXPECT_TRUE(chains->problems.empty()) << chains->problems.front();
    t.events += chains->events;
    t.stale_acks += h.n->orchestrator_of(p).probe().stale_acks.load();
    t.deadletters += h.n->orchestrator_of(p).probe().deadletters.load();
    t.rejections += h.n->orchestrator_of(p).probe().rejections.load();
  }
  if (std::getenv("AUTERITY_DEBUG")) {
    std::map<std::string, int> reasons;
    for (auto& r : h.rejections()) reasons[r.reason.substr(0, 60) + " " + r.execution]++;
    for (auto& [r, c] : reasons) fmt::print("  {} x {}\n", c, r);
  }
  for (const auto& [tenant, exec] : started) {
    auto ev = h.events_of(exec);
    t.retries += std::count(ev.begin(), ev.end(), "StepRetryScheduled");
    t.timeouts += std::count(ev.begin(), ev.end(), "StepTimedOut");
  }
  h.n->for_each_execution([&](const execution_state& e) {
    t.succeeded += e.status == exec_status::succeeded;
    t.failed += e.status == exec_status::failed;
  });
}

TEST(replay_property, rebuilt_state_equals_live_state_byte_for_byte) {
  const char* env = std::getenv("AUTERITY_TEST_SEED");
  const uint64_t base = env ? std::strtoull(env, nullptr, 10) : std::random_device{}();
  const int seeds = env ? 1 : 12;
  fmt::print("replay_property: base seed {} ({} seeds; rerun one with AUTERITY_TEST_SEED)\n", base,
             seeds);
  totals t;
  for (int i = 0; i < seeds; ++i) {
    run_seed(base + i, t);
    if (::testing::Test::HasFailure()) return;
  }
  fmt::print(
      "replay_property: {} events, {} succeeded, {} failed, {} retries, {} timeouts, "
      "{} stale/duplicate acks, {} rejections, {} deadletters\n",
      t.events, t.succeeded, t.failed, t.retries, t.timeouts, t.stale_acks, t.rejections,
      t.deadletters);
  // The workload must actually reach the interesting paths, or the comparison proves little.
  if (seeds > 1) {
    EXPECT_GT(t.succeeded, 0u);
    EXPECT_GT(t.failed, 0u);
    EXPECT_GT(t.retries, 0u);
    EXPECT_GT(t.timeouts, 0u);
    EXPECT_GT(t.stale_acks, 0u);
  }
}

}  // namespace
}  // namespace auterity
