#pragma once
// The API in the engine process: engine_access over a node (node/node.h).

#include <atomic>

#include "api/service.h"
#include "node/node.h"

namespace auterity {

class node_access final : public engine_access {
 public:
  explicit node_access(node& n) : _node(n) {}
  log& events() override { return _node.get_log(); }
  uint32_t partitions() const override { return _node.partitions(); }
  bool with_store(uint32_t p, const std::function<void(const state_store&)>& fn) override {
    return _node.with_store(p, fn);
  }
  bool ready() override { return _ready.load(); }
  void set_ready(bool r) { _ready = r; }

 private:
  node& _node;
  std::atomic<bool> _ready{false};
};

}  // namespace auterity
