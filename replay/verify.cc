#include "replay/verify.h"

#include "replay/history.h"

#include <chrono>
#include <filesystem>

#include <fmt/core.h>

#include "processors/execution_state.h"
#include "replay/scan.h"

namespace auterity {

namespace {

// The engine's own record of each history's end: event count and last hash, kept in the
// execution's state (and per tenant for definition chains).
head_lookup heads_of(const state_store& s) {
  return [&s](std::string_view tenant,
              std::string_view execution) -> result<std::optional<chain_head>> {
    const std::string key =
        execution.empty() ? keys::tenant_chain(tenant) : keys::execution(tenant, execution);
    auto stored = s.get(key);
    if (!stored) return std::unexpected(stored.error());
    if (!*stored) return std::optional<chain_head>();
    if (execution.empty()) {
      tenant_chain c;
      if (!decode_chain(**stored, c)) return std::optional<chain_head>();
      return std::optional<chain_head>(chain_head{c.event_count, c.last_hash});
    }
    execution_state e;
    if (!decode_execution(**stored, e)) return std::optional<chain_head>();
    return std::optional<chain_head>(chain_head{e.event_count, e.last_hash});
  };
}

// The same heads for all executions of a tenant, in key order: one sequential read.
head_scan head_scan_of(const state_store& s) {
  return [&s](std::string_view tenant,
              const std::function<bool(std::string_view, const chain_head&)>& fn) {
    const std::string prefix = keys::tenant_prefix(tenant) + "E";
    return s.scan_prefix(prefix, [&](std::string_view key, std::string_view value) {
      execution_state e;
      if (!decode_execution(value, e)) return true;  // the state comparison reports it
      return fn(key.substr(prefix.size()), chain_head{e.event_count, e.last_hash});
    });
  };
}

// A tenant's partitions are every one it lived on (replay/history.h, tenant_stays).
result<std::vector<uint32_t>> selected_partitions(log& l, const verify_options& o) {
  if (!o.partitions.empty()) return o.partitions;
  if (!o.tenant.empty()) {
    replay_scope scope;
    scope.tenant = o.tenant;
    if (auto r = resolve_partitions(l, scope); !r) return std::unexpected(r.error());
    return scope.partitions;
  }
  std::vector<uint32_t> all(l.partition_count());
  for (uint32_t p = 0; p < all.size(); ++p) all[p] = p;
  return all;
}

// One partition: a single pass feeds the chain check and the rebuild; then the comparison.
class partition_verifier {
 public:
  partition_verifier(log& l, uint32_t p, state_store* live, const verify_options& o)
      : _log(l), _live(live), _o(o) {
    _v.partition = p;
  }

  result<partition_verification> run() {
    const auto start = std::chrono::steady_clock::now();
    auto end = _log.end_offset(stream::executions, _v.partition);
    if (!end) return std::unexpected(end.error());
    _end = *end;
    chain_checker checker(_v.partition, check_options());
    if (auto r = open_rebuilder(); !r) return std::unexpected(r.error());
    if (auto r = scan(checker); !r) return std::unexpected(r.error());
    if (auto r = checker.finish(); !r) return std::unexpected(r.error());
    _v.events = checker.events();
    _v.chains = checker.chains();
    _v.open_chains_peak = checker.open_chains_peak();
    if (_o.chains) {
      _v.chain_problems = checker.problems();
      _v.chain_problems_total = checker.problems_total();
    }
    if (auto r = compare(); !r) return std::unexpected(r.error());
    _v.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return std::move(_v);
  }

 private:
  chain_check_options check_options() {
    chain_check_options c;
    c.tenant = _o.tenant;
    c.ended_batch_max = _o.ended_batch_max;
    if (!_live) {
      _v.notes.push_back(
          "no engine state for this partition here: the newest event of each "
          "history is not vouched for");
      return c;
    }
    if (_live->checkpoint() < _end && record_at_or_after(_live->checkpoint())) {
      _v.notes.push_back(fmt::format(
          "the engine's state reflects executions up to offset {} but the log ends at {}: "
          "histories with later events were not compared with it (let the engine catch up, "
          "then verify)",
          _live->checkpoint(), _end));
    }
    _v.heads_compared = true;
    c.heads = heads_of(*_live);
    c.scan = head_scan_of(*_live);
    c.heads_cover = _live->checkpoint();
    return c;
  }

  // Kafka's end offset may sit past a transaction marker: only a record proves the log is ahead.
  bool record_at_or_after(uint64_t offset) {
    std::vector<record> one;
    auto n = _log.read(stream::executions, _v.partition, offset, 1, 1 << 20, one);
    return !n || *n > 0;
  }

  result<void> open_rebuilder() {
    if (!_o.state) return {};
    if (!_live) {
      _v.notes.push_back("no engine state for this partition here: state not compared");
      return {};
    }
    const std::string dir = fmt::format("{}/p{:03}", _o.scratch_dir, _v.partition);
    auto r = state_rebuilder::open(dir, _v.partition, _log.partition_count(), _o.tenant);
    if (!r) return std::unexpected(r.error());
    _rebuilder = std::move(*r);
    return {};
  }

  result<void> scan(chain_checker& checker) {
    const uint64_t rebuild_end = _rebuilder ? _live->checkpoint() : 0;
    stream_reader reader(_log, stream::executions, _v.partition, 0, _end, _o.meter);
    uint64_t applied_to = 0;
    for (;;) {
      auto batch = reader.next();
      if (!batch) return std::unexpected(batch.error());
      if (batch->empty()) break;
      for (const record& rec : *batch) {
        ++_v.records;
        auto trusted = checker.add(rec.offset, rec.value);
        if (!trusted) return std::unexpected(trusted.error());
        if (rec.offset >= rebuild_end) continue;
        _rebuilder->add(rec.offset, rec.value, *trusted);
        applied_to = rec.offset + 1;
      }
      if (_rebuilder) {
        if (auto f = _rebuilder->flush(applied_to); !f) return f;
      }
    }
    return {};
  }

  result<void> compare() {
    if (!_rebuilder) return {};
    auto c = compare_states(*_live, _rebuilder->store(), _o.tenant, _o.problems_listed_max);
    if (!c) return std::unexpected(c.error());
    _v.state_compared = true;
    _v.state_keys = c->keys_live;
    _v.state_differences = c->differences;
    _v.state_diffs = std::move(c->diffs);
    if (_live->checkpoint() > _end) {  // the log lost records the state was built from
      ++_v.state_differences;
      _v.state_diffs.insert(
          _v.state_diffs.begin(),
          state_diff{state_diff::kind::differs, "(checkpoint)",
                     fmt::format("the engine's state reflects executions up to offset {} but the "
                                 "log ends at {}: records were removed from the end of the log",
                                 _live->checkpoint(), _end)});
    }
    _v.records_not_applied = _rebuilder->skipped_total();
    _v.not_applied = _rebuilder->skipped();
    _rebuilder->remove();
    return {};
  }

  log& _log;
  state_store* _live;
  const verify_options& _o;
  uint64_t _end = 0;  // the executions end when run() began
  std::unique_ptr<state_rebuilder> _rebuilder;
  partition_verification _v;
};

}  // namespace

uint64_t verify_report::problems() const {
  uint64_t n = 0;
  for (const partition_verification& p : partitions) {
    n += p.chain_problems_total + p.state_differences + p.log_damage_problems;
  }
  return n;
}

result<verify_report> verify_log(log& l, std::span<state_store* const> stores,
                                 const verify_options& o) {
  if (o.state && o.scratch_dir.empty()) {
    return fail(errc::invalid, "verify_log: a scratch directory is needed to rebuild the state");
  }
  auto selected = selected_partitions(l, o);
  if (!selected) return std::unexpected(selected.error());
  const std::vector<uint32_t> parts = std::move(*selected);
  for (uint32_t p : parts) {
    if (p >= l.partition_count()) {
      return fail(errc::invalid,
                  fmt::format("partition {} of a log with {} partitions", p, l.partition_count()));
    }
  }
  verify_report report;
  report.partitions.resize(parts.size());
  std::vector<uint32_t> slots(parts.size());
  for (uint32_t i = 0; i < slots.size(); ++i) slots[i] = i;
  auto r = for_each_partition(slots, o.threads, [&](uint32_t i) -> result<void> {
    state_store* live = parts[i] < stores.size() ? stores[parts[i]] : nullptr;
    auto v = partition_verifier(l, parts[i], live, o).run();
    if (!v) return std::unexpected(v.error());
    report.partitions[i] = std::move(*v);
    return {};
  });
  if (!r) return std::unexpected(r.error());
  return report;
}

// ---------------------------------------------------------------- one partition, as lines

result<std::vector<std::string>> compare_with_replay(log& l, uint32_t partition,
                                                     const state_store& live,
                                                     const std::string& scratch_dir,
                                                     const state_store_options& scratch) {
  auto r = state_rebuilder::open(scratch_dir, partition, l.partition_count(), {}, scratch);
  if (!r) return std::unexpected(r.error());
  auto end = rebuild(l, partition, **r, rebuild_limit{live.checkpoint(), std::nullopt});
  if (!end) return std::unexpected(end.error());
  std::vector<std::string> diffs;
  if (end->end_offset < live.checkpoint()) {
    diffs.push_back(fmt::format("log ends at {} but the live checkpoint is {}", end->end_offset,
                                live.checkpoint()));
  }
  for (const skipped_record& s : (*r)->skipped()) {
    diffs.push_back(
        fmt::format("record {} at offset {} not applied: {}", s.record_id, s.offset, s.reason));
  }
  auto c = compare_states(live, (*r)->store());
  if (!c) return std::unexpected(c.error());
  for (const state_diff& d : c->diffs) diffs.push_back(d.text);
  (*r)->remove();
  return diffs;
}

result<chain_report> verify_chains(log& l, uint32_t partition) {
  chain_checker checker(partition);
  auto end = l.end_offset(stream::executions, partition);
  if (!end) return std::unexpected(end.error());
  stream_reader reader(l, stream::executions, partition, 0, *end);
  for (;;) {
    auto batch = reader.next();
    if (!batch) return std::unexpected(batch.error());
    if (batch->empty()) break;
    for (const record& rec : *batch) {
      if (auto t = checker.add(rec.offset, rec.value); !t) return std::unexpected(t.error());
    }
  }
  if (auto f = checker.finish(); !f) return std::unexpected(f.error());
  chain_report report;
  report.events = checker.events();
  report.executions = checker.chains();
  for (const chain_problem& p : checker.problems()) report.problems.push_back(p.text());
  return report;
}

}  // namespace auterity
