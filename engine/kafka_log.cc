// The Kafka log. librdkafka's C API throughout: it exposes everything transactions need
// (rd_kafka_consumer_group_metadata_new for groups without a live member, error objects that
// say whether a transaction must be aborted or the producer is fenced).
//
// Threading: partition p's commits queue for committer thread p mod committers, which runs one
// transaction at a time, taking turns on its transactional producers (group commit of its
// partitions and workers); different committers' transactions run at the same time
// (docs/pipelined-transactions.md, step 1). A committer stuck in librdkafka past
// request_timeout_ms + 5 s is left behind and replaced (librdkafka#5456). Each (stream,
// partition) that is read gets a consumer of its own, assigned to that one partition, so
// readers of different partitions never contend; each consumer costs a few
// librdkafka threads and one connection per broker. Positions are read with one consumer per
// group (OffsetFetch, no group membership).

#include "engine/kafka_log.h"
#include "engine/kafka_placement.h"

#include <librdkafka/rdkafka.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>

#include <fmt/core.h>

#include "engine/assert.h"
#include "engine/fault.h"
#include "engine/kafka_util.h"
#include "engine/partition_runtime.h"

namespace auterity {

std::string kafka_group_id(std::string_view group) { return fmt::format("auterity.{}", group); }

namespace {

struct rk_deleter {
  void operator()(rd_kafka_t* rk) const {
    if (rd_kafka_type(rk) == RD_KAFKA_CONSUMER) rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
  }
};
using rk_ptr = std::unique_ptr<rd_kafka_t, rk_deleter>;

using list_ptr =
    kafka_handle<rd_kafka_topic_partition_list_t, rd_kafka_topic_partition_list_destroy>;
using error_ptr = kafka_handle<rd_kafka_error_t, rd_kafka_error_destroy>;
using message_ptr = kafka_handle<rd_kafka_message_t, rd_kafka_message_destroy>;
using cgmd_ptr =
    kafka_handle<rd_kafka_consumer_group_metadata_t, rd_kafka_consumer_group_metadata_destroy>;

// Delivery of one produced message: where it landed, or why not.
struct delivery {
  int64_t offset = -1;
  rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR_NO_ERROR;
};

void on_delivery(rd_kafka_t*, const rd_kafka_message_t* m, void*) {
  auto* d = static_cast<delivery*>(m->_private);
  d->offset = m->offset;
  d->err = m->err;
}

result<rk_ptr> make_client(rd_kafka_type_t type, const std::map<std::string, std::string>& conf,
                           bool with_delivery) {
  auto c = kafka_conf_new(conf);
  if (!c) return std::unexpected(c.error());
  if (with_delivery) rd_kafka_conf_set_dr_msg_cb(*c, on_delivery);
  auto rk = kafka_client_new(type, *c, "kafka client");
  if (!rk) return std::unexpected(rk.error());
  return rk_ptr(*rk);
}

error kafka_error(std::string_view what, const rd_kafka_error_t* e) {
  return error{errc::io,
               fmt::format("{}: {} ({})", what, rd_kafka_error_string(e), rd_kafka_error_name(e))};
}

// One consumer reading one (topic, partition), read_committed.
struct reader {
  std::mutex mu;
  rk_ptr consumer;
  uint64_t next = 0;    // offset the consumer will deliver next
  bool at_end = false;  // the last fetch reached the end (PARTITION_EOF)
  uint64_t end = 0;     // where it did: the last stable offset the broker gave with the EOF
};

class kafka_log final : public log {
  struct committer;
  struct lane;
  struct pending_commit;

 public:
  explicit kafka_log(kafka_log_options options) : _options(std::move(options)) {}

  result<void> open() {
    auto meta = make_client(RD_KAFKA_CONSUMER, consumer_conf("auterity.meta"), false);
    if (!meta) return std::unexpected(meta.error());
    _meta = std::move(*meta);
    // ListOffsets answers with the isolation level of the handle that asks: read_committed gives
    // the last stable offset (await_decided), read_uncommitted the log end (end_offset).
    std::map<std::string, std::string> uncommitted = consumer_conf("auterity.meta");
    uncommitted["isolation.level"] = "read_uncommitted";
    auto meta_end = make_client(RD_KAFKA_CONSUMER, uncommitted, false);
    if (!meta_end) return std::unexpected(meta_end.error());
    _meta_end = std::move(*meta_end);
    auto partitions = discover_partitions();
    if (!partitions) return std::unexpected(partitions.error());
    _partitions = *partitions;
    _generations = std::make_unique<std::atomic<uint64_t>[]>(_partitions);
    if (auto r = read_placement(); !r) return r;
    if (_options.read_only) return {};
    if (_options.appends_only) {
      std::map<std::string, std::string> conf = producer_conf(0);
      conf.erase("transactional.id");
      conf.erase("transaction.timeout.ms");
      auto a = make_client(RD_KAFKA_PRODUCER, conf, true);
      if (!a) return std::unexpected(a.error());
      _appender = std::move(*a);
      return {};
    }
    if (_options.transactional_producers < 1 ||
        _options.transactional_producers > transactional_producers_max) {
      return fail(errc::invalid,
                  fmt::format("transactional_producers is {}; it must be 1 to {}",
                              _options.transactional_producers, transactional_producers_max));
    }
    if (_options.committers < 1 || _options.committers > kafka_committers_max) {
      return fail(errc::invalid, fmt::format("committers is {}; it must be 1 to {}",
                                             _options.committers, kafka_committers_max));
    }
    // Every id of every committer is fenced before any committer's first transaction.
    std::vector<std::shared_ptr<committer>> made;
    for (size_t i = 0; i < static_cast<size_t>(_options.committers); ++i) {
      _lanes.push_back(std::make_unique<lane>());
      made.push_back(std::make_shared<committer>());
      made.back()->lane = i;
      if (auto fenced = make_producers(*made.back()); !fenced) return fenced;
    }
    std::lock_guard lock(_txn_mu);
    for (size_t i = 0; i < made.size(); ++i) start_committer(*_lanes[i], made[i]);
    return {};
  }

  // The placement header (engine/kafka_placement.h); none recorded: the partition count.
  result<void> read_placement() {
    std::map<std::string, std::string> conf = {{"bootstrap.servers", _options.bootstrap}};
    conf.merge(std::map<std::string, std::string>(_options.client_config));
    const std::string t = _options.topic_prefix + std::string(placement_topic_suffix);
    auto h = read_kafka_placement(conf, t, _options.request_timeout_ms);
    if (!h) return std::unexpected(h.error());
    _placement = *h ? **h : placement_header{_partitions, {}};
    if (_placement.base > _partitions ||
        (!_placement.retired.empty() && _placement.retired.back() >= _partitions)) {
      return fail(
          errc::corrupt,
          fmt::format("{}: placement base {} (retired up to {}) does not fit the {} "
                      "partitions of the topics",
                      t, _placement.base,
                      _placement.retired.empty() ? 0 : _placement.retired.back(), _partitions));
    }
    return {};
  }
  placement_header placement() const override { return _placement; }

  ~kafka_log() override {
    std::vector<std::shared_ptr<committer>> running;
    {
      std::lock_guard lock(_txn_mu);
      _closing = true;
      for (const auto& l : _lanes) running.push_back(l->current);
    }
    for (const auto& l : _lanes) l->work_cv.notify_all();
    for (const auto& c : running) {
      if (c && c->thread.joinable()) c->thread.join();
    }
  }

  // transactional.id of id index `i`: "auterity.<instance>", then "auterity.<instance>.<i>".
  std::string transactional_id(size_t i) const {
    return i == 0 ? "auterity." + _options.instance_id
                  : fmt::format("auterity.{}.{}", _options.instance_id, i);
  }

  // A new transactional producer in every empty slot of committer c (id index c.lane *
  // transactional_producers + slot); init_transactions aborts what an earlier producer of this
  // instance left open under that transactional.id and fences it. All slots are filled before a
  // committer's first transaction, so nothing an earlier process (or a committer given up) left
  // open under any of the committer's ids can commit after it.
  result<void> make_producers(committer& c) {
    const size_t per = static_cast<size_t>(_options.transactional_producers);
    c.producers.resize(per);
    for (size_t slot = 0; slot < c.producers.size(); ++slot) {
      if (c.producers[slot]) continue;
      auto producer = make_client(RD_KAFKA_PRODUCER, producer_conf(c.lane * per + slot), true);
      if (!producer) return std::unexpected(producer.error());
      if (error_ptr e{rd_kafka_init_transactions(producer->get(), _options.request_timeout_ms)}) {
        return std::unexpected(kafka_error("init_transactions", e.get()));
      }
      c.producers[slot] = std::move(*producer);
    }
    return {};
  }

  uint32_t partition_count() const override { return _partitions; }

  result<std::vector<uint64_t>> commit(uint32_t p, const commit_batch& batch) override {
    return submit(p, batch).wait();
  }

  bool background_commits() const override { return !_options.read_only && !_options.appends_only; }

  // Queues the batch for p's committer and returns; the ticket waits for its transaction.
  commit_ticket submit(uint32_t p, const commit_batch& batch) override {
    auto refused = [](error e) { return commit_ticket::decided(std::unexpected(std::move(e))); };
    if (p >= _partitions) {
      return refused({errc::invalid, fmt::format("commit to partition {} of {}", p, _partitions)});
    }
    for (const auto& a : batch.appends) {
      if (a.partition && *a.partition >= _partitions) {
        return refused({errc::invalid,
                        fmt::format("append to partition {} of {}", *a.partition, _partitions)});
      }
      if (a.key.size() + a.value.size() > record_bytes_max) {
        return refused(
            {errc::too_large, fmt::format("record of {} bytes; record_bytes_max is {}",
                                          a.key.size() + a.value.size(), record_bytes_max)});
      }
    }
    if (batch.empty()) return commit_ticket::decided(std::vector<uint64_t>());
    if (_options.read_only) return refused({errc::invalid, "this Kafka log was opened read-only"});
    if (_options.appends_only) return commit_ticket::decided(append(p, batch));
    auto mine = std::make_shared<pending_commit>();
    mine->partition = p;
    mine->batch = &batch;
    mine->positions = batch.positions;
    mine->deliveries.resize(batch.appends.size());
    mine->queued_at = std::chrono::steady_clock::now();
    // Group commit: p's committer commits everything queued for it so far in one transaction;
    // the callers wait for it. Each batch stays atomic (it is inside one transaction) and
    // concurrent partitions and workers of that committer share the transaction's round trips.
    lane& to = *_lanes[p % _lanes.size()];
    {
      std::lock_guard lock(_txn_mu);
      to.queue.push_back(mine);
    }
    to.work_cv.notify_one();
    return commit_ticket::pending([this, &to, mine] { return await(to, mine); });
  }

  // Waits for a queued commit's transaction; its offsets, or why it failed.
  result<std::vector<uint64_t>> await(lane& to, const std::shared_ptr<pending_commit>& mine) {
    std::unique_lock lock(_txn_mu);
    const auto stall = std::chrono::milliseconds(_options.request_timeout_ms + stall_margin_ms);
    while (!mine->done) {
      if (_txn_cv.wait_for(lock, stall) == std::cv_status::no_timeout || mine->done) continue;
      // librdkafka 2.0.2 can block in send_offsets_to_transaction for good when the group
      // coordinator is lost (its timeout is not enforced, librdkafka#5456): a transaction that
      // runs past request_timeout_ms + stall_margin_ms is given up, with its thread and
      // producer, and a new committer (new producers, whose init_transactions fence and
      // abort the old transaction) takes the queue. Only p's committer is looked at.
      const auto busy = to.current->busy_since;
      if (busy != std::chrono::steady_clock::time_point{} &&
          std::chrono::steady_clock::now() - busy >= stall) {
        abandon_committer(to);
      }
    }
    if (!mine->outcome) return std::unexpected(mine->outcome.error());
    std::vector<uint64_t> offsets;
    offsets.reserve(mine->deliveries.size());
    for (const delivery& d : mine->deliveries) offsets.push_back(static_cast<uint64_t>(d.offset));
    return offsets;
  }

  // commit() of an appends_only log: produce, then wait for the acknowledgements. One commit at
  // a time (the flush waits for every record in flight, so concurrent commits would wait for
  // each other's anyway); the callers batch (the API: one commit per partition for many
  // requests).
  result<std::vector<uint64_t>> append(uint32_t p, const commit_batch& batch) {
    if (!batch.positions.empty()) {
      return fail(errc::invalid, "this Kafka log only appends (appends_only): no positions");
    }
    std::vector<delivery> deliveries(batch.appends.size());
    {
      std::lock_guard lock(_append_mu);
      if (auto r = produce_all(_appender.get(), p, batch, deliveries); !r) {
        rd_kafka_flush(_appender.get(), _options.request_timeout_ms);  // what was produced
        return std::unexpected(r.error());
      }
      if (rd_kafka_resp_err_t err = rd_kafka_flush(_appender.get(), _options.request_timeout_ms);
          err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        // Left in the queue: their callbacks would write into `deliveries` after we return.
        rd_kafka_purge(_appender.get(), RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
        rd_kafka_flush(_appender.get(), _options.request_timeout_ms);
        return fail(errc::io,
                    fmt::format("appending to partition {}: {}", p, rd_kafka_err2str(err)));
      }
    }
    if (auto d = check_deliveries(deliveries); !d) return std::unexpected(d.error());
    bump(p);
    std::vector<uint64_t> offsets;
    offsets.reserve(deliveries.size());
    for (const delivery& d : deliveries) offsets.push_back(static_cast<uint64_t>(d.offset));
    return offsets;
  }

  result<size_t> read(stream s, uint32_t p, uint64_t from, size_t max_records, size_t max_bytes,
                      std::vector<record>& out) override {
    if (p >= _partitions) {
      return fail(errc::invalid, fmt::format("read of partition {} of {}", p, _partitions));
    }
    auto r = reader_for(s, p, from);
    if (!r) return std::unexpected(r.error());
    std::lock_guard lock((*r)->mu);
    return fetch(**r, s, p, from, 0, max_records, max_bytes, out);
  }

  result<size_t> read_to(stream s, uint32_t p, uint64_t from, uint64_t end, size_t max_records,
                         size_t max_bytes, std::vector<record>& out) override {
    if (p >= _partitions) {
      return fail(errc::invalid, fmt::format("read of partition {} of {}", p, _partitions));
    }
    if (from >= end) return size_t{0};
    auto r = reader_for(s, p, from);
    if (!r) return std::unexpected(r.error());
    std::lock_guard lock((*r)->mu);
    return fetch(**r, s, p, from, end, max_records, max_bytes, out);
  }

  // The high watermark, asked with read_uncommitted isolation: a read_committed handle would
  // answer with the last stable offset, which an open transaction holds back (librdkafka >=
  // 1.7.1 asks ListOffsets with the handle's isolation level).
  result<uint64_t> end_offset(stream s, uint32_t p) override {
    if (p >= _partitions) {
      return fail(errc::invalid, fmt::format("end of partition {} of {}", p, _partitions));
    }
    return watermark(_meta_end.get(), s, p, "log end");
  }

  result<uint64_t> position(std::string_view group, stream s, uint32_t p) override {
    if (p >= _partitions) {
      return fail(errc::invalid, fmt::format("position on partition {} of {}", p, _partitions));
    }
    auto c = group_consumer(group);
    if (!c) return std::unexpected(c.error());
    list_ptr list(rd_kafka_topic_partition_list_new(1));
    rd_kafka_topic_partition_list_add(list.get(), topic(s).c_str(), static_cast<int32_t>(p));
    // read_committed: OffsetFetch with require_stable, so an open transaction's pending offsets
    // are waited for (UNSTABLE_OFFSET_COMMIT is retried) rather than skipped.
    rd_kafka_resp_err_t err = rd_kafka_committed(*c, list.get(), _options.request_timeout_ms);
    if (err == RD_KAFKA_RESP_ERR_NO_ERROR) err = list->elems[0].err;
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
      return fail(err == RD_KAFKA_RESP_ERR__TIMED_OUT ? errc::timeout : errc::io,
                  fmt::format("committed offset of {} on {}/{} (a transaction holding its offsets "
                              "may still be open): {}",
                              kafka_group_id(group), topic(s), p, rd_kafka_err2str(err)));
    }
    const int64_t offset = list->elems[0].offset;
    return offset < 0 ? 0 : static_cast<uint64_t>(offset);
  }

  result<void> await_decided(stream s, uint32_t p, uint64_t end,
                             std::chrono::milliseconds timeout) override {
    if (p >= _partitions) {
      return fail(errc::invalid, fmt::format("await partition {} of {}", p, _partitions));
    }
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    uint64_t stable = 0;
    for (;;) {
      auto lso = watermark(_meta.get(), s, p, "last stable offset");
      if (lso) {
        stable = *lso;
        if (stable >= end) return {};
      }
      if (std::chrono::steady_clock::now() >= deadline) {
        return fail(errc::timeout,
                    lso ? fmt::format("{}/{}: records up to {} are still in an open transaction "
                                      "(last stable offset {}) after {} ms; a paused or dead "
                                      "instance's transaction ends when it resumes or after "
                                      "transaction.timeout.ms",
                                      topic(s), p, end, stable, timeout.count())
                        : lso.error().message);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }

  // Wake-ups come from this process's own commits; records produced by other processes are
  // found by the runtimes' periodic polls (partition_runtime_options::idle_wait_ms_max).
  void wait(uint32_t p, uint64_t seen, std::chrono::milliseconds timeout) override {
    std::unique_lock lock(_wait_mu);
    _wait_cv.wait_for(lock, timeout, [&] { return _generations[p].load() != seen; });
  }
  uint64_t generation(uint32_t p) override { return _generations[p].load(); }
  void wait_any(uint64_t seen, std::chrono::milliseconds timeout) override {
    std::unique_lock lock(_wait_mu);
    _wait_cv.wait_for(lock, timeout, [&] { return _any.load() != seen; });
  }
  uint64_t generation_any() override { return _any.load(); }

 private:
  std::string topic(stream s) const { return _options.topic_prefix + std::string(stream_name(s)); }

  // ListOffsets goes to the leader librdkafka has cached; that cache is not refreshed by a
  // handle that consumes nothing, so after a leader moved (a broker died) every query went to
  // the dead leader ("Not leader for partition") until the process restarted. On a leadership
  // error the topic's metadata is asked for again and the query repeated, a few times.
  result<uint64_t> watermark(rd_kafka_t* handle, stream s, uint32_t p, std::string_view what) {
    int64_t low = 0, high = 0;
    std::lock_guard lock(_meta_mu);
    const std::string t = topic(s);
    rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR_NO_ERROR;
    for (int attempt = 0;; ++attempt) {
      err = rd_kafka_query_watermark_offsets(handle, t.c_str(), static_cast<int32_t>(p), &low,
                                             &high, _options.request_timeout_ms);
      const bool leadership = err == RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION ||
                              err == RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE ||
                              err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART ||
                              err == RD_KAFKA_RESP_ERR_FENCED_LEADER_EPOCH ||
                              err == RD_KAFKA_RESP_ERR__TRANSPORT;
      if (!leadership || attempt >= leader_refreshes_max) break;
      refresh_metadata(handle, t);
      std::this_thread::sleep_for(std::chrono::milliseconds(100 * (attempt + 1)));
    }
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR || high < 0) {
      return fail(err == RD_KAFKA_RESP_ERR__TIMED_OUT ? errc::timeout : errc::io,
                  fmt::format("{} of {}/{} from {}: {}", what, topic(s), p, _options.bootstrap,
                              rd_kafka_err2str(err)));
    }
    return static_cast<uint64_t>(high);
  }

  static constexpr int leader_refreshes_max = 5;  // metadata refreshes per watermark query

  void refresh_metadata(rd_kafka_t* handle, const std::string& t) {
    rd_kafka_topic_t* rkt = rd_kafka_topic_new(handle, t.c_str(), nullptr);
    const rd_kafka_metadata_t* md = nullptr;
    if (rd_kafka_metadata(handle, 0, rkt, &md, _options.request_timeout_ms) ==
        RD_KAFKA_RESP_ERR_NO_ERROR) {
      rd_kafka_metadata_destroy(md);
    }
    rd_kafka_topic_destroy(rkt);
  }

  std::map<std::string, std::string> producer_conf(size_t id_index) const {
    std::map<std::string, std::string> c = {
        {"bootstrap.servers", _options.bootstrap},
        {"transactional.id", transactional_id(id_index)},
        {"enable.idempotence", "true"},
        {"acks", "all"},
        {"linger.ms", "1"},
        // A transaction's offsets are refused (CONCURRENT_TRANSACTIONS) until the previous
        // transaction's markers are written; retrying after 100 ms (the default) made every
        // commit take ~105 ms on a local broker, 5 ms makes it ~25 ms.
        {"retry.backoff.ms", "5"},
        {"transaction.timeout.ms", std::to_string(_options.transaction_timeout_ms)},
        {"message.max.bytes", std::to_string(record_bytes_max + 4096)},
    };
    // The operator's settings (security, tuning) fill in; on a clash the engine's win.
    c.merge(std::map<std::string, std::string>(_options.client_config));
    for (const auto& [k, v] : _options.producer_config) c[k] = v;
    return c;
  }

  std::map<std::string, std::string> consumer_conf(const std::string& group) const {
    std::map<std::string, std::string> c = {
        {"bootstrap.servers", _options.bootstrap},
        {"group.id", group},
        {"enable.auto.commit", "false"},
        {"enable.auto.offset.store", "false"},
        {"isolation.level", "read_committed"},
        {"enable.partition.eof", "true"},
        {"auto.offset.reset", "earliest"},
        {"queued.max.messages.kbytes", "8192"},
        {"fetch.wait.max.ms", "10"},
    };
    // The operator's settings (security, tuning) fill in; on a clash the engine's win.
    c.merge(std::map<std::string, std::string>(_options.client_config));
    for (const auto& [k, v] : _options.consumer_config) c[k] = v;
    return c;
  }

  // A topic created a moment ago (`auterity topics apply`, then start) may not yet be in the
  // metadata cache of the broker that answers: on a cluster the controller's record reaches
  // each broker in its own time. Missing topics are asked for again for up to
  // topic_metadata_wait_ms before the engine refuses to start; disagreeing counts are final.
  result<uint32_t> discover_partitions() {
    const auto deadline = std::chrono::steady_clock::now() +
                          std::chrono::milliseconds(_options.topic_metadata_wait_ms);
    while (true) {
      auto r = discover_partitions_once();
      if (r || r.error().code != errc::not_found || std::chrono::steady_clock::now() >= deadline)
        return r;
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
  }

  result<uint32_t> discover_partitions_once() {
    const rd_kafka_metadata_t* md = nullptr;
    rd_kafka_resp_err_t err =
        rd_kafka_metadata(_meta.get(), 1, nullptr, &md, _options.request_timeout_ms);
    if (err)
      return fail(errc::io, fmt::format("kafka metadata from {}: {}", _options.bootstrap,
                                        rd_kafka_err2str(err)));
    std::unique_ptr<const rd_kafka_metadata_t, void (*)(const rd_kafka_metadata_t*)> guard(
        md, rd_kafka_metadata_destroy);
    std::map<std::string, int> counts;
    for (int i = 0; i < md->topic_cnt; ++i) {
      if (md->topics[i].err == RD_KAFKA_RESP_ERR_NO_ERROR) {
        counts[md->topics[i].topic] = md->topics[i].partition_cnt;
      }
    }
    std::string missing, disagree;
    const std::string first = topic(stream::ingress);
    for (int s = 0; s < stream_count; ++s) {
      const std::string t = topic(static_cast<stream>(s));
      auto it = counts.find(t);
      if (it == counts.end()) {
        missing += (missing.empty() ? "" : ", ") + t;
      } else if (counts.contains(first) && it->second != counts[first]) {
        disagree += fmt::format("{}{} has {}", disagree.empty() ? "" : ", ", t, it->second);
      }
    }
    if (!missing.empty()) {
      return fail(errc::not_found, fmt::format("topics missing on {}: {}; run `auterity topics "
                                               "apply --bootstrap {}`",
                                               _options.bootstrap, missing, _options.bootstrap));
    }
    if (!disagree.empty()) {
      return fail(errc::invalid,
                  fmt::format("co-partitioned topics disagree on partition count: {} has {}, {}; "
                              "every tenant-keyed topic needs the same count",
                              first, counts[first], disagree));
    }
    return static_cast<uint32_t>(counts[first]);
  }

  // One commit() waiting for its transaction. Shared with the committer, which may outlive the
  // caller's wait when it is given up; the caller's appends are read only while producing
  // (before any call that can block for good), the positions are copied.
  struct pending_commit {
    uint32_t partition = 0;
    const commit_batch* batch = nullptr;
    std::vector<commit_batch::position> positions;
    std::vector<delivery> deliveries;
    std::chrono::steady_clock::time_point queued_at;
    result<void> outcome{};
    bool done = false;  // guarded by _txn_mu
  };
  using pending_ptr = std::shared_ptr<pending_commit>;

  // A thread that runs transactions for the partitions of one lane, and the producers it uses
  // (only that thread touches them).
  //
  // Its transactions take turns on kafka_log_options::transactional_producers transactional
  // producers (2 by default), one transaction at a time. The coordinator refuses a
  // transactional.id's next transaction (AddPartitionsToTxn, AddOffsetsToTxn:
  // CONCURRENT_TRANSACTIONS) until the markers of its previous one are written, a few ms after
  // commit_transaction returned, and librdkafka 2.0.2 retries AddPartitionsToTxn only after a fixed
  // 20 ms: with one producer every transaction waited for the previous one's markers, ~20 ms
  // (bench/KAFKA.md, "Where the commit time goes"). Taking turns, a producer's previous transaction
  // ended a whole transaction ago. Order is kept (a transaction begins only after the committer's
  // previous one committed, and its records come after that one's in every partition; a
  // partition's commits all go through one committer); each transactional.id is fenced as before.
  struct committer {
    size_t lane = 0;  // which lane it serves: partitions p with p mod committers == lane
    std::thread thread;
    // Null after a fatal error of that producer: the next transaction makes one (all slots).
    std::vector<rk_ptr> producers;                       // transactional_producers of them
    size_t turn = 0;                                     // the slot of the next transaction
    std::chrono::steady_clock::time_point busy_since{};  // guarded by _txn_mu; {}: idle
    std::vector<pending_ptr> in_flight;                  // guarded by _txn_mu
    std::atomic<bool> abandoned{false};
  };

  // The commits waiting for one committer, and the committer serving them (replaced, with the
  // same transactional ids, when it is given up). One lane per kafka_log_options::committers,
  // made at open and fixed from then on.
  struct lane {
    std::vector<pending_ptr> queue;      // guarded by _txn_mu
    std::condition_variable work_cv;     // its committer waits for work
    std::shared_ptr<committer> current;  // guarded by _txn_mu
  };

  static constexpr int stall_margin_ms = 5'000;

  void start_committer(lane& l, std::shared_ptr<committer> c) {  // caller holds _txn_mu
    l.current = c;
    c->thread = std::thread([this, c] { run_committer(c); });
  }

  // With _txn_mu held: fails the stuck transaction's batches and the lane's queue (their outcome
  // is unknown: the partition runtimes step down and recover from the log), leaves the stuck
  // thread and its producers behind, and starts a new committer for the lane. Other lanes go on.
  void abandon_committer(lane& l) {
    std::shared_ptr<committer> old = l.current;
    old->abandoned = true;
    old->thread.detach();
    _abandoned_committers.push_back(old);
    const error why{errc::timeout,
                    fmt::format("a Kafka transaction did not finish within {} ms (a lost group "
                                "coordinator, librdkafka#5456); it was given up",
                                _options.request_timeout_ms + stall_margin_ms)};
    fmt::print(stderr, "auterity: {}\n", why.message);
    for (const pending_ptr& c : old->in_flight) {
      c->outcome = std::unexpected(why);
      c->done = true;
    }
    for (const pending_ptr& c : l.queue) {
      c->outcome = std::unexpected(why);
      c->done = true;
    }
    l.queue.clear();
    _txn_cv.notify_all();
    auto next = std::make_shared<committer>();
    next->lane = old->lane;
    start_committer(l, std::move(next));
  }

  void run_committer(std::shared_ptr<committer> self) {
    lane& l = *_lanes[self->lane];
    std::unique_lock lock(_txn_mu);
    while (!_closing && !self->abandoned) {
      if (l.queue.empty()) {
        l.work_cv.wait(lock);
        continue;
      }
      self->in_flight.swap(l.queue);
      self->busy_since = std::chrono::steady_clock::now();
      std::vector<pending_ptr> group = self->in_flight;
      lock.unlock();
      const result<void> r = transaction(*self, group);
      if (self->abandoned) return;  // given up: its callers were answered, `this` may be gone
      lock.lock();
      self->busy_since = {};
      self->in_flight.clear();
      if (self->abandoned) return;
      for (const pending_ptr& c : group) {
        c->outcome = r;
        c->done = true;
      }
      for (const pending_ptr& c : group) bump(c->partition);
      _txn_cv.notify_all();
    }
  }

  // One transaction: produce, send offsets, commit. Aborts on any failure that allows it.
  //
  // Failures, by what librdkafka says the producer can still do:
  //   - abortable (a refused TxnOffsetCommit of a member that lost its partitions, a failed
  //     produce): the transaction is aborted and every batch in it fails; the producer goes on;
  //   - retriable (commit_transaction timed out): asked again, up to request_timeout_ms more;
  //   - fenced (a newer epoch of this transactional.id: the coordinator timed out a
  //     transaction of this paused process, or another process runs as this instance): the
  //     producer is dropped and the next commit makes a new one; the third fence within
  //     fence_window fails every later commit with errc::fenced (two processes, one instance);
  //   - other fatal errors (idempotence state lost, e.g. after a broker lost acked data): the
  //     producer is dropped and the next commit makes a new one (init_transactions).
  // A failed commit may have committed (an answer lost with its broker); callers treat it as
  // unknown and recover from the log (the partition runtime steps down).
  result<void> transaction(committer& self, const std::vector<pending_ptr>& group) {
    if (self.producers.empty() ||
        std::ranges::any_of(self.producers, [](const rk_ptr& p) { return !p; })) {
      if (auto fenced = fenced_for_good()) return fail(errc::fenced, *fenced);
      if (auto made = make_producers(self); !made) return made;
    }
    const size_t slot = self.turn;
    self.turn = (self.turn + 1) % self.producers.size();
    rd_kafka_t* rk = self.producers[slot].get();
    kafka_commit_probe* probe = _options.probe.get();
    auto lap = std::chrono::steady_clock::now();
    auto took = [&](std::atomic<uint64_t>& sum) {  // adds the time since the last lap
      const auto now = std::chrono::steady_clock::now();
      sum.fetch_add(static_cast<uint64_t>(
                        std::chrono::duration_cast<std::chrono::microseconds>(now - lap).count()),
                    std::memory_order_relaxed);
      lap = now;
    };
    if (probe) {
      probe->transactions.fetch_add(1, std::memory_order_relaxed);
      probe->batches.fetch_add(group.size(), std::memory_order_relaxed);
      for (const pending_ptr& c : group) {
        probe->queue_us.fetch_add(
            static_cast<uint64_t>(
                std::chrono::duration_cast<std::chrono::microseconds>(lap - c->queued_at).count()),
            std::memory_order_relaxed);
      }
    }
    if (error_ptr e{rd_kafka_begin_transaction(rk)})
      return producer_failed(self, slot, "begin_transaction", e.get());
    bool decides = false;  // carries an orchestrator batch (fault points count only those)
    for (const pending_ptr& c : group) {
      for (const auto& pos : c->positions) decides = decides || pos.group == orchestrator_group;
    }
    result<void> produced;
    for (const pending_ptr& c : group) {
      if (produced) produced = produce_all(rk, c->partition, *c->batch, c->deliveries);
    }
    if (probe) took(probe->produce_us);
    if (produced && decides) fault_point("txn.produced");
    if (produced) produced = send_offsets(rk, group);
    if (probe) took(probe->offsets_us);
    if (produced && decides) fault_point("txn.offsets_sent");
    if (produced) {
      // Measured only: commit_transaction flushes by itself; flushing first splits the wait
      // for the records' acks from EndTxn.
      if (probe) {
        rd_kafka_flush(rk, _options.request_timeout_ms);
        took(probe->flush_us);
      }
      for (int attempt = 0;; ++attempt) {
        error_ptr e{rd_kafka_commit_transaction(rk, _options.request_timeout_ms)};
        if (probe) took(probe->end_us);
        if (!e) {
          for (const pending_ptr& c : group) {
            if (auto d = check_deliveries(c->deliveries); !d) return d;
          }
          return {};
        }
        if (rd_kafka_error_is_retriable(e.get()) && attempt < 1) continue;
        if (!rd_kafka_error_txn_requires_abort(e.get()))
          return producer_failed(self, slot, "commit_transaction", e.get());
        produced = std::unexpected(kafka_error("commit_transaction", e.get()));
        break;
      }
    }
    error_ptr abort{rd_kafka_abort_transaction(rk, _options.request_timeout_ms)};
    if (abort) {
      auto dropped = producer_failed(self, slot, "abort_transaction", abort.get());
      return fail(dropped.error().code,
                  fmt::format("{}; then {}", produced.error().message, dropped.error().message));
    }
    return produced;
  }

  // A producer error that is not abortable: fenced, fatal or not even retriable. The producer
  // is dropped (a fenced one for good).
  result<void> producer_failed(committer& self, size_t slot, std::string_view what,
                               const rd_kafka_error_t* e) {
    error err = kafka_error(what, e);
    const rd_kafka_resp_err_t code = rd_kafka_error_code(e);
    if (code == RD_KAFKA_RESP_ERR__FENCED || code == RD_KAFKA_RESP_ERR_PRODUCER_FENCED ||
        code == RD_KAFKA_RESP_ERR_INVALID_PRODUCER_EPOCH) {
      // Two causes look alike: another process started with this --instance (its
      // init_transactions bumped the epoch), or this process was paused past
      // transaction.timeout.ms and the coordinator aborted its transaction and bumped the epoch
      // itself. The second is recovered by a new producer; the first would then fence the other
      // process in turn, so fences that keep coming are taken for the first.
      self.producers[slot].reset();
      std::lock_guard lock(_fence_mu);
      const auto now = std::chrono::steady_clock::now();
      std::erase_if(_fences, [&](auto t) { return now - t > fence_window; });
      _fences.push_back(now);
      if (_fences.size() >= fences_max) {
        _fenced = fmt::format(
            "instance {} was fenced {} times within {} s: another process "
            "runs with the same --instance (transactional.id auterity.{}); {}",
            _options.instance_id, _fences.size(), fence_window.count(), _options.instance_id,
            err.message);
        return fail(errc::fenced, *_fenced);
      }
      fmt::print(stderr,
                 "auterity: the producer of instance {} was fenced ({}); if this process was "
                 "paused past transaction.timeout.ms that is expected: making a new one\n",
                 _options.instance_id, err.message);
      return std::unexpected(err);
    }
    if (rd_kafka_error_is_fatal(e)) self.producers[slot].reset();
    return std::unexpected(err);
  }

  std::optional<std::string> fenced_for_good() {
    std::lock_guard lock(_fence_mu);
    return _fenced;
  }

  result<void> produce_all(rd_kafka_t* rk, uint32_t p, const commit_batch& batch,
                           std::vector<delivery>& deliveries) {
    for (size_t i = 0; i < batch.appends.size(); ++i) {
      const auto& a = batch.appends[i];
      const std::string t = topic(a.s);
      for (;;) {
        rd_kafka_resp_err_t err = rd_kafka_producev(
            rk, RD_KAFKA_V_TOPIC(t.c_str()),
            RD_KAFKA_V_PARTITION(static_cast<int32_t>(a.partition.value_or(p))),
            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_KEY(a.key.data(), a.key.size()),
            RD_KAFKA_V_VALUE(const_cast<char*>(a.value.data()), a.value.size()),
            RD_KAFKA_V_OPAQUE(&deliveries[i]), RD_KAFKA_V_END);
        if (err == RD_KAFKA_RESP_ERR_NO_ERROR) break;
        if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL) {
          return fail(errc::io, fmt::format("produce to {}/{}: {}", t, p, rd_kafka_err2str(err)));
        }
        rd_kafka_poll(rk, 10);  // the local queue is full: let deliveries drain
      }
    }
    return {};
  }

  result<void> send_offsets(rd_kafka_t* rk, const std::vector<pending_ptr>& group) {
    std::map<std::string, list_ptr> by_group;
    for (const pending_ptr& c : group) {
      for (const auto& pos : c->positions) {
        list_ptr& l = by_group[pos.group];
        if (!l) l.reset(rd_kafka_topic_partition_list_new(4));
        rd_kafka_topic_partition_list_add(l.get(), topic(pos.s).c_str(),
                                          static_cast<int32_t>(c->partition))
            ->offset = static_cast<int64_t>(pos.next_offset);
      }
    }
    for (auto& [group, list] : by_group) {
      void* live = _options.group_metadata ? _options.group_metadata(group) : nullptr;
      cgmd_ptr md(live ? static_cast<rd_kafka_consumer_group_metadata_t*>(live)
                       : rd_kafka_consumer_group_metadata_new(kafka_group_id(group).c_str()));
      if (error_ptr e{rd_kafka_send_offsets_to_transaction(rk, list.get(), md.get(),
                                                           _options.request_timeout_ms)}) {
        return std::unexpected(kafka_error("send_offsets_to_transaction", e.get()));
      }
    }
    return {};
  }

  static result<void> check_deliveries(const std::vector<delivery>& deliveries) {
    for (const delivery& d : deliveries) {
      if (d.err != RD_KAFKA_RESP_ERR_NO_ERROR || d.offset < 0) {
        return fail(errc::io, fmt::format("a committed message reports {} (offset {})",
                                          rd_kafka_err2str(d.err), d.offset));
      }
    }
    return {};
  }

  void bump(uint32_t p) {
    {
      std::lock_guard lock(_wait_mu);
      _generations[p]++;
      _any++;
    }
    _wait_cv.notify_all();
  }

  result<reader*> reader_for(stream s, uint32_t p, uint64_t from) {
    std::lock_guard lock(_readers_mu);
    std::unique_ptr<reader>& r = _readers[{static_cast<int>(s), p}];
    if (r) return r.get();
    auto c =
        make_client(RD_KAFKA_CONSUMER,
                    consumer_conf(fmt::format("auterity.reader.{}", _options.instance_id)), false);
    if (!c) return std::unexpected(c.error());
    list_ptr list(rd_kafka_topic_partition_list_new(1));
    rd_kafka_topic_partition_list_add(list.get(), topic(s).c_str(), static_cast<int32_t>(p))
        ->offset = static_cast<int64_t>(from);
    if (rd_kafka_resp_err_t err = rd_kafka_assign(c->get(), list.get())) {
      return fail(errc::io, fmt::format("assign {}/{}: {}", topic(s), p, rd_kafka_err2str(err)));
    }
    r = std::make_unique<reader>();
    r->consumer = std::move(*c);
    r->next = from;
    return r.get();
  }

  static constexpr int seek_attempts_max = 3;
  result<void> seek(reader& r, stream s, uint32_t p, uint64_t from) {
    list_ptr list(rd_kafka_topic_partition_list_new(1));
    rd_kafka_topic_partition_list_add(list.get(), topic(s).c_str(), static_cast<int32_t>(p))
        ->offset = static_cast<int64_t>(from);
    // The seek waits for the consumer's fetcher thread; on a loaded machine that can take
    // longer than one request timeout, so a timed-out seek is tried again (seek_attempts_max).
    for (int attempt = 1;; ++attempt) {
      error_ptr e{
          rd_kafka_seek_partitions(r.consumer.get(), list.get(), _options.request_timeout_ms)};
      if (!e) break;
      if (rd_kafka_error_code(e.get()) != RD_KAFKA_RESP_ERR__TIMED_OUT ||
          attempt == seek_attempts_max) {
        return std::unexpected(kafka_error("seek", e.get()));
      }
    }
    r.next = from;
    r.at_end = false;
    r.end = 0;
    return {};
  }

  // Polls the reader from `from`. Without `until` (0), an end the consumer reached before counts:
  // the reader answers from its buffer. With it, only an end at or past `until` does: an earlier
  // one is stale (a transaction decided since), and the poll waits for the fetch that follows.
  result<size_t> fetch(reader& r, stream s, uint32_t p, uint64_t from, uint64_t until,
                       size_t max_records, size_t max_bytes, std::vector<record>& out) {
    if (from != r.next) {
      if (auto sk = seek(r, s, p, from); !sk) return std::unexpected(sk.error());
    }
    const auto deadline =
        std::chrono::steady_clock::now() + std::chrono::milliseconds(_options.read_wait_ms_max);
    size_t n = 0, bytes = 0;
    while (n < max_records && (n == 0 || bytes < max_bytes)) {
      const bool at_end = r.at_end && r.end >= until;
      // Wait only until the first answer; after data or at the end, take what is buffered.
      const int timeout = (n > 0 || at_end) ? 0 : 100;
      message_ptr m(rd_kafka_consumer_poll(r.consumer.get(), timeout));
      if (!m) {
        if (n > 0 || at_end) break;
        if (std::chrono::steady_clock::now() > deadline) {
          return fail(errc::io,
                      until == 0
                          ? fmt::format("no answer for {}/{} from {} within {} ms", topic(s), p,
                                        _options.bootstrap, _options.read_wait_ms_max)
                          : fmt::format("{}/{}: decided records below {} not fetched from {} "
                                        "within {} ms (the fetch stopped at {})",
                                        topic(s), p, until, _options.bootstrap,
                                        _options.read_wait_ms_max, r.next));
        }
        continue;
      }
      if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
        r.at_end = true;
        r.end = static_cast<uint64_t>(m->offset);
        if (n > 0) break;
        continue;  // at the end; the next poll (timeout 0) tells if anything arrived
      }
      if (m->err) {
        return fail(errc::io,
                    fmt::format("fetch {}/{}: {}", topic(s), p, rd_kafka_message_errstr(m.get())));
      }
      if (m->offset < static_cast<int64_t>(from)) continue;  // fetched before a seek
      r.at_end = false;
      r.next = static_cast<uint64_t>(m->offset) + 1;
      record rec;
      rec.offset = static_cast<uint64_t>(m->offset);
      if (m->key) rec.key.assign(static_cast<const char*>(m->key), m->key_len);
      if (m->payload) rec.value.assign(static_cast<const char*>(m->payload), m->len);
      bytes += rec.key.size() + rec.value.size();
      out.push_back(std::move(rec));
      ++n;
    }
    return n;
  }

  result<rd_kafka_t*> group_consumer(std::string_view group) {
    std::lock_guard lock(_groups_mu);
    rk_ptr& c = _groups[std::string(group)];
    if (!c) {
      auto made = make_client(RD_KAFKA_CONSUMER, consumer_conf(kafka_group_id(group)), false);
      if (!made) return std::unexpected(made.error());
      c = std::move(*made);
    }
    return c.get();
  }

  kafka_log_options _options;
  rk_ptr _meta;         // read_committed: last stable offsets
  rk_ptr _meta_end;     // read_uncommitted: log ends
  std::mutex _meta_mu;  // one ListOffsets at a time per log
  uint32_t _partitions = 0;
  placement_header _placement;             // read at open
  std::optional<std::string> _fenced;      // why the producer was fenced for good; _fence_mu
  static constexpr size_t fences_max = 3;  // fences within fence_window: another process
  static constexpr std::chrono::seconds fence_window{60};
  std::vector<std::chrono::steady_clock::time_point> _fences;  // recent fences; _fence_mu
  rk_ptr _appender;       // appends_only: the idempotent producer
  std::mutex _append_mu;  // one append() at a time
  std::mutex _txn_mu;
  std::condition_variable _txn_cv;            // commits answered
  std::vector<std::unique_ptr<lane>> _lanes;  // one per committer; none when read-only
  std::vector<std::shared_ptr<committer>> _abandoned_committers;  // stuck for good; kept alive
  bool _closing = false;                                          // guarded by _txn_mu
  std::mutex _fence_mu;                                           // guards _fenced and _fences
  std::mutex _readers_mu;
  std::map<std::pair<int, uint32_t>, std::unique_ptr<reader>> _readers;
  std::mutex _groups_mu;
  std::map<std::string, rk_ptr> _groups;
  std::mutex _wait_mu;
  std::condition_variable _wait_cv;
  std::unique_ptr<std::atomic<uint64_t>[]> _generations;
  std::atomic<uint64_t> _any{0};
};

}  // namespace

result<std::unique_ptr<log>> open_kafka_log(const kafka_log_options& options) {
  auto l = std::make_unique<kafka_log>(options);
  if (auto r = l->open(); !r) return std::unexpected(r.error());
  return std::unique_ptr<log>(std::move(l));
}

}  // namespace auterity
