// The connectors end to end, through the engine: a worker process killed after its side effect
// but before its ack, AI routing against a provider speaking the OpenAI protocol (budget,
// failover, costs in the history) and notification policy (quiet hours, rate limits). Every
// remote side is a real server on loopback (fake_services.py, fake_ai.py).

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <fmt/core.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "engine/http_client.h"
#include "node/node.h"
#include "processors/client.h"
#include "replay/timeline.h"
#include "tests/connectors/service_process.h"

#ifndef AUTERITY_BIN
#error "define AUTERITY_BIN"
#endif

extern char** environ;

namespace auterity {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using testing::service_process;

constexpr int64_t wait_ms_max = 60'000;  // longest wait for anything in these tests

json get_json(const service_process& s, const std::string& path) {
  http_request r;
  r.method = "GET";
  r.url = s.url(path);
  auto a = http_call(r);
  if (!a || a->status != 200) return json();
  return json::parse(a->body, nullptr, false);
}

void post_json(const service_process& s, const std::string& path, const json& body) {
  http_request r;
  r.url = s.url(path);
  r.headers = {{"Content-Type", "application/json"}};
  r.body = body.dump();
  auto a = http_call(r);
  ASSERT_TRUE(a.has_value()) << a.error().message;
  ASSERT_EQ(a->status, 200) << a->body;
}

fs::path fresh_dir(const std::string& name) {
  fs::path d = fs::path(::testing::TempDir()) / fmt::format("auterity-{}-{}", name, ::getpid());
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

void write_file(const fs::path& p, const std::string& text) {
  std::ofstream out(p, std::ios::binary);
  out << text;
}

pid_t spawn(const std::vector<std::string>& args, const fs::path& out) {
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, out.c_str(), O_WRONLY | O_CREAT | O_APPEND,
                                   0644);
  posix_spawn_file_actions_adddup2(&fa, STDOUT_FILENO, STDERR_FILENO);
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  pid_t pid = -1;
  const int rc = posix_spawn(&pid, argv[0], &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  return rc == 0 ? pid : -1;
}

std::optional<int> wait_exit(pid_t pid, int64_t timeout_ms) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (std::chrono::steady_clock::now() < end) {
    int status = 0;
    if (::waitpid(pid, &status, WNOHANG) == pid) return status;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return std::nullopt;
}

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// A node on dir/data with two partitions and no workers: the kill test submits and reads with
// it while the `auterity run` process does the work.
node_options node_without_workers(const fs::path& dir) {
  node_options o;
  o.data_dir = (dir / "data").string();
  o.partitions = 2;
  o.workers = false;
  return o;
}

// A node on dir/data with two partitions whose workers run the connectors of
// dir/connectors.json.
node_options node_with_connectors(const fs::path& dir) {
  node_options o;
  o.data_dir = (dir / "data").string();
  o.partitions = 2;
  o.fsync = false;
  o.connectors_file = (dir / "connectors.json").string();
  return o;
}

std::vector<std::string> event_types(node& n, std::string_view tenant, std::string_view id) {
  const uint32_t p = tenant_partition(tenant, n.partitions());
  auto entries = load_timeline(n.get_log(), p, n.partition(p).store(), tenant, id);
  std::vector<std::string> out;
  if (entries) {
    for (const auto& e : *entries) out.push_back(e.type);
  }
  return out;
}

// ------------------------------------------------------------------ killed after the effect

constexpr const char* crm_workflow = R"({
  "workflow": "lead-to-crm", "version": 1,
  "steps": [
    {"id": "crm", "kind": "notify",
     "input": {"channel": "webhook", "to": "crm", "subject": "new lead",
               "body": "{{input.name}} wants a test drive"}},
    {"id": "done", "kind": "task", "action": "transform", "after": ["crm"],
     "input": {"crm": "{{steps.crm.output}}"}}
  ]
})";

// The webhook server records the effect, then answers only after 30 s: the worker process is
// SIGKILLed while it waits, so its ack was never committed. The restarted engine redelivers
// the command with the same idempotency key; the server answers it from its record without a
// second effect, and the execution completes once.
TEST(connectors_e2e, worker_killed_after_its_side_effect_completes_once) {
  service_process web({"python3", CONNECTOR_TEST_DIR "/fake_services.py"});
  ASSERT_NE(web.port(), 0) << web.error();
  post_json(web, "/_script",
            {{"path_prefix", "/hooks/"}, {"responses", {{{"delay_after_effect_ms", 30000}}}}});
  const fs::path dir = fresh_dir("kill-effect");
  const fs::path config = dir / "connectors.json";
  write_file(
      config,
      json{{"notify", {{"webhook", {{"api", "webhook"}, {"url", web.url("/hooks/crm")}}}}}}.dump());
  {
    system_clock clk;
    auto n = node::open(node_without_workers(dir), clk);
    ASSERT_TRUE(n.has_value()) << n.error().message;
    ASSERT_TRUE(
        (*n)->submit("acme", client::publish_definition({"acme", "", "pub", 0}, crm_workflow)));
    ASSERT_TRUE(
        (*n)->submit("acme", client::start_execution({"acme", "lead-1", "start", 0}, "lead-to-crm",
                                                     0, R"({"name":"Maria"})")));
  }
  const std::vector<std::string> run = {AUTERITY_BIN,
                                        "run",
                                        "--data",
                                        (dir / "data").string(),
                                        "--connectors",
                                        config.string(),
                                        "--until-quiet",
                                        "--stats-interval-s",
                                        "0"};
  const fs::path out = dir / "engine.out";
  pid_t pid = spawn(run, out);
  ASSERT_GT(pid, 0);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(wait_ms_max);
  while (get_json(web, "/_effects").size() < 1 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_EQ(get_json(web, "/_effects").size(), 1u) << slurp(out);
  ::kill(pid, SIGKILL);
  ASSERT_TRUE(wait_exit(pid, wait_ms_max).has_value());

  pid = spawn(run, out);
  ASSERT_GT(pid, 0);
  auto status = wait_exit(pid, wait_ms_max);
  if (!status) ::kill(pid, SIGKILL), ::waitpid(pid, nullptr, 0);
  ASSERT_TRUE(status.has_value()) << "the restarted engine did not finish\n" << slurp(out);
  ASSERT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << slurp(out);

  // The server saw the command twice, with one key, and made one effect.
  std::vector<std::string> keys;
  for (const json& r : get_json(web, "/_requests")) {
    if (r["path"].get<std::string>().starts_with("/hooks/")) {
      keys.push_back(r["headers"].value("idempotency-key", ""));
    }
  }
  ASSERT_EQ(keys.size(), 2u);
  EXPECT_EQ(keys[0], "lead-1/crm/1");
  EXPECT_EQ(keys[1], keys[0]);
  EXPECT_EQ(get_json(web, "/_effects").size(), 1u);

  system_clock clk;
  auto n = node::open(node_without_workers(dir), clk);
  ASSERT_TRUE(n.has_value()) << n.error().message;
  ASSERT_TRUE((*n)->recover().has_value());
  auto e = (*n)->execution("acme", "lead-1");
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(exec_status_name(e->status), "succeeded") << e->result;
  const auto types = event_types(**n, "acme", "lead-1");
  EXPECT_EQ(std::count(types.begin(), types.end(), "StepSucceeded"), 2);
  EXPECT_EQ(std::count(types.begin(), types.end(), "ExecutionSucceeded"), 1);
}

// ------------------------------------------------------------------ AI routing, in process

// The events of one execution, decoded, in log order.
struct event {
  std::string type;
  std::string bytes;
  const fbs::Envelope* env() const { return decode_envelope(bytes); }
};

std::vector<event> events_of(node& n, std::string_view tenant, std::string_view id) {
  const uint32_t p = tenant_partition(tenant, n.partitions());
  std::vector<event> out;
  std::vector<record> batch;
  for (uint64_t from = 0; from < *n.get_log().end_offset(stream::executions, p);) {
    batch.clear();
    auto r = n.get_log().read(stream::executions, p, from, 1024, 8 << 20, batch);
    if (!r || batch.empty()) break;
    for (const record& rec : batch) {
      const fbs::Envelope* e = decode_envelope(rec.value);
      if (e && sv(e->tenant_id()) == tenant && sv(e->execution_id()) == id) {
        out.push_back({std::string(payload_name(e->payload_type())), rec.value});
      }
    }
    from = batch.back().offset + 1;
  }
  return out;
}

std::vector<const fbs::Envelope*> of_type(const std::vector<event>& events, std::string_view t) {
  std::vector<const fbs::Envelope*> out;
  for (const event& e : events) {
    if (e.type == t) out.push_back(e.env());
  }
  return out;
}

int64_t priced(int64_t tokens, int64_t per_1k) { return (tokens * per_1k + 999) / 1000; }

constexpr const char* draft_workflow = R"({
  "workflow": "draft-reply", "version": 1,
  "steps": [
    {"id": "draft", "kind": "ai", "tier": "standard", "timeout_ms": 20000,
     "input": {"prompt": "Write a two-line reply to {{input.name}} about a test drive.",
               "max_tokens": 100},
     "on_failure": "continue"},
    {"id": "fallback", "kind": "task", "action": "transform", "after": ["draft"],
     "when": {"path": "steps.draft.status", "equals": "failed"},
     "input": {"text": "Thanks {{input.name}}, we will call you."}}
  ]
})";

// An engine (embedded log, real clock, threads) whose AI worker talks to fake_ai.py.
struct ai_fixture {
  service_process ai{{"python3", CONNECTOR_TEST_DIR "/fake_ai.py"}};
  fs::path dir;
  system_clock clk;
  std::unique_ptr<node> n;

  explicit ai_fixture(const std::string& name) {
    dir = fresh_dir(name);
    ::setenv("AUTERITY_TEST_OPENAI_KEY", "sk-test-openai", 1);
    json provider = {{"api", "openai"},
                     {"base_url", ai.url("/v1")},
                     {"api_key", "env:AUTERITY_TEST_OPENAI_KEY"},
                     {"model", "gpt-test"}};
    json config = {{"ai", {{"providers", {{"cheap", provider}, {"good", provider}}}}}};
    write_file(dir / "connectors.json", config.dump());
    auto opened = node::open(node_with_connectors(dir), clk);
    if (!opened) {
      ADD_FAILURE() << opened.error().message;
      return;
    }
    n = std::move(*opened);
    EXPECT_TRUE(n->recover().has_value());
    n->start();
  }
  ~ai_fixture() {
    if (n) n->stop();
  }

  void submit(const std::string& bytes) {
    auto r = n->submit("acme", bytes);
    ASSERT_TRUE(r.has_value()) << r.error().message;
  }
  // Starts an execution and waits until it has ended.
  execution_state run(const std::string& id) {
    submit(client::start_execution({"acme", id, "start-" + id, clk.now_ms()}, "draft-reply", 0,
                                   R"({"name":"Maria"})"));
    const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(wait_ms_max);
    while (std::chrono::steady_clock::now() < end) {
      auto e = n->execution("acme", id);
      if (e && e->status != exec_status::running) return *e;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ADD_FAILURE() << id << " did not end";
    return {};
  }
};

std::string policy(const json& candidates, const json& budget) {
  json ai = {{"candidates", candidates}};
  if (!budget.is_null()) ai["budget"] = budget;
  return json{{"ai", ai}}.dump();
}

json candidate(const char* provider, const char* model, const char* tier, int64_t in, int64_t out) {
  return {{"provider", provider},
          {"model", model},
          {"tier", tier},
          {"input_per_1k_micros", in},
          {"output_per_1k_micros", out}};
}

// The cheapest candidate fails (its provider answers 500); the router fails over to the next
// one without using a retry, and the history says which model answered, why, and what it cost.
TEST(connectors_e2e, ai_failover_to_the_next_candidate_with_costs_in_history) {
  ai_fixture f("ai-failover");
  ASSERT_NE(f.ai.port(), 0) << f.ai.error();
  ASSERT_TRUE(f.n);
  f.submit(client::publish_definition({"acme", "", "pub", 0}, draft_workflow));
  f.submit(client::publish_policy({"acme", "", "policy-1", 0},
                                  policy({candidate("cheap", "always-500", "standard", 100, 200),
                                          candidate("good", "gpt-test", "premium", 1000, 2000)},
                                         nullptr)));
  const execution_state e = f.run("lead-1");
  ASSERT_EQ(exec_status_name(e.status), "succeeded") << e.result;

  const auto events = events_of(*f.n, "acme", "lead-1");
  const auto routed = of_type(events, "AiRouted");
  ASSERT_EQ(routed.size(), 2u);
  const auto* first = routed[0]->payload_as_AiRouted();
  const auto* second = routed[1]->payload_as_AiRouted();
  EXPECT_EQ(sv(first->provider()), "cheap");
  EXPECT_EQ(sv(first->model()), "always-500");
  EXPECT_FALSE(first->failover());
  EXPECT_EQ(sv(second->provider()), "good");
  EXPECT_EQ(sv(second->model()), "gpt-test");
  EXPECT_TRUE(second->failover());
  EXPECT_NE(sv(second->reason()).find("cheap/always-500"), std::string_view::npos)
      << sv(second->reason());
  EXPECT_EQ(first->estimated_output_tokens(), 100u);
  EXPECT_EQ(first->estimated_cost_micros(),
            priced(first->estimated_input_tokens(), 100) + priced(100, 200));

  const auto usage = of_type(events, "AiUsageRecorded");
  ASSERT_EQ(usage.size(), 1u);
  const auto* u = usage[0]->payload_as_AiUsageRecorded();
  EXPECT_EQ(sv(u->provider()), "good");
  EXPECT_GT(u->input_tokens(), 0u);
  EXPECT_GT(u->output_tokens(), 0u);
  EXPECT_EQ(u->cost_micros(), priced(u->input_tokens(), 1000) + priced(u->output_tokens(), 2000));
  EXPECT_TRUE(of_type(events, "StepRetryScheduled").empty()) << "failover used a retry";
  EXPECT_EQ(e.steps[1].status, step_status::skipped) << "the fallback ran";

  // The provider saw both calls, each with its own idempotency key.
  std::vector<std::pair<std::string, std::string>> calls;
  for (const json& r : get_json(f.ai, "/_requests")) {
    if (!r["path"].get<std::string>().ends_with("/chat/completions")) continue;
    calls.emplace_back(r["body"].value("model", ""), r["headers"].value("idempotency-key", ""));
  }
  ASSERT_EQ(calls.size(), 2u);
  EXPECT_EQ(calls[0], std::make_pair(std::string("always-500"), std::string("lead-1/draft/1")));
  EXPECT_EQ(calls[1], std::make_pair(std::string("gpt-test"), std::string("lead-1/draft/2")));
}

// A day budget: executions spend it; the router's view of the spend equals the sum of the
// recorded costs; once a call no longer fits it downgrades to the basic tier, and under a
// "reject" policy the step fails with the budget reason and the workflow takes its fallback.
TEST(connectors_e2e, ai_budget_exhaustion_downgrades_then_rejects) {
  ai_fixture f("ai-budget");
  ASSERT_NE(f.ai.port(), 0) << f.ai.error();
  ASSERT_TRUE(f.n);
  f.submit(client::publish_definition({"acme", "", "pub", 0}, draft_workflow));
  const json candidates = {candidate("good", "gpt-test", "standard", 1000, 2000),
                           candidate("cheap", "gpt-basic", "basic", 10, 20)};
  // One estimate is ~ 15 input + 100 output tokens = ~215 micro-USD: a budget of 600 lets a
  // few calls through.
  f.submit(client::publish_policy(
      {"acme", "", "policy-1", 0},
      policy(candidates, {{"day_micros", 600}, {"when_exhausted", "downgrade"}})));
  int64_t spent = 0;
  bool downgraded = false;
  for (int i = 1; i <= 12 && !downgraded; ++i) {
    const std::string id = fmt::format("lead-{}", i);
    const execution_state e = f.run(id);
    ASSERT_EQ(exec_status_name(e.status), "succeeded") << e.result;
    const auto events = events_of(*f.n, "acme", id);
    const auto routed = of_type(events, "AiRouted");
    ASSERT_EQ(routed.size(), 1u);
    const auto* r = routed[0]->payload_as_AiRouted();
    EXPECT_EQ(r->day_spent_micros(), spent) << id;
    EXPECT_EQ(r->day_budget_micros(), 600);
    if (sv(r->provider()) == "cheap") {
      downgraded = true;
      EXPECT_EQ(sv(r->tier_chosen()), "basic");
      EXPECT_EQ(sv(r->tier_requested()), "standard");
      EXPECT_GT(r->estimated_cost_micros(), 0);
      // The standard candidate's estimate did not fit what was left.
      EXPECT_GT(priced(r->estimated_input_tokens(), 1000) + priced(100, 2000), 600 - spent);
    } else {
      EXPECT_EQ(sv(r->provider()), "good");
    }
    for (const auto* u : of_type(events, "AiUsageRecorded")) {
      spent += u->payload_as_AiUsageRecorded()->cost_micros();
    }
  }
  ASSERT_TRUE(downgraded) << "the budget never ran out";

  f.submit(client::publish_policy(
      {"acme", "", "policy-2", 0},
      policy(candidates, {{"day_micros", 600}, {"when_exhausted", "reject"}})));
  // The budget is nearly spent: the next standard call cannot fit, and rejecting fails it.
  const execution_state e = f.run("lead-rejected");
  ASSERT_EQ(exec_status_name(e.status), "succeeded") << e.result;
  EXPECT_EQ(e.steps[0].status, step_status::failed);
  EXPECT_NE(e.steps[0].error.find("budget"), std::string::npos) << e.steps[0].error;
  EXPECT_EQ(e.steps[1].status, step_status::succeeded) << "the fallback did not run";
  const auto events = events_of(*f.n, "acme", "lead-rejected");
  EXPECT_TRUE(of_type(events, "AiUsageRecorded").empty());
  bool told = false;
  for (const event& ev : events) {
    if (ev.type == "AiRouted") told = sv(ev.env()->payload_as_AiRouted()->provider()).empty();
  }
  EXPECT_TRUE(told) << "no AiRouted event explains the rejection";
}

// Every tenant's AI spend and budgets from every partition's orchestrator (ai_spend_top, what
// /metrics exports), by tenant.
std::map<std::string, ai_spend_sample> spend_view(node& n, int64_t now_ms, size_t k = 20) {
  std::map<std::string, ai_spend_sample> out;
  for (uint32_t p = 0; p < n.partitions(); ++p) {
    for (ai_spend_sample& s : n.orchestrator_of(p).ai_spend_top(now_ms, k)) {
      out.emplace(s.tenant, std::move(s));
    }
  }
  return out;
}

// The spend /metrics exports is the applied state's: it equals the costs recorded in the log
// live, after a restart from the state checkpoint, and after a full replay of the log into a
// fresh state store; a tenant with a budget and no spend has no entry (nothing to watch yet).
TEST(connectors_e2e, ai_spend_view_equals_recorded_costs_live_and_after_replay) {
  ai_fixture f("ai-spend-view");
  ASSERT_NE(f.ai.port(), 0) << f.ai.error();
  ASSERT_TRUE(f.n);
  f.submit(client::publish_definition({"acme", "", "pub", 0}, draft_workflow));
  const json candidates = {candidate("good", "gpt-test", "standard", 1000, 2000)};
  f.submit(client::publish_policy(
      {"acme", "", "policy-1", 0},
      policy(candidates, {{"day_micros", 100000}, {"month_micros", 900000}})));
  auto submitted = f.n->submit(
      "bayside", client::publish_policy({"bayside", "", "policy-b", 0},
                                        policy(candidates, {{"month_micros", 5000000}})));
  ASSERT_TRUE(submitted.has_value()) << submitted.error().message;
  int64_t spent = 0;
  for (int i = 1; i <= 3; ++i) {
    const std::string id = fmt::format("lead-{}", i);
    ASSERT_EQ(exec_status_name(f.run(id).status), "succeeded");
    for (const auto* u : of_type(events_of(*f.n, "acme", id), "AiUsageRecorded")) {
      spent += u->payload_as_AiUsageRecorded()->cost_micros();
    }
  }
  ASSERT_GT(spent, 0);

  auto expect_view = [&](node& n, const char* when) {
    const auto view = spend_view(n, f.clk.now_ms());
    ASSERT_EQ(view.size(), 1u) << when << ": only tenants with spend";
    const ai_spend_sample& acme = view.at("acme");
    EXPECT_EQ(acme.day_spent_micros, spent) << when;
    EXPECT_EQ(acme.month_spent_micros, spent) << when;
    EXPECT_EQ(acme.day_budget_micros, 200000) << when;
    EXPECT_EQ(acme.month_budget_micros, 900000) << when;
    // A day later the day's spend is 0; the month's stays (unless the month ended too).
    const int64_t tomorrow = f.clk.now_ms() + 86'400'000;
    EXPECT_EQ(spend_view(n, tomorrow).at("acme").day_spent_micros, 0) << when;
  };
  // A budget raised later applies to the entry at once.
  f.submit(client::publish_policy(
      {"acme", "", "policy-2", 0},
      policy(candidates, {{"day_micros", 200000}, {"month_micros", 900000}})));
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (spend_view(*f.n, f.clk.now_ms()).at("acme").day_budget_micros != 200000 &&
         std::chrono::steady_clock::now() < end) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_EQ(spend_view(*f.n, f.clk.now_ms()).at("acme").day_budget_micros, 200000);
  expect_view(*f.n, "live");

  // Restarted from the state checkpoint, then from nothing but the log.
  f.n->stop();
  f.n.reset();
  for (const bool fresh_state : {false, true}) {
    if (fresh_state) fs::remove_all(f.dir / "data" / "state");
    auto opened = node::open(node_with_connectors(f.dir), f.clk);
    ASSERT_TRUE(opened.has_value()) << opened.error().message;
    ASSERT_TRUE((*opened)->recover().has_value());
    expect_view(**opened, fresh_state ? "after a full replay" : "after a restart");
  }
}

// ------------------------------------------------------- notification policy, injected clock

constexpr const char* notify_workflow = R"({
  "workflow": "notify-lead", "version": 1,
  "steps": [
    {"id": "tell", "kind": "notify",
     "input": {"channel": "webhook", "to": "{{input.to}}", "body": "Lead {{input.to}}"}}
  ]
})";

// Runs every partition and worker on this thread until nothing moves.
void drain(node& n) {
  for (int idle = 0, i = 0; idle < 3 && i < 1000; ++i) {
    auto r = n.step();
    ASSERT_TRUE(r.has_value()) << r.error().message;
    idle = *r == 0 ? idle + 1 : 0;
  }
}

// A rate limit of 2 webhooks a minute and quiet hours 21:00-08:00 (UTC): the third lead waits
// for the next minute, a lead at 22:00 waits for 08:00; each goes out when its time comes.
TEST(connectors_e2e, quiet_hours_and_rate_limits_defer_real_notifications) {
  service_process web({"python3", CONNECTOR_TEST_DIR "/fake_services.py"});
  ASSERT_NE(web.port(), 0) << web.error();
  const fs::path dir = fresh_dir("notify-policy");
  write_file(
      dir / "connectors.json",
      json{{"notify", {{"webhook", {{"api", "webhook"}, {"url", web.url("/hooks/crm")}}}}}}.dump());
  constexpr int64_t day = 86'400'000, hour = 3'600'000;
  // Noon UTC two days from now: the injected clock stays ahead of the wall clock, so the
  // connectors' deadlines (taken from it) are in the future for the real HTTP calls.
  system_clock wall;
  const int64_t noon = (wall.now_ms() / day + 2) * day + 12 * hour;
  manual_clock clk(noon);
  auto n = node::open(node_with_connectors(dir), clk);
  ASSERT_TRUE(n.has_value()) << n.error().message;
  ASSERT_TRUE((*n)->recover().has_value());
  auto submit = [&](const std::string& bytes) {
    auto r = (*n)->submit("acme", bytes);
    ASSERT_TRUE(r.has_value()) << r.error().message;
  };
  submit(client::publish_definition({"acme", "", "pub", noon}, notify_workflow));
  submit(client::publish_policy(
      {"acme", "", "policy", noon},
      json{{"notify",
            {{"rate_limits", {{{"channel", "webhook"}, {"max", 2}, {"per_ms", 60'000}}}},
             {"quiet_hours", {{"start", "21:00"}, {"end", "08:00"}, {"channels", {"webhook"}}}}}}}
          .dump()));
  for (int i = 1; i <= 3; ++i) {
    const std::string id = fmt::format("lead-{}", i);
    submit(client::start_execution({"acme", id, "start-" + id, noon}, "notify-lead", 0,
                                   json{{"to", id}}.dump()));
  }
  drain(**n);
  EXPECT_EQ(get_json(web, "/_effects").size(), 2u);
  auto deferred = of_type(events_of(**n, "acme", "lead-3"), "NotificationDeferred");
  ASSERT_EQ(deferred.size(), 1u);
  EXPECT_EQ(sv(deferred[0]->payload_as_NotificationDeferred()->reason()), "rate_limit");
  EXPECT_EQ(deferred[0]->payload_as_NotificationDeferred()->until_ms(), noon + 60'000);

  clk.set(noon + 60'000);
  drain(**n);
  EXPECT_EQ(get_json(web, "/_effects").size(), 3u);
  EXPECT_EQ(exec_status_name((*n)->execution("acme", "lead-3")->status), "succeeded");

  const int64_t ten_pm = noon + 10 * hour;
  clk.set(ten_pm);
  submit(client::start_execution({"acme", "lead-night", "start-night", ten_pm}, "notify-lead", 0,
                                 R"({"to":"night"})"));
  drain(**n);
  EXPECT_EQ(get_json(web, "/_effects").size(), 3u) << "sent during quiet hours";
  deferred = of_type(events_of(**n, "acme", "lead-night"), "NotificationDeferred");
  ASSERT_EQ(deferred.size(), 1u);
  EXPECT_EQ(sv(deferred[0]->payload_as_NotificationDeferred()->reason()), "quiet_hours");
  const int64_t eight_am = noon + 20 * hour;
  EXPECT_EQ(deferred[0]->payload_as_NotificationDeferred()->until_ms(), eight_am);

  clk.set(eight_am - 1000);
  drain(**n);
  EXPECT_EQ(get_json(web, "/_effects").size(), 3u);
  clk.set(eight_am);
  drain(**n);
  EXPECT_EQ(get_json(web, "/_effects").size(), 4u);
  EXPECT_EQ(exec_status_name((*n)->execution("acme", "lead-night")->status), "succeeded");
}

}  // namespace
}  // namespace auterity
