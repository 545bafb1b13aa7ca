// Seeing load (docs/tenant-moves.md, "Seeing load"), as an operator notices it: with one tenant
// much hotter than the others, /metrics names it among the busiest tenants of its partition and
// sums the others under tenant="_other"; `auterity partitions show` names it as the partition's
// hottest; `auterity partitions plan` proposes isolating it. With 500 tenants each per-tenant
// metric keeps at most K + 1 series per partition.

#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <netinet/in.h>

#include <cstdio>
#include <map>
#include <regex>
#include <sstream>

#include "engine/log.h"
#include "processors/orchestrator.h"
#include "processors/tests/harness.h"
#include "tests/plain_http.h"
#include "tests/run_command.h"

namespace auterity {
namespace {

using testing::harness;

constexpr uint32_t partitions = 2;
constexpr size_t k = 10;  // node.cc: load_tenants_per_partition_max, README.md "Metrics"

constexpr std::string_view workflow = R"({"workflow":"wf","version":1,"steps":[
  {"id":"a","kind":"task","action":"transform"},
  {"id":"w","kind":"wait_signal","signal":"go","after":["a"]}]})";

using testing::http_get;

using outcome = testing::command_outcome;

outcome cli(const std::string& args) {
  const std::string cmd = fmt::format("'{}' {} 2>&1", AUTERITY_BIN, args);
  return testing::run_command(cmd);
}

// metric -> partition -> tenant -> value, for the per-tenant load metrics.
using series = std::map<std::string, std::map<std::string, std::map<std::string, double>>>;

series scrape(uint16_t port) {
  const std::string text = http_get(port, "/metrics");
  EXPECT_NE(text.find("200"), std::string::npos) << text.substr(0, 200);
  static const std::regex line(
      R"re(^(auterity_tenant_[a-z_]+)\{partition="(\d+)",tenant="([^"]*)"\} ([0-9.e+]+)$)re");
  series out;
  std::istringstream in(text);
  for (std::string l; std::getline(in, l);) {
    if (!l.empty() && l.back() == '\r') l.pop_back();
    std::smatch m;
    if (std::regex_match(l, m, line)) out[m[1]][m[2]][m[3]] = std::stod(m[4]);
  }
  return out;
}

node_options with_metrics() {
  node_options o = harness::options(partitions, /*workers=*/true);
  o.metrics_address = "127.0.0.1:0";
  return o;
}

constexpr const char* load_metrics[] = {
    "auterity_tenant_inputs_total", "auterity_tenant_events_total",
    "auterity_tenant_running_executions", "auterity_tenant_recent_load",
    "auterity_tenant_state_bytes"};

TEST(tenant_load, a_hot_tenant_is_named_in_metrics_show_and_plan) {
  harness h("load-hot", with_metrics());
  ASSERT_TRUE(h.n);
  const std::string hot = "hot-dealer";
  const std::string hp = std::to_string(tenant_partition(hot, partitions));
  // 40 quiet tenants with one running execution each, and one tenant with 60 executions of
  // which 30 get their signal and end.
  std::map<std::string, uint64_t> running_on;  // partition -> running executions
  for (int i = 0; i < 40; ++i) {
    const std::string t = fmt::format("dealer-{:02}", i);
    h.publish(t, workflow);
    h.start(t, "lead-1", "wf");
    running_on[std::to_string(tenant_partition(t, partitions))]++;
  }
  h.publish(hot, workflow);
  for (int i = 0; i < 60; ++i) h.start(hot, fmt::format("lead-{}", i), "wf");
  h.settle();
  for (int i = 0; i < 30; ++i) h.signal(hot, fmt::format("lead-{}", i), "go");
  h.settle();
  running_on[hp] += 30;

  series s = scrape(h.n->metrics_port());
  for (const char* metric : load_metrics) {
    for (const std::string p : {"0", "1"}) {
      EXPECT_LE(s[metric][p].size(), k + 1) << metric << " partition " << p;
      EXPECT_TRUE(s[metric][p].contains("_other")) << metric << " partition " << p;
    }
  }
  // The hot tenant is named on its partition and is the busiest there.
  const auto& recent = s["auterity_tenant_recent_load"][hp];
  ASSERT_TRUE(recent.contains(hot));
  for (const auto& [tenant, v] : recent) {
    if (tenant != hot && tenant != "_other") {
      EXPECT_LT(v, recent.at(hot)) << tenant;
    }
  }
  EXPECT_EQ(s["auterity_tenant_running_executions"][hp][hot], 30);
  // Named tenants + _other sum to the partition's running executions: nothing dropped.
  for (const std::string p : {"0", "1"}) {
    double sum = 0;
    for (const auto& [tenant, v] : s["auterity_tenant_running_executions"][p]) sum += v;
    EXPECT_EQ(sum, static_cast<double>(running_on[p])) << "partition " << p;
  }
  // hot's inputs: its publish, 60 starts, 60 acks of step a, 30 signals.
  EXPECT_EQ(s["auterity_tenant_inputs_total"][hp][hot], 151);
  for (uint32_t p = 0; p < partitions; ++p) {
    EXPECT_EQ(h.n->orchestrator_of(p).probe().decide_reads.load(), 0u) << "partition " << p;
  }

  // Past the window nothing is recent any more; the counters stay.
  h.clk.advance(tenant_load_window_ms + tenant_load_bucket_ms);
  series later = scrape(h.n->metrics_port());
  EXPECT_EQ(later["auterity_tenant_recent_load"][hp][hot], 0);
  EXPECT_EQ(later["auterity_tenant_inputs_total"][hp][hot], 151);

  h.n.reset();  // the CLI reads the stopped engine's directory
  const std::string data = fmt::format("--data {}", h.dir);
  auto shown = cli("partitions show " + data);
  ASSERT_EQ(shown.code, 0) << shown.out;
  bool row = false;
  std::istringstream rows(shown.out);
  for (std::string line; std::getline(rows, line);) {
    std::istringstream cols(line);
    std::string partition;
    cols >> partition;
    if (partition != hp) continue;
    row = true;
    // Its hottest tenant first: running executions / events in the window.
    EXPECT_NE(line.find(fmt::format("  {}:30/", hot)), std::string::npos) << shown.out;
  }
  EXPECT_TRUE(row) << shown.out;

  auto planned = cli("partitions plan " + data);
  ASSERT_EQ(planned.code, 0) << planned.out;
  EXPECT_NE(planned.out.find(fmt::format("isolated: {} alone on partition {}", hot, hp)),
            std::string::npos)
      << planned.out;
  EXPECT_NE(planned.out.find(fmt::format("isolate hot tenant {}", hot)), std::string::npos)
      << planned.out;
  EXPECT_EQ(planned.out.find(fmt::format("move {} ", hot)), std::string::npos)
      << "the others leave, not the hot tenant:\n"
      << planned.out;
  // With a partition more, the hot tenant takes the new, empty one.
  auto grown = cli("partitions plan --to 3 " + data);
  ASSERT_EQ(grown.code, 0) << grown.out;
  EXPECT_NE(grown.out.find(fmt::format("move {} {} -> 2", hot, hp)), std::string::npos)
      << grown.out;
}

TEST(tenant_load, five_hundred_tenants_keep_at_most_k_plus_one_series_per_partition) {
  harness h("load-many", with_metrics());
  ASSERT_TRUE(h.n);
  for (int i = 0; i < 500; ++i) h.publish(fmt::format("tenant-{:03}", i), workflow);
  h.settle();
  series s = scrape(h.n->metrics_port());
  for (const char* metric : load_metrics) {
    for (const std::string p : {"0", "1"}) {
      EXPECT_EQ(s[metric][p].size(), k + 1) << metric << " partition " << p;
      EXPECT_TRUE(s[metric][p].contains("_other")) << metric << " partition " << p;
    }
  }
  // Every tenant's publish is counted once: on its partition, by name or in _other.
  double inputs = 0;
  for (const auto& [p, tenants] : s["auterity_tenant_inputs_total"]) {
    for (const auto& [tenant, v] : tenants) inputs += v;
  }
  EXPECT_EQ(inputs, 500);
  const std::string text = http_get(h.n->metrics_port(), "/metrics");
  EXPECT_NE(text.find("auterity_partition_tenants{partition=\"0\"}"), std::string::npos);
}

// The running executions on /metrics are the state's: they follow the tenant when it moves and
// are counted again from the state when the engine reopens.
TEST(tenant_load, running_executions_follow_a_move_and_a_restart) {
  harness h("load-move", with_metrics());
  ASSERT_TRUE(h.n);
  const std::string hot = "hot-dealer";
  const uint32_t from = tenant_partition(hot, partitions), to = 1 - from;
  h.publish(hot, workflow);
  for (int i = 0; i < 20; ++i) h.start(hot, fmt::format("lead-{}", i), "wf");
  h.settle();
  auto running = [&](uint32_t p) {
    series s = scrape(h.n->metrics_port());
    const auto& on = s["auterity_tenant_running_executions"][std::to_string(p)];
    auto it = on.find(hot);
    return it == on.end() ? 0.0 : it->second;
  };
  EXPECT_EQ(running(from), 20);
  EXPECT_EQ(running(to), 0);

  h.submit(hot, client::move_tenant({hot, "", "move-1", h.clk.now_ms()}, to));
  h.settle();
  EXPECT_EQ(running(from), 0);
  EXPECT_EQ(running(to), 20);
  for (int i = 0; i < 5; ++i) h.signal(hot, fmt::format("lead-{}", i), "go");
  h.settle();
  EXPECT_EQ(running(to), 15);

  h.n.reset();
  node_options o = with_metrics();
  o.data_dir = h.dir;
  auto reopened = node::open(o, h.clk);
  ASSERT_TRUE(reopened.has_value()) << reopened.error().message;
  h.n = std::move(*reopened);
  ASSERT_TRUE(h.n->recover().has_value());
  EXPECT_EQ(running(to), 15);
  EXPECT_EQ(running(from), 0);
  for (uint32_t p = 0; p < partitions; ++p) {
    EXPECT_EQ(h.n->orchestrator_of(p).probe().decide_reads.load(), 0u) << "partition " << p;
  }
}

}  // namespace
}  // namespace auterity
