// `auterity gateway` in front of a real Kafka broker, with `auterity run --kafka` deciding
// (labels api, kafka): commands with their decisions through the gateway, attribution, reads
// from the gateway's replica (api/replica.h) while it follows the log and after a start that
// rebuilds it, reads answered 503 with --no-reads, and a restarted gateway that resumes its
// replica from its checkpoint (and rebuilds it on another topic prefix).

#include <signal.h>
#include <sys/wait.h>

#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>

#include "api/tests/api_test_util.h"
#include "engine/kafka_log.h"
#include "tests/kafka/broker_fixture.h"
#include "tests/plain_http.h"

namespace auterity::api_test {
namespace {

std::string file_text(const std::string& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// The port a process printed in its log after `what` (the API's, or the metrics').
uint16_t port_in_log(const std::string& path, const std::string& what = "HTTP API on port") {
  for (int i = 0; i < 600; ++i) {
    std::smatch m;
    const std::string text = file_text(path);
    if (std::regex_search(text, m, std::regex(what + " (\\d+)"))) {
      return static_cast<uint16_t>(std::stoi(m[1]));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return 0;
}

// One request to the API on `port` with an API key and a JSON body (60 s deadline).
reply api_call(uint16_t port, std::string_view method, const std::string& path,
               const std::string& key, const std::string& body) {
  http_request r;
  r.method = std::string(method);
  r.url = fmt::format("http://127.0.0.1:{}{}", port, path);
  r.headers = {{"Authorization", "Bearer " + key}, {"Content-Type", "application/json"}};
  r.body = body;
  r.deadline_ms = wall_now_ms() + 60'000;
  auto resp = http_call(r);
  return resp ? reply{resp->status, resp->header("content-type"), resp->body, resp->headers}
              : reply{-1, "", resp.error().message, {}};
}

// An empty directory of this test process's own under the temporary directory.
std::string fresh_dir(std::string_view name) {
  const std::string dir =
      (std::filesystem::temp_directory_path() / fmt::format("auterity-api-{}-{}", name, ::getpid()))
          .string();
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

TEST(api_gateway, commands_and_decisions_through_a_gateway_on_kafka) {
  testing::kafka_cluster cluster(1);
  ASSERT_TRUE(cluster.error().empty()) << cluster.error();
  const std::string dir = fresh_dir("gateway");
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
                  const std::string& body) { return api_call(port, method, path, key, body); };
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

// Sum of the samples of `metric` in a Prometheus scrape whose labels contain `label` ("" for
// any), and how many there were.
std::pair<double, int> scraped(const std::string& text, const std::string& metric,
                               const std::string& label = "") {
  double sum = 0;
  int n = 0;
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    if (!line.starts_with(metric + "{") && !line.starts_with(metric + " ")) continue;
    if (!label.empty() && line.find(label) == std::string::npos) continue;
    sum += std::stod(line.substr(line.rfind(' ') + 1));
    ++n;
  }
  return {sum, n};
}

// Records in the executions topic, over all partitions (an independent read-only client).
uint64_t executions_end(const std::string& bootstrap) {
  kafka_log_options o;
  o.bootstrap = bootstrap;
  o.instance_id = "test-reader";
  o.read_only = true;
  auto l = open_kafka_log(o);
  EXPECT_TRUE(l.has_value()) << l.error().message;
  if (!l) return 0;
  uint64_t sum = 0;
  for (uint32_t p = 0; p < (*l)->partition_count(); ++p) {
    sum += (*l)->end_offset(stream::executions, p).value_or(0);
  }
  return sum;
}

// The test's processes still running: killed (SIGKILL) if an assertion ends the test early.
// Each is a child not yet waited for, so its pid cannot have been reused.
struct running_children {
  std::set<pid_t> pids;
  ~running_children() {
    for (pid_t p : pids) {
      ::kill(p, SIGKILL);
      ::waitpid(p, nullptr, 0);
    }
  }
};

// A gateway restarted on a log with history resumes its replica from its own checkpoint: ready
// after reading only what was appended while it was down, answering as a gateway that rebuilt
// from offset 0 does and as the engine decided. Given another topic prefix, it does not take
// the checkpoint for that log's: it rebuilds.
TEST(api_gateway, a_restarted_gateway_resumes_its_replica_from_its_checkpoint) {
  testing::kafka_cluster cluster(1);
  ASSERT_TRUE(cluster.error().empty()) << cluster.error();
  running_children children;
  const std::string dir = fresh_dir("resume");
  const std::string bin = AUTERITY_BIN;
  int status = 0;
  for (const char* prefix : {"", "other."}) {
    const pid_t topics = spawn({bin, "topics", "apply", "--bootstrap", cluster.bootstrap(),
                                "--partitions", "4", "--prefix", prefix},
                               dir + "/topics.log");
    ::waitpid(topics, &status, 0);
    ASSERT_EQ(WEXITSTATUS(status), 0) << file_text(dir + "/topics.log");
  }
  const pid_t engine = spawn({bin, "run", "--kafka", cluster.bootstrap(), "--instance", "e1",
                              "--data", dir + "/state", "--stats-interval-s", "0"},
                             dir + "/engine.log");
  children.pids.insert(engine);
  key_store keys(key_store::default_path(dir + "/gw"));
  const std::string op = *keys.create("acme", api_role::operator_, "crm", wall_now_ms());
  for (const char* copy : {"/cmd", "/fresh"}) {
    std::filesystem::create_directories(dir + copy + "/api");
    std::filesystem::copy_file(key_store::default_path(dir + "/gw"),
                               key_store::default_path(dir + copy));
  }
  struct gateway {
    pid_t pid = -1;
    uint16_t port = 0, metrics = 0;
    std::string log;
  };
  int starts = 0;
  auto start = [&](const std::string& data, const std::string& instance,
                   std::vector<std::string> extra) {
    std::vector<std::string> args = {bin,          "gateway",     "--kafka",   cluster.bootstrap(),
                                     "--instance", instance,      "--data",    dir + data,
                                     "--http",     "127.0.0.1:0", "--metrics", "127.0.0.1:0"};
    args.insert(args.end(), extra.begin(), extra.end());
    gateway g;
    g.log = fmt::format("{}/{}-{}.log", dir, instance, ++starts);
    g.pid = spawn(args, g.log);
    children.pids.insert(g.pid);
    g.port = port_in_log(g.log);
    g.metrics = port_in_log(g.log, "Prometheus metrics on port");
    return g;
  };
  auto stop = [&](gateway& g) {
    ::kill(g.pid, SIGTERM);
    ::waitpid(g.pid, &status, 0);
    children.pids.erase(g.pid);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << file_text(g.log);
  };
  auto call = [&](const gateway& g, std::string_view method, const std::string& path,
                  const std::string& body = "") {
    return api_call(g.port, method, path, op, body);
  };
  auto ready = [&](const gateway& g) {
    for (int i = 0; i < 600; ++i) {
      if (call(g, "GET", "/v1/ready").status == 200) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return false;
  };
  auto start_execution = [&](const gateway& g, const std::string& id, bool finish) {
    auto s = call(g, "POST", "/v1/tenants/acme/executions?wait_ms=30000",
                  json{{"execution_id", id}, {"workflow", "waits"}}.dump());
    EXPECT_EQ(s.status, 201) << s.body;
    if (!finish) return;
    auto sig =
        call(g, "POST", fmt::format("/v1/tenants/acme/executions/{}/signals?wait_ms=30000", id),
             R"({"name":"go"})");
    EXPECT_EQ(sig.status, 200) << sig.body;
  };
  // History: twelve executions, half of them finished, read by gateway gw.
  gateway gw = start("/gw", "gw", {});
  ASSERT_NE(gw.port, 0) << "see " << dir;
  ASSERT_NE(gw.metrics, 0) << "see " << dir;
  auto pub = call(gw, "POST", "/v1/tenants/acme/definitions?wait_ms=60000",
                  json{{"definition", json::parse(waits_definition)}}.dump());
  ASSERT_EQ(pub.status, 201) << pub.body;
  std::map<std::string, std::string> expected;  // execution -> status, as the engine decided
  for (int i = 0; i < 12; ++i) {
    const std::string id = fmt::format("r-{}", i);
    start_execution(gw, id, i % 2 == 0);
    expected[id] = i % 2 == 0 ? "succeeded" : "running";
  }
  for (int i = 0; i < 300 && call(gw, "GET", "/v1/tenants/acme/executions/r-11").status != 200;
       ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  stop(gw);
  const uint64_t history = executions_end(cluster.bootstrap());
  // While it is down, commands through another gateway: three starts and a signal.
  gateway cmd = start("/cmd", "cmd", {"--no-reads"});
  for (int i = 12; i < 15; ++i) {
    start_execution(cmd, fmt::format("r-{}", i), false);
    expected[fmt::format("r-{}", i)] = "running";
  }
  auto sig = call(cmd, "POST", "/v1/tenants/acme/executions/r-1/signals?wait_ms=30000",
                  R"({"name":"go"})");
  EXPECT_EQ(sig.status, 200) << sig.body;
  expected["r-1"] = "succeeded";
  stop(cmd);
  const uint64_t appended = executions_end(cluster.bootstrap()) - history;
  ASSERT_GT(appended, 0u);
  ASSERT_LT(appended, history);

  // The restart: every partition resumes, and it is ready having read only the new records.
  gw = start("/gw", "gw", {});
  ASSERT_TRUE(ready(gw)) << file_text(gw.log);
  EXPECT_NE(file_text(gw.log).find("read replica: resumed from its checkpoints"), std::string::npos)
      << file_text(gw.log);
  const std::string scrape = testing::http_get(gw.metrics, "/metrics");
  EXPECT_EQ(scraped(scrape, "auterity_replica_start", "how=\"resumed\"").second, 4) << scrape;
  const double read_again = scraped(scrape, "auterity_replica_applied_records_total").first;
  EXPECT_GT(read_again, 0) << scrape;
  EXPECT_LE(read_again, static_cast<double>(appended)) << scrape;
  // Its answers: as the engine decided, and the same as a gateway that rebuilt from offset 0.
  gateway fresh = start("/fresh", "fresh", {});
  ASSERT_TRUE(ready(fresh)) << file_text(fresh.log);
  EXPECT_NE(file_text(fresh.log).find("partition 0 rebuilt from offset 0 (missing"),
            std::string::npos)
      << file_text(fresh.log);
  for (const auto& [id, want] : expected) {
    const std::string path = "/v1/tenants/acme/executions/" + id;
    reply a, b;
    for (int i = 0; i < 300; ++i) {  // both follow the log: they may trail by a few records
      a = call(gw, "GET", path);
      b = call(fresh, "GET", path);
      if (a.status == 200 && a.j()["status"] == want && a.body == b.body) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    EXPECT_EQ(a.status, 200) << id << ": " << a.body;
    EXPECT_EQ(a.j()["status"], want) << id << ": " << a.body;
    EXPECT_EQ(a.body, b.body) << id;
  }
  const std::string list = "/v1/tenants/acme/executions?status=running&limit=100";
  EXPECT_EQ(call(gw, "GET", list).body, call(fresh, "GET", list).body);
  EXPECT_EQ(call(gw, "GET", "/v1/tenants/acme/executions/r-1/timeline").body,
            call(fresh, "GET", "/v1/tenants/acme/executions/r-1/timeline").body);
  stop(fresh);
  stop(gw);

  // The same data directory on another topic prefix: the checkpoint is not that log's.
  gateway other = start("/gw", "other", {"--topic-prefix", "other."});
  ASSERT_TRUE(ready(other)) << file_text(other.log);
  EXPECT_NE(file_text(other.log).find("rebuilt from offset 0 (another_log: the checkpoint comes "
                                      "from kafka topic prefix '', not kafka topic prefix "
                                      "'other.')"),
            std::string::npos)
      << file_text(other.log);
  // acme's partition is rebuilt; the others had applied nothing, so there was nothing to keep.
  const std::string other_scrape = testing::http_get(other.metrics, "/metrics");
  EXPECT_EQ(scraped(other_scrape, "auterity_replica_start", "how=\"another_log\"").second, 1)
      << other_scrape;
  EXPECT_EQ(scraped(other_scrape, "auterity_replica_start", "how=\"resumed\"").second, 3)
      << other_scrape;
  EXPECT_EQ(call(other, "GET", "/v1/tenants/acme/executions/r-0").status, 404);
  stop(other);
  ::kill(engine, SIGTERM);
  ::waitpid(engine, &status, 0);
  children.pids.erase(engine);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace auterity::api_test
