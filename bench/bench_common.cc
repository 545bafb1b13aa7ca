#include "bench/bench_common.h"

#include <pthread.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <fstream>

#include <fmt/core.h>

#include "engine/assert.h"
#include "processors/client.h"

namespace auterity::bench {
namespace {

constexpr size_t submit_batch_records_max = 1024;  // StartExecution records per setup commit

ack_result success_ack() {
  ack_result r;
  r.status = fbs::AckStatus::Success;
  r.output_json = "{}";
  return r;
}

}  // namespace

std::atomic<bool> interrupted{false};
void on_signal(int) { interrupted = true; }

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

double ratio(double a, double b) { return b > 0 ? a / b : 0; }

std::string first_line(const std::filesystem::path& p) {
  std::ifstream in(p);
  std::string line;
  std::getline(in, line);
  return line;
}

uint64_t machine_busy_ticks() {
  std::ifstream in("/proc/stat");
  std::string cpu;
  uint64_t v[8] = {};
  in >> cpu;
  for (uint64_t& x : v) in >> x;
  return v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
}

// ------------------------------------------------------------------------------- workload

uint32_t fanout_items = 0;

std::string fanout_workflow_json() {
  return fmt::format(
      R"({{"workflow":"{}","version":1,"steps":[{{"id":"s0","kind":"foreach","items":"input.items",)"
      R"("concurrency":100,"do":{{"kind":"task","action":"transform","input":{{"n":"{{{{index}}}}"}}}}}}]}})",
      workflow_name);
}

std::string linear_workflow_json(uint32_t steps) {
  if (fanout_items) return fanout_workflow_json();
  std::string out = fmt::format(R"({{"workflow":"{}","version":1,"steps":[)", workflow_name);
  for (uint32_t i = 0; i < steps; ++i) {
    const std::string after = i == 0 ? "" : fmt::format(R"(,"after":["s{}"])", i - 1);
    out += fmt::format(
        R"({}{{"id":"s{}","kind":"task","action":"transform","input":{{"n":"{{{{input.n}}}}"}}{}}})",
        i == 0 ? "" : ",", i, after);
  }
  return out + "]}";
}

std::vector<std::string> pick_tenants(uint32_t wanted, uint32_t partitions) {
  const uint32_t per_partition = std::max<uint32_t>(1, (wanted + partitions - 1) / partitions);
  std::vector<uint32_t> have(partitions, 0);
  std::vector<std::string> out;
  for (uint32_t i = 0; out.size() < size_t{per_partition} * partitions; ++i) {
    std::string name = fmt::format("dealer-{}", i);
    const uint32_t p = tenant_partition(name, partitions);
    if (have[p] == per_partition) continue;
    ++have[p];
    out.push_back(std::move(name));
  }
  return out;
}

std::string execution_id(uint32_t index) { return fmt::format("x{}", index); }

std::optional<uint32_t> execution_index(std::string_view id) {
  uint32_t v = 0;
  if (id.size() < 2 || id[0] != 'x') return std::nullopt;
  auto [end, ec] = std::from_chars(id.data() + 1, id.data() + id.size(), v);
  if (ec != std::errc() || end != id.data() + id.size()) return std::nullopt;
  return v;
}

std::string start_command(std::string_view tenant, uint32_t index) {
  const std::string id = execution_id(index);
  const std::string request = "start-" + id;
  std::string input = fmt::format(R"({{"n":{}}})", index);
  if (fanout_items) {
    input = fmt::format(R"({{"n":{},"items":[)", index);
    for (uint32_t i = 0; i < fanout_items; ++i) input += fmt::format("{}{}", i ? "," : "", i);
    input += "]}";
  }
  return client::start_execution({tenant, id, request, 0}, workflow_name, 0, input);
}

result<void> publish(log& l, const std::vector<std::string>& tenants, uint32_t steps) {
  const std::string definition = linear_workflow_json(steps);
  for (const std::string& t : tenants) {
    const std::string request = "publish-" + t;
    auto r = client::submit(l, t, client::publish_definition({t, "", request, 0}, definition));
    if (!r) return r;
  }
  return {};
}

result<void> submit_starts(log& l, const std::vector<std::string>& tenants, workload& w) {
  std::vector<commit_batch> batches(l.partition_count());
  auto flush = [&](uint32_t p) -> result<void> {
    auto r = l.commit(p, batches[p]);
    batches[p].clear();
    if (!r) return std::unexpected(r.error());
    return {};
  };
  for (uint32_t n = 0; n < w.in_flight; ++n) {
    const uint32_t i = *w.take_index();
    const std::string& t = tenants[i % tenants.size()];
    const uint32_t p = tenant_partition(t, l.partition_count());
    batches[p].add(stream::ingress, t, start_command(t, i));
    if (batches[p].appends.size() >= submit_batch_records_max) {
      if (auto r = flush(p); !r) return r;
    }
  }
  for (uint32_t p = 0; p < l.partition_count(); ++p) {
    if (auto r = flush(p); !r) return r;
  }
  return {};
}

// ---------------------------------------------------------------------------------- acks

ack_writer::ack_writer(std::vector<int64_t>& ack_commit_ns, workload& w)
    : _ack_commit_ns(ack_commit_ns), _workload(w), _success(success_ack()) {}

void ack_writer::add(const std::vector<record>& commands, int64_t read_ns, commit_batch& out) {
  _indexes.clear();
  for (const record& r : commands) ack_one(r, read_ns, out);
}

void ack_writer::committed(int64_t committed_ns) {
  for (uint32_t i : _indexes) _ack_commit_ns[i] = committed_ns;
}

void ack_writer::ack_one(const record& r, int64_t read_ns, commit_batch& out) {
  const fbs::Envelope* env = decode_envelope(r.value);
  vassert(env != nullptr, "undecodable command at offset {}", r.offset);
  const auto index = execution_index(sv(env->execution_id()));
  vassert(index && *index < _ack_commit_ns.size(), "command for unknown execution '{}'",
          sv(env->execution_id()));
  if (const int64_t acked = _ack_commit_ns[*index]; acked != 0) {
    _samples.push_back({read_ns, read_ns - acked});
  }
  _indexes.push_back(*index);
  out.add(stream::acks, r.key, make_ack(*env, _success, _clock.now_ms()));
  const auto* run_step = env->payload_as_RunStep();
  vassert(run_step != nullptr, "command at offset {} is not a RunStep", r.offset);
  if (sv(run_step->step()) == _workload.last_step) start_next(sv(env->tenant_id()), out);
}

void ack_writer::start_next(std::string_view tenant, commit_batch& out) {
  if (_workload.in_flight == _workload.executions) return;  // all started up front
  if (auto i = _workload.take_index()) {
    out.add(stream::ingress, std::string(tenant), start_command(tenant, *i));
  }
}

acker_base::~acker_base() { stop(); }

void acker_base::start() {
  _thread = std::thread([this] {
    pthread_setname_np(pthread_self(), "bench-acker");
    while (!_stop.load(std::memory_order_relaxed)) run_once();
  });
}

void acker_base::stop() {
  _stop = true;
  if (_thread.joinable()) _thread.join();
}

// ------------------------------------------------------------------------------- sampling

void add_orchestrator(node& n, uint32_t p, totals& t) {
  const orchestrator_probe& o = n.orchestrator_of(p).probe();
  t.transitions += o.step_transitions.load(std::memory_order_relaxed);
  t.started += o.executions_started.load(std::memory_order_relaxed);
  t.ended += o.executions_ended.load(std::memory_order_relaxed);
  t.stale_acks += o.stale_acks.load(std::memory_order_relaxed);
  t.rejections += o.rejections.load(std::memory_order_relaxed);
  t.deadletters += o.deadletters.load(std::memory_order_relaxed);
  const partition_probe& r = n.partition(p).probe();
  t.orchestrator_commits += r.batches.load(std::memory_order_relaxed);
  t.orchestrator_inputs += r.inputs.load(std::memory_order_relaxed);
  t.orchestrator_records_out += r.records_out.load(std::memory_order_relaxed);
  t.orchestrator_commit_us += r.commit_us_total.load(std::memory_order_relaxed);
}

void add_acker(const acker_counters& c, totals& t) {
  t.acker_commits += c.commits.load(std::memory_order_relaxed);
  t.acks += c.acks.load(std::memory_order_relaxed);
  t.acker_records += c.records.load(std::memory_order_relaxed);
  t.acker_commit_us += c.commit_us.load(std::memory_order_relaxed);
}

// -------------------------------------------------------------------------------- results

double percentile_ms(std::vector<int64_t>& v, double q) {
  if (v.empty()) return 0;
  std::ranges::sort(v);
  return static_cast<double>(v[std::min(v.size() - 1, static_cast<size_t>(q * v.size()))]) / 1e6;
}

latency_summary summarize_latency(std::vector<int64_t> latencies_ns) {
  latency_summary out;
  out.count = latencies_ns.size();
  if (latencies_ns.empty()) return out;
  out.p50_ms = percentile_ms(latencies_ns, 0.50);
  out.p90_ms = percentile_ms(latencies_ns, 0.90);
  out.p99_ms = percentile_ms(latencies_ns, 0.99);
  out.max_ms = static_cast<double>(latencies_ns.back()) / 1e6;
  return out;
}

}  // namespace auterity::bench
