#include "processors/node.h"

#include <filesystem>
#include <limits>

#include <fmt/core.h>

#include "engine/embedded_log.h"
#include "processors/client.h"
#include "processors/connectors.h"

namespace auterity {

node::node(node_options options, clock& clk) : _options(std::move(options)), _clock(clk) {}

node::~node() { stop(); }

result<std::unique_ptr<node>> node::open(const node_options& options, clock& clk) {
  std::unique_ptr<node> n(new node(options, clk));
  if (options.kafka) {
    auto l = open_kafka_log(*options.kafka);
    if (!l) return std::unexpected(l.error());
    n->_log = std::move(*l);
    n->_dense_offsets = false;
  } else {
    embedded_log_options lo;
    lo.partitions = options.partitions;
    lo.fsync = options.fsync;
    auto l = open_embedded_log(options.data_dir + "/log", lo);
    if (!l) return std::unexpected(l.error());
    n->_log = std::move(*l);
  }
  n->_options.partitions = n->_log->partition_count();
  // On Kafka a commit becomes readable only after its transaction markers are fetched, so a
  // wake-up on our own commit often finds nothing yet: poll briefly instead of sleeping long.
  worker_options wo;
  if (options.kafka) {
    n->_options.runtime.idle_wait_ms_max = 5;
    wo.idle_wait_ms_max = 5;
  }
  for (uint32_t p = 0; p < n->_options.partitions; ++p) {
    auto store = state_store::open(fmt::format("{}/state/p{:03}", options.data_dir, p));
    if (!store) return std::unexpected(store.error());
    auto o = std::make_unique<orchestrator>(orchestrator_options{n->_options.partitions});
    n->_orchestrators.push_back(o.get());
    n->_partitions.push_back(std::make_unique<partition_runtime>(
        *n->_log, p, std::move(*store), std::move(o), clk, n->_options.runtime));
  }
  if (options.workers) {
    auto outbox = outbox_connector::open(options.data_dir + "/outbox");
    if (!outbox) return std::unexpected(outbox.error());
    n->_workers.push_back(std::make_unique<worker_runtime>(
        *n->_log, stream::commands_step, make_local_step_connector(), clk, wo));
    n->_workers.push_back(std::make_unique<worker_runtime>(
        *n->_log, stream::commands_ai, make_unconfigured_ai_connector(), clk, wo));
    n->_workers.push_back(std::make_unique<worker_runtime>(*n->_log, stream::commands_notify,
                                                           std::move(*outbox), clk, wo));
  }
  return n;
}

result<void> node::recover() {
  for (auto& p : _partitions) {
    if (auto r = p->recover(); !r) return r;
  }
  return {};
}

void node::start() {
  for (auto& p : _partitions) p->start();
  for (auto& w : _workers) w->start();
  _started = true;
}

void node::stop() {
  if (!_started) return;
  for (auto& w : _workers) w->stop();
  for (auto& p : _partitions) p->stop();
  _started = false;
}

result<size_t> node::step(bool workers) {
  size_t work = 0;
  for (auto& p : _partitions) {
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
  const uint32_t p = tenant_partition(tenant, _options.partitions);
  auto stored = _partitions[p]->store().get(keys::execution(tenant, id));
  if (!stored || !stored->has_value()) return std::nullopt;
  execution_state e;
  if (!decode_execution(**stored, e)) return std::nullopt;
  return e;
}

void node::for_each_execution(const std::function<void(const execution_state&)>& fn) {
  for (auto& p : _partitions) {
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
  for_each_execution(
      [&](const execution_state& e) { s.executions_by_status[std::string(exec_status_name(e.status))]++; });
  // Quiet only if no commit happened while we looked (generations unchanged).
  std::vector<uint64_t> generations;
  for (uint32_t p = 0; p < _options.partitions; ++p) generations.push_back(_log->generation(p));
  // Kafka offsets have gaps (transaction markers), so "caught up" cannot be read off the end
  // offsets; there quiet means only that no timer is pending.
  bool quiet = true;
  for (uint32_t p = 0; p < _options.partitions; ++p) {
    s.events += _log->end_offset(stream::executions, p);
    s.deadletters += _log->end_offset(stream::deadletter, p);
    const orchestrator& o = *_orchestrators[p];
    s.rejections += o.probe().rejections.load();
    s.stale_acks += o.probe().stale_acks.load();
    s.commands += o.probe().commands_out.load();
    quiet = quiet && o.published_next_timer_ms() == std::numeric_limits<int64_t>::max();
    if (!_dense_offsets) continue;
    for (stream in : {stream::ingress, stream::acks}) {
      quiet = quiet && _log->position(orchestrator_group, in, p) == _log->end_offset(in, p);
    }
    for (stream c : {stream::commands_step, stream::commands_ai, stream::commands_notify}) {
      const std::string g = fmt::format("worker.{}", stream_name(c));
      if (_options.workers) quiet = quiet && _log->position(g, c, p) == _log->end_offset(c, p);
    }
  }
  for (uint32_t p = 0; p < _options.partitions; ++p) {
    quiet = quiet && _log->generation(p) == generations[p];
  }
  s.quiescent = quiet;
  return s;
}

}  // namespace auterity
