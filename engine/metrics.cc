// The metrics server: prometheus-cpp's Exposer (civetweb) serving one Collectable that runs
// the collector on every scrape. No prometheus-cpp registry: the probes already hold the
// values, so a scrape converts them instead of mirroring them into a second set of counters.

#include "engine/metrics.h"

#include <CivetServer.h>
#include <civetweb.h>
#include <prometheus/collectable.h>
#include <prometheus/exposer.h>
#include <prometheus/metric_family.h>

#include <algorithm>
#include <charconv>
#include <exception>
#include <limits>
#include <map>
#include <mutex>

#include <fmt/core.h>

#include "engine/assert.h"
#include "engine/embedded_log.h"
#include "engine/log.h"
#include "engine/partition_runtime.h"
#include "engine/worker_runtime.h"

namespace auterity {

// ------------------------------------------------------------------------------- histogram

atomic_histogram::atomic_histogram(std::span<const uint64_t> bounds) : _size(bounds.size()) {
  vassert(bounds.size() <= bounds_max, "histogram with {} bounds; bounds_max is {}", bounds.size(),
          bounds_max);
  vassert(std::is_sorted(bounds.begin(), bounds.end()), "histogram bounds must ascend");
  std::copy(bounds.begin(), bounds.end(), _bounds.begin());
}

histogram_snapshot atomic_histogram::snapshot(double per_unit) const {
  histogram_snapshot s;
  uint64_t cumulative = 0;
  for (size_t i = 0; i < _size; ++i) {
    cumulative += _counts[i].load(std::memory_order_relaxed);
    s.buckets.emplace_back(static_cast<double>(_bounds[i]) / per_unit, cumulative);
  }
  s.count = cumulative + _counts[_size].load(std::memory_order_relaxed);
  s.sum = static_cast<double>(_sum.load(std::memory_order_relaxed)) / per_unit;
  return s;
}

// ---------------------------------------------------------------------------------- writer

metric_family& metrics_writer::family(const metric_def& def) {
  for (metric_family& f : _families) {
    if (f.def.name != def.name) continue;
    vassert(f.def.kind == def.kind, "metric {} written with two types", def.name);
    return f;
  }
  return _families.emplace_back(metric_family{def, {}});
}

void metrics_writer::add(const metric_def& def, metric_labels labels, double value) {
  vassert(def.kind != metric_kind::histogram, "metric {}: a histogram needs a snapshot", def.name);
  family(def).samples.push_back(metric_sample{std::move(labels), value, {}});
}

void metrics_writer::add(const metric_def& def, metric_labels labels, histogram_snapshot h) {
  vassert(def.kind == metric_kind::histogram, "metric {} is not a histogram", def.name);
  family(def).samples.push_back(metric_sample{std::move(labels), 0, std::move(h)});
}

// ------------------------------------------------------------------- the engine's metrics

namespace {

constexpr metric_def inputs_total{
    "auterity_inputs_total",
    "Input records (ingress commands and acks) the partition processed; rate() is records/s",
    metric_kind::counter};
constexpr metric_def events_total{"auterity_events_total",
                                  "Records appended to executions (events and rejections)",
                                  metric_kind::counter};
constexpr metric_def records_out_total{
    "auterity_records_out_total",
    "Records the partition's commits appended (events, commands, deadletters)",
    metric_kind::counter};
constexpr metric_def commit_duration{
    "auterity_commit_duration_seconds",
    "Time of one log commit (embedded: write + fdatasync; Kafka: the transaction, including "
    "the wait to join a group commit)",
    metric_kind::histogram};
constexpr metric_def commit_records{"auterity_commit_records", "Records appended per commit",
                                    metric_kind::histogram};
constexpr metric_def restore_duration{
    "auterity_restore_duration_seconds",
    "How long the partition's last restore took (state checkpoint, then replay of executions)",
    metric_kind::gauge};
constexpr metric_def restore_replayed{
    "auterity_restore_replayed_records",
    "executions records the partition's restore replayed through the appliers", metric_kind::gauge};
constexpr metric_def restore_wait{
    "auterity_restore_wait_seconds",
    "Of the partition's last restore: time spent reading stable positions and waiting for an "
    "earlier owner's open transaction to be decided (docs/ownership-handover.md)",
    metric_kind::gauge};
constexpr metric_def read_errors{"auterity_partition_read_errors_total",
                                 "Reads of a partition's inputs that failed and were tried again",
                                 metric_kind::counter};
constexpr metric_def worker_errors{
    "auterity_worker_errors_total",
    "Worker rounds that failed (read or commit) and were tried again from the committed positions",
    metric_kind::counter};
constexpr metric_def consumer_lag{
    "auterity_consumer_lag_records",
    "End offset of the stream minus the group's committed position (Kafka: the high "
    "watermark, so up to one record per transaction marker too high)",
    metric_kind::gauge};
constexpr metric_def worker_commands{
    "auterity_worker_commands_total",
    "Commands a connector worker finished, by outcome (succeeded, failed, deadletter)",
    metric_kind::counter};
constexpr metric_def worker_deadlines{
    "auterity_worker_deadline_misses_total",
    "Commands acked retryable for their deadline: `exceeded` (the connector answered late), "
    "`passed` (already due when read; the connector was not called)",
    metric_kind::counter};
constexpr metric_def worker_call_duration{
    "auterity_connector_call_duration_seconds",
    "Time of one connector call (the remote service's answer included)", metric_kind::histogram};
constexpr metric_def worker_exceptions{"auterity_worker_connector_exceptions_total",
                                       "Connector calls that threw (acked as retryable failures)",
                                       metric_kind::counter};
constexpr metric_def log_quarantined_bytes{
    "auterity_log_quarantined_bytes_total",
    "Bytes of torn log tails that recovery moved to <data>/log/quarantine/ before cutting them "
    "(embedded log)",
    metric_kind::counter};
constexpr metric_def log_quarantined_files{
    "auterity_log_quarantined_files_total",
    "Quarantine files recovery wrote, one per torn partition tail (embedded log)",
    metric_kind::counter};
constexpr metric_def worker_in_flight{
    "auterity_worker_in_flight", "Commands in a connector call now (bounded by the concurrency)",
    metric_kind::gauge};

std::string partition_label(uint32_t p) { return std::to_string(p); }

double value_of(const std::atomic<uint64_t>& a) {
  return static_cast<double>(a.load(std::memory_order_relaxed));
}

}  // namespace

void collect_partition(metrics_writer& w, uint32_t partition, const partition_probe& probe) {
  const metric_labels l = {{"partition", partition_label(partition)}};
  w.add(inputs_total, l, value_of(probe.inputs));
  w.add(events_total, l, value_of(probe.events));
  w.add(records_out_total, l, value_of(probe.records_out));
  w.add(read_errors, l, value_of(probe.read_errors));
  w.add(commit_duration, l, probe.commit_latency_us.snapshot(1e6));
  w.add(commit_records, l, probe.commit_records.snapshot());
  if (!probe.restored.load(std::memory_order_relaxed)) return;
  w.add(restore_duration, l, value_of(probe.restore_ms) / 1000.0);
  w.add(restore_replayed, l, value_of(probe.replayed));
  w.add(restore_wait, l, value_of(probe.restore_wait_ms) / 1000.0);
}

void collect_log_quarantine(metrics_writer& w) {
  w.add(log_quarantined_bytes, {}, static_cast<double>(embedded_log_quarantined_bytes()));
  w.add(log_quarantined_files, {}, static_cast<double>(embedded_log_quarantined_files()));
}

void collect_lag(metrics_writer& w, log& l, std::string_view group, stream s, uint32_t partition,
                 uint64_t position) {
  auto end = l.end_offset(s, partition);
  if (!end) return;  // the broker does not answer: no sample rather than a wrong one
  const double lag = *end > position ? static_cast<double>(*end - position) : 0.0;
  w.add(consumer_lag,
        {{"group", std::string(group)},
         {"stream", std::string(stream_name(s))},
         {"partition", partition_label(partition)}},
        lag);
}

void collect_worker(metrics_writer& w, std::string_view group, stream commands,
                    const worker_probe& probe) {
  const std::pair<const char*, const std::atomic<uint64_t>*> outcomes[] = {
      {"succeeded", &probe.succeeded},
      {"failed", &probe.failed},
      {"deadletter", &probe.deadletters}};
  for (const auto& [outcome, counter] : outcomes) {
    w.add(worker_commands,
          {{"group", std::string(group)},
           {"stream", std::string(stream_name(commands))},
           {"outcome", outcome}},
          value_of(*counter));
  }
  const metric_labels labels = {{"group", std::string(group)},
                                {"stream", std::string(stream_name(commands))}};
  metric_labels exceeded = labels, passed = labels;
  exceeded.emplace_back("kind", "exceeded");
  passed.emplace_back("kind", "passed");
  w.add(worker_deadlines, exceeded, value_of(probe.deadline_exceeded));
  w.add(worker_deadlines, passed, value_of(probe.deadline_passed));
  w.add(worker_exceptions, labels, value_of(probe.connector_exceptions));
  w.add(worker_in_flight, labels, value_of(probe.in_flight));
  w.add(worker_errors, labels, value_of(probe.errors));
  w.add(worker_call_duration, labels, probe.call_latency_us.snapshot(1e6));
}

// ---------------------------------------------------------------------------------- server

bool metrics_enabled(std::string_view address) { return !address.empty() && address != "0"; }

namespace {

prometheus::MetricType type_of(metric_kind k) {
  switch (k) {
    case metric_kind::counter:
      return prometheus::MetricType::Counter;
    case metric_kind::gauge:
      return prometheus::MetricType::Gauge;
    case metric_kind::histogram:
      return prometheus::MetricType::Histogram;
  }
  return prometheus::MetricType::Untyped;
}

prometheus::ClientMetric::Histogram to_histogram(const histogram_snapshot& h) {
  prometheus::ClientMetric::Histogram out;
  out.sample_count = h.count;
  out.sample_sum = h.sum;
  for (const auto& [bound, cumulative] : h.buckets) out.bucket.push_back({cumulative, bound});
  out.bucket.push_back({h.count, std::numeric_limits<double>::infinity()});
  return out;
}

prometheus::ClientMetric to_metric(metric_kind k, const metric_sample& s) {
  prometheus::ClientMetric m;
  for (const auto& [name, value] : s.labels) m.label.push_back({name, value});
  if (k == metric_kind::counter) m.counter.value = s.value;
  if (k == metric_kind::gauge) m.gauge.value = s.value;
  if (k == metric_kind::histogram) m.histogram = to_histogram(s.histogram);
  return m;
}

prometheus::MetricFamily to_family(const metric_family& f) {
  prometheus::MetricFamily out;
  out.name = std::string(f.def.name);
  out.help = std::string(f.def.help);
  out.type = type_of(f.def.kind);
  for (const metric_sample& s : f.samples) out.metric.push_back(to_metric(f.def.kind, s));
  return out;
}

class collectable final : public prometheus::Collectable {
 public:
  explicit collectable(metrics_collector collect) : _collect(std::move(collect)) {}

  std::vector<prometheus::MetricFamily> Collect() const override {
    std::lock_guard lock(_mu);  // one scrape at a time: the collector need not be reentrant
    metrics_writer w;
    _collect(w);
    std::vector<prometheus::MetricFamily> out;
    for (const metric_family& f : w.families()) out.push_back(to_family(f));
    return out;
  }

 private:
  metrics_collector _collect;
  mutable std::mutex _mu;
};

// "host:port" with a numeric port; the host is checked by the bind.
result<void> check_address(const std::string& address) {
  const size_t colon = address.rfind(':');
  uint32_t port = 0;
  const char* first = address.data() + colon + 1;
  const char* last = address.data() + address.size();
  const bool ok = colon != std::string::npos && colon > 0 && first != last &&
                  std::from_chars(first, last, port).ptr == last && port <= 65535;
  if (ok) return {};
  return fail(errc::invalid,
              fmt::format("metrics address '{}': expected host:port, e.g. {} (port 0: any free "
                          "port; '0' alone: metrics off)",
                          address, metrics_address_default));
}

constexpr std::string_view metrics_threads = "2";  // a stuck client blocks one only
constexpr std::string_view metrics_request_timeout_ms = "10000";

// GET /ready. civetweb's callbacks carry no user pointer, so the checks are found by the port
// the request came in on (one entry per live server).
std::mutex g_ready_mu;
std::map<int, readiness_check> g_ready;  // by listening port; guarded by g_ready_mu

int answer_ready(mg_connection* conn) {
  const mg_request_info* req = mg_get_request_info(conn);
  if (!req || !req->local_uri || std::string_view(req->local_uri) != "/ready") return 0;
  std::optional<std::string> why = std::string("starting");
  {
    std::lock_guard lock(g_ready_mu);
    auto it = g_ready.find(req->server_port);
    if (it == g_ready.end()) return 0;  // no readiness check: /ready is not served here
    why = it->second();
  }
  const std::string body = why ? fmt::format("not ready: {}\n", *why) : "ready\n";
  mg_printf(conn,
            "HTTP/1.1 %s\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n"
            "Connection: close\r\n\r\n%s",
            why ? "503 Service Unavailable" : "200 OK", body.size(), body.c_str());
  return 200;
}

}  // namespace

struct metrics_server::impl {
  std::shared_ptr<collectable> source;
  CivetCallbacks callbacks;
  std::unique_ptr<prometheus::Exposer> exposer;
  int ready_port = 0;  // registered in g_ready; 0: none
};

metrics_server::metrics_server(std::unique_ptr<impl> i) : _impl(std::move(i)) {}

metrics_server::~metrics_server() {
  if (_impl->ready_port) {
    std::lock_guard lock(g_ready_mu);
    g_ready.erase(_impl->ready_port);
  }
  // The Exposer's destructor stops civetweb and joins its threads, so no scrape outlives us.
  _impl->exposer.reset();
}

result<std::unique_ptr<metrics_server>> metrics_server::start(const std::string& address,
                                                              metrics_collector collect,
                                                              readiness_check ready) {
  if (auto r = check_address(address); !r) return std::unexpected(r.error());
  auto i = std::make_unique<impl>();
  i->source = std::make_shared<collectable>(std::move(collect));
  i->callbacks.begin_request = answer_ready;
  try {
    i->exposer = std::make_unique<prometheus::Exposer>(
        std::vector<std::string>{"listening_ports", address, "num_threads",
                                 std::string(metrics_threads), "request_timeout_ms",
                                 std::string(metrics_request_timeout_ms)},
        &i->callbacks);
  } catch (const std::exception& e) {
    return fail(errc::io, fmt::format("metrics: cannot listen on {}: {}", address, e.what()));
  }
  i->exposer->RegisterCollectable(i->source);
  if (ready) {
    const std::vector<int> ports = i->exposer->GetListeningPorts();
    if (!ports.empty()) {
      std::lock_guard lock(g_ready_mu);
      i->ready_port = ports.front();
      g_ready[i->ready_port] = std::move(ready);
    }
  }
  return std::unique_ptr<metrics_server>(new metrics_server(std::move(i)));
}

uint16_t metrics_server::port() const {
  const std::vector<int> ports = _impl->exposer->GetListeningPorts();
  return ports.empty() ? 0 : static_cast<uint16_t>(ports.front());
}

}  // namespace auterity
