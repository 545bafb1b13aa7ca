// The crash test: runs the real `auterity run --until-quiet` binary on a data directory,
// SIGKILLs it at random points, restarts it, and then checks from the log, the state and the
// outbox that every execution finished with no event lost, no command emitted twice and no
// notification sent twice or lost.
//
// Shape: executions are submitted in waves (the engine is fast, see crash_rounds); each round
// starts the engine and kills it after a random time or once its log or outbox grew a random
// number of bytes (see kill_trigger); a final run must then finish everything and exit 0;
// last, the directory is opened in-process and checked (see verify).
//
// The kill schedule comes from a seed printed at the start (AUTERITY_TEST_SEED re-runs it);
// where a kill lands inside the engine still depends on timing, so a failure's data directory
// is kept for inspection (AUTERITY_TEST_KEEP keeps it always). AUTERITY_CRASH_EXECUTIONS and
// AUTERITY_CRASH_ROUNDS scale a soak run.

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <map>
#include <optional>
#include <ostream>
#include <random>
#include <set>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "engine/record.h"
#include "node/node.h"
#include "processors/client.h"
#include "processors/definition.h"
#include "processors/limits.h"
#include "replay/timeline.h"
#include "replay/verify.h"
#include "tests/run_command.h"

extern char** environ;

namespace auterity {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

constexpr uint32_t partitions = 4;
constexpr uint32_t tenants = 3;
constexpr uint32_t executions_default = 1000;
constexpr uint32_t rounds_default = 10;
constexpr int64_t kill_after_ms_min = 30;
constexpr int64_t kill_after_ms_max = 400;
constexpr uint64_t kill_log_growth_bytes_max = 2 << 20;    // a wave writes ~2.5 MB of log
constexpr uint64_t kill_outbox_growth_bytes_max = 40'000;  // ~250 notifications
constexpr int64_t kill_growth_deadline_ms = 1000;          // a growth trigger that never comes
constexpr int64_t final_run_timeout_ms = 120'000;
constexpr int64_t child_poll_ms = 20;
// Growth triggers poll this often: a burst of notifications takes a millisecond or two.
constexpr int64_t trigger_poll_us = 200;
constexpr size_t log_tail_bytes_max = 4000;
constexpr size_t problems_shown_max = 20;

// Everything crash-sensitive the orchestrator does: two parallel tasks with a step timeout
// that never fires (5 minutes, longer than the whole test), a task that fails retryably until
// its k-th attempt (retry timers), a delay (a due timer), two parallel notifications through
// the outbox connector, and a task joining them.
constexpr std::string_view workflow_json = R"({
  "workflow": "crash-lead",
  "version": 1,
  "description": "Crash test workload: parallel tasks, retries, a delay, two notifications",
  "params": {"cool_off_ms": 30},
  "steps": [
    {"id": "enrich", "kind": "task", "action": "transform", "timeout_ms": 300000,
     "input": {"name": "{{input.name}}", "part": "contact"}},
    {"id": "score", "kind": "task", "action": "transform", "timeout_ms": 300000,
     "input": {"name": "{{input.name}}", "part": "score"}},
    {"id": "crm_sync", "kind": "task", "action": "flaky", "after": ["enrich", "score"],
     "input": {"succeed_on_attempt": "{{input.flaky_attempts}}"},
     "retry": {"max_attempts": 4, "backoff_ms": 20}},
    {"id": "cool_off", "kind": "delay", "delay_ms": "{{params.cool_off_ms}}",
     "after": ["crm_sync"]},
    {"id": "send_sms", "kind": "notify", "after": ["cool_off"],
     "input": {"channel": "sms", "to": "{{input.phone}}",
               "body": "Hi {{steps.enrich.output.name}}, thanks for your interest!"}},
    {"id": "send_email", "kind": "notify", "after": ["cool_off"],
     "input": {"channel": "email", "to": "{{input.email}}", "subject": "Your visit",
               "body": "Hi {{steps.enrich.output.name}}, when would you like to come in?"}},
    {"id": "wrap_up", "kind": "task", "action": "transform", "timeout_ms": 300000,
     "after": ["send_sms", "send_email"],
     "input": {"sms": "{{steps.send_sms.status}}", "email": "{{steps.send_email.status}}"}}
  ]
})";
constexpr std::string_view workflow_id = "crash-lead";
// Version 2 is version 1 with a long delay: its executions stay in flight (a timer pending)
// through most of a round even on a fast machine, where a wave of version 1 is done in ~100 ms.
constexpr std::string_view long_cool_off_params = R"({"cool_off_ms": 500})";
constexpr std::string_view flaky_step = "crm_sync";
const std::vector<std::string> single_command_steps = {"enrich", "score", "send_sms", "send_email",
                                                       "wrap_up"};
const std::map<std::string, std::string> notify_channels = {{"send_sms", "sms"},
                                                            {"send_email", "email"}};

// Position of a step in workflow_json (= in execution_state::steps).
size_t step_index(std::string_view step) {
  static const definition d = *parse_definition(workflow_json, "");
  const int i = d.step_index(step);
  EXPECT_GE(i, 0) << "no step " << step << " in workflow_json";
  return static_cast<size_t>(std::max(i, 0));
}

struct planned_execution {
  std::string tenant;
  std::string id;
  uint32_t version = 1;         // of the workflow: 1 short delay, 2 long delay
  uint32_t flaky_attempts = 1;  // crm_sync succeeds on this attempt
  std::string phone;
  std::string email;

  std::string key() const { return tenant + "/" + id; }
  uint32_t expected_commands() const {
    return static_cast<uint32_t>(single_command_steps.size()) + flaky_attempts;
  }
  // ExecutionStarted; StepScheduled + StepSucceeded for each single-attempt command step;
  // StepScheduled + StepRetryScheduled + TimerFired per failed crm_sync attempt, then
  // StepScheduled + StepSucceeded; cool_off StepScheduled + TimerFired + StepSucceeded;
  // ExecutionSucceeded.
  uint32_t expected_events() const {
    return 1 + 2 * static_cast<uint32_t>(single_command_steps.size()) + 3 * (flaky_attempts - 1) +
           2 + 3 + 1;
  }
};

// ------------------------------------------------------------------------------- helpers

uint64_t env_or(const char* name, uint64_t fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::strtoull(v, nullptr, 10) : fallback;
}

// Collects findings of one kind and prints the first few with the total, so one broken
// invariant does not bury the report under thousands of lines.
class problems {
 public:
  explicit problems(std::string what) : _what(std::move(what)) {}
  void add(std::string p) {
    if (_shown.size() < problems_shown_max) _shown.push_back(std::move(p));
    ++_count;
  }
  size_t count() const { return _count; }
  friend std::ostream& operator<<(std::ostream& os, const problems& p) {
    os << p._count << " " << p._what << ":";
    for (const std::string& s : p._shown) os << "\n  " << s;
    if (p._count > p._shown.size()) os << "\n  ... and " << p._count - p._shown.size() << " more";
    return os;
  }

 private:
  std::string _what;
  std::vector<std::string> _shown;
  size_t _count = 0;
};

std::string read_whole(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

std::string tail_of(const fs::path& path) {
  std::string s = read_whole(path);
  if (s.size() > log_tail_bytes_max) s = "..." + s.substr(s.size() - log_tail_bytes_max);
  return s.empty() ? "(empty)" : s;
}

std::string describe_status(int status) {
  if (WIFEXITED(status)) return fmt::format("exited with code {}", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    return fmt::format("died of signal {} ({})", WTERMSIG(status), strsignal(WTERMSIG(status)));
  }
  return fmt::format("ended with wait status {:#x}", status);
}

// Complete lines in the outbox: a progress measure that needs no log open (which would repair
// a torn tail before the engine's own restart could).
size_t outbox_lines(const fs::path& dir) {
  const std::string text = read_whole(dir / "outbox" / "notifications.jsonl");
  return static_cast<size_t>(std::count(text.begin(), text.end(), '\n'));
}

uint64_t bytes_under(const fs::path& path) {
  std::error_code ec;
  if (fs::is_regular_file(path, ec)) return fs::file_size(path, ec);
  uint64_t total = 0;
  for (const auto& entry : fs::recursive_directory_iterator(path, ec)) {
    if (entry.is_regular_file(ec)) total += entry.file_size(ec);
  }
  return total;
}

// Reads every record of (s, p) in offset order.
template <typename F>
void for_each_record(log& l, stream s, uint32_t p, F&& fn) {
  std::vector<record> recs;
  const uint64_t end = *l.end_offset(s, p);
  for (uint64_t from = 0; from < end;) {
    recs.clear();
    auto n = l.read(s, p, from, 1024, 8 << 20, recs);
    ASSERT_TRUE(n.has_value()) << stream_name(s) << "/" << p << ": " << n.error().message;
    ASSERT_GT(*n, 0u) << stream_name(s) << "/" << p << ": read returned nothing at " << from;
    from = recs.back().offset + 1;
    for (const record& r : recs) fn(r);
  }
}

// ------------------------------------------------------------------------------ workload

std::vector<std::string> pick_tenants() {
  // Tenants on distinct partitions, so the kills hit several partition loops at once.
  std::vector<std::string> out;
  std::set<uint32_t> used;
  for (int i = 0; out.size() < tenants; ++i) {
    std::string t = fmt::format("dealer-{:02}", i);
    if (used.insert(tenant_partition(t, partitions)).second) out.push_back(std::move(t));
  }
  return out;
}

std::vector<planned_execution> plan_workload(uint32_t count) {
  const std::vector<std::string> ts = pick_tenants();
  std::vector<planned_execution> plan;
  for (uint32_t i = 0; i < count; ++i) {
    planned_execution e;
    e.tenant = ts[i % ts.size()];
    e.id = fmt::format("lead-{:05}", i);
    e.flaky_attempts = 2 + i % 2;
    e.version = 1 + (i / 2) % 2;
    e.phone = fmt::format("+1555{:07}", i);
    e.email = fmt::format("lead{}@example.com", i);
    plan.push_back(std::move(e));
  }
  return plan;
}

node_options options_for(const fs::path& dir) {
  node_options o;
  o.data_dir = dir.string();
  o.partitions = partitions;
  o.workers = false;
  return o;
}

// Appends `wave` to ingress (and the definitions first, if `publish`), the way an upstream
// CRM would while the engine is down.
void submit(const fs::path& dir, std::span<const planned_execution> wave, bool publish) {
  system_clock clk;
  node_options o = options_for(dir);
  o.fsync = false;  // this process closes the log cleanly before anyone reads it
  auto n = node::open(o, clk);
  ASSERT_TRUE(n.has_value()) << n.error().message;
  const int64_t now = clk.now_ms();
  for (const std::string& t : publish ? pick_tenants() : std::vector<std::string>()) {
    auto r =
        (*n)->submit(t, client::publish_definition({t, "", "publish-v1-" + t, now}, workflow_json));
    ASSERT_TRUE(r.has_value()) << r.error().message;
    std::string v2(workflow_json);
    v2.replace(v2.find(R"("version": 1)"), 12, R"("version": 2)");
    r = (*n)->submit(
        t, client::publish_definition({t, "", "publish-v2-" + t, now}, v2, long_cool_off_params));
    ASSERT_TRUE(r.has_value()) << r.error().message;
  }
  for (const planned_execution& e : wave) {
    const json input = {{"name", "Lead " + e.id},
                        {"phone", e.phone},
                        {"email", e.email},
                        {"flaky_attempts", e.flaky_attempts}};
    const std::string rid = "start-" + e.id;
    auto r = (*n)->submit(e.tenant, client::start_execution({e.tenant, e.id, rid, now}, workflow_id,
                                                            e.version, input.dump()));
    ASSERT_TRUE(r.has_value()) << r.error().message;
  }
}

// ------------------------------------------------------------------------- engine process

// Starts `auterity run --until-quiet` on `dir` with stdout and stderr appended to `out`.
pid_t spawn_engine(const fs::path& dir, const fs::path& out) {
  std::vector<std::string> args = {AUTERITY_BIN,   "run",          "--data",
                                   dir.string(),   "--partitions", std::to_string(partitions),
                                   "--until-quiet"};
  int rc = 0;
  const pid_t pid = testing::spawn_logged(std::move(args), out.string(), environ, &rc);
  if (rc != 0) {
    ADD_FAILURE() << "cannot start " << AUTERITY_BIN << ": " << std::strerror(rc);
    return -1;
  }
  return pid;
}

// When a round's kill comes. Timed kills land anywhere, idle moments and recovery included;
// but the engine does a wave's work in short bursts, so kills triggered by the engine's own
// output land inside them: right after a log commit (before the state write that follows it),
// or while the notification worker writes the outbox (before it commits the acks).
struct kill_trigger {
  enum kind_t { after_time, log_growth, outbox_growth } kind = after_time;
  int64_t after_ms = 0;       // after_time: when; otherwise the deadline
  uint64_t growth_bytes = 0;  // log_growth, outbox_growth: once the file(s) grew this much

  static kill_trigger random(std::mt19937_64& rng) {
    kill_trigger t;
    t.kind = static_cast<kind_t>(std::uniform_int_distribution<int>(0, 2)(rng));
    t.after_ms = t.kind == after_time ? std::uniform_int_distribution<int64_t>(
                                            kill_after_ms_min, kill_after_ms_max)(rng)
                                      : kill_growth_deadline_ms;
    const uint64_t max =
        t.kind == log_growth ? kill_log_growth_bytes_max : kill_outbox_growth_bytes_max;
    t.growth_bytes = std::uniform_int_distribution<uint64_t>(1, max)(rng);
    return t;
  }
  fs::path watched(const fs::path& dir) const {
    return kind == log_growth ? dir / "log" : dir / "outbox" / "notifications.jsonl";
  }
  std::string describe() const {
    switch (kind) {
      case after_time:
        return fmt::format("after {} ms", after_ms);
      case log_growth:
        return fmt::format("once the log grew {} B", growth_bytes);
      case outbox_growth:
        return fmt::format("once the outbox grew {} B", growth_bytes);
    }
    return "?";
  }
};

// Waits for `pid` to exit up to `timeout_ms`; nullopt if it is still running.
std::optional<int> wait_for(pid_t pid, int64_t timeout_ms) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (true) {
    int status = 0;
    const pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) return status;
    if (r < 0) {
      ADD_FAILURE() << "waitpid(" << pid << "): " << std::strerror(errno);
      return std::nullopt;
    }
    if (std::chrono::steady_clock::now() >= deadline) return std::nullopt;
    std::this_thread::sleep_for(std::chrono::milliseconds(child_poll_ms));
  }
}

// Waits for `pid` to exit or for the trigger to fire (nullopt: kill it now).
std::optional<int> wait_for_trigger(pid_t pid, const kill_trigger& t, const fs::path& dir,
                                    uint64_t watched_bytes_before) {
  if (t.kind == kill_trigger::after_time) return wait_for(pid, t.after_ms);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(t.after_ms);
  while (std::chrono::steady_clock::now() < deadline) {
    int status = 0;
    const pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) return status;
    if (r < 0) {
      ADD_FAILURE() << "waitpid(" << pid << "): " << std::strerror(errno);
      return std::nullopt;
    }
    if (bytes_under(t.watched(dir)) >= watched_bytes_before + t.growth_bytes) return std::nullopt;
    std::this_thread::sleep_for(std::chrono::microseconds(trigger_poll_us));
  }
  return std::nullopt;
}

int kill_and_reap(pid_t pid) {
  ::kill(pid, SIGKILL);
  int status = 0;
  ::waitpid(pid, &status, 0);
  return status;
}

struct round_outcome {
  size_t submitted = 0;  // executions submitted before this round
  kill_trigger trigger;
  int64_t ran_ms = 0;        // from start to death
  bool killed = false;       // false: the engine finished (exit 0) before the kill
  size_t notifications = 0;  // in the outbox after the round
  bool in_flight = false;    // notifications were still due when the engine died
};

// Runs the engine and SIGKILLs it when `out.trigger` fires.
void crash_round(const fs::path& dir, int round, size_t notifications_due, round_outcome& out) {
  const fs::path output = dir / fmt::format("engine-round-{:02}.log", round);
  const uint64_t watched_before = bytes_under(out.trigger.watched(dir));
  const auto start = std::chrono::steady_clock::now();
  const pid_t pid = spawn_engine(dir, output);
  if (pid < 0) return;
  std::optional<int> status = wait_for_trigger(pid, out.trigger, dir, watched_before);
  if (!status) status = kill_and_reap(pid);
  out.ran_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                   std::chrono::steady_clock::now() - start)
                   .count();
  out.killed = WIFSIGNALED(*status) && WTERMSIG(*status) == SIGKILL;
  const bool finished = WIFEXITED(*status) && WEXITSTATUS(*status) == 0;
  EXPECT_TRUE(out.killed || finished)
      << "round " << round << ": the engine " << describe_status(*status)
      << " before it was killed; its output (" << output << "):\n"
      << tail_of(output);
  out.notifications = outbox_lines(dir);
  out.in_flight = out.killed && out.notifications < notifications_due;
  EXPECT_LE(out.notifications, notifications_due) << "round " << round << ": outbox lines";
}

// `took_ms` is set to the run's wall time.
void final_run(const fs::path& dir, int64_t& took_ms) {
  const fs::path output = dir / "engine-final.log";
  const auto start = std::chrono::steady_clock::now();
  const pid_t pid = spawn_engine(dir, output);
  ASSERT_GT(pid, 0);
  std::optional<int> status = wait_for(pid, final_run_timeout_ms);
  if (!status) {
    kill_and_reap(pid);
    FAIL() << "the final run did not become quiet within " << final_run_timeout_ms
           << " ms (killed it); its output (" << output << "):\n"
           << tail_of(output);
  }
  took_ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                                  start)
                .count();
  ASSERT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0)
      << "the final run " << describe_status(*status) << "; its output (" << output << "):\n"
      << tail_of(output);
}

// --------------------------------------------------------------------------- log census

struct execution_census {
  std::vector<uint32_t> seqs;       // of "<execution>#<seq>", in log order
  std::vector<std::string> events;  // payload names in log order, for messages
  std::map<std::string, std::vector<uint32_t>> attempts;  // step -> command attempts
};

// What the log holds, over every partition.
struct census {
  std::map<std::string, execution_census> executions;  // "<tenant>/<execution>"
  std::map<std::string, uint32_t> event_ids;           // "<tenant>/<record id>" -> count
  std::map<std::string, uint32_t> command_ids;
  std::map<std::string, std::string> command_steps;  // command key -> step
  std::map<std::string, uint32_t> ack_commands;      // acked command key -> acks
  std::map<std::string, uint32_t> definitions;       // tenant -> DefinitionPublished
  std::vector<std::string> rejections;
  uint64_t events = 0;  // executions-stream events, execution and tenant level
  uint64_t commands = 0;
  uint64_t acks = 0;
  uint64_t deadletters = 0;
};

std::string describe(const fbs::Envelope* e) {
  return e ? fmt::format("{} {}", payload_name(e->payload_type()), sv(e->record_id()))
           : std::string("undecodable record");
}

std::pair<std::string, uint32_t> step_and_attempt(const fbs::Envelope& e) {
  if (auto x = e.payload_as_RunStep()) return {std::string(sv(x->step())), x->attempt()};
  if (auto x = e.payload_as_CallAi()) return {std::string(sv(x->step())), x->attempt()};
  if (auto x = e.payload_as_SendNotification()) return {std::string(sv(x->step())), x->attempt()};
  return {};
}

void census_executions(log& l, uint32_t p, census& c, problems& bad) {
  for_each_record(l, stream::executions, p, [&](const record& r) {
    const fbs::Envelope* e = decode_envelope(r.value);
    if (e == nullptr) return bad.add(fmt::format("executions/{}/{}: undecodable", p, r.offset));
    if (e->kind() == fbs::RecordKind::Rejection) {
      c.rejections.push_back(fmt::format("executions/{}/{}: {}: {}", p, r.offset, describe(e),
                                         describe_record(r.value)));
      return;
    }
    c.events++;
    const std::string tenant(sv(e->tenant_id()));
    const std::string id(sv(e->record_id()));
    c.event_ids[tenant + "/" + id]++;
    if (sv(e->execution_id()).empty()) {
      if (e->payload_type() == fbs::Payload::DefinitionPublished) c.definitions[tenant]++;
      return;
    }
    const std::string prefix = fmt::format("{}#", sv(e->execution_id()));
    uint32_t seq = 0;
    const char* end = id.data() + id.size();
    if (!id.starts_with(prefix) ||
        std::from_chars(id.data() + prefix.size(), end, seq) != std::from_chars_result{end, {}}) {
      return bad.add(
          fmt::format("executions/{}/{}: event id '{}' is not '{}<seq>'", p, r.offset, id, prefix));
    }
    execution_census& ec = c.executions[tenant + "/" + std::string(sv(e->execution_id()))];
    ec.seqs.push_back(seq);
    ec.events.emplace_back(payload_name(e->payload_type()));
  });
}

void census_commands(log& l, uint32_t p, census& c, problems& bad) {
  for (stream s : {stream::commands_step, stream::commands_ai, stream::commands_notify}) {
    for_each_record(l, s, p, [&](const record& r) {
      const fbs::Envelope* e = decode_envelope(r.value);
      if (e == nullptr) {
        return bad.add(fmt::format("{}/{}/{}: undecodable", stream_name(s), p, r.offset));
      }
      c.commands++;
      const std::string tenant(sv(e->tenant_id()));
      const std::string key = tenant + "/" + std::string(sv(e->record_id()));
      c.command_ids[key]++;
      const auto [step, attempt] = step_and_attempt(*e);
      if (step.empty()) bad.add(fmt::format("{}: {} is not a command", key, describe(e)));
      c.command_steps[key] = step;
      c.executions[tenant + "/" + std::string(sv(e->execution_id()))].attempts[step].push_back(
          attempt);
    });
  }
  for_each_record(l, stream::acks, p, [&](const record& r) {
    const fbs::Envelope* e = decode_envelope(r.value);
    if (e == nullptr) return bad.add(fmt::format("acks/{}/{}: undecodable", p, r.offset));
    c.acks++;
    auto ack = e->payload_as_StepAck();
    if (ack == nullptr || sv(ack->command_id()) != sv(e->causation_id())) {
      return bad.add(fmt::format("acks/{}/{}: {} is not an ack of its causation {}", p, r.offset,
                                 describe(e), sv(e->causation_id())));
    }
    c.ack_commands[std::string(sv(e->tenant_id())) + "/" + std::string(sv(ack->command_id()))]++;
  });
  c.deadletters += *l.end_offset(stream::deadletter, p);
}

// Every consumer read its input to the end and no timer is pending: nothing is left to do.
void check_nothing_left(node& n, uint32_t p, problems& bad) {
  log& l = n.get_log();
  if (n.orchestrator_of(p).published_next_timer_ms() != std::numeric_limits<int64_t>::max()) {
    bad.add(fmt::format("partition {} still has a timer due at {}", p,
                        n.orchestrator_of(p).published_next_timer_ms()));
  }
  for (stream s : {stream::ingress, stream::acks}) {
    const uint64_t pos = *l.position(orchestrator_group, s, p);
    if (pos != *l.end_offset(s, p)) {
      bad.add(fmt::format("orchestrator at {}/{} offset {} of {}", stream_name(s), p, pos,
                          *l.end_offset(s, p)));
    }
  }
  for (stream s : {stream::commands_step, stream::commands_ai, stream::commands_notify}) {
    const std::string group = fmt::format("worker.{}", stream_name(s));
    const uint64_t pos = *l.position(group, s, p);
    if (pos != *l.end_offset(s, p)) {
      bad.add(fmt::format("{} at {}/{} offset {} of {}", group, stream_name(s), p, pos,
                          *l.end_offset(s, p)));
    }
  }
}

// --------------------------------------------------------------------------- the checks

void check_states(node& n, const std::vector<planned_execution>& plan) {
  std::map<std::string, execution_state> states;
  n.for_each_execution([&](const execution_state& e) { states[e.tenant + "/" + e.id] = e; });
  problems bad("executions not finished as planned");
  for (const planned_execution& p : plan) {
    auto it = states.find(p.key());
    if (it == states.end()) {
      bad.add(p.key() + ": missing from the state");
      continue;
    }
    const execution_state& e = it->second;
    if (e.status != exec_status::succeeded) {
      bad.add(fmt::format("{}: {} ({})", p.key(), exec_status_name(e.status), e.result));
    }
    for (size_t i = 0; i < e.steps.size(); ++i) {
      if (e.steps[i].status != step_status::succeeded) {
        bad.add(fmt::format("{}: step {} is {}", p.key(), i, step_status_name(e.steps[i].status)));
      }
    }
    // The ack of the attempt that succeeded decided the step, and the join saw both
    // notifications succeed.
    const step_state& flaky = e.steps.at(step_index(flaky_step));
    const json flaky_output = json::parse(flaky.output_json, nullptr, false);
    if (flaky.attempt != p.flaky_attempts || flaky_output != json{{"attempt", p.flaky_attempts}}) {
      bad.add(fmt::format("{}: {} ended at attempt {} with output {}, expected attempt {}", p.key(),
                          flaky_step, flaky.attempt, flaky.output_json, p.flaky_attempts));
    }
    const json expected_result = {{"wrap_up", {{"sms", "succeeded"}, {"email", "succeeded"}}}};
    if (json::parse(e.result, nullptr, false) != expected_result) {
      bad.add(fmt::format("{}: result {}, expected {}", p.key(), e.result, expected_result.dump()));
    }
    states.erase(it);
  }
  for (const auto& [key, e] : states) bad.add(key + ": not planned, yet in the state");
  EXPECT_EQ(bad.count(), 0u) << bad;
}

void check_events(node& n, const census& c, const std::vector<planned_execution>& plan) {
  problems dup("event ids not unique");
  for (const auto& [id, count] : c.event_ids) {
    if (count != 1) dup.add(fmt::format("{} appears {} times", id, count));
  }
  EXPECT_EQ(dup.count(), 0u) << dup;

  problems bad("executions whose history has gaps, duplicates or unexpected events");
  for (const planned_execution& p : plan) {
    auto it = c.executions.find(p.key());
    const execution_census empty;
    const execution_census& ec = it == c.executions.end() ? empty : it->second;
    // Sequence numbers 0, 1, 2, ... in log order: none missing, repeated or reordered.
    bool in_order = true;
    for (uint32_t i = 0; i < ec.seqs.size(); ++i) in_order = in_order && ec.seqs[i] == i;
    auto state = n.execution(p.tenant, p.id);
    const uint32_t in_state = state ? state->event_count : 0;
    if (!in_order || ec.seqs.size() != in_state || ec.seqs.size() != p.expected_events()) {
      bad.add(
          fmt::format("{}: {} events in the log (seqs [{}]), {} in the state, {} "
                      "expected; events: {}",
                      p.key(), ec.seqs.size(), fmt::join(ec.seqs, ","), in_state,
                      p.expected_events(), fmt::join(ec.events, ", ")));
    }
  }
  EXPECT_EQ(bad.count(), 0u) << bad;

  for (const std::string& t : pick_tenants()) {
    EXPECT_EQ(c.definitions.contains(t) ? c.definitions.at(t) : 0u, 2u)
        << "DefinitionPublished events of tenant " << t;
  }
  problems rejected("rejections (a re-read ingress or ack record?)");
  for (const std::string& r : c.rejections) rejected.add(r);
  EXPECT_EQ(rejected.count(), 0u) << rejected;
  EXPECT_EQ(c.deadletters, 0u) << "dead letters on the deadletter stream";
}

void check_commands(const census& c, const std::vector<planned_execution>& plan) {
  problems dup("command ids emitted more than once");
  for (const auto& [id, count] : c.command_ids) {
    if (count != 1) dup.add(fmt::format("{} emitted {} times", id, count));
  }
  EXPECT_EQ(dup.count(), 0u) << dup;

  problems bad("executions with other commands than the workflow implies");
  for (const planned_execution& p : plan) {
    auto it = c.executions.find(p.key());
    std::map<std::string, std::vector<uint32_t>> expected;
    for (const std::string& s : single_command_steps) expected[s] = {1};
    for (uint32_t a = 1; a <= p.flaky_attempts; ++a) expected[std::string(flaky_step)].push_back(a);
    std::map<std::string, std::vector<uint32_t>> actual;
    if (it != c.executions.end()) actual = it->second.attempts;
    size_t emitted = 0;
    std::string text;
    for (auto& [step, attempts] : actual) {
      std::sort(attempts.begin(), attempts.end());
      emitted += attempts.size();
      text += fmt::format(" {}:[{}]", step, fmt::join(attempts, ","));
    }
    if (actual != expected) {
      bad.add(
          fmt::format("{}: {} commands, {} expected (crm_sync succeeds on attempt {}); "
                      "step:[attempts]{}",
                      p.key(), emitted, p.expected_commands(), p.flaky_attempts, text));
    }
  }
  EXPECT_EQ(bad.count(), 0u) << bad;
}

void check_acks(const census& c) {
  problems bad("commands not acknowledged exactly once");
  for (const auto& [id, count] : c.ack_commands) {
    if (count != 1) bad.add(fmt::format("{} acknowledged {} times", id, count));
    if (!c.command_ids.contains(id)) bad.add(fmt::format("ack for unknown command {}", id));
  }
  for (const auto& [id, count] : c.command_ids) {
    if (!c.ack_commands.contains(id)) bad.add(fmt::format("{} never acknowledged", id));
  }
  EXPECT_EQ(bad.count(), 0u) << bad;
}

// `lines` is set to the number of notifications written.
void check_outbox(const fs::path& dir, const census& c, const std::vector<planned_execution>& plan,
                  size_t& lines) {
  const fs::path path = dir / "outbox" / "notifications.jsonl";
  const std::string text = read_whole(path);
  ASSERT_FALSE(text.empty()) << path << " is empty or missing";
  EXPECT_EQ(text.back(), '\n') << path << " ends with a torn line";
  std::map<std::string, planned_execution> by_key;
  for (const planned_execution& p : plan) by_key[p.key()] = p;

  std::map<std::string, uint32_t> sent;  // "<tenant>/<idempotency id>" -> lines
  problems bad("notification lines that do not match their command");
  for (size_t pos = 0, line = 1; pos < text.size(); ++line) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    const json j = json::parse(std::string_view(text).substr(pos, end - pos), nullptr, false);
    pos = end + 1;
    lines = line;
    if (j.is_discarded() || !j.is_object()) {
      bad.add(fmt::format("line {}: not a JSON object", line));
      continue;
    }
    const std::string tenant = j.value("tenant", ""), id = j.value("id", "");
    const std::string key = tenant + "/" + id;
    sent[key]++;
    auto step = c.command_steps.find(key);
    auto plan_it = by_key.find(tenant + "/" + j.value("execution", ""));
    if (step == c.command_steps.end() || plan_it == by_key.end() ||
        !notify_channels.contains(step->second)) {
      bad.add(fmt::format("line {}: {} is not a notify command of a planned execution", line, key));
      continue;
    }
    const planned_execution& p = plan_it->second;
    const std::string& channel = notify_channels.at(step->second);
    const std::string to = channel == "sms" ? p.phone : p.email;
    if (j.value("channel", "") != channel || j.value("to", "") != to) {
      bad.add(fmt::format("line {}: {} went to {} {}, expected {} {}", line, key,
                          j.value("channel", ""), j.value("to", ""), channel, to));
    }
  }
  EXPECT_EQ(bad.count(), 0u) << bad;

  problems twice("notifications sent more than once or never");
  for (const auto& [key, count] : sent) {
    if (count != 1) twice.add(fmt::format("{} written {} times", key, count));
  }
  for (const planned_execution& p : plan) {
    for (const auto& [step, channel] : notify_channels) {
      const std::string key = fmt::format("{}/{}/{}/1", p.tenant, p.id, step);
      if (!sent.contains(key)) twice.add(fmt::format("{} ({}) never written", key, channel));
    }
  }
  EXPECT_EQ(twice.count(), 0u) << twice;
  EXPECT_EQ(sent.size(), plan.size() * notify_channels.size()) << "distinct notifications";
}

void check_chains_and_replay(node& n, const fs::path& dir, const census& c) {
  uint64_t chained = 0;
  for (uint32_t p = 0; p < n.partitions(); ++p) {
    auto report = verify_chains(n.get_log(), p);
    ASSERT_TRUE(report.has_value()) << report.error().message;
    EXPECT_TRUE(report->problems.empty()) << "partition " << p << " hash chains:\n  "
                                          << fmt::format("{}", fmt::join(report->problems, "\n  "));
    chained += report->events;

    auto diffs = compare_with_replay(n.get_log(), p, n.partition(p).store(),
                                     (dir / fmt::format("replay-p{:03}", p)).string());
    ASSERT_TRUE(diffs.has_value()) << diffs.error().message;
    problems d(fmt::format("differences between partition {}'s state and a replay of its log", p));
    for (const std::string& s : *diffs) d.add(s);
    EXPECT_EQ(d.count(), 0u) << d;
  }
  EXPECT_EQ(chained, c.events) << "events checked by verify_chains vs events in the log";
}

// ------------------------------------------------------------------------------ the test

// A fresh data directory, removed at the end unless the test failed (or AUTERITY_TEST_KEEP is
// set): a failure's directory is what an engineer needs to see what happened.
class data_dir {
 public:
  explicit data_dir(uint64_t seed)
      : _path(fs::temp_directory_path() / fmt::format("auterity-crash-{}-{}", ::getpid(), seed)) {
    fs::remove_all(_path);
    fs::create_directories(_path);
  }
  ~data_dir() {
    if (::testing::Test::HasFailure() || std::getenv("AUTERITY_TEST_KEEP") != nullptr) {
      fmt::print("crash_test: data directory kept: {}\n", _path.string());
    } else {
      std::error_code ec;
      fs::remove_all(_path, ec);
    }
  }
  const fs::path& path() const { return _path; }

 private:
  fs::path _path;
};

// The engine gets through a few hundred executions in a fraction of a second, so work is
// submitted in waves: one before every even round. Odd rounds restart straight after a kill,
// so the engine's own recovery meets whatever the kill left (a torn log tail, a torn outbox
// line, state behind the log, commands run but not acknowledged).
void crash_rounds(const fs::path& dir, std::span<const planned_execution> plan, int rounds,
                  std::mt19937_64& rng, std::vector<round_outcome>& outcomes) {
  const size_t waves = std::max(1, (rounds + 1) / 2);
  auto wave = [&](size_t w) {
    const size_t begin = w * plan.size() / waves;
    return plan.subspan(begin, (w + 1) * plan.size() / waves - begin);
  };
  size_t submitted = 0;
  for (int r = 0; r < rounds; ++r) {
    round_outcome o;
    if (r % 2 == 0) {
      ASSERT_NO_FATAL_FAILURE(submit(dir, wave(r / 2), r == 0));
      o.submitted = wave(r / 2).size();
      submitted += o.submitted;
    }
    o.trigger = kill_trigger::random(rng);
    const size_t due = submitted * notify_channels.size();
    crash_round(dir, r, due, o);
    fmt::print(
        "  round {:2}: +{:3} executions, {} at {:4} ms, {:4}/{} notifications{}; "
        "kill {}\n",
        r, o.submitted, o.killed ? "killed  " : "finished", o.ran_ms, o.notifications, due,
        o.in_flight ? "" : " (none was due)", o.trigger.describe());
    std::fflush(stdout);
    outcomes.push_back(o);
  }
  if (rounds == 0) {
    ASSERT_NO_FATAL_FAILURE(submit(dir, plan, true));
  }
}

struct verified {
  uint64_t events = 0;
  uint64_t commands = 0;
  uint64_t acks = 0;
  size_t notifications = 0;
};

// Opens the directory in-process (recovered, no workers) and checks everything the test
// promises.
void verify(const fs::path& dir, const std::vector<planned_execution>& plan, verified& out) {
  system_clock clk;
  auto n = node::open(options_for(dir), clk);
  ASSERT_TRUE(n.has_value()) << n.error().message;
  auto recovered = (*n)->recover();
  ASSERT_TRUE(recovered.has_value()) << recovered.error().message;
  census c;
  problems misplaced("undecodable records, work left over or records out of place");
  for (uint32_t p = 0; p < partitions; ++p) {
    ASSERT_NO_FATAL_FAILURE(census_executions((*n)->get_log(), p, c, misplaced));
    ASSERT_NO_FATAL_FAILURE(census_commands((*n)->get_log(), p, c, misplaced));
    check_nothing_left(**n, p, misplaced);
  }
  EXPECT_EQ(misplaced.count(), 0u) << misplaced;
  check_states(**n, plan);
  check_events(**n, c, plan);
  check_commands(c, plan);
  check_acks(c);
  ASSERT_NO_FATAL_FAILURE(check_outbox(dir, c, plan, out.notifications));
  check_chains_and_replay(**n, dir, c);
  out.events = c.events;
  out.commands = c.commands;
  out.acks = c.acks;
}

TEST(crash_test, sigkill_at_random_points_loses_and_repeats_nothing) {
  const uint64_t seed = env_or("AUTERITY_TEST_SEED", std::random_device{}());
  const auto executions =
      static_cast<uint32_t>(env_or("AUTERITY_CRASH_EXECUTIONS", executions_default));
  const auto rounds = static_cast<int>(env_or("AUTERITY_CRASH_ROUNDS", rounds_default));
  fmt::print(
      "crash_test: seed {} (re-run with AUTERITY_TEST_SEED={}), {} executions, {} kill "
      "rounds\n",
      seed, seed, executions, rounds);
  std::fflush(stdout);
  SCOPED_TRACE(fmt::format("seed {}", seed));
  const auto start = std::chrono::steady_clock::now();
  std::mt19937_64 rng(seed);
  const data_dir dir(seed);
  const std::vector<planned_execution> plan = plan_workload(executions);

  std::vector<round_outcome> outcomes;
  ASSERT_NO_FATAL_FAILURE(crash_rounds(dir.path(), plan, rounds, rng, outcomes));
  int64_t final_ms = 0;
  ASSERT_NO_FATAL_FAILURE(final_run(dir.path(), final_ms));
  const auto kills = std::ranges::count_if(outcomes, &round_outcome::killed);
  const auto in_flight = std::ranges::count_if(outcomes, &round_outcome::in_flight);
  // A run in which every kill hit an idle engine would prove nothing.
  if (rounds > 0) {
    EXPECT_GE(in_flight, 1) << "no kill landed while work was in flight";
  }

  verified v;
  verify(dir.path(), plan, v);
  fmt::print(
      "crash_test: seed {}: {} rounds, {} kills ({} with work in flight), {} executions, "
      "{} events, {} commands, {} acks, {} notifications; final run {} ms, all {:.1f} s\n",
      seed, rounds, kills, in_flight, executions, v.events, v.commands, v.acks, v.notifications,
      final_ms, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
}

// ------------------------------------------------------------- a foreach of many items

// One campaign execution: a foreach over many leads, 25 at a time, each a notification through
// the outbox — sent by the item's own command (a notify body), or by a child execution per item
// (a workflow body: the child notifies, then answers with the address). The engine is SIGKILLed
// while items are out (on outbox growth, or at a random time), restarted, killed again, then run
// to the end: every item's notification is written exactly once, every command emitted and
// acknowledged once, every child ends once, the outputs are in item order, and the state equals
// a replay of the log.
// A notify body's output (~110 bytes, with the outbox path) limits it to about 500 items: the
// collected outputs must fit payload_bytes_max (64 KiB); 1 000 such items fail the step with
// that limit named, as they should. A child's answer is short, so that body takes 1 000
// (foreach_items_max).
constexpr std::string_view fanout_notify_workflow = R"({
  "workflow": "crash-campaign", "version": 1,
  "steps": [
    {"id": "campaign", "kind": "foreach", "items": "input.leads", "concurrency": 25,
     "on_item_failure": "collect",
     "do": {"kind": "notify",
            "input": {"channel": "sms", "to": "{{ item.phone }}",
                      "body": "{{ format('Hi {}, the F-150 is now $57500', item.name) }}"}}},
    {"id": "report", "kind": "compute", "after": ["campaign"],
     "output": {"sent": "{{ length(filter(steps.campaign.output.items, o, o != null)) }}"}}
  ]
})";
constexpr std::string_view fanout_child_workflow = R"({
  "workflow": "crash-campaign", "version": 1,
  "steps": [
    {"id": "campaign", "kind": "foreach", "items": "input.leads", "concurrency": 25,
     "on_item_failure": "collect",
     "do": {"kind": "workflow", "workflow": "crash-tell",
            "input": {"phone": "{{ item.phone }}", "name": "{{ item.name }}"}}},
    {"id": "report", "kind": "compute", "after": ["campaign"],
     "output": {"sent": "{{ length(filter(steps.campaign.output.items, o, o != null)) }}"}}
  ]
})";
constexpr std::string_view fanout_child = R"({
  "workflow": "crash-tell", "version": 1,
  "steps": [
    {"id": "send", "kind": "notify",
     "input": {"channel": "sms", "to": "{{ input.phone }}",
               "body": "{{ format('Hi {}, the F-150 is now $57500', input.name) }}"}},
    {"id": "to", "kind": "compute", "after": ["send"], "output": {"p": "{{ input.phone }}"}}
  ]
})";

void sigkill_across_a_foreach(uint32_t items, bool child_per_item) {
  const uint64_t seed = env_or("AUTERITY_TEST_SEED", std::random_device{}());
  fmt::print("crash_test foreach: seed {} (re-run with AUTERITY_TEST_SEED={})\n", seed, seed);
  SCOPED_TRACE(fmt::format("seed {}", seed));
  std::mt19937_64 rng(seed);
  const data_dir dir(seed + 1);
  const std::string tenant = pick_tenants().front();
  {
    system_clock clk;
    node_options o = options_for(dir.path());
    o.fsync = false;  // closed cleanly before anyone reads it
    auto n = node::open(o, clk);
    ASSERT_TRUE(n.has_value()) << n.error().message;
    json leads = json::array();
    for (uint32_t i = 0; i < items; ++i) {
      leads.push_back({{"name", fmt::format("L{}", i)}, {"phone", fmt::format("+1555{:07}", i)}});
    }
    const int64_t now = clk.now_ms();
    if (child_per_item) {
      ASSERT_TRUE((*n)->submit(tenant, client::publish_definition({tenant, "", "publish-tell", now},
                                                                  fanout_child))
                      .has_value());
    }
    ASSERT_TRUE(
        (*n)->submit(tenant, client::publish_definition(
                                 {tenant, "", "publish-campaign", now},
                                 child_per_item ? fanout_child_workflow : fanout_notify_workflow))
            .has_value());
    ASSERT_TRUE((*n)->submit(tenant, client::start_execution(
                                         {tenant, "campaign-1", "start-c1", now}, "crash-campaign",
                                         0, json{{"leads", leads}}.dump()))
                    .has_value());
  }
  int in_flight = 0;
  for (int r = 0; r < 6; ++r) {
    round_outcome o;
    o.trigger = kill_trigger::random(rng);
    if (r == 0) {
      // The first kill lands for sure while items are out: once ~20 item lines are written.
      o.trigger.kind = kill_trigger::outbox_growth;
      o.trigger.after_ms = kill_growth_deadline_ms;
      o.trigger.growth_bytes = 20 * 200;
    }
    crash_round(dir.path(), r, items, o);
    in_flight += o.in_flight;
    fmt::print("  round {}: {} at {:4} ms, {:4}/{} notifications; kill {}\n", r,
               o.killed ? "killed  " : "finished", o.ran_ms, o.notifications, items,
               o.trigger.describe());
  }
  int64_t final_ms = 0;
  ASSERT_NO_FATAL_FAILURE(final_run(dir.path(), final_ms));
  EXPECT_GE(in_flight, 1) << "no kill landed while items were out";

  system_clock clk;
  auto n = node::open(options_for(dir.path()), clk);
  ASSERT_TRUE(n.has_value()) << n.error().message;
  ASSERT_TRUE((*n)->recover().has_value());
  auto e = (*n)->execution(tenant, "campaign-1");
  ASSERT_TRUE(e.has_value());
  ASSERT_EQ(e->status, exec_status::succeeded) << e->result;
  const json expected_result = {{"report", {{"sent", items}}}};
  EXPECT_EQ(json::parse(e->result), expected_result);
  const json out = json::parse(e->steps[0].output_json);
  ASSERT_EQ(out["items"].size(), items);
  for (uint32_t i = 0; i < items; ++i) {
    const json& to = child_per_item ? out["items"][i]["to"]["p"] : out["items"][i]["to"];
    ASSERT_EQ(to, fmt::format("+1555{:07}", i)) << "item " << i << " in order";
  }
  census c;
  problems misplaced("undecodable records, work left over or records out of place");
  for (uint32_t p = 0; p < partitions; ++p) {
    ASSERT_NO_FATAL_FAILURE(census_executions((*n)->get_log(), p, c, misplaced));
    ASSERT_NO_FATAL_FAILURE(census_commands((*n)->get_log(), p, c, misplaced));
    check_nothing_left(**n, p, misplaced);
  }
  EXPECT_EQ(misplaced.count(), 0u) << misplaced;
  EXPECT_TRUE(c.rejections.empty()) << c.rejections.front();
  EXPECT_EQ(c.command_ids.size(), items) << "one command per item";
  problems dup("command ids emitted more than once");
  for (const auto& [id, count] : c.command_ids) {
    if (count != 1) dup.add(fmt::format("{} emitted {} times", id, count));
  }
  EXPECT_EQ(dup.count(), 0u) << dup;
  check_acks(c);
  if (child_per_item) {
    // One child per item, each started once and ended once (its attempt 1: nothing failed).
    problems children("children not started and ended exactly once");
    for (uint32_t i = 0; i < items; ++i) {
      const std::string child = fmt::format("campaign-1/campaign:{}/1", i);
      auto ce = (*n)->execution(tenant, child);
      if (!ce || ce->status != exec_status::succeeded) {
        children.add(fmt::format("{}: {}", child, ce ? exec_status_name(ce->status) : "missing"));
      }
    }
    EXPECT_EQ(children.count(), 0u) << children;
  }
  // The outbox: one line per item, none twice.
  const std::string text = read_whole(dir.path() / "outbox" / "notifications.jsonl");
  std::map<std::string, uint32_t> sent;
  for (size_t pos = 0; pos < text.size();) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    const json j = json::parse(std::string_view(text).substr(pos, end - pos), nullptr, false);
    pos = end + 1;
    sent[j.is_object() ? j.value("id", "?") : "not JSON"]++;
  }
  problems twice("item notifications written more than once or never");
  for (uint32_t i = 0; i < items; ++i) {
    const std::string id = child_per_item ? fmt::format("campaign-1/campaign:{}/1/send/1", i)
                                          : fmt::format("campaign-1/campaign[{}]/1", i);
    if (sent[id] != 1) twice.add(fmt::format("{} written {} times", id, sent[id]));
  }
  EXPECT_EQ(twice.count(), 0u) << twice;
  EXPECT_EQ(sent.size(), items) << "distinct notifications";
  check_chains_and_replay(**n, dir.path(), c);
  fmt::print("crash_test foreach: seed {}: {} events, {} commands, {} acks; final run {} ms\n",
             seed, c.events, c.commands, c.acks, final_ms);
}

TEST(crash_test, sigkill_across_a_foreach_of_500_notify_items) {
  sigkill_across_a_foreach(500, /*child_per_item=*/false);
}

TEST(crash_test, sigkill_across_a_foreach_of_1000_child_workflows) {
  sigkill_across_a_foreach(limits::foreach_items_max, /*child_per_item=*/true);
}

}  // namespace
}  // namespace auterity
