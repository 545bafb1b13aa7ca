#pragma once
// Metrics: a Prometheus /metrics endpoint over the probes the runtimes already keep.
//
// Nothing here is on a hot path except atomic_histogram::observe(). The runtimes count in
// their probes (relaxed atomics); on each scrape the server calls one collector, registered
// by whoever composes the process (the node), which reads the probes into a metrics_writer;
// the server turns that into the Prometheus text format (prometheus-cpp, kept out of this
// header). Metric names and meanings: README.md, "Metrics".

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "engine/result.h"

namespace auterity {

enum class stream : uint8_t;
class log;
struct partition_probe;
struct worker_probe;

// What a histogram held at one moment, in the exported unit.
struct histogram_snapshot {
  std::vector<std::pair<double, uint64_t>> buckets;  // (upper bound, cumulative count)
  uint64_t count = 0;  // every sample, including those above the last bound
  double sum = 0;
};

// A histogram for hot paths: fixed bucket bounds, observe() is three relaxed atomic adds, no
// lock, no allocation. A scrape may see a sample's bucket before its sum; snapshot() derives
// the count from the buckets so the exposition is always self-consistent.
class atomic_histogram {
 public:
  static constexpr size_t bounds_max = 24;

  // `bounds`: ascending inclusive upper bounds (Prometheus "le"), at most bounds_max.
  explicit atomic_histogram(std::span<const uint64_t> bounds);

  void observe(uint64_t value) {
    size_t i = 0;
    while (i < _size && value > _bounds[i]) ++i;
    _counts[i].fetch_add(1, std::memory_order_relaxed);
    _sum.fetch_add(value, std::memory_order_relaxed);
  }

  // Bounds and sum are divided by `per_unit`, observed units per exported unit (1e6:
  // microseconds to seconds; a division keeps bounds like 0.0001 exact in the text).
  histogram_snapshot snapshot(double per_unit = 1.0) const;

 private:
  std::array<uint64_t, bounds_max> _bounds{};
  size_t _size = 0;
  std::array<std::atomic<uint64_t>, bounds_max + 1> _counts{};  // last: above every bound
  std::atomic<uint64_t> _sum{0};
};

enum class metric_kind : uint8_t { counter, gauge, histogram };

// One metric family: its name, help text and type (the samples carry the labels).
struct metric_def {
  std::string_view name;
  std::string_view help;
  metric_kind kind;
};

using metric_labels = std::vector<std::pair<std::string, std::string>>;

struct metric_sample {
  metric_labels labels;
  double value = 0;              // counter, gauge
  histogram_snapshot histogram;  // histogram
};

struct metric_family {
  metric_def def;
  std::vector<metric_sample> samples;
};

// What a collector fills on each scrape. Samples of one family may come in any order.
class metrics_writer {
 public:
  void add(const metric_def& def, metric_labels labels, double value);
  void add(const metric_def& def, metric_labels labels, histogram_snapshot h);
  const std::vector<metric_family>& families() const { return _families; }

 private:
  metric_family& family(const metric_def& def);
  std::vector<metric_family> _families;
};

// The engine's own probes, for the composing collector to call.
void collect_partition(metrics_writer& w, uint32_t partition, const partition_probe& probe);
void collect_worker(metrics_writer& w, std::string_view group, stream commands,
                    const worker_probe& probe);
// What the embedded log's recoveries in this process moved to quarantine (bytes, files).
void collect_log_quarantine(metrics_writer& w);
// Lag of `group` on (s, partition): the log's end offset minus `position`, the group's
// committed next offset. Asks the log for the end offset (Kafka: a broker round trip).
void collect_lag(metrics_writer& w, log& l, std::string_view group, stream s, uint32_t partition,
                 uint64_t position);

using metrics_collector = std::function<void(metrics_writer&)>;

// Readiness for GET /ready: nullopt when ready, else why not (e.g. "partition 3 restoring").
// Runs on the server's thread, per request; it must not wait for long.
using readiness_check = std::function<std::optional<std::string>()>;

// "127.0.0.1:9464" is the conventional address; empty or "0" means metrics are off.
inline constexpr std::string_view metrics_address_default = "127.0.0.1:9464";
bool metrics_enabled(std::string_view address);

// An HTTP server answering GET /metrics. The collector runs on the server's thread, one scrape
// at a time; it must only read thread-safe things (probes, the log). With a readiness check it
// also answers GET /ready: 200 "ready", or 503 "not ready: <why>" (a load balancer's or
// Kubernetes' readiness probe).
class metrics_server {
 public:
  // Listens on `address`, "host:port" (port 0: any free port, see port()).
  static result<std::unique_ptr<metrics_server>> start(const std::string& address,
                                                       metrics_collector collect,
                                                       readiness_check ready = {});
  // Stops listening and waits for a scrape in progress.
  ~metrics_server();

  uint16_t port() const;  // the port listened on

  struct impl;

 private:
  explicit metrics_server(std::unique_ptr<impl> i);
  std::unique_ptr<impl> _impl;
};

}  // namespace auterity
