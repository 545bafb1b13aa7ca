// The engine on a real Kafka broker (started by tests/kafka/broker.sh): a workflow end to end,
// and SIGKILL of the engine process mid-transaction under load — every execution completes,
// the read_committed command topics hold each command exactly once, the executions topic holds
// no duplicated event, each notification is written once, and state equals a replay of the log.

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <thread>
#include <tuple>

#include <fmt/ranges.h>
#include <gtest/gtest.h>
#include <librdkafka/rdkafka.h>
#include <nlohmann/json.hpp>

#include "engine/kafka_placement.h"
#include "engine/record.h"
#include "node/node.h"
#include "processors/client.h"
#include "replay/verify.h"
#include "tests/kafka/broker_fixture.h"
#include "tests/run_command.h"
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
         {{"id", "score"},
          {"kind", "task"},
          {"action", "transform"},
          {"input", {{"n", "{{input.n}}"}}}},
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

// Waits until every execution in `ids` has ended or `limit` passes; returns how many ended.
size_t await_ended(node& n, const std::vector<std::pair<std::string, std::string>>& ids,
                   std::chrono::seconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  size_t done = 0;
  while (done < ids.size() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    done = 0;
    for (const auto& [tenant, id] : ids) {
      auto e = n.execution(tenant, id);
      done += e && e->status != exec_status::running;
    }
  }
  return done;
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

// Each notification once per outbox, and every one sent by some instance.
void expect_outbox_once(const std::vector<std::string>& dirs, size_t executions) {
  std::set<std::string> all;
  for (const std::string& dir : dirs) {
    std::ifstream in(dir + "/outbox/notifications.jsonl");
    std::set<std::string> seen;
    for (std::string line; std::getline(in, line);) {
      const std::string id = json::parse(line)["id"].get<std::string>();
      EXPECT_TRUE(seen.insert(id).second) << "notification sent twice from " << dir << ": " << id;
      all.insert(id);
    }
  }
  EXPECT_EQ(all.size(), executions * notifications_per_execution);
}
void expect_outbox_once(const std::string& dir, size_t executions) {
  expect_outbox_once(std::vector<std::string>{dir}, executions);
}

template <int Nodes>
class kafka_fixture : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { cluster = std::make_unique<testing::kafka_cluster>(Nodes); }
  static void TearDownTestSuite() { cluster.reset(); }
  void SetUp() override {
    ASSERT_TRUE(cluster->error().empty()) << cluster->error();
    prefix = fmt::format("{}-{}-", ::testing::UnitTest::GetInstance()->current_test_info()->name(),
                         ::getpid());
    dir = fmt::format("{}/auterity-kafka-{}", ::testing::TempDir(), prefix);
    fs::remove_all(dir);
    catalog_options c;
    c.partitions = partitions;
    c.replication = Nodes >= 3 ? 3 : 1;  // 3 nodes: acks=all with min.insync.replicas=2
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

  // `executions` split over `tenants`, in turn.
  std::vector<std::pair<std::string, std::string>> submit(
      size_t executions, const std::vector<std::string>& tenants = {"acme", "bayside"}) {
    system_clock clk;
    auto n = node::open(options("submitter", false), clk);
    EXPECT_TRUE(n.has_value()) << n.error().message;
    if (!n) return {};
    return submit_load(**n, executions, tenants);
  }

  void verify(const std::string& state_dir,
              const std::vector<std::pair<std::string, std::string>>& ids) {
    system_clock clk;
    node_options o = options("verifier", false);
    o.data_dir = state_dir;
    auto n = node::open(o, clk);
    ASSERT_TRUE(n.has_value()) << n.error().message;
    ASSERT_TRUE((*n)->recover().has_value());
    verify_exactly_once(**n, ids, dir + "/scratch");
  }

  // Executions x<first> .. x<first + executions - 1>; the workflow is published with the first.
  std::vector<std::pair<std::string, std::string>> submit_load(
      node& n, size_t executions, const std::vector<std::string>& tenants = {"acme", "bayside"},
      size_t first = 0) {
    std::vector<std::pair<std::string, std::string>> ids;
    for (const std::string& tenant : first == 0 ? tenants : std::vector<std::string>()) {
      EXPECT_TRUE(n.submit(tenant, client::publish_definition({tenant, "", "pub", 0}, workflow)));
    }
    for (size_t i = first; i < first + executions; ++i) {
      const std::string& tenant = tenants[i % tenants.size()];
      const std::string id = fmt::format("x{}", i);
      auto r = n.submit(
          tenant, client::start_execution({tenant, id, id, 0}, "lead", 0, json{{"n", i}}.dump()));
      EXPECT_TRUE(r.has_value()) << r.error().message;
      ids.emplace_back(tenant, id);
    }
    return ids;
  }

  // Waits up to 60 s until `moves` tenants moved in (TenantMovedIn, read_committed, counted on
  // every partition of the log as it is now); returns how many did. A scale's moves are complete
  // only then: until the target installs the chunks, the tenant's state is in flight on the
  // target's ingress (docs/tenant-moves.md), so a reader of the state stores would not find it,
  // and a second move of a tenant still installing is refused, as it should be.
  size_t await_moved_in(size_t moves) {
    size_t seen = 0;
    for (int round = 0; round < 120 && seen < moves; ++round) {
      kafka_log_options ro = *options("mover-reader", false).kafka;
      ro.read_only = true;
      auto reader = open_kafka_log(ro);
      if (!reader) continue;
      seen = 0;
      for (uint32_t p = 0; p < (*reader)->partition_count(); ++p) {
        for (const record& r : read_all(**reader, stream::executions, p)) {
          const fbs::Envelope* e = decode_envelope(r.value);
          seen += e && e->payload_type() == fbs::Payload::TenantMovedIn;
        }
      }
      if (seen < moves) std::this_thread::sleep_for(std::chrono::milliseconds(500));
    }
    return seen;
  }

  static inline std::unique_ptr<testing::kafka_cluster> cluster;
  std::string prefix;
  std::string dir;
};

using kafka_engine = kafka_fixture<1>;
using kafka_three_nodes = kafka_fixture<3>;

TEST_F(kafka_engine, workflow_runs_end_to_end_on_kafka) {
  system_clock clk;
  auto n = node::open(options("e2e", true), clk);
  ASSERT_TRUE(n.has_value()) << n.error().message;
  auto ids = submit_load(**n, 20);
  // A producer that used another partitioner: the record lands off its tenant's partition and
  // is forwarded there, not rejected.
  commit_batch misplaced;
  misplaced.add(
      stream::ingress, "acme",
      client::start_execution({"acme", "misplaced", "misplaced", 0}, "lead", 0, R"({"n":999})"));
  const uint32_t wrong = (tenant_partition("acme", partitions) + 1) % partitions;
  ASSERT_TRUE((*n)->get_log().commit(wrong, misplaced).has_value());
  ids.emplace_back("acme", "misplaced");
  ASSERT_TRUE((*n)->recover().has_value());
  (*n)->start();
  const size_t done = await_ended(**n, ids, std::chrono::seconds(90));
  (*n)->stop();
  ASSERT_EQ(done, ids.size()) << "executions still running after 90 s";
  verify_exactly_once(**n, ids, dir + "/scratch");
  expect_outbox_once(dir, ids.size());
  n->reset();  // releases the state stores for the auditor
  // An auditor verifies the history on Kafka (read-only) against the engine's state.
  const std::string audit = fmt::format(
      "{} replay verify --kafka {} --topic-prefix {} --data {} --no-progress > "
      "{}/audit.log 2>&1",
      AUTERITY_BIN, cluster->bootstrap(), prefix, dir, dir);
  const int rc = std::system(audit.c_str());
  EXPECT_TRUE(WIFEXITED(rc) && WEXITSTATUS(rc) == 0)
      << "replay verify on Kafka failed; see " << dir << "/audit.log";
}

// Issue 9: a tenant moves to the other partition and back while its executions run (acks of
// commands issued before each move arrive at the partition it left and follow it): each
// execution completes once, each command is written once, state equals replay on both
// partitions, and the chains verify across the moves.
TEST_F(kafka_engine, a_tenant_moves_and_back_under_load_with_nothing_lost_or_repeated) {
  system_clock clk;
  auto n = node::open(options("mover", true), clk);
  ASSERT_TRUE(n.has_value()) << n.error().message;
  auto ids = submit_load(**n, 200);
  ASSERT_TRUE((*n)->recover().has_value());
  (*n)->start();
  const uint32_t home = tenant_partition("acme", partitions);
  const uint32_t other = (home + 1) % partitions;
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  ASSERT_TRUE((*n)->submit("acme", client::move_tenant({"acme", "", "move-1", 0}, other)));
  std::this_thread::sleep_for(std::chrono::milliseconds(700));
  ASSERT_TRUE((*n)->submit("acme", client::move_tenant({"acme", "", "move-2", 0}, home)));
  const size_t done = await_ended(**n, ids, std::chrono::seconds(120));
  (*n)->stop();
  ASSERT_EQ(done, ids.size()) << "executions still running after 120 s";
  // Both moves are in acme's history, on both partitions, and nothing was rejected.
  std::map<uint32_t, std::vector<std::string>> moves;
  for (uint32_t p = 0; p < partitions; ++p) {
    for (const record& r : read_all((*n)->get_log(), stream::executions, p)) {
      const fbs::Envelope* e = decode_envelope(r.value);
      ASSERT_NE(e, nullptr);
      EXPECT_NE(e->payload_type(), fbs::Payload::CommandRejected)
          << sv(e->payload_as_CommandRejected()->reason());
      const auto t = e->payload_type();
      if (t == fbs::Payload::TenantMovedOut || t == fbs::Payload::TenantMovedIn) {
        moves[p].emplace_back(payload_name(t));
      }
    }
  }
  EXPECT_EQ(moves[home], (std::vector<std::string>{"TenantMovedOut", "TenantMovedIn"}));
  EXPECT_EQ(moves[other], (std::vector<std::string>{"TenantMovedIn", "TenantMovedOut"}));
  verify_exactly_once(**n, ids, dir + "/scratch");
  expect_outbox_once(dir, ids.size());
}

// Issue 9: the topics grow while an instance runs (`topics apply --allow-repartition`). The
// placement base is recorded first, so no tenant changes partition; restarted, the instance
// runs all the partitions, and records that producers now hash onto the new partitions are
// forwarded to their tenants: every execution, from before and after the growth, completes exactly
// once.
TEST_F(kafka_engine, topics_grown_while_running_keep_every_tenant_in_place) {
  system_clock clk;
  auto n = node::open(options("grower", true), clk);
  ASSERT_TRUE(n.has_value()) << n.error().message;
  auto ids = submit_load(**n, 100);
  // Two more tenants whose default partition (0 and 1 of 2) differs from where a producer hashing
  // with 4 partitions puts them (2 and 3): without the recorded base they would be re-homed,
  // away from their definitions.
  const std::vector<std::string> tenants = {"acme", "bayside", "cardinal", "eastside"};
  for (const char* tenant : {"cardinal", "eastside"}) {
    ASSERT_NE(tenant_partition(tenant, partitions), tenant_partition(tenant, partitions + 2));
    ASSERT_TRUE((*n)->submit(tenant, client::publish_definition({tenant, "", "pub", 0}, workflow)));
    const std::string id = fmt::format("{}-before", tenant);
    ASSERT_TRUE((*n)->submit(
        tenant, client::start_execution({tenant, id, id, 0}, "lead", 0, R"({"n":1})")));
    ids.emplace_back(tenant, id);
  }
  ASSERT_TRUE((*n)->recover().has_value());
  (*n)->start();
  catalog_options c;
  c.partitions = partitions + 2;
  c.prefix = prefix;
  auto grown = apply_catalog(cluster->bootstrap(), default_catalog(c), {.allow_repartition = true});
  ASSERT_TRUE(grown.has_value()) << grown.error().message;
  EXPECT_TRUE(std::ranges::any_of(*grown, [](const std::string& line) {
    return line.find("recorded placement base 2") != std::string::npos;
  })) << "the base is recorded before the partitions are added";
  // This instance runs in the test's process, with no `run` loop to open it again (which
  // `auterity run` does: partitions_scale_grows_and_shrinks_while_two_instances_run): restart it.
  (*n)->stop();
  n->reset();

  auto again = node::open(options("grower", true), clk);
  ASSERT_TRUE(again.has_value()) << again.error().message;
  EXPECT_EQ((*again)->partitions(), partitions + 2);
  EXPECT_EQ((*again)->get_log().placement().base, partitions);
  ASSERT_TRUE((*again)->recover().has_value());
  (*again)->start();
  // More work, now hashed by producers with the new count.
  for (size_t i = 0; i < 40; ++i) {
    const std::string& tenant = tenants[i % tenants.size()];
    const std::string id = fmt::format("after-{}", i);
    ASSERT_TRUE((*again)->submit(
        tenant, client::start_execution({tenant, id, id, 0}, "lead", 0, json{{"n", i}}.dump())));
    ids.emplace_back(tenant, id);
  }
  const size_t done = await_ended(**again, ids, std::chrono::seconds(120));
  (*again)->stop();
  ASSERT_EQ(done, ids.size()) << "executions still running after 120 s";
  verify_exactly_once(**again, ids, dir + "/scratch");
  expect_outbox_once(dir, ids.size());
}

// Issue 9: `partitions scale --kafka` while an instance runs under load. It weighs the tenants
// from the executions topic (read_committed), prints the plan (`--dry-run` changes nothing),
// grows the topics 2 -> 4 with the base recorded and, as the instance (run by this test, not by
// `auterity run`, so nothing opens it again) keeps two partitions, stops after its wait with
// nothing published: the fallback path. The instance is restarted on 4
// partitions; the same command again publishes the moves onto the new partitions, which the
// instance runs while executions keep coming; then down to 3: partition 3 retired in the
// placement topic and its tenants moved off. Every execution completes exactly once, state
// equals replay on all four partitions, and the chains verify across the moves.
TEST_F(kafka_engine, partitions_scale_grows_two_to_four_and_moves_tenants_onto_the_new_ones) {
  system_clock clk;
  auto in_group = [&] {  // an instance in the engine group, as `auterity run --kafka` runs
    node_options o = options("scaler", true);
    o.kafka_group = true;
    return o;
  };
  auto n = node::open(in_group(), clk);
  ASSERT_TRUE(n.has_value()) << n.error().message;
  const std::vector<std::string> tenants = {"acme",   "bayside",  "cardinal",
                                            "dorado", "eastside", "fjord"};
  std::vector<std::pair<std::string, std::string>> ids;
  auto start = [&](node& on, const std::string& tag, size_t count) {
    for (size_t i = 0; i < count; ++i) {
      const std::string& tenant = tenants[i % tenants.size()];
      const std::string id = fmt::format("{}-{}", tag, i);
      ASSERT_TRUE(on.submit(
          tenant, client::start_execution({tenant, id, id, 0}, "lead", 0, json{{"n", i}}.dump())));
      ids.emplace_back(tenant, id);
    }
  };
  for (const std::string& tenant : tenants) {
    ASSERT_TRUE((*n)->submit(tenant, client::publish_definition({tenant, "", "pub", 0}, workflow)));
  }
  start(**n, "before", 60);
  ASSERT_TRUE((*n)->recover().has_value());
  (*n)->start();
  const std::string where =
      fmt::format("--kafka {} --topic-prefix {} --data {}/cli", cluster->bootstrap(), prefix, dir);
  auto cli = [&](const std::string& args) {
    return testing::run_command(fmt::format("'{}' {} {} 2>&1", AUTERITY_BIN, args, where));
  };
  auto plan = cli("partitions plan --to 4");
  ASSERT_EQ(plan.code, 0) << plan.out;
  EXPECT_NE(plan.out.find("partitions: 2 -> 4 taking tenants"), std::string::npos) << plan.out;
  EXPECT_NE(plan.out.find("records of the executions topic in"), std::string::npos) << plan.out;
  auto dry = cli("partitions scale --to 4 --dry-run");
  ASSERT_EQ(dry.code, 0) << dry.out;
  EXPECT_NE(dry.out.find("dry run: nothing changed"), std::string::npos) << dry.out;
  auto count = check_copartitioned(cluster->bootstrap(), prefix);
  ASSERT_TRUE(count.has_value()) << count.error().message;
  EXPECT_EQ(*count, partitions) << "a dry run changes nothing";
  // The instance runs in this process (no `run` loop to open it again): it keeps running two
  // partitions, so the scale's wait times out and it publishes nothing (the fallback: restart,
  // then run it again).
  auto grown = cli("partitions scale --to 4 --wait-s 5");
  ASSERT_EQ(grown.code, 2) << grown.out;
  EXPECT_NE(grown.out.find("recorded placement base 2"), std::string::npos) << grown.out;
  EXPECT_NE(grown.out.find("did not take up 4 partitions within 5 s"), std::string::npos)
      << grown.out;
  EXPECT_NE(grown.out.find("no move published"), std::string::npos) << grown.out;
  count = check_copartitioned(cluster->bootstrap(), prefix);
  ASSERT_TRUE(count.has_value()) << count.error().message;
  EXPECT_EQ(*count, 4u);
  // The operator restarts the instance on the four partitions.
  (*n)->stop();
  n->reset();
  auto again = node::open(in_group(), clk);
  ASSERT_TRUE(again.has_value()) << again.error().message;
  ASSERT_EQ((*again)->partitions(), 4u);
  start(**again, "restarted", 30);  // hashed with 4 by the producer: forwarded to their tenants
  ASSERT_TRUE((*again)->recover().has_value());
  (*again)->start();
  auto moved = cli("partitions scale --to 4");
  ASSERT_EQ(moved.code, 0) << moved.out;
  EXPECT_NE(moved.out.find("move(s) published on ingress"), std::string::npos) << moved.out;
  EXPECT_EQ(moved.out.find(" 0 move(s) published"), std::string::npos) << moved.out;
  start(**again, "after", 60);  // while the tenants move
  ASSERT_EQ(await_ended(**again, ids, std::chrono::seconds(180)), ids.size())
      << "executions still running after 180 s";
  // Down to 3: partition 3 retired in the placement topic, its tenants moved off.
  auto shrunk = cli("partitions scale --to 3");
  ASSERT_EQ(shrunk.code, 0) << shrunk.out;
  EXPECT_NE(shrunk.out.find("3..3 retired: Kafka cannot delete partitions"), std::string::npos)
      << shrunk.out;
  EXPECT_NE(shrunk.out.find("retired 3"), std::string::npos) << shrunk.out;
  std::map<std::string, std::string> conf = {{"bootstrap.servers", cluster->bootstrap()}};
  auto header = read_kafka_placement(conf, prefix + "placement", 10'000);
  ASSERT_TRUE(header.has_value()) << header.error().message;
  ASSERT_TRUE(header->has_value());
  EXPECT_EQ((*header)->base, partitions);
  EXPECT_EQ((*header)->retired, (std::vector<uint32_t>{3}));
  start(**again, "shrunk", 30);
  const size_t done = await_ended(**again, ids, std::chrono::seconds(180));
  (*again)->stop();
  ASSERT_EQ(done, ids.size()) << "executions still running after 180 s";
  // Tenants went onto the new partitions (read_committed), and no command was refused.
  std::set<uint32_t> moved_in;  // new partitions a tenant moved onto
  size_t left_retired = 0;      // tenants that moved off the retired partition
  for (uint32_t p = 0; p < 4; ++p) {
    for (const record& r : read_all((*again)->get_log(), stream::executions, p)) {
      const fbs::Envelope* e = decode_envelope(r.value);
      ASSERT_NE(e, nullptr);
      EXPECT_NE(e->payload_type(), fbs::Payload::CommandRejected)
          << sv(e->payload_as_CommandRejected()->reason());
      if (e->payload_type() == fbs::Payload::TenantMovedIn && p >= partitions) {
        moved_in.insert(p);
      }
      if (e->payload_type() == fbs::Payload::TenantMovedOut && p == 3) ++left_retired;
    }
  }
  EXPECT_EQ(moved_in, (std::set<uint32_t>{2, 3})) << "each new partition takes tenants";
  EXPECT_GE(left_retired, 1u) << "the tenants of the retired partition moved off";
  verify_exactly_once(**again, ids, dir + "/scratch");
  expect_outbox_once(dir, ids.size());
  // Planned again: three partitions take tenants, none is left on the retired one.
  auto after = cli("partitions plan");
  ASSERT_EQ(after.code, 0) << after.out;
  EXPECT_NE(after.out.find("partitions: 3 -> 3 taking tenants"), std::string::npos) << after.out;
  EXPECT_EQ(after.out.find("partition 3 retired"), std::string::npos) << after.out;
}

// Issue 8, defect 1: end_offset() is the log end, open transactions included (a read_committed
// handle answers ListOffsets with the last stable offset, which an open transaction holds back:
// a restore then took its own checkpoint for "beyond the end"), and await_decided() waits until
// the open transaction is decided.
TEST_F(kafka_engine, end_offset_counts_an_open_transaction_and_await_decided_waits_for_it) {
  char err[512];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  ASSERT_EQ(
      rd_kafka_conf_set(conf, "bootstrap.servers", cluster->bootstrap().c_str(), err, sizeof err),
      RD_KAFKA_CONF_OK);
  ASSERT_EQ(
      rd_kafka_conf_set(conf, "transactional.id", ("open-" + prefix).c_str(), err, sizeof err),
      RD_KAFKA_CONF_OK);
  std::unique_ptr<rd_kafka_t, void (*)(rd_kafka_t*)> rk(
      rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err), rd_kafka_destroy);
  ASSERT_NE(rk, nullptr) << err;
  ASSERT_EQ(rd_kafka_init_transactions(rk.get(), 30'000), nullptr);
  ASSERT_EQ(rd_kafka_begin_transaction(rk.get()), nullptr);
  const std::string topic = prefix + "executions";
  for (int i = 0; i < 3; ++i) {
    ASSERT_EQ(rd_kafka_producev(rk.get(), RD_KAFKA_V_TOPIC(topic.c_str()), RD_KAFKA_V_PARTITION(0),
                                RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                RD_KAFKA_V_VALUE(const_cast<char*>("x"), 1), RD_KAFKA_V_END),
              RD_KAFKA_RESP_ERR_NO_ERROR);
  }
  ASSERT_EQ(rd_kafka_flush(rk.get(), 30'000), RD_KAFKA_RESP_ERR_NO_ERROR);

  kafka_log_options k;
  k.bootstrap = cluster->bootstrap();
  k.topic_prefix = prefix;
  k.read_only = true;
  auto l = open_kafka_log(k);
  ASSERT_TRUE(l.has_value()) << l.error().message;
  auto end = (*l)->end_offset(stream::executions, 0);
  ASSERT_TRUE(end.has_value()) << end.error().message;
  EXPECT_EQ(*end, 3u) << "the log end must count the open transaction's records";
  auto waited = (*l)->await_decided(stream::executions, 0, *end, std::chrono::milliseconds(500));
  ASSERT_FALSE(waited.has_value()) << "an open transaction is not decided";
  EXPECT_EQ(waited.error().code, errc::timeout);
  std::vector<record> recs;
  auto n = (*l)->read(stream::executions, 0, 0, 10, 1 << 20, recs);
  ASSERT_TRUE(n.has_value()) << n.error().message;
  EXPECT_EQ(*n, 0u) << "read_committed must not see the open transaction";

  ASSERT_EQ(rd_kafka_commit_transaction(rk.get(), 30'000), nullptr);
  auto decided = (*l)->await_decided(stream::executions, 0, *end, std::chrono::seconds(10));
  EXPECT_TRUE(decided.has_value()) << decided.error().message;
  // The reader reached an end (0) before the commit; read() may answer from that stale end while
  // the next fetch is under way, read_to() must not: a restore relies on it.
  recs.clear();
  n = (*l)->read_to(stream::executions, 0, 0, *end, 10, 1 << 20, recs);
  ASSERT_TRUE(n.has_value()) << n.error().message;
  EXPECT_EQ(*n, 3u);
  end = (*l)->end_offset(stream::executions, 0);
  ASSERT_TRUE(end.has_value());
  EXPECT_EQ(*end, 4u) << "three records and the commit marker";
}

// The gateway's log (appends_only): no transactions, positions refused, and what it appends is
// read by a read_committed reader at once, in order, at the offsets it returned.
TEST_F(kafka_engine, an_appends_only_log_writes_without_transactions_and_refuses_positions) {
  kafka_log_options k;
  k.bootstrap = cluster->bootstrap();
  k.topic_prefix = prefix;
  k.instance_id = "gw-appends";
  k.appends_only = true;
  auto gw = open_kafka_log(k);
  ASSERT_TRUE(gw.has_value()) << gw.error().message;
  commit_batch with_position;
  with_position.appends.push_back({stream::ingress, "acme", "a", std::nullopt});
  with_position.positions.push_back({"orchestrator", stream::ingress, 1});
  auto refused = (*gw)->commit(1, with_position);
  ASSERT_FALSE(refused.has_value());
  EXPECT_EQ(refused.error().code, errc::invalid);
  commit_batch batch;
  for (const char* v : {"one", "two", "three"}) {
    batch.appends.push_back({stream::ingress, "acme", v, std::nullopt});
  }
  auto offsets = (*gw)->commit(1, batch);
  ASSERT_TRUE(offsets.has_value()) << offsets.error().message;
  ASSERT_EQ(offsets->size(), 3u);
  EXPECT_EQ((*offsets)[1], (*offsets)[0] + 1);  // no transaction marker between them
  k.appends_only = false;
  k.read_only = true;
  auto reader = open_kafka_log(k);
  ASSERT_TRUE(reader.has_value()) << reader.error().message;
  std::vector<record> recs;
  auto n = (*reader)->read_to(stream::ingress, 1, 0, (*offsets)[2] + 1, 10, 1 << 20, recs);
  ASSERT_TRUE(n.has_value()) << n.error().message;
  ASSERT_EQ(recs.size(), 3u) << "the refused batch wrote nothing";
  EXPECT_EQ(recs[0].value, "one");
  EXPECT_EQ(recs[2].value, "three");
  EXPECT_EQ(recs[0].offset, (*offsets)[0]);
}

// The engine's commits go through committers (two by default), each taking turns on two
// transactional ids: committer 0 on "auterity.<instance>" and ".1" (partition 0), committer 1
// on ".2" and ".3" (partition 1; docs/pipelined-transactions.md, step 1). A restarted instance
// must abort and fence what every id left open; otherwise a restore waits for the old
// transaction until the broker times it out (here 60 s), and the old process could still commit
// it. Fewer producers or committers than the predecessor leave the other ids open: the checks
// below fail when the opening skips an id.
TEST_F(kafka_engine, opening_an_instance_aborts_what_every_committers_ids_left_open) {
  const std::string instance = "fence-" + prefix;
  const std::string topic = prefix + "executions";
  using rk_ptr = std::unique_ptr<rd_kafka_t, void (*)(rd_kafka_t*)>;
  std::vector<rk_ptr> old;  // the predecessor's four producers, each with an open transaction
  for (int i = 0; i < 4; ++i) {
    const std::string id =
        i == 0 ? "auterity." + instance : fmt::format("auterity.{}.{}", instance, i);
    const int32_t partition = i / 2;  // committer i / 2 commits partition i / 2
    char err[512];
    rd_kafka_conf_t* conf = rd_kafka_conf_new();
    ASSERT_EQ(
        rd_kafka_conf_set(conf, "bootstrap.servers", cluster->bootstrap().c_str(), err, sizeof err),
        RD_KAFKA_CONF_OK);
    ASSERT_EQ(rd_kafka_conf_set(conf, "transactional.id", id.c_str(), err, sizeof err),
              RD_KAFKA_CONF_OK);
    ASSERT_EQ(rd_kafka_conf_set(conf, "transaction.timeout.ms", "60000", err, sizeof err),
              RD_KAFKA_CONF_OK);
    rk_ptr rk(rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err), rd_kafka_destroy);
    ASSERT_NE(rk, nullptr) << err;
    ASSERT_EQ(rd_kafka_init_transactions(rk.get(), 30'000), nullptr);
    ASSERT_EQ(rd_kafka_begin_transaction(rk.get()), nullptr);
    for (int r = 0; r < 2; ++r) {
      ASSERT_EQ(rd_kafka_producev(rk.get(), RD_KAFKA_V_TOPIC(topic.c_str()),
                                  RD_KAFKA_V_PARTITION(partition),
                                  RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                  RD_KAFKA_V_VALUE(const_cast<char*>("x"), 1), RD_KAFKA_V_END),
                RD_KAFKA_RESP_ERR_NO_ERROR);
    }
    ASSERT_EQ(rd_kafka_flush(rk.get(), 30'000), RD_KAFKA_RESP_ERR_NO_ERROR);
    old.push_back(std::move(rk));
  }

  kafka_log_options k;
  k.bootstrap = cluster->bootstrap();
  k.topic_prefix = prefix;
  k.instance_id = instance;
  for (auto [producers, committers, what] :
       {std::tuple{3, 2, "transactional_producers"}, std::tuple{2, 0, "committers"},
        std::tuple{2, kafka_committers_max + 1, "committers"}}) {
    k.transactional_producers = producers;
    k.committers = committers;
    auto refused = open_kafka_log(k);
    ASSERT_FALSE(refused.has_value()) << producers << " x " << committers << " is out of range";
    EXPECT_EQ(refused.error().code, errc::invalid);
    EXPECT_NE(refused.error().message.find(what), std::string::npos) << refused.error().message;
  }

  // Whether partition p's records below its log end are all decided within `limit`.
  auto decided = [&](log& l, uint32_t p, std::chrono::seconds limit) {
    auto end = l.end_offset(stream::executions, p);
    EXPECT_TRUE(end.has_value()) << end.error().message;
    return end && l.await_decided(stream::executions, p, *end, limit).has_value();
  };
  // One committer on one producer: only "auterity.<instance>" is fenced; ".1" (partition 0) and
  // committer 1's ids stay open.
  k.transactional_producers = 1;
  k.committers = 1;
  auto one = open_kafka_log(k);
  ASSERT_TRUE(one.has_value()) << one.error().message;
  EXPECT_FALSE(decided(**one, 0, std::chrono::seconds(2))) << "auterity.<instance>.1 was fenced";
  one->reset();
  // One committer on two producers: partition 0 is decided, committer 1's ids stay open.
  k.transactional_producers = 2;
  auto two = open_kafka_log(k);
  ASSERT_TRUE(two.has_value()) << two.error().message;
  EXPECT_TRUE(decided(**two, 0, std::chrono::seconds(10)));
  EXPECT_FALSE(decided(**two, 1, std::chrono::seconds(2))) << "committer 1's ids were fenced";
  two->reset();
  // Two committers of two producers, as the predecessor: everything it left open is aborted.
  k.committers = 2;
  auto four = open_kafka_log(k);
  ASSERT_TRUE(four.has_value()) << four.error().message;
  for (uint32_t p = 0; p < partitions; ++p) {
    EXPECT_TRUE(decided(**four, p, std::chrono::seconds(10))) << "partition " << p;
    std::vector<record> recs;
    auto n = (*four)->read(stream::executions, p, 0, 10, 1 << 20, recs);
    ASSERT_TRUE(n.has_value()) << n.error().message;
    EXPECT_EQ(*n, 0u) << "partition " << p
                      << ": the open transactions were aborted, none committed";
  }
  for (rk_ptr& rk : old) {
    rd_kafka_error_t* e = rd_kafka_commit_transaction(rk.get(), 30'000);
    EXPECT_NE(e, nullptr) << "the predecessor's producer must be fenced";
    if (e) rd_kafka_error_destroy(e);
  }
}

// `auterity run` on Kafka as a child process; its output goes to <dir>/engine.log.
std::string read_text(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// `fault`: AUTERITY_FAULT for the child (engine/fault.h), empty for none; `extra`: more options
// of `run`.
// `until_quiet` off: it runs until SIGTERM.
pid_t spawn_engine(const std::string& dir, const std::string& bootstrap, const std::string& prefix,
                   const std::string& instance = "engine", const std::string& fault = "",
                   const std::vector<std::string>& extra = {}, bool until_quiet = true) {
  fs::create_directories(dir);
  std::vector<std::string> args = {
      AUTERITY_BIN, "run", "--kafka",    bootstrap, "--topic-prefix",     prefix,
      "--data",     dir,   "--instance", instance,  "--stats-interval-s", "0"};
  if (until_quiet) args.push_back("--until-quiet");
  args.insert(args.end(), extra.begin(), extra.end());
  // Built before the fork: the test process has threads (Kafka clients), so the child must not
  // allocate before execv.
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  const std::string log = dir + "/engine.log";
  const pid_t pid = ::fork();
  if (pid == 0) {
    if (!fault.empty()) ::setenv("AUTERITY_FAULT", fault.c_str(), 1);
    FILE* f = std::freopen(log.c_str(), "a", stderr);
    (void)f;
    ::dup2(STDERR_FILENO, STDOUT_FILENO);
    ::execv(AUTERITY_BIN, argv.data());
    ::_exit(127);
  }
  return pid;
}

// Waits up to `seconds` for pid; its wait status, or -1 (then it was killed).
int wait_exit(pid_t pid, int seconds) {
  int status = 0;
  for (int i = 0; i < seconds * 10; ++i) {
    if (::waitpid(pid, &status, WNOHANG) == pid) return status;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ::kill(pid, SIGKILL);
  ::waitpid(pid, &status, 0);
  return -1;
}

bool exited_ok(int status) { return status >= 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0; }

TEST_F(kafka_engine, sigkill_mid_transaction_keeps_exactly_once) {
  const char* env = std::getenv("AUTERITY_TEST_SEED");
  const uint64_t seed = env ? std::strtoull(env, nullptr, 10) : std::random_device{}();
  std::mt19937_64 rng(seed);
  fmt::print("kafka sigkill: seed {} (AUTERITY_TEST_SEED reruns the schedule)\n", seed);
  const auto ids = submit(400);
  int kills = 0;
  for (int round = 0; round < 5; ++round) {
    const pid_t pid = spawn_engine(dir, cluster->bootstrap(), prefix);
    const int ms = std::uniform_int_distribution<int>(1500, 5000)(rng);
    std::this_thread::sleep_for(std::chrono::milliseconds(ms));
    int status = 0;
    if (::waitpid(pid, &status, WNOHANG) == 0) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      ++kills;
      fmt::print("  round {}: SIGKILL after {} ms\n", round, ms);
    }
  }
  const int status = wait_exit(spawn_engine(dir, cluster->bootstrap(), prefix), 180);
  ASSERT_TRUE(exited_ok(status)) << "final engine run failed or hung (status " << status
                                 << "); log: " << dir << "/engine.log";
  EXPECT_GE(kills, 1) << "no kill landed while the engine was working";
  verify(dir, ids);
  expect_outbox_once(dir, ids.size());
  fmt::print("kafka sigkill: {} kills, {} executions verified exactly-once\n", kills, ids.size());
}

// The log end (read_uncommitted) and the last stable offset (read_committed) of a partition, as
// a client of its own asks the broker: below the log end and at or above the last stable offset
// lie records of a transaction still open.
std::pair<int64_t, int64_t> end_and_stable(const std::string& bootstrap, const std::string& topic,
                                           int32_t partition) {
  std::pair<int64_t, int64_t> out{-1, -1};
  for (const char* isolation : {"read_uncommitted", "read_committed"}) {
    char err[512];
    rd_kafka_conf_t* conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap.c_str(), err, sizeof err);
    rd_kafka_conf_set(conf, "group.id", "end-and-stable", err, sizeof err);
    rd_kafka_conf_set(conf, "isolation.level", isolation, err, sizeof err);
    std::unique_ptr<rd_kafka_t, void (*)(rd_kafka_t*)> rk(
        rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof err), rd_kafka_destroy);
    EXPECT_NE(rk, nullptr) << err;
    if (!rk) return out;
    int64_t low = 0, high = -1;
    EXPECT_EQ(
        rd_kafka_query_watermark_offsets(rk.get(), topic.c_str(), partition, &low, &high, 30'000),
        RD_KAFKA_RESP_ERR_NO_ERROR)
        << isolation;
    (std::string_view(isolation) == "read_committed" ? out.second : out.first) = high;
  }
  return out;
}

// Step 1 of docs/pipelined-transactions.md: with two committers, partition 0 commits through
// committer 0 and partition 1 through committer 1, at the same time. One committer's thread is
// held inside its transaction, offsets sent (fault action `hold`); new executions arrive on
// both partitions, the other committer goes on, and when its next transaction reaches the same
// point the process SIGKILLs itself: both committers' transactions are open at the kill. The
// restart (same instance, two committers) aborts both and finishes the work: every command and
// event once in the read_committed topics, state equal to a replay, each notification once.
// With one committer the held thread blocks every partition until it is given up (after
// request_timeout_ms + 5 s); the test then fails.
TEST_F(kafka_engine, two_committers_keep_exactly_once_through_sigkill_with_both_transactions_open) {
  std::vector<std::string> tenants(partitions);  // one tenant on each partition
  for (int i = 0; std::ranges::any_of(tenants, &std::string::empty); ++i) {
    const std::string t = fmt::format("tenant-{}", i);
    std::string& slot = tenants[tenant_partition(t, partitions)];
    if (slot.empty()) slot = t;
  }
  system_clock clk;
  node_options o = options("submitter", false);
  o.data_dir = dir + "/submitter";  // the engine's state is in dir
  auto submitter = node::open(o, clk);
  ASSERT_TRUE(submitter.has_value()) << submitter.error().message;
  auto ids = submit_load(**submitter, 200, tenants);
  const std::vector<std::string> two = {"--committers", "2"};
  // The 3rd transaction to reach txn.offsets_sent holds its thread there; the kill entry counts
  // the hits the hold did not fire on, so its 3rd is the first transaction after the hold.
  const pid_t pid = spawn_engine(dir, cluster->bootstrap(), prefix, "engine",
                                 "txn.offsets_sent:hold@3,txn.offsets_sent:kill@3", two);
  bool held = false;
  for (int i = 0; i < 600 && !held; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    held = read_text(dir + "/engine.log").find("holding this thread") != std::string::npos;
  }
  if (!held) wait_exit(pid, 0);  // killed: no child outlives the test
  ASSERT_TRUE(held) << "no committer was held; log: " << dir << "/engine.log";
  int status = 0;
  bool ended = false;
  for (int round = 0; round < 30 && !ended; ++round) {
    const auto more = submit_load(**submitter, 10, tenants, ids.size());
    ids.insert(ids.end(), more.begin(), more.end());
    for (int i = 0; i < 10 && !ended; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      ended = ::waitpid(pid, &status, WNOHANG) == pid;
    }
  }
  if (!ended) status = wait_exit(pid, 0);  // still running: killed here, -1
  ASSERT_TRUE(status >= 0 && WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
      << "the engine did not kill itself at the fault point (status " << status << "); log: " << dir
      << "/engine.log";
  // Both partitions hold records of an open transaction (the broker aborts them after
  // transaction.timeout.ms, 10 s, which this check comes well before).
  for (int32_t p = 0; p < static_cast<int32_t>(partitions); ++p) {
    const auto [end, stable] = end_and_stable(cluster->bootstrap(), prefix + "executions", p);
    EXPECT_LT(stable, end) << "partition " << p << " had no open transaction at the kill";
  }
  const std::string first_log = read_text(dir + "/engine.log");
  EXPECT_NE(first_log.find("killing", first_log.find("holding this thread")), std::string::npos)
      << first_log;
  // The kill came from the other committer going on, not from a replacement of the held one.
  EXPECT_EQ(first_log.find("it was given up"), std::string::npos) << first_log;
  submitter->reset();
  status = wait_exit(spawn_engine(dir, cluster->bootstrap(), prefix, "engine", "", two), 180);
  ASSERT_TRUE(exited_ok(status)) << "the restarted engine failed or hung (status " << status
                                 << "); log: " << dir << "/engine.log";
  verify(dir, ids);
  expect_outbox_once(dir, ids.size());
}

// Step 2 of docs/pipelined-transactions.md: a pipelined partition decides batch n+1 while batch
// n commits. The engine (`--pipeline on`) is killed at three points of its crash table, each in
// a run of its own over the same topics and state directory, while the test keeps submitting
// executions (inputs that arrive while a batch commits: the acks of in-process workers commit in
// the orchestrator's own transaction, so they alone never give a batch to decide ahead), with
// small batches so that a batch's worth of inputs is often waiting:
//   1. `pipeline.decided_ahead`: n+1 decided and staged in memory, n's transaction queued, open
//      or committing (whichever the broker had reached);
//   2. one committer (`--committers 1`) held inside n's transaction with its offsets sent
//      (`txn.offsets_sent:hold`), more executions submitted so the partitions decide their next
//      batch, then SIGKILL from the test: n open with pending offsets, n+1 decided;
//   3. `txn.committed`: n committed, its state not yet written, n+1 decided if inputs were there.
// A last run without faults finishes the work: every command and event once in the
// read_committed topics, state equal to a replay, each notification once.
TEST_F(kafka_engine, pipelined_batches_keep_exactly_once_through_sigkill_at_each_crash_point) {
  system_clock clk;
  node_options o = options("submitter", false);
  o.data_dir = dir + "/submitter";  // the engine's state is in dir
  auto submitter = node::open(o, clk);
  ASSERT_TRUE(submitter.has_value()) << submitter.error().message;
  auto ids = submit_load(**submitter, 100);
  // Submits a few executions every 100 ms until `done` says stop (at most `seconds`).
  auto feed = [&](const std::function<bool()>& done, int seconds) {
    for (int i = 0; i < seconds * 10 && !done(); ++i) {
      const auto more = submit_load(**submitter, 4, {"acme", "bayside"}, ids.size());
      ids.insert(ids.end(), more.begin(), more.end());
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  };
  // Small batches: a batch is decided ahead only with a batch's worth of inputs waiting (as
  // many as the one in flight, or a full read), which a backlog of 16 per stream gives often.
  const std::vector<std::string> on = {"--pipeline", "on", "--batch-records", "16"};
  auto killed_by_itself = [&](const pid_t pid, const std::string& point) {
    int status = -1;
    feed([&] { return ::waitpid(pid, &status, WNOHANG) == pid; }, 60);
    if (status == -1) status = wait_exit(pid, 0);  // still running: killed here, -1
    EXPECT_TRUE(status >= 0 && WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
        << "the engine did not kill itself at " << point << " (status " << status
        << "); log: " << dir << "/engine.log";
  };
  // 1. Killed with the next batch decided ahead of a commit in flight.
  killed_by_itself(spawn_engine(dir, cluster->bootstrap(), prefix, "engine",
                                "pipeline.decided_ahead:kill@20", on),
                   "pipeline.decided_ahead");
  // 2. Held with offsets sent, next batches decided, killed from here.
  std::vector<std::string> one = on;
  one.insert(one.end(), {"--committers", "1"});
  const pid_t pid =
      spawn_engine(dir, cluster->bootstrap(), prefix, "engine", "txn.offsets_sent:hold@3", one);
  bool held = false;
  feed(
      [&] {
        held = read_text(dir + "/engine.log").find("holding this thread") != std::string::npos;
        return held;
      },
      60);
  if (held) feed([] { return false; }, 2);  // inputs for the batches decided ahead
  ::kill(pid, SIGKILL);
  int status = 0;
  ::waitpid(pid, &status, 0);
  ASSERT_TRUE(held) << "no committer was held; log: " << dir << "/engine.log";
  int open = 0;
  for (int32_t p = 0; p < static_cast<int32_t>(partitions); ++p) {
    const auto [end, stable] = end_and_stable(cluster->bootstrap(), prefix + "executions", p);
    open += stable < end;
  }
  EXPECT_GE(open, 1) << "no partition had an open transaction at the kill";
  // 3. Killed after a commit, before its state is written.
  killed_by_itself(
      spawn_engine(dir, cluster->bootstrap(), prefix, "engine", "txn.committed:kill@10", on),
      "txn.committed");
  const std::string log = read_text(dir + "/engine.log");
  for (const char* point : {"pipeline.decided_ahead", "txn.offsets_sent", "txn.committed"}) {
    EXPECT_NE(log.find(fmt::format("fault point {} reached", point)), std::string::npos) << point;
  }
  submitter->reset();
  status = wait_exit(spawn_engine(dir, cluster->bootstrap(), prefix, "engine", "", on), 180);
  ASSERT_TRUE(exited_ok(status)) << "the restarted engine failed or hung (status " << status
                                 << "); log: " << dir << "/engine.log";
  verify(dir, ids);
  expect_outbox_once(dir, ids.size());
}

TEST_F(kafka_engine, instances_join_and_leave_under_load) {
  const auto ids = submit(1000);
  const std::string a = dir + "/a", b = dir + "/b";
  const pid_t pa = spawn_engine(a, cluster->bootstrap(), prefix, "a");
  std::this_thread::sleep_for(std::chrono::seconds(3));
  const pid_t pb = spawn_engine(b, cluster->bootstrap(), prefix, "b");  // joins: rebalance
  std::this_thread::sleep_for(std::chrono::seconds(3));
  ::kill(pa, SIGTERM);  // leaves: its partitions move to b
  const int sa = wait_exit(pa, 60);
  EXPECT_TRUE(exited_ok(sa)) << "instance a did not stop cleanly; log: " << a << "/engine.log";
  // b stops when it has nothing left; a's partitions reach it once a's session expires, so
  // run it again until every execution has ended (each run resumes from the log).
  int status = wait_exit(pb, 180);
  for (int round = 0; round < 4 && exited_ok(status); ++round) {
    bool all_done = true;
    {
      system_clock clk;
      node_options o = options("probe", false);
      o.data_dir = b;
      auto n = node::open(o, clk);
      ASSERT_TRUE(n.has_value()) << n.error().message;
      ASSERT_TRUE((*n)->recover().has_value());
      for (const auto& [tenant, id] : ids) {
        auto e = (*n)->execution(tenant, id);
        all_done = all_done && e && e->status != exec_status::running;
      }
    }
    // Done, and b took over a's partitions (if a finished its share before it left, b gets
    // them on a later run, once a's session has expired).
    const std::string b_log = read_text(b + "/engine.log");
    bool moved = true;
    for (uint32_t p = 0; p < partitions; ++p) {
      moved = moved && b_log.find(fmt::format("partition {} assigned", p)) != std::string::npos;
    }
    if (all_done && moved) break;
    status = wait_exit(spawn_engine(b, cluster->bootstrap(), prefix, "b"), 180);
  }
  ASSERT_TRUE(exited_ok(status)) << "instance b failed; log: " << b << "/engine.log";
  // The partitions really moved: a gave some up when b joined or when it left, b took them.
  EXPECT_NE(read_text(a + "/engine.log").find("released"), std::string::npos);
  const std::string b_log = read_text(b + "/engine.log");
  for (uint32_t p = 0; p < partitions; ++p) {
    EXPECT_NE(b_log.find(fmt::format("partition {} assigned", p)), std::string::npos) << p;
  }
  verify(b, ids);
  expect_outbox_once({a, b}, ids.size());
}

// Issue 8: an owner paused after its offsets entered its transaction and before it commits,
// for longer than the session timeout. The other instance takes its partitions and restores
// them while that transaction is open; then the paused owner resumes and commits. The new
// owner must take the batch into both its state and its positions, or into neither: nothing
// duplicated, nothing lost, state equal to a replay. The resumed owner steps down and goes on
// in process (it does not abort).
TEST_F(kafka_engine, an_owner_paused_before_its_commit_loses_and_duplicates_nothing) {
  const auto ids = submit(300);
  const std::string a = dir + "/a", b = dir + "/b";
  // a owns both partitions and stops itself inside its 4th transaction, its offsets sent.
  const pid_t pa = spawn_engine(a, cluster->bootstrap(), prefix, "a", "txn.offsets_sent:stop@4");
  bool stopped = false;
  for (int i = 0; i < 600 && !stopped; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    stopped = read_text(a + "/engine.log").find("fault point txn.offsets_sent reached") !=
              std::string::npos;
  }
  ASSERT_TRUE(stopped) << "instance a never reached the fault point; log: " << a << "/engine.log";
  const auto paused_at = std::chrono::steady_clock::now();
  // b joins; after a's session times out (6 s) it is assigned both partitions and restores
  // them while a's transaction is open. a resumes after 8 s, before the broker's transaction
  // timeout (10 s), so its transaction commits during b's restore.
  const pid_t pb = spawn_engine(b, cluster->bootstrap(), prefix, "b");
  std::this_thread::sleep_until(paused_at + std::chrono::seconds(8));
  ASSERT_EQ(::kill(pa, SIGCONT), 0);
  const int sb = wait_exit(pb, 240);
  const int sa = wait_exit(pa, 240);
  ASSERT_TRUE(exited_ok(sb)) << "instance b failed (status " << sb << "); log: " << b
                             << "/engine.log";
  // a was fenced on resuming (its partitions were gone): it stepped down and went on.
  EXPECT_TRUE(exited_ok(sa)) << "the resumed owner did not go on and exit cleanly (status " << sa
                             << "); log: " << a << "/engine.log";
  const std::string b_log = read_text(b + "/engine.log");
  for (uint32_t p = 0; p < partitions; ++p) {
    EXPECT_NE(b_log.find(fmt::format("partition {} assigned", p)), std::string::npos) << b_log;
  }
  // Whatever is still unfinished (each instance exits when it is quiet) ends in a last run.
  const int last = wait_exit(spawn_engine(b, cluster->bootstrap(), prefix, "b"), 180);
  ASSERT_TRUE(exited_ok(last)) << "log: " << b << "/engine.log";
  verify(b, ids);
  expect_outbox_once({a, b}, ids.size());
}

// Anchors on Kafka (docs/anchors.md, "Kafka"): an Ed25519 key pair made with the openssl command,
// as an operator would, in <keys>/key.pem and <keys>/pub.pem.
void make_anchor_key(const std::string& keys) {
  fs::create_directories(keys);
  const auto made = testing::run_command(
      fmt::format("openssl genpkey -algorithm ed25519 -out {0}/key.pem 2>&1 && "
                  "openssl pkey -in {0}/key.pem -pubout -out {0}/pub.pem 2>&1",
                  keys));
  ASSERT_EQ(made.code, 0) << made.out;
}

// `auterity replay verify --chains` of the topics under `prefix` against anchor files; stderr too.
testing::command_outcome verify_with_anchors(const std::string& bootstrap,
                                             const std::string& prefix, const std::string& data,
                                             const std::string& keys,
                                             const std::vector<std::string>& anchors) {
  std::string cmd = fmt::format(
      "'{}' replay verify --kafka {} --topic-prefix {} --data {} --chains --no-progress",
      AUTERITY_BIN, bootstrap, prefix, data);
  if (!anchors.empty()) cmd += fmt::format(" --anchor-public-key file:{}/pub.pem", keys);
  for (const std::string& f : anchors) cmd += " --anchors " + f;
  return testing::run_command(cmd + " 2>&1");
}

// The partitions each line of an anchors file holds.
std::vector<std::set<uint32_t>> anchored_partitions(const std::string& file) {
  std::vector<std::set<uint32_t>> out;
  std::ifstream in(file);
  for (std::string line; std::getline(in, line);) {
    const json j = json::parse(line);
    std::set<uint32_t> parts;
    for (const json& p : j["partitions"]) parts.insert(p["p"].get<uint32_t>());
    out.push_back(parts);
  }
  return out;
}

// The same workload run twice under two topic prefixes, differing in one execution's input:
// two histories whose chains both verify, as a consistent rewrite on Kafka would be. The anchors
// written while the first ran reject the second, naming the partition and the offsets, and make
// `run --verify-on-start` on it exit 4 before deciding anything, while the first passes both.
// An edited anchor line is a bad signature; `anchors export` copies only the good lines.
TEST_F(kafka_engine, anchors_catch_a_consistent_rewrite_of_a_kafka_history) {
  const std::string keys = dir + "/keys", a = dir + "/a", b = dir + "/b";
  make_anchor_key(keys);
  const std::vector<std::string> anchor_key = {"--anchor-key", "file:" + keys + "/key.pem"};
  auto run_history = [&](int last_input, const std::string& data) {
    {
      system_clock clk;
      auto n = node::open(options("submitter", false), clk);
      ASSERT_TRUE(n.has_value()) << n.error().message;
      submit_load(**n, 19);
      ASSERT_TRUE((*n)->submit("acme", client::start_execution({"acme", "last", "last", 0}, "lead",
                                                               0, json{{"n", last_input}}.dump())));
    }
    const int status =
        wait_exit(spawn_engine(data, cluster->bootstrap(), prefix, "engine", "", anchor_key), 180);
    ASSERT_TRUE(exited_ok(status)) << "log: " << data << "/engine.log";
  };
  const std::string a_prefix = prefix, b_prefix = prefix + "b-";
  run_history(1000, a);
  if (HasFatalFailure()) return;
  catalog_options c;
  c.partitions = partitions;
  c.prefix = prefix = b_prefix;
  ASSERT_TRUE(apply_catalog(cluster->bootstrap(), default_catalog(c)).has_value());
  run_history(1001, b);
  if (HasFatalFailure()) return;
  const std::string a_anchors = a + "/anchors/anchors.jsonl";
  const std::string b_anchors = b + "/anchors/anchors.jsonl";
  // The instance owned both partitions: every anchor it wrote holds one or both, and its last
  // (at shutdown) both.
  const auto lines = anchored_partitions(a_anchors);
  ASSERT_FALSE(lines.empty());
  EXPECT_EQ(lines.back(), (std::set<uint32_t>{0, 1}));

  auto o = verify_with_anchors(cluster->bootstrap(), a_prefix, a, keys, {a_anchors});
  EXPECT_EQ(o.code, 0) << o.out;
  EXPECT_NE(o.out.find("signed anchors match"), std::string::npos) << o.out;
  // The second history holds together on its own, with its own anchors too ...
  o = verify_with_anchors(cluster->bootstrap(), b_prefix, b, keys, {b_anchors});
  EXPECT_EQ(o.code, 0) << o.out;
  // ... but not with the anchors of the first.
  o = verify_with_anchors(cluster->bootstrap(), b_prefix, b, keys, {a_anchors});
  EXPECT_EQ(o.code, 1) << o.out;
  EXPECT_NE(o.out.find("PROBLEMS FOUND"), std::string::npos) << o.out;
  // Named on every partition the tenants' histories are on (an empty partition is the same).
  for (uint32_t p = 0; p < partitions; ++p) {
    const bool used =
        p == tenant_partition("acme", partitions) || p == tenant_partition("bayside", partitions);
    EXPECT_EQ(
        o.out.find(fmt::format("partition {}: REWRITTEN: executions [0, ", p)) != std::string::npos,
        used)
        << o.out;
  }
  EXPECT_NE(o.out.find("a record at an offset in ["), std::string::npos) << o.out;

  // An engine started on the second history with the first one's anchors refuses to decide.
  const std::string fresh = dir + "/fresh";
  const int refused = wait_exit(spawn_engine(fresh, cluster->bootstrap(), b_prefix, "checker", "",
                                             {"--anchor-key", "file:" + keys + "/key.pem",
                                              "--anchors-file", a_anchors, "--verify-on-start"}),
                                120);
  EXPECT_TRUE(refused >= 0 && WIFEXITED(refused) && WEXITSTATUS(refused) == 4) << refused;
  EXPECT_NE(read_text(fresh + "/engine.log").find("REWRITTEN"), std::string::npos)
      << read_text(fresh + "/engine.log");
  // On its own history it starts, finds nothing to do and anchors again.
  const size_t a_lines = lines.size();
  const int accepted =
      wait_exit(spawn_engine(a, cluster->bootstrap(), a_prefix, "engine", "",
                             {"--anchor-key", "file:" + keys + "/key.pem", "--verify-on-start"}),
                120);
  EXPECT_TRUE(exited_ok(accepted)) << read_text(a + "/engine.log");
  EXPECT_NE(read_text(a + "/engine.log").find("the log matches every anchor"), std::string::npos);
  EXPECT_GT(anchored_partitions(a_anchors).size(), a_lines);

  // The auditor's copy: every line while none is edited ...
  const std::string kept = dir + "/kept.jsonl";
  o = testing::run_command(
      fmt::format("'{}' anchors export --data {} --out {} --anchor-public-key file:{}/pub.pem 2>&1",
                  AUTERITY_BIN, a, kept, keys));
  EXPECT_EQ(o.code, 0) << o.out;
  EXPECT_EQ(read_text(kept), read_text(a_anchors));
  // ... then one head in the engine's file is changed: the line no longer verifies.
  std::string text = read_text(a_anchors);
  const size_t head = text.find("\"head\":\"") + 8;
  text[head] = text[head] == '0' ? '1' : '0';
  std::ofstream(a_anchors, std::ios::trunc) << text;
  o = verify_with_anchors(cluster->bootstrap(), a_prefix, a, keys, {a_anchors});
  EXPECT_EQ(o.code, 1) << o.out;
  EXPECT_NE(o.out.find("line 1: BAD SIGNATURE"), std::string::npos) << o.out;
  o = testing::run_command(fmt::format(
      "'{}' anchors export --data {} --out {}.2 --anchor-public-key file:{}/pub.pem 2>&1",
      AUTERITY_BIN, a, kept, keys));
  EXPECT_EQ(o.code, 1) << o.out;
  EXPECT_NE(o.out.find("line 1 skipped"), std::string::npos) << o.out;
  // The copy kept elsewhere still verifies the log.
  o = verify_with_anchors(cluster->bootstrap(), a_prefix, a, keys, {kept});
  EXPECT_EQ(o.code, 0) << o.out;
}

// Two instances anchor the partitions each owns, in their own files: the partitions are split
// when b joins, then a stops (SIGTERM) and b takes its partitions over. The files hold together
// every partition, a moved partition is in both, and `replay verify` takes them together.
TEST_F(kafka_engine, anchors_of_two_instances_verify_together_across_a_handover) {
  auto ids = submit(200);  // acme and bayside share a partition: load the other one too
  std::string other;
  for (int i = 0; other.empty(); ++i) {
    const std::string t = fmt::format("tenant{}", i);
    if (tenant_partition(t, partitions) != tenant_partition("acme", partitions)) other = t;
  }
  {
    system_clock clk;
    auto n = node::open(options("submitter", false), clk);
    ASSERT_TRUE(n.has_value()) << n.error().message;
    ASSERT_TRUE((*n)->submit(other, client::publish_definition({other, "", "pub", 0}, workflow)));
    for (int i = 0; i < 100; ++i) {
      const std::string id = fmt::format("o{}", i);
      ASSERT_TRUE((*n)->submit(
          other, client::start_execution({other, id, id, 0}, "lead", 0, json{{"n", i}}.dump())));
      ids.emplace_back(other, id);
    }
  }
  const std::string keys = dir + "/keys", a = dir + "/a", b = dir + "/b";
  make_anchor_key(keys);
  const std::vector<std::string> anchoring = {"--anchor-key", "file:" + keys + "/key.pem",
                                              "--anchor-interval-s", "1"};
  const pid_t pa = spawn_engine(a, cluster->bootstrap(), prefix, "a", "", anchoring);
  std::this_thread::sleep_for(std::chrono::seconds(3));
  const pid_t pb = spawn_engine(b, cluster->bootstrap(), prefix, "b", "", anchoring);
  std::this_thread::sleep_for(std::chrono::seconds(3));
  ::kill(pa, SIGTERM);
  EXPECT_TRUE(exited_ok(wait_exit(pa, 60))) << read_text(a + "/engine.log");
  // b runs until every execution ended and it was assigned every partition (as in
  // instances_join_and_leave_under_load).
  int status = wait_exit(pb, 180);
  for (int round = 0; round < 4 && exited_ok(status); ++round) {
    const std::string b_log = read_text(b + "/engine.log");
    bool moved = true;
    for (uint32_t p = 0; p < partitions; ++p) {
      moved = moved && b_log.find(fmt::format("partition {} assigned", p)) != std::string::npos;
    }
    if (moved) break;
    status = wait_exit(spawn_engine(b, cluster->bootstrap(), prefix, "b", "", anchoring), 180);
  }
  ASSERT_TRUE(exited_ok(status)) << read_text(b + "/engine.log");
  const int last =
      wait_exit(spawn_engine(b, cluster->bootstrap(), prefix, "b", "", anchoring), 180);
  ASSERT_TRUE(exited_ok(last)) << read_text(b + "/engine.log");
  verify(b, ids);

  const std::string a_anchors = a + "/anchors/anchors.jsonl";
  const std::string b_anchors = b + "/anchors/anchors.jsonl";
  std::set<uint32_t> in_a, in_b;
  for (const auto& line : anchored_partitions(a_anchors)) in_a.insert(line.begin(), line.end());
  for (const auto& line : anchored_partitions(b_anchors)) in_b.insert(line.begin(), line.end());
  for (const auto& [name, file] : {std::pair{"a", a_anchors}, {"b", b_anchors}}) {
    std::string lines;
    for (const auto& line : anchored_partitions(file)) {
      lines += fmt::format(" {{{}}}", fmt::join(line, ","));
    }
    fmt::print("anchors of {}, the partitions of each line:{}\n", name, lines);
  }
  EXPECT_FALSE(in_a.empty()) << "a anchored nothing";
  EXPECT_EQ(in_b.size(), partitions) << "b took every partition and anchored each";
  bool moved_partition_in_both = false;
  for (uint32_t p : in_a) moved_partition_in_both = moved_partition_in_both || in_b.contains(p);
  EXPECT_TRUE(moved_partition_in_both);
  auto o = verify_with_anchors(cluster->bootstrap(), prefix, b, keys, {a_anchors, b_anchors});
  EXPECT_EQ(o.code, 0) << o.out;
  EXPECT_NE(o.out.find("signed anchors match"), std::string::npos) << o.out;
}

// Every execution of `ids` whose end (succeeded, failed, cancelled) is in the executions topic,
// read_committed, waiting up to `limit` for all of them; `from` keeps the read positions.
size_t await_ended_in_log(log& l, const std::vector<std::pair<std::string, std::string>>& ids,
                          std::chrono::seconds limit) {
  std::set<std::string> ended;
  std::vector<uint64_t> from(l.partition_count(), 0);
  const auto deadline = std::chrono::steady_clock::now() + limit;
  auto all = [&] {
    return std::ranges::all_of(ids, [&](const auto& id) { return ended.contains(id.second); });
  };
  while (!all() && std::chrono::steady_clock::now() < deadline) {
    for (uint32_t p = 0; p < l.partition_count(); ++p) {
      std::vector<record> out;
      auto n = l.read(stream::executions, p, from[p], 1024, 8 << 20, out);
      if (!n || *n == 0) continue;
      from[p] = out.back().offset + 1;
      for (const record& r : out) {
        const fbs::Envelope* e = decode_envelope(r.value);
        if (!e) continue;
        const auto t = e->payload_type();
        if (t == fbs::Payload::ExecutionSucceeded || t == fbs::Payload::ExecutionFailed ||
            t == fbs::Payload::ExecutionCancelled) {
          ended.insert(std::string(sv(e->execution_id())));
        }
      }
    }
    if (!all()) std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  return static_cast<size_t>(
      std::ranges::count_if(ids, [&](const auto& id) { return ended.contains(id.second); }));
}

// "<n> move(s) published" in a scale's output.
size_t moves_published(const std::string& text) {
  const size_t at = text.find(" move(s) published");
  if (at == std::string::npos) return 0;
  size_t begin = at;
  while (begin > 0 && std::isdigit(static_cast<unsigned char>(text[begin - 1]))) --begin;
  return static_cast<size_t>(std::atoi(text.c_str() + begin));
}

// The figures an engine's log gives of its reopens: "reopened in process in X ms" each time.
std::vector<int> reopen_ms(const std::string& text) {
  std::vector<int> out;
  const std::string marker = "reopened in process in ";
  for (size_t at = text.find(marker); at != std::string::npos; at = text.find(marker, at + 1)) {
    out.push_back(std::atoi(text.c_str() + at + marker.size()));
  }
  return out;
}

// Issue 9: two instances (`auterity run --kafka`, two processes) run under load, and the
// partition count changes while they run, with no restart: `partitions scale --kafka --to 4`
// grows the topics 2 -> 4, waits until both instances opened themselves again in process with 4
// partitions and the group assigns all four, and publishes the moves in the same run; then
// 4 -> 8 the same way; then down to 3 (partitions 3..7 retired in the placement topic, which the
// instances read and reopen for, and their tenants moved off). Executions are started all along
// (hashed by producers with 2 partitions, later with 8). Then, with read_committed readers,
// every execution succeeded exactly once, each command was written once, each notification
// sent once, state equals replay on all eight partitions and the chains verify.
TEST_F(kafka_engine, partitions_scale_grows_and_shrinks_while_two_instances_run) {
  system_clock clk;
  auto submitter = node::open(options("submitter", false), clk);
  ASSERT_TRUE(submitter.has_value()) << submitter.error().message;
  const std::vector<std::string> tenants = {"acme",     "bayside", "cardinal", "dorado",
                                            "eastside", "fjord",   "granite",  "harbor"};
  for (const std::string& tenant : tenants) {
    ASSERT_TRUE(
        (*submitter)->submit(tenant, client::publish_definition({tenant, "", "pub", 0}, workflow)));
  }
  std::mutex ids_mu;
  std::vector<std::pair<std::string, std::string>> ids;
  auto start = [&](node& on, const std::string& tag, size_t count) {
    for (size_t i = 0; i < count; ++i) {
      const std::string& tenant = tenants[i % tenants.size()];
      const std::string id = fmt::format("{}-{}", tag, i);
      auto r = on.submit(
          tenant, client::start_execution({tenant, id, id, 0}, "lead", 0, json{{"n", i}}.dump()));
      ASSERT_TRUE(r.has_value()) << r.error().message;
      std::lock_guard lock(ids_mu);
      ids.emplace_back(tenant, id);
    }
  };
  start(**submitter, "before", 60);
  const std::string a = dir + "/a", b = dir + "/b";
  const pid_t pa = spawn_engine(a, cluster->bootstrap(), prefix, "a", "", {}, false);
  const pid_t pb = spawn_engine(b, cluster->bootstrap(), prefix, "b", "", {}, false);
  struct stopper {  // a failed assertion must not leave the instances running
    std::vector<pid_t> pids;
    ~stopper() {
      for (pid_t p : pids) {
        if (p > 0 && ::kill(p, SIGKILL) == 0) ::waitpid(p, nullptr, 0);
      }
    }
  } stop_on_failure{{pa, pb}};
  // Load all along: a few executions every 300 ms, by a producer that hashes with 2 partitions.
  std::atomic<bool> loading{true};
  std::thread load([&] {
    for (size_t round = 0; loading.load(); ++round) {
      start(**submitter, fmt::format("load{}", round), 3);
      std::this_thread::sleep_for(std::chrono::milliseconds(300));
    }
  });
  struct joiner {
    std::atomic<bool>& flag;
    std::thread& t;
    ~joiner() {
      flag = false;
      if (t.joinable()) t.join();
    }
  } join_load{loading, load};
  const std::string where =
      fmt::format("--kafka {} --topic-prefix {} --data {}/cli", cluster->bootstrap(), prefix, dir);
  auto cli = [&](const std::string& args) {
    return testing::run_command(fmt::format("'{}' {} {} 2>&1", AUTERITY_BIN, args, where));
  };
  auto scale = [&](uint32_t to) {
    const auto began = std::chrono::steady_clock::now();
    auto out = cli(fmt::format("partitions scale --to {} --wait-s 120", to));
    fmt::print("scale --to {}: exit {} in {:.1f} s\n", to, out.code,
               std::chrono::duration<double>(std::chrono::steady_clock::now() - began).count());
    return out;
  };
  {
    // The instances run the first executions to their end: the scale weighs tenants that ran.
    std::vector<std::pair<std::string, std::string>> first;
    {
      std::lock_guard lock(ids_mu);
      first.assign(ids.begin(), ids.begin() + 60);
    }
    kafka_log_options ro = *options("reader", false).kafka;
    ro.read_only = true;
    auto reader = open_kafka_log(ro);
    ASSERT_TRUE(reader.has_value()) << reader.error().message;
    ASSERT_EQ(await_ended_in_log(**reader, first, std::chrono::seconds(120)), first.size())
        << "the instances did not run the first executions; logs in " << a << " and " << b;
  }

  auto up4 = scale(4);
  ASSERT_EQ(up4.code, 0) << up4.out;
  EXPECT_NE(up4.out.find("recorded placement base 2"), std::string::npos) << up4.out;
  EXPECT_NE(up4.out.find("instance(s) of auterity.orchestrator run 4 partitions"),
            std::string::npos)
      << up4.out;
  EXPECT_NE(up4.out.find("move(s) published on ingress"), std::string::npos) << up4.out;
  EXPECT_EQ(up4.out.find(" 0 move(s) published"), std::string::npos) << up4.out;
  {
    // A producer that hashes with the new count: its records of old tenants are forwarded.
    node_options o = options("submitter4", false);
    o.data_dir = dir + "/submitter4";  // the first submitter holds the state stores in `dir`
    auto grown = node::open(o, clk);
    ASSERT_TRUE(grown.has_value()) << grown.error().message;
    ASSERT_EQ((*grown)->partitions(), 4u);
    start(**grown, "grown", 40);
  }
  size_t moves = moves_published(up4.out);
  ASSERT_EQ(await_moved_in(moves), moves) << "the moves of the scale to 4 did not complete";
  auto up8 = scale(8);
  ASSERT_EQ(up8.code, 0) << up8.out;
  EXPECT_NE(up8.out.find("run 8 partitions"), std::string::npos) << up8.out;
  EXPECT_NE(up8.out.find("move(s) published on ingress"), std::string::npos) << up8.out;
  moves += moves_published(up8.out);
  ASSERT_EQ(await_moved_in(moves), moves) << "the moves of the scale to 8 did not complete";
  auto down3 = scale(3);
  ASSERT_EQ(down3.code, 0) << down3.out;
  EXPECT_NE(down3.out.find("3..7 retired: Kafka cannot delete partitions"), std::string::npos)
      << down3.out;
  moves += moves_published(down3.out);
  ASSERT_EQ(await_moved_in(moves), moves)
      << "the moves off the retired partitions did not complete";
  loading = false;
  load.join();
  std::map<std::string, std::string> conf = {{"bootstrap.servers", cluster->bootstrap()}};
  auto header = read_kafka_placement(conf, prefix + "placement", 10'000);
  ASSERT_TRUE(header.has_value()) << header.error().message;
  ASSERT_TRUE(header->has_value());
  EXPECT_EQ((*header)->base, partitions);
  EXPECT_EQ((*header)->retired, (std::vector<uint32_t>{3, 4, 5, 6, 7}));
  {
    kafka_log_options ro = *options("reader", false).kafka;
    ro.read_only = true;
    auto reader = open_kafka_log(ro);
    ASSERT_TRUE(reader.has_value()) << reader.error().message;
    ASSERT_EQ(await_ended_in_log(**reader, ids, std::chrono::seconds(240)), ids.size())
        << "executions still running after 240 s; logs in " << a << " and " << b;
  }
  // Both instances ran throughout (never exited), took up each change in process, and stop
  // cleanly.
  ::kill(pa, SIGTERM);
  ::kill(pb, SIGTERM);
  EXPECT_TRUE(exited_ok(wait_exit(pa, 60))) << "log: " << a << "/engine.log";
  EXPECT_TRUE(exited_ok(wait_exit(pb, 60))) << "log: " << b << "/engine.log";
  stop_on_failure.pids.clear();
  for (const std::string& d : {a, b}) {
    const std::string text = read_text(d + "/engine.log");
    const std::vector<int> reopens = reopen_ms(text);
    EXPECT_GE(reopens.size(), 3u) << "4, 8 and the retired partitions; log: " << d;
    EXPECT_NE(text.find("the placement header changed"), std::string::npos) << d;
    fmt::print("instance {}: reopened in process {} time(s), in [{}] ms\n", d, reopens.size(),
               fmt::join(reopens, ", "));
  }
  // Tenants went onto the new partitions and off the retired ones; nothing was refused.
  submitter->reset();
  auto checker = node::open(options("checker", false), clk);
  ASSERT_TRUE(checker.has_value()) << checker.error().message;
  ASSERT_EQ((*checker)->partitions(), 8u);
  std::set<uint32_t> moved_in;
  size_t left_retired = 0;
  for (uint32_t p = 0; p < 8; ++p) {
    for (const record& r : read_all((*checker)->get_log(), stream::executions, p)) {
      const fbs::Envelope* e = decode_envelope(r.value);
      ASSERT_NE(e, nullptr);
      EXPECT_NE(e->payload_type(), fbs::Payload::CommandRejected)
          << sv(e->payload_as_CommandRejected()->reason());
      if (e->payload_type() == fbs::Payload::TenantMovedIn && p >= partitions) moved_in.insert(p);
      if (e->payload_type() == fbs::Payload::TenantMovedOut && p >= 3) ++left_retired;
    }
  }
  EXPECT_TRUE(moved_in.contains(2) && moved_in.contains(3)) << "the first grow moved tenants on";
  EXPECT_TRUE(std::ranges::any_of(moved_in, [](uint32_t p) { return p >= 4; }))
      << "the second grow moved tenants on";
  EXPECT_GE(left_retired, 1u) << "the tenants of the retired partitions moved off";
  checker->reset();
  verify(b, ids);
  expect_outbox_once({a, b}, ids.size());
}

// Issue 9, a crash point of the in-process reopen: instance a is killed (SIGKILL, the fault
// point reopen.stopped) after it stopped its node to take up 4 partitions and before it opened
// again. The scale still completes in one run (a's session expires, the group gives everything
// to b, which opened again), a is restarted later on the same data; every execution succeeds
// exactly once, each command and notification once, state equals replay and chains verify.
// DISABLED (2026-12-08): failed once in a fresh-clone CI run. The scale found no instance of
// this deployment in the group ("no engine instance runs partitions of this deployment"), so it
// published its moves without waiting for the reopen, and 2 of its 3 moves were installed
// within the wait. Not yet known whether the third was refused (decided by an instance still on
// the old count: harmless, docs/tenant-moves.md) or left in flight. To be fixed before this
// crash point counts as tested.
TEST_F(kafka_engine, DISABLED_partitions_scale_survives_an_instance_killed_while_it_reopens) {
  const auto ids = submit(120, {"acme", "bayside", "cardinal", "dorado"});
  const std::string a = dir + "/a", b = dir + "/b";
  const pid_t pa =
      spawn_engine(a, cluster->bootstrap(), prefix, "a", "reopen.stopped:kill", {}, false);
  pid_t pb = spawn_engine(b, cluster->bootstrap(), prefix, "b", "", {}, false);
  struct stopper {
    std::vector<pid_t> pids;
    ~stopper() {
      for (pid_t p : pids) {
        if (p > 0 && ::kill(p, SIGKILL) == 0) ::waitpid(p, nullptr, 0);
      }
    }
  } stop_on_failure{{pa, pb}};
  {
    kafka_log_options ro = *options("reader", false).kafka;
    ro.read_only = true;
    auto reader = open_kafka_log(ro);
    ASSERT_TRUE(reader.has_value()) << reader.error().message;
    std::vector<std::pair<std::string, std::string>> first(ids.begin(), ids.begin() + 20);
    ASSERT_EQ(await_ended_in_log(**reader, first, std::chrono::seconds(120)), first.size());
  }
  auto up = testing::run_command(
      fmt::format("'{}' partitions scale --to 4 --wait-s 120 --kafka {} --topic-prefix {} --data "
                  "{}/cli 2>&1",
                  AUTERITY_BIN, cluster->bootstrap(), prefix, dir));
  ASSERT_EQ(up.code, 0) << up.out;
  EXPECT_NE(up.out.find("run 4 partitions"), std::string::npos) << up.out;
  EXPECT_NE(up.out.find("move(s) published on ingress"), std::string::npos) << up.out;
  const size_t moves = moves_published(up.out);
  ASSERT_GT(moves, 0u) << "every tenant is on partition 0 of 2: the scale moves some; " << up.out;
  // a killed itself in its reopen; b runs everything.
  const int sa = wait_exit(pa, 30);
  EXPECT_TRUE(sa >= 0 && WIFSIGNALED(sa) && WTERMSIG(sa) == SIGKILL) << "status " << sa;
  EXPECT_NE(read_text(a + "/engine.log").find("fault point reopen.stopped reached"),
            std::string::npos);
  // Restarted on its data, a takes its share back.
  const pid_t pa2 = spawn_engine(a, cluster->bootstrap(), prefix, "a", "", {}, false);
  stop_on_failure.pids = {pa2, pb};
  {
    kafka_log_options ro = *options("reader", false).kafka;
    ro.read_only = true;
    auto reader = open_kafka_log(ro);
    ASSERT_TRUE(reader.has_value()) << reader.error().message;
    ASSERT_EQ(reader->get()->partition_count(), 4u);
    ASSERT_EQ(await_ended_in_log(**reader, ids, std::chrono::seconds(240)), ids.size())
        << "executions still running; logs in " << a << " and " << b;
  }
  // The executions may all have ended before the moves were decided (the scale waits for the
  // reopens): the scale is complete once every tenant it moved is installed on its target.
  ASSERT_EQ(await_moved_in(moves), moves)
      << "the scale's moves did not complete; logs in " << a << " and " << b;
  ::kill(pa2, SIGTERM);
  ::kill(pb, SIGTERM);
  EXPECT_TRUE(exited_ok(wait_exit(pa2, 60))) << "log: " << a << "/engine.log";
  EXPECT_TRUE(exited_ok(wait_exit(pb, 60))) << "log: " << b << "/engine.log";
  stop_on_failure.pids.clear();
  EXPECT_EQ(reopen_ms(read_text(b + "/engine.log")).size(), 1u) << "b took up 4 in process";
  verify(b, ids);
  expect_outbox_once({a, b}, ids.size());
}

TEST_F(kafka_three_nodes, a_broker_killed_under_load_loses_nothing) {
  const auto ids = submit(200);
  const pid_t pid = spawn_engine(dir, cluster->bootstrap(), prefix);
  std::this_thread::sleep_for(std::chrono::seconds(3));
  cluster->kill_node(2);
  std::this_thread::sleep_for(std::chrono::seconds(8));
  cluster->start_node(2);
  // The engine is crash-only: if a transaction cannot complete while the broker is gone it
  // exits and a supervisor restarts it; here the test is the supervisor.
  int status = wait_exit(pid, 180);
  for (int restarts = 0; restarts < 5 && !exited_ok(status); ++restarts) {
    status = wait_exit(spawn_engine(dir, cluster->bootstrap(), prefix), 180);
  }
  ASSERT_TRUE(exited_ok(status)) << "log: " << dir << "/engine.log";
  verify(dir, ids);
  expect_outbox_once(dir, ids.size());
}

}  // namespace
}  // namespace auterity
