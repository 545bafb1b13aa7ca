// `auterity gateway` in front of a real Kafka broker, with `auterity run --kafka` deciding
// (labels api, kafka): commands with their decisions through the gateway, attribution, reads
// from the gateway's replica (api/replica.h) while it follows the log and after a start that
// rebuilds it, and reads answered 503 with --no-reads.

#include <signal.h>
#include <sys/wait.h>

#include <fstream>
#include <regex>

#include "api/tests/api_test_util.h"
#include "tests/kafka/broker_fixture.h"

namespace auterity::api_test {
namespace {

uint16_t port_in_log(const std::string& path) {
  for (int i = 0; i < 600; ++i) {
    std::ifstream in(path);
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::smatch m;
    if (std::regex_search(text, m, std::regex("HTTP API on port (\\d+)"))) {
      return static_cast<uint16_t>(std::stoi(m[1]));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return 0;
}

TEST(api_gateway, commands_and_decisions_through_a_gateway_on_kafka) {
  testing::kafka_cluster cluster(1);
  ASSERT_TRUE(cluster.error().empty()) << cluster.error();
  const std::string dir =
      (std::filesystem::temp_directory_path() / fmt::format("auterity-api-gateway-{}", ::getpid()))
          .string();
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  const std::string bin = AUTERITY_BIN, log = dir + "/out.log";
  const pid_t topics =
      spawn({bin, "topics", "apply", "--bootstrap", cluster.bootstrap(), "--partitions", "4"}, log);
  int status = 0;
  ::waitpid(topics, &status, 0);
  ASSERT_EQ(WEXITSTATUS(status), 0);
  const pid_t engine = spawn({bin, "run", "--kafka", cluster.bootstrap(), "--instance", "e1",
                              "--data", dir + "/state", "--stats-interval-s", "0"},
                             dir + "/engine.log");
  key_store keys(key_store::default_path(dir + "/gw"));
  const std::string op = *keys.create("acme", api_role::operator_, "crm", wall_now_ms());
  const std::string other = *keys.create("globex", api_role::operator_, "crm", wall_now_ms());
  const pid_t gateway = spawn({bin, "gateway", "--kafka", cluster.bootstrap(), "--instance", "gw1",
                               "--data", dir + "/gw", "--http", "127.0.0.1:0"},
                              dir + "/gateway.log");
  uint16_t port = port_in_log(dir + "/gateway.log");
  ASSERT_NE(port, 0) << "see " << dir;
  auto call = [&](std::string_view method, const std::string& path, const std::string& key,
                  const std::string& body) {
    http_request r;
    r.method = std::string(method);
    r.url = fmt::format("http://127.0.0.1:{}{}", port, path);
    r.headers = {{"Authorization", "Bearer " + key}, {"Content-Type", "application/json"}};
    r.body = body;
    r.deadline_ms = wall_now_ms() + 60'000;
    auto resp = http_call(r);
    return resp ? reply{resp->status, resp->header("content-type"), resp->body, resp->headers}
                : reply{-1, "", resp.error().message, {}};
  };
  // The engine joins its group and restores its partitions meanwhile: the first wait is long.
  auto pub = call("POST", "/v1/tenants/acme/definitions?wait_ms=30000", op,
                  json{{"definition", json::parse(waits_definition)}}.dump());
  ASSERT_EQ(pub.status, 201) << pub.body;
  auto s = call("POST", "/v1/tenants/acme/executions?wait_ms=20000", op,
                R"({"execution_id":"g-1","workflow":"waits"})");
  ASSERT_EQ(s.status, 201) << s.body;
  EXPECT_EQ(s.header("location"), "/v1/tenants/acme/executions/g-1");
  EXPECT_TRUE(s.j()["request_id"].get<std::string>().starts_with("api:key:k"));
  auto bad = call("POST", "/v1/tenants/acme/executions?wait_ms=20000", op,
                  R"({"execution_id":"g-2","workflow":"nope"})");
  EXPECT_EQ(bad.status, 422) << bad.body;
  EXPECT_EQ(bad.j()["rejection"]["name"], "unknown_workflow");
  auto sig =
      call("POST", "/v1/tenants/acme/executions/g-1/signals?wait_ms=20000", op, R"({"name":"go"})");
  EXPECT_EQ(sig.status, 200) << sig.body;
  auto again =
      call("POST", "/v1/tenants/acme/executions/g-1/signals?wait_ms=20000", op, R"({"name":"go"})");
  EXPECT_EQ(again.status, 409) << again.body;  // the execution succeeded with the first
  EXPECT_EQ(again.j()["rejection"]["name"], "execution_finished");
  // Without a wait: 202 once the command is in the ingress topic.
  EXPECT_EQ(call("POST", "/v1/tenants/acme/executions", op,
                 R"({"execution_id":"g-3","workflow":"waits"})")
                .status,
            202);
  // Another tenant's key: the same 404 as for nothing at all.
  auto cross = call("POST", "/v1/tenants/acme/executions/g-1/cancel", other, "{}");
  auto ghost = call("POST", "/v1/tenants/nobody/executions/g-1/cancel", other, "{}");
  EXPECT_EQ(cross.status, 404);
  EXPECT_EQ(cross.body, ghost.body);
  // Reads come from the gateway's replica, which follows the executions topic: the execution
  // shows up as it is, the other tenant's key sees what it sees of nothing.
  auto read_until = [&](uint16_t at, const std::string& path, std::string_view status) {
    reply r;
    for (int i = 0; i < 300; ++i) {
      const uint16_t saved = port;
      port = at;
      r = call("GET", path, op, "");
      port = saved;
      if (r.status == 200 && r.j()["status"] == status) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return r;
  };
  auto g1 = read_until(port, "/v1/tenants/acme/executions/g-1", "succeeded");
  ASSERT_EQ(g1.status, 200) << g1.body;
  EXPECT_EQ(g1.j()["status"], "succeeded") << g1.body;
  EXPECT_EQ(g1.j()["workflow"], "waits") << g1.body;
  auto g3 = read_until(port, "/v1/tenants/acme/executions/g-3", "running");
  EXPECT_EQ(g3.j()["status"], "running") << g3.body;
  auto listed = call("GET", "/v1/tenants/acme/executions?status=succeeded", op, "");
  ASSERT_EQ(listed.status, 200) << listed.body;
  ASSERT_EQ(listed.j()["executions"].size(), 1u) << listed.body;
  EXPECT_EQ(listed.j()["executions"][0]["execution_id"], "g-1") << listed.body;
  auto timeline = call("GET", "/v1/tenants/acme/executions/g-1/timeline", op, "");
  ASSERT_EQ(timeline.status, 200) << timeline.body;
  EXPECT_NE(timeline.body.find("SignalReceived"), std::string::npos) << timeline.body;
  // The event stream of an ended execution: all of it, then its end.
  auto stream = call("GET", "/v1/tenants/acme/executions/g-1/events", op, "");
  EXPECT_EQ(stream.status, 200);
  EXPECT_NE(stream.body.find("id: 0\nevent: ExecutionStarted\n"), std::string::npos) << stream.body;
  EXPECT_NE(stream.body.find("event: ExecutionSucceeded\n"), std::string::npos) << stream.body;
  EXPECT_NE(stream.body.find("event: end\n"), std::string::npos) << stream.body;
  auto defs = call("GET", "/v1/tenants/acme/definitions", op, "");
  EXPECT_EQ(defs.status, 200) << defs.body;
  EXPECT_NE(defs.body.find("waits"), std::string::npos) << defs.body;
  auto cross_read = call("GET", "/v1/tenants/acme/executions/g-1", other, "");
  auto ghost_read = call("GET", "/v1/tenants/nobody/executions/g-1", other, "");
  EXPECT_EQ(cross_read.status, 404);
  EXPECT_EQ(cross_read.body, ghost_read.body);
  // A gateway started on a log that already holds history rebuilds its replica first: ready
  // once it has caught up, and then it answers as the first one does.
  std::filesystem::create_directories(dir + "/gw2/api");
  std::filesystem::copy_file(key_store::default_path(dir + "/gw"),
                             key_store::default_path(dir + "/gw2"),
                             std::filesystem::copy_options::overwrite_existing);
  const pid_t late = spawn({bin, "gateway", "--kafka", cluster.bootstrap(), "--instance", "gw2",
                            "--data", dir + "/gw2", "--http", "127.0.0.1:0"},
                           dir + "/gateway2.log");
  const uint16_t late_port = port_in_log(dir + "/gateway2.log");
  ASSERT_NE(late_port, 0) << "see " << dir;
  auto late_g1 = read_until(late_port, "/v1/tenants/acme/executions/g-1", "succeeded");
  EXPECT_EQ(late_g1.status, 200) << late_g1.body;
  EXPECT_EQ(late_g1.j()["status"], "succeeded") << late_g1.body;
  EXPECT_EQ(late_g1.j()["events"], g1.j()["events"]) << late_g1.body;
  {
    const uint16_t saved = port;
    port = late_port;
    EXPECT_EQ(call("GET", "/v1/ready", op, "").status, 200);
    port = saved;
  }
  ::kill(late, SIGTERM);
  ::waitpid(late, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  // --no-reads: commands only; reads say why they are not served.
  const pid_t bare = spawn({bin, "gateway", "--kafka", cluster.bootstrap(), "--instance", "gw3",
                            "--data", dir + "/gw", "--http", "127.0.0.1:0", "--no-reads"},
                           dir + "/gateway3.log");
  const uint16_t bare_port = port_in_log(dir + "/gateway3.log");
  ASSERT_NE(bare_port, 0) << "see " << dir;
  {
    const uint16_t saved = port;
    port = bare_port;
    EXPECT_EQ(call("GET", "/v1/tenants/acme/executions/g-1", op, "").status, 503);
    EXPECT_EQ(call("GET", "/v1/tenants/acme/executions/g-1/events", op, "").status, 503);
    port = saved;
  }
  ::kill(bare, SIGTERM);
  ::waitpid(bare, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  ::kill(gateway, SIGTERM);
  ::waitpid(gateway, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  ::kill(engine, SIGTERM);
  ::waitpid(engine, &status, 0);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace auterity::api_test
