#include "connectors/connectors.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>

#include <fmt/core.h>
#include <nlohmann/json.hpp>

namespace auterity {

using json = nlohmann::json;

namespace {

ack_result success(const json& output) { return ack_success(output.dump()); }

// A simple, explainable lead score: dealers want to see why a lead is hot.
json lead_score(const json& in) {
  int score = 10;
  json reasons = json::array();
  auto num = [&](const char* k) {
    return in.contains(k) && in[k].is_number() ? in[k].get<double>() : 0.0;
  };
  auto text = [&](const char* k) {
    return in.contains(k) && in[k].is_string() ? in[k].get<std::string>() : std::string();
  };
  if (double budget = num("budget"); budget >= 40000) {
    score += 35, reasons.push_back("budget >= 40k");
  } else if (budget >= 20000) {
    score += 20, reasons.push_back("budget >= 20k");
  }
  const std::string timeline = text("timeline");
  if (timeline == "this_week" || timeline == "now") {
    score += 30, reasons.push_back("buying this week");
  } else if (timeline == "this_month") {
    score += 15, reasons.push_back("buying this month");
  }
  if (text("source") == "referral") score += 15, reasons.push_back("referral");
  if (in.contains("trade_in") && in["trade_in"].is_boolean() && in["trade_in"].get<bool>()) {
    score += 10, reasons.push_back("has trade-in");
  }
  score = std::min(score, 100);
  const char* grade = score >= 70 ? "hot" : score >= 40 ? "warm" : "cold";
  return json{{"score", score}, {"grade", grade}, {"reasons", reasons}};
}

class local_step_connector final : public connector {
 public:
  ack_result execute(const fbs::Envelope& command, const command_context&) override {
    auto cmd = command.payload_as_RunStep();
    json in = json::parse(sv(cmd->input_json()), nullptr, false);
    if (in.is_discarded()) return ack_permanent("step input is not JSON");
    const std::string_view action = sv(cmd->action());
    if (action == "transform") return success(in);
    if (action == "lead_score") return success(lead_score(in));
    if (action == "flaky") {
      const uint32_t ok_at = in.value("succeed_on_attempt", 1u);
      if (cmd->attempt() >= ok_at) return success(json{{"attempt", cmd->attempt()}});
      return ack_retryable(
          fmt::format("flaky: attempt {} fails, {} will succeed", cmd->attempt(), ok_at));
    }
    if (action == "fail") return ack_permanent(in.value("error", std::string("failed as asked")));
    return ack_permanent(
        fmt::format("unknown task action '{}' (local actions: transform, "
                    "lead_score, flaky, fail)",
                    action));
  }
};

class unconfigured_ai_connector final : public connector {
 public:
  ack_result execute(const fbs::Envelope&, const command_context&) override {
    return ack_permanent(
        "no AI model endpoint is configured on this engine; the workflow takes its fallback "
        "path");
  }
};

}  // namespace

std::unique_ptr<connector> make_local_step_connector() {
  return std::make_unique<local_step_connector>();
}
std::unique_ptr<connector> make_unconfigured_ai_connector() {
  return std::make_unique<unconfigured_ai_connector>();
}

result<std::unique_ptr<outbox_connector>> outbox_connector::open(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return fail(errc::io, fmt::format("cannot create outbox dir {}: {}", dir, ec.message()));
  std::string path = dir + "/notifications.jsonl";
  std::unordered_set<std::string> seen;
  std::string content;
  {
    std::ifstream existing(path, std::ios::binary);
    content.assign(std::istreambuf_iterator<char>(existing), std::istreambuf_iterator<char>());
  }
  // A torn last line (a crash mid-write) is not a sent notification: cut it off, so the
  // redelivered command writes it whole.
  const size_t complete = content.rfind('\n') == std::string::npos ? 0 : content.rfind('\n') + 1;
  if (complete < content.size()) std::filesystem::resize_file(path, complete, ec);
  if (ec) return fail(errc::io, fmt::format("cannot repair {}: {}", path, ec.message()));
  for (size_t pos = 0; pos < complete;) {
    const size_t end = content.find('\n', pos);
    json j = json::parse(std::string_view(content).substr(pos, end - pos), nullptr, false);
    if (!j.is_discarded() && j.contains("id")) seen.insert(j["id"].get<std::string>());
    pos = end + 1;
  }
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) return fail(errc::io, fmt::format("cannot open {}: {}", path, std::strerror(errno)));
  return std::unique_ptr<outbox_connector>(
      new outbox_connector(std::move(path), fd, std::move(seen)));
}

outbox_connector::outbox_connector(std::string path, int fd, std::unordered_set<std::string> seen)
    : _path(std::move(path)), _fd(fd), _seen(std::move(seen)) {}

outbox_connector::~outbox_connector() { ::close(_fd); }

ack_result outbox_connector::execute(const fbs::Envelope& command, const command_context&) {
  auto n = command.payload_as_SendNotification();
  const std::string id(sv(n->idempotency_id()));
  if (sv(n->channel()).empty()) return ack_permanent("notification has no channel");
  std::lock_guard lock(_mu);
  // A redelivered command (its first ack lost in a crash) answers as the first delivery did:
  // the step's output must not depend on where a crash fell. The line is not written twice.
  if (_seen.contains(id)) {
    return success(json{{"outbox", _path}, {"channel", sv(n->channel())}, {"to", sv(n->to())}});
  }
  json line = {{"id", id},
               {"tenant", sv(command.tenant_id())},
               {"execution", sv(command.execution_id())},
               {"channel", sv(n->channel())},
               {"to", sv(n->to())},
               {"subject", sv(n->subject())},
               {"body", sv(n->body())}};
  std::string text = line.dump() + "\n";
  if (::write(_fd, text.data(), text.size()) != static_cast<ssize_t>(text.size()) ||
      ::fdatasync(_fd) != 0) {
    return ack_retryable(fmt::format("outbox write failed: {}", std::strerror(errno)));
  }
  _seen.insert(id);
  return success(json{{"outbox", _path}, {"channel", sv(n->channel())}, {"to", sv(n->to())}});
}

}  // namespace auterity
