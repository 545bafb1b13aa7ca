#include "api/replica.h"

#include <fmt/format.h>

#include <chrono>

#include "replay/state_replay.h"

namespace auterity {

struct log_replica::part {
  uint32_t partition = 0;
  std::mutex mu;  // the rebuilder and its store: the thread's apply, the API's reads
  std::unique_ptr<state_rebuilder> rebuilder;
  uint64_t next = 0;     // offset after the last record applied
  uint64_t end0 = 0;     // the end seen at start: caught up once nothing below it is left
  bool decided = false;  // everything below end0 is committed or aborted
  bool caught = false;
  std::vector<record> recs;
};

result<std::unique_ptr<log_replica>> log_replica::start(std::unique_ptr<log> source,
                                                        const std::string& dir) {
  std::unique_ptr<log_replica> r(new log_replica());
  const uint32_t n = source->partition_count();
  for (uint32_t p = 0; p < n; ++p) {
    auto pt = std::make_unique<part>();
    pt->partition = p;
    auto end = source->end_offset(stream::executions, p);
    if (!end) return std::unexpected(end.error());
    pt->end0 = *end;
    auto b = state_rebuilder::open(fmt::format("{}/p{:03}", dir, p), p, n);
    if (!b) return std::unexpected(b.error());
    pt->rebuilder = std::move(*b);
    r->_parts.push_back(std::move(pt));
  }
  r->_source = std::move(source);
  r->_thread = std::thread([raw = r.get()] { raw->run(); });
  return r;
}

log_replica::~log_replica() {
  _stop = true;
  if (_thread.joinable()) _thread.join();
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
  for (const record& rec : pt.recs) {
    if (rec.offset < pt.next) continue;  // a backend that answered from before `from`
    pt.rebuilder->add(rec.offset, rec.value);
    pt.next = rec.offset + 1;
  }
  if (auto f = pt.rebuilder->flush(pt.next); !f) return fail(f.error());
  _applied += pt.recs.size();
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
      if (all) _caught_up = true;
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

}  // namespace auterity
