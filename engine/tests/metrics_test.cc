// The /metrics endpoint as Prometheus sees it: a node on the embedded log serves it on a real
// loopback socket, a workflow runs, and the scraped exposition says what the engine did.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <map>
#include <optional>
#include <sstream>
#include <thread>

#include "engine/metrics.h"
#include "processors/tests/harness.h"
#include "tests/plain_http.h"

namespace auterity {
namespace {

constexpr const char* tenant = "acme";
constexpr const char* two_steps = R"({"workflow":"wf","version":1,"steps":[
    {"id":"a","kind":"task","action":"transform","input":{"x":1}},
    {"id":"b","kind":"task","action":"transform","after":["a"]}]})";

using testing::http_get;

// One exposition, parsed: (name, labels) -> value.
struct exposition {
  struct sample {
    std::string name;
    std::map<std::string, std::string> labels;
    double value;
  };
  std::vector<sample> samples;
  std::string text;

  static exposition parse(std::string response) {
    exposition e;
    const size_t body = response.find("\r\n\r\n");
    e.text = body == std::string::npos ? "" : response.substr(body + 4);
    std::istringstream in(e.text);
    for (std::string line; std::getline(in, line);) {
      if (line.empty() || line[0] == '#') continue;
      e.samples.push_back(parse_line(line));
    }
    return e;
  }

  static sample parse_line(const std::string& line) {
    sample s;
    const size_t brace = line.find('{');
    const size_t space = line.rfind(' ');
    s.name = line.substr(0, std::min(brace, space));
    s.value = std::strtod(line.c_str() + space + 1, nullptr);
    if (brace == std::string::npos) return s;
    std::string_view labels(line.data() + brace + 1, line.rfind('}') - brace - 1);
    while (!labels.empty()) {
      const size_t eq = labels.find('=');
      const size_t close = labels.find('"', eq + 2);
      s.labels[std::string(labels.substr(0, eq))] =
          std::string(labels.substr(eq + 2, close - eq - 2));
      labels.remove_prefix(std::min(labels.size(), close + 2));  // past `",`
    }
    return s;
  }

  // The value of the one sample of `name` whose labels include `labels`.
  std::optional<double> value(std::string_view name,
                              const std::map<std::string, std::string>& labels = {}) const {
    std::optional<double> found;
    for (const sample& s : samples) {
      if (s.name != name) continue;
      bool match = true;
      for (const auto& [k, v] : labels) {
        match = match && s.labels.contains(k) && s.labels.at(k) == v;
      }
      if (!match) continue;
      if (found) ADD_FAILURE() << name << " matches more than one sample";
      found = s.value;
    }
    return found;
  }
};

// A harness node (two partitions, in-process workers) that serves /metrics on `address`.
class metrics_node : public testing::harness {
 public:
  explicit metrics_node(std::string address = "127.0.0.1:0")
      : harness("metrics", with_metrics(std::move(address))) {}

  void submit(std::string bytes) { harness::submit(tenant, std::move(bytes)); }
  exposition scrape() {
    const std::string response = http_get(n->metrics_port(), "/metrics");
    EXPECT_TRUE(response.starts_with("HTTP/1.1 200") || response.starts_with("HTTP/1.0 200"))
        << response.substr(0, 200);
    return exposition::parse(response);
  }

 private:
  static node_options with_metrics(std::string address) {
    node_options o = options(/*partitions=*/2, /*workers=*/true);
    o.metrics_address = std::move(address);
    return o;
  }
};

TEST(metrics, a_scrape_shows_what_the_engine_did_on_the_tenants_partition) {
  metrics_node m;
  ASSERT_TRUE(m.n);
  ASSERT_NE(m.n->metrics_port(), 0) << "port 0 binds a free port and reports it";
  const std::string p = std::to_string(tenant_partition(tenant, m.n->partitions()));
  const std::string other = p == "0" ? "1" : "0";

  m.submit(client::publish_definition({tenant, "", "pub", m.clk.now_ms()}, two_steps, ""));
  m.submit(client::start_execution({tenant, "e1", "e1", m.clk.now_ms()}, "wf", 0, "{}"));
  exposition before = m.scrape();
  EXPECT_EQ(before.value("auterity_consumer_lag_records",
                         {{"group", "orchestrator"}, {"stream", "ingress"}, {"partition", p}}),
            2.0)
      << "two records wait on ingress before the engine runs\n"
      << before.text;

  m.settle();
  // A start retried with the same id is rejected; bytes that are no envelope go to deadletter.
  m.submit(client::start_execution({tenant, "e1", "retry", m.clk.now_ms()}, "wf", 0, "{}"));
  m.submit("not an envelope");
  m.settle();

  exposition e = m.scrape();
  const std::map<std::string, std::string> on_p = {{"partition", p}};
  EXPECT_EQ(e.value("auterity_inputs_total", on_p), 6.0)
      << "publish, start, two acks, the retried start, the bad record\n"
      << e.text;
  EXPECT_EQ(e.value("auterity_inputs_total", {{"partition", other}}), 0.0);
  EXPECT_GE(e.value("auterity_events_total", on_p).value_or(0), 5.0);
  EXPECT_EQ(e.value("auterity_commands_total", on_p), 2.0);
  EXPECT_EQ(e.value("auterity_executions_started_total", on_p), 1.0);
  EXPECT_EQ(e.value("auterity_executions_ended_total", on_p), 1.0);
  EXPECT_EQ(e.value("auterity_rejections_total", on_p), 1.0);
  EXPECT_EQ(e.value("auterity_deadletters_total", on_p), 1.0);
  EXPECT_EQ(e.value("auterity_stale_acks_total", on_p), 0.0);
  EXPECT_EQ(e.value("auterity_worker_commands_total",
                    {{"group", "worker.commands.step"}, {"outcome", "succeeded"}}),
            2.0);
  // Both step commands went through the step worker's connector: two calls, none in flight.
  const std::map<std::string, std::string> step_worker = {{"group", "worker.commands.step"}};
  EXPECT_EQ(e.value("auterity_connector_call_duration_seconds_count", step_worker), 2.0);
  EXPECT_EQ(e.value("auterity_worker_in_flight", step_worker), 0.0);
  EXPECT_EQ(e.value("auterity_worker_deadline_misses_total",
                    {{"group", "worker.commands.step"}, {"kind", "passed"}}),
            0.0);

  // Commits: a histogram whose +Inf bucket is the count, and the count is the batches run.
  const double commits = e.value("auterity_commit_duration_seconds_count", on_p).value_or(0);
  EXPECT_GT(commits, 0.0);
  EXPECT_EQ(e.value("auterity_commit_duration_seconds_bucket", {{"partition", p}, {"le", "+Inf"}}),
            commits);
  EXPECT_GT(e.value("auterity_commit_duration_seconds_sum", on_p).value_or(0), 0.0);
  EXPECT_EQ(e.value("auterity_commit_records_count", on_p), commits);
  EXPECT_EQ(e.value("auterity_commit_records_sum", on_p),
            e.value("auterity_records_out_total", on_p));
  EXPECT_TRUE(e.value("auterity_restore_duration_seconds", on_p).has_value());

  // At rest every consumer is caught up.
  for (const char* s : {"ingress", "acks"}) {
    EXPECT_EQ(e.value("auterity_consumer_lag_records",
                      {{"group", "orchestrator"}, {"stream", s}, {"partition", p}}),
              0.0)
        << s;
  }
  EXPECT_EQ(e.value("auterity_consumer_lag_records",
                    {{"group", "worker.commands.step"}, {"partition", p}}),
            0.0);
  EXPECT_NE(e.text.find("# TYPE auterity_inputs_total counter"), std::string::npos);
  EXPECT_NE(e.text.find("# TYPE auterity_commit_duration_seconds histogram"), std::string::npos);
}

// Scrapes run on the server's threads while the runtimes' threads count: every scrape answers,
// counters never go back, and the last one adds up.
TEST(metrics, scrapes_during_work_on_runtime_threads) {
  metrics_node m;
  ASSERT_TRUE(m.n);
  constexpr int executions = 200;
  m.submit(client::publish_definition({tenant, "", "pub", m.clk.now_ms()}, two_steps, ""));
  m.n->start();
  for (int i = 0; i < executions; ++i) {
    const std::string id = fmt::format("e{}", i);
    m.submit(client::start_execution({tenant, id, id, m.clk.now_ms()}, "wf", 0, "{}"));
  }
  const std::string p = std::to_string(tenant_partition(tenant, m.n->partitions()));
  double inputs = 0, ended = 0;
  for (int scrape = 0; scrape < 3000 && ended < executions; ++scrape) {
    exposition e = m.scrape();
    const double now = e.value("auterity_inputs_total", {{"partition", p}}).value_or(-1);
    ASSERT_GE(now, inputs) << "scrape " << scrape;
    inputs = now;
    ended = e.value("auterity_executions_ended_total", {{"partition", p}}).value_or(0);
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  m.n->stop();
  EXPECT_EQ(ended, executions);
  exposition e = m.scrape();
  EXPECT_EQ(e.value("auterity_inputs_total", {{"partition", p}}), 1 + executions * 3.0)
      << "publish, then per execution a start and two acks";
  EXPECT_EQ(e.value("auterity_consumer_lag_records",
                    {{"group", "orchestrator"}, {"stream", "acks"}, {"partition", p}}),
            0.0);
}

TEST(metrics, off_unless_an_address_is_given) {
  metrics_node off("0");
  ASSERT_TRUE(off.n);
  EXPECT_EQ(off.n->metrics_port(), 0);
}

TEST(metrics, a_bad_or_busy_address_is_an_error_not_a_crash) {
  auto first = metrics_server::start("127.0.0.1:0", [](metrics_writer&) {});
  ASSERT_TRUE(first.has_value()) << first.error().message;
  const std::string taken = fmt::format("127.0.0.1:{}", (*first)->port());
  auto second = metrics_server::start(taken, [](metrics_writer&) {});
  ASSERT_FALSE(second.has_value()) << "a second server bound " << taken;
  EXPECT_EQ(second.error().code, errc::io);
  for (const char* bad : {"9464", "127.0.0.1:", "127.0.0.1:http", "127.0.0.1:70000", ":9464"}) {
    auto r = metrics_server::start(bad, [](metrics_writer&) {});
    ASSERT_FALSE(r.has_value()) << bad;
    EXPECT_EQ(r.error().code, errc::invalid) << bad;
  }
}

// GET /ready answers what the readiness check says: 503 with the reason, then 200 "ready";
// without a check there is no /ready (a load balancer sees 404, not a false "ready").
TEST(metrics, ready_answers_the_readiness_check) {
  std::atomic<bool> restored{false};
  auto server = metrics_server::start(
      "127.0.0.1:0", [](metrics_writer&) {},
      [&]() -> std::optional<std::string> {
        if (!restored) return "partition 3 is being restored";
        return std::nullopt;
      });
  ASSERT_TRUE(server.has_value()) << server.error().message;
  std::string r = http_get((*server)->port(), "/ready");
  EXPECT_TRUE(r.starts_with("HTTP/1.1 503")) << r;
  EXPECT_NE(r.find("not ready: partition 3 is being restored"), std::string::npos) << r;
  restored = true;
  r = http_get((*server)->port(), "/ready");
  EXPECT_TRUE(r.starts_with("HTTP/1.1 200")) << r;
  EXPECT_TRUE(r.ends_with("\r\n\r\nready\n")) << r;
  // /metrics is unchanged beside it.
  EXPECT_TRUE(http_get((*server)->port(), "/metrics").starts_with("HTTP/1.1 200"));

  auto plain = metrics_server::start("127.0.0.1:0", [](metrics_writer&) {});
  ASSERT_TRUE(plain.has_value());
  r = http_get((*plain)->port(), "/ready");
  EXPECT_NE(r.find(" 404 "), std::string::npos) << r;
}

// A node is ready once it serves with its partitions restored, and not before or after.
TEST(metrics, a_node_is_ready_only_while_it_serves) {
  metrics_node m;
  ASSERT_TRUE(m.n);
  const uint16_t port = m.n->metrics_port();
  std::string r = http_get(port, "/ready");
  EXPECT_TRUE(r.starts_with("HTTP/1.1 503")) << r;
  EXPECT_NE(r.find("not serving"), std::string::npos) << r;
  m.n->start();
  r = http_get(port, "/ready");
  EXPECT_TRUE(r.starts_with("HTTP/1.1 200")) << r;
  m.n->stop();
  r = http_get(port, "/ready");
  EXPECT_TRUE(r.starts_with("HTTP/1.1 503")) << r;
}

TEST(metrics, histogram_buckets_are_cumulative_and_inclusive) {
  constexpr std::array<uint64_t, 3> bounds = {10, 100, 1000};
  atomic_histogram h(bounds);
  for (uint64_t v : {0, 10, 11, 100, 5000}) h.observe(v);
  const histogram_snapshot s = h.snapshot(2.0);
  ASSERT_EQ(s.buckets.size(), 3u);
  EXPECT_EQ(s.buckets[0], (std::pair<double, uint64_t>{5.0, 2}));
  EXPECT_EQ(s.buckets[1], (std::pair<double, uint64_t>{50.0, 4}));
  EXPECT_EQ(s.buckets[2], (std::pair<double, uint64_t>{500.0, 4}));
  EXPECT_EQ(s.count, 5u);
  EXPECT_EQ(s.sum, 5121 / 2.0);
}

}  // namespace
}  // namespace auterity
