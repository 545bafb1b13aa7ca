// Replay equivalence (after Zeebe's ReplayStateRandomizedPropertyTest): random workflows and
// random inputs, signals, cancels, duplicate acks and garbage, driven with a simulated clock;
// then the state is rebuilt from the log through the appliers and compared with the live
// RocksDB state byte for byte, and every hash chain is checked. Prints its seed; rerun one with
// AUTERITY_TEST_SEED=<seed>.

#include <cstdlib>
#include <random>

#include <nlohmann/json.hpp>

#include "processors/definition.h"
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
    for (int i = 0; i < n; ++i) steps.push_back(step(i, id));
    // A switch's branches lead to later steps (a step in one branch of each switch at most).
    for (int i = 0; i < n; ++i) {
      if (steps[i]["kind"] != "switch") continue;
      json cases = json::array();
      json fallback = json::array();
      const int count = uniform(1, 3);
      for (int c = 0; c < count; ++c) {
        const std::string when = chance(0.5) ? fmt::format("input.v % {} == 0", uniform(2, 4))
                                             : fmt::format("input.v > {}", uniform(0, 1000));
        cases.push_back({{"name", fmt::format("c{}", c)}, {"when", when}, {"then", json::array()}});
      }
      for (int j = i + 1; j < n; ++j) {
        const int branch = uniform(0, count + 1);  // count: the default, count + 1: none
        if (branch < count) cases[branch]["then"].push_back(fmt::format("s{}", j));
        if (branch == count) fallback.push_back(fmt::format("s{}", j));
      }
      steps[i]["cases"] = cases;
      if (!fallback.empty() || chance(0.5)) steps[i]["default"] = fallback;
    }
    return json{{"workflow", id}, {"version", version}, {"steps", steps}};
  }

 private:
  json step(int i, const std::string& own) {
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
      const int when = uniform(0, 99);
      if (when < 25) {
        s["when"] = {{"path", fmt::format("steps.{}.status", dep)}, {"equals", "succeeded"}};
      } else if (when < 40) {
        s["when"] =
            fmt::format("steps.{}.status == 'succeeded' or input.v > {}", dep, uniform(0, 1000));
      }
      if (after.size() >= 2 && chance(0.3)) s["join"] = true;
    }
    if (chance(0.3)) input["w"] = "{{ input.v ?? 0 >= 500 ? upper('high') : 'low' }}";
    if (chance(0.5)) s["on_failure"] = "continue";
    const int kind = uniform(0, 99);
    if (kind >= 80 && kind < 84) {
      // A sub-workflow: another workflow of the tenant (wf0..wf3; some are never published,
      // and a publish that would close a cycle of calls is rejected).
      std::string called = own;
      while (called == own) called = fmt::format("wf{}", uniform(0, 3));
      s["kind"] = "workflow";
      s["workflow"] = called;
      s["input"] = input;
      if (chance(0.3))
        s["retry"] = {{"max_attempts", uniform(1, 3)}, {"backoff_ms", uniform(1, 30)}};
      return s;
    }
    if (kind >= 84) {
      // Expressions decided in the orchestrator: compute, and switch (branches set above).
      s.erase("on_failure");
      if (chance(0.3)) s["on_failure"] = "continue";
      if (kind < 89) {
        // Fan-out: 0 to 4 items, each with its own attempts, retries and timeouts.
        s["kind"] = "foreach";
        s["items"] = "filter([input.v, input.v + 1, input.v + 2, 7], x, x % 2 == 0)";
        s["concurrency"] = uniform(1, 3);
        s["on_item_failure"] = chance(0.5) ? "collect" : "fail_fast";
        const int action = uniform(0, 99);
        json body = {{"kind", "task"},
                     {"action", action < 40   ? "transform"
                                : action < 90 ? "flaky"
                                              : "fail"},
                     {"input", {{"item", "{{ item }}"}, {"index", "{{ index }}"}}},
                     {"retry", {{"max_attempts", uniform(1, 3)}, {"backoff_ms", uniform(1, 30)}}}};
        if (action >= 40 && action < 90) body["input"]["succeed_on_attempt"] = "{{ item % 3 + 1 }}";
        if (chance(0.3)) body["timeout_ms"] = uniform(1, 20);
        if (chance(0.2)) {  // a child workflow per item
          std::string called = own;
          while (called == own) called = fmt::format("wf{}", uniform(0, 3));
          body = {{"kind", "workflow"},
                  {"workflow", called},
                  {"input", {{"v", "{{ item }}"}}},
                  {"retry", {{"max_attempts", uniform(1, 2)}, {"backoff_ms", uniform(1, 30)}}}};
        }
        s["do"] = body;
      } else if (kind < 94) {
        s["kind"] = "compute";
        json output = {{"double", "{{ input.v * 2 + 1 }}"},
                       {"label", "{{ format('{}-{}', input.v, execution.id) }}"}};
        if (input.contains("dep")) {
          output["dep"] = fmt::format("{{{{ upper(steps.{}.status) }}}}", std::string(after[0]));
        }
        // Sometimes fails at run time: a string does not divide.
        if (chance(0.1)) output["bad"] = "{{ execution.id / 2 }}";
        s["output"] = output;
      } else {
        s["kind"] = "switch";
      }
      return s;
    }
    if (kind < 40) {
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
    } else if (kind < 52) {
      s["kind"] = "notify";
      input["channel"] = "sms";
      input["to"] = "+15550100000";
      input["body"] = "hello {{input.v}}";
    } else if (kind < 64) {
      s["kind"] = "delay";
      s["delay_ms"] = uniform(1, 50);
      return s;
    } else if (kind < 76) {
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
  uint64_t item_attempts = 0;  // foreach items
  uint64_t children = 0;       // sub-workflow executions
  uint64_t decide_reads = 0;   // store reads while deciding: prefetch missed something
  uint64_t succeeded = 0;
  uint64_t failed = 0;
  uint64_t stale_acks = 0;
  uint64_t deadletters = 0;
  uint64_t rejections = 0;
  uint64_t cycles_rejected = 0;  // publishes that would have closed a cycle of workflow calls
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
      const int versions = w.chance(0.3) ? 2 : 1;
      for (int version = 1; version <= versions; ++version) {
        const std::string text = w.workflow(id, version).dump();
        auto valid = parse_definition(text, "");
        ASSERT_TRUE(valid.has_value()) << valid.error().reason << "\n" << text;
        h.publish(tenant, text);
      }
      flows.emplace_back(tenant, id);
    }
    if (w.chance(0.5)) {
      // A ring of 2 or 3 workflows calling the next: the publish that would close it is
      // rejected, and the open ring's executions fail on the unpublished last call.
      const int size = w.uniform(2, 3);
      for (int i = 0; i < size; ++i) {
        const std::string id = fmt::format("ring{}", i);
        h.publish(tenant,
                  json{{"workflow", id},
                       {"version", 1},
                       {"steps", json::array({{{"id", "next"},
                                               {"kind", "workflow"},
                                               {"workflow", fmt::format("ring{}", (i + 1) % size)},
                                               {"input", {{"v", "{{input.v}}"}}}}})}}
                      .dump());
        flows.emplace_back(tenant, id);
      }
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
    t.decide_reads += h.n->orchestrator_of(p).probe().decide_reads.load();
  }
  for (const auto& r : h.rejections()) {
    t.cycles_rejected += r.code == static_cast<uint16_t>(rejection_code::definition_cycle);
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
    t.item_attempts += std::count(ev.begin(), ev.end(), "ItemScheduled");
  }
  h.n->for_each_execution([&](const execution_state& e) {
    t.succeeded += e.status == exec_status::succeeded;
    t.failed += e.status == exec_status::failed;
    t.children += !e.parent.empty();
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
      "{} foreach item attempts, {} sub-workflows, {} publishes refused for a cycle of calls, "
      "{} stale/duplicate acks, {} rejections, {} deadletters, {} decide reads\n",
      t.events, t.succeeded, t.failed, t.retries, t.timeouts, t.item_attempts, t.children,
      t.cycles_rejected, t.stale_acks, t.rejections, t.deadletters, t.decide_reads);
  // The workload must actually reach the interesting paths, or the comparison proves little.
  if (seeds > 1) {
    EXPECT_GT(t.succeeded, 0u);
    EXPECT_GT(t.failed, 0u);
    EXPECT_GT(t.retries, 0u);
    EXPECT_GT(t.timeouts, 0u);
    EXPECT_GT(t.stale_acks, 0u);
    EXPECT_GT(t.children, 0u);
    EXPECT_GT(t.cycles_rejected, 0u);
  }
  EXPECT_EQ(t.decide_reads, 0u) << "prefetch left something (a parent, a child, a called "
                                   "definition) to be read while deciding";
}

}  // namespace
}  // namespace auterity
