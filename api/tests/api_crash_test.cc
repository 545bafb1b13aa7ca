// kill -9 of `auterity run --http` while starts stream in: every start answered 202 exists
// exactly once after the restart (label api). A 202 is sent only after the command's commit
// (fdatasync) returned, so nothing answered can be lost; each id was sent once, so nothing may
// start twice.

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>

#include <atomic>
#include <fstream>
#include <map>
#include <mutex>

#include "api/tests/api_test_util.h"
#include "engine/record.h"
#include "processors/execution_state.h"
#include "replay/source.h"

namespace auterity::api_test {
namespace {

TEST(api_crash, every_start_answered_202_exists_exactly_once_after_kill_9) {
  const std::string data = scratch_dir("api-crash");
  const std::string out = data + ".log";
  const std::string bin = AUTERITY_BIN;
  std::map<std::string, int> answered;  // execution id -> times answered 202
  std::mutex mu;
  for (int round = 0; round < 3; ++round) {
    const pid_t pid = spawn({bin, "run", "--data", data, "--http", "127.0.0.1:0",
                             "--stats-interval-s", "0", "--http-rate", "1000000"},
                            out);
    ASSERT_GT(pid, 0);
    auto ep = read_endpoint(data, pid);
    ASSERT_TRUE(ep) << "no endpoint; see " << out;
    auto call = [&](const std::string& path, const std::string& body) {
      return endpoint_call(*ep, "POST", path, body, 5000);
    };
    if (round == 0) {
      // One quick step: the restarted engine can finish every execution and go quiet.
      auto p = call("/v1/tenants/acme/definitions?wait_ms=10000",
                    R"({"definition":{"workflow":"quick","version":1,"steps":[
                        {"id":"a","kind":"task","action":"transform"}]}})");
      ASSERT_TRUE(p && p->status == 201) << (p ? p->body : p.error().message);
    }
    // Four clients send starts, each id once, until the engine is killed under them.
    std::atomic<bool> stop{false};
    std::vector<std::thread> clients;
    for (int c = 0; c < 4; ++c) {
      clients.emplace_back([&, c] {
        for (int i = 0; !stop; ++i) {
          const std::string id = fmt::format("r{}-c{}-{}", round, c, i);
          auto r = call("/v1/tenants/acme/executions",
                        json{{"execution_id", id}, {"workflow", "quick"}}.dump());
          if (r && r->status == 202) {
            std::lock_guard lock(mu);
            answered[id]++;
          }
          if (!r) return;  // the engine is gone
        }
      });
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(400 + 300 * round));
    ::kill(pid, SIGKILL);
    int status = 0;
    ::waitpid(pid, &status, 0);
    stop = true;
    for (auto& t : clients) t.join();
  }
  ASSERT_GT(answered.size(), 50u) << "too few starts got through to mean anything";
  // Restart and let the engine process everything left in ingress.
  const pid_t pid =
      spawn({bin, "run", "--data", data, "--until-quiet", "--stats-interval-s", "0"}, out);
  int status = 0;
  ::waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "see " << out;

  auto src = open_embedded_source(data, /*with_state=*/true);
  ASSERT_TRUE(src) << src.error().message;
  std::map<std::string, int> started;
  for_each_envelope(*src->events, stream::executions, [&](uint32_t, const fbs::Envelope& e) {
    if (e.payload_type() == fbs::Payload::ExecutionStarted) {
      started[std::string(sv(e.execution_id()))]++;
    }
    if (auto* rej = e.payload_as_CommandRejected()) {
      ADD_FAILURE() << "rejected: " << sv(e.execution_id()) << ": " << sv(rej->reason());
    }
  });
  size_t lost = 0, twice = 0;
  for (const auto& [id, n] : answered) {
    EXPECT_EQ(n, 1) << id;
    if (!started.contains(id)) ++lost;
    if (started.contains(id) && started[id] != 1) ++twice;
  }
  for (const auto& [id, n] : started) EXPECT_EQ(n, 1) << id << " started " << n << " times";
  EXPECT_EQ(lost, 0u);
  EXPECT_EQ(twice, 0u);
  const uint32_t p = tenant_partition("acme", src->events->partition_count());
  size_t in_state = 0;
  for (const auto& [id, n] : answered) {
    auto v = src->stores[p]->get(keys::execution("acme", id));
    in_state += v && *v ? 1 : 0;
  }
  EXPECT_EQ(in_state, answered.size());
  std::cerr << fmt::format("{} starts answered 202 over 3 kills; {} executions started in all\n",
                           answered.size(), started.size());
  std::filesystem::remove_all(data);
  std::filesystem::remove(out);
}

}  // namespace
}  // namespace auterity::api_test
