// `auterity status --kafka B`: the engine's consumer groups as the brokers see them — members,
// assignments, lag and the last commit per partition — through librdkafka's Admin API
// (DescribeConsumerGroups, ListConsumerGroupOffsets) and a read_committed reader.
//
// Lag is what a read_committed reader of the group would still get: the partition's last stable
// offset (ListOffsets with read_committed isolation) minus the group's committed offset, less
// the transaction markers and aborted records in between, which are counted by reading the gap
// when it is at most lag_read_offsets_max offsets (otherwise the offset difference is shown, an
// upper bound, marked "~"). So a drained group shows 0 where auterity_consumer_lag_records
// (high watermark minus position) shows the last commit marker as 1.
//
// Last commit: Kafka keeps no time for a committed offset, and the engine's commits carry no
// offset metadata. The orchestrator's is the time of the last record its commits appended to
// executions on the partition (every commit that decides something appends events there); a
// worker group's is the time of the last command it committed past ("last input"). Both are the
// records' CreateTime, set by the producer.

#include <librdkafka/rdkafka.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include "cli/cli.h"
#include "engine/kafka_log.h"
#include "engine/kafka_util.h"
#include "engine/partition_runtime.h"

namespace auterity {
namespace {

using json = nlohmann::json;

// Largest gap (offsets) between a committed offset and the stable end that is read to count the
// records in it exactly; a larger gap is shown as the offset difference (an upper bound).
constexpr int64_t lag_read_offsets_max = 10'000;
// How far back from an offset the last record before it is looked for (a transaction's
// records and its marker, or an aborted transaction, lie in between).
constexpr int64_t last_record_window_offsets = 256;
// Times the groups are described when one of them could not be (no coordinator yet).
constexpr int describe_attempts_max = 3;

using event_ptr = kafka_handle<rd_kafka_event_t, rd_kafka_event_destroy>;
using client_ptr = kafka_handle<rd_kafka_t, rd_kafka_destroy>;
using queue_ptr = kafka_handle<rd_kafka_queue_t, rd_kafka_queue_destroy>;
using options_ptr = kafka_handle<rd_kafka_AdminOptions_t, rd_kafka_AdminOptions_destroy>;
using tplist_ptr =
    kafka_handle<rd_kafka_topic_partition_list_t, rd_kafka_topic_partition_list_destroy>;

struct member_status {
  std::string client_id, host, instance_id, member_id;
  std::vector<std::pair<std::string, int32_t>> assigned;  // (topic, partition)
  // The static member id the engine sets ("<instance>.<group>"), else the client id.
  const std::string& name() const { return instance_id.empty() ? client_id : instance_id; }
};

struct partition_status {
  std::string topic;
  int32_t partition = 0;
  std::string member;                // member_status::name() of the member assigned it; empty: none
  std::optional<int64_t> committed;  // none: the group never committed here
  int64_t end = 0;                   // last stable offset
  int64_t lag = 0;
  bool lag_exact = true;
  std::optional<int64_t> last_commit_ms;
};

struct group_status {
  std::string logical;  // "orchestrator", "worker.commands.step", ...
  std::string id;       // "auterity.orchestrator"
  std::string state;
  std::string error;  // the group could not be described or its offsets not listed
  // Where last_commit_ms comes from: "executions" (the orchestrator: the last record its
  // commits appended on the partition) or "input" (a worker: the last command it committed past).
  std::string last_commit_source;
  std::vector<member_status> members;
  std::vector<partition_status> partitions;
};

class status_reader {
 public:
  status_reader(client_ptr admin, client_ptr reader, int timeout_ms)
      : _admin(std::move(admin)),
        _reader(std::move(reader)),
        _queue(rd_kafka_queue_new(_admin.get())),
        _timeout_ms(timeout_ms) {}

  result<event_ptr> wait(rd_kafka_event_type_t type, std::string_view what) {
    event_ptr ev(rd_kafka_queue_poll(_queue.get(), _timeout_ms + 5'000));
    if (!ev) return fail(errc::timeout, fmt::format("{}: no answer in {} ms", what, _timeout_ms));
    if (rd_kafka_event_type(ev.get()) != type) {
      return fail(errc::io,
                  fmt::format("{}: unexpected reply {}", what, rd_kafka_event_name(ev.get())));
    }
    if (rd_kafka_event_error(ev.get())) {
      return fail(errc::io, fmt::format("{}: {}", what, rd_kafka_event_error_string(ev.get())));
    }
    return ev;
  }

  options_ptr options(rd_kafka_admin_op_t op) {
    options_ptr o(rd_kafka_AdminOptions_new(_admin.get(), op));
    char errstr[256];
    // Cannot fail: the CLI keeps the timeout within librdkafka's range.
    (void)rd_kafka_AdminOptions_set_request_timeout(o.get(), _timeout_ms, errstr, sizeof errstr);
    return o;
  }

  // Describes every group (one request); fills state, members and errors.
  result<void> describe(std::vector<group_status>& groups) {
    std::vector<const char*> ids;
    for (const group_status& g : groups) ids.push_back(g.id.c_str());
    auto o = options(RD_KAFKA_ADMIN_OP_DESCRIBECONSUMERGROUPS);
    rd_kafka_DescribeConsumerGroups(_admin.get(), ids.data(), ids.size(), o.get(), _queue.get());
    auto ev = wait(RD_KAFKA_EVENT_DESCRIBECONSUMERGROUPS_RESULT, "describing the consumer groups");
    if (!ev) return std::unexpected(ev.error());
    size_t n = 0;
    const auto* const* descs = rd_kafka_DescribeConsumerGroups_result_groups(
        rd_kafka_event_DescribeConsumerGroups_result(ev->get()), &n);
    for (size_t i = 0; i < n; ++i) {
      const std::string id = rd_kafka_ConsumerGroupDescription_group_id(descs[i]);
      auto g = std::find_if(groups.begin(), groups.end(), [&](auto& x) { return x.id == id; });
      if (g == groups.end()) continue;
      if (const rd_kafka_error_t* err = rd_kafka_ConsumerGroupDescription_error(descs[i])) {
        g->error = rd_kafka_error_string(err);
        continue;
      }
      g->state =
          rd_kafka_consumer_group_state_name(rd_kafka_ConsumerGroupDescription_state(descs[i]));
      for (size_t m = 0; m < rd_kafka_ConsumerGroupDescription_member_count(descs[i]); ++m) {
        const auto* md = rd_kafka_ConsumerGroupDescription_member(descs[i], m);
        member_status ms;
        auto str = [](const char* s) { return std::string(s ? s : ""); };
        ms.client_id = str(rd_kafka_MemberDescription_client_id(md));
        ms.host = str(rd_kafka_MemberDescription_host(md));
        ms.instance_id = str(rd_kafka_MemberDescription_group_instance_id(md));
        ms.member_id = str(rd_kafka_MemberDescription_consumer_id(md));
        if (const auto* a = rd_kafka_MemberDescription_assignment(md)) {
          if (const auto* parts = rd_kafka_MemberAssignment_partitions(a)) {
            for (int k = 0; k < parts->cnt; ++k) {
              ms.assigned.emplace_back(parts->elems[k].topic, parts->elems[k].partition);
            }
          }
        }
        std::sort(ms.assigned.begin(), ms.assigned.end());
        g->members.push_back(std::move(ms));
      }
    }
    return {};
  }

  // The group's committed offsets on every partition of `topics` (librdkafka 2.0 lists one
  // group per request). Not require_stable: a transaction in progress must not stall a status.
  result<std::map<std::pair<std::string, int32_t>, int64_t>> committed(
      const std::string& group, const std::vector<std::string>& topics, int32_t partitions) {
    tplist_ptr asked(
        rd_kafka_topic_partition_list_new(static_cast<int>(topics.size()) * partitions));
    for (const std::string& t : topics) {
      for (int32_t p = 0; p < partitions; ++p)
        rd_kafka_topic_partition_list_add(asked.get(), t.c_str(), p);
    }
    rd_kafka_ListConsumerGroupOffsets_t* req =
        rd_kafka_ListConsumerGroupOffsets_new(group.c_str(), asked.get());
    auto o = options(RD_KAFKA_ADMIN_OP_LISTCONSUMERGROUPOFFSETS);
    rd_kafka_ListConsumerGroupOffsets(_admin.get(), &req, 1, o.get(), _queue.get());
    rd_kafka_ListConsumerGroupOffsets_destroy(req);
    auto ev = wait(RD_KAFKA_EVENT_LISTCONSUMERGROUPOFFSETS_RESULT,
                   fmt::format("listing the offsets of {}", group));
    if (!ev) return std::unexpected(ev.error());
    size_t n = 0;
    const auto* const* res = rd_kafka_ListConsumerGroupOffsets_result_groups(
        rd_kafka_event_ListConsumerGroupOffsets_result(ev->get()), &n);
    std::map<std::pair<std::string, int32_t>, int64_t> out;
    for (size_t i = 0; i < n; ++i) {
      if (const rd_kafka_error_t* err = rd_kafka_group_result_error(res[i])) {
        return fail(errc::io, fmt::format("offsets of {}: {}", group, rd_kafka_error_string(err)));
      }
      const auto* parts = rd_kafka_group_result_partitions(res[i]);
      for (int k = 0; parts && k < parts->cnt; ++k) {
        const auto& e = parts->elems[k];
        if (e.err == RD_KAFKA_RESP_ERR_NO_ERROR && e.offset >= 0)
          out[{e.topic, e.partition}] = e.offset;
      }
    }
    return out;
  }

  // The last stable offset (read_committed ListOffsets).
  result<int64_t> stable_end(const std::string& topic, int32_t partition) {
    int64_t low = 0, high = 0;
    rd_kafka_resp_err_t err = rd_kafka_query_watermark_offsets(_reader.get(), topic.c_str(),
                                                               partition, &low, &high, _timeout_ms);
    if (err) {
      return fail(errc::io,
                  fmt::format("end offset of {}/{}: {}", topic, partition, rd_kafka_err2str(err)));
    }
    return high;
  }

  struct range {
    std::string topic;
    int32_t partition = 0;
    int64_t from = 0, to = 0;  // [from, to) with to <= the stable end
    size_t records = 0;
    std::optional<int64_t> last_ms;  // CreateTime of the last record read
    bool done = false;
    static range of(std::string topic, int32_t partition, int64_t from, int64_t to) {
      range r;
      r.topic = std::move(topic);
      r.partition = partition;
      r.from = from;
      r.to = to;
      return r;
    }
  };
  // Reads each range with read_committed isolation: the records a group's reader would get (no
  // markers, no aborted records), counted, and the time of the last one. A range not read to
  // its end within the timeout (or not readable) stays !done.
  void read(std::vector<range>& ranges) {
    tplist_ptr assign(rd_kafka_topic_partition_list_new(static_cast<int>(ranges.size())));
    std::map<std::pair<std::string, int32_t>, range*> by_tp;
    size_t open = 0;
    for (range& r : ranges) {
      if (r.from >= r.to) {
        r.done = true;
        continue;
      }
      rd_kafka_topic_partition_list_add(assign.get(), r.topic.c_str(), r.partition)->offset =
          r.from;
      by_tp[{r.topic, r.partition}] = &r;
      ++open;
    }
    if (open == 0 || rd_kafka_assign(_reader.get(), assign.get()) != RD_KAFKA_RESP_ERR_NO_ERROR) {
      return;
    }
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(_timeout_ms);
    while (open > 0 && std::chrono::steady_clock::now() < deadline) {
      rd_kafka_message_t* m = rd_kafka_consumer_poll(_reader.get(), 100);
      if (!m) continue;
      auto it = m->rkt ? by_tp.find({rd_kafka_topic_name(m->rkt), m->partition}) : by_tp.end();
      if (it != by_tp.end() && !it->second->done) {
        range& r = *it->second;
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
          r.done = true;  // at the stable end: nothing more to read
        } else if (!m->err && m->offset < r.to) {
          r.records++;
          rd_kafka_timestamp_type_t type;
          const int64_t ts = rd_kafka_message_timestamp(m, &type);
          if (ts >= 0) r.last_ms = ts;
          r.done = m->offset + 1 >= r.to;
        } else if (!m->err) {
          r.done = true;  // past the range: the rest were markers or aborted
        }
        if (r.done) --open;
      }
      rd_kafka_message_destroy(m);
    }
    rd_kafka_assign(_reader.get(), nullptr);
  }

 private:
  client_ptr _admin, _reader;
  queue_ptr _queue;
  int _timeout_ms;
};

int report(const error& e) {
  fmt::print(stderr, "auterity: {} ({})\n", e.message, errc_name(e.code));
  return 2;
}

result<client_ptr> make_client(rd_kafka_type_t type, std::map<std::string, std::string> settings,
                               std::string_view what) {
  auto conf = kafka_conf_new(settings);
  if (!conf) return std::unexpected(conf.error());
  auto rk = kafka_client_new(type, *conf, what);
  if (!rk) return std::unexpected(rk.error());
  return client_ptr(*rk);
}

std::string time_text(std::optional<int64_t> ms, int64_t now_ms) {
  if (!ms) return "-";
  const int64_t ago_s = std::max<int64_t>(0, (now_ms - *ms) / 1000);
  return fmt::format("{}s ago", ago_s);
}

json to_json(const group_status& g) {
  json members = json::array();
  for (const member_status& m : g.members) {
    json assigned = json::array();
    for (const auto& [t, p] : m.assigned) assigned.push_back({{"topic", t}, {"partition", p}});
    members.push_back({{"client_id", m.client_id},
                       {"host", m.host},
                       {"instance_id", m.instance_id},
                       {"member_id", m.member_id},
                       {"assigned", assigned}});
  }
  json parts = json::array();
  for (const partition_status& p : g.partitions) {
    parts.push_back({{"topic", p.topic},
                     {"partition", p.partition},
                     {"member", p.member.empty() ? json() : json(p.member)},
                     {"committed", p.committed ? json(*p.committed) : json()},
                     {"end", p.end},
                     {"lag", p.lag},
                     {"lag_exact", p.lag_exact},
                     {"last_commit_ms", p.last_commit_ms ? json(*p.last_commit_ms) : json()}});
  }
  json out = {{"group", g.id},
              {"state", g.state},
              {"members", members},
              {"partitions", parts},
              {"last_commit_source", g.last_commit_source}};
  if (!g.error.empty()) out["error"] = g.error;
  return out;
}

void print_table(const group_status& g, int64_t now_ms) {
  fmt::print("group {} ({}){}\n", g.id, g.state.empty() ? "?" : g.state,
             g.error.empty() ? "" : ": " + g.error);
  for (const member_status& m : g.members) {
    std::string parts;
    for (const auto& [t, p] : m.assigned)
      parts += fmt::format("{}{}/{}", parts.empty() ? "" : " ", t, p);
    fmt::print("  member {} (client {}, host {}): {}\n", m.name(), m.client_id, m.host,
               parts.empty() ? "(no partitions)" : parts);
  }
  if (g.partitions.empty()) return;
  fmt::print(
      "  {:<24} {:>9} {:>10} {:>10} {:>8}  {:<28} {}\n", "topic", "partition", "committed", "end",
      "lag", "member",
      g.last_commit_source == "executions" ? "last commit (executions)" : "last commit (input)");
  for (const partition_status& p : g.partitions) {
    fmt::print("  {:<24} {:>9} {:>10} {:>10} {:>8}  {:<28} {}\n", p.topic, p.partition,
               p.committed ? std::to_string(*p.committed) : "-", p.end,
               (p.lag_exact ? "" : "~") + std::to_string(p.lag), p.member.empty() ? "-" : p.member,
               time_text(p.last_commit_ms, now_ms));
  }
}

}  // namespace

int kafka_groups_status(const kafka_status_flags& f) {
  std::map<std::string, std::string> settings = f.properties;
  settings["bootstrap.servers"] = f.bootstrap;
  auto admin = make_client(RD_KAFKA_PRODUCER, settings, "Kafka admin client");
  if (!admin) return report(admin.error());
  std::map<std::string, std::string> reader_settings = settings;
  // librdkafka's assign() wants a group id; this one is never joined and never committed to.
  reader_settings["group.id"] = "auterity.status";
  reader_settings["isolation.level"] = "read_committed";
  reader_settings["enable.auto.commit"] = "false";
  reader_settings["enable.partition.eof"] = "true";
  // A group that never committed lags from the log's start, even after retention moved it.
  reader_settings["auto.offset.reset"] = "earliest";
  auto reader = make_client(RD_KAFKA_CONSUMER, reader_settings, "Kafka reader");
  if (!reader) return report(reader.error());
  rd_kafka_poll_set_consumer(reader->get());

  // The partition count: of the ingress topic (the engine refuses to run on topics that are
  // not co-partitioned).
  const std::string ingress = f.topic_prefix + std::string(stream_name(stream::ingress));
  int32_t partitions = 0;
  {
    const rd_kafka_metadata_t* md = nullptr;
    kafka_handle<rd_kafka_topic_t, rd_kafka_topic_destroy> t(
        rd_kafka_topic_new(admin->get(), ingress.c_str(), nullptr));
    rd_kafka_resp_err_t err = rd_kafka_metadata(admin->get(), 0, t.get(), &md, f.timeout_ms);
    if (err) {
      return report(
          error{errc::io, fmt::format("metadata of {}: {}", ingress, rd_kafka_err2str(err))});
    }
    if (md->topic_cnt == 1 && !md->topics[0].err) partitions = md->topics[0].partition_cnt;
    rd_kafka_metadata_destroy(md);
    if (partitions <= 0) {
      return report(error{errc::not_found,
                          fmt::format("topic {} does not exist (auterity topics apply)", ingress)});
    }
  }
  status_reader r(std::move(*admin), std::move(*reader), f.timeout_ms);

  struct group_spec {
    std::string logical;
    std::vector<stream> inputs;
  };
  const std::vector<group_spec> specs = {
      {std::string(orchestrator_group), {stream::ingress, stream::acks}},
      {"worker.commands.step", {stream::commands_step}},
      {"worker.commands.ai", {stream::commands_ai}},
      {"worker.commands.notify", {stream::commands_notify}}};
  std::vector<group_status> groups;
  for (const group_spec& s : specs) {
    group_status g;
    g.logical = s.logical;
    g.id = kafka_group_id(s.logical);
    groups.push_back(std::move(g));
  }
  // On a fresh cluster the first group request makes the brokers create __consumer_offsets,
  // and the coordinators are not available until it exists: ask again.
  for (int attempt = 1;; ++attempt) {
    for (group_status& g : groups) {
      g.error.clear();
      g.members.clear();
    }
    if (auto d = r.describe(groups); !d) return report(d.error());
    const bool failed = std::any_of(groups.begin(), groups.end(),
                                    [](const group_status& g) { return !g.error.empty(); });
    if (!failed || attempt >= describe_attempts_max) break;
    std::this_thread::sleep_for(std::chrono::seconds(1));
  }

  int rc = 0;
  for (size_t i = 0; i < groups.size(); ++i) {
    group_status& g = groups[i];
    if (!g.error.empty()) rc = 1;  // not described (e.g. no answer yet): offsets may still come
    std::vector<std::string> topics;
    for (stream s : specs[i].inputs) topics.push_back(f.topic_prefix + std::string(stream_name(s)));
    auto committed = r.committed(g.id, topics, partitions);
    if (!committed) {
      g.error = committed.error().message;
      rc = 1;
      continue;
    }
    std::vector<status_reader::range> gaps, lasts;
    g.last_commit_source = g.logical == orchestrator_group ? "executions" : "input";
    for (const std::string& t : topics) {
      for (int32_t p = 0; p < partitions; ++p) {
        partition_status ps;
        ps.topic = t;
        ps.partition = p;
        // The member assigned partition p of the group's topic owns p of every co-partitioned
        // stream (the orchestrator joins on ingress and commits acks positions too).
        for (const member_status& m : g.members) {
          for (const auto& [topic, partition] : m.assigned) {
            if (partition == p) ps.member = m.name();
          }
        }
        auto end = r.stable_end(t, p);
        if (!end) return report(end.error());
        ps.end = *end;
        if (auto it = committed->find({t, p}); it != committed->end()) ps.committed = it->second;
        const int64_t from = ps.committed.value_or(0);
        ps.lag = std::max<int64_t>(0, ps.end - from);
        ps.lag_exact = ps.lag == 0;
        if (ps.lag > 0 && ps.lag <= lag_read_offsets_max)
          gaps.push_back(status_reader::range::of(t, p, from, ps.end));
        if (from > 0)
          lasts.push_back(status_reader::range::of(
              t, p, std::max<int64_t>(0, from - last_record_window_offsets), from));
        g.partitions.push_back(std::move(ps));
      }
    }
    if (g.logical == orchestrator_group) {
      // The orchestrator's commits append to executions: its last record is the last commit.
      lasts.clear();
      const std::string executions = f.topic_prefix + std::string(stream_name(stream::executions));
      for (int32_t p = 0; p < partitions; ++p) {
        auto end = r.stable_end(executions, p);
        if (!end) return report(end.error());
        lasts.push_back(status_reader::range::of(
            executions, p, std::max<int64_t>(0, *end - last_record_window_offsets), *end));
      }
    }
    // A gap not read to its end keeps the offset difference (lag_exact false); a last record
    // not found leaves the time unknown.
    r.read(gaps);
    r.read(lasts);
    for (partition_status& ps : g.partitions) {
      for (const auto& gap : gaps) {
        if (gap.done && gap.topic == ps.topic && gap.partition == ps.partition) {
          ps.lag = static_cast<int64_t>(gap.records);
          ps.lag_exact = true;
        }
      }
      for (const auto& last : lasts) {
        const bool same = last.partition == ps.partition &&
                          (last.topic == ps.topic || g.logical == orchestrator_group);
        if (same && last.last_ms)
          ps.last_commit_ms = std::max(ps.last_commit_ms.value_or(0), *last.last_ms);
      }
    }
  }

  const int64_t now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                             std::chrono::system_clock::now().time_since_epoch())
                             .count();
  if (f.json) {
    json out = json::array();
    for (const group_status& g : groups) out.push_back(to_json(g));
    fmt::print("{}\n", json{{"groups", out}}.dump(2));
  } else {
    for (const group_status& g : groups) print_table(g, now_ms);
  }
  return rc;
}

}  // namespace auterity
