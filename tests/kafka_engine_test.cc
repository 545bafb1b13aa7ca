// The engine on a real Kafka broker (started by tests/kafka/broker.sh): a workflow end to end,
// and SIGKILL of the engine process mid-transaction under load — every execution completes,
// the read_committed command topics hold each command exactly once, the executions topic holds
// no duplicated event, each notification is written once, and state equals a replay of the log.

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "engine/record.h"
#include "processors/client.h"
#include "processors/node.h"
#include "replay/verify.h"
#include "tests/kafka/broker_fixture.h"
#include "topics/catalog.h"

namespace auterity {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

constexpr uint32_t partitions = 2;

// Two parallel tasks, a flaky task retried once, an SMS and an email.
const std::string workflow = json{
    {"workflow", "lead"},
    {"version", 1},
    {"steps",
     json::array({
         {{"id", "score"}, {"kind", "task"}, {"action", "transform"}, {"input", {{"n", "{{input.n}}"}}}},
         {{"id", "enrich"}, {"kind", "task"}, {"action", "transform"}},
         {{"id", "crm"},
          {"kind", "task"},
          {"action", "flaky"},
          {"after", {"score", "enrich"}},
          {"input", {{"succeed_on_attempt", 2}}},
          {"retry", {{"max_attempts", 3}, {"backoff_ms", 20}}}},
         {{"id", "sms"},
          {"kind", "notify"},
          {"after", {"crm"}},
          {"input", {{"channel", "sms"}, {"to", "+1555{{input.n}}"}, {"body", "hi"}}}},
         {{"id", "email"},
          {"kind", "notify"},
          {"after", {"crm"}},
          {"input", {{"channel", "email"}, {"to", "{{input.n}}@example.com"}, {"body", "hi"}}}},
     })}}.dump();
constexpr size_t commands_per_execution = 6;  // score, enrich, crm x2, sms, email
constexpr size_t notifications_per_execution = 2;

class kafka_engine : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { cluster = std::make_unique<testing::kafka_cluster>(1); }
  static void TearDownTestSuite() { cluster.reset(); }
  void SetUp() override {
    ASSERT_TRUE(cluster->error().empty()) << cluster->error();
    prefix = fmt::format("{}-{}-", ::testing::UnitTest::GetInstance()->current_test_info()->name(),
                         ::getpid());
    dir = fmt::format("{}/auterity-kafka-{}", ::testing::TempDir(), prefix);
    fs::remove_all(dir);
    catalog_options c;
    c.partitions = partitions;
    c.prefix = prefix;
    auto applied = apply_catalog(cluster->bootstrap(), default_catalog(c));
    ASSERT_TRUE(applied.has_value()) << applied.error().message;
  }
  void TearDown() override {
    if (!HasFailure()) fs::remove_all(dir);
  }

  node_options options(std::string instance, bool workers) {
    node_options o;
    o.data_dir = dir;
    o.workers = workers;
    kafka_log_options k;
    k.bootstrap = cluster->bootstrap();
    k.instance_id = std::move(instance);
    k.topic_prefix = prefix;
    o.kafka = k;
    return o;
  }

  std::vector<std::pair<std::string, std::string>> submit_load(node& n, size_t executions) {
    std::vector<std::pair<std::string, std::string>> ids;
    for (const char* tenant : {"acme", "bayside"}) {
      EXPECT_TRUE(n.submit(tenant, client::publish_definition({tenant, "", "pub", 1}, workflow)));
    }
    for (size_t i = 0; i < executions; ++i) {
      const std::string tenant = i % 2 ? "bayside" : "acme";
      const std::string id = fmt::format("x{}", i);
      auto r = n.submit(tenant, client::start_execution({tenant, id, id, 1}, "lead", 0,
                                                        json{{"n", i}}.dump()));
      EXPECT_TRUE(r.has_value()) << r.error().message;
      ids.emplace_back(tenant, id);
    }
    return ids;
  }

  static inline std::unique_ptr<testing::kafka_cluster> cluster;
  std::string prefix;
  std::string dir;
};

// Every record of (s, p), read_committed, in offset order.
std::vector<record> read_all(log& l, stream s, uint32_t p) {
  std::vector<record> out;
  for (uint64_t from = 0;;) {
    const size_t before = out.size();
    auto n = l.read(s, p, from, 1024, 8 << 20, out);
    EXPECT_TRUE(n.has_value()) << n.error().message;
    if (!n || *n == 0) break;
    from = out.back().offset + 1;
    EXPECT_GT(out.size(), before);
  }
  return out;
}

// The exactly-once checks, over the log as read_committed readers see it.
void verify_exactly_once(node& n, const std::vector<std::pair<std::string, std::string>>& ids,
                         const std::string& scratch) {
  log& l = n.get_log();
  std::map<std::string, size_t> commands_per_exec;
  std::set<std::string> command_ids;
  for (stream s : {stream::commands_step, stream::commands_ai, stream::commands_notify}) {
    for (uint32_t p = 0; p < l.partition_count(); ++p) {
      for (const record& r : read_all(l, s, p)) {
        const fbs::Envelope* e = decode_envelope(r.value);
        ASSERT_NE(e, nullptr);
        EXPECT_TRUE(command_ids.insert(std::string(sv(e->record_id()))).second)
            << "command emitted twice: " << sv(e->record_id());
        commands_per_exec[std::string(sv(e->execution_id()))]++;
      }
    }
  }
  std::set<std::string> event_ids;
  for (uint32_t p = 0; p < l.partition_count(); ++p) {
    for (const record& r : read_all(l, stream::executions, p)) {
      const fbs::Envelope* e = decode_envelope(r.value);
      ASSERT_NE(e, nullptr);
      if (e->kind() != fbs::RecordKind::Event) continue;
      EXPECT_TRUE(event_ids.insert(std::string(sv(e->record_id()))).second)
          << "event duplicated: " << sv(e->record_id());
    }
    auto diffs = compare_with_replay(l, p, n.partition(p).store(), scratch);
    ASSERT_TRUE(diffs.has_value()) << diffs.error().message;
    EXPECT_TRUE(diffs->empty()) << "partition " << p << ": " << diffs->front();
    auto chains = verify_chains(l, p);
    ASSERT_TRUE(chains.has_value());
    EXPECT_TRUE(chains->problems.empty()) << chains->problems.front();
  }
  for (const auto& [tenant, id] : ids) {
    auto e = n.execution(tenant, id);
    ASSERT_TRUE(e.has_value()) << id << " never started";
    EXPECT_EQ(e->status, exec_status::succeeded) << id << ": " << e->result;
    EXPECT_EQ(commands_per_exec[id], commands_per_execution) << id;
    for (uint32_t seq = 0; seq < e->event_count; ++seq) {
      EXPECT_TRUE(event_ids.contains(fmt::format("{}#{}", id, seq))) << id << " lost event " << seq;
    }
  }
}

void expect_outbox_once(const std::string& dir, size_t executions) {
  std::ifstream in(dir + "/outbox/notifications.jsonl");
  std::set<std::string> seen;
  size_t lines = 0;
  for (std::string line; std::getline(in, line); ++lines) {
    const json j = json::parse(line);
    EXPECT_TRUE(seen.insert(j["id"].get<std::string>()).second)
        << "notification sent twice: " << j["id"];
  }
  EXPECT_EQ(lines, executions * notifications_per_execution);
}

TEST_F(kafka_engine, workflow_runs_end_to_end_on_kafka) {
  system_clock clk;
  auto n = node::open(options("e2e", true), clk);
  ASSERT_TRUE(n.has_value()) << n.error().message;
  const auto ids = submit_load(**n, 20);
  ASSERT_TRUE((*n)->recover().has_value());
  (*n)->start();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(90);
  size_t done = 0;
  while (done < ids.size() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    done = 0;
    for (const auto& [tenant, id] : ids) {
      auto e = (*n)->execution(tenant, id);
      done += e && e->status != exec_status::running;
    }
  }
  (*n)->stop();
  ASSERT_EQ(done, ids.size()) << "executions still running after 90 s";
  verify_exactly_once(**n, ids, dir + "/scratch");
  expect_outbox_once(dir, ids.size());
}

pid_t spawn_engine(const std::string& dir, const std::string& bootstrap,
                   const std::string& prefix) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    const std::string log = dir + "/engine.log";
    FILE* f = std::freopen(log.c_str(), "a", stderr);
    (void)f;
    ::dup2(STDERR_FILENO, STDOUT_FILENO);
    ::execl(AUTERITY_BIN, AUTERITY_BIN, "run", "--kafka", bootstrap.c_str(), "--topic-prefix",
            prefix.c_str(), "--data", dir.c_str(), "--instance", "engine", "--until-quiet",
            "--stats-interval-s", "0", nullptr);
    ::_exit(127);
  }
  return pid;
}

TEST_F(kafka_engine, sigkill_mid_transaction_keeps_exactly_once) {
  const char* env = std::getenv("AUTERITY_TEST_SEED");
  const uint64_t seed = env ? std::strtoull(env, nullptr, 10) : std::random_device{}();
  std::mt19937_64 rng(seed);
  fmt::print("kafka sigkill: seed {} (AUTERITY_TEST_SEED reruns the schedule)\n", seed);
  std::vector<std::pair<std::string, std::string>> ids;
  {
    system_clock clk;
    auto n = node::open(options("submitter", false), clk);
    ASSERT_TRUE(n.has_value()) << n.error().message;
    ids = submit_load(**n, 150);
  }
  fs::create_directories(dir);
  int kills = 0;
  for (int round = 0; round < 5; ++round) {
    const pid_t pid = spawn_engine(dir, cluster->bootstrap(), prefix);
    const int ms = std::uniform_int_distribution<int>(400, 2500)(rng);
    std::this_thread::sleep_for(std::chrono::milliseconds(ms));
    int status = 0;
    if (::waitpid(pid, &status, WNOHANG) == 0) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      ++kills;
      fmt::print("  round {}: SIGKILL after {} ms\n", round, ms);
    }
  }
  const pid_t pid = spawn_engine(dir, cluster->bootstrap(), prefix);
  int status = -1;
  for (int i = 0; i < 1800 && ::waitpid(pid, &status, WNOHANG) == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  if (::waitpid(pid, &status, WNOHANG) == 0) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, &status, 0);
    FAIL() << "final engine run did not finish in 180 s; log: " << dir << "/engine.log";
  }
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
      << "engine exited with " << status << "; log: " << dir << "/engine.log";
  EXPECT_GE(kills, 1) << "no kill landed while the engine was working";

  system_clock clk;
  auto n = node::open(options("verifier", false), clk);
  ASSERT_TRUE(n.has_value()) << n.error().message;
  ASSERT_TRUE((*n)->recover().has_value());
  verify_exactly_once(**n, ids, dir + "/scratch");
  expect_outbox_once(dir, ids.size());
  fmt::print("kafka sigkill: {} kills, {} executions verified exactly-once\n", kills, ids.size());
}

}  // namespace
}  // namespace auterity
