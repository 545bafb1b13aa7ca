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
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <fmt/core.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "engine/http_client.h"
#include "processors/client.h"
#include "processors/node.h"
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
    node_options o;
    o.data_dir = (dir / "data").string();
    o.partitions = 2;
    o.workers = false;
    auto n = node::open(o, clk);
    ASSERT_TRUE(n.has_value()) << n.error().message;
    ASSERT_TRUE(
        (*n)->submit("acme", client::publish_definition({"acme", "", "pub", 1}, crm_workflow)));
    ASSERT_TRUE(
        (*n)->submit("acme", client::start_execution({"acme", "lead-1", "start", 1}, "lead-to-crm",
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
  node_options o;
  o.data_dir = (dir / "data").string();
  o.partitions = 2;
  o.workers = false;
  auto n = node::open(o, clk);
  ASSERT_TRUE(n.has_value()) << n.error().message;
  ASSERT_TRUE((*n)->recover().has_value());
  auto e = (*n)->execution("acme", "lead-1");
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(exec_status_name(e->status), "succeeded") << e->result;
  const auto types = event_types(**n, "acme", "lead-1");
  EXPECT_EQ(std::count(types.begin(), types.end(), "StepSucceeded"), 2);
  EXPECT_EQ(std::count(types.begin(), types.end(), "ExecutionSucceeded"), 1);
}

}  // namespace
}  // namespace auterity
