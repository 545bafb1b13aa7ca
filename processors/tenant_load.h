#pragma once
// Per-tenant values of one partition that /metrics exports with bounded label cardinality
// (README.md, "Metrics"; docs/tenant-moves.md, "Seeing load"): the orchestrator's state keeps
// them current on its apply path, copies the tenants that changed at each flush into a
// `published_by_tenant` view, and a scrape takes the k tenants that rank first from that copy
// (`top_k`). Used for the AI spend (the tenants nearest their budget) and for the load (the
// busiest tenants over a sliding window, the others summed under one label value).
//
// The load of a tenant on a partition:
// - inputs: records of the tenant this partition's orchestrator read (ingress commands, acks,
//   signals; forwarded ones included), counted as they are decided, since the partition was
//   opened by this process;
// - events: events of the tenant applied to the state since the partition was opened (a
//   restore's replay of the log tail counts too: the one apply path of live and replay);
// - running: the tenant's running executions here, from the state: counted at open (one pass
//   over the stored executions) and kept by the appliers (an execution started, ended, a tenant
//   moved in or out), so it equals what the state holds, live or replayed;
// - recent: inputs + events per minute over the last tenant_load_window_ms, by the records' own
//   time (an input's decision time, an event's timestamp: replayed events of the past are not
//   recent). What "busiest" ranks by.

#include <algorithm>
#include <array>
#include <cstdint>
#include <mutex>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

namespace auterity {

// The sliding window the busiest tenants are ranked over: tenant_load_buckets buckets of
// tenant_load_bucket_ms each (5 minutes).
inline constexpr int64_t tenant_load_bucket_ms = 60'000;
inline constexpr size_t tenant_load_buckets = 5;
inline constexpr int64_t tenant_load_window_ms =
    tenant_load_bucket_ms * static_cast<int64_t>(tenant_load_buckets);

struct tenant_activity {
  uint64_t inputs = 0;
  uint64_t events = 0;
  uint64_t running = 0;
  std::array<uint64_t, tenant_load_buckets> buckets{};  // inputs + events per bucket
  int64_t latest_bucket = 0;                            // index (ms / bucket_ms) of the newest

  // Adds n inputs or events at `at_ms` to the window (older than the window: not counted).
  void note_recent(int64_t at_ms, uint64_t n) {
    const int64_t b = at_ms / tenant_load_bucket_ms;
    const auto size = static_cast<int64_t>(tenant_load_buckets);
    if (b > latest_bucket) {
      for (int64_t i = std::max(latest_bucket + 1, b - size + 1); i <= b; ++i) {
        buckets[static_cast<size_t>(i % size)] = 0;
      }
      latest_bucket = b;
    } else if (latest_bucket - b >= size) {
      return;
    }
    buckets[static_cast<size_t>(b % size)] += n;
  }
  // Inputs + events in the window ending at `now_ms`.
  uint64_t recent(int64_t now_ms) const {
    const int64_t b = now_ms / tenant_load_bucket_ms;
    const auto size = static_cast<int64_t>(tenant_load_buckets);
    uint64_t sum = 0;
    const int64_t last = std::min(latest_bucket, b);
    for (int64_t i = std::max(latest_bucket - size + 1, b - size + 1); i <= last; ++i) {
      if (i >= 0) sum += buckets[static_cast<size_t>(i % size)];
    }
    return sum;
  }
  bool operator==(const tenant_activity&) const = default;
};

// Sorts `v` by `first` and keeps the k that rank first (O(n log k)).
template <class T, class First>
void top_k(std::vector<T>& v, size_t k, First first) {
  if (v.size() > k) {
    std::partial_sort(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(k), v.end(), first);
    v.resize(k);
  } else {
    std::sort(v.begin(), v.end(), first);
  }
}

// A copy of per-tenant values for readers on other threads, updated at each flush with the
// tenants that changed (few per batch).
template <class V>
class published_by_tenant {
 public:
  // Takes each tenant of `changed` from `all` (absent there: dropped here too).
  void publish(const std::set<std::string>& changed,
               const std::unordered_map<std::string, V>& all) {
    if (changed.empty()) return;
    std::lock_guard lock(_mu);
    for (const std::string& tenant : changed) {
      if (auto it = all.find(tenant); it != all.end()) {
        _values.insert_or_assign(tenant, it->second);
      } else {
        _values.erase(tenant);
      }
    }
  }
  // Calls fn(tenant, value) for every tenant, under the lock.
  template <class Fn>
  void for_each(Fn fn) const {
    std::lock_guard lock(_mu);
    for (const auto& [tenant, v] : _values) fn(tenant, v);
  }
  size_t size() const {
    std::lock_guard lock(_mu);
    return _values.size();
  }

 private:
  mutable std::mutex _mu;
  std::unordered_map<std::string, V> _values;
};

}  // namespace auterity
