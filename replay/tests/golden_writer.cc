// Writes the golden v1 history: the records of a demo-like run — three dealerships (two on the
// same partition), the sample new-lead workflow and a trade-in appraisal with a retry, AI calls
// that report model, tokens and cost, SMS/email/Slack notifications, replies, a timeout with a
// follow-up, a cancel and a rejected duplicate start — on a manual clock, so every byte is
// deterministic. Also writes the live engine's final state of each execution.
//
// The fixture in tests/data/ is FROZEN: it is what schema v1 wrote. Do not regenerate it when
// the schema changes; see tests/data/README.md.
//
//   replay_golden_writer <out dir>

#include <fstream>
#include <iterator>

#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include "connectors/connectors.h"
#include "node/node.h"
#include "processors/client.h"
#include "replay/state_replay.h"
#include "replay/tests/golden.h"
#include "replay/tests/history_file.h"

namespace auterity::testing {
namespace {

using json = nlohmann::json;

constexpr int64_t start_ms = 1'700'000'000'000;  // 2023-11-14T22:13:20Z
constexpr uint32_t partitions = 2;

// Answers AI calls like a model router would: for acme-motors a drafted text with usage; for
// the others a permanent failure (quota), so their workflows take the template fallback.
class scripted_ai final : public connector {
 public:
  ack_result execute(const fbs::Envelope& command, const command_context&) override {
    auto p = command.payload_as_CallAi();
    ack_result r;
    if (sv(command.tenant_id()) != "acme-motors") {
      r.status = fbs::AckStatus::PermanentFailure;
      r.error = "model quota for this tenant is spent";
      return r;
    }
    const json in = json::parse(sv(p->input_json()), nullptr, false);
    const std::string prompt = in.is_object() ? in.value("prompt", "") : "";
    r.output_json = json{{"text",
                          "Hi! Thanks for reaching out to Acme Motors - when can you "
                          "come in for a test drive?"}}
                        .dump();
    r.model = "relay-small-2024-05";
    r.input_tokens = static_cast<uint32_t>(prompt.size() / 4 + 12);
    r.output_tokens = 23;
    r.cost_micros = r.input_tokens * 3 + r.output_tokens * 6;  // $3 / $6 per million tokens
    return r;
  }
};

// Sends notifications like a provider's API would answer: a message id derived from the
// idempotency id (the outbox connector would put this run's temp path in every output).
class scripted_notify final : public connector {
 public:
  ack_result execute(const fbs::Envelope& command, const command_context&) override {
    auto p = command.payload_as_SendNotification();
    ack_result r;
    r.output_json =
        json{{"channel", sv(p->channel())},
             {"to", sv(p->to())},
             {"message_id", "msg-" + hex(sha256(sv(p->idempotency_id()))).substr(0, 12)}}
            .dump();
    return r;
  }
};

constexpr const char* appraisal_workflow = R"({
  "workflow": "trade-in-appraisal", "version": 1,
  "description": "Appraise a trade-in: the valuation service fails once, then answers.",
  "steps": [
    {"id": "valuation", "kind": "task", "action": "flaky",
     "input": {"succeed_on_attempt": 2, "vin": "{{input.vin}}"},
     "retry": {"max_attempts": 3, "backoff_ms": 250}},
    {"id": "offer", "kind": "task", "action": "transform", "after": ["valuation"],
     "input": {"offer": "trade-in offer for {{input.vin}}"}},
    {"id": "tell_customer", "kind": "notify", "after": ["offer"],
     "input": {"channel": "email", "to": "{{input.email}}", "subject": "Your trade-in offer",
               "body": "{{steps.offer.output.offer}}"}}
  ]})";

struct planned {
  std::string tenant, id, workflow;
  json input;
  bool replies = false;
  bool cancel = false;
};

std::vector<planned> plan() {
  auto lead = [](const char* name, const char* vehicle, int budget, const char* timeline,
                 const char* preferred, const char* contact) {
    json c = {{"preferred", preferred}};
    c[std::string_view(preferred) == "sms" ? "phone" : "email"] = contact;
    return json{{"name", name},         {"vehicle", vehicle},  {"budget", budget},
                {"timeline", timeline}, {"source", "website"}, {"trade_in", true},
                {"contact", c}};
  };
  return {
      {"acme-motors", "lead-0001", "new-lead",
       lead("Maria Lopez", "2024 RAV4 Hybrid", 42000, "this_week", "sms", "+15550100001"), true},
      {"acme-motors", "lead-0002", "new-lead",
       lead("James Chen", "F-150 Lariat", 61000, "this_month", "email", "james@example.com")},
      {"acme-motors", "appraisal-0001", "trade-in-appraisal",
       json{{"vin", "1HGCM82633A004352"}, {"email", "maria@example.com"}}},
      {"bayside-auto", "lead-0003", "new-lead",
       lead("Aisha Patel", "Civic Sport", 24000, "browsing", "sms", "+15550100003"), true},
      {"bayside-auto", "lead-0004", "new-lead",
       lead("Tom Becker", "Model 3", 45000, "now", "email", "tom@example.com"), false, true},
      {"crestview-cars", "lead-0005", "new-lead",
       lead("Lena Novak", "CX-5", 31000, "this_month", "sms", "+15550100005")},
  };
}

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

class run {
 public:
  explicit run(std::string dir) : _dir(std::move(dir)), _clk(start_ms) {}

  int go(const std::string& out_dir) {
    if (!open()) return 1;
    submit_all();
    if (!drive()) return 1;
    return write(out_dir);
  }

 private:
  bool open() {
    node_options o;
    o.data_dir = _dir;
    o.partitions = partitions;
    o.fsync = false;
    o.workers = false;
    auto n = node::open(o, _clk);
    if (!n || !(*n)->recover()) return fmt::print(stderr, "cannot open a node\n"), false;
    _node = std::move(*n);
    log& l = _node->get_log();
    _workers.push_back(std::make_unique<worker_runtime>(l, stream::commands_step,
                                                        make_local_step_connector(), _clk));
    _workers.push_back(std::make_unique<worker_runtime>(l, stream::commands_ai,
                                                        std::make_unique<scripted_ai>(), _clk));
    _workers.push_back(std::make_unique<worker_runtime>(l, stream::commands_notify,
                                                        std::make_unique<scripted_notify>(), _clk));
    return true;
  }

  void submit(std::string_view tenant, std::string bytes) {
    auto r = _node->submit(tenant, std::move(bytes));
    if (!r) fmt::print(stderr, "submit failed: {}\n", r.error().message);
  }

  void submit_all() {
    const std::string new_lead = read_text(AUTERITY_NEW_LEAD_JSON);
    const std::pair<const char*, const char*> dealers[] = {
        {"acme-motors",
         R"({"dealer_name":"Acme Motors","reply_timeout_ms":3000,"followup_delay_ms":1500})"},
        {"bayside-auto",
         R"({"dealer_name":"Bayside Auto","reply_timeout_ms":2000,"followup_delay_ms":1000})"},
        {"crestview-cars",
         R"({"dealer_name":"Crestview Cars","reply_timeout_ms":2500,"followup_delay_ms":1200})"},
    };
    for (const auto& [tenant, params] : dealers) {
      submit(tenant,
             client::publish_definition({tenant, "", "publish-new-lead", now()}, new_lead, params));
    }
    submit("acme-motors", client::publish_definition(
                              {"acme-motors", "", "publish-appraisal", now()}, appraisal_workflow));
    for (const planned& p : plan()) {
      submit(p.tenant, client::start_execution({p.tenant, p.id, "start-" + p.id, now()}, p.workflow,
                                               0, p.input.dump()));
    }
    // An upstream retry of a start: rejected as a duplicate, never run twice.
    submit("acme-motors",
           client::start_execution({"acme-motors", "lead-0001", "start-lead-0001-retry", now()},
                                   "new-lead", 0, "{}"));
  }

  // Runs partitions and workers until every execution ended, moving the clock: 5 ms per busy
  // round, 100 ms when idle; replies come at +800 ms, the cancel at +600 ms.
  bool drive() {
    bool replied = false, cancelled = false;
    for (int round = 0; round < 5000; ++round) {
      size_t work = 0;
      auto s = _node->step(false);
      if (!s) return fmt::print(stderr, "step: {}\n", s.error().message), false;
      work += *s;
      for (auto& w : _workers) {
        auto r = w->run_once();
        if (!r) return false;
        work += *r;
      }
      const int64_t elapsed = _clk.now_ms() - start_ms;
      if (!cancelled && elapsed >= 600) cancelled = true, send_cancels();
      if (!replied && elapsed >= 800) replied = true, send_replies();
      if (work == 0 && all_ended() && replied) return true;
      _clk.advance(work ? 5 : 100);
    }
    fmt::print(stderr, "executions still running after 5000 rounds\n");
    return false;
  }

  void send_replies() {
    for (const planned& p : plan()) {
      if (!p.replies) continue;
      submit(p.tenant, client::signal({p.tenant, p.id, "reply-" + p.id, now()}, "customer_replied",
                                      R"({"text":"Yes! Can I come in Saturday at 10?"})"));
    }
  }

  void send_cancels() {
    for (const planned& p : plan()) {
      if (p.cancel) {
        submit(p.tenant, client::cancel({p.tenant, p.id, "cancel-" + p.id, now()},
                                        "customer bought elsewhere"));
      }
    }
  }

  bool all_ended() {
    for (const planned& p : plan()) {
      auto e = _node->execution(p.tenant, p.id);
      if (!e || e->status == exec_status::running) return false;
    }
    return true;
  }

  int write(const std::string& out_dir) {
    history_file h;
    h.partitions = partitions;
    std::vector<stream> all;
    for (int s = 0; s < stream_count; ++s) all.push_back(static_cast<stream>(s));
    auto recs = read_log(_node->get_log(), all);
    if (!recs) return fmt::print(stderr, "{}\n", recs.error().message), 1;
    h.records = std::move(*recs);
    std::ofstream(out_dir + "/" + golden_history)
        << format_history(h,
                          "Golden v1 history: records of a demo-like run written with schema "
                          "v1.\nFrozen: see README.md in this directory. Written by "
                          "replay/tests/golden_writer.cc.");
    std::ofstream expected(out_dir + "/" + golden_expected);
    for (const planned& p : plan()) {
      auto e = _node->execution(p.tenant, p.id);
      const uint32_t part = tenant_partition(p.tenant, partitions);
      expected << state_summary(*e, step_names_of(_node->partition(part).store(), *e)) << "\n";
    }
    fmt::print("wrote {} records to {}/{}\n", h.records.size(), out_dir, golden_history);
    return 0;
  }

  int64_t now() { return _clk.now_ms(); }

  std::string _dir;
  manual_clock _clk;
  std::unique_ptr<node> _node;
  std::vector<std::unique_ptr<worker_runtime>> _workers;
};

}  // namespace
}  // namespace auterity::testing

int main(int argc, char** argv) {
  if (argc != 2) {
    fmt::print(stderr, "usage: replay_golden_writer <out dir>\n");
    return 2;
  }
  const std::string dir = auterity::testing::scratch_temp_dir("golden");
  auterity::testing::dir_guard guard{dir};
  return auterity::testing::run(dir).go(argv[1]);
}
