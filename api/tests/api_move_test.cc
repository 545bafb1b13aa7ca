// Tenant moves while the embedded engine runs (docs/tenant-moves.md, "Moves while the engine
// runs"; label api, partitions): `auterity run --http` under load — executions of every tenant
// running, signals awaited, timers pending — moves one tenant with `auterity tenants move` (the
// CLI finds the engine's API in the data directory) and another through `POST .../move`, while
// clients keep starting executions. Then, checked with independent readers of the stopped
// engine's log: every execution ended exactly once, no command was written twice, each move is
// in its tenant's history once on each side, and `replay verify` finds every partition's state
// equal to the replay of its log and every chain intact.

#include <signal.h>
#include <sys/wait.h>

#include <atomic>
#include <fstream>
#include <map>
#include <mutex>
#include <set>

#include "api/tests/api_test_util.h"
#include "engine/record.h"
#include "processors/rejection.h"
#include "replay/source.h"
#include "tests/run_command.h"

namespace auterity::api_test {
namespace {

constexpr uint32_t partitions = 3;
constexpr int executions_per_tenant = 20;
const std::vector<std::string> tenants = {"acme", "bayside", "cardinal"};

// A task, a wait for a signal with a timeout (a timer), a delay (a timer), another task.
json workflow() {
  return json::parse(R"({"workflow":"wf","version":1,"steps":[
    {"id":"a","kind":"task","action":"transform"},
    {"id":"w","kind":"wait_signal","signal":"go","timeout_ms":6000,"on_failure":"continue",
     "after":["a"]},
    {"id":"d","kind":"delay","delay_ms":400,"after":["w"]},
    {"id":"b","kind":"task","action":"transform","after":["d"]}]})");
}

// The engine's API with its local admin key.
struct api_client {
  json endpoint;
  reply call(std::string_view method, const std::string& path, const std::string& body = {}) {
    auto resp = endpoint_call(endpoint, method, path, body, 20'000);
    if (!resp) return reply{-1, "", resp.error().message, {}};
    return reply{resp->status, resp->header("content-type"), resp->body, resp->headers};
  }
};

TEST(api_move, tenants_move_under_load_while_the_engine_runs_and_every_execution_ends_once) {
  const std::string data = scratch_dir("api-move");
  const std::string out = data + ".log";
  const std::string bin = AUTERITY_BIN;
  const pid_t pid =
      spawn({bin, "run", "--data", data, "--partitions", std::to_string(partitions), "--no-fsync",
             "--http", "127.0.0.1:0", "--stats-interval-s", "0", "--http-rate", "1000000"},
            out);
  ASSERT_GT(pid, 0);
  auto ep = read_endpoint(data, pid);
  ASSERT_TRUE(ep) << "no endpoint; see " << out;
  api_client c{*ep};

  std::set<std::string> started;  // tenant/id of every start the engine took
  std::mutex mu;
  for (const std::string& t : tenants) {
    auto p = c.call("POST", fmt::format("/v1/tenants/{}/definitions?wait_ms=10000", t),
                    json{{"definition", workflow()}}.dump());
    ASSERT_EQ(p.status, 201) << p.body;
    for (int i = 0; i < executions_per_tenant; ++i) {
      const std::string id = fmt::format("e-{:03}", i);
      auto s = c.call("POST", fmt::format("/v1/tenants/{}/executions?wait_ms=10000", t),
                      json{{"execution_id", id}, {"workflow", "wf"}, {"input", {{"i", i}}}}.dump());
      ASSERT_EQ(s.status, 201) << s.body;
      started.insert(t + "/" + id);
    }
  }
  // Clients keep starting executions of every tenant while the tenants move.
  std::atomic<bool> stop{false};
  std::thread load([&] {
    for (int i = 0; !stop; ++i) {
      const std::string& t = tenants[static_cast<size_t>(i) % tenants.size()];
      const std::string id = fmt::format("late-{:04}", i);
      auto s = c.call("POST", fmt::format("/v1/tenants/{}/executions", t),
                      json{{"execution_id", id}, {"workflow", "wf"}}.dump());
      if (s.status == 202) {
        std::lock_guard lock(mu);
        started.insert(t + "/" + id);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  });

  const uint32_t acme_home = tenant_partition("acme", partitions);
  const uint32_t acme_to = (acme_home + 1) % partitions;
  const uint32_t bayside_home = tenant_partition("bayside", partitions);
  const uint32_t bayside_to = (bayside_home + 2) % partitions;
  // Through the CLI: it finds the running engine's API in --data.
  auto moved = testing::run_command(
      fmt::format("'{}' tenants move acme --to {} --data {} 2>&1", bin, acme_to, data));
  EXPECT_EQ(moved.code, 0) << moved.out;
  EXPECT_NE(moved.out.find("move through the running engine's API: accepted"), std::string::npos)
      << moved.out;
  EXPECT_NE(moved.out.find(fmt::format("moved: tenant acme decides on partition {}", acme_to)),
            std::string::npos)
      << moved.out;
  // A refusal through the CLI, in the engine's words.
  auto refused = testing::run_command(
      fmt::format("'{}' tenants move acme --to {} --data {} 2>&1", bin, acme_to, data));
  EXPECT_EQ(refused.code, 1) << refused.out;
  EXPECT_NE(refused.out.find("rejected: invalid_move (code 17)"), std::string::npos) << refused.out;
  // Through the API.
  auto api_moved =
      c.call("POST", "/v1/tenants/bayside/move?wait_ms=10000", json{{"to", bayside_to}}.dump());
  ASSERT_EQ(api_moved.status, 200) << api_moved.body;
  EXPECT_EQ(api_moved.j()["epoch"], 1);
  EXPECT_GT(api_moved.j()["running_executions"].get<int>(), 0) << api_moved.body;
  json placed;
  for (int i = 0; i < 400; ++i) {
    placed = c.call("GET", "/v1/tenants/bayside/placement").j();
    if (placed["partition"] == bayside_to && placed["moving"] == false) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(25));
  }
  EXPECT_EQ(placed["partition"], bayside_to) << placed.dump();
  EXPECT_EQ(placed["moving"], false) << placed.dump();
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  stop = true;
  load.join();

  // Half of the executions hear from their customer (sent to the API, which writes them where
  // producers hash the tenant: the old partition forwards them); the rest time out.
  for (const std::string& t : tenants) {
    for (int i = 0; i < executions_per_tenant; i += 2) {
      auto s = c.call("POST",
                      fmt::format("/v1/tenants/{}/executions/e-{:03}/signals?wait_ms=10000", t, i),
                      R"({"name":"go","payload":{"reply":"yes"}})");
      EXPECT_TRUE(s.status == 200 || s.status == 409) << t << " " << i << ": " << s.body;
    }
  }
  // Every execution ends: no tenant has a running one left.
  const bool all_ended = await_all_ended(c, tenants);
  const int status = stop_and_wait(pid);
  ASSERT_TRUE(all_ended) << "executions still running after 60 s; see " << out;
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "see " << out;

  // The log, read by an independent reader.
  auto src = open_embedded_source(data, /*with_state=*/false);
  ASSERT_TRUE(src) << src.error().message;
  std::map<std::string, int> ended;
  std::map<std::string, std::map<uint32_t, int>> moves_out, moves_in;
  std::set<std::string> commands;
  for_each_envelope(*src->events, stream::commands_step, [&](uint32_t, const fbs::Envelope& e) {
    EXPECT_TRUE(commands.insert(fmt::format("{}/{}", sv(e.tenant_id()), sv(e.record_id()))).second)
        << "command " << sv(e.record_id()) << " written twice";
  });
  for_each_envelope(*src->events, stream::executions, [&](uint32_t p, const fbs::Envelope& e) {
    const std::string tenant(sv(e.tenant_id()));
    const auto type = e.payload_type();
    if (type == fbs::Payload::ExecutionSucceeded || type == fbs::Payload::ExecutionFailed ||
        type == fbs::Payload::ExecutionCancelled) {
      EXPECT_EQ(type, fbs::Payload::ExecutionSucceeded) << sv(e.execution_id());
      ended[tenant + "/" + std::string(sv(e.execution_id()))]++;
    }
    if (type == fbs::Payload::TenantMovedOut) moves_out[tenant][p]++;
    if (type == fbs::Payload::TenantMovedIn) moves_in[tenant][p]++;
    if (auto* rej = e.payload_as_CommandRejected()) {
      // The refusal asked for (acme to the partition it was on by then), and a signal that came
      // after its execution timed out and ended (answered 409).
      const std::string reason(sv(rej->reason()));
      EXPECT_TRUE(reason.find("already on partition") != std::string::npos ||
                  static_cast<rejection_code>(rej->code()) == rejection_code::execution_finished)
          << reason;
    }
  });
  EXPECT_EQ(ended.size(), started.size());
  for (const std::string& id : started) EXPECT_EQ(ended[id], 1) << id << " ended " << ended[id];
  EXPECT_EQ(commands.size(), 2 * started.size()) << "steps a and b of every execution, once";
  EXPECT_EQ(moves_out["acme"], (std::map<uint32_t, int>{{acme_home, 1}}));
  EXPECT_EQ(moves_in["acme"], (std::map<uint32_t, int>{{acme_to, 1}}));
  EXPECT_EQ(moves_out["bayside"], (std::map<uint32_t, int>{{bayside_home, 1}}));
  EXPECT_EQ(moves_in["bayside"], (std::map<uint32_t, int>{{bayside_to, 1}}));
  EXPECT_TRUE(moves_out["cardinal"].empty());
  src->events.reset();  // the read-only open releases the directory
  // State equals the replay of each partition's log; every chain verifies across the moves.
  auto verify = testing::run_command(
      fmt::format("'{}' replay verify --data {} --no-progress 2>&1", bin, data));
  EXPECT_EQ(verify.code, 0) << verify.out;
  std::cerr << fmt::format("{} executions ended once each across two moves under load\n",
                           started.size());
  std::filesystem::remove_all(data);
  std::filesystem::remove(out);
}

}  // namespace
}  // namespace auterity::api_test
