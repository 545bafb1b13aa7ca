// The partition count changed while the embedded engine runs (docs/tenant-moves.md, "Moves
// while the engine runs"; labels api, partitions): `auterity run --http` on two partitions
// under load — executions of every tenant running with timers pending, clients starting more
// all along — is scaled to 4 with `auterity partitions scale --to 4` (the CLI finds the
// engine's API in the data directory: POST /v1/partitions/scale, then GET /v1/partitions while
// the engine stops, scales its log and opens again), then down to 3. Then, checked with
// independent readers of the stopped engine's log: every execution a client was told started
// ended exactly once, no command was written twice, tenants moved onto the new partitions and
// off the retired one, nothing was refused, and `replay verify` finds every partition's state
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
#include "replay/source.h"
#include "tests/run_command.h"

namespace auterity::api_test {
namespace {

const std::vector<std::string> tenants = {"acme", "bayside", "cardinal", "dorado", "eastside"};
constexpr int executions_per_tenant = 12;

// A task, a delay (a timer that must fire once, across the scale), another task.
json workflow() {
  return json::parse(R"({"workflow":"wf","version":1,"steps":[
    {"id":"a","kind":"task","action":"transform"},
    {"id":"d","kind":"delay","delay_ms":500,"after":["a"]},
    {"id":"b","kind":"task","action":"transform","after":["d"]}]})");
}

// The engine's API through its current endpoint file (the port changes when it reopens).
struct api_client {
  std::string data;
  pid_t pid;
  std::mutex mu;
  json endpoint;
  reply call(std::string_view method, const std::string& path, const std::string& body = {}) {
    json ep;
    {
      std::lock_guard lock(mu);
      ep = endpoint;
    }
    auto resp = endpoint_call(ep, method, path, body, 20'000);
    if (!resp) {
      // Down while the engine scales: read the endpoint again for the next call.
      std::ifstream in(data + "/api/endpoint.json");
      json j = json::parse(in, nullptr, false);
      if (j.is_object() && j.value("pid", 0) == pid) {
        std::lock_guard lock(mu);
        endpoint = j;
      }
      return reply{-1, "", resp.error().message, {}};
    }
    return reply{resp->status, resp->header("content-type"), resp->body, resp->headers};
  }
};

// "<n> move(s) published" in a scale's output.
size_t moves_published(const std::string& text) {
  const size_t at = text.find(" move(s) published");
  if (at == std::string::npos) return 0;
  size_t begin = at;
  while (begin > 0 && std::isdigit(static_cast<unsigned char>(text[begin - 1]))) --begin;
  return static_cast<size_t>(std::atoi(text.c_str() + begin));
}

TEST(api_scale, the_partition_count_changes_while_the_engine_runs_and_every_execution_ends_once) {
  const std::string data = scratch_dir("api-scale");
  const std::string out = data + ".log";
  const std::string bin = AUTERITY_BIN;
  const pid_t pid = spawn({bin, "run", "--data", data, "--partitions", "2", "--no-fsync", "--http",
                           "127.0.0.1:0", "--stats-interval-s", "0", "--http-rate", "1000000"},
                          out);
  ASSERT_GT(pid, 0);
  auto ep = read_endpoint(data, pid);
  ASSERT_TRUE(ep) << "no endpoint; see " << out;
  api_client c{data, pid, {}, *ep};

  std::set<std::string> started;  // tenant/id of every start the engine took
  std::mutex started_mu;
  for (const std::string& t : tenants) {
    auto p = c.call("POST", fmt::format("/v1/tenants/{}/definitions?wait_ms=10000", t),
                    json{{"definition", workflow()}}.dump());
    ASSERT_EQ(p.status, 201) << p.body;
    for (int i = 0; i < executions_per_tenant; ++i) {
      const std::string id = fmt::format("e-{:03}", i);
      auto s = c.call("POST", fmt::format("/v1/tenants/{}/executions", t),
                      json{{"execution_id", id}, {"workflow", "wf"}}.dump());
      ASSERT_EQ(s.status, 202) << s.body;
      started.insert(t + "/" + id);
    }
  }
  // Clients keep starting executions of every tenant while the engine scales; a start the
  // engine did not answer 202 (it was down) is not counted, and tried again under a new id.
  std::atomic<bool> stop{false};
  std::atomic<int> refused_while_scaling{0};
  std::thread load([&] {
    for (int i = 0; !stop; ++i) {
      const std::string& t = tenants[static_cast<size_t>(i) % tenants.size()];
      const std::string id = fmt::format("late-{:04}", i);
      auto s = c.call("POST", fmt::format("/v1/tenants/{}/executions", t),
                      json{{"execution_id", id}, {"workflow", "wf"}}.dump());
      if (s.status == 202) {
        std::lock_guard lock(started_mu);
        started.insert(t + "/" + id);
      } else {
        refused_while_scaling++;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(500));

  // Refused: a plan needs the state stores the engine holds; a bad body; a key for one tenant.
  auto dry = testing::run_command(
      fmt::format("'{}' partitions scale --to 4 --dry-run --data {} 2>&1", bin, data));
  EXPECT_EQ(dry.code, 1) << dry.out;
  EXPECT_NE(dry.out.find("--dry-run reads the state stores"), std::string::npos) << dry.out;
  auto bad = c.call("POST", "/v1/partitions/scale", R"({"to":0})");
  EXPECT_EQ(bad.status, 400) << bad.body;
  auto before = c.call("GET", "/v1/partitions");
  ASSERT_EQ(before.status, 200) << before.body;
  EXPECT_EQ(before.j()["partitions"], 2);
  EXPECT_EQ(before.j()["scale"]["state"], "none");

  // Up: 2 -> 4, through the CLI, while the clients go on.
  auto up =
      testing::run_command(fmt::format("'{}' partitions scale --to 4 --data {} 2>&1", bin, data));
  ASSERT_EQ(up.code, 0) << up.out;
  EXPECT_NE(up.out.find("accepted by the running engine"), std::string::npos) << up.out;
  EXPECT_NE(up.out.find("move(s) published on ingress: the engine runs them now"),
            std::string::npos)
      << up.out;
  EXPECT_EQ(up.out.find(" 0 move(s) published"), std::string::npos) << up.out;
  EXPECT_NE(up.out.find("the engine runs 4 partitions again"), std::string::npos) << up.out;
  // The moves run before the next scale plans (a second move of a tenant still installing is
  // refused): every tenant the scale moved is settled where it went.
  const size_t published = moves_published(up.out);
  EXPECT_GT(published, 0u) << up.out;
  size_t settled = 0;
  for (int round = 0; round < 200 && settled < published; ++round) {
    settled = 0;
    for (const std::string& t : tenants) {
      json placed = c.call("GET", fmt::format("/v1/tenants/{}/placement", t)).j();
      settled +=
          placed.is_object() && placed.value("epoch", 0) >= 1 && !placed.value("moving", true);
    }
    if (settled < published) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_EQ(settled, published) << "the moves of the scale to 4 did not settle; see " << out;
  // Down: 4 -> 3, partition 3 retired and its tenants moved off.
  auto down =
      testing::run_command(fmt::format("'{}' partitions scale --to 3 --data {} 2>&1", bin, data));
  ASSERT_EQ(down.code, 0) << down.out;
  EXPECT_NE(down.out.find("the engine runs 4 partitions again"), std::string::npos) << down.out;
  auto after = c.call("GET", "/v1/partitions");
  for (int i = 0; i < 100 && after.status != 200; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    after = c.call("GET", "/v1/partitions");
  }
  ASSERT_EQ(after.status, 200) << after.body;
  EXPECT_EQ(after.j()["partitions"], 4);
  EXPECT_EQ(after.j()["base"], 2);
  EXPECT_EQ(after.j()["retired"], json::array({3}));
  EXPECT_EQ(after.j()["scale"]["state"], "done");
  EXPECT_EQ(after.j()["scale"]["to"], 3);
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  stop = true;
  load.join();

  // Every execution ends: no tenant has a running one left.
  const bool all_ended = await_all_ended(c, tenants);
  const int status = stop_and_wait(pid);
  ASSERT_TRUE(all_ended) << "executions still running after 60 s; see " << out;
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "see " << out;

  // The log, read by an independent reader.
  auto src = open_embedded_source(data, /*with_state=*/false);
  ASSERT_TRUE(src) << src.error().message;
  ASSERT_EQ(src->events->partition_count(), 4u);
  std::map<std::string, int> ended;
  std::set<uint32_t> moved_in;
  int moved_off_retired = 0;
  std::set<std::string> commands;
  for_each_envelope(*src->events, stream::commands_step, [&](uint32_t, const fbs::Envelope& e) {
    EXPECT_TRUE(commands.insert(fmt::format("{}/{}", sv(e.tenant_id()), sv(e.record_id()))).second)
        << "command " << sv(e.record_id()) << " written twice";
  });
  for_each_envelope(*src->events, stream::executions, [&](uint32_t p, const fbs::Envelope& e) {
    const auto type = e.payload_type();
    if (type == fbs::Payload::ExecutionSucceeded || type == fbs::Payload::ExecutionFailed ||
        type == fbs::Payload::ExecutionCancelled) {
      EXPECT_EQ(type, fbs::Payload::ExecutionSucceeded) << sv(e.execution_id());
      ended[fmt::format("{}/{}", sv(e.tenant_id()), sv(e.execution_id()))]++;
    }
    if (type == fbs::Payload::TenantMovedIn && p >= 2) moved_in.insert(p);
    if (type == fbs::Payload::TenantMovedOut && p == 3) ++moved_off_retired;
    if (auto* rej = e.payload_as_CommandRejected()) ADD_FAILURE() << sv(rej->reason());
  });
  for (const std::string& id : started) EXPECT_EQ(ended[id], 1) << id << " ended " << ended[id];
  for (const auto& [id, n] : ended) EXPECT_EQ(n, 1) << id << " ended " << n << " times";
  // A start answered by nobody (the engine stopped under it) may still have been written: it
  // ended once too, and is counted above.
  EXPECT_GE(ended.size(), started.size());
  EXPECT_EQ(commands.size(), 2 * ended.size()) << "steps a and b of every execution, once";
  EXPECT_TRUE(moved_in.contains(2) && moved_in.contains(3)) << "tenants moved onto 2 and 3";
  EXPECT_GE(moved_off_retired, 1) << "the tenants of the retired partition moved off";
  src->events.reset();  // the read-only open releases the directory
  auto verify = testing::run_command(
      fmt::format("'{}' replay verify --data {} --no-progress 2>&1", bin, data));
  EXPECT_EQ(verify.code, 0) << verify.out;
  // The pause every tenant saw, as the engine measured it (stop, survey and scale, open).
  std::ifstream log_in(out);
  for (std::string line; std::getline(log_in, line);) {
    if (line.find("the engine paused") != std::string::npos) std::cerr << line << "\n";
  }
  std::cerr << fmt::format(
      "{} executions ended once each across a scale 2 -> 4 -> 3 under load ({} starts not "
      "taken while the engine was down)\n",
      started.size(), refused_while_scaling.load());
  std::filesystem::remove_all(data);
  std::filesystem::remove(out);
}

}  // namespace
}  // namespace auterity::api_test
