#include "engine/kafka_group.h"

#include <librdkafka/rdkafka.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <mutex>
#include <shared_mutex>
#include <thread>

#include <fmt/core.h>

#include "engine/assert.h"
#include "engine/kafka_util.h"

namespace auterity {

struct kafka_membership::impl {
  // Replaced after a fatal consumer error (rejoin, which holds mu exclusively); the readers of
  // rk (group metadata for commits, the node's metadata watch) share it, so a slow metadata
  // request never holds up a commit.
  std::shared_mutex mu;
  rd_kafka_t* rk = nullptr;
  std::string topic;
  std::map<std::string, std::string> conf;
  uint64_t rejoins = 0;
};

namespace {

std::vector<uint32_t> partitions_of(const rd_kafka_topic_partition_list_t* list) {
  std::vector<uint32_t> out;
  for (int i = 0; i < list->cnt; ++i)
    out.push_back(static_cast<uint32_t>(list->elems[i].partition));
  return out;
}

void on_rebalance(rd_kafka_t*, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t* parts,
                  void* opaque) {
  membership_rebalance(*static_cast<kafka_membership*>(opaque), static_cast<int>(err), parts);
}

}  // namespace

void membership_rebalance(kafka_membership& m, int err, void* partitions) {
  auto* parts = static_cast<rd_kafka_topic_partition_list_t*>(partitions);
  rd_kafka_t* rk = m._impl->rk;
  const std::vector<uint32_t> list = partitions_of(parts);
  if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
    rd_kafka_assign(rk, parts);
    rd_kafka_pause_partitions(rk, parts);  // membership only: the readers fetch the data
    {
      std::lock_guard lock(m._owned_mu);
      m._owned = list;
    }
    if (m._cb.assigned) m._cb.assigned(list);
    m._assignments.fetch_add(1);
    return;
  }
  // Revoked (or lost): stop using the partitions before anyone else may take them.
  if (m._cb.revoked) m._cb.revoked(list);
  {
    std::lock_guard lock(m._owned_mu);
    m._owned.clear();
  }
  rd_kafka_assign(rk, nullptr);
}

result<std::unique_ptr<kafka_membership>> kafka_membership::join(const kafka_log_options& options,
                                                                 std::string_view group, stream s,
                                                                 callbacks cb) {
  std::unique_ptr<kafka_membership> m(new kafka_membership());
  m->_impl = std::make_unique<impl>();
  m->_group = group;
  m->_cb = std::move(cb);
  m->_impl->topic = options.topic_prefix + std::string(stream_name(s));
  m->_impl->conf = {
      {"bootstrap.servers", options.bootstrap},
      {"group.id", kafka_group_id(group)},
      {"enable.auto.commit", "false"},
      {"enable.auto.offset.store", "false"},
      {"isolation.level", "read_committed"},
      {"partition.assignment.strategy", "range"},
      // A killed instance's partitions move after this long; 6 s is the broker's minimum.
      {"session.timeout.ms", "6000"},
      {"heartbeat.interval.ms", "1000"},
      // Static membership: a restarted instance (same id) takes its partitions straight back,
      // without a rebalance or waiting for the dead member's session to expire.
      {"group.instance.id", fmt::format("{}.{}", options.instance_id, group)},
      // Partitions added to the topics (`topics apply --allow-repartition`) are seen at the
      // next metadata refresh (librdkafka's default waits 5 minutes), which rejoins the group
      // and rebalances it over the new count (docs/tenant-moves.md). Only a consumer made
      // before the topics grew sees a change: the node opens itself again only after that
      // rebalance.
      {"topic.metadata.refresh.interval.ms", "5000"},
  };
  // The operator's settings (security, tuning) fill in; on a clash the engine's win.
  m->_impl->conf.merge(std::map<std::string, std::string>(options.client_config));
  auto rk = m->subscribe();
  if (!rk) return std::unexpected(rk.error());
  m->_impl->rk = *rk;
  m->_thread = std::thread([raw = m.get()] { raw->poll_loop(); });
  return m;
}

result<rd_kafka_t*> kafka_membership::subscribe() {
  auto c = kafka_conf_new(_impl->conf);
  if (!c) return std::unexpected(c.error());
  rd_kafka_conf_set_rebalance_cb(*c, on_rebalance);
  rd_kafka_conf_set_opaque(*c, this);
  auto rk = kafka_client_new(RD_KAFKA_CONSUMER, *c, "kafka group member");
  if (!rk) return std::unexpected(rk.error());
  rd_kafka_poll_set_consumer(*rk);
  rd_kafka_topic_partition_list_t* topics = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(topics, _impl->topic.c_str(), RD_KAFKA_PARTITION_UA);
  const rd_kafka_resp_err_t sub = rd_kafka_subscribe(*rk, topics);
  rd_kafka_topic_partition_list_destroy(topics);
  if (sub) {
    rd_kafka_destroy(*rk);
    return fail(errc::io, fmt::format("subscribe {} to {}: {}", kafka_group_id(_group),
                                      _impl->topic, rd_kafka_err2str(sub)));
  }
  return *rk;
}

void kafka_membership::poll_loop() {
  while (!_stop.load()) {
    // Serves heartbeats-related events and the rebalance callback; data never arrives here
    // (assigned partitions are paused), and a message fetched before the pause is dropped.
    if (rd_kafka_message_t* msg = rd_kafka_consumer_poll(_impl->rk, 100)) {
      rd_kafka_message_destroy(msg);
    }
    char why[512];
    if (rd_kafka_fatal_error(_impl->rk, why, sizeof why) != RD_KAFKA_RESP_ERR_NO_ERROR) {
      rejoin(why);
    }
  }
}

// A fatal consumer error (e.g. FENCED_INSTANCE_ID after a coordinator moved during a broker
// loss) ends this consumer for good: give up what it owned (stopping it first, as on a
// revocation), and join again with a new consumer under the same static id. Until the new
// member is assigned, commits of the group carry the dead member's metadata and are refused.
void kafka_membership::rejoin(const char* why) {
  std::vector<uint32_t> owned;
  {
    std::lock_guard lock(_owned_mu);
    owned.swap(_owned);
  }
  fmt::print(stderr, "auterity: group {}: fatal consumer error ({}); rejoining\n",
             kafka_group_id(_group), why);
  if (_cb.revoked && !owned.empty()) _cb.revoked(owned);
  for (;;) {
    auto rk = subscribe();
    if (rk) {
      std::lock_guard lock(_impl->mu);
      rd_kafka_destroy_flags(_impl->rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
      _impl->rk = *rk;
      _impl->rejoins++;
      return;
    }
    fmt::print(stderr, "auterity: group {}: rejoin failed, retrying in 1 s: {}\n",
               kafka_group_id(_group), rk.error().message);
    for (int i = 0; i < 10 && !_stop.load(); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    if (_stop.load()) return;
  }
}

void kafka_membership::leave() {
  if (!_impl || !_impl->rk) return;
  _stop = true;
  if (_thread.joinable()) _thread.join();
  rd_kafka_consumer_close(_impl->rk);  // runs the revoke callback, then leaves the group
  rd_kafka_destroy(_impl->rk);
  _impl->rk = nullptr;
}

kafka_membership::~kafka_membership() { leave(); }

std::vector<uint32_t> kafka_membership::owned() const {
  std::lock_guard lock(_owned_mu);
  return _owned;
}

result<uint32_t> kafka_membership::topic_partitions(const std::string& topic,
                                                    int timeout_ms) const {
  std::shared_lock lock(_impl->mu);
  rd_kafka_topic_t* t = rd_kafka_topic_new(_impl->rk, topic.c_str(), nullptr);
  if (!t) return fail(errc::io, fmt::format("topic handle {}", topic));
  const rd_kafka_metadata_t* md = nullptr;
  const rd_kafka_resp_err_t err = rd_kafka_metadata(_impl->rk, 0, t, &md, timeout_ms);
  rd_kafka_topic_destroy(t);
  if (err) return fail(errc::io, fmt::format("metadata of {}: {}", topic, rd_kafka_err2str(err)));
  std::unique_ptr<const rd_kafka_metadata_t, void (*)(const rd_kafka_metadata_t*)> guard(
      md, rd_kafka_metadata_destroy);
  for (int i = 0; i < md->topic_cnt; ++i) {
    if (topic != md->topics[i].topic) continue;
    if (md->topics[i].err) {
      return fail(errc::not_found,
                  fmt::format("metadata of {}: {}", topic, rd_kafka_err2str(md->topics[i].err)));
    }
    return static_cast<uint32_t>(md->topics[i].partition_cnt);
  }
  return fail(errc::not_found, fmt::format("metadata of {}: no such topic", topic));
}

result<int64_t> kafka_membership::end_offset(const std::string& topic, int timeout_ms) const {
  std::shared_lock lock(_impl->mu);
  int64_t low = 0, high = 0;
  const rd_kafka_resp_err_t err =
      rd_kafka_query_watermark_offsets(_impl->rk, topic.c_str(), 0, &low, &high, timeout_ms);
  if (err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) return -1;
  if (err) return fail(errc::io, fmt::format("end of {}: {}", topic, rd_kafka_err2str(err)));
  return high;
}

void* kafka_membership::group_metadata_copy() const {
  std::shared_lock lock(_impl->mu);
  return rd_kafka_consumer_group_metadata(_impl->rk);
}

}  // namespace auterity
