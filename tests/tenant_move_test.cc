// Live tenant moves (docs/tenant-moves.md) on the embedded log, as an operator and the tenant's
// users would notice them: every execution of the moved tenant finishes exactly once on its new
// partition, with the acks of commands issued before the move, the signals its users send to
// the old partition and the timers it had; the other tenants do not notice; the state of every
// partition equals the replay of its log and every chain verifies. Then the same with a crash
// at each point of the move.

#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "engine/worker_runtime.h"
#include "processors/orchestrator_state.h"
#include "processors/rejection.h"
#include "processors/tests/harness.h"
#include "processors/tests/replay_check.h"
#include "replay/verify.h"

namespace auterity {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using testing::harness;

constexpr std::string_view mover = "acme";
constexpr std::string_view stayer = "bayside";
constexpr uint32_t partitions = 3;
constexpr int executions_per_tenant = 12;

// A task, a wait for a signal with a timeout (a timer), a delay (a timer), another task.
std::string workflow() {
  json steps = json::array(
      {{{"id", "a"}, {"kind", "task"}, {"action", "transform"}, {"input", {{"x", "{{input.x}}"}}}},
       {{"id", "w"},
        {"kind", "wait_signal"},
        {"signal", "go"},
        {"timeout_ms", 3000},
        {"on_failure", "continue"},
        {"after", {"a"}}},
       {{"id", "d"}, {"kind", "delay"}, {"delay_ms", 500}, {"after", {"w"}}},
       {{"id", "b"}, {"kind", "task"}, {"action", "transform"}, {"after", {"d"}}}});
  return json{{"workflow", "wf"}, {"version", 1}, {"steps", steps}}.dump();
}

std::string exec_id(int i) { return fmt::format("lead-{:03}", i); }

std::unique_ptr<node> open_node(const std::string& dir, clock& clk) {
  node_options o = harness::options(partitions, /*workers=*/false);
  o.data_dir = dir;
  auto n = node::open(o, clk);
  EXPECT_TRUE(n.has_value()) << n.error().message;
  if (!n) return nullptr;
  auto r = (*n)->recover();
  EXPECT_TRUE(r.has_value()) << r.error().message;
  return std::move(*n);
}

// Drops the node as a crash would leave it (no clean shutdown of anything but the handles) and
// opens it again: recovery replays each partition from its checkpoint.
void reopen(harness& h) {
  h.n.reset();
  h.n = open_node(h.dir, h.clk);
  ASSERT_TRUE(h.n);
}

std::vector<std::pair<uint32_t, record>> read_stream(harness& h, stream s) {
  std::vector<std::pair<uint32_t, record>> out;
  log& l = h.n->get_log();
  for (uint32_t p = 0; p < l.partition_count(); ++p) {
    std::vector<record> recs;
    for (uint64_t off = 0;;) {
      auto n = l.read(s, p, off, 1024, 8 << 20, recs);
      EXPECT_TRUE(n.has_value());
      if (!n || *n == 0) break;
      off = recs.back().offset + 1;
    }
    for (record& r : recs) out.emplace_back(p, std::move(r));
  }
  return out;
}

// Payload types of the tenant-level events on each partition.
std::map<uint32_t, std::vector<std::string>> tenant_events(harness& h, std::string_view tenant) {
  std::map<uint32_t, std::vector<std::string>> out;
  for (const auto& [p, r] : read_stream(h, stream::executions)) {
    const fbs::Envelope* e = decode_envelope(r.value);
    if (e && e->kind() == fbs::RecordKind::Event && sv(e->tenant_id()) == tenant &&
        sv(e->execution_id()).empty()) {
      out[p].emplace_back(payload_name(e->payload_type()));
    }
  }
  return out;
}

// The workers' side, by hand: acknowledges every step command not acknowledged yet, on the
// partition the command was read from (as engine/worker_runtime.cc does).
class acker {
 public:
  // At most `max` of them.
  size_t ack_all(harness& h, size_t max = SIZE_MAX) {
    size_t n = 0;
    for (const auto& [p, r] : read_stream(h, stream::commands_step)) {
      if (n == max) break;
      const fbs::Envelope* cmd = decode_envelope(r.value);
      if (!cmd ||
          !_acked.insert(fmt::format("{}/{}", sv(cmd->tenant_id()), sv(cmd->record_id()))).second) {
        continue;
      }
      ack_result ok;
      ok.output_json = R"({"done":true})";
      commit_batch b;
      b.add(stream::acks, std::string(sv(cmd->tenant_id())), make_ack(*cmd, ok, h.clk.now_ms()));
      EXPECT_TRUE(h.n->get_log().commit(p, b).has_value());
      ++n;
    }
    return n;
  }

 private:
  std::set<std::string> _acked;
};

// Both tenants start their executions; some get past their first step before the move, the
// others after it (their acks then arrive at the old partition and must follow the tenant).
void setup(harness& h, acker& a) {
  for (std::string_view t : {mover, stayer}) {
    h.publish(t, workflow());
    for (int i = 0; i < executions_per_tenant; ++i) {
      h.start(t, exec_id(i), "wf", fmt::format(R"({{"x":{}}})", i));
    }
  }
  h.settle();
  a.ack_all(h, executions_per_tenant);
  h.settle();
}

// The last tenant-level event of the tenant on partition p ("" if none).
std::string last_tenant_event(harness& h, std::string_view tenant, uint32_t p) {
  auto events = tenant_events(h, tenant);
  return events[p].empty() ? std::string() : events[p].back();
}

uint32_t home_of(std::string_view tenant) { return tenant_partition(tenant, partitions); }
uint32_t target_of(std::string_view tenant) { return (home_of(tenant) + 1) % partitions; }

void submit_move(harness& h, uint32_t to) {
  h.submit(mover, client::move_tenant({mover, "", "move-1", h.clk.now_ms()}, to));
}

// Acks, signals (to the tenant's default partition, as upstream systems keep publishing) and
// time, until every execution has ended.
void drive_to_completion(harness& h, acker& a) {
  std::set<std::string> signalled;
  for (int round = 0; round < 40; ++round) {
    h.settle();
    a.ack_all(h);
    h.settle();
    bool all_ended = true;
    for (std::string_view t : {mover, stayer}) {
      for (int i = 0; i < executions_per_tenant; ++i) {
        auto e = h.exec(t, exec_id(i));
        ASSERT_TRUE(e.has_value()) << t << "/" << exec_id(i) << " is not found";
        if (e->status == exec_status::running) all_ended = false;
        // Every other execution hears from its customer; the rest time out.
        const std::string key = fmt::format("{}/{}", t, exec_id(i));
        if (i % 2 == 0 && e->steps[1].status == step_status::waiting &&
            signalled.insert(key).second) {
          h.signal(t, exec_id(i), "go", R"({"reply":"yes"})");
        }
      }
    }
    if (all_ended) return;
    h.clk.advance(700);
  }
  FAIL() << "executions did not finish";
}

void expect_exactly_once_and_replayable(harness& h, size_t extra_executions = 0) {
  // Each execution ended once, successfully, wherever its events are.
  std::map<std::string, int> terminal;
  for (const auto& [p, r] : read_stream(h, stream::executions)) {
    const fbs::Envelope* e = decode_envelope(r.value);
    ASSERT_NE(e, nullptr);
    const auto t = e->payload_type();
    if (t == fbs::Payload::ExecutionSucceeded || t == fbs::Payload::ExecutionFailed ||
        t == fbs::Payload::ExecutionCancelled) {
      EXPECT_EQ(t, fbs::Payload::ExecutionSucceeded) << sv(e->execution_id());
      terminal[fmt::format("{}/{}", sv(e->tenant_id()), sv(e->execution_id()))]++;
    }
    if (sv(e->tenant_id()) == mover && e->kind() == fbs::RecordKind::Event &&
        t == fbs::Payload::ExecutionSucceeded) {
      EXPECT_EQ(p, target_of(mover)) << "the moved tenant's executions end on its new partition";
    }
  }
  EXPECT_EQ(terminal.size(), 2u * executions_per_tenant + extra_executions);
  for (const auto& [id, n] : terminal) EXPECT_EQ(n, 1) << id << " ended " << n << " times";
  // No command twice (a command's record id is its idempotency key).
  std::set<std::string> ids;
  for (const auto& [p, r] : read_stream(h, stream::commands_step)) {
    const fbs::Envelope* e = decode_envelope(r.value);
    EXPECT_TRUE(ids.insert(fmt::format("{}/{}", sv(e->tenant_id()), sv(e->record_id()))).second)
        << "command " << sv(e->record_id()) << " written twice (partition " << p << ")";
  }
  EXPECT_EQ(ids.size(), 4u * executions_per_tenant + 2 * extra_executions)
      << "steps a and b of every execution";
  // The move is in the tenant's history once on each side; nothing was rejected.
  auto moves = tenant_events(h, mover);
  EXPECT_EQ(
      std::count(moves[home_of(mover)].begin(), moves[home_of(mover)].end(), "TenantMovedOut"), 1);
  EXPECT_EQ(
      std::count(moves[target_of(mover)].begin(), moves[target_of(mover)].end(), "TenantMovedIn"),
      1);
  for (const auto& r : h.rejections()) ADD_FAILURE() << "rejected: " << r.reason;
  EXPECT_TRUE(h.dead_letters().empty());
  // State equals the replay of each partition's log, and every chain verifies across the move.
  testing::expect_replay_rebuilds_the_state(h);
}

TEST(tenant_move, a_moved_tenant_finishes_everything_exactly_once_on_its_new_partition) {
  harness h("move", harness::options(partitions, false));
  acker a;
  setup(h, a);
  for (int i = 0; i < executions_per_tenant; i += 2) {
    h.signal(mover, exec_id(i), "go", R"({"early":true})");
  }
  // A signal for an execution that has not started yet is held (with its hold-window timer);
  // it moves with the tenant and is delivered when the start comes, after the move.
  h.signal(mover, "late-start", "go", R"({"held":true})");
  h.settle();
  submit_move(h, target_of(mover));
  h.settle();
  h.start(mover, "late-start", "wf", R"({"x":99})");
  ASSERT_EQ(last_tenant_event(h, mover, home_of(mover)), "TenantMovedOut");
  ASSERT_EQ(last_tenant_event(h, mover, target_of(mover)), "TenantMovedIn");
  EXPECT_EQ(h.n->orchestrator_of(home_of(mover)).probe().tenants_moved_out.load(), 1u);
  EXPECT_EQ(h.n->orchestrator_of(target_of(mover)).probe().tenants_moved_in.load(), 1u);
  // Nothing of the tenant is left on the old partition but where it went.
  const std::string prefix = keys::tenant_prefix(mover);
  (void)h.n->partition(home_of(mover))
      .store()
      .scan_prefix(prefix, [&](std::string_view key, std::string_view) {
        ADD_FAILURE() << "key of the moved tenant left behind: " << key.size() << " bytes";
        return false;
      });
  drive_to_completion(h, a);
  for (int round = 0; round < 10 && h.exec(mover, "late-start")->status == exec_status::running;
       ++round) {
    a.ack_all(h);
    h.settle();
    h.clk.advance(700);
    h.settle();
  }
  auto late = h.exec(mover, "late-start");
  ASSERT_TRUE(late.has_value());
  EXPECT_EQ(late->status, exec_status::succeeded);
  EXPECT_EQ(late->steps[1].output_json, R"({"held":true})") << "the held signal moved with it";
  expect_exactly_once_and_replayable(h, /*extra_executions=*/1);
}

TEST(tenant_move, refused_moves_say_why) {
  harness h("refused", harness::options(partitions, false));
  h.publish(mover, workflow());
  h.settle();
  h.submit(mover, client::move_tenant({mover, "", "m1", h.clk.now_ms()}, partitions));
  h.submit(mover, client::move_tenant({mover, "", "m2", h.clk.now_ms()}, home_of(mover)));
  h.settle();
  auto rejected = h.rejections();
  ASSERT_EQ(rejected.size(), 2u);
  EXPECT_EQ(rejected[0].code, static_cast<uint16_t>(rejection_code::invalid_move));
  EXPECT_NE(rejected[0].reason.find("partition 3 does not exist: the log has 3 partitions"),
            std::string::npos)
      << rejected[0].reason;
  EXPECT_NE(rejected[1].reason.find("already on partition"), std::string::npos)
      << rejected[1].reason;
}

// Upstream producers that keep publishing to the old partition (keyed by tenant, the default
// placement) are forwarded, and so is a second move: the tenant can move on, and back.
TEST(tenant_move, a_tenant_moves_on_and_back_and_keeps_every_record) {
  harness h("moves", harness::options(partitions, false));
  acker a;
  setup(h, a);
  const uint32_t home = home_of(mover);
  for (uint32_t to : {(home + 1) % partitions, (home + 2) % partitions, home}) {
    a.ack_all(h, 4);
    h.submit(mover,
             client::move_tenant({mover, "", fmt::format("move-{}", to), h.clk.now_ms()}, to));
    h.settle();
    h.clk.advance(300);
  }
  drive_to_completion(h, a);
  std::map<std::string, int> terminal;
  for (const auto& [p, r] : read_stream(h, stream::executions)) {
    const fbs::Envelope* e = decode_envelope(r.value);
    if (e->payload_type() == fbs::Payload::ExecutionSucceeded) {
      terminal[fmt::format("{}/{}", sv(e->tenant_id()), sv(e->execution_id()))]++;
    }
  }
  EXPECT_EQ(terminal.size(), 2u * executions_per_tenant);
  for (const auto& [id, n] : terminal) EXPECT_EQ(n, 1) << id;
  for (const auto& r : h.rejections()) ADD_FAILURE() << "rejected: " << r.reason;
  testing::expect_replay_rebuilds_the_state(h);
}

// ------------------------------------------------------------------------------ the CLI

struct outcome {
  int code = -1;
  std::string out;  // stdout and stderr
};

outcome cli(const std::string& args) {
  const std::string cmd = fmt::format("'{}' {} 2>&1", AUTERITY_BIN, args);
  std::FILE* p = ::popen(cmd.c_str(), "r");
  outcome o;
  if (!p) return o;
  char buf[8192];
  for (size_t n; (n = std::fread(buf, 1, sizeof buf, p)) > 0;) o.out.append(buf, n);
  const int status = ::pclose(p);
  o.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return o;
}

// What an operator does: publish, start, run, move, see it in `partitions show`, read a moved
// execution's whole timeline, and verify the log.
TEST(tenant_move_cli, an_operator_moves_a_tenant_and_sees_where_its_work_is) {
  const std::string dir = testing::temp_dir("move-cli");
  const std::string data = fmt::format("--data {}/d --partitions {}", dir, partitions);
  // A wait step without a timeout keeps the executions running across the move (a pending
  // timer would keep `run --until-quiet` from ending).
  const std::string def = dir + "/wf.json";
  {
    std::ofstream out(def);
    out << json{{"workflow", "wf"},
                {"version", 1},
                {"steps",
                 json::array(
                     {{{"id", "a"}, {"kind", "task"}, {"action", "transform"}},
                      {{"id", "w"}, {"kind", "wait_signal"}, {"signal", "go"}, {"after", {"a"}}}})}}
               .dump();
  }
  ASSERT_EQ(cli(fmt::format("publish {} --tenant {} {}", data, mover, def)).code, 0);
  for (int i = 0; i < 5; ++i) {
    ASSERT_EQ(
        cli(fmt::format("start {} --tenant {} --workflow wf --id {}", data, mover, exec_id(i)))
            .code,
        0);
  }
  ASSERT_EQ(cli(fmt::format("run {} --until-quiet", data)).code, 0);
  const uint32_t to = target_of(mover);
  const int64_t before_move_ms = wall_now_ms();
  auto moved = cli(fmt::format("tenants move {} {} --to {}", mover, data, to));
  ASSERT_EQ(moved.code, 0) << moved.out;
  ASSERT_EQ(cli(fmt::format("run {} --until-quiet", data)).code, 0);

  auto shown = cli(fmt::format("partitions show {}", data));
  ASSERT_EQ(shown.code, 0) << shown.out;
  // partition, tenants, moved out, running, ...; the target runs the tenant's 5 executions.
  bool target_row = false, source_row = false;
  std::istringstream rows(shown.out);
  for (std::string line; std::getline(rows, line);) {
    std::istringstream cols(line);
    std::string partition, tenants, moved_out, running;
    cols >> partition >> tenants >> moved_out >> running;
    if (partition == std::to_string(to)) {
      target_row = true;
      EXPECT_EQ(tenants, "1") << line;
      EXPECT_EQ(running, "5") << line;
      EXPECT_NE(line.find(fmt::format("{}:5", mover)), std::string::npos) << line;
    }
    if (partition == std::to_string(home_of(mover))) {
      source_row = true;
      EXPECT_EQ(tenants, "0") << line;
      EXPECT_EQ(moved_out, "1") << line;
      EXPECT_EQ(running, "0") << line;
    }
  }
  EXPECT_TRUE(target_row && source_row) << shown.out;
  // The timeline of a moved execution holds its events from before the move (on the source)
  // and its signal after it.
  ASSERT_EQ(
      cli(fmt::format("signal {} --tenant {} --id {} --name go", data, mover, exec_id(0))).code, 0);
  ASSERT_EQ(cli(fmt::format("run {} --until-quiet", data)).code, 0);
  auto timeline = cli(fmt::format("timeline {} --tenant {} --id {}", data, mover, exec_id(0)));
  ASSERT_EQ(timeline.code, 0) << timeline.out;
  EXPECT_NE(timeline.out.find("ExecutionStarted"), std::string::npos) << timeline.out;
  EXPECT_NE(timeline.out.find("SignalReceived"), std::string::npos) << timeline.out;
  EXPECT_NE(timeline.out.find("ExecutionSucceeded"), std::string::npos) << timeline.out;
  // Refused: a partition that does not exist (the rejection is in the log, with its reason).
  ASSERT_EQ(cli(fmt::format("tenants move {} {} --to 7", mover, data)).code, 0);
  ASSERT_EQ(cli(fmt::format("run {} --until-quiet", data)).code, 0);
  auto dump = cli(fmt::format("dump {} executions", data));
  EXPECT_NE(dump.out.find("partition 7 does not exist"), std::string::npos) << dump.out;
  auto verify = cli(fmt::format("replay verify --data {}/d --no-progress", dir));
  EXPECT_EQ(verify.code, 0) << verify.out;
  // The auditors' tools follow the tenant across the move without --all-partitions: the
  // tenant's timeline holds its records on both partitions, its verify covers both, and its
  // state as of a time before the move is read from the partition it was on then.
  auto all = cli(fmt::format("replay timeline --data {}/d --tenant {} --format jsonl --no-progress",
                             dir, mover));
  ASSERT_EQ(all.code, 0) << all.out;
  std::set<uint32_t> seen;
  std::istringstream lines(all.out);
  for (std::string line; std::getline(lines, line);) {
    const json j = json::parse(line, nullptr, false);
    if (j.is_object() && j.contains("partition")) seen.insert(j["partition"].get<uint32_t>());
  }
  EXPECT_EQ(seen, (std::set<uint32_t>{home_of(mover), to})) << all.out.substr(0, 2000);
  EXPECT_NE(all.out.find("TenantMovedOut"), std::string::npos);
  EXPECT_NE(all.out.find("TenantMovedIn"), std::string::npos);
  auto scoped = cli(
      fmt::format("replay verify --data {}/d --tenant {} --format json --no-progress", dir, mover));
  EXPECT_EQ(scoped.code, 0) << scoped.out;
  const json report = json::parse(scoped.out.substr(scoped.out.find('{')), nullptr, false);
  ASSERT_TRUE(report.is_object()) << scoped.out;
  std::set<uint32_t> verified;
  for (const json& part : report["partitions"]) verified.insert(part["partition"].get<uint32_t>());
  EXPECT_EQ(verified, (std::set<uint32_t>{home_of(mover), to})) << scoped.out;
  auto before = cli(fmt::format("replay state --data {}/d --tenant {} --as-of @{} --no-progress",
                                dir, mover, before_move_ms));
  ASSERT_EQ(before.code, 0) << before.out;
  EXPECT_NE(before.out.find(fmt::format("of partition {}", home_of(mover))), std::string::npos)
      << before.out;
  EXPECT_NE(before.out.find(exec_id(4)), std::string::npos) << before.out;
  auto now = cli(fmt::format("replay state --data {}/d --tenant {} --no-progress", dir, mover));
  ASSERT_EQ(now.code, 0) << now.out;
  EXPECT_NE(now.out.find(fmt::format("of partition {}", to)), std::string::npos) << now.out;
  EXPECT_NE(now.out.find(exec_id(4)), std::string::npos) << now.out;
  fs::remove_all(dir);
}

// ---------------------------------------------------------------------------- crash points

enum class crash {
  before_decided,          // the move command is in the log, nothing decided yet
  source_state_unwritten,  // the source committed the move; its state store did not get it
  delivery_lost,           // the source committed; the chunks never reached the target's log
  target_state_unwritten,  // the target installed; its state store did not get it
};

std::string crash_name(crash c) {
  switch (c) {
    case crash::before_decided:
      return "before_decided";
    case crash::source_state_unwritten:
      return "source_state_unwritten";
    case crash::delivery_lost:
      return "delivery_lost";
    case crash::target_state_unwritten:
      return "target_state_unwritten";
  }
  return "?";
}

class tenant_move_crash : public ::testing::TestWithParam<crash> {};

std::string state_dir(const harness& h, uint32_t p) {
  return fmt::format("{}/state/p{:03}", h.dir, p);
}

void restore_dir(const std::string& from, const std::string& to) {
  fs::remove_all(to);
  fs::copy(from, to, fs::copy_options::recursive);
}

fs::path last_segment(const harness& h, uint32_t p) {
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(fmt::format("{}/log/p{:03}", h.dir, p))) {
    if (e.path().extension() == ".seg") files.push_back(e.path());
  }
  std::sort(files.begin(), files.end());
  return files.back();
}

TEST_P(tenant_move_crash, the_move_completes_once_after_a_crash) {
  const crash c = GetParam();
  SCOPED_TRACE(crash_name(c));
  harness h("crash", harness::options(partitions, false));
  acker a;
  setup(h, a);
  const uint32_t source = home_of(mover), target = target_of(mover);
  submit_move(h, target);
  if (c == crash::before_decided) {
    ASSERT_NO_FATAL_FAILURE(reopen(h));
  }

  // Snapshots of what the stores and the target's log hold before each side acts.
  h.n.reset();
  const std::string snaps = h.dir + "-snap";
  fs::create_directories(snaps);
  restore_dir(state_dir(h, source), snaps + "/source");
  restore_dir(state_dir(h, target), snaps + "/target");
  const fs::path target_segment = last_segment(h, target);
  const uint64_t target_bytes = fs::file_size(target_segment);
  ASSERT_NO_FATAL_FAILURE(reopen(h));

  auto source_ran = h.n->partition(source).run_once();
  ASSERT_TRUE(source_ran.has_value()) << source_ran.error().message;
  ASSERT_EQ(last_tenant_event(h, mover, source), "TenantMovedOut");
  if (c == crash::source_state_unwritten) {
    h.n.reset();
    restore_dir(snaps + "/source", state_dir(h, source));
    ASSERT_NO_FATAL_FAILURE(reopen(h));
  }
  if (c == crash::delivery_lost) {
    h.n.reset();
    ASSERT_GT(fs::file_size(target_segment), target_bytes) << "the chunks were delivered";
    fs::resize_file(target_segment, target_bytes);
    ASSERT_NO_FATAL_FAILURE(reopen(h));
  }
  auto target_ran = h.n->partition(target).run_once();
  ASSERT_TRUE(target_ran.has_value()) << target_ran.error().message;
  ASSERT_EQ(last_tenant_event(h, mover, target), "TenantMovedIn");
  if (c == crash::target_state_unwritten) {
    h.n.reset();
    restore_dir(snaps + "/target", state_dir(h, target));
    ASSERT_NO_FATAL_FAILURE(reopen(h));
  }
  drive_to_completion(h, a);
  expect_exactly_once_and_replayable(h);
  fs::remove_all(snaps);
}

INSTANTIATE_TEST_SUITE_P(points, tenant_move_crash,
                         ::testing::Values(crash::before_decided, crash::source_state_unwritten,
                                           crash::delivery_lost, crash::target_state_unwritten),
                         [](const auto& info) { return crash_name(info.param); });

}  // namespace
}  // namespace auterity
