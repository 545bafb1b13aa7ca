// Workflow semantics as a user sees them: what runs, in which order, with which input, and how
// failures, retries, timeouts, signals, delays and cancels end up in the history.

#include <nlohmann/json.hpp>

#include "processors/limits.h"
#include "processors/rejection.h"
#include "processors/tests/harness.h"

namespace auterity {
namespace {

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
  EXPECT_NE(e->steps[0].error.find("no AI model endpoint"), std::string::npos);
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

}  // namespace
}  // namespace auterity
