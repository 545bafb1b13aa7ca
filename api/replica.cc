#include "api/replica.h"

#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "engine/fault.h"
#include "engine/metrics.h"
#include "engine/record.h"
#include "replay/state_replay.h"

namespace auterity {

namespace {

// Longest start() waits for the records below a checkpoint to be decided before it reads the
// checkpoint's last record back (an open transaction of a recreated topic holds them back for
// at most the transaction timeout, 10 s on Kafka).
constexpr auto check_wait = std::chrono::milliseconds(20'000);

// What a checkpoint's meta and the rebuilder's own keys look like; another one is rebuilt.
constexpr int checkpoint_format = 1;

constexpr metric_def started_how{
    "auterity_replica_start",
    "1 for how the partition's read replica started: how=resumed (from its checkpoint) or the "
    "reason it was rebuilt from offset 0 (missing, unreadable, another_log, ahead_of_log, "
    "not_in_log)",
    metric_kind::gauge};
constexpr metric_def start_offset{
    "auterity_replica_start_offset",
    "executions offset the partition's read replica started reading at (0: rebuilt)",
    metric_kind::gauge};
constexpr metric_def applied_records{
    "auterity_replica_applied_records_total",
    "executions records the read replica read and applied since the gateway started",
    metric_kind::counter};
constexpr metric_def next_offset{"auterity_replica_next_offset",
                                 "executions offset after the last record the replica applied",
                                 metric_kind::gauge};
constexpr metric_def skipped_records{
    "auterity_replica_skipped_records_total",
    "executions records the read replica skipped (the appliers would refuse them)",
    metric_kind::counter};
constexpr metric_def caught_up_def{
    "auterity_replica_caught_up",
    "1 once every partition reached the end it saw at start (reads are served), else 0",
    metric_kind::gauge};
constexpr metric_def catch_up_seconds{
    "auterity_replica_catch_up_seconds",
    "time from the gateway's start until its read replica caught up (ms resolution)",
    metric_kind::gauge};

}  // namespace

std::string_view replica_start_name(replica_start s) {
  switch (s) {
    case replica_start::resumed:
      return "resumed";
    case replica_start::missing:
      return "missing";
    case replica_start::unreadable:
      return "unreadable";
    case replica_start::another_log:
      return "another_log";
    case replica_start::ahead_of_log:
      return "ahead_of_log";
    case replica_start::not_in_log:
      return "not_in_log";
  }
  return "?";
}

struct log_replica::part {
  uint32_t partition = 0;
  std::mutex mu;  // the rebuilder and its store: the thread's apply, the API's reads
  std::unique_ptr<state_rebuilder> rebuilder;
  uint64_t next = 0;     // offset after the last record applied
  uint64_t end0 = 0;     // the end seen at start: caught up once nothing below it is left
  bool decided = false;  // everything below end0 is committed or aborted
  bool caught = false;
  std::vector<record> recs;
  std::atomic<uint64_t> next_seen{0};  // `next`, for scrapes
  std::atomic<uint64_t> applied{0};    // records applied since start, for scrapes
};

// What a checkpoint says of where its state comes from: the log, the partition, and the last
// record applied (its offset and hash), so a restart can check that record is still there.
std::string log_replica::meta_of(uint32_t partition, const record& last) const {
  return nlohmann::json{{"format", checkpoint_format}, {"log", _identity},
                        {"partitions", _parts.size()}, {"partition", partition},
                        {"last_offset", last.offset},  {"last_sha256", hex(sha256(last.value))}}
      .dump();
}

result<replica_partition_start> log_replica::open_partition(part& pt, const std::string& dir,
                                                            uint32_t partitions) {
  const uint32_t p = pt.partition;
  // Why the checkpoint in `dir` cannot be resumed; nullopt if it can (into `resumed`).
  std::unique_ptr<state_rebuilder> resumed;
  auto check = [&]() -> result<std::optional<replica_partition_start>> {
    auto r = state_rebuilder::reopen(dir, p, partitions);
    if (!r) {
      if (r.error().code == errc::not_found) {
        return replica_partition_start{replica_start::missing, 0, "no checkpoint"};
      }
      // Another gateway with the same --data serves from it: nothing here is thrown away.
      if (r.error().code == errc::locked) return std::unexpected(r.error());
      return replica_partition_start{
          replica_start::unreadable, 0,
          fmt::format("the checkpoint does not open: {}", r.error().message)};
    }
    const uint64_t checkpoint = (*r)->store().checkpoint();
    if (checkpoint == 0) {  // no record applied yet, so no state either: nothing to check
      resumed = std::move(*r);
      return std::nullopt;
    }
    const auto meta = nlohmann::json::parse((*r)->meta(), nullptr, false);
    if (!meta.is_object() || meta.value("format", 0) != checkpoint_format ||
        !meta.contains("log") || !meta["log"].is_string() || !meta.contains("partitions") ||
        !meta["partitions"].is_number_unsigned() || !meta.contains("partition") ||
        !meta["partition"].is_number_unsigned() || !meta.contains("last_offset") ||
        !meta["last_offset"].is_number_unsigned() || !meta.contains("last_sha256") ||
        !meta["last_sha256"].is_string() || meta["last_offset"].get<uint64_t>() + 1 != checkpoint) {
      return replica_partition_start{
          replica_start::unreadable, 0,
          fmt::format("the checkpoint (offset {}) does not say which log it comes from, or is "
                      "of another format",
                      checkpoint)};
    }
    if (meta["log"].get<std::string>() != _identity) {
      return replica_partition_start{replica_start::another_log, 0,
                                     fmt::format("the checkpoint comes from {}, not {}",
                                                 meta["log"].get<std::string>(), _identity)};
    }
    if (meta["partitions"].get<uint64_t>() != partitions ||
        meta["partition"].get<uint64_t>() != p) {
      return replica_partition_start{
          replica_start::another_log, 0,
          fmt::format("the checkpoint comes from partition {} of {}, not {} of {}",
                      meta["partition"].get<uint64_t>(), meta["partitions"].get<uint64_t>(), p,
                      partitions)};
    }
    if (checkpoint > pt.end0) {
      return replica_partition_start{
          replica_start::ahead_of_log, 0,
          fmt::format("the checkpoint (offset {}) is past the log's end ({}): topics recreated?",
                      checkpoint, pt.end0)};
    }
    const uint64_t last = checkpoint - 1;
    if (auto d = _source->await_decided(stream::executions, p, checkpoint, check_wait); !d) {
      return std::unexpected(d.error());
    }
    std::vector<record> recs;
    auto n = _source->read_to(stream::executions, p, last, checkpoint, 1, record_bytes_max, recs);
    if (!n) return std::unexpected(n.error());
    if (recs.empty() || recs.front().offset != last ||
        hex(sha256(recs.front().value)) != meta["last_sha256"].get<std::string>()) {
      return replica_partition_start{
          replica_start::not_in_log, 0,
          fmt::format("the record at offset {} is not the one the checkpoint ends with: topics "
                      "recreated, or another cluster?",
                      last)};
    }
    resumed = std::move(*r);
    return std::nullopt;
  };
  auto why = check();
  if (!why) return std::unexpected(why.error());
  if (!*why) {
    pt.next = resumed->store().checkpoint();
    pt.rebuilder = std::move(resumed);
    pt.next_seen = pt.next;
    return replica_partition_start{replica_start::resumed, pt.next, ""};
  }
  auto b = state_rebuilder::open_resumable(dir, p, partitions);  // empties `dir` first
  if (!b) return std::unexpected(b.error());
  pt.rebuilder = std::move(*b);
  pt.next = 0;
  return std::move(**why);
}

result<std::unique_ptr<log_replica>> log_replica::start(std::unique_ptr<log> source,
                                                        const std::string& dir,
                                                        const std::string& identity) {
  std::unique_ptr<log_replica> r(new log_replica());
  r->_started = std::chrono::steady_clock::now();
  r->_identity = identity;
  r->_source = std::move(source);
  const uint32_t n = r->_source->partition_count();
  for (uint32_t p = 0; p < n; ++p) {
    auto pt = std::make_unique<part>();
    pt->partition = p;
    auto end = r->_source->end_offset(stream::executions, p);
    if (!end) return std::unexpected(end.error());
    pt->end0 = *end;
    r->_parts.push_back(std::move(pt));
  }
  for (uint32_t p = 0; p < n; ++p) {
    auto s = r->open_partition(*r->_parts[p], fmt::format("{}/p{:03}", dir, p), n);
    if (!s) {
      return fail(s.error().code, fmt::format("partition {}: {}", p, s.error().message));
    }
    r->_starts.push_back(std::move(*s));
  }
  r->_open_ms = static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                          std::chrono::steady_clock::now() - r->_started)
                                          .count());
  r->_thread = std::thread([raw = r.get()] { raw->run(); });
  return r;
}

log_replica::~log_replica() {
  if (auto s = stop(); !s) {
    fmt::print(stderr, "auterity: read replica: {} (the next start replays it)\n",
               s.error().message);
  }
}

result<void> log_replica::stop() {
  if (_stopped) return {};
  _stopped = true;
  _stop = true;
  if (_thread.joinable()) _thread.join();
  result<void> out;
  for (auto& pt : _parts) {
    std::lock_guard lock(pt->mu);
    if (!pt->rebuilder) continue;  // start() failed before it opened this one
    auto f = pt->rebuilder->store().flush_memtables();
    if (!f && out) out = std::unexpected(f.error());
    fault_point("replica.flushed");
  }
  return out;
}

bool log_replica::with_store(uint32_t p, const std::function<void(const state_store&)>& fn) {
  if (!_caught_up.load() || p >= _parts.size()) return false;
  part& pt = *_parts[p];
  std::lock_guard lock(pt.mu);
  fn(pt.rebuilder->store());
  return true;
}

std::string log_replica::last_error() const {
  std::lock_guard lock(_error_mu);
  return _error;
}

int64_t log_replica::step(part& pt) {
  auto fail = [&](const error& e) {
    std::lock_guard lock(_error_mu);
    _error = fmt::format("partition {}: {}", pt.partition, e.message);
    return int64_t{-1};
  };
  pt.recs.clear();
  result<size_t> n = size_t{0};
  if (!pt.caught) {
    if (!pt.decided) {
      // A transaction open at start (an owner mid-commit, or one paused) holds the end back.
      auto d = _source->await_decided(stream::executions, pt.partition, pt.end0,
                                      std::chrono::milliseconds(1000));
      if (!d) return d.error().code == errc::timeout ? 0 : fail(d.error());
      pt.decided = true;
    }
    n = _source->read_to(stream::executions, pt.partition, pt.next, pt.end0,
                         replica_batch_records_max, replica_batch_bytes_max, pt.recs);
  } else {
    n = _source->read(stream::executions, pt.partition, pt.next, replica_batch_records_max,
                      replica_batch_bytes_max, pt.recs);
  }
  if (!n) return fail(n.error());
  if (pt.recs.empty()) {
    if (!pt.caught) pt.caught = true;  // nothing below the start's end is left
    return 0;
  }
  std::lock_guard lock(pt.mu);
  const uint64_t skipped_before = pt.rebuilder->skipped_total();
  const record* last = nullptr;
  for (const record& rec : pt.recs) {
    if (rec.offset < pt.next) continue;  // a backend that answered from before `from`
    pt.rebuilder->add(rec.offset, rec.value);
    pt.next = rec.offset + 1;
    last = &rec;
  }
  if (!last) return 0;
  fault_point("replica.applied");
  // The state, its checkpoint and where it comes from, in one write (api/replica.h, Starting).
  if (auto f = pt.rebuilder->flush(pt.next, meta_of(pt.partition, *last)); !f) {
    return fail(f.error());
  }
  fault_point("replica.written");
  _applied += pt.recs.size();
  pt.applied += pt.recs.size();
  pt.next_seen = pt.next;
  _skipped += pt.rebuilder->skipped_total() - skipped_before;
  return static_cast<int64_t>(pt.recs.size());
}

void log_replica::run() {
  while (!_stop.load()) {
    bool progressed = false, failed = false;
    for (auto& pt : _parts) {
      if (_stop.load()) return;
      const int64_t n = step(*pt);
      if (n > 0) progressed = true;
      if (n < 0) failed = true;
    }
    if (!_caught_up.load()) {
      bool all = true;
      for (auto& pt : _parts) all = all && pt->caught;
      if (all) {
        _catch_up_ms = static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                                 std::chrono::steady_clock::now() - _started)
                                                 .count());
        _caught_up = true;
      }
    }
    if (!failed) {
      std::lock_guard lock(_error_mu);
      _error.clear();
    }
    if (failed) {
      std::this_thread::sleep_for(std::chrono::milliseconds(replica_error_sleep_ms));
    } else if (!progressed) {
      std::this_thread::sleep_for(std::chrono::milliseconds(replica_idle_sleep_ms));
    }
  }
}

void log_replica::collect(metrics_writer& w) const {
  for (size_t p = 0; p < _parts.size(); ++p) {
    const std::string label = std::to_string(p);
    const part& pt = *_parts[p];
    w.add(started_how,
          {{"partition", label}, {"how", std::string(replica_start_name(_starts[p].how))}}, 1);
    w.add(start_offset, {{"partition", label}}, static_cast<double>(_starts[p].from));
    w.add(applied_records, {{"partition", label}}, static_cast<double>(pt.applied.load()));
    w.add(next_offset, {{"partition", label}}, static_cast<double>(pt.next_seen.load()));
  }
  w.add(skipped_records, {}, static_cast<double>(_skipped.load()));
  w.add(caught_up_def, {}, _caught_up.load() ? 1 : 0);
  if (_caught_up.load())
    w.add(catch_up_seconds, {}, static_cast<double>(_catch_up_ms.load()) / 1000.0);
}

}  // namespace auterity
