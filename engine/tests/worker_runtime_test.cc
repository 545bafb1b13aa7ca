// The worker runtime on the embedded log: commands of a batch run at once (never more than
// `concurrency`), acks are committed in command order with the position, a throwing connector
// and a missed deadline become retryable acks, and bad options are refused with a reason.

#include "engine/worker_runtime.h"

#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <stdexcept>
#include <thread>

#include <fmt/core.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "connectors/connectors.h"
#include "engine/embedded_log.h"

namespace auterity {
namespace {

constexpr int64_t start_ms = 1'700'000'000'000;

std::string temp_dir(std::string_view name) {
  std::string tmpl = fmt::format("{}/auterity-{}-XXXXXX", ::testing::TempDir(), name);
  const char* made = ::mkdtemp(tmpl.data());
  EXPECT_NE(made, nullptr);
  return made ? std::string(made) : std::string();
}

struct command_spec {
  std::string execution;
  std::string action;
  std::string input = "{}";
  int64_t deadline_ms = 0;
};

std::string run_step(const command_spec& c) {
  flatbuffers::FlatBufferBuilder fbb;
  const std::string id = c.execution + "/s/1";
  auto payload = fbs::CreateRunStep(fbb, fbb.CreateString("s"), 1, fbb.CreateString(c.action),
                                    fbb.CreateString(c.input), fbb.CreateString(id), c.deadline_ms);
  envelope_header h;
  h.kind = fbs::RecordKind::Command;
  h.tenant_id = "acme";
  h.execution_id = c.execution;
  h.record_id = id;
  h.causation_id = c.execution + "#1";
  h.timestamp_ms = start_ms;
  return finish_envelope(fbb, h, fbs::Payload::RunStep, payload.Union());
}

std::string send_notification(const std::string& execution) {
  flatbuffers::FlatBufferBuilder fbb;
  const std::string id = execution + "/sms/1";
  auto payload = fbs::CreateSendNotification(
      fbb, fbb.CreateString("sms"), 1, fbb.CreateString("sms"), fbb.CreateString("+15550100"),
      fbb.CreateString(""), fbb.CreateString("hi"), fbb.CreateString(id), 0);
  envelope_header h;
  h.kind = fbs::RecordKind::Command;
  h.tenant_id = "acme";
  h.execution_id = execution;
  h.record_id = id;
  h.causation_id = execution + "#1";
  h.timestamp_ms = start_ms;
  return finish_envelope(fbb, h, fbs::Payload::SendNotification, payload.Union());
}

struct ack_view {
  std::string command_id;
  std::string record_id;
  fbs::AckStatus status;
  std::string output;
  std::string error;
  int64_t timestamp_ms;
};

class worker_runtime_test : public ::testing::Test {
 protected:
  void SetUp() override {
    dir = temp_dir("worker");
    embedded_log_options o;
    o.partitions = 1;
    o.fsync = false;
    auto opened = open_embedded_log(dir + "/log", o);
    ASSERT_TRUE(opened.has_value()) << opened.error().message;
    l = std::move(*opened);
  }
  void TearDown() override {
    l.reset();
    std::filesystem::remove_all(dir);
  }

  void append(stream s, const std::vector<std::string>& values) {
    commit_batch b;
    for (const auto& v : values) b.add(s, "acme", v);
    auto c = l->commit(0, b);
    ASSERT_TRUE(c.has_value()) << c.error().message;
  }

  std::vector<ack_view> acks() {
    std::vector<record> out;
    auto n = l->read(stream::acks, 0, 0, 10'000, 64 << 20, out);
    EXPECT_TRUE(n.has_value());
    std::vector<ack_view> v;
    for (const record& r : out) {
      const fbs::Envelope* e = decode_envelope(r.value);
      EXPECT_NE(e, nullptr);
      if (!e) continue;
      auto a = e->payload_as_StepAck();
      EXPECT_NE(a, nullptr);
      if (!a) continue;
      EXPECT_EQ(sv(e->causation_id()), sv(a->command_id()));
      v.push_back({std::string(sv(a->command_id())), std::string(sv(e->record_id())), a->status(),
                   std::string(sv(a->output_json())), std::string(sv(a->error())),
                   e->timestamp_ms()});
    }
    return v;
  }

  std::string dir;
  std::unique_ptr<log> l;
};

// Holds the first `gate` calls until `gate` of them are inside at once (or 10 s pass, so a
// runtime that runs fewer makes the test fail, not hang), and counts how many run at once.
class gate_connector final : public connector {
 public:
  explicit gate_connector(size_t gate) : _gate(gate) {}
  ack_result execute(const fbs::Envelope& command, const command_context&) override {
    size_t order;
    {
      std::unique_lock lock(_mu);
      order = _entered++;
      _max = std::max(_max, ++_inside);
      _cv.notify_all();
      if (order < _gate) {
        _cv.wait_for(lock, std::chrono::seconds(10), [&] { return _entered >= _gate; });
      }
    }
    // The first ones finish last, so completion order differs from command order.
    if (order < _gate) std::this_thread::sleep_for(std::chrono::milliseconds(5 * (_gate - order)));
    {
      std::lock_guard lock(_mu);
      --_inside;
    }
    ack_result r;
    r.output_json = fmt::format(R"({{"execution":"{}"}})", sv(command.execution_id()));
    return r;
  }
  size_t max_inside() {
    std::lock_guard lock(_mu);
    return _max;
  }

 private:
  const size_t _gate;
  std::mutex _mu;
  std::condition_variable _cv;
  size_t _entered = 0, _inside = 0, _max = 0;
};

TEST_F(worker_runtime_test, runs_up_to_concurrency_commands_at_once_and_acks_in_command_order) {
  constexpr size_t concurrency = 4;
  std::vector<std::string> commands;
  for (int i = 0; i < 16; ++i) commands.push_back(run_step({fmt::format("x{:02}", i), "any"}));
  append(stream::commands_step, commands);
  auto gate = std::make_unique<gate_connector>(concurrency);
  gate_connector* g = gate.get();
  system_clock clk;
  worker_options o;
  o.concurrency = concurrency;
  auto w = worker_runtime::open(*l, stream::commands_step, std::move(gate), clk, o);
  ASSERT_TRUE(w.has_value()) << w.error().message;
  auto n = (*w)->run_once();
  ASSERT_TRUE(n.has_value()) << n.error().message;
  EXPECT_EQ(*n, 16u);
  EXPECT_EQ(g->max_inside(), concurrency) << "commands did not overlap, or more ran than allowed";
  EXPECT_EQ((*w)->probe().in_flight_max.load(), concurrency);
  EXPECT_EQ((*w)->probe().in_flight.load(), 0u);
  const auto got = acks();
  ASSERT_EQ(got.size(), 16u);
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].command_id, fmt::format("x{:02}/s/1", i)) << "ack " << i << " out of order";
    EXPECT_EQ(got[i].record_id, "ack/" + got[i].command_id);
    EXPECT_EQ(got[i].status, fbs::AckStatus::Success);
    EXPECT_EQ(got[i].output, fmt::format(R"({{"execution":"x{:02}"}})", i));
  }
  // The position moved with the acks: nothing is run again.
  EXPECT_EQ(*l->position((*w)->group(), stream::commands_step, 0), 16u);
  auto again = (*w)->run_once();
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(*again, 0u);
  EXPECT_EQ(acks().size(), 16u);
}

TEST_F(worker_runtime_test, concurrency_one_runs_commands_one_after_the_other) {
  std::vector<std::string> commands;
  for (int i = 0; i < 6; ++i) commands.push_back(run_step({fmt::format("x{}", i), "any"}));
  append(stream::commands_step, commands);
  auto gate = std::make_unique<gate_connector>(0);  // nobody waits
  gate_connector* g = gate.get();
  system_clock clk;
  worker_options o;
  o.concurrency = 1;
  auto w = worker_runtime::open(*l, stream::commands_step, std::move(gate), clk, o);
  ASSERT_TRUE(w.has_value()) << w.error().message;
  ASSERT_TRUE((*w)->run_once().has_value());
  EXPECT_EQ(g->max_inside(), 1u);
  EXPECT_EQ(acks().size(), 6u);
}

class throwing_connector final : public connector {
 public:
  ack_result execute(const fbs::Envelope& command, const command_context&) override {
    if (sv(command.execution_id()) == "boom") throw std::runtime_error("socket closed by peer");
    if (sv(command.execution_id()) == "odd") throw 42;
    return {};
  }
};

TEST_F(worker_runtime_test, a_throwing_connector_becomes_a_retryable_ack_and_the_worker_goes_on) {
  append(stream::commands_step,
         {run_step({"boom", "any"}), run_step({"odd", "any"}), run_step({"fine", "any"})});
  system_clock clk;
  worker_runtime w(*l, stream::commands_step, std::make_unique<throwing_connector>(), clk);
  auto n = w.run_once();
  ASSERT_TRUE(n.has_value()) << n.error().message;
  const auto got = acks();
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got[0].status, fbs::AckStatus::RetryableFailure);
  EXPECT_EQ(got[0].error, "connector failed: socket closed by peer");
  EXPECT_EQ(got[1].status, fbs::AckStatus::RetryableFailure);
  EXPECT_NE(got[1].error.find("not a std::exception"), std::string::npos) << got[1].error;
  EXPECT_EQ(got[2].status, fbs::AckStatus::Success);
  EXPECT_EQ(w.probe().connector_exceptions.load(), 2u);
}

// Actions: "ok"; "slow" advances the manual clock by input ms, then succeeds; "slow_fail" does
// the same and fails permanently.
class clock_connector final : public connector {
 public:
  explicit clock_connector(manual_clock& clk) : _clk(clk) {}
  ack_result execute(const fbs::Envelope& command, const command_context&) override {
    auto cmd = command.payload_as_RunStep();
    {
      std::lock_guard lock(_mu);
      _called.insert(std::string(sv(command.execution_id())));
    }
    const std::string_view action = sv(cmd->action());
    if (action != "ok") _clk.advance(std::stoll(std::string(sv(cmd->input_json()))));
    ack_result r;
    if (action == "slow_fail") {
      r.status = fbs::AckStatus::PermanentFailure;
      r.error = "the CRM said no";
    }
    return r;
  }
  bool called(const std::string& execution) {
    std::lock_guard lock(_mu);
    return _called.contains(execution);
  }

 private:
  manual_clock& _clk;
  std::mutex _mu;
  std::set<std::string> _called;
};

TEST_F(worker_runtime_test, deadlines_turn_late_or_expired_commands_into_retryable_acks) {
  manual_clock clk(start_ms);
  append(stream::commands_step,
         {
             run_step({"expired", "ok", "{}", start_ms - 1}),
             run_step({"late_default", "slow", "600"}),  // command_deadline_ms 500 applies
             run_step({"in_time", "ok", "{}", start_ms + 10'000}),
             run_step({"late_failure", "slow_fail", "2000", start_ms + 1'000}),
         });
  auto conn = std::make_unique<clock_connector>(clk);
  clock_connector* c = conn.get();
  worker_options o;
  o.concurrency = 1;  // the connector moves the shared clock: keep the order fixed
  o.command_deadline_ms = 500;
  worker_runtime w(*l, stream::commands_step, std::move(conn), clk, o);
  ASSERT_TRUE(w.run_once().has_value());
  const auto got = acks();
  ASSERT_EQ(got.size(), 4u);
  EXPECT_EQ(got[0].status, fbs::AckStatus::RetryableFailure);
  EXPECT_EQ(got[0].error, "deadline passed before the worker started it (1 ms ago)");
  EXPECT_FALSE(c->called("expired")) << "an expired command reached the connector";
  EXPECT_EQ(got[1].status, fbs::AckStatus::RetryableFailure);
  EXPECT_EQ(got[1].error, "deadline exceeded after 600 ms");
  EXPECT_EQ(got[1].output, "");
  EXPECT_EQ(got[2].status, fbs::AckStatus::Success);
  // A failure keeps its own reason even when it also came late.
  EXPECT_EQ(got[3].status, fbs::AckStatus::PermanentFailure);
  EXPECT_EQ(got[3].error, "the CRM said no");
  EXPECT_EQ(got[3].timestamp_ms, start_ms + 2'600) << "an ack carries the time it was decided";
  EXPECT_EQ(w.probe().deadline_passed.load(), 1u);
  EXPECT_EQ(w.probe().deadline_exceeded.load(), 1u);
}

TEST_F(worker_runtime_test, out_of_range_options_are_refused_with_the_limit) {
  system_clock clk;
  for (size_t bad : {size_t{0}, worker_concurrency_max + 1}) {
    worker_options o;
    o.concurrency = bad;
    auto w = worker_runtime::open(*l, stream::commands_step, make_local_step_connector(), clk, o);
    ASSERT_FALSE(w.has_value()) << bad;
    EXPECT_EQ(w.error().code, errc::invalid);
    EXPECT_EQ(w.error().message,
              fmt::format("worker concurrency {} is out of range: 1..{} (worker_concurrency_max)",
                          bad, worker_concurrency_max));
  }
  worker_options most;
  most.concurrency = worker_concurrency_max;
  EXPECT_TRUE(check_worker_options(most).has_value());
  worker_options no_deadline;
  no_deadline.command_deadline_ms = 0;
  EXPECT_FALSE(check_worker_options(no_deadline).has_value());
}

TEST_F(worker_runtime_test, outbox_writes_a_redelivered_notification_once_under_concurrency) {
  std::vector<std::string> commands;
  for (int round = 0; round < 2; ++round) {
    for (int i = 0; i < 12; ++i) commands.push_back(send_notification(fmt::format("x{}", i)));
  }
  append(stream::commands_notify, commands);
  auto outbox = outbox_connector::open(dir + "/outbox");
  ASSERT_TRUE(outbox.has_value()) << outbox.error().message;
  const std::string path = (*outbox)->path();
  system_clock clk;
  worker_options o;
  o.concurrency = 8;
  worker_runtime w(*l, stream::commands_notify, std::move(*outbox), clk, o);
  ASSERT_TRUE(w.run_once().has_value());
  EXPECT_EQ(acks().size(), 24u);
  std::ifstream in(path);
  std::map<std::string, int> lines;
  for (std::string line; std::getline(in, line);) {
    lines[nlohmann::json::parse(line)["id"].get<std::string>()]++;
  }
  EXPECT_EQ(lines.size(), 12u);
  for (const auto& [id, count] : lines) EXPECT_EQ(count, 1) << id << " written twice";
}

}  // namespace
}  // namespace auterity
