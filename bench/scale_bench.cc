// Wall time to scale the embedded log from 4 to 8 partitions with N tenants (issue 9, item 7;
// bench/README.md, "Scaling the partition count"): N tenants with R running executions each
// (a wait for a signal, with a timer) on 4 partitions; then what `auterity partitions scale
// --to 8` does with the engine stopped — survey (state stores and the log's recent events),
// plan, grow the log, publish one MoveTenant per move — and the engine reopened on 8
// partitions, run until every move has been decided and installed.
//
//   build/bench/scale_bench --tenants 1000 [--running 1] [--no-fsync] [--dir /tmp/x]

#include <chrono>
#include <filesystem>

#include <fmt/core.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "bench/bench_common.h"
#include "engine/clock.h"
#include "engine/record.h"
#include "node/node.h"
#include "node/scale.h"
#include "processors/client.h"
#include "replay/source.h"

namespace auterity {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;
using steady = std::chrono::steady_clock;
using bench::ms_since;

std::unique_ptr<node> open_node(const std::string& dir, uint32_t partitions, bool fsync,
                                manual_clock& clk) {
  node_options o;
  o.data_dir = dir;
  o.partitions = partitions;
  o.fsync = fsync;
  o.workers = false;
  auto n = node::open(o, clk);
  if (!n) {
    fmt::print(stderr, "scale_bench: {}\n", n.error().message);
    return nullptr;
  }
  if (auto r = (*n)->recover(); !r) {
    fmt::print(stderr, "scale_bench: {}\n", r.error().message);
    return nullptr;
  }
  return std::move(*n);
}

bool drain(node& n) {
  for (;;) {
    auto w = n.step(false);
    if (!w) return false;
    if (*w == 0) return true;
  }
}

int run(const std::string& dir, size_t tenants, size_t running, bool fsync) {
  fs::remove_all(dir);
  manual_clock clk(1'700'000'000'000);
  const std::string def = json{{"workflow", "wait"},
                               {"version", 1},
                               {"steps", json::array({{{"id", "w"},
                                                       {"kind", "wait_signal"},
                                                       {"signal", "go"},
                                                       {"timeout_ms", 3'600'000}}})}}
                              .dump();
  const auto t0 = steady::now();
  {
    auto n = open_node(dir, 4, fsync, clk);
    if (!n) return 1;
    // One commit per tenant and partition batch of 1,000 records (a bulk import).
    std::vector<commit_batch> batches(4);
    auto flush = [&](uint32_t p) {
      if (batches[p].appends.empty()) return true;
      const bool ok = n->get_log().commit(p, batches[p]).has_value();
      batches[p] = commit_batch{};
      return ok;
    };
    for (size_t t = 0; t < tenants; ++t) {
      const std::string tenant = fmt::format("dealer-{:05}", t);
      const uint32_t p = tenant_partition(tenant, 4);
      batches[p].add(stream::ingress, tenant,
                     client::publish_definition({tenant, "", "pub", clk.now_ms()}, def));
      for (size_t e = 0; e < running; ++e) {
        const std::string id = fmt::format("lead-{}", e);
        batches[p].add(stream::ingress, tenant,
                       client::start_execution({tenant, id, id, clk.now_ms()}, "wait", 0, "{}"));
      }
      if (batches[p].appends.size() >= 1000 && !flush(p)) return 1;
    }
    for (uint32_t p = 0; p < 4; ++p) {
      if (!flush(p)) return 1;
    }
    if (!drain(*n)) return 1;
  }
  const double preload_ms = ms_since(t0);

  const auto t1 = steady::now();
  std::optional<scale_plan> plan;
  {
    auto src = open_embedded_source(dir, /*with_state=*/true);
    if (!src) {
      fmt::print(stderr, "scale_bench: {}\n", src.error().message);
      return 1;
    }
    auto survey = survey_placement(*src->events, src->store_ptrs());
    if (!survey) return 1;
    auto planned = plan_scale(*survey, src->events->partition_count(), src->events->placement(), 8);
    if (!planned) {
      fmt::print(stderr, "scale_bench: {}\n", planned.error().message);
      return 1;
    }
    plan = std::move(*planned);
  }
  const double plan_ms = ms_since(t1);
  const auto t2 = steady::now();
  auto published = apply_scale_embedded(dir + "/log", *plan, clk.now_ms());
  if (!published) {
    fmt::print(stderr, "scale_bench: {}\n", published.error().message);
    return 1;
  }
  const double apply_ms = ms_since(t2);
  const auto t3 = steady::now();
  {
    auto n = open_node(dir, 8, fsync, clk);
    if (!n || !drain(*n)) return 1;
  }
  const double moves_ms = ms_since(t3);
  fmt::print("{:>8} {:>8} {:>8} {:>11.0f} {:>9.0f} {:>9.0f} {:>9.0f} {:>10.0f}\n", tenants, running,
             plan->moves.size(), preload_ms, plan_ms, apply_ms, moves_ms,
             plan_ms + apply_ms + moves_ms);
  return 0;
}

}  // namespace
}  // namespace auterity

int main(int argc, char** argv) {
  CLI::App app{"Wall time to scale the embedded log from 4 to 8 partitions"};
  size_t tenants = 1000, running = 1;
  std::string dir = "/tmp/auterity-scale-bench";
  bool no_fsync = false;
  app.add_option("--tenants", tenants, "Tenants on the 4 partitions")->capture_default_str();
  app.add_option("--running", running, "Running executions per tenant")->capture_default_str();
  app.add_option("--dir", dir, "Scratch data directory (removed first and after)")
      ->capture_default_str();
  app.add_flag("--no-fsync", no_fsync, "Do not fdatasync commits");
  CLI11_PARSE(app, argc, argv);
  fmt::print("{:>8} {:>8} {:>8} {:>11} {:>9} {:>9} {:>9} {:>10}\n", "tenants", "running", "moves",
             "preload ms", "plan ms", "apply ms", "moves ms", "scale ms");
  const int rc = auterity::run(dir, tenants, running, !no_fsync);
  std::filesystem::remove_all(dir);
  return rc;
}
