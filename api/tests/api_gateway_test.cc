// `auterity gateway` in front of a real Kafka broker, with `auterity run --kafka` deciding
// (labels api, kafka): commands with their decisions through the gateway, attribution, and
// reads answered 503 (the gateway holds no state).

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
  const uint16_t port = port_in_log(dir + "/gateway.log");
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
  // Reads need partition state, which a gateway does not hold.
  EXPECT_EQ(call("GET", "/v1/tenants/acme/executions/g-1", op, "").status, 503);
  EXPECT_EQ(call("GET", "/v1/tenants/acme/executions/g-1/events", op, "").status, 503);
  ::kill(gateway, SIGTERM);
  ::waitpid(gateway, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  ::kill(engine, SIGTERM);
  ::waitpid(engine, &status, 0);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace auterity::api_test
