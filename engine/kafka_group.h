#pragma once
// Consumer-group membership for scale-out on Kafka: engine instances (or worker pools) join one
// group on a topic and Kafka splits the topic's partitions among them. Owning partition p of
// the group's topic means owning partition p of every co-partitioned stream.
//
// The member consumes no data: it pauses what it is assigned and only keeps its membership
// alive (a poll thread). On assignment it calls `assigned` (the node restores state and
// starts runtimes); on revocation it calls `revoked` and waits for it to return (the node
// finishes or aborts the open transaction and stops the runtimes) before giving the
// partitions up, so two instances never run one partition at once. Its live group metadata
// (generation, member id) goes with every transactional offset commit of the group
// (exactly-once v2), so an instance that lost its partitions is fenced and cannot commit.

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "engine/kafka_log.h"

struct rd_kafka_s;  // librdkafka's rd_kafka_t; the header does not include librdkafka

namespace auterity {

class kafka_membership {
 public:
  struct callbacks {
    std::function<void(const std::vector<uint32_t>&)> assigned;
    std::function<void(const std::vector<uint32_t>&)> revoked;
  };

  // Joins `group` (a logical group, e.g. "orchestrator") on the topic of stream `s`.
  static result<std::unique_ptr<kafka_membership>> join(const kafka_log_options& options,
                                                        std::string_view group, stream s,
                                                        callbacks cb);
  ~kafka_membership();

  // Leaves the group: the revoke callback runs for what is owned, then the member closes.
  void leave();

  std::vector<uint32_t> owned() const;
  // A copy of the live group metadata (rd_kafka_consumer_group_metadata_t*, the caller
  // destroys it), for send_offsets_to_transaction.
  void* group_metadata_copy() const;
  const std::string& group() const { return _group; }

  // Asked on the member's own connection (no client made per call), from any thread:
  // the partition count of `topic` in the cluster's metadata (errc::not_found: no such topic),
  // and the end offset (high watermark) of `topic`'s partition 0 (-1: no such topic).
  result<uint32_t> topic_partitions(const std::string& topic, int timeout_ms) const;
  result<int64_t> end_offset(const std::string& topic, int timeout_ms) const;
  // Assignments this member was given (rebalances of its group that included it), since it
  // joined: the node waits for one more after it saw the topics grow.
  uint64_t assignments() const { return _assignments.load(); }

  struct impl;

 private:
  kafka_membership() = default;
  void poll_loop();
  // A new consumer of the group, subscribed (join() and rejoin()).
  result<rd_kafka_s*> subscribe();
  void rejoin(const char* why);

  std::unique_ptr<impl> _impl;
  std::string _group;
  callbacks _cb;
  mutable std::mutex _owned_mu;
  std::vector<uint32_t> _owned;
  std::atomic<bool> _stop{false};
  std::atomic<uint64_t> _assignments{0};
  std::thread _thread;
  friend void membership_rebalance(kafka_membership& m, int err, void* partitions);
};

}  // namespace auterity
