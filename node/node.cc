#include "node/node.h"

#include <algorithm>
#include <filesystem>
#include <limits>

#include <fmt/core.h>
#include <fmt/ranges.h>

#include "connectors/connector_config.h"
#include "engine/assert.h"
#include "engine/embedded_log.h"
#include "engine/kafka_placement.h"
#include "engine/kafka_util.h"
#include "processors/client.h"
#include "processors/orchestrator_state.h"

namespace auterity {

node::node(node_options options, clock& clk) : _options(std::move(options)), _clock(clk) {}

node::~node() {
  _metrics.reset();  // first: a scrape reads the runtimes
  stop();
}

namespace {

// How often a node in a Kafka group checks the topics' partition count and the placement
// header (node::watch_placement), and how long one such request may take.
constexpr auto placement_check_interval = std::chrono::milliseconds(1000);
constexpr int placement_check_timeout_ms = 5000;
// How long a node that saw the topics grow waits for its groups to rebalance over the new count
// before it opens itself again anyway (librdkafka refreshes the metadata every 5 s).
constexpr auto group_rebalance_wait = std::chrono::seconds(30);

// A wrong password, an untrusted certificate or a missing permission is reported at start,
// naming the cause, instead of the log's clients retrying it forever.
result<void> preflight(const node_options& options) {
  const kafka_log_options& k = *options.kafka;
  kafka_preflight_options pre;
  pre.settings = k.client_config;
  pre.settings["bootstrap.servers"] = k.bootstrap;
  for (int s = 0; s < stream_count; ++s) {
    pre.topics.push_back(k.topic_prefix + std::string(stream_name(static_cast<stream>(s))));
  }
  const bool orchestrating = options.orchestrator || options.worker_streams.empty();
  pre.group = kafka_group_id(
      orchestrating ? std::string(orchestrator_group)
                    : fmt::format("worker.{}", stream_name(options.worker_streams.front())));
  pre.timeout_ms = k.request_timeout_ms;
  return kafka_preflight(pre);
}

}  // namespace

result<std::unique_ptr<node>> node::open(const node_options& options, clock& clk) {
  std::unique_ptr<node> n(new node(options, clk));
  if (options.kafka) {
    kafka_log_options k = *options.kafka;
    if (auto r = preflight(options); !r) return std::unexpected(r.error());
    // Offsets of a group this node is a member of carry the member's live metadata (fencing).
    k.group_metadata = [raw = n.get()](std::string_view g) { return raw->group_metadata(g); };
    auto l = open_kafka_log(k);
    if (!l) return std::unexpected(l.error());
    n->_log = std::move(*l);
    n->_dense_offsets = false;
  } else {
    embedded_log_options lo;
    lo.partitions = options.partitions;
    lo.fsync = options.fsync;
    lo.corrupt_partitions_offline = options.corrupt_partitions_offline;
    lo.on_damage = [raw = n.get()](const log_damage& d) {
      fmt::print(stderr, "auterity: {}\n", damage_text(d));
      if (d.committed && d.quarantine.empty()) raw->_offline[d.partition] = damage_text(d);
    };
    auto l = open_embedded_log(options.data_dir + "/log", lo);
    if (!l) return std::unexpected(l.error());
    n->_log = std::move(*l);
  }
  n->_options.partitions = n->_log->partition_count();
  // On Kafka a commit becomes readable only after its transaction markers are fetched, so a
  // wake-up on our own commit often finds nothing yet: poll briefly instead of sleeping long.
  worker_options wo = options.worker;
  if (auto r = check_worker_options(wo); !r) return std::unexpected(r.error());
  if (options.kafka) {
    n->_options.runtime.idle_wait_ms_max = 5;
    wo.idle_wait_ms_max = 5;
  }
  n->_orchestrators.assign(n->_options.partitions, nullptr);
  n->_partitions.resize(n->_options.partitions);
  n->_wanted.assign(n->_options.partitions, false);
  n->_retry_at.assign(n->_options.partitions, std::chrono::steady_clock::time_point{});
  if (!n->group_mode() && options.orchestrator) {
    for (uint32_t p = 0; p < n->_options.partitions; ++p) {
      if (n->_offline.contains(p)) continue;  // not run: docs/salvage.md
      if (auto r = n->open_partition(p); !r) return std::unexpected(r.error());
      n->_wanted[p] = true;
    }
  }
  if (options.workers) {
    const std::string outbox = options.data_dir + "/outbox";
    auto set = options.connectors_file.empty() ? make_connectors("", outbox)
                                               : load_connectors(options.connectors_file, outbox);
    if (!set) return std::unexpected(set.error());
    auto wanted = [&](stream s) {
      return std::find(options.worker_streams.begin(), options.worker_streams.end(), s) !=
             options.worker_streams.end();
    };
    std::pair<stream, std::unique_ptr<connector>*> workers[] = {
        {stream::commands_step, &set->step},
        {stream::commands_ai, &set->ai},
        {stream::commands_notify, &set->notify}};
    for (auto& [s, c] : workers) {
      if (!wanted(s)) continue;
      n->_workers.push_back(std::make_unique<worker_runtime>(*n->_log, s, std::move(*c), clk, wo));
      if (!n->_offline.empty()) {
        std::vector<uint32_t> healthy;
        for (uint32_t p = 0; p < n->_options.partitions; ++p) {
          if (!n->_offline.contains(p)) healthy.push_back(p);
        }
        n->_workers.back()->set_partitions(healthy);
      }
    }
  }
  if (auto r = n->start_metrics(); !r) return std::unexpected(r.error());
  return n;
}

result<void> node::open_partition(uint32_t p) {
  auto store = state_store::open(fmt::format("{}/state/p{:03}", _options.data_dir, p));
  if (!store) return std::unexpected(store.error());
  const placement_header placed = _log->placement();
  orchestrator_options oo;
  oo.partitions = _options.partitions;
  oo.base = placed.base;
  oo.retired = placed.retired;
  auto o = std::make_unique<orchestrator>(std::move(oo));
  _orchestrators[p] = o.get();
  _partitions[p] = std::make_unique<partition_runtime>(*_log, p, std::move(*store), std::move(o),
                                                       _clock, _options.runtime);
  return {};
}

void node::close_partition(uint32_t p) {
  if (!_partitions[p]) return;
  _partitions[p]->stop();
  _partitions[p].reset();
  _orchestrators[p] = nullptr;
}

partition_runtime& node::partition(uint32_t p) {
  std::lock_guard lock(_parts_mu);
  if (!_partitions[p]) {
    auto opened = open_partition(p);
    vassert(opened.has_value(), "partition {}: {}", p, opened.error().message);
    auto recovered = _partitions[p]->recover();
    vassert(recovered.has_value(), "partition {}: {}", p, recovered.error().message);
  }
  return *_partitions[p];
}

std::vector<uint32_t> node::owned_partitions() {
  std::lock_guard lock(_parts_mu);
  std::vector<uint32_t> out;
  for (uint32_t p = 0; p < _partitions.size(); ++p) {
    if (_partitions[p]) out.push_back(p);
  }
  return out;
}

void node::for_each_probe(const std::function<void(uint32_t, const partition_probe&)>& fn) {
  std::lock_guard lock(_parts_mu);
  for (uint32_t p = 0; p < _partitions.size(); ++p) {
    if (_partitions[p]) fn(p, _partitions[p]->probe());
  }
}

result<void> node::recover() {
  std::lock_guard lock(_parts_mu);
  for (auto& p : _partitions) {
    if (!p) continue;  // group mode: recovered when assigned
    if (auto r = p->recover(); !r) return r;
  }
  return {};
}

// Kafka assigned partitions to this instance: restore each (positions, the executions end and
// the wait for it to be decided, then the local checkpoint and catch-up: the handover of
// docs/ownership-handover.md) and run it. A restore that fails (an earlier owner's transaction
// still open past restore_wait_ms_max, a broker away) is retried by the supervisor.
void node::on_assigned(const std::vector<uint32_t>& assigned) {
  const std::vector<uint32_t> parts = known_partitions(assigned);
  std::lock_guard lock(_parts_mu);
  _assigned_once = true;
  for (uint32_t p : parts) {
    _wanted[p] = true;
    close_partition(p);  // nothing should be open; if it is, it is from an older assignment
    restore(p);
  }
}

// Kafka takes partitions away: stop them (the open commit finishes or fails) and release their
// state before returning, so the next owner never overlaps with us.
void node::on_revoked(const std::vector<uint32_t>& revoked) {
  const std::vector<uint32_t> parts = known_partitions(revoked);
  std::lock_guard lock(_parts_mu);
  for (uint32_t p : parts) {
    _wanted[p] = false;
    if (!_partitions[p]) continue;
    close_partition(p);
    fmt::print(stderr, "auterity: partition {} released\n", p);
  }
}

bool node::restore(uint32_t p) {
  auto failed = [&](const error& e) {
    close_partition(p);
    _restore_failures.fetch_add(1);
    _retry_at[p] = std::chrono::steady_clock::now() + std::chrono::seconds(1);
    fmt::print(stderr, "auterity: partition {}: restore failed, retrying in 1 s: {}\n", p,
               e.message);
    return false;
  };
  if (!_partitions[p]) {
    if (auto opened = open_partition(p); !opened) return failed(opened.error());
  }
  if (auto recovered = _partitions[p]->recover(); !recovered) return failed(recovered.error());
  _partitions[p]->start();
  const partition_probe& probe = _partitions[p]->probe();
  fmt::print(stderr,
             "auterity: partition {} assigned, restored in {} ms ({} ms waiting for "
             "stable positions and the executions end)\n",
             p, probe.restore_ms.load(), probe.restore_wait_ms.load());
  return true;
}

void node::supervise() {
  while (_supervising.load()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    for (const auto& w : _workers) {
      if (!w->fenced()) continue;
      std::lock_guard lock(_fatal_mu);
      if (!_fatal)
        _fatal = fmt::format(
            "worker {}: the producer was fenced by another process "
            "running as this instance",
            w->group());
    }
    if (group_mode() && std::chrono::steady_clock::now() >= _next_watch) {
      watch_placement();
      _next_watch = std::chrono::steady_clock::now() + placement_check_interval;
    }
    std::lock_guard lock(_parts_mu);
    const auto now = std::chrono::steady_clock::now();
    for (uint32_t p = 0; p < _partitions.size(); ++p) {
      if (_partitions[p] && _partitions[p]->failed()) {
        // Step down: drop the in-memory state; the local store holds only committed state.
        const error why = _partitions[p]->failure();
        close_partition(p);
        _step_downs.fetch_add(1);
        if (why.code == errc::fenced) {
          std::lock_guard f(_fatal_mu);
          if (!_fatal) _fatal = why.message;
        }
        fmt::print(stderr,
                   "auterity: partition {} stepped down ({}); restoring it if still "
                   "owned\n",
                   p, why.message);
        // librdkafka reports lost partitions on its own thread: give it a moment, so a
        // partition that was taken away is not restored only to be revoked.
        _retry_at[p] = now + std::chrono::milliseconds(500);
        continue;
      }
      if (_wanted[p] && !_partitions[p] && now >= _retry_at[p] && !fatal()) restore(p);
    }
  }
}

std::vector<uint32_t> node::known_partitions(const std::vector<uint32_t>& parts) {
  std::vector<uint32_t> known;
  for (uint32_t p : parts) {
    if (p < _options.partitions) {
      known.push_back(p);
      continue;
    }
    // The watcher opens the node again once every group of this node rebalanced over the new
    // count (watch_placement); until then p is not run.
    if (!_assigned_past.exchange(true)) {
      fmt::print(stderr,
                 "auterity: the group assigned partition {}, but this instance opened the log "
                 "with {} partitions: the topics grew while it ran\n",
                 p, _options.partitions);
    }
  }
  return known;
}

void node::note_reopen(std::string why) {
  std::lock_guard lock(_fatal_mu);
  if (_grown) return;
  _grown = std::move(why);
  fmt::print(stderr, "auterity: {}\n", *_grown);
}

namespace {

bool same_placement(const placement_header& a, const placement_header& b) {
  return a.base == b.base && a.retired == b.retired;
}

}  // namespace

// Two cheap requests on the group member's connection per check: the ingress topic's count
// and the placement topic's end; the header itself is read only when that end moved.
void node::watch_placement() {
  std::vector<kafka_membership*> members;
  {
    // The members live until stop(), which joins the supervisor first; asked without the lock,
    // which a commit takes for the group metadata.
    std::lock_guard lock(_members_mu);
    for (const auto& m : _members) members.push_back(m.get());
  }
  if (members.empty()) return;
  kafka_membership& member = *members.front();
  const kafka_log_options& k = *_options.kafka;
  const int timeout_ms = placement_check_timeout_ms;
  auto count = member.topic_partitions(k.topic_prefix + "ingress", timeout_ms);
  if (count && *count != _options.partitions) {
    // `topics apply` grows the topics one after the other: take the count once all have it.
    bool all = true;
    for (int s = 0; s < stream_count && all; ++s) {
      auto c = member.topic_partitions(
          k.topic_prefix + std::string(stream_name(static_cast<stream>(s))), timeout_ms);
      all = c && *c == *count;
    }
    _grown_all_topics = all;
    grown_to(*count, members);
  }
  const std::string topic = k.topic_prefix + std::string(placement_topic_suffix);
  auto end = member.end_offset(topic, timeout_ms);
  if (!end || *end == _placement_end) return;
  std::map<std::string, std::string> conf = {{"bootstrap.servers", k.bootstrap}};
  conf.merge(std::map<std::string, std::string>(k.client_config));
  auto header = read_kafka_placement(conf, topic, timeout_ms);
  if (!header) return;  // asked again at the next check
  _placement_end = *end;
  const placement_header now = *header ? **header : placement_header{_options.partitions, {}};
  if (!same_placement(now, _log->placement())) {
    note_reopen(
        fmt::format("the placement header changed (base {}, retired [{}]; this instance "
                    "opened the log with base {}, retired [{}])",
                    now.base, fmt::join(now.retired, ","), _log->placement().base,
                    fmt::join(_log->placement().retired, ",")));
  }
}

// The group rebalances over a new count when a member's consumer sees the count change at its
// metadata refresh; a consumer made after the topics grew never sees a change. So the node
// opens itself again (closing its consumers) only once each of its members was given an
// assignment after it first saw the ingress topic grow (each group rebalanced since), or after
// group_rebalance_wait if one was not.
void node::grown_to(uint32_t count, const std::vector<kafka_membership*>& members) {
  const auto now = std::chrono::steady_clock::now();
  if (_grown_count != count) {
    _grown_count = count;
    _grown_since = now;
    _grown_assignments.clear();
    for (kafka_membership* m : members) _grown_assignments.push_back(m->assignments());
    fmt::print(stderr,
               "auterity: the ingress topic has {} partitions now (this instance opened the log "
               "with {}); opening again once the topics agree and the groups rebalanced\n",
               count, _options.partitions);
  }
  if (!_grown_all_topics) return;
  bool all = _grown_assignments.size() == members.size();
  for (size_t i = 0; all && i < members.size(); ++i) {
    all = members[i]->assignments() > _grown_assignments[i];
  }
  if (all) {
    note_reopen(
        fmt::format("the topics have {} partitions now and every group of this "
                    "instance rebalanced; it opened the log with {}",
                    count, _options.partitions));
  } else if (now - _grown_since >= group_rebalance_wait) {
    note_reopen(
        fmt::format("the topics have {} partitions now (this instance opened the log "
                    "with {}); not every group rebalanced within {} s",
                    count, _options.partitions, group_rebalance_wait.count()));
  }
}

std::optional<std::string> node::restart_needed() const {
  std::lock_guard lock(_fatal_mu);
  return _grown;
}

std::optional<std::string> node::fatal() const {
  std::lock_guard lock(_fatal_mu);
  return _fatal;
}

void* node::group_metadata(std::string_view group) {
  std::lock_guard lock(_members_mu);
  for (const auto& m : _members) {
    if (m->group() == group) return m->group_metadata_copy();
  }
  return nullptr;
}

// Joins the orchestrator group and one group per worker stream. _members_mu is taken only to
// publish each member: a commit of a worker may ask for group metadata meanwhile.
void node::start_groups() {
  if (_options.orchestrator) {
    auto member = kafka_membership::join(*_options.kafka, orchestrator_group, stream::ingress,
                                         {[this](const auto& parts) { on_assigned(parts); },
                                          [this](const auto& parts) { on_revoked(parts); }});
    vassert(member.has_value(), "joining the orchestrator group: {}", member.error().message);
    std::lock_guard lock(_members_mu);
    _members.push_back(std::move(*member));
  }
  for (auto& w : _workers) {
    worker_runtime* raw = w.get();
    auto wm = kafka_membership::join(
        *_options.kafka, raw->group(), raw->commands(),
        {[this, raw](const auto& parts) { raw->set_partitions(known_partitions(parts)); },
         [raw](const auto&) { raw->set_partitions({}); }});
    vassert(wm.has_value(), "joining {}: {}", raw->group(), wm.error().message);
    std::lock_guard lock(_members_mu);
    _members.push_back(std::move(*wm));
  }
}

void node::start() {
  if (group_mode()) {
    for (auto& w : _workers) w->set_partitions({});  // nothing until Kafka assigns
  }
  for (auto& w : _workers) w->start();
  if (group_mode()) {
    start_groups();
  } else {
    std::lock_guard lock(_parts_mu);
    for (auto& p : _partitions) {
      if (p) p->start();
    }
  }
  _supervising = true;
  _supervisor = std::thread([this] { supervise(); });
  _started = true;
  _serving = true;
}

void node::stop() {
  _serving = false;
  if (!_started) return;
  _supervising = false;
  if (_supervisor.joinable()) _supervisor.join();
  std::vector<std::unique_ptr<kafka_membership>> members;
  {
    std::lock_guard lock(_members_mu);
    members.swap(_members);
  }
  // Leaving the groups revokes (and stops) what this node owns.
  for (auto& m : members) m->leave();
  for (auto& w : _workers) w->stop();
  {
    std::lock_guard lock(_parts_mu);
    for (auto& p : _partitions) {
      if (p) p->stop();
    }
  }
  _started = false;
}

result<size_t> node::step(bool workers) {
  size_t work = 0;
  std::lock_guard lock(_parts_mu);
  for (auto& p : _partitions) {
    if (!p) continue;
    auto r = p->run_once();
    if (!r) return std::unexpected(r.error());
    work += *r ? 1 : 0;
  }
  for (auto& w : _workers) {
    if (!workers) break;
    auto r = w->run_once();
    if (!r) return r;
    work += *r;
  }
  return work;
}

result<void> node::submit(std::string_view tenant, std::string bytes) {
  return client::submit(*_log, tenant, std::move(bytes));
}

std::optional<execution_state> node::execution(std::string_view tenant, std::string_view id) {
  uint32_t p = home_partition(*_log, tenant);
  std::lock_guard lock(_parts_mu);
  // A tenant moved away is found where its default partition's placement entry points, and so
  // on (docs/tenant-moves.md); each partition that saw it leave knows where it went.
  for (uint32_t hops = 0; hops < _options.partitions; ++hops) {
    if (!_partitions[p] && _started) return std::nullopt;  // owned by another instance now
    if (_offline.contains(p)) return std::nullopt;         // damaged: not run
    auto placed = partition(p).store().get(keys::placement(tenant));
    placement_entry where;
    if (!placed || !placed->has_value() || !decode_placement(**placed, where) ||
        where.ph != placement_entry::phase::moved_out) {
      break;
    }
    p = where.partition;
  }
  auto stored = partition(p).store().get(keys::execution(tenant, id));
  if (!stored || !stored->has_value()) return std::nullopt;
  execution_state e;
  if (!decode_execution(**stored, e)) return std::nullopt;
  return e;
}

bool node::with_store(uint32_t p, const std::function<void(const state_store&)>& fn) {
  if (p >= _options.partitions) return false;
  std::lock_guard lock(_parts_mu);
  if (!_partitions[p] && _started) return false;  // owned by another instance now
  fn(partition(p).store());
  return true;
}

void node::for_each_execution(const std::function<void(const execution_state&)>& fn) {
  std::lock_guard lock(_parts_mu);
  for (auto& p : _partitions) {
    if (!p) continue;
    (void)p->store().scan_prefix("T", [&](std::string_view key, std::string_view value) {
      const size_t nul = key.find('\0');
      if (nul == std::string_view::npos || nul + 1 >= key.size() || key[nul + 1] != 'E') {
        return true;
      }
      execution_state e;
      if (decode_execution(value, e)) fn(e);
      return true;
    });
  }
}

node_summary node::summary() {
  node_summary s;
  for_each_execution([&](const execution_state& e) {
    s.executions_by_status[std::string(exec_status_name(e.status))]++;
  });
  // Quiet only if no commit happened while we looked (generations unchanged).
  std::vector<uint64_t> generations;
  for (uint32_t p = 0; p < _options.partitions; ++p) generations.push_back(_log->generation(p));
  // Kafka offsets have gaps (transaction markers), so "caught up" cannot be read off the end
  // offsets; there quiet means only that no timer is pending.
  bool quiet = true;
  auto caught_up = [&](std::string_view group, stream st, uint32_t p) {
    auto pos = _log->position(group, st, p);
    auto end = _log->end_offset(st, p);
    return pos && end && *pos == *end;
  };
  std::lock_guard lock(_parts_mu);
  for (uint32_t p = 0; p < _options.partitions; ++p) {
    s.events += _log->end_offset(stream::executions, p).value_or(0);
    s.deadletters += _log->end_offset(stream::deadletter, p).value_or(0);
    if (!_orchestrators[p]) continue;  // not owned by this instance
    const orchestrator& o = *_orchestrators[p];
    s.rejections += o.probe().rejections.load();
    s.stale_acks += o.probe().stale_acks.load();
    s.commands += o.probe().commands_out.load();
    quiet = quiet && o.published_next_timer_ms() == std::numeric_limits<int64_t>::max();
    if (!_dense_offsets) continue;
    for (stream in : {stream::ingress, stream::acks}) {
      quiet = quiet && caught_up(orchestrator_group, in, p);
    }
    for (const auto& w : _workers) {
      const stream c = w->commands();
      quiet = quiet && caught_up(w->group(), c, p);
    }
  }
  for (uint32_t p = 0; p < _options.partitions; ++p) {
    quiet = quiet && _log->generation(p) == generations[p];
  }
  s.quiescent = quiet;
  return s;
}

// ------------------------------------------------------------------------------- metrics

namespace {

constexpr metric_def commands_total{"auterity_commands_total",
                                    "Commands the orchestrator emitted (step, AI, notify)",
                                    metric_kind::counter};
constexpr metric_def rejections_total{"auterity_rejections_total",
                                      "Commands rejected (CommandRejected appended to executions)",
                                      metric_kind::counter};
constexpr metric_def deadletters_total{"auterity_deadletters_total",
                                       "Ingress records that did not parse, sent to deadletter",
                                       metric_kind::counter};
constexpr metric_def stale_acks_total{
    "auterity_stale_acks_total",
    "Acks ignored as duplicate or for an old attempt or a finished step", metric_kind::counter};
constexpr metric_def step_transitions_total{
    "auterity_step_transitions_total", "Acks and timers that moved a step", metric_kind::counter};
constexpr metric_def executions_started_total{"auterity_executions_started_total",
                                              "Executions started", metric_kind::counter};
constexpr metric_def executions_ended_total{"auterity_executions_ended_total",
                                            "Executions that succeeded, failed or were cancelled",
                                            metric_kind::counter};

constexpr metric_def forwarded_total{
    "auterity_forwarded_total",
    "Inputs sent on to the partition that owns their tenant (mis-placed or moved tenant)",
    metric_kind::counter};
constexpr metric_def tenants_moved_out_total{
    "auterity_tenants_moved_out_total",
    "Tenants this partition moved away (docs/tenant-moves.md), since the process started",
    metric_kind::counter};
constexpr metric_def tenants_moved_in_total{
    "auterity_tenants_moved_in_total",
    "Tenants installed on this partition by a move, since the process started",
    metric_kind::counter};

void collect_orchestrator(metrics_writer& w, uint32_t p, const orchestrator_probe& o) {
  const metric_labels l = {{"partition", std::to_string(p)}};
  w.add(commands_total, l, o.commands_out.load());
  w.add(rejections_total, l, o.rejections.load());
  w.add(deadletters_total, l, o.deadletters.load());
  w.add(stale_acks_total, l, o.stale_acks.load());
  w.add(step_transitions_total, l, o.step_transitions.load());
  w.add(executions_started_total, l, o.executions_started.load());
  w.add(executions_ended_total, l, o.executions_ended.load());
  w.add(forwarded_total, l, o.forwarded.load());
  w.add(tenants_moved_out_total, l, o.tenants_moved_out.load());
  w.add(tenants_moved_in_total, l, o.tenants_moved_in.load());
}

// Tenants per partition whose AI spend is exported (the nearest their budget: see
// orchestrator::ai_spend_top), so the series stay bounded whatever the tenant count.
constexpr size_t ai_spend_tenants_per_partition_max = 20;

constexpr metric_def ai_spend_micros{
    "auterity_ai_spend_micros",
    "AI spend of the tenant in the current UTC day or month (period), micro-USD, from the "
    "partition's applied state; the tenants of a partition nearest their budget",
    metric_kind::gauge};
constexpr metric_def ai_budget_micros{
    "auterity_ai_budget_micros",
    "The tenant policy's AI budget for the period, micro-USD (no series: no budget)",
    metric_kind::gauge};

void collect_ai_spend(metrics_writer& w, uint32_t p, const std::vector<ai_spend_sample>& top) {
  for (const ai_spend_sample& s : top) {
    const std::pair<const char*, std::pair<int64_t, int64_t>> periods[] = {
        {"day", {s.day_spent_micros, s.day_budget_micros}},
        {"month", {s.month_spent_micros, s.month_budget_micros}}};
    for (const auto& [period, values] : periods) {
      const metric_labels l = {
          {"partition", std::to_string(p)}, {"tenant", s.tenant}, {"period", period}};
      w.add(ai_spend_micros, l, static_cast<double>(values.first));
      if (values.second > 0) w.add(ai_budget_micros, l, static_cast<double>(values.second));
    }
  }
}

// Tenants per partition whose load is exported by name (the busiest over the last
// tenant_load_window_ms: orchestrator::tenant_load_top); the others are summed under
// tenant="_other", so each per-tenant load metric has at most this + 1 series per partition.
constexpr size_t load_tenants_per_partition_max = 10;
constexpr std::string_view other_tenants_label = "_other";

constexpr metric_def tenant_inputs_total{
    "auterity_tenant_inputs_total",
    "Inputs (commands, acks, signals) of the tenant the partition's orchestrator read, since "
    "the partition was opened; the busiest tenants by name, the rest as tenant=\"_other\"",
    metric_kind::counter};
constexpr metric_def tenant_events_total{
    "auterity_tenant_events_total",
    "Events of the tenant applied on the partition since it was opened (busiest tenants, the "
    "rest as _other)",
    metric_kind::counter};
constexpr metric_def tenant_running{
    "auterity_tenant_running_executions",
    "Running executions of the tenant on the partition (busiest tenants, the rest as _other)",
    metric_kind::gauge};
constexpr metric_def tenant_recent{
    "auterity_tenant_recent_load",
    "Inputs + events of the tenant in the last 5 minutes on the partition: what busiest ranks "
    "by (busiest tenants, the rest as _other)",
    metric_kind::gauge};
constexpr metric_def tenant_state_bytes{
    "auterity_tenant_state_bytes",
    "RocksDB's estimate of the bytes of the tenant's state on the partition (busiest tenants; "
    "_other: the partition's estimate minus theirs)",
    metric_kind::gauge};
constexpr metric_def partition_tenants{
    "auterity_partition_tenants",
    "Tenants seen on the partition since it was opened (with an input, an event or running "
    "executions)",
    metric_kind::gauge};
constexpr metric_def partition_state_bytes{
    "auterity_partition_state_bytes",
    "RocksDB's estimate of the bytes of the partition's state store", metric_kind::gauge};

void collect_load(metrics_writer& w, uint32_t p, partition_load load, const state_store* store) {
  const std::string partition = std::to_string(p);
  const uint64_t partition_bytes = store ? store->approximate_bytes("", "") : 0;
  uint64_t named_bytes = 0;
  auto add = [&](std::string_view tenant, const tenant_load_sample& s, uint64_t bytes) {
    const metric_labels l = {{"partition", partition}, {"tenant", std::string(tenant)}};
    w.add(tenant_inputs_total, l, static_cast<double>(s.inputs));
    w.add(tenant_events_total, l, static_cast<double>(s.events));
    w.add(tenant_running, l, static_cast<double>(s.running));
    w.add(tenant_recent, l, static_cast<double>(s.recent));
    if (store) w.add(tenant_state_bytes, l, static_cast<double>(bytes));
  };
  for (const tenant_load_sample& s : load.busiest) {
    if (s.tenant == other_tenants_label) {  // a tenant id may be "_other": it is summed there
      load.others.inputs += s.inputs;
      load.others.events += s.events;
      load.others.running += s.running;
      load.others.recent += s.recent;
      load.other_tenants++;
      continue;
    }
    uint64_t bytes = 0;
    if (store) {
      std::string end = "T" + s.tenant;
      end.push_back('\x01');  // just past every "T<tenant>\0..." key
      bytes = store->approximate_bytes(keys::tenant_prefix(s.tenant), end);
    }
    named_bytes += bytes;
    add(s.tenant, s, bytes);
  }
  if (load.other_tenants > 0) {
    add(other_tenants_label, load.others,
        partition_bytes > named_bytes ? partition_bytes - named_bytes : 0);
  }
  const metric_labels l = {{"partition", partition}};
  w.add(partition_tenants, l,
        static_cast<double>(
            load.busiest.size() + load.other_tenants -
            std::ranges::count(load.busiest, other_tenants_label, &tenant_load_sample::tenant)));
  if (store) w.add(partition_state_bytes, l, static_cast<double>(partition_bytes));
}

constexpr metric_def step_downs_total{
    "auterity_partition_step_downs_total",
    "Partition runtimes dropped after a failed commit (lost ownership, fenced, broker away) and "
    "restored again if still owned (docs/ownership-handover.md)",
    metric_kind::counter};
constexpr metric_def restore_failures_total{
    "auterity_partition_restore_failures_total",
    "Partition restores that failed (e.g. an earlier owner's transaction still open past "
    "restore_wait_ms_max) and were retried",
    metric_kind::counter};

struct orchestrator_position {
  uint32_t partition;
  uint64_t ingress, acks;
};

}  // namespace

result<void> node::start_metrics() {
  if (!metrics_enabled(_options.metrics_address)) return {};
  auto server = metrics_server::start(
      _options.metrics_address, [this](metrics_writer& w) { collect_metrics(w); },
      [this] { return not_ready(); });
  if (!server) return std::unexpected(server.error());
  _metrics = std::move(*server);
  return {};
}

uint16_t node::metrics_port() const { return _metrics ? _metrics->port() : 0; }

std::optional<std::string> node::not_ready() {
  if (auto why = fatal()) return why;
  if (!_serving.load()) return std::string("not serving (starting or stopping)");
  if (!_options.orchestrator) return std::nullopt;  // workers only: nothing to restore
  if (group_mode() && !_assigned_once.load()) {
    return std::string("waiting for the group to assign partitions");
  }
  // A restore holds the lock for its whole length: that alone says "not yet".
  std::unique_lock lock(_parts_mu, std::try_to_lock);
  if (!lock.owns_lock()) return std::string("restoring partitions");
  for (uint32_t p = 0; p < _wanted.size(); ++p) {
    if (_wanted[p] && (!_partitions[p] || !_partitions[p]->probe().restored.load())) {
      return fmt::format("partition {} is being restored", p);
    }
  }
  return std::nullopt;
}

// Runs on the metrics server's thread for each scrape.
constexpr metric_def partition_offline{
    "auterity_partition_offline",
    "1 if the partition's committed data is damaged and it is not run (docs/salvage.md: "
    "auterity repair), else 0",
    metric_kind::gauge};

void node::collect_metrics(metrics_writer& w) {
  w.add(step_downs_total, {}, static_cast<double>(_step_downs.load()));
  if (!_options.kafka) {
    for (uint32_t p = 0; p < _options.partitions; ++p) {
      w.add(partition_offline, {{"partition", std::to_string(p)}}, _offline.contains(p) ? 1 : 0);
    }
  }
  w.add(restore_failures_total, {}, static_cast<double>(_restore_failures.load()));
  std::vector<orchestrator_position> owned;
  {
    // A revoked partition's probes go with its runtime. (A scrape waits while a partition is
    // being assigned: restore holds this lock.)
    std::lock_guard lock(_parts_mu);
    for (uint32_t p = 0; p < _partitions.size(); ++p) {
      if (!_partitions[p]) continue;
      const partition_probe& probe = _partitions[p]->probe();
      collect_partition(w, p, probe);
      collect_orchestrator(w, p, _orchestrators[p]->probe());
      collect_ai_spend(
          w, p,
          _orchestrators[p]->ai_spend_top(_clock.now_ms(), ai_spend_tenants_per_partition_max));
      collect_load(
          w, p, _orchestrators[p]->tenant_load_top(_clock.now_ms(), load_tenants_per_partition_max),
          probe.restored.load() ? &_partitions[p]->store() : nullptr);
      if (!probe.restored.load()) continue;
      owned.push_back({p, probe.ingress_next.load(), probe.acks_next.load()});
    }
  }
  // End offsets may be broker round trips: asked without holding the partitions.
  for (const orchestrator_position& o : owned) {
    collect_lag(w, *_log, orchestrator_group, stream::ingress, o.partition, o.ingress);
    collect_lag(w, *_log, orchestrator_group, stream::acks, o.partition, o.acks);
  }
  if (!_options.kafka) collect_log_quarantine(w);
  for (const auto& worker : _workers) {
    collect_worker(w, worker->group(), worker->commands(), worker->probe());
    if (_options.kafka) {
      // The worker's own committed positions (no offset fetch): the partitions it runs.
      for (const auto& [p, next] : worker->positions()) {
        collect_lag(w, *_log, worker->group(), worker->commands(), p, next);
      }
      continue;
    }
    for (uint32_t p = 0; p < _options.partitions; ++p) {
      auto position = _log->position(worker->group(), worker->commands(), p);
      if (position) collect_lag(w, *_log, worker->group(), worker->commands(), p, *position);
    }
  }
}

}  // namespace auterity
