// A worker written in Python (tests/python_worker/worker.py, engine/WORKERS.md) runs the task
// steps of an engine on a real Kafka broker: the engine runs no step worker of its own, the
// Python process consumes commands.step in the worker group and commits its acks with its
// offsets in Kafka transactions. Every execution ends as the Python actions decide, and every
// command has exactly one ack, on the command's partition.

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "engine/record.h"
#include "node/node.h"
#include "processors/client.h"
#include "tests/kafka/broker_fixture.h"
#include "topics/catalog.h"

#ifndef AUTERITY_PYTHON3
#error "define AUTERITY_PYTHON3, AUTERITY_PYTHON_WORKER and AUTERITY_PYTHON_GEN_DIR"
#endif

namespace auterity {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

constexpr uint32_t partitions = 2;
constexpr auto executions_wait = std::chrono::seconds(45);

// `copy` is a local action too; `shout` (upper) exists only in the Python worker.
const std::string workflow = json{
    {"workflow", "greet"},
    {"version", 1},
    {"steps",
     json::array({
         {{"id", "copy"},
          {"kind", "task"},
          {"action", "transform"},
          {"input", {{"name", "{{input.name}}"}, {"n", "{{input.n}}"}}}},
         {{"id", "shout"},
          {"kind", "task"},
          {"action", "upper"},
          {"after", {"copy"}},
          {"input", {{"name", "{{steps.copy.output.name}}"}, {"n", "{{steps.copy.output.n}}"}}}},
     })}}.dump();

// Two steps both kinds of worker run (`transform`).
const std::string transform_only =
    json{
        {"workflow", "copy2"},
        {"version", 1},
        {"steps",
         json::array({{{"id", "a"}, {"kind", "task"}, {"action", "transform"}},
                      {{"id", "b"}, {"kind", "task"}, {"action", "transform"}, {"after", {"a"}}}})}}
        .dump();

const std::string unknown_action =
    json{{"workflow", "teleport"},
         {"version", 1},
         {"steps", json::array({{{"id", "beam"}, {"kind", "task"}, {"action", "teleport"}}})}}
        .dump();

// worker.py as a child process; its output goes to a file the failures quote. The child gets
// SIGKILL if the test process dies.
class python_worker {
 public:
  python_worker(const std::string& bootstrap, const std::string& prefix,
                const std::string& log_path)
      : _log_path(log_path) {
    std::vector<std::string> args = {AUTERITY_PYTHON3,     AUTERITY_PYTHON_WORKER,
                                     "--bootstrap",        bootstrap,
                                     "--prefix",           prefix,
                                     "--transactional-id", "python-worker-" + prefix,
                                     "--idle-exit-ms",     "90000"};
    std::vector<std::string> env = {std::string("PYTHONPATH=") + AUTERITY_PYTHON_GEN_DIR,
                                    "PATH=/usr/bin:/bin", "PYTHONUNBUFFERED=1"};
    // Everything the child needs is built before fork: only exec-safe calls after it.
    std::vector<char*> argv, envp;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    for (auto& e : env) envp.push_back(e.data());
    envp.push_back(nullptr);
    const int out = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    const pid_t parent = ::getpid();
    _pid = ::fork();
    if (_pid == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) ::_exit(127);
      ::dup2(out, STDOUT_FILENO);
      ::dup2(out, STDERR_FILENO);
      ::execve(argv[0], argv.data(), envp.data());
      ::_exit(127);
    }
    ::close(out);
  }
  ~python_worker() { stop(); }

  bool running() {
    if (_pid <= 0) return false;
    if (::waitpid(_pid, &_status, WNOHANG) != _pid) return true;
    _pid = -1;
    return false;
  }
  // SIGTERM: the worker finishes its batch and leaves the group; SIGKILL if it hangs.
  void stop() {
    if (_pid <= 0) return;
    ::kill(_pid, SIGTERM);
    for (int i = 0; i < 200 && running(); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    if (_pid > 0) {
      ::kill(_pid, SIGKILL);
      ::waitpid(_pid, &_status, 0);
      _pid = -1;
    }
  }
  std::string output() const {
    std::ifstream in(_log_path);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }

 private:
  std::string _log_path;
  pid_t _pid = -1;
  int _status = 0;
};

class python_worker_test : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { cluster = std::make_unique<testing::kafka_cluster>(1); }
  static void TearDownTestSuite() { cluster.reset(); }
  void SetUp() override {
    ASSERT_TRUE(cluster->error().empty()) << cluster->error();
    prefix = fmt::format("{}-{}-", ::testing::UnitTest::GetInstance()->current_test_info()->name(),
                         ::getpid());
    dir = fmt::format("{}/auterity-python-worker-{}", ::testing::TempDir(), prefix);
    fs::remove_all(dir);
    fs::create_directories(dir);
    catalog_options c;
    c.partitions = partitions;
    c.replication = 1;
    c.prefix = prefix;
    auto applied = apply_catalog(cluster->bootstrap(), default_catalog(c));
    ASSERT_TRUE(applied.has_value()) << applied.error().message;
    // The engine runs the orchestrator and its AI and notify workers, but leaves commands.step
    // to the Python worker.
    node_options o = kafka_node("engine-" + prefix, dir);
    o.worker_streams = {stream::commands_ai, stream::commands_notify};
    auto opened = node::open(o, clk);
    ASSERT_TRUE(opened.has_value()) << opened.error().message;
    n = std::move(*opened);
    ASSERT_TRUE(n->recover().has_value());
    n->start();
    worker = std::make_unique<python_worker>(cluster->bootstrap(), prefix, dir + "/worker.log");
  }
  void TearDown() override {
    worker.reset();
    n.reset();
    if (!HasFailure()) fs::remove_all(dir);
  }

  // Options of a node on the test's cluster and topics.
  node_options kafka_node(const std::string& instance, const std::string& data_dir) {
    node_options o;
    o.data_dir = data_dir;
    kafka_log_options k;
    k.bootstrap = cluster->bootstrap();
    k.instance_id = instance;
    k.topic_prefix = prefix;
    o.kafka = k;
    return o;
  }

  void publish(const std::string& tenant, const std::string& definition) {
    auto r = n->submit(tenant, client::publish_definition({tenant, "", "pub", 0}, definition));
    ASSERT_TRUE(r.has_value()) << r.error().message;
  }
  void start(const std::string& tenant, const std::string& id, const std::string& wf,
             const json& input) {
    auto r = n->submit(tenant, client::start_execution({tenant, id, id, 0}, wf, 0, input.dump()));
    ASSERT_TRUE(r.has_value()) << r.error().message;
    ids.emplace_back(tenant, id);
  }

  // Waits (bounded) until every execution has ended; then stops the worker and the engine, so
  // the log can be read without racing them.
  void wait_for_executions() {
    const auto deadline = std::chrono::steady_clock::now() + executions_wait;
    size_t ended = 0;
    while (std::chrono::steady_clock::now() < deadline && worker->running()) {
      ended = 0;
      for (const auto& [tenant, id] : ids) {
        auto e = n->execution(tenant, id);
        ended += e && e->status != exec_status::running;
      }
      if (ended == ids.size()) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    const bool worker_alive = worker->running();
    worker->stop();
    n->stop();
    ASSERT_TRUE(worker_alive) << "the Python worker exited early:\n" << worker->output();
    ASSERT_EQ(ended, ids.size()) << "executions still running after " << executions_wait.count()
                                 << " s; Python worker output:\n"
                                 << worker->output();
  }

  // Every record of (s, p), read_committed, in offset order.
  std::vector<record> read_all(stream s, uint32_t p) {
    std::vector<record> out;
    for (uint64_t from = 0;;) {
      auto got = n->get_log().read(s, p, from, 1024, 8 << 20, out);
      EXPECT_TRUE(got.has_value()) << got.error().message;
      if (!got || *got == 0) break;
      from = out.back().offset + 1;
    }
    return out;
  }

  // Each command on commands.step has exactly one ack, on the same partition, built as the
  // protocol says.
  void expect_one_ack_per_command(size_t commands_expected) {
    std::map<std::string, uint32_t> command_partition;
    std::map<std::string, std::pair<std::string, std::string>> command_owner;
    for (uint32_t p = 0; p < partitions; ++p) {
      for (const record& r : read_all(stream::commands_step, p)) {
        const fbs::Envelope* e = decode_envelope(r.value);
        ASSERT_NE(e, nullptr);
        const std::string id(sv(e->record_id()));
        command_partition[id] = p;
        command_owner[id] = {std::string(sv(e->tenant_id())), std::string(sv(e->execution_id()))};
      }
    }
    EXPECT_EQ(command_partition.size(), commands_expected);
    std::map<std::string, int> acks;
    for (uint32_t p = 0; p < partitions; ++p) {
      for (const record& r : read_all(stream::acks, p)) {
        std::string why;
        const fbs::Envelope* e = decode_envelope(r.value, &why);
        ASSERT_NE(e, nullptr) << "an ack the engine cannot decode: " << why;
        ASSERT_EQ(e->payload_type(), fbs::Payload::StepAck);
        const std::string id(sv(e->payload_as_StepAck()->command_id()));
        acks[id]++;
        ASSERT_TRUE(command_partition.contains(id)) << "ack for no command: " << id;
        EXPECT_EQ(command_partition[id], p) << id << " acked on another partition";
        EXPECT_EQ(sv(e->record_id()), "ack/" + id);
        EXPECT_EQ(sv(e->causation_id()), id);
        EXPECT_EQ(e->kind(), fbs::RecordKind::Command);
        EXPECT_EQ(sv(e->tenant_id()), command_owner[id].first);
        EXPECT_EQ(sv(e->execution_id()), command_owner[id].second);
        EXPECT_EQ(r.key, command_owner[id].first) << "ack key is not the tenant id";
        EXPECT_GT(e->timestamp_ms(), 0);
        ASSERT_NE(e->payload_as_StepAck()->usage(), nullptr);
      }
    }
    for (const auto& [id, p] : command_partition) {
      EXPECT_EQ(acks[id], 1) << id << " has " << acks[id] << " acks";
    }
  }

  static inline std::unique_ptr<testing::kafka_cluster> cluster;
  system_clock clk;
  std::string prefix;
  std::string dir;
  std::unique_ptr<node> n;
  std::unique_ptr<python_worker> worker;
  std::vector<std::pair<std::string, std::string>> ids;
};

TEST_F(python_worker_test, python_worker_runs_the_task_steps_exactly_once) {
  constexpr int executions = 6;
  for (const char* tenant : {"acme", "bayside"}) publish(tenant, workflow);
  for (int i = 0; i < executions; ++i) {
    start(i % 2 ? "bayside" : "acme", fmt::format("g{}", i), "greet",
          json{{"name", fmt::format("ada-{}", i)}, {"n", i}});
  }
  wait_for_executions();
  for (int i = 0; i < executions; ++i) {
    auto e = n->execution(ids[i].first, ids[i].second);
    ASSERT_TRUE(e.has_value());
    ASSERT_EQ(e->status, exec_status::succeeded) << ids[i].second << ": " << e->result;
    ASSERT_EQ(e->steps.size(), 2u);
    // Upper-cased by the Python action; the number kept its type through both steps.
    EXPECT_EQ(json::parse(e->steps[1].output_json),
              (json{{"name", fmt::format("ADA-{}", i)}, {"n", i}}))
        << e->steps[1].output_json;
  }
  expect_one_ack_per_command(executions * 2);
}

TEST_F(python_worker_test, an_unknown_action_fails_the_execution_with_the_workers_reason) {
  publish("acme", unknown_action);
  start("acme", "t1", "teleport", json::object());
  wait_for_executions();
  auto e = n->execution("acme", "t1");
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->status, exec_status::failed);
  EXPECT_EQ(e->result,
            "step 'beam' failed: unknown task action 'teleport' (python worker actions: "
            "transform, upper)");
  expect_one_ack_per_command(1);
}

// Issue 8: the reference worker and the engine's own step workers (`auterity worker`, here a
// worker-only node in group mode) are members of one group, auterity.worker.commands.step, so
// Kafka gives each partition to one of them and every command is answered once. (The Python
// worker used to join auterity.worker.step and answered every command a second time.)
TEST_F(python_worker_test, python_and_engine_step_workers_share_the_group) {
  node_options o = kafka_node("step-worker-" + prefix, dir + "/step-worker");
  o.orchestrator = false;
  o.kafka_group = true;
  o.worker_streams = {stream::commands_step};
  auto engine_worker = node::open(o, clk);
  ASSERT_TRUE(engine_worker.has_value()) << engine_worker.error().message;
  (*engine_worker)->start();
  constexpr int executions = 40;
  for (const char* tenant : {"acme", "bayside"}) publish(tenant, transform_only);
  for (int i = 0; i < executions; ++i) {
    start(i % 2 ? "bayside" : "acme", fmt::format("s{}", i), "copy2", json{{"n", i}});
  }
  wait_for_executions();
  (*engine_worker)->stop();
  for (const auto& [tenant, id] : ids) {
    auto e = n->execution(tenant, id);
    ASSERT_TRUE(e.has_value());
    EXPECT_EQ(e->status, exec_status::succeeded) << id << ": " << e->result;
  }
  expect_one_ack_per_command(executions * 2);
  // The Python worker really was a member that worked (it reports its count when it stops).
  const std::string out = worker->output();
  const size_t at = out.find("acknowledged ");
  ASSERT_NE(at, std::string::npos) << out;
  EXPECT_GT(std::stoul(out.substr(at + 13)), 0u) << out;
}

}  // namespace
}  // namespace auterity
