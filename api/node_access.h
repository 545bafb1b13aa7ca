#pragma once
// The API in the engine process: engine_access over a node (node/node.h).

#include <atomic>
#include <mutex>
#include <optional>

#include <fmt/core.h>

#include "api/service.h"
#include "node/node.h"

namespace auterity {

// The scale requested through the API (POST /v1/partitions/scale) and its outcome, kept by the
// process that serves the engine (`run --http`) across the API's and the node's reopening
// (docs/tenant-moves.md, "Moves while the engine runs"). Any thread.
class scale_board {
 public:
  // errc::locked while one is requested or running.
  result<void> request(uint32_t to) {
    std::lock_guard lock(_mu);
    if (_s.state == "requested" || _s.state == "running") {
      return fail(errc::locked, fmt::format("a scale to {} partitions is {}", _s.to, _s.state));
    }
    _s = {"requested", to, ""};
    return {};
  }
  // The partitions asked for, if a scale is requested; it is running from then on.
  std::optional<uint32_t> take() {
    std::lock_guard lock(_mu);
    if (_s.state != "requested") return std::nullopt;
    _s.state = "running";
    return _s.to;
  }
  void finish(bool ok, std::string message) {
    std::lock_guard lock(_mu);
    _s.state = ok ? "done" : "failed";
    _s.message = std::move(message);
  }
  engine_access::scale_status status() const {
    std::lock_guard lock(_mu);
    return _s;
  }

 private:
  mutable std::mutex _mu;
  engine_access::scale_status _s;
};

class node_access final : public engine_access {
 public:
  // `board`: where scale requests go; none: this process does not scale (refused).
  explicit node_access(node& n, scale_board* board = nullptr) : _node(n), _board(board) {}
  log& events() override { return _node.get_log(); }
  uint32_t partitions() const override { return _node.partitions(); }
  bool with_store(uint32_t p, const std::function<void(const state_store&)>& fn) override {
    return _node.with_store(p, fn);
  }
  bool ready() override { return _ready.load(); }
  void set_ready(bool r) { _ready = r; }
  scale_status scale() override { return _board ? _board->status() : scale_status{}; }
  result<void> request_scale(uint32_t to) override {
    if (!_board) return engine_access::request_scale(to);
    return _board->request(to);
  }

 private:
  node& _node;
  scale_board* _board;
  std::atomic<bool> _ready{false};
};

}  // namespace auterity
