// The gateway's read replica (api/replica.h) on the embedded log, with the golden history
// (replay/tests/data): a restart resumes each partition from the replica's own checkpoint and
// reads only the records appended since; a checkpoint that is not this log's (another identity,
// past the log's end, its last record not in the log, a store that does not open) is not
// resumed but rebuilt from offset 0. Either way the state ends equal, key for key, to a replica
// rebuilt from offset 0 on the same log. A replica killed (SIGKILL) at each point of its
// checkpoint write, and at random moments while it follows a growing log, restarts resumed or
// rebuilt and ends equal to a rebuild too.

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>

#include "api/replica.h"
#include "engine/embedded_log.h"
#include "engine/record.h"
#include "replay/state_replay.h"
#include "replay/tests/golden.h"
#include "tests/run_command.h"

extern char** environ;

namespace auterity {
namespace {

using testing::logged_record;

constexpr const char* identity = "embedded log test";

struct history_parts {
  std::vector<logged_record> first, rest;
  uint64_t first_count(uint32_t p) const {
    uint64_t n = 0;
    for (const logged_record& r : first) n += r.partition == p;
    return n;
  }
};

// The golden history's executions records; `first` holds each partition's first half.
history_parts split_golden() {
  const testing::history_file h = testing::load_golden();
  std::map<uint32_t, uint64_t> total, seen;
  for (const logged_record& r : h.records) total[r.partition] += r.s == stream::executions;
  history_parts out;
  for (const logged_record& r : h.records) {
    if (r.s != stream::executions) continue;
    (seen[r.partition]++ < total[r.partition] / 2 ? out.first : out.rest).push_back(r);
  }
  return out;
}

// Appends `records` to the embedded log in `dir`/log (created if need be).
void append(const std::string& dir, const std::vector<logged_record>& records) {
  auto l = testing::write_log(dir, 2, records);
  ASSERT_TRUE(l.has_value()) << l.error().message;
}

std::unique_ptr<log_replica> start_caught_up(const std::string& log_dir,
                                             const std::string& replica_dir,
                                             const std::string& id = identity) {
  embedded_log_options o;
  o.partitions = 0;
  o.read_only = true;  // beside the other replicas of the same log
  auto l = open_embedded_log(log_dir + "/log", o);
  EXPECT_TRUE(l.has_value()) << l.error().message;
  if (!l) return nullptr;
  auto r = log_replica::start(std::move(*l), replica_dir, id);
  EXPECT_TRUE(r.has_value()) << r.error().message;
  if (!r) return nullptr;
  for (int i = 0; i < 1000 && !(*r)->caught_up(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_TRUE((*r)->caught_up()) << (*r)->last_error();
  return std::move(*r);
}

// Every key of `a`'s partitions equals `b`'s (the checkpoint's meta included: same log, same
// last record).
void expect_same_state(log_replica& a, log_replica& b) {
  for (uint32_t p = 0; p < 2; ++p) {
    bool compared = false;
    a.with_store(p, [&](const state_store& sa) {
      b.with_store(p, [&](const state_store& sb) {
        auto c = compare_states(sa, sb);
        ASSERT_TRUE(c.has_value()) << c.error().message;
        EXPECT_GT(c->keys_live, 0u);
        EXPECT_EQ(c->differences, 0u)
            << "partition " << p << ": " << (c->diffs.empty() ? "" : c->diffs[0].text);
        EXPECT_EQ(sa.checkpoint(), sb.checkpoint());
        compared = true;
      });
    });
    EXPECT_TRUE(compared);
  }
}

void expect_all(const log_replica& r, replica_start how) {
  ASSERT_EQ(r.starts().size(), 2u);
  for (const replica_partition_start& s : r.starts()) {
    EXPECT_EQ(replica_start_name(s.how), replica_start_name(how)) << s.detail;
    if (how != replica_start::resumed) {
      EXPECT_EQ(s.from, 0u);
      EXPECT_FALSE(s.detail.empty());
    }
  }
}

TEST(replica, a_restart_resumes_from_the_checkpoint_and_reads_only_the_new_records) {
  testing::dir_guard dir{testing::scratch_temp_dir("replica-resume")};
  const history_parts h = split_golden();
  ASSERT_FALSE(h.first.empty());
  ASSERT_FALSE(h.rest.empty());
  append(dir.path + "/a", h.first);
  {
    auto r = start_caught_up(dir.path + "/a", dir.path + "/replica");
    ASSERT_TRUE(r);
    expect_all(*r, replica_start::missing);
    EXPECT_EQ(r->applied(), h.first.size());
    // A clean stop leaves no write-ahead log for the next open to replay: every store's state
    // is in its table files.
    auto stopped = r->stop();
    ASSERT_TRUE(stopped.has_value()) << stopped.error().message;
    for (const char* p : {"p000", "p001"}) {
      size_t tables = 0;
      for (const auto& f : std::filesystem::directory_iterator(dir.path + "/replica/" + p)) {
        if (f.path().extension() == ".log") {
          EXPECT_EQ(f.file_size(), 0u) << f.path() << ": a write-ahead log left to replay";
        }
        tables += f.path().extension() == ".sst";
      }
      EXPECT_GT(tables, 0u) << p;
    }
  }
  append(dir.path + "/a", h.rest);
  auto resumed = start_caught_up(dir.path + "/a", dir.path + "/replica");
  ASSERT_TRUE(resumed);
  expect_all(*resumed, replica_start::resumed);
  for (uint32_t p = 0; p < 2; ++p) EXPECT_EQ(resumed->starts()[p].from, h.first_count(p));
  EXPECT_EQ(resumed->applied(), h.rest.size());  // only what came after the checkpoint
  // The same state as a replica rebuilt from offset 0 of the whole history.
  auto rebuilt = start_caught_up(dir.path + "/a", dir.path + "/rebuilt");
  ASSERT_TRUE(rebuilt);
  expect_all(*rebuilt, replica_start::missing);
  expect_same_state(*resumed, *rebuilt);
}

// A record the appliers would refuse (a step its definition does not have) for an execution
// that runs across the restart: the replica skips it, and skips that execution's later records
// after the restart too, as a rebuild from offset 0 does.
TEST(replica, an_execution_with_a_skipped_record_stays_skipped_across_a_restart) {
  testing::dir_guard dir{testing::scratch_temp_dir("replica-skipped")};
  history_parts h = split_golden();
  const fbs::Envelope* victim = nullptr;
  const logged_record* victim_record = nullptr;
  for (const logged_record& later : h.rest) {
    const fbs::Envelope* e = decode_envelope(later.value);
    if (!e || sv(e->execution_id()).empty()) continue;
    for (const logged_record& earlier : h.first) {
      const fbs::Envelope* f = decode_envelope(earlier.value);
      if (f && earlier.partition == later.partition && sv(f->tenant_id()) == sv(e->tenant_id()) &&
          sv(f->execution_id()) == sv(e->execution_id())) {
        victim = f;
        victim_record = &earlier;
      }
    }
    if (victim) break;
  }
  ASSERT_NE(victim, nullptr) << "no execution runs across the split";
  flatbuffers::FlatBufferBuilder fbb;
  auto payload =
      fbs::CreateStepSucceeded(fbb, fbb.CreateString("no-such-step"), 1, fbb.CreateString("{}"));
  envelope_header eh;
  eh.tenant_id = sv(victim->tenant_id());
  eh.execution_id = sv(victim->execution_id());
  eh.record_id = "forged";
  eh.causation_id = "forged";
  eh.timestamp_ms = victim->timestamp_ms();
  const logged_record forged{
      stream::executions, victim_record->partition, 0, victim_record->key,
      finish_envelope(fbb, eh, fbs::Payload::StepSucceeded, payload.Union())};
  h.first.push_back(forged);
  append(dir.path + "/a", h.first);
  {
    auto r = start_caught_up(dir.path + "/a", dir.path + "/replica");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->skipped(), 1u);
  }
  append(dir.path + "/a", h.rest);
  auto resumed = start_caught_up(dir.path + "/a", dir.path + "/replica");
  ASSERT_TRUE(resumed);
  expect_all(*resumed, replica_start::resumed);
  EXPECT_GT(resumed->skipped(), 0u);  // the execution's later records
  auto rebuilt = start_caught_up(dir.path + "/a", dir.path + "/rebuilt");
  ASSERT_TRUE(rebuilt);
  expect_same_state(*resumed, *rebuilt);
}

TEST(replica, a_checkpoint_that_is_not_this_logs_is_rebuilt) {
  testing::dir_guard dir{testing::scratch_temp_dir("replica-refuse")};
  const history_parts h = split_golden();
  std::vector<logged_record> all = h.first;
  all.insert(all.end(), h.rest.begin(), h.rest.end());
  append(dir.path + "/a", all);
  start_caught_up(dir.path + "/a", dir.path + "/replica");  // the checkpoint: all of log a
  auto with_checkpoint = [&](const std::string& name) {
    const std::string to = dir.path + "/" + name;
    std::filesystem::copy(dir.path + "/replica", to, std::filesystem::copy_options::recursive);
    return to;
  };
  auto reference = start_caught_up(dir.path + "/a", dir.path + "/reference");
  ASSERT_TRUE(reference);

  // Another log's checkpoint (another topic prefix): rebuilt, then the same state.
  {
    auto r = start_caught_up(dir.path + "/a", with_checkpoint("other"), "another log");
    ASSERT_TRUE(r);
    expect_all(*r, replica_start::another_log);
    EXPECT_EQ(r->applied(), all.size());
  }
  // A log shorter than the checkpoint (topics recreated): rebuilt from what the log holds.
  append(dir.path + "/short", h.first);
  {
    auto r = start_caught_up(dir.path + "/short", with_checkpoint("ahead"));
    ASSERT_TRUE(r);
    expect_all(*r, replica_start::ahead_of_log);
    EXPECT_EQ(r->applied(), h.first.size());
  }
  // A log as long, whose record at the checkpoint's last offset is another one (recreated and
  // written past the checkpoint): each partition's first record twice, then the history.
  std::vector<logged_record> shifted;
  for (uint32_t p = 0; p < 2; ++p) {
    for (const logged_record& r : all) {
      if (r.partition == p) {
        shifted.push_back(r);
        break;
      }
    }
  }
  shifted.insert(shifted.end(), all.begin(), all.end());
  append(dir.path + "/shifted", shifted);
  {
    auto r = start_caught_up(dir.path + "/shifted", with_checkpoint("shifted-replica"));
    ASSERT_TRUE(r);
    expect_all(*r, replica_start::not_in_log);
    EXPECT_EQ(r->applied(), shifted.size());
  }
  // A store that does not open (its CURRENT file overwritten).
  {
    const std::string broken = with_checkpoint("broken");
    for (const char* p : {"p000", "p001"}) {
      std::ofstream(fmt::format("{}/{}/CURRENT", broken, p), std::ios::trunc) << "garbage\n";
    }
    auto r = start_caught_up(dir.path + "/a", broken);
    ASSERT_TRUE(r);
    expect_all(*r, replica_start::unreadable);
    expect_same_state(*r, *reference);
  }
  // And the checkpoint itself, untouched, still resumes.
  auto r = start_caught_up(dir.path + "/a", dir.path + "/replica");
  ASSERT_TRUE(r);
  expect_all(*r, replica_start::resumed);
  EXPECT_EQ(r->applied(), 0u);
  expect_same_state(*r, *reference);
}

// ------------------------------------------------------------------------------ kill -9

// The child of the kill tests, run by spawn_child() in a process of its own (this binary
// again): a replica of the log in $AUTERITY_REPLICA_CHILD ("log dir|replica dir|mode"), caught
// up, then stopped (mode `stop`: its memtables flushed) or left following the log (`follow`)
// until it is killed. AUTERITY_FAULT, if set, kills it at a fault point on the way.
TEST(replica_child, DISABLED_run) {
  const char* spec = std::getenv("AUTERITY_REPLICA_CHILD");
  ASSERT_NE(spec, nullptr) << "run by the replica.*killed* tests";
  std::vector<std::string> parts;
  std::stringstream in(spec);
  for (std::string item; std::getline(in, item, '|');) parts.push_back(item);
  ASSERT_EQ(parts.size(), 3u) << spec;
  auto r = start_caught_up(parts[0], parts[1]);
  ASSERT_TRUE(r);
  if (parts[2] == "follow") {
    for (;;) std::this_thread::sleep_for(std::chrono::seconds(1));
  }
  auto stopped = r->stop();
  EXPECT_TRUE(stopped.has_value()) << stopped.error().message;
}

// Starts replica_child.DISABLED_run on `log_dir` into `replica_dir`, with AUTERITY_FAULT set to
// `fault` (none if empty); its output goes to `out`.
pid_t spawn_child(const std::string& log_dir, const std::string& replica_dir,
                  const std::string& mode, const std::string& fault, const std::string& out) {
  std::string self = std::filesystem::read_symlink("/proc/self/exe").string();
  std::vector<std::string> args = {self, "--gtest_filter=replica_child.DISABLED_run",
                                   "--gtest_also_run_disabled_tests"};
  std::vector<std::string> env;
  for (char** e = environ; *e; ++e) {
    std::string_view v(*e);
    if (!v.starts_with("AUTERITY_FAULT=") && !v.starts_with("AUTERITY_REPLICA_CHILD=")) {
      env.emplace_back(v);
    }
  }
  env.push_back(fmt::format("AUTERITY_REPLICA_CHILD={}|{}|{}", log_dir, replica_dir, mode));
  if (!fault.empty()) env.push_back("AUTERITY_FAULT=" + fault);
  std::vector<char*> envp;
  for (auto& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  return testing::spawn_logged(std::move(args), out, envp.data());
}

std::string file_text(const std::string& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// A replica killed at each fault point of its checkpoint write (the first half of the history
// in the log), restarted on the whole history: each partition resumes from the last write that
// returned before the kill (none: from offset 0), never from a state the write did not hold,
// applies only what follows it, and ends key for key equal to a rebuild.
TEST(replica, a_replica_killed_at_each_point_of_its_checkpoint_write_resumes_consistent) {
  testing::dir_guard dir{testing::scratch_temp_dir("replica-kill")};
  const history_parts h = split_golden();
  append(dir.path + "/a", h.first);
  append(dir.path + "/b", h.first);
  append(dir.path + "/b", h.rest);
  const uint64_t total = h.first.size() + h.rest.size();
  auto rebuilt = start_caught_up(dir.path + "/b", dir.path + "/rebuilt");
  ASSERT_TRUE(rebuilt);
  // Each partition's first half is one batch (within replica_batch_records_max), so the n-th
  // hit of a point is partition n-1's. `written`: how many partitions' writes returned before
  // the kill.
  ASSERT_LE(h.first_count(0), replica_batch_records_max);
  ASSERT_LE(h.first_count(1), replica_batch_records_max);
  struct kill_case {
    std::string fault;
    uint32_t written;
  };
  for (const kill_case& c :
       {kill_case{"replica.applied:kill@1", 0}, kill_case{"replica.applied:kill@2", 1},
        kill_case{"replica.written:kill@1", 1}, kill_case{"replica.written:kill@2", 2},
        kill_case{"replica.flushed:kill@1", 2}}) {
    SCOPED_TRACE(c.fault);
    const std::string name =
        c.fault.substr(0, c.fault.find(':')) + c.fault.substr(c.fault.find('@'));
    const std::string replica = dir.path + "/" + name, out = replica + ".out";
    const pid_t child = spawn_child(dir.path + "/a", replica, "stop", c.fault, out);
    ASSERT_GT(child, 0);
    int status = 0;
    ASSERT_EQ(::waitpid(child, &status, 0), child);
    ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << file_text(out);
    const std::string point = c.fault.substr(0, c.fault.find(':'));
    ASSERT_NE(file_text(out).find(fmt::format("fault point {} reached", point)), std::string::npos)
        << file_text(out);
    // The restart, on the log with the second half appended (`b`: the same records as `a`,
    // then the rest).
    auto r = start_caught_up(dir.path + "/b", replica);
    ASSERT_TRUE(r);
    uint64_t from = 0;
    for (uint32_t p = 0; p < 2; ++p) {
      const replica_partition_start& s = r->starts()[p];
      EXPECT_EQ(s.from, p < c.written ? h.first_count(p) : 0) << "partition " << p;
      EXPECT_TRUE(s.how == replica_start::resumed || s.how == replica_start::missing)
          << "partition " << p << ": " << replica_start_name(s.how) << " " << s.detail;
      from += s.from;
    }
    EXPECT_EQ(r->applied(), total - from);
    expect_same_state(*r, *rebuilt);
  }
}

// kill -9 at random moments (opening, catching up, writing, flushing at stop, idle) of a
// replica restarted after each of eight appends to its log; then started once more: every
// partition resumed (or, if no write ever returned, rebuilt), ending equal to a rebuild.
TEST(replica, a_replica_killed_repeatedly_while_its_log_grows_ends_equal_to_a_rebuild) {
  testing::dir_guard dir{testing::scratch_temp_dir("replica-kills")};
  const history_parts h = split_golden();
  std::vector<logged_record> all = h.first;
  all.insert(all.end(), h.rest.begin(), h.rest.end());
  const unsigned seed = std::random_device{}();
  SCOPED_TRACE(fmt::format("seed {}", seed));
  std::mt19937 rng(seed);
  constexpr size_t rounds = 8;
  const std::string replica = dir.path + "/replica";
  for (size_t i = 0; i < rounds; ++i) {
    append(dir.path + "/a",
           std::vector<logged_record>(all.begin() + all.size() * i / rounds,
                                      all.begin() + all.size() * (i + 1) / rounds));
    const std::string out = fmt::format("{}/child-{}.out", dir.path, i);
    const pid_t child = spawn_child(dir.path + "/a", replica, i % 2 ? "stop" : "follow", "", out);
    ASSERT_GT(child, 0);
    std::this_thread::sleep_for(std::chrono::milliseconds(rng() % 300));
    ::kill(child, SIGKILL);
    int status = 0;
    ASSERT_EQ(::waitpid(child, &status, 0), child);
    // A `stop` child may have finished before the kill; anything else is a failure in it.
    EXPECT_TRUE((WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) ||
                (WIFEXITED(status) && WEXITSTATUS(status) == 0))
        << file_text(out);
  }
  auto r = start_caught_up(dir.path + "/a", replica);
  ASSERT_TRUE(r);
  for (uint32_t p = 0; p < 2; ++p) {
    const replica_partition_start& s = r->starts()[p];
    EXPECT_TRUE(s.how == replica_start::resumed || s.how == replica_start::missing)
        << "partition " << p << ": " << replica_start_name(s.how) << " " << s.detail;
  }
  auto rebuilt = start_caught_up(dir.path + "/a", dir.path + "/rebuilt");
  ASSERT_TRUE(rebuilt);
  expect_same_state(*r, *rebuilt);
}

}  // namespace
}  // namespace auterity
