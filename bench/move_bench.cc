// The pause of a moved tenant against the size of its state (docs/tenant-moves.md): a tenant
// with N running executions (each waiting for a signal, with a timer) is moved between two
// partitions of the embedded log, and the bench times the source's move commit (export +
// TenantMovedOut + chunks) and the target's install (chunks → TenantStateInstalled →
// TenantMovedIn), the tenant's whole pause. bench/README.md, "Tenant moves", has the figures.
//
//   build/bench/move_bench --executions 1000,10000,100000 [--no-fsync] [--dir /tmp/x]

#include <chrono>
#include <filesystem>
#include <sstream>

#include <fmt/core.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "bench/bench_common.h"
#include "engine/clock.h"
#include "engine/record.h"
#include "node/node.h"
#include "processors/client.h"

namespace auterity {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;
using steady = std::chrono::steady_clock;
using bench::ms_since;

bool has_event(log& l, uint32_t p, fbs::Payload type) {
  auto end = l.end_offset(stream::executions, p);
  if (!end || *end == 0) return false;
  std::vector<record> recs;
  const uint64_t from = *end > 64 ? *end - 64 : 0;
  if (!l.read(stream::executions, p, from, 64, 64 << 20, recs)) return false;
  for (const record& r : recs) {
    const fbs::Envelope* e = decode_envelope(r.value);
    if (e && e->payload_type() == type) return true;
  }
  return false;
}

int run_one(const std::string& dir, size_t executions, bool fsync) {
  fs::remove_all(dir);
  manual_clock clk(1'700'000'000'000);
  node_options o;
  o.data_dir = dir;
  o.partitions = 2;
  o.fsync = fsync;
  o.workers = false;
  auto opened = node::open(o, clk);
  if (!opened) {
    fmt::print(stderr, "move_bench: {}\n", opened.error().message);
    return 1;
  }
  node& n = **opened;
  if (auto r = n.recover(); !r) return 1;
  const std::string tenant = "hot";
  const uint32_t source = tenant_partition(tenant, 2), target = 1 - source;
  const std::string def = json{{"workflow", "wait"},
                               {"version", 1},
                               {"steps", json::array({{{"id", "w"},
                                                       {"kind", "wait_signal"},
                                                       {"signal", "go"},
                                                       {"timeout_ms", 3'600'000}}})}}
                              .dump();
  if (!n.submit(tenant, client::publish_definition({tenant, "", "pub", 0}, def))) return 1;
  // The starts go in commits of 1,000 (a CRM's bulk import), then the engine decides them.
  for (size_t i = 0; i < executions;) {
    commit_batch b;
    for (size_t k = 0; k < 1000 && i < executions; ++k, ++i) {
      const std::string id = fmt::format("lead-{}", i);
      b.add(stream::ingress, tenant,
            client::start_execution({tenant, id, id, 0}, "wait", 0, R"({"n":1})"));
    }
    if (!n.get_log().commit(source, b)) return 1;
  }
  for (;;) {
    auto w = n.step(false);
    if (!w) return 1;
    if (*w == 0) break;
  }
  const auto before_move = steady::now();
  if (!n.submit(tenant, client::move_tenant({tenant, "", "move", 0}, target))) return 1;
  const auto t0 = steady::now();
  while (!has_event(n.get_log(), source, fbs::Payload::TenantMovedOut)) {
    if (!n.partition(source).run_once()) return 1;
  }
  const double out_ms = ms_since(t0);
  const auto t1 = steady::now();
  while (!has_event(n.get_log(), target, fbs::Payload::TenantMovedIn)) {
    if (!n.partition(target).run_once()) return 1;
  }
  const double in_ms = ms_since(t1);
  const double pause_ms = ms_since(before_move);
  uint64_t state_bytes = 0;
  (void)n.partition(target).store().scan_all([&](std::string_view k, std::string_view v) {
    state_bytes += k.size() + v.size();
    return true;
  });
  fmt::print("{:>10} {:>14.1f} {:>12.1f} {:>12.1f} {:>12.1f}\n", executions, state_bytes / 1e6,
             out_ms, in_ms, pause_ms);
  return 0;
}

}  // namespace
}  // namespace auterity

int main(int argc, char** argv) {
  CLI::App app{"Pause of a moved tenant against its state size (embedded log)"};
  std::string sizes = "1000,10000,100000";
  std::string dir = "/tmp/auterity-move-bench";
  bool no_fsync = false;
  app.add_option("--executions", sizes, "Running executions of the moved tenant, comma-separated")
      ->capture_default_str();
  app.add_option("--dir", dir, "Scratch data directory (removed first)")->capture_default_str();
  app.add_flag("--no-fsync", no_fsync, "Do not fdatasync commits");
  CLI11_PARSE(app, argc, argv);
  fmt::print("{:>10} {:>14} {:>12} {:>12} {:>12}\n", "running", "state MB", "move out ms",
             "install ms", "pause ms");
  std::stringstream in(sizes);
  for (std::string item; std::getline(in, item, ',');) {
    if (int rc = auterity::run_one(dir, std::stoull(item), !no_fsync); rc != 0) return rc;
  }
  std::filesystem::remove_all(dir);
  return 0;
}
