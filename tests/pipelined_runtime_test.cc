// Pipelining a partition's batches (docs/pipelined-transactions.md, step 2) without a broker: a
// partition runtime with the orchestrator on the embedded log, behind a wrapper whose commits are
// decided only when the runtime waits for them (as a Kafka committer thread decides them later),
// so the runtime decides batch n+1 before batch n is committed. What the design promises, checked
// from the log and the store, not from the runtime's counters:
//   - the store never holds an uncommitted decision: whenever a commit is about to be decided,
//     the store equals a replay of the log committed so far;
//   - a partition's next commit is submitted only after the previous one committed;
//   - every execution runs to its end, each command once, and the final state equals a replay;
//   - a failed commit drops the batch decided ahead (never submitted); a new runtime recovering
//     from the store and the log finishes the work exactly once.

#include <filesystem>
#include <map>
#include <set>

#include <fmt/core.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "connectors/connectors.h"
#include "engine/embedded_log.h"
#include "engine/partition_runtime.h"
#include "engine/record.h"
#include "engine/state_store.h"
#include "engine/worker_runtime.h"
#include "processors/client.h"
#include "processors/orchestrator.h"
#include "replay/verify.h"

namespace auterity {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

// Commits decided when waited for. Everything else goes straight to the embedded log.
class deferred_log final : public log {
 public:
  explicit deferred_log(log& inner) : _inner(inner) {}

  // Called with each commit just before it is decided (before_commit) and the 1-based number
  // of the commit to refuse instead of deciding (0: none).
  std::function<void(uint32_t partition)> before_commit;
  int refuse_commit = 0;

  int submitted = 0;
  int decided_ahead = 0;  // reads of a partition's inputs while its commit was not decided
  int submitted_while_pending = 0;
  int submitted_after_failure = 0;

  uint32_t partition_count() const override { return _inner.partition_count(); }
  placement_header placement() const override { return _inner.placement(); }
  bool background_commits() const override { return true; }
  result<std::vector<uint64_t>> commit(uint32_t p, const commit_batch& b) override {
    return submit(p, b).wait();
  }
  commit_ticket submit(uint32_t p, const commit_batch& b) override {
    ++submitted;
    if (_pending.contains(p)) ++submitted_while_pending;
    if (_failed) ++submitted_after_failure;
    _pending.insert(p);
    const int number = submitted;
    return commit_ticket::pending([this, p, &b, number]() -> commit_ticket::outcome {
      _pending.erase(p);
      if (number == refuse_commit) {
        _failed = true;
        return fail(errc::io, "refused by the test");
      }
      if (before_commit) before_commit(p);
      return _inner.commit(p, b);
    });
  }
  result<size_t> read(stream s, uint32_t p, uint64_t from, size_t max_records, size_t max_bytes,
                      std::vector<record>& out) override {
    if ((s == stream::ingress || s == stream::acks) && _pending.contains(p)) ++decided_ahead;
    return _inner.read(s, p, from, max_records, max_bytes, out);
  }
  result<uint64_t> end_offset(stream s, uint32_t p) override { return _inner.end_offset(s, p); }
  result<uint64_t> position(std::string_view g, stream s, uint32_t p) override {
    return _inner.position(g, s, p);
  }
  result<void> await_decided(stream s, uint32_t p, uint64_t end,
                             std::chrono::milliseconds t) override {
    return _inner.await_decided(s, p, end, t);
  }
  void wait(uint32_t p, uint64_t seen, std::chrono::milliseconds t) override {
    _inner.wait(p, seen, t);
  }
  uint64_t generation(uint32_t p) override { return _inner.generation(p); }
  void wait_any(uint64_t seen, std::chrono::milliseconds t) override { _inner.wait_any(seen, t); }
  uint64_t generation_any() override { return _inner.generation_any(); }

 private:
  log& _inner;
  std::set<uint32_t> _pending;
  bool _failed = false;
};

const std::string workflow = json{
    {"workflow", "three"},
    {"version", 1},
    {"steps", json::array({
                  {{"id", "a"}, {"kind", "task"}, {"action", "transform"}},
                  {{"id", "b"}, {"kind", "task"}, {"action", "transform"}, {"after", {"a"}}},
                  {{"id", "c"}, {"kind", "task"}, {"action", "transform"}},
              })}}.dump();
constexpr size_t commands_per_execution = 3;

class pipelined_runtime : public ::testing::Test {
 protected:
  void SetUp() override {
    dir = fmt::format("{}/auterity-pipelined-{}-{}", ::testing::TempDir(),
                      ::testing::UnitTest::GetInstance()->current_test_info()->name(), ::getpid());
    fs::remove_all(dir);
    embedded_log_options o;
    o.partitions = 1;
    o.fsync = false;
    auto l = open_embedded_log(dir + "/log", o);
    ASSERT_TRUE(l.has_value()) << l.error().message;
    inner = std::move(*l);
    deferred = std::make_unique<deferred_log>(*inner);
    auto w = worker_runtime::open(*inner, stream::commands_step, make_local_step_connector(), clk);
    ASSERT_TRUE(w.has_value()) << w.error().message;
    worker = std::move(*w);
  }
  void TearDown() override {
    runtime.reset();
    worker.reset();
    deferred.reset();
    inner.reset();
    if (!HasFailure()) fs::remove_all(dir);
  }

  void open_runtime() {
    auto store = state_store::open(dir + "/state");
    ASSERT_TRUE(store.has_value()) << store.error().message;
    partition_runtime_options o;
    o.pipeline = true;
    o.batch_records_max = 8;  // many batches, so many are decided ahead
    runtime = std::make_unique<partition_runtime>(
        *deferred, 0, std::move(*store), std::make_unique<orchestrator>(orchestrator_options{}),
        clk, o);
    auto r = runtime->recover();
    ASSERT_TRUE(r.has_value()) << r.error().message;
  }

  std::vector<std::string> submit(size_t executions) {
    std::vector<std::string> ids;
    EXPECT_TRUE(client::submit(
        *inner, "acme", client::publish_definition({"acme", "", "pub", clk.now_ms()}, workflow)));
    for (size_t i = 0; i < executions; ++i) {
      ids.push_back(fmt::format("x{}", i));
      EXPECT_TRUE(
          client::submit(*inner, "acme",
                         client::start_execution({"acme", ids.back(), ids.back(), clk.now_ms()},
                                                 "three", 0, "{}")));
    }
    return ids;
  }

  // Runs the runtime and the worker until neither has anything to do, or the runtime failed.
  void settle() {
    for (int round = 0; round < 10'000; ++round) {
      clk.advance(1);
      auto r = runtime->run_once();
      if (!r) return;
      auto w = worker->run_once();
      ASSERT_TRUE(w.has_value()) << w.error().message;
      if (!*r && *w == 0) return;
    }
    FAIL() << "the runtime did not settle";
  }

  // Every execution succeeded, each command once; state equal to a replay.
  void verify(const std::vector<std::string>& ids) {
    std::vector<record> recs;
    for (uint64_t from = 0;;) {
      auto n = inner->read(stream::commands_step, 0, from, 1024, 8 << 20, recs);
      ASSERT_TRUE(n.has_value());
      if (*n == 0) break;
      from = recs.back().offset + 1;
    }
    std::set<std::string> command_ids;
    std::map<std::string, size_t> per_execution;
    for (const record& r : recs) {
      const fbs::Envelope* e = decode_envelope(r.value);
      ASSERT_NE(e, nullptr);
      EXPECT_TRUE(command_ids.insert(std::string(sv(e->record_id()))).second)
          << "command twice: " << sv(e->record_id());
      per_execution[std::string(sv(e->execution_id()))]++;
    }
    recs.clear();
    for (uint64_t from = 0;;) {
      auto n = inner->read(stream::executions, 0, from, 1024, 8 << 20, recs);
      ASSERT_TRUE(n.has_value());
      if (*n == 0) break;
      from = recs.back().offset + 1;
    }
    std::set<std::string> event_ids, succeeded;
    for (const record& r : recs) {
      const fbs::Envelope* e = decode_envelope(r.value);
      ASSERT_NE(e, nullptr);
      if (e->kind() != fbs::RecordKind::Event) continue;
      EXPECT_TRUE(event_ids.insert(std::string(sv(e->record_id()))).second)
          << "event twice: " << sv(e->record_id());
      if (e->payload_type() == fbs::Payload::ExecutionSucceeded) {
        succeeded.insert(std::string(sv(e->execution_id())));
      }
    }
    for (const std::string& id : ids) {
      EXPECT_EQ(per_execution[id], commands_per_execution) << id;
      EXPECT_TRUE(succeeded.contains(id)) << id << " did not succeed";
    }
    auto diffs = compare_with_replay(*inner, 0, runtime->store(), dir + "/scratch");
    ASSERT_TRUE(diffs.has_value()) << diffs.error().message;
    EXPECT_TRUE(diffs->empty()) << diffs->front();
  }

  // Before each commit is decided: the store equals a replay of what is committed.
  void check_store_at_each_commit() {
    deferred->before_commit = [this](uint32_t p) {
      auto diffs = compare_with_replay(*inner, p, runtime->store(), dir + "/scratch-commit");
      ASSERT_TRUE(diffs.has_value()) << diffs.error().message;
      EXPECT_TRUE(diffs->empty()) << "the store holds what is not committed: " << diffs->front();
      ++checked;
    };
  }

  manual_clock clk{1'700'000'000'000};
  std::string dir;
  std::unique_ptr<log> inner;
  std::unique_ptr<deferred_log> deferred;
  std::unique_ptr<worker_runtime> worker;
  std::unique_ptr<partition_runtime> runtime;
  int checked = 0;
};

TEST_F(pipelined_runtime, decides_ahead_writes_only_committed_state_and_runs_every_execution_once) {
  const auto ids = submit(40);
  open_runtime();
  check_store_at_each_commit();
  settle();
  ASSERT_FALSE(runtime->failed()) << runtime->failure().message;
  EXPECT_GT(deferred->decided_ahead, 10) << "the runtime did not decide ahead of its commits";
  EXPECT_EQ(deferred->submitted_while_pending, 0)
      << "a commit was submitted before the previous one of its partition was decided";
  EXPECT_EQ(checked, deferred->submitted);
  verify(ids);
}

TEST_F(pipelined_runtime, a_failed_commit_drops_the_batch_decided_ahead_and_a_restore_finishes) {
  const auto ids = submit(40);
  open_runtime();
  deferred->refuse_commit = 6;
  settle();
  ASSERT_TRUE(runtime->failed()) << "the refused commit did not stop the runtime";
  EXPECT_EQ(deferred->submitted, 6) << "a batch was submitted after its predecessor failed";
  EXPECT_EQ(deferred->submitted_after_failure, 0);
  // The store holds only committed batches: it equals a replay of the log.
  auto diffs = compare_with_replay(*inner, 0, runtime->store(), dir + "/scratch-failed");
  ASSERT_TRUE(diffs.has_value()) << diffs.error().message;
  EXPECT_TRUE(diffs->empty()) << diffs->front();
  // The owner replaces the runtime: recover from the store and the log, finish the work.
  deferred->refuse_commit = 0;
  runtime.reset();
  deferred = std::make_unique<deferred_log>(*inner);
  open_runtime();
  settle();
  ASSERT_FALSE(runtime->failed()) << runtime->failure().message;
  verify(ids);
}

}  // namespace
}  // namespace auterity
