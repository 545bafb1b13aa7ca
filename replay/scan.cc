#include "replay/scan.h"

#include <algorithm>
#include <atomic>
#include <thread>

#include "replay/progress.h"

namespace auterity {

stream_reader::stream_reader(log& l, stream s, uint32_t partition, uint64_t from, uint64_t end,
                             progress* p)
    : _log(l), _s(s), _partition(partition), _next(from), _end(end), _progress(p) {}

result<std::span<const record>> stream_reader::next() {
  _batch.clear();
  if (_next >= _end) return std::span<const record>();
  const uint64_t want = std::min<uint64_t>(scan_batch_records_max, _end - _next);
  auto n = _log.read(_s, _partition, _next, want, scan_batch_bytes_max, _batch);
  if (!n) return std::unexpected(n.error());
  // Records past `end` (a backend that ignored max_records) are not ours to show.
  while (!_batch.empty() && _batch.back().offset >= _end) _batch.pop_back();
  if (_batch.empty()) {
    _next = _end;  // nothing readable below `end`: the stream ends early
    return std::span<const record>();
  }
  _next = _batch.back().offset + 1;
  if (_progress) _progress->add(_batch.size());
  return std::span<const record>(_batch);
}

// --------------------------------------------------------------------------------- merged

merged_reader::merged_reader(log& l, uint32_t partition, std::span<const stream> streams,
                             progress* p)
    : _partition(partition) {
  _cursors.reserve(streams.size());
  for (stream s : streams) {
    // Without an answer for the end, read until the log has nothing more: a broker that does
    // not answer then fails the reads, which report it.
    const uint64_t end = l.end_offset(s, partition).value_or(UINT64_MAX);
    _cursors.push_back(
        cursor{stream_reader(l, s, partition, 0, end, p), {}, 0, false, nullptr, INT64_MIN, {}});
  }
}

// Makes the cursor's head record decoded and ready, reading the next batch if needed.
result<void> merged_reader::fill(cursor& c) {
  if (c.done || c.pos < c.batch.size()) {
    if (!c.done && !c.env && c.why.empty()) {
      c.env = decode_envelope(c.batch[c.pos].value, &c.why);
      if (c.env) c.ts = c.env->timestamp_ms();  // undecodable: keeps the previous time
    }
    return {};
  }
  auto batch = c.reader.next();
  if (!batch) return std::unexpected(batch.error());
  c.batch = *batch;
  c.pos = 0;
  if (c.batch.empty()) {
    c.done = true;
    return {};
  }
  return fill(c);
}

result<std::optional<scanned_record>> merged_reader::next() {
  if (_current != SIZE_MAX) {  // the record handed out last time is consumed now
    cursor& c = _cursors[_current];
    ++c.pos;
    c.env = nullptr;
    c.why.clear();
    _current = SIZE_MAX;
  }
  size_t best = SIZE_MAX;
  for (size_t i = 0; i < _cursors.size(); ++i) {
    if (auto r = fill(_cursors[i]); !r) return std::unexpected(r.error());
    const cursor& c = _cursors[i];
    if (c.done) continue;
    // Ties keep the order of `streams`: the caller lists causes before effects.
    if (best == SIZE_MAX || c.ts < _cursors[best].ts) best = i;
  }
  if (best != SIZE_MAX) best = pull_cause(best);
  if (best == SIZE_MAX) return std::optional<scanned_record>();
  _current = best;
  cursor& c = _cursors[best];
  return std::optional<scanned_record>(
      scanned_record{c.reader.which(), _partition, &c.batch[c.pos], c.env, &c.why});
}

// Records of one millisecond cannot be ordered by time. If the chosen record answers another
// stream's head (an event caused by an ack, an ack answering a command), that head goes
// first, so a timeline reads cause before effect.
size_t merged_reader::pull_cause(size_t chosen) const {
  for (size_t hops = 0; hops < _cursors.size(); ++hops) {
    const cursor& c = _cursors[chosen];
    if (!c.env || !c.env->causation_id()) return chosen;
    const std::string_view cause = sv(c.env->causation_id());
    size_t found = SIZE_MAX;
    for (size_t i = 0; i < _cursors.size() && found == SIZE_MAX; ++i) {
      const cursor& o = _cursors[i];
      if (i != chosen && !o.done && o.env && o.ts <= c.ts && sv(o.env->record_id()) == cause) {
        found = i;
      }
    }
    if (found == SIZE_MAX) return chosen;
    chosen = found;
  }
  return chosen;
}

// ------------------------------------------------------------------------------- threads

unsigned default_threads(size_t partitions) {
  const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  return static_cast<unsigned>(std::clamp<size_t>(partitions, 1, cores));
}

result<void> for_each_partition(std::span<const uint32_t> partitions, unsigned threads,
                                const std::function<result<void>(uint32_t partition)>& fn) {
  if (partitions.empty()) return {};
  if (threads == 0) threads = default_threads(partitions.size());
  threads = static_cast<unsigned>(std::min<size_t>(threads, partitions.size()));
  std::vector<result<void>> results(partitions.size());
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t i = next++; i < partitions.size(); i = next++) results[i] = fn(partitions[i]);
  };
  std::vector<std::thread> pool;
  for (unsigned t = 1; t < threads; ++t) pool.emplace_back(work);
  work();  // the calling thread takes its share
  for (std::thread& t : pool) t.join();
  for (auto& r : results) {
    if (!r) return r;
  }
  return {};
}

}  // namespace auterity
