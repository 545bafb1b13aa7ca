// Workflow semantics as a user sees them: what runs, in which order, with which input, and how
// failures, retries, timeouts, signals, delays and cancels end up in the history.

#include <cstdlib>
#include <map>
#include <random>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "processors/limits.h"
#include "processors/rejection.h"
#include "processors/tenant_policy.h"
#include "processors/tests/harness.h"
#include "processors/tests/policy_fixtures.h"
#include "processors/tests/replay_check.h"
#include "replay/timeline.h"
#include "replay/timeline_export.h"
#include "replay/verify.h"

namespace auterity {
namespace {

// The seed of a randomized test: AUTERITY_TEST_SEED reruns one, else a fresh one.
uint64_t test_seed() {
  const char* env_seed = std::getenv("AUTERITY_TEST_SEED");
  return env_seed ? std::strtoull(env_seed, nullptr, 10) : std::random_device{}();
}

using testing::ai_candidates;
using testing::expect_replay_rebuilds_the_state;
using testing::harness;
using json = nlohmann::json;

constexpr const char* tenant = "acme";

std::string workflow(std::string_view id, const json& steps) {
  return json{{"workflow", id}, {"version", 1}, {"steps", steps}}.dump();
}

size_t count(const std::vector<std::string>& v, std::string_view x) {
  return std::count(v.begin(), v.end(), x);
}

std::vector<const fbs::Envelope*> commands(harness& h, stream s, std::vector<record>& keep) {
  keep = h.read_all(s);
  std::vector<const fbs::Envelope*> out;
  for (const record& r : keep) out.push_back(decode_envelope(r.value));
  return out;
}

TEST(orchestrator, independent_steps_are_scheduled_together_and_outputs_feed_inputs) {
  harness h("parallel", 1, false);
  h.publish(tenant, workflow("wf", json::array({
                                       {{"id", "a"},
                                        {"kind", "task"},
                                        {"action", "transform"},
                                        {"input", {{"x", "{{input.x}}"}}}},
                                       {{"id", "b"}, {"kind", "task"}, {"action", "transform"}},
                                       {{"id", "c"},
                                        {"kind", "task"},
                                        {"action", "transform"},
                                        {"after", {"a", "b"}},
                                        {"input", {{"sum", "a={{steps.a.output.x}}"}}}},
                                   })));
  h.start(tenant, "e1", "wf", R"({"x": 41})");
  h.settle();
  std::vector<record> keep;
  auto cmds = commands(h, stream::commands_step, keep);
  ASSERT_EQ(cmds.size(), 2u) << "a and b run in parallel; c waits for both";
  EXPECT_EQ(sv(cmds[0]->payload_as_RunStep()->input_json()), R"({"x":41})");

  // Acknowledge a and b as a worker would; c then gets a's output in its input.
  log& l = h.n->get_log();
  for (const fbs::Envelope* c : cmds) {
    ack_result ok;
    ok.output_json = sv(c->payload_as_RunStep()->input_json());
    commit_batch b;
    b.add(stream::acks, tenant, make_ack(*c, ok, h.clk.now_ms()));
    ASSERT_TRUE(l.commit(0, b).has_value());
  }
  h.settle();
  cmds = commands(h, stream::commands_step, keep);
  ASSERT_EQ(cmds.size(), 3u);
  EXPECT_EQ(sv(cmds[2]->payload_as_RunStep()->step()), "c");
  EXPECT_EQ(sv(cmds[2]->payload_as_RunStep()->input_json()), R"({"sum":"a=41"})");
}

TEST(orchestrator, retries_back_off_exponentially_through_durable_timers) {
  harness h("retry", 1);
  h.publish(
      tenant,
      workflow("wf",
               json::array(
                   {{{"id", "f"},
                     {"kind", "task"},
                     {"action", "flaky"},
                     {"input", {{"succeed_on_attempt", 3}}},
                     {"retry",
                      {{"max_attempts", 3}, {"backoff_ms", 100}, {"backoff_multiplier", 2.0}}}}})));
  h.start(tenant, "e1", "wf");
  h.settle();
  EXPECT_EQ(h.exec(tenant, "e1")->steps[0].status, step_status::retry_wait);
  h.run_for(99, 1);
  EXPECT_EQ(h.exec(tenant, "e1")->steps[0].attempt, 1u) << "first retry is due after 100 ms";
  h.run_for(1, 1);
  EXPECT_EQ(h.exec(tenant, "e1")->steps[0].attempt, 2u);
  h.run_for(199, 1);
  EXPECT_EQ(h.exec(tenant, "e1")->steps[0].attempt, 2u) << "second retry waits 200 ms";
  h.run_for(1, 1);
  auto e = h.exec(tenant, "e1");
  EXPECT_EQ(e->status, exec_status::succeeded);
  EXPECT_EQ(count(h.events_of("e1"), "StepRetryScheduled"), 2u);
}

TEST(orchestrator, retries_exhausted_fail_the_execution_with_the_reason) {
  harness h("exhausted", 1);
  h.publish(
      tenant,
      workflow(
          "wf",
          json::array(
              {{{"id", "f"},
                {"kind", "task"},
                {"action", "flaky"},
                {"input", {{"succeed_on_attempt", 5}}},
                {"retry", {{"max_attempts", 2}, {"backoff_ms", 10}}}},
               {{"id", "after"}, {"kind", "task"}, {"action", "transform"}, {"after", {"f"}}}})));
  h.start(tenant, "e1", "wf");
  h.run_for(100);
  auto e = h.exec(tenant, "e1");
  EXPECT_EQ(e->status, exec_status::failed);
  EXPECT_NE(e->result.find("step 'f' failed"), std::string::npos) << e->result;
  EXPECT_NE(e->result.find("after 2 attempts"), std::string::npos) << e->result;
  EXPECT_EQ(e->steps[1].status, step_status::cancelled) << "dependents never ran";
}

TEST(orchestrator, on_failure_continue_lets_dependents_branch_on_status) {
  harness h("continue", 1);
  h.publish(tenant,
            workflow("wf", json::array({
                               {{"id", "ai"},
                                {"kind", "ai"},
                                {"on_failure", "continue"},
                                {"input", {{"prompt", "hi"}}}},
                               {{"id", "fallback"},
                                {"kind", "task"},
                                {"action", "transform"},
                                {"after", {"ai"}},
                                {"when", {{"path", "steps.ai.status"}, {"equals", "failed"}}},
                                {"input", {{"text", "template reply"}}}},
                               {{"id", "use"},
                                {"kind", "task"},
                                {"action", "transform"},
                                {"after", {"ai", "fallback"}},
                                {"input",
                                 {{"text",
                                   "{{steps.ai.output.text ?? "
                                   "steps.fallback.output.text}}"}}}},
                           })));
  h.start(tenant, "e1", "wf");
  h.settle();
  auto e = h.exec(tenant, "e1");
  ASSERT_EQ(e->status, exec_status::succeeded) << e->result;
  EXPECT_EQ(e->steps[0].status, step_status::failed);
  // The unconfigured AI worker says so ("no AI provider is configured ...").
  EXPECT_NE(e->steps[0].error.find("no AI"), std::string::npos) << e->steps[0].error;
  EXPECT_NE(e->steps[0].error.find("configured"), std::string::npos) << e->steps[0].error;
  EXPECT_EQ(json::parse(e->steps[2].output_json)["text"], "template reply");
}

TEST(orchestrator, step_timeout_retries_and_a_late_ack_is_ignored) {
  harness h("timeout", 1, false);
  h.publish(tenant,
            workflow("wf", json::array({{{"id", "t"},
                                         {"kind", "task"},
                                         {"action", "transform"},
                                         {"timeout_ms", 50},
                                         {"retry", {{"max_attempts", 2}, {"backoff_ms", 10}}}}})));
  h.start(tenant, "e1", "wf");
  h.settle();
  h.run_for(70);  // attempt 1 times out at 50, attempt 2 starts at 60
  auto e = h.exec(tenant, "e1");
  ASSERT_EQ(e->steps[0].attempt, 2u);
  std::vector<record> keep;
  auto cmds = commands(h, stream::commands_step, keep);
  ASSERT_EQ(cmds.size(), 2u);
  // The slow worker finally answers attempt 1: stale, ignored. Attempt 2's answer counts.
  log& l = h.n->get_log();
  for (const fbs::Envelope* c : cmds) {
    commit_batch b;
    ack_result ok;
    ok.output_json = fmt::format(R"({{"attempt":{}}})", c->payload_as_RunStep()->attempt());
    b.add(stream::acks, tenant, make_ack(*c, ok, h.clk.now_ms()));
    ASSERT_TRUE(l.commit(0, b).has_value());
  }
  h.settle();
  e = h.exec(tenant, "e1");
  EXPECT_EQ(e->status, exec_status::succeeded);
  EXPECT_EQ(json::parse(e->steps[0].output_json)["attempt"], 2);
  EXPECT_EQ(h.n->orchestrator_of(0).probe().stale_acks.load(), 1u);
  auto ev = h.events_of("e1");
  EXPECT_EQ(count(ev, "StepTimedOut"), 1u);
  EXPECT_EQ(count(ev, "StepSucceeded"), 1u);
}

TEST(orchestrator, duplicate_acks_complete_a_step_once) {
  harness h("dupack", 1, false);
  h.publish(
      tenant,
      workflow("wf",
               json::array({{{"id", "t"}, {"kind", "task"}, {"action", "x"}},
                            {{"id", "u"}, {"kind", "task"}, {"action", "x"}, {"after", {"t"}}}})));
  h.start(tenant, "e1", "wf");
  h.settle();
  std::vector<record> keep;
  auto cmds = commands(h, stream::commands_step, keep);
  ASSERT_EQ(cmds.size(), 1u);
  log& l = h.n->get_log();
  commit_batch b;
  for (int i = 0; i < 3; ++i) b.add(stream::acks, tenant, make_ack(*cmds[0], {}, h.clk.now_ms()));
  ASSERT_TRUE(l.commit(0, b).has_value());
  h.settle();
  cmds = commands(h, stream::commands_step, keep);
  EXPECT_EQ(cmds.size(), 2u) << "step u is commanded once, not three times";
  EXPECT_EQ(count(h.events_of("e1"), "StepSucceeded"), 1u);
  EXPECT_EQ(h.n->orchestrator_of(0).probe().stale_acks.load(), 2u);
}

TEST(orchestrator, wait_for_signal_succeeds_with_the_payload_or_times_out) {
  harness h("signal", 1);
  h.publish(
      tenant,
      workflow("wf",
               json::array({{{"id", "w"},
                             {"kind", "wait_signal"},
                             {"signal", "customer_replied"},
                             {"timeout_ms", 1000},
                             {"on_failure", "continue"}},
                            {{"id", "followup"},
                             {"kind", "delay"},
                             {"delay_ms", 200},
                             {"after", {"w"}},
                             {"when", {{"path", "steps.w.status"}, {"equals", "timed_out"}}}}})));
  h.start(tenant, "replies", "wf");
  h.start(tenant, "silent", "wf");
  h.settle();
  h.signal(tenant, "replies", "customer_replied", R"({"text":"yes"})");
  h.run_for(500);
  auto r = h.exec(tenant, "replies");
  EXPECT_EQ(r->status, exec_status::succeeded);
  EXPECT_EQ(r->steps[0].output_json, R"({"text":"yes"})");
  EXPECT_EQ(r->steps[1].status, step_status::skipped);
  EXPECT_EQ(h.exec(tenant, "silent")->status, exec_status::running);
  h.run_for(510);  // timeout at 1000, then the 200 ms follow-up delay
  EXPECT_EQ(h.exec(tenant, "silent")->steps[0].status, step_status::timed_out);
  EXPECT_EQ(h.exec(tenant, "silent")->steps[1].status, step_status::delaying);
  h.run_for(200);
  EXPECT_EQ(h.exec(tenant, "silent")->status, exec_status::succeeded);
}

TEST(orchestrator, a_signal_that_arrives_early_is_kept_for_the_waiting_step) {
  harness h("early", 1);
  h.publish(
      tenant,
      workflow("wf",
               json::array(
                   {{{"id", "d"}, {"kind", "delay"}, {"delay_ms", 100}},
                    {{"id", "w"}, {"kind", "wait_signal"}, {"signal", "go"}, {"after", {"d"}}}})));
  h.start(tenant, "e1", "wf");
  h.settle();
  h.signal(tenant, "e1", "go", R"({"n":1})");
  h.run_for(150);
  auto e = h.exec(tenant, "e1");
  EXPECT_EQ(e->status, exec_status::succeeded);
  EXPECT_EQ(e->steps[1].output_json, R"({"n":1})");
  EXPECT_TRUE(e->signals.empty());
}

TEST(orchestrator, cancel_stops_the_execution_and_later_acks_are_stale) {
  harness h("cancel", 1, false);
  h.publish(tenant,
            workflow("wf", json::array({{{"id", "t"}, {"kind", "task"}, {"action", "x"}}})));
  h.start(tenant, "e1", "wf");
  h.settle();
  h.submit(tenant,
           client::cancel({tenant, "e1", "c1", h.clk.now_ms()}, "customer bought elsewhere"));
  h.settle();
  auto e = h.exec(tenant, "e1");
  EXPECT_EQ(e->status, exec_status::cancelled);
  EXPECT_EQ(e->result, "customer bought elsewhere");
  EXPECT_EQ(e->steps[0].status, step_status::cancelled);
  std::vector<record> keep;
  auto cmds = commands(h, stream::commands_step, keep);
  commit_batch b;
  b.add(stream::acks, tenant, make_ack(*cmds[0], {}, h.clk.now_ms()));
  ASSERT_TRUE(h.n->get_log().commit(0, b).has_value());
  h.settle();
  EXPECT_EQ(h.exec(tenant, "e1")->status, exec_status::cancelled);
  EXPECT_EQ(h.n->orchestrator_of(0).probe().stale_acks.load(), 1u);
  // Cancelling again is a rejection with a reason, not a silent no-op.
  h.submit(tenant, client::cancel({tenant, "e1", "c2", h.clk.now_ms()}, "again"));
  h.settle();
  auto rej = h.rejections();
  ASSERT_EQ(rej.size(), 1u);
  EXPECT_EQ(rej[0].code, static_cast<uint16_t>(rejection_code::execution_finished));
}

TEST(orchestrator, parameters_make_one_template_serve_two_dealerships) {
  harness h("params", 2);
  const std::string def =
      json{{"workflow", "greet"},
           {"version", 1},
           {"params", {{"dealer", "X"}}},
           {"steps", json::array({{{"id", "t"},
                                   {"kind", "task"},
                                   {"action", "transform"},
                                   {"input", {{"text", "Welcome to {{params.dealer}}"}}}}})}}
          .dump();
  h.publish("acme", def, R"({"dealer":"Acme Motors"})");
  h.publish("bayside", def, R"({"dealer":"Bayside Auto"})");
  h.start("acme", "e1", "greet");
  h.start("bayside", "e1", "greet");
  h.settle();
  EXPECT_EQ(h.exec("acme", "e1")->steps[0].output_json, R"({"text":"Welcome to Acme Motors"})");
  EXPECT_EQ(h.exec("bayside", "e1")->steps[0].output_json, R"({"text":"Welcome to Bayside Auto"})");
}

TEST(orchestrator, history_limit_fails_the_execution_instead_of_growing_forever) {
  harness h("limit", 1);
  // A wait step that keeps receiving unmatched signals grows the history by one event each.
  h.publish(
      tenant,
      workflow("wf", json::array({{{"id", "w"}, {"kind", "wait_signal"}, {"signal", "never"}}})));
  h.start(tenant, "e1", "wf");
  h.settle();
  for (uint32_t i = 0; i < limits::events_per_execution_max + 10; ++i) {
    h.signal(tenant, "e1", "noise");
  }
  h.settle(100000);
  auto e = h.exec(tenant, "e1");
  EXPECT_EQ(e->status, exec_status::failed);
  EXPECT_NE(e->result.find("events_per_execution_max"), std::string::npos) << e->result;
  EXPECT_EQ(e->event_count, limits::events_per_execution_max);
  // Signals after the end are rejected with a reason.
  auto rej = h.rejections();
  ASSERT_FALSE(rej.empty());
  EXPECT_EQ(rej.back().code, static_cast<uint16_t>(rejection_code::execution_finished));
}

TEST(orchestrator, restart_recovers_timers_and_running_executions) {
  std::string dir;
  {
    harness h("restart", 1);
    h.publish(
        tenant,
        workflow(
            "wf",
            json::array(
                {{{"id", "d"}, {"kind", "delay"}, {"delay_ms", 500}},
                 {{"id", "t"}, {"kind", "task"}, {"action", "transform"}, {"after", {"d"}}}})));
    h.start(tenant, "e1", "wf");
    h.settle();
    EXPECT_EQ(h.exec(tenant, "e1")->steps[0].status, step_status::delaying);
    // Keep the directory: move it aside before the harness removes it.
    dir = h.dir + "-kept";
    h.n.reset();
    std::filesystem::rename(h.dir, dir);
  }
  manual_clock clk(1'700'000'000'000 + 1000);
  node_options o;
  o.data_dir = dir;
  o.partitions = 1;
  o.fsync = false;
  auto n = node::open(o, clk);
  ASSERT_TRUE(n.has_value()) << n.error().message;
  ASSERT_TRUE((*n)->recover().has_value());
  for (int i = 0; i < 10; ++i) ASSERT_TRUE((*n)->step().has_value());
  EXPECT_EQ((*n)->execution(tenant, "e1")->status, exec_status::succeeded)
      << "the durable delay timer fired after the restart";
  n->reset();
  std::filesystem::remove_all(dir);
}

// ------------------------------------------------------------------------- tenant policy

// 2023-11-14T22:13:20Z, the harness's start time.
constexpr int64_t t0 = 1'700'000'000'000;
constexpr int64_t day_ms = 86'400'000;

json ai_policy_json(int64_t day_budget = 5'000'000, std::string_view when = "downgrade") {
  return {{"ai",
           {{"candidates", ai_candidates()},
            {"budget",
             {{"day_micros", day_budget}, {"month_micros", 100'000'000}, {"when_exhausted", when}}},
            {"estimate_output_tokens", 400}}}};
}

void publish_policy(harness& h, const json& policy) {
  h.submit(tenant, client::publish_policy({tenant, "", "policy", h.clk.now_ms()}, policy.dump()));
  h.settle();
}

// The events of one execution as envelopes (pointing into `keep`).
std::vector<const fbs::Envelope*> events(harness& h, std::string_view id,
                                         std::vector<record>& keep) {
  keep = h.read_all(stream::executions);
  std::vector<const fbs::Envelope*> out;
  for (const record& r : keep) {
    const fbs::Envelope* e = decode_envelope(r.value);
    if (e && e->kind() == fbs::RecordKind::Event && sv(e->execution_id()) == id) out.push_back(e);
  }
  return out;
}

template <typename T>
std::vector<const T*> payloads(const std::vector<const fbs::Envelope*>& evs) {
  std::vector<const T*> out;
  for (const fbs::Envelope* e : evs) {
    if (auto p = e->payload_as<T>()) out.push_back(p);
  }
  return out;
}

// Acknowledges a command as a worker would, with AI usage if given.
void ack(harness& h, const fbs::Envelope& cmd, ack_result r) {
  commit_batch b;
  b.add(stream::acks, tenant, make_ack(cmd, r, h.clk.now_ms()));
  ASSERT_TRUE(h.n->get_log().commit(0, b).has_value());
  h.settle();
}

ack_result ai_answer(uint32_t in, uint32_t out, std::string model = "") {
  ack_result r;
  r.output_json = R"({"text":"Hi!"})";
  r.model = std::move(model);
  r.input_tokens = in;
  r.output_tokens = out;
  return r;
}

ack_result failure(fbs::AckStatus status, std::string error, uint32_t in = 0) {
  ack_result r;
  r.status = status;
  r.error = std::move(error);
  r.input_tokens = in;
  return r;
}

// Prefetch loaded everything the decisions needed: no state store read while deciding.
void expect_no_decide_reads(harness& h) {
  for (uint32_t p = 0; p < h.n->get_log().partition_count(); ++p) {
    EXPECT_EQ(h.n->orchestrator_of(p).probe().decide_reads.load(), 0u) << "partition " << p;
  }
}

std::string ai_workflow(std::string_view tier, const json& extra = json::object()) {
  json step = {{"id", "draft"},
               {"kind", "ai"},
               {"tier", tier},
               {"input", {{"prompt", std::string(400, 'x')}, {"max_tokens", 200}}}};
  step.update(extra);
  return workflow("wf", json::array({step}));
}

TEST(orchestrator_policy, ai_routing_records_the_choice_the_command_and_the_exact_cost) {
  harness h("ai-route", 1, false);
  publish_policy(h, ai_policy_json());
  h.publish(tenant, ai_workflow("standard"));
  h.start(tenant, "e1", "wf");
  h.settle();

  std::vector<record> keep, keep_cmds;
  auto routed = payloads<fbs::AiRouted>(events(h, "e1", keep));
  ASSERT_EQ(routed.size(), 1u);
  EXPECT_EQ(sv(routed[0]->provider()), "openai");
  EXPECT_EQ(sv(routed[0]->model()), "gpt-4o-mini");
  EXPECT_EQ(sv(routed[0]->tier_requested()), "standard");
  EXPECT_EQ(sv(routed[0]->tier_chosen()), "standard");
  EXPECT_EQ(sv(routed[0]->reason()), "cheapest of 2 candidates meeting standard");
  EXPECT_EQ(routed[0]->estimated_input_tokens(), 100u);   // 400 bytes / 4
  EXPECT_EQ(routed[0]->estimated_output_tokens(), 200u);  // max_tokens
  EXPECT_EQ(routed[0]->estimated_cost_micros(), 15 + 120);
  EXPECT_EQ(routed[0]->day_budget_micros(), 5'000'000);
  EXPECT_EQ(routed[0]->candidates_considered(), 2u);
  EXPECT_EQ(h.events_of("e1"),
            (std::vector<std::string>{"ExecutionStarted", "StepScheduled", "AiRouted"}));
  for (const record& r : keep) {
    if (decode_envelope(r.value)->payload_type() != fbs::Payload::AiRouted) continue;
    EXPECT_EQ(describe_record(r.value),
              "step draft attempt 1 routed to openai/gpt-4o-mini (standard for standard): "
              "cheapest of 2 candidates meeting standard; estimate 100 in + 200 out tokens = "
              "$0.000135; spent today $0.000000 of $5.000000, this month $0.000000 of "
              "$100.000000");
  }

  auto cmds = commands(h, stream::commands_ai, keep_cmds);
  ASSERT_EQ(cmds.size(), 1u);
  auto call = cmds[0]->payload_as_CallAi();
  EXPECT_EQ(sv(call->provider()), "openai");
  EXPECT_EQ(sv(call->model()), "gpt-4o-mini");
  EXPECT_EQ(call->deadline_ms(), t0 + 15000) << "latency_ms_max bounds the attempt";

  // The provider reports a dated model name; the cost uses the routed candidate's prices:
  // ceil(1234 * 150 / 1000) + ceil(567 * 600 / 1000) = 186 + 341.
  ack(h, *cmds[0], ai_answer(1234, 567, "gpt-4o-mini-2024-07-18"));
  auto evs = events(h, "e1", keep);
  auto usage = payloads<fbs::AiUsageRecorded>(evs);
  ASSERT_EQ(usage.size(), 1u);
  EXPECT_EQ(usage[0]->cost_micros(), 527);
  EXPECT_EQ(sv(usage[0]->provider()), "openai");
  EXPECT_EQ(sv(usage[0]->model()), "gpt-4o-mini");
  EXPECT_EQ(sv(usage[0]->reported_model()), "gpt-4o-mini-2024-07-18");
  EXPECT_EQ(sv(usage[0]->day()), "2023-11-14");
  EXPECT_EQ(sv(usage[0]->month()), "2023-11");
  EXPECT_EQ(h.events_of("e1"),
            (std::vector<std::string>{"ExecutionStarted", "StepScheduled", "AiRouted",
                                      "AiUsageRecorded", "StepSucceeded", "ExecutionSucceeded"}));
  expect_no_decide_reads(h);
  expect_replay_rebuilds_the_state(h);
}

TEST(orchestrator_policy, spend_accumulates_across_executions_and_a_new_day_starts_at_zero) {
  harness h("ai-spend", 1, false);
  publish_policy(h, ai_policy_json());
  h.publish(tenant, ai_workflow("standard"));
  std::vector<record> keep, keep_cmds;
  auto run = [&](const char* id) {
    h.start(tenant, id, "wf");
    h.settle();
    auto cmds = commands(h, stream::commands_ai, keep_cmds);
    ack(h, *cmds.back(), ai_answer(1234, 567));
    return payloads<fbs::AiRouted>(events(h, id, keep)).at(0)->day_spent_micros();
  };
  EXPECT_EQ(run("e1"), 0);
  EXPECT_EQ(run("e2"), 527);
  EXPECT_EQ(run("e3"), 1054);
  h.clk.advance(day_ms);
  h.start(tenant, "e4", "wf");
  h.settle();
  auto routed = payloads<fbs::AiRouted>(events(h, "e4", keep)).at(0);
  EXPECT_EQ(routed->day_spent_micros(), 0) << "a new UTC day";
  EXPECT_EQ(routed->month_spent_micros(), 1581) << "the same month";
  expect_no_decide_reads(h);
  expect_replay_rebuilds_the_state(h);
}

// The stored value of a state key of partition 0, nullopt when absent.
// The tenant's dedup hashes in partition 0's state (keys T<tenant>\0X...).
size_t dedup_entries_of(harness& h) {
  size_t n = 0;
  auto scanned = h.n->partition(0).store().scan_prefix(keys::tenant_prefix(tenant) + 'X',
                                                       [&](std::string_view, std::string_view) {
                                                         ++n;
                                                         return true;
                                                       });
  EXPECT_TRUE(scanned.has_value());
  return n;
}

std::optional<std::string> stored(harness& h, const std::string& key) {
  auto v = h.n->partition(0).store().get(key);
  EXPECT_TRUE(v.has_value());
  return v ? *v : std::nullopt;
}

TEST(orchestrator_policy, spend_of_days_and_months_past_retention_is_pruned_by_later_usage) {
  harness h("ai-retention", 1, false);
  publish_policy(h, ai_policy_json());
  h.publish(tenant, ai_workflow("standard"));
  std::vector<record> keep_cmds;
  int n = 0;
  auto use = [&] {  // one execution with usage at the current time: 527 micro-USD
    const std::string id = fmt::format("e{}", ++n);
    h.start(tenant, id, "wf");
    h.settle();
    ack(h, *commands(h, stream::commands_ai, keep_cmds).back(), ai_answer(1234, 567));
    EXPECT_EQ(h.exec(tenant, id)->status, exec_status::succeeded);
  };
  auto day = [&](int64_t after_days) { return utc_day(t0 + after_days * day_ms); };
  use();  // 2023-11-14
  h.clk.advance(2 * day_ms);
  use();  // 2023-11-16
  ASSERT_TRUE(stored(h, keys::ai_spend_day(tenant, day(0))).has_value());
  // 63 days after the first: days before (this day - spend_days_kept) go, the rest stay.
  h.clk.advance((retention::spend_days_kept + 1 - 2) * day_ms);
  ASSERT_EQ(retention::spend_days_kept + 1, 63) << "the dates below assume 62 days";
  use();  // 2024-01-16
  EXPECT_FALSE(stored(h, keys::ai_spend_day(tenant, day(0))).has_value());
  EXPECT_TRUE(stored(h, keys::ai_spend_day(tenant, day(2))).has_value());
  EXPECT_TRUE(stored(h, keys::ai_spend_day(tenant, day(63))).has_value());
  auto month = stored(h, keys::ai_spend_month(tenant, "2023-11"));
  ASSERT_TRUE(month.has_value()) << "a month is kept far longer than a day";
  EXPECT_EQ(keys::get_be64(*month), 2u * 527);
  expect_no_decide_reads(h);
  expect_replay_rebuilds_the_state(h);

  // 800 days later (2026-03-26): months before 2024-03 go too.
  h.clk.advance(800 * day_ms);
  use();
  EXPECT_FALSE(stored(h, keys::ai_spend_month(tenant, "2023-11")).has_value());
  EXPECT_FALSE(stored(h, keys::ai_spend_month(tenant, "2024-01")).has_value());
  EXPECT_FALSE(stored(h, keys::ai_spend_day(tenant, day(63))).has_value());
  EXPECT_EQ(keys::get_be64(*stored(h, keys::ai_spend_month(tenant, "2026-03"))), 527u);
  size_t spend_keys = 0;
  for (char kind : {'U', 'V'}) {
    auto scanned = h.n->partition(0).store().scan_prefix(keys::tenant_prefix(tenant) + kind,
                                                         [&](std::string_view, std::string_view) {
                                                           ++spend_keys;
                                                           return true;
                                                         });
    ASSERT_TRUE(scanned.has_value());
  }
  EXPECT_EQ(spend_keys, 2u) << "one day and one month are left";
  expect_no_decide_reads(h);
  expect_replay_rebuilds_the_state(h);
}

// What /metrics exports: the k tenants nearest their budget, from the applied state, with the
// spend of the current day and month only.
TEST(orchestrator_policy, ai_spend_top_ranks_tenants_by_budget_used_and_keeps_k) {
  harness h("ai-spend-top", 1, false);
  std::vector<record> keep_cmds;
  // t00..t23 spend 527 each against day budgets of 600, 700, ... (t00 nearest); "open" has
  // no budget and spends twice.
  auto spend = [&](const std::string& t, const json& policy, int times) {
    h.submit(t, client::publish_policy({t, "", "policy", h.clk.now_ms()}, policy.dump()));
    h.publish(t, ai_workflow("standard"));
    for (int i = 0; i < times; ++i) {
      h.start(t, fmt::format("e{}", i), "wf");
      h.settle();
      ack(h, *commands(h, stream::commands_ai, keep_cmds).back(), ai_answer(1234, 567));
    }
  };
  for (int i = 0; i < 24; ++i) spend(fmt::format("t{:02}", i), ai_policy_json(600 + 100 * i), 1);
  spend("open", {{"ai", {{"candidates", ai_candidates()}}}}, 2);
  const orchestrator& o = h.n->orchestrator_of(0);

  const auto top = o.ai_spend_top(h.clk.now_ms(), 20);
  ASSERT_EQ(top.size(), 20u);
  for (int i = 0; i < 20; ++i) {
    EXPECT_EQ(top[i].tenant, fmt::format("t{:02}", i));
    EXPECT_EQ(top[i].day_spent_micros, 527);
    EXPECT_EQ(top[i].month_spent_micros, 527);
    EXPECT_EQ(top[i].day_budget_micros, 600 + 100 * i);
    EXPECT_EQ(top[i].month_budget_micros, 100'000'000);
  }
  const auto all = o.ai_spend_top(h.clk.now_ms(), 100);
  ASSERT_EQ(all.size(), 25u);
  EXPECT_EQ(all.back().tenant, "open") << "no budget: after every tenant with one";
  EXPECT_EQ(all.back().month_spent_micros, 2 * 527);
  EXPECT_EQ(all.back().budget_used(), -1);

  // The next day: no spend today, the month's stays.
  h.clk.advance(day_ms);
  const auto next_day = o.ai_spend_top(h.clk.now_ms(), 100);
  ASSERT_EQ(next_day.size(), 25u);
  for (const ai_spend_sample& s : next_day) {
    EXPECT_EQ(s.day_spent_micros, 0) << s.tenant;
    EXPECT_GT(s.month_spent_micros, 0) << s.tenant;
  }
  expect_no_decide_reads(h);
}

TEST(orchestrator_policy, an_exhausted_budget_downgrades_to_a_cheaper_tier) {
  harness h("ai-downgrade", 1, false);
  publish_policy(h, ai_policy_json(/*day_budget=*/600));
  h.publish(tenant, ai_workflow("standard"));
  std::vector<record> keep, keep_cmds;
  h.start(tenant, "e1", "wf");
  h.settle();
  ack(h, *commands(h, stream::commands_ai, keep_cmds).back(), ai_answer(1234, 567));  // 527
  h.start(tenant, "e2", "wf");  // 73 left; openai's estimate is 135
  h.settle();
  auto routed = payloads<fbs::AiRouted>(events(h, "e2", keep)).at(0);
  EXPECT_EQ(sv(routed->provider()), "local");
  EXPECT_EQ(sv(routed->tier_chosen()), "basic");
  EXPECT_EQ(sv(routed->reason()),
            "downgraded from standard to basic: budget (day spent 527 of 600 micro-USD); cheapest "
            "of 1 candidate below standard");
  auto cmds = commands(h, stream::commands_ai, keep_cmds);
  EXPECT_EQ(sv(cmds.back()->payload_as_CallAi()->provider()), "local");
  EXPECT_EQ(sv(cmds.back()->payload_as_CallAi()->model()), "llama3");
  expect_no_decide_reads(h);
  expect_replay_rebuilds_the_state(h);
}

TEST(orchestrator_policy, an_exhausted_budget_with_reject_fails_the_step_and_the_fallback_runs) {
  harness h("ai-reject", 1, false);
  publish_policy(h, ai_policy_json(/*day_budget=*/600, "reject"));
  h.publish(
      tenant,
      workflow("wf",
               json::array({{{"id", "draft"},
                             {"kind", "ai"},
                             {"on_failure", "continue"},
                             {"input", {{"prompt", std::string(400, 'x')}}}},
                            {{"id", "fallback"},
                             {"kind", "delay"},
                             {"delay_ms", 10},
                             {"after", {"draft"}},
                             {"when", {{"path", "steps.draft.status"}, {"equals", "failed"}}}}})));
  std::vector<record> keep, keep_cmds;
  h.start(tenant, "e1", "wf");
  h.settle();
  ack(h, *commands(h, stream::commands_ai, keep_cmds).back(), ai_answer(1234, 567));
  EXPECT_EQ(h.exec(tenant, "e1")->steps[1].status, step_status::skipped);
  h.start(tenant, "e2", "wf");
  h.settle();
  EXPECT_EQ(commands(h, stream::commands_ai, keep_cmds).size(), 1u) << "no call for e2";
  auto routed = payloads<fbs::AiRouted>(events(h, "e2", keep));
  ASSERT_EQ(routed.size(), 1u);
  EXPECT_EQ(sv(routed[0]->provider()), "");
  const std::string reason = "AI budget exhausted: day spent 527 of 600 micro-USD";
  EXPECT_EQ(sv(routed[0]->reason()), reason);
  auto e = h.exec(tenant, "e2");
  EXPECT_EQ(e->steps[0].status, step_status::failed);
  EXPECT_EQ(e->steps[0].error, reason);
  EXPECT_EQ(e->steps[1].status, step_status::delaying) << "the fallback runs";
  h.run_for(20);
  EXPECT_EQ(h.exec(tenant, "e2")->status, exec_status::succeeded);
  expect_no_decide_reads(h);
  expect_replay_rebuilds_the_state(h);
}

TEST(orchestrator_policy, failover_tries_the_next_candidate_at_once_without_using_a_retry) {
  harness h("ai-failover", 1, false);
  json policy = ai_policy_json();
  policy["ai"]["candidates"][2]["tier"] = "standard";  // anthropic is a second standard choice
  publish_policy(h, policy);
  h.publish(tenant,
            ai_workflow("standard", {{"retry", {{"max_attempts", 2}, {"backoff_ms", 100}}}}));
  std::vector<record> keep, keep_cmds;
  h.start(tenant, "e1", "wf");
  h.settle();
  auto cmds = commands(h, stream::commands_ai, keep_cmds);
  ASSERT_EQ(cmds.size(), 1u);
  // openai fails (after using some tokens): anthropic gets attempt 2 in the same batch.
  ack(h, *cmds[0], failure(fbs::AckStatus::PermanentFailure, "HTTP 500 from openai", 1000));
  cmds = commands(h, stream::commands_ai, keep_cmds);
  ASSERT_EQ(cmds.size(), 2u);
  EXPECT_EQ(cmds[1]->payload_as_CallAi()->attempt(), 2u);
  EXPECT_EQ(sv(cmds[1]->record_id()), "e1/draft/2");
  EXPECT_EQ(sv(cmds[1]->payload_as_CallAi()->provider()), "anthropic");
  auto evs = events(h, "e1", keep);
  auto routed = payloads<fbs::AiRouted>(evs);
  ASSERT_EQ(routed.size(), 2u);
  EXPECT_TRUE(routed[1]->failover());
  EXPECT_EQ(sv(routed[1]->reason()),
            "failover after openai/gpt-4o-mini: HTTP 500 from openai; cheapest of 1 candidate "
            "meeting standard");
  auto usage = payloads<fbs::AiUsageRecorded>(evs);
  ASSERT_EQ(usage.size(), 1u) << "the failed call's tokens are paid for too";
  EXPECT_EQ(usage[0]->cost_micros(), 150);
  EXPECT_EQ(count(h.events_of("e1"), "StepRetryScheduled"), 0u);

  // anthropic fails too: no candidate left, so the step's one retry is used (not spent yet).
  ack(h, *cmds[1], failure(fbs::AckStatus::RetryableFailure, "overloaded"));
  EXPECT_EQ(count(h.events_of("e1"), "StepRetryScheduled"), 1u);
  EXPECT_EQ(h.exec(tenant, "e1")->steps[0].status, step_status::retry_wait);
  h.run_for(100);
  cmds = commands(h, stream::commands_ai, keep_cmds);
  ASSERT_EQ(cmds.size(), 3u);
  EXPECT_EQ(sv(cmds[2]->payload_as_CallAi()->provider()), "openai")
      << "a retry starts again from the cheapest candidate";
  routed = payloads<fbs::AiRouted>(events(h, "e1", keep));
  EXPECT_FALSE(routed.back()->failover());
  ack(h, *cmds[2], ai_answer(10, 10));
  EXPECT_EQ(h.exec(tenant, "e1")->status, exec_status::succeeded);
  EXPECT_EQ(h.exec(tenant, "e1")->steps[0].attempt, 3u);
  expect_no_decide_reads(h);
  expect_replay_rebuilds_the_state(h);
}

TEST(orchestrator_policy, a_slow_provider_times_out_at_its_latency_limit_and_fails_over) {
  harness h("ai-latency", 1, false);
  json policy = ai_policy_json();
  policy["ai"]["candidates"][2]["tier"] = "standard";
  publish_policy(h, policy);
  h.publish(tenant, ai_workflow("standard"));
  h.start(tenant, "e1", "wf");
  h.settle();
  h.clk.advance(15000);
  h.settle();
  std::vector<record> keep, keep_cmds;
  auto cmds = commands(h, stream::commands_ai, keep_cmds);
  ASSERT_EQ(cmds.size(), 2u);
  EXPECT_EQ(sv(cmds[1]->payload_as_CallAi()->provider()), "anthropic");
  EXPECT_EQ(cmds[1]->payload_as_CallAi()->deadline_ms(), t0 + 15000 + 30000);
  // openai answers late: stale, but its usage is still recorded once.
  ack(h, *cmds[0], ai_answer(1000, 0));
  ack(h, *cmds[0], ai_answer(1000, 0));
  auto usage = payloads<fbs::AiUsageRecorded>(events(h, "e1", keep));
  ASSERT_EQ(usage.size(), 1u);
  EXPECT_EQ(usage[0]->attempt(), 1u);
  ack(h, *cmds[1], ai_answer(1000, 1000));
  EXPECT_EQ(h.exec(tenant, "e1")->status, exec_status::succeeded);
  EXPECT_EQ(payloads<fbs::AiUsageRecorded>(events(h, "e1", keep)).back()->cost_micros(),
            3000 + 15000);
  expect_no_decide_reads(h);
  expect_replay_rebuilds_the_state(h);
}

TEST(orchestrator_policy, an_invalid_policy_is_rejected_and_a_later_one_replaces_the_first) {
  harness h("policy-publish", 1, false);
  json bad = ai_policy_json();
  bad["ai"]["candidates"][0]["tier"] = "gold";
  publish_policy(h, bad);
  auto rej = h.rejections();
  ASSERT_EQ(rej.size(), 1u);
  EXPECT_EQ(rej[0].code, 15);
  EXPECT_EQ(rej[0].reason,
            "ai.candidates[0].tier must be basic, standard or premium; got \"gold\"");
  publish_policy(h, ai_policy_json());
  json premium_only = ai_policy_json();
  premium_only["ai"]["candidates"].erase(1);
  publish_policy(h, premium_only);
  std::vector<record> keep;
  std::vector<uint32_t> versions;
  for (const fbs::Envelope* e : events(h, "", keep)) {
    if (auto p = e->payload_as_TenantPolicyPublished()) versions.push_back(p->version());
  }
  EXPECT_EQ(versions, (std::vector<uint32_t>{1, 2}));
  h.publish(tenant, ai_workflow("standard"));
  h.start(tenant, "e1", "wf");
  h.settle();
  EXPECT_EQ(sv(payloads<fbs::AiRouted>(events(h, "e1", keep)).at(0)->provider()), "anthropic");
  expect_no_decide_reads(h);
  expect_replay_rebuilds_the_state(h);
}

TEST(orchestrator_policy, without_a_policy_ai_and_notify_steps_behave_as_before) {
  harness h("no-policy", 1, false);
  h.publish(
      tenant,
      workflow("wf", json::array({{{"id", "draft"}, {"kind", "ai"}, {"input", {{"prompt", "hi"}}}},
                                  {{"id", "send"},
                                   {"kind", "notify"},
                                   {"input", {{"channel", "sms"}, {"to", "+15550100"}}}}})));
  h.start(tenant, "e1", "wf");
  h.settle();
  std::vector<record> keep;
  auto cmds = commands(h, stream::commands_ai, keep);
  ASSERT_EQ(cmds.size(), 1u);
  EXPECT_EQ(sv(cmds[0]->payload_as_CallAi()->provider()), "");
  EXPECT_EQ(sv(cmds[0]->payload_as_CallAi()->model()), "");
  std::vector<record> keep2;
  EXPECT_EQ(commands(h, stream::commands_notify, keep2).size(), 1u);
  ack(h, *cmds[0], ai_answer(10, 10, "some-model"));
  EXPECT_EQ(h.events_of("e1"), (std::vector<std::string>{"ExecutionStarted", "StepScheduled",
                                                         "StepScheduled", "StepSucceeded"}))
      << "no routing, usage or notification policy events";
}

// ---------------------------------------------------------------------------- notifications

json notify_policy_json() {
  return {{"notify",
           {{"rate_limits", json::array({{{"channel", "sms"}, {"max", 2}, {"per_ms", 60000}}})},
            {"quiet_hours",
             {{"start", "22:00"},
              {"end", "08:00"},
              {"utc_offset_minutes", 0},
              {"channels", {"whatsapp"}}}},
            {"opt_out", {"+15550100", "ann@example.com"}},
            {"dedup_window_ms", 600000}}}};
}

std::string notify_workflow(const json& input) {
  return workflow(
      "wf",
      json::array({{{"id", "send"}, {"kind", "notify"}, {"input", input}},
                   {{"id", "next"}, {"kind", "delay"}, {"delay_ms", 10}, {"after", {"send"}}}}));
}

TEST(orchestrator_policy, an_opted_out_recipient_is_not_messaged_and_the_workflow_carries_on) {
  harness h("notify-optout", 1, false);
  publish_policy(h, notify_policy_json());
  h.publish(tenant,
            notify_workflow({{"channel", "sms"}, {"to", "{{input.phone}}"}, {"body", "hi"}}));
  h.start(tenant, "e1", "wf", R"({"phone": "+1 555-0100"})");
  h.settle();
  std::vector<record> keep;
  EXPECT_TRUE(commands(h, stream::commands_notify, keep).empty());
  auto sup = payloads<fbs::NotificationSuppressed>(events(h, "e1", keep));
  ASSERT_EQ(sup.size(), 1u);
  EXPECT_EQ(sv(sup[0]->reason()), "opted_out");
  EXPECT_EQ(sv(sup[0]->to()), "+1 555-0100");
  auto e = h.exec(tenant, "e1");
  EXPECT_EQ(e->steps[0].status, step_status::succeeded);
  EXPECT_EQ(json::parse(e->steps[0].output_json),
            json::parse(R"({"sent":false,"suppressed":"opted_out"})"));
  h.run_for(20);
  EXPECT_EQ(h.exec(tenant, "e1")->status, exec_status::succeeded);
  expect_no_decide_reads(h);
  expect_replay_rebuilds_the_state(h);
}

TEST(orchestrator_policy, the_same_message_twice_within_the_window_is_sent_once) {
  harness h("notify-dedup", 1, false);
  publish_policy(h, notify_policy_json());
  h.publish(tenant, notify_workflow({{"channel", "email"},
                                     {"to", "bob@example.com"},
                                     {"subject", "Your car"},
                                     {"body", "It is ready"}}));
  h.start(tenant, "e1", "wf");
  h.settle();
  h.clk.advance(1000);
  h.start(tenant, "e2", "wf");
  h.settle();
  std::vector<record> keep;
  EXPECT_EQ(commands(h, stream::commands_notify, keep).size(), 1u);
  auto sup = payloads<fbs::NotificationSuppressed>(events(h, "e2", keep));
  ASSERT_EQ(sup.size(), 1u);
  EXPECT_EQ(sv(sup[0]->reason()), "duplicate of e1/send/1 sent at 2023-11-14T22:13:20.000Z");
  EXPECT_EQ(json::parse(h.exec(tenant, "e2")->steps[0].output_json),
            json::parse(R"({"sent":false,"suppressed":"duplicate","original":"e1/send/1"})"));
  // Ten minutes after the first, the same message goes out again.
  h.clk.advance(600'000);
  h.start(tenant, "e3", "wf");
  h.settle();
  EXPECT_EQ(commands(h, stream::commands_notify, keep).size(), 2u);
  expect_no_decide_reads(h);
  expect_replay_rebuilds_the_state(h);
}

TEST(orchestrator_policy, dedup_entries_past_the_window_are_pruned_by_later_admissions) {
  harness h("notify-dedup-prune", 1, false);
  publish_policy(h, notify_policy_json());  // dedup_window_ms 600000
  h.publish(tenant,
            notify_workflow({{"channel", "email"}, {"to", "{{input.to}}"}, {"body", "hi"}}));
  auto dedup_key = [](std::string_view to) {
    return keys::notify_dedup(tenant, notification_hash("email", to, "", "hi"));
  };
  auto dedup_entries = [&] { return dedup_entries_of(h); };
  std::vector<record> keep;
  auto send = [&](std::string_view id, std::string_view to) {
    h.start(tenant, id, "wf", json{{"to", to}}.dump());
    h.settle();
    return payloads<fbs::NotificationSuppressed>(events(h, id, keep)).empty();  // sent
  };
  EXPECT_TRUE(send("e1", "a@example.com"));
  EXPECT_TRUE(send("e2", "b@example.com"));
  EXPECT_EQ(dedup_entries(), 2u);
  h.clk.advance(599'999);
  EXPECT_FALSE(send("e3", "a@example.com")) << "a duplicate inside the window";
  EXPECT_EQ(dedup_entries(), 2u) << "a suppression prunes nothing";
  h.clk.advance(1);
  // The window of a and b has passed: the next admission deletes both.
  EXPECT_TRUE(send("e4", "c@example.com"));
  EXPECT_FALSE(stored(h, dedup_key("a@example.com")).has_value());
  EXPECT_FALSE(stored(h, dedup_key("b@example.com")).has_value());
  EXPECT_TRUE(stored(h, dedup_key("c@example.com")).has_value());
  EXPECT_EQ(dedup_entries(), 1u);
  h.clk.advance(1000);
  EXPECT_FALSE(send("e5", "c@example.com")) << "what was admitted stays a duplicate";
  EXPECT_TRUE(send("e6", "a@example.com")) << "the pruned entry no longer suppresses";
  EXPECT_EQ(dedup_entries(), 2u);
  expect_no_decide_reads(h);
  expect_replay_rebuilds_the_state(h);
}

// Pruning removes at most dedup_pruned_per_admission_max expired entries per admission, oldest
// first; the rest go with the following admissions.
TEST(orchestrator_policy, dedup_pruning_is_bounded_per_admission) {
  harness h("notify-dedup-bound", 1, false);
  publish_policy(h, notify_policy_json());
  h.publish(tenant,
            notify_workflow({{"channel", "email"}, {"to", "{{input.to}}"}, {"body", "hi"}}));
  const size_t k = retention::dedup_pruned_per_admission_max;
  auto dedup_entries = [&] { return dedup_entries_of(h); };
  int n = 0;
  auto send = [&] {
    const std::string id = fmt::format("e{}", ++n);
    h.start(tenant, id, "wf", json{{"to", fmt::format("u{}@example.com", n)}}.dump());
    h.settle();
  };
  for (size_t i = 0; i < k + 3; ++i) send();
  EXPECT_EQ(dedup_entries(), k + 3);
  h.clk.advance(600'000);
  send();
  EXPECT_EQ(dedup_entries(), 3u + 1) << k << " pruned, 3 expired left, 1 added";
  send();
  EXPECT_EQ(dedup_entries(), 2u) << "the last 3 expired ones pruned";
  expect_no_decide_reads(h);
  expect_replay_rebuilds_the_state(h);
}

TEST(orchestrator_policy, quiet_hours_hold_a_message_until_they_end) {
  harness h("notify-quiet", 1, false);
  publish_policy(h, notify_policy_json());
  h.publish(tenant,
            notify_workflow({{"channel", "whatsapp"}, {"to", "+15550177"}, {"body", "hi"}}));
  h.start(tenant, "e1", "wf");  // 22:13:20 UTC: quiet until 08:00
  h.settle();
  std::vector<record> keep;
  EXPECT_TRUE(commands(h, stream::commands_notify, keep).empty());
  auto def = payloads<fbs::NotificationDeferred>(events(h, "e1", keep));
  ASSERT_EQ(def.size(), 1u);
  EXPECT_EQ(sv(def[0]->reason()), "quiet_hours");
  const int64_t until = t0 + (9 * 60 + 46) * 60'000 + 40'000;  // 08:00:00 next day
  EXPECT_EQ(def[0]->until_ms(), until);
  EXPECT_EQ(h.exec(tenant, "e1")->steps[0].status, step_status::deferred);
  h.clk.advance(until - t0 - 1);
  h.settle();
  EXPECT_TRUE(commands(h, stream::commands_notify, keep).empty());
  h.clk.advance(1);
  h.settle();
  auto cmds = commands(h, stream::commands_notify, keep);
  ASSERT_EQ(cmds.size(), 1u);
  EXPECT_EQ(sv(cmds[0]->record_id()), "e1/send/1");
  EXPECT_EQ(h.exec(tenant, "e1")->steps[0].status, step_status::running);
  auto names = h.events_of("e1");
  EXPECT_EQ(names,
            (std::vector<std::string>{"ExecutionStarted", "StepScheduled", "NotificationDeferred",
                                      "TimerFired", "NotificationAdmitted"}));
  ack(h, *cmds[0], {});
  EXPECT_EQ(h.exec(tenant, "e1")->steps[0].status, step_status::succeeded);
  expect_no_decide_reads(h);
  expect_replay_rebuilds_the_state(h);
}

TEST(orchestrator_policy, a_message_over_the_rate_limit_waits_for_the_next_window) {
  harness h("notify-rate", 1, false);
  publish_policy(h, notify_policy_json());  // sms: 2 per minute
  h.publish(tenant, notify_workflow({{"channel", "sms"}, {"to", "{{input.to}}"}, {"body", "hi"}}));
  for (int i = 1; i <= 3; ++i) {
    h.start(tenant, fmt::format("e{}", i), "wf", fmt::format(R"({{"to": "+1555020{}"}})", i));
  }
  h.settle();
  std::vector<record> keep;
  EXPECT_EQ(commands(h, stream::commands_notify, keep).size(), 2u);
  auto def = payloads<fbs::NotificationDeferred>(events(h, "e3", keep));
  ASSERT_EQ(def.size(), 1u);
  EXPECT_EQ(sv(def[0]->reason()), "rate_limit");
  const int64_t next_window = t0 - t0 % 60000 + 60000;
  EXPECT_EQ(def[0]->until_ms(), next_window);
  h.clk.advance(next_window - t0 - 1);
  h.settle();
  EXPECT_EQ(commands(h, stream::commands_notify, keep).size(), 2u);
  h.clk.advance(1);
  h.settle();
  auto cmds = commands(h, stream::commands_notify, keep);
  ASSERT_EQ(cmds.size(), 3u);
  EXPECT_EQ(sv(cmds[2]->payload_as_SendNotification()->to()), "+15550203");
  auto admitted = payloads<fbs::NotificationAdmitted>(events(h, "e3", keep));
  ASSERT_EQ(admitted.size(), 1u);
  EXPECT_EQ(admitted[0]->window_start_ms(), next_window);
  expect_no_decide_reads(h);
  expect_replay_rebuilds_the_state(h);
}

// Replay equivalence with tenant policies: random AI and notify workloads (failovers, late and
// duplicate acks, timeouts, budget exhaustion, quiet hours ending, rate windows, duplicates,
// a policy replaced midway) on two tenants; then the state rebuilt from the log must equal the
// live state byte for byte. Prints its seed; rerun one with AUTERITY_TEST_SEED=<seed>.
TEST(orchestrator_policy, random_policy_workloads_replay_to_the_same_state) {
  const uint64_t seed = test_seed();
  SCOPED_TRACE(fmt::format("AUTERITY_TEST_SEED={}", seed));
  std::mt19937_64 rng(seed);
  auto uniform = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  auto chance = [&](double p) { return std::bernoulli_distribution(p)(rng); };

  harness h("policy-property", 2, false);
  const std::vector<std::string> tenants{"acme", "bayside"};
  json policy = ai_policy_json(/*day_budget=*/3000, "downgrade");
  policy["ai"]["candidates"][2]["tier"] = "standard";
  policy["notify"] = {
      {"rate_limits", json::array({{{"channel", "sms"}, {"max", 2}, {"per_ms", 1000}}})},
      {"quiet_hours", {{"start", "22:00"}, {"end", "22:14"}, {"channels", {"whatsapp"}}}},
      {"opt_out", {"+15550001"}},
      {"dedup_window_ms", 3000}};
  const std::string def = workflow(
      "wf",
      json::array({{{"id", "draft"},
                    {"kind", "ai"},
                    {"on_failure", "continue"},
                    {"timeout_ms", 400},
                    {"retry", {{"max_attempts", 2}, {"backoff_ms", 50}}},
                    {"input", {{"prompt", "{{input.body}}"}}}},
                   {{"id", "sms"},
                    {"kind", "notify"},
                    {"after", {"draft"}},
                    {"on_failure", "continue"},
                    {"timeout_ms", 300},
                    {"input", {{"channel", "sms"}, {"to", "{{input.to}}"}, {"body", "hi"}}}},
                   {{"id", "wa"},
                    {"kind", "notify"},
                    {"on_failure", "continue"},
                    {"input", {{"channel", "whatsapp"}, {"to", "{{input.to}}"}, {"body", "x"}}}}}));
  for (const std::string& t : tenants) {
    h.submit(t, client::publish_policy({t, "", "policy", h.clk.now_ms()}, policy.dump()));
    h.publish(t, def);
  }
  h.settle();

  log& l = h.n->get_log();
  std::vector<std::string> pending;  // commands not yet answered (bytes)
  std::vector<std::string> answered;
  std::vector<uint64_t> seen_ai(l.partition_count(), 0), seen_notify(l.partition_count(), 0);
  auto collect = [&](stream st, std::vector<uint64_t>& seen) {
    for (uint32_t p = 0; p < l.partition_count(); ++p) {
      std::vector<record> recs;
      while (seen[p] < *l.end_offset(st, p)) {
        recs.clear();
        ASSERT_TRUE(l.read(st, p, seen[p], 256, 8 << 20, recs).has_value());
        for (const record& r : recs) pending.push_back(r.value);
        seen[p] = recs.back().offset + 1;
      }
    }
  };
  auto answer = [&](const std::string& bytes) {
    const fbs::Envelope* cmd = decode_envelope(bytes);
    ack_result r;
    const int roll = uniform(0, 99);
    if (roll < 55) {
      r.output_json = R"({"ok":true})";
    } else if (roll < 80) {
      r.status = fbs::AckStatus::RetryableFailure;
      r.error = "busy";
    } else {
      r.status = fbs::AckStatus::PermanentFailure;
      r.error = "rejected";
    }
    if (cmd->payload_type() == fbs::Payload::CallAi && chance(0.8)) {
      r.model = "m";
      r.input_tokens = static_cast<uint32_t>(uniform(0, 3000));
      r.output_tokens = static_cast<uint32_t>(uniform(0, 500));
    }
    const std::string tenant_id(sv(cmd->tenant_id()));
    commit_batch b;
    b.add(stream::acks, tenant_id, make_ack(*cmd, r, h.clk.now_ms()));
    ASSERT_TRUE(l.commit(tenant_partition(tenant_id, l.partition_count()), b).has_value());
  };
  int started = 0;
  for (int round = 0; round < 600; ++round) {
    if (chance(0.15)) {
      const std::string& t = tenants[uniform(0, 1)];
      const json input = {{"to", fmt::format("+1555000{}", uniform(1, 4))},
                          {"body", std::string(static_cast<size_t>(uniform(1, 4000)), 'b')}};
      h.start(t, fmt::format("e{}", started++), "wf", input.dump());
    }
    if (round == 300) {  // a new policy version midway: another budget, another exhaustion rule
      json next = policy;
      next["ai"]["budget"] = {{"day_micros", 1000}, {"when_exhausted", "reject"}};
      for (const std::string& t : tenants) {
        h.submit(t, client::publish_policy({t, "", "policy2", h.clk.now_ms()}, next.dump()));
      }
    }
    collect(stream::commands_ai, seen_ai);
    collect(stream::commands_notify, seen_notify);
    if (!pending.empty() && chance(0.6)) {
      const size_t i = static_cast<size_t>(uniform(0, static_cast<int>(pending.size()) - 1));
      if (!chance(0.15)) answer(pending[i]);  // else: never answered (it times out)
      answered.push_back(pending[i]);
      pending.erase(pending.begin() + static_cast<std::ptrdiff_t>(i));
    }
    if (!answered.empty() && chance(0.1)) {  // a duplicate or late ack
      answer(answered[static_cast<size_t>(uniform(0, static_cast<int>(answered.size()) - 1))]);
    }
    h.clk.advance(uniform(0, 150));
    h.settle();
  }
  size_t routed = 0, priced = 0, admitted = 0, held = 0, failovers = 0, refused = 0, ends = 0;
  for (const record& r : h.read_all(stream::executions)) {
    const fbs::Envelope* e = decode_envelope(r.value);
    if (auto a = e->payload_as_AiRouted()) {
      failovers += a->failover();
      refused += a->provider()->size() == 0;
    }
    if (auto t = e->payload_as_TimerFired()) ends += t->purpose() == fbs::TimerPurpose::NotifyDefer;
    routed += e->payload_type() == fbs::Payload::AiRouted;
    priced += e->payload_type() == fbs::Payload::AiUsageRecorded;
    admitted += e->payload_type() == fbs::Payload::NotificationAdmitted;
    held += e->payload_type() == fbs::Payload::NotificationDeferred ||
            e->payload_type() == fbs::Payload::NotificationSuppressed;
  }
  // The workload reaches every path (seed-independent with these rates and 600 rounds).
  EXPECT_GT(failovers, 0u);
  EXPECT_GT(refused, 0u) << "the budget ran out at least once";
  EXPECT_GT(ends, 0u) << "deferrals ended and were asked again";
  if (std::getenv("AUTERITY_DEBUG")) {
    fmt::print("routed {} (failover {}, refused {}) priced {} admitted {} held {} (ended {})\n",
               routed, failovers, refused, priced, admitted, held, ends);
  }
  EXPECT_GT(routed, 0u);
  EXPECT_GT(priced, 0u);
  EXPECT_GT(admitted, 0u);
  EXPECT_GT(held, 0u);
  expect_no_decide_reads(h);
  expect_replay_rebuilds_the_state(h);
}

// What an auditor reads: the replay timeline names the model, the reason and the cost, and
// why a notification was not sent, in text, JSON Lines and HTML.
TEST(orchestrator_policy, the_replay_timeline_shows_model_reason_cost_and_notification_decisions) {
  harness h("policy-timeline", 1, false);
  json policy = ai_policy_json();
  policy["notify"] = notify_policy_json()["notify"];
  publish_policy(h, policy);
  h.publish(
      tenant,
      workflow("wf",
               json::array({{{"id", "draft"},
                             {"kind", "ai"},
                             {"input", {{"prompt", std::string(400, 'x')}, {"max_tokens", 200}}}},
                            {{"id", "send"},
                             {"kind", "notify"},
                             {"after", {"draft"}},
                             {"input",
                              {{"channel", "sms"},
                               {"to", "+15550100"},
                               {"body", "{{steps.draft.output.text}}"}}}}})));
  h.start(tenant, "e1", "wf");
  h.settle();
  std::vector<record> keep;
  ack(h, *commands(h, stream::commands_ai, keep).at(0), ai_answer(1234, 567));
  ASSERT_EQ(h.exec(tenant, "e1")->status, exec_status::succeeded);

  auto timeline = [&](timeline_format f) {
    timeline_options o;
    o.scope.tenant = tenant;
    o.scope.execution = "e1";
    o.format = f;
    o.threads = 1;
    char* buf = nullptr;
    size_t size = 0;
    std::FILE* out = open_memstream(&buf, &size);
    auto r = write_timeline(h.n->get_log(), o, out);
    std::fclose(out);
    std::string text(buf, size);
    std::free(buf);
    EXPECT_TRUE(r.has_value()) << r.error().message;
    return text;
  };
  const std::string text = timeline(timeline_format::text);
  if (std::getenv("AUTERITY_DEBUG")) fmt::print("{}", text);
  for (const char* expected :
       {"routed to openai/gpt-4o-mini (standard for standard): cheapest of 2 candidates meeting "
        "standard",
        "AI call (tier standard, openai/gpt-4o-mini)",
        "used openai/gpt-4o-mini: 1234 in + 567 out tokens, cost $0.000527",
        "(sms to +15550100) suppressed: opted_out",
        "AI: 1 call, 1234 in + 567 out tokens, $0.000527"}) {
    EXPECT_NE(text.find(expected), std::string::npos) << expected << "\n" << text;
  }
  bool routed = false, priced = false;
  std::istringstream lines(timeline(timeline_format::jsonl));
  for (std::string line; std::getline(lines, line);) {
    const json j = json::parse(line);
    if (j["type"] == "AiRouted") {
      routed = j["payload"]["provider"] == "openai" && j["payload"]["model"] == "gpt-4o-mini" &&
               j["payload"]["estimated_cost_micros"] == 135;
    }
    if (j["type"] == "AiUsageRecorded") priced = j["payload"]["cost_micros"] == 527;
  }
  EXPECT_TRUE(routed && priced);
  const std::string html = timeline(timeline_format::html);
  EXPECT_NE(html.find("routed to openai/gpt-4o-mini"), std::string::npos);
  EXPECT_NE(html.find("suppressed: opted_out"), std::string::npos);
}

// ------------------------------------------------------------ signals before their start

// A workflow that waits for "go" at once and for "later" after a 100 ms delay.
std::string two_waits() {
  return workflow(
      "wf", json::array(
                {{{"id", "w"}, {"kind", "wait_signal"}, {"signal", "go"}},
                 {{"id", "d"}, {"kind", "delay"}, {"delay_ms", 100}},
                 {{"id", "w2"}, {"kind", "wait_signal"}, {"signal", "later"}, {"after", {"d"}}}}));
}

// The tenant-level events of one payload type (pointing into `keep`).
template <typename T>
std::vector<const T*> tenant_events(harness& h, std::vector<record>& keep) {
  keep = h.read_all(stream::executions);
  std::vector<const T*> out;
  for (const record& r : keep) {
    const fbs::Envelope* e = decode_envelope(r.value);
    if (e && e->kind() == fbs::RecordKind::Event && sv(e->execution_id()).empty()) {
      if (auto p = e->payload_as<T>()) out.push_back(p);
    }
  }
  return out;
}

std::string tenant_timeline(harness& h) {
  timeline_options o;
  o.scope.tenant = tenant;
  o.format = timeline_format::text;
  o.threads = 1;
  char* buf = nullptr;
  size_t size = 0;
  std::FILE* out = open_memstream(&buf, &size);
  auto r = write_timeline(h.n->get_log(), o, out);
  std::fclose(out);
  std::string text(buf, size);
  std::free(buf);
  EXPECT_TRUE(r.has_value()) << r.error().message;
  return text;
}

// The raw rejection records (record id, causation) on executions.
std::vector<std::pair<std::string, std::string>> rejection_ids(harness& h) {
  std::vector<std::pair<std::string, std::string>> out;
  for (const record& r : h.read_all(stream::executions)) {
    const fbs::Envelope* e = decode_envelope(r.value);
    if (e && e->payload_type() == fbs::Payload::CommandRejected) {
      out.emplace_back(sv(e->record_id()), sv(e->causation_id()));
    }
  }
  return out;
}

TEST(orchestrator_held_signals, a_signal_that_overtakes_its_start_is_delivered_after_it) {
  harness h("held-deliver", 1);
  h.publish(tenant, two_waits());
  h.settle();
  // Both signals are decided before the start, as when the start was forwarded.
  h.submit(tenant, client::signal({tenant, "e1", "sig-go", h.clk.now_ms()}, "go", R"({"n":1})"));
  h.submit(tenant,
           client::signal({tenant, "e1", "sig-later", h.clk.now_ms()}, "later", R"({"n":2})"));
  h.settle();
  EXPECT_TRUE(h.rejections().empty()) << h.rejections().front().reason;
  EXPECT_FALSE(h.exec(tenant, "e1").has_value());
  h.run_for(1000, 100);
  h.start(tenant, "e1", "wf");
  h.settle();
  auto e = h.exec(tenant, "e1");
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->steps[0].status, step_status::succeeded) << "the waiting step got its signal";
  EXPECT_EQ(e->steps[0].output_json, R"({"n":1})");
  ASSERT_EQ(e->signals.size(), 1u) << "'later' is kept for the step that waits later";
  h.run_for(150);
  e = h.exec(tenant, "e1");
  EXPECT_EQ(e->status, exec_status::succeeded);
  EXPECT_EQ(e->steps[2].output_json, R"({"n":2})");
  EXPECT_TRUE(e->signals.empty());

  // In the execution's history: the start, then each signal, in arrival order, caused by its
  // own command — as if they had arrived after the start.
  std::vector<record> keep;
  auto evs = events(h, "e1", keep);
  ASSERT_FALSE(evs.empty());
  EXPECT_EQ(evs.front()->payload_type(), fbs::Payload::ExecutionStarted);
  std::vector<std::string> causes;
  for (const fbs::Envelope* ev : evs) {
    if (ev->payload_type() == fbs::Payload::SignalReceived)
      causes.emplace_back(sv(ev->causation_id()));
  }
  EXPECT_EQ(causes, (std::vector<std::string>{"sig-go", "sig-later"}));
  std::vector<record> keep2;
  auto held = tenant_events<fbs::SignalHeld>(h, keep2);
  ASSERT_EQ(held.size(), 2u);
  EXPECT_EQ(held[0]->expires_at_ms(), held[1]->expires_at_ms()) << "one window per id";
  auto released = tenant_events<fbs::HeldSignalsReleased>(h, keep2);
  ASSERT_EQ(released.size(), 1u);
  EXPECT_EQ(released[0]->count(), 2u);
  EXPECT_EQ(released[0]->outcome(), fbs::HeldSignalsOutcome::Delivered);

  // The hold window's timer went with the release: nothing is rejected when it would have ended.
  EXPECT_EQ(h.n->orchestrator_of(0).next_timer_ms(), std::numeric_limits<int64_t>::max());
  h.clk.advance(limits::signal_hold_ms);
  h.settle();
  EXPECT_TRUE(h.rejections().empty());

  const std::string text = tenant_timeline(h);
  for (const char* expected :
       {"signal go for execution e1 held until", "no such execution yet (request sig-go)",
        "2 held signals of execution e1 delivered: the execution started"}) {
    EXPECT_NE(text.find(expected), std::string::npos) << expected << "\n" << text;
  }
  expect_replay_rebuilds_the_state(h);
  expect_no_decide_reads(h);
}

TEST(orchestrator_held_signals, a_held_signal_whose_start_never_comes_is_rejected_after_the_hold) {
  harness h("held-expire", 1);
  h.publish(tenant, two_waits());
  h.settle();
  h.submit(tenant, client::signal({tenant, "ghost", "sig-1", h.clk.now_ms()}, "go", "{}"));
  h.settle();
  h.clk.advance(10'000);
  h.submit(tenant, client::signal({tenant, "ghost", "sig-2", h.clk.now_ms()}, "go", "{}"));
  h.settle();
  // The window opened with the first signal: both wait until it ends, and not a ms longer.
  h.clk.advance(limits::signal_hold_ms - 10'000 - 1);
  h.settle();
  EXPECT_TRUE(h.rejections().empty()) << "held, not rejected, within signal_hold_ms";
  h.clk.advance(1);
  h.settle();
  auto rej = h.rejections();
  ASSERT_EQ(rej.size(), 2u);
  for (const auto& r : rej) {
    EXPECT_EQ(r.code, static_cast<uint16_t>(rejection_code::unknown_execution));
    EXPECT_EQ(r.execution, "ghost");
    EXPECT_NE(r.reason.find("no execution 'ghost' for tenant 'acme'"), std::string::npos);
    EXPECT_NE(r.reason.find("no start arrived"), std::string::npos) << r.reason;
  }
  EXPECT_NE(rej[0].reason.find("held 30000 ms"), std::string::npos) << rej[0].reason;
  EXPECT_NE(rej[1].reason.find("held 20000 ms"), std::string::npos) << rej[1].reason;

  // Each rejection answers its own command: the record id an immediate rejection would have.
  std::vector<std::string> expected_ids;
  for (const record& r : h.read_all(stream::ingress)) {
    const fbs::Envelope* e = decode_envelope(r.value);
    if (e && e->payload_type() == fbs::Payload::Signal) {
      expected_ids.push_back(fmt::format("rej/ingress/0/{}", r.offset));
    }
  }
  auto ids = rejection_ids(h);
  ASSERT_EQ(ids.size(), 2u);
  EXPECT_EQ(ids[0], std::make_pair(expected_ids.at(0), std::string("sig-1")));
  EXPECT_EQ(ids[1], std::make_pair(expected_ids.at(1), std::string("sig-2")));

  // A start after the window runs without them.
  h.start(tenant, "ghost", "wf");
  h.settle();
  EXPECT_EQ(h.exec(tenant, "ghost")->steps[0].status, step_status::waiting);
  EXPECT_NE(tenant_timeline(h).find("2 held signals of execution ghost expired: no start arrived"),
            std::string::npos);
  expect_replay_rebuilds_the_state(h);
  expect_no_decide_reads(h);
}

TEST(orchestrator_held_signals, signals_beyond_the_hold_limits_are_rejected_at_once) {
  harness h("held-limits", 1);
  h.publish(tenant, two_waits());
  h.settle();
  auto sig = [&](std::string_view id, std::string_view payload = "{}") {
    h.submit(tenant, client::signal({tenant, id, "sig", h.clk.now_ms()}, "go", payload));
  };
  for (size_t i = 0; i <= limits::signals_held_per_execution_max; ++i) sig("one");
  h.settle();
  auto rej = h.rejections();
  ASSERT_EQ(rej.size(), 1u) << "the 65th signal for one id";
  EXPECT_EQ(rej[0].code, static_cast<uint16_t>(rejection_code::unknown_execution));
  EXPECT_NE(rej[0].reason.find("signals_held_per_execution_max"), std::string::npos)
      << rej[0].reason;

  // The tenant's other ids, up to signals_held_per_tenant_max in all.
  const size_t per_id = 48;
  size_t held = limits::signals_held_per_execution_max;
  for (int id = 0; held < limits::signals_held_per_tenant_max; ++id) {
    for (size_t i = 0; i < per_id && held < limits::signals_held_per_tenant_max; ++i, ++held) {
      sig(fmt::format("x{}", id));
    }
  }
  sig("over");
  h.settle(100'000);
  rej = h.rejections();
  ASSERT_EQ(rej.size(), 2u);
  EXPECT_NE(rej[1].reason.find("signals_held_per_tenant_max"), std::string::npos) << rej[1].reason;

  // A start releases its id's signals, making room for others.
  h.start(tenant, "one", "wf");
  h.settle();
  EXPECT_EQ(h.exec(tenant, "one")->steps[0].status, step_status::succeeded);
  sig("new");
  h.settle();
  EXPECT_EQ(h.rejections().size(), 2u) << "held: the tenant is below its limit again";
  expect_replay_rebuilds_the_state(h);
  expect_no_decide_reads(h);

  // Bytes: large payloads reach signals_held_bytes_per_tenant_max long before the counts.
  harness b("held-bytes", 1);
  b.publish("big", two_waits());
  b.settle();
  const std::string payload = json{{"s", std::string(60'000, 'x')}}.dump();
  const size_t fits = limits::signals_held_bytes_per_tenant_max / (payload.size() + 2);
  for (size_t i = 0; i < fits + 3; ++i) {
    b.submit("big", client::signal({"big", fmt::format("b{}", i % 2), "sig", b.clk.now_ms()}, "go",
                                   payload));
  }
  b.settle();
  rej = b.rejections();
  ASSERT_EQ(rej.size(), 3u);
  EXPECT_NE(rej[0].reason.find("signals_held_bytes_per_tenant_max"), std::string::npos)
      << rej[0].reason;
  expect_replay_rebuilds_the_state(b);
}

TEST(orchestrator_held_signals, held_signals_survive_a_restart_within_the_window) {
  harness h("held-restart", 1);
  h.publish(tenant, two_waits());
  h.settle();
  h.submit(tenant, client::signal({tenant, "late", "sig-late", h.clk.now_ms()}, "go",
                                  R"({"after":"restart"})"));
  h.submit(tenant, client::signal({tenant, "ghost", "sig-ghost", h.clk.now_ms()}, "go", "{}"));
  h.settle();
  expect_replay_rebuilds_the_state(h);

  // Stop and recover the node on the same data, 5 s into the window.
  h.n.reset();
  h.clk.advance(5'000);
  node_options o = harness::options(1, true);
  o.data_dir = h.dir;
  auto reopened = node::open(o, h.clk);
  ASSERT_TRUE(reopened.has_value()) << reopened.error().message;
  h.n = std::move(*reopened);
  ASSERT_TRUE(h.n->recover().has_value());
  EXPECT_EQ(h.n->orchestrator_of(0).next_timer_ms(), 1'700'000'000'000 + limits::signal_hold_ms)
      << "the hold window's timer is durable";

  h.start(tenant, "late", "wf");
  h.settle();
  auto e = h.exec(tenant, "late");
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->steps[0].output_json, R"({"after":"restart"})");
  EXPECT_TRUE(h.rejections().empty());
  h.clk.advance(limits::signal_hold_ms);
  h.settle();
  auto rej = h.rejections();
  ASSERT_EQ(rej.size(), 1u);
  EXPECT_EQ(rej[0].execution, "ghost");
  EXPECT_EQ(rej[0].code, static_cast<uint16_t>(rejection_code::unknown_execution));
  expect_replay_rebuilds_the_state(h);
  expect_no_decide_reads(h);
}

// Random signals before, after and without their starts, with restarts: every signal ends in
// exactly one SignalReceived or one rejection, caused by it, and the state is what replay
// rebuilds.
TEST(orchestrator_held_signals, random_early_signals_are_each_delivered_or_rejected_once) {
  const uint64_t seed = test_seed();
  SCOPED_TRACE(fmt::format("AUTERITY_TEST_SEED={}", seed));
  std::mt19937_64 rng(seed);
  auto uniform = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };

  harness h("held-property", 2);
  const std::vector<std::string> tenants{"acme", "bayside"};
  for (const std::string& t : tenants) h.publish(t, two_waits());
  h.settle();
  int signals = 0;
  std::set<std::pair<std::string, std::string>> started;
  for (int round = 0; round < 300; ++round) {
    const std::string& t = tenants[uniform(0, 1)];
    const std::string id = fmt::format("e{}", uniform(0, 20));
    const int roll = uniform(0, 99);
    if (roll < 55) {
      h.submit(t, client::signal({t, id, fmt::format("sig-{}", signals++), h.clk.now_ms()},
                                 uniform(0, 1) ? "go" : "later", "{}"));
    } else if (roll < 80 && !started.contains({t, id})) {
      h.start(t, id, "wf");
      started.emplace(t, id);
    } else if (roll == 99) {  // restart on the same data
      h.n.reset();
      node_options o = harness::options(2, true);
      o.data_dir = h.dir;
      auto reopened = node::open(o, h.clk);
      ASSERT_TRUE(reopened.has_value()) << reopened.error().message;
      h.n = std::move(*reopened);
      ASSERT_TRUE(h.n->recover().has_value());
    }
    h.clk.advance(uniform(0, 2000));
    h.settle();
  }
  h.clk.advance(limits::signal_hold_ms);
  h.settle();

  std::map<std::string, int> outcomes;  // signal record id -> SignalReceived + rejections
  for (const record& r : h.read_all(stream::executions)) {
    const fbs::Envelope* e = decode_envelope(r.value);
    if (e && (e->payload_type() == fbs::Payload::SignalReceived ||
              e->payload_type() == fbs::Payload::CommandRejected)) {
      outcomes[std::string(sv(e->causation_id()))]++;
    }
  }
  for (int i = 0; i < signals; ++i) {
    EXPECT_EQ(outcomes[fmt::format("sig-{}", i)], 1) << "sig-" << i;
  }
  std::vector<record> keep;
  std::map<fbs::HeldSignalsOutcome, int> released;
  for (const auto* r : tenant_events<fbs::HeldSignalsReleased>(h, keep)) released[r->outcome()]++;
  EXPECT_GT(released[fbs::HeldSignalsOutcome::Delivered], 0) << "the workload holds and delivers";
  EXPECT_GT(released[fbs::HeldSignalsOutcome::Expired], 0) << "the workload lets holds expire";
  expect_replay_rebuilds_the_state(h);
  expect_no_decide_reads(h);
}

}  // namespace
}  // namespace auterity
