#pragma once
// Local connectors: the work that needs no network. Network connectors (HTTP, AI providers,
// SMS/WhatsApp/email/Slack) arrive with the connectors issue.
//
//   task actions   transform    output = the rendered input
//                  lead_score   scores a sales lead 0..100 from budget/timeline/source/trade_in
//                  flaky        fails retryably until attempt `succeed_on_attempt` (tests, demos)
//                  fail         fails permanently with input.error
//   ai             no endpoint: a permanent failure saying so; workflows take their fallback
//   notify         outbox: appends one JSON line per notification to <dir>/notifications.jsonl,
//                  once per idempotency id (a redelivered command is not written twice)

#include <memory>
#include <mutex>
#include <string>
#include <unordered_set>

#include "engine/worker_runtime.h"

namespace auterity {

std::unique_ptr<connector> make_local_step_connector();
std::unique_ptr<connector> make_unconfigured_ai_connector();

class outbox_connector final : public connector {
 public:
  // Opens (creating) <dir>/notifications.jsonl and loads the ids already written.
  static result<std::unique_ptr<outbox_connector>> open(const std::string& dir);
  ~outbox_connector() override;
  ack_result execute(const fbs::Envelope& command, const command_context&) override;
  const std::string& path() const { return _path; }

 private:
  outbox_connector(std::string path, int fd, std::unordered_set<std::string> seen);
  std::string _path;
  int _fd;
  // The worker runs commands in parallel: the check of _seen, the write and the insert are one
  // step, so two deliveries of the same id cannot both write.
  std::mutex _mu;
  std::unordered_set<std::string> _seen;  // guarded by _mu
};

}  // namespace auterity
