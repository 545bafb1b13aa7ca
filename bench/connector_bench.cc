// Connector worker throughput against a remote service that takes --remote-ms per call: how
// the worker's bounded concurrency (--worker-concurrency) turns a slow endpoint into
// throughput. The remote is tests/connectors/fake_services.py (/delay/<ms>, Python's
// ThreadingHTTPServer on loopback); every execution is one `http` task step (a POST with the
// command id as Idempotency-Key), on the embedded log. Results: README.md, "Connector workers".
//
//   connector_bench [--concurrency 1,4,16,64] [--executions 400] [--remote-ms 50]

#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <thread>
#include <vector>

#include <fmt/core.h>
#include <CLI/CLI.hpp>

#include "node/node.h"
#include "processors/client.h"
#include "tests/connectors/service_process.h"

#ifndef AUTERITY_FAKE_SERVICES
#error "define AUTERITY_FAKE_SERVICES (path of tests/connectors/fake_services.py)"
#endif

namespace auterity {
namespace {

namespace fs = std::filesystem;

struct outcome {
  double seconds = 0;
  size_t succeeded = 0;
};

// `run` names the executions: the remote answers a repeated idempotency key from its record
// without doing the work again, so every run needs ids (keys) of its own.
outcome run_once(const std::string& url, size_t concurrency, uint32_t executions,
                 const fs::path& dir, size_t run) {
  fs::remove_all(dir);
  system_clock clk;
  node_options o;
  o.data_dir = dir.string();
  o.partitions = 2;
  o.worker.concurrency = concurrency;
  o.worker_streams = {stream::commands_step};
  auto n = node::open(o, clk);
  if (!n) {
    fmt::print(stderr, "connector_bench: {}\n", n.error().message);
    std::exit(2);
  }
  const std::string workflow = fmt::format(R"({{
    "workflow": "call", "version": 1,
    "steps": [{{"id": "call", "kind": "task", "action": "http", "timeout_ms": 30000,
               "input": {{"method": "POST", "url": "{}", "body": {{"lead": "{{{{input.n}}}}"}}}}}}]
  }})",
                                           url);
  for (const char* t : {"acme", "bayside"}) {
    (void)(*n)->submit(t, client::publish_definition({t, "", "pub", clk.now_ms()}, workflow));
  }
  std::vector<std::pair<std::string, std::string>> ids;
  for (uint32_t i = 0; i < executions; ++i) {
    const std::string tenant = i % 2 ? "bayside" : "acme";
    const std::string id = fmt::format("r{}-e{}", run, i);
    (void)(*n)->submit(tenant, client::start_execution({tenant, id, "s" + id, clk.now_ms()}, "call",
                                                       0, fmt::format(R"({{"n":{}}})", i)));
    ids.emplace_back(tenant, id);
  }
  if (auto r = (*n)->recover(); !r) {
    fmt::print(stderr, "connector_bench: {}\n", r.error().message);
    std::exit(2);
  }
  const auto t0 = std::chrono::steady_clock::now();
  (*n)->start();
  outcome out;
  while (true) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    size_t done = 0, ok = 0;
    for (const auto& [t, id] : ids) {
      auto e = (*n)->execution(t, id);
      if (e && e->status != exec_status::running) ++done, ok += e->status == exec_status::succeeded;
    }
    if (done == ids.size()) {
      out.succeeded = ok;
      break;
    }
    if (std::chrono::steady_clock::now() - t0 > std::chrono::minutes(10)) break;
  }
  out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  (*n)->stop();
  return out;
}

}  // namespace
}  // namespace auterity

int main(int argc, char** argv) {
  using namespace auterity;
  CLI::App app{"Connector worker throughput against a slow HTTP endpoint on loopback"};
  std::vector<size_t> concurrency = {1, 4, 16, 64};
  uint32_t executions = 400;
  int remote_ms = 50;
  std::string dir = fmt::format("/tmp/auterity-connector-bench-{}", ::getpid());
  app.add_option("--concurrency", concurrency, "Worker concurrency values to run")
      ->delimiter(',')
      ->check(CLI::Range(size_t{1}, worker_concurrency_max));
  app.add_option("--executions", executions, "Executions (one http step each) per run")
      ->check(CLI::Range(1, 100000));
  app.add_option("--remote-ms", remote_ms, "How long the remote service takes per call")
      ->check(CLI::Range(0, 10000));
  app.add_option("--dir", dir, "Scratch data directory (removed)");
  CLI11_PARSE(app, argc, argv);

  testing::service_process remote({"python3", AUTERITY_FAKE_SERVICES});
  if (remote.port() == 0) {
    fmt::print(stderr, "connector_bench: {}\n", remote.error());
    return 2;
  }
  const std::string url = remote.url(fmt::format("/delay/{}", remote_ms));
  fmt::print("{} executions, one http step each, remote {} ms per call, 2 partitions\n", executions,
             remote_ms);
  fmt::print("{:>12} {:>10} {:>12} {:>14}\n", "concurrency", "seconds", "calls/s", "ideal calls/s");
  for (size_t run = 0; run < concurrency.size(); ++run) {
    const size_t c = concurrency[run];
    const outcome o = run_once(url, c, executions, dir, run);
    const double ideal = remote_ms > 0 ? 1000.0 * static_cast<double>(c) / remote_ms : 0;
    fmt::print("{:>12} {:>10.2f} {:>12.0f} {:>14.0f}{}\n", c, o.seconds,
               static_cast<double>(o.succeeded) / o.seconds, ideal,
               o.succeeded == executions
                   ? ""
                   : fmt::format("  ({} of {} succeeded)", o.succeeded, executions));
  }
  std::filesystem::remove_all(dir);
  return 0;
}
