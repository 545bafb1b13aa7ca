#include "processors/execution_state.h"

#include <algorithm>
#include <cstring>

#include "processors/limits.h"

namespace auterity {

std::string_view exec_status_name(exec_status s) {
  switch (s) {
    case exec_status::running:
      return "running";
    case exec_status::succeeded:
      return "succeeded";
    case exec_status::failed:
      return "failed";
    case exec_status::cancelled:
      return "cancelled";
  }
  return "unknown";
}

std::string_view step_status_name(step_status s) {
  switch (s) {
    case step_status::pending:
      return "pending";
    case step_status::running:
      return "running";
    case step_status::waiting:
      return "waiting";
    case step_status::delaying:
      return "delaying";
    case step_status::retry_wait:
      return "retry_wait";
    case step_status::succeeded:
      return "succeeded";
    case step_status::failed:
      return "failed";
    case step_status::timed_out:
      return "timed_out";
    case step_status::skipped:
      return "skipped";
    case step_status::cancelled:
      return "cancelled";
    case step_status::deferred:
      return "deferred";
  }
  return "unknown";
}

uint32_t step_state::retry_attempts() const {
  uint32_t failovers = 0;
  for (const ai_attempt& a : ai) failovers += a.failover ? 1 : 0;
  return attempt > failovers ? attempt - failovers : 1;
}

const ai_attempt* step_state::ai_of(uint32_t n) const {
  for (const ai_attempt& a : ai) {
    if (a.attempt == n) return &a;
  }
  return nullptr;
}

std::vector<std::string> step_state::ai_tried_in_round() const {
  std::vector<std::string> out;
  for (const ai_attempt& a : ai) {
    if (!a.failover) out.clear();
    out.push_back(a.provider + "/" + a.model);
  }
  return out;
}

bool step_resolved(step_status s) {
  return s == step_status::succeeded || s == step_status::failed || s == step_status::timed_out ||
         s == step_status::skipped;
}

namespace {

// A small deterministic binary codec: fixed-width little-endian integers and length-prefixed
// strings. Deterministic bytes matter: replay equivalence compares stores byte for byte.
class writer {
 public:
  explicit writer(std::string& out) : _out(out) {}
  template <typename T>
  void num(T v) {
    char buf[sizeof(T)];
    std::memcpy(buf, &v, sizeof(T));
    _out.append(buf, sizeof(T));
  }
  void str(std::string_view s) {
    num<uint32_t>(static_cast<uint32_t>(s.size()));
    _out.append(s);
  }
  void bytes(const uint8_t* p, size_t n) { _out.append(reinterpret_cast<const char*>(p), n); }

 private:
  std::string& _out;
};

class reader {
 public:
  explicit reader(std::string_view in) : _in(in) {}
  template <typename T>
  bool num(T& v) {
    if (_in.size() < sizeof(T)) return false;
    std::memcpy(&v, _in.data(), sizeof(T));
    _in.remove_prefix(sizeof(T));
    return true;
  }
  bool str(std::string& s) {
    uint32_t n = 0;
    if (!num(n) || _in.size() < n) return false;
    s.assign(_in.data(), n);
    _in.remove_prefix(n);
    return true;
  }
  bool bytes(uint8_t* p, size_t n) {
    if (_in.size() < n) return false;
    std::memcpy(p, _in.data(), n);
    _in.remove_prefix(n);
    return true;
  }
  bool done() const { return _in.empty(); }

 private:
  std::string_view _in;
};

// Format 1: no routed AI attempts. Format 2 adds each step's `ai` list after the signals;
// it is written only when a step has one, so tenants without an AI policy keep format 1 bytes.
constexpr uint8_t execution_format = 1;
constexpr uint8_t execution_format_ai = 2;
constexpr uint8_t execution_format_items = 3;  // format 2 + foreach items of each step
// Format 3 + sub-workflow links: parent, parent step, depth, each step's child and each of its
// items' child. Written only
// when the execution has one, so executions without sub-workflows keep their bytes.
constexpr uint8_t execution_format_links = 4;

bool has_links(const execution_state& e) {
  return !e.parent.empty() || std::ranges::any_of(e.steps, [](const step_state& s) {
    return !s.child.empty() ||
           std::ranges::any_of(s.items, [](const item_state& i) { return !i.child.empty(); });
  });
}

bool has_ai_attempts(const execution_state& e) {
  for (const step_state& s : e.steps) {
    if (!s.ai.empty()) return true;
  }
  return false;
}

}  // namespace

std::string encode_execution(const execution_state& e) {
  std::string out;
  out.reserve(256 + e.input_json.size() + e.steps.size() * 32);
  writer w(out);
  const bool links = has_links(e);
  const bool items = links || std::ranges::any_of(e.steps, [](const step_state& s) {
                       return !s.items.empty() || !s.items_json.empty();
                     });
  const bool ai = items || has_ai_attempts(e);
  w.num<uint8_t>(links   ? execution_format_links
                 : items ? execution_format_items
                 : ai    ? execution_format_ai
                         : execution_format);
  w.str(e.tenant);
  w.str(e.id);
  w.str(e.workflow);
  w.num(e.version);
  w.num(static_cast<uint8_t>(e.status));
  w.str(e.input_json);
  w.num(e.event_count);
  w.bytes(e.last_hash.data(), e.last_hash.size());
  w.num(e.started_ms);
  w.num(e.ended_ms);
  w.str(e.result);
  w.num(static_cast<uint16_t>(e.steps.size()));
  for (const step_state& s : e.steps) {
    w.num(static_cast<uint8_t>(s.status));
    w.num(s.attempt);
    w.num(s.timer_at_ms);
    w.str(s.output_json);
    w.str(s.error);
  }
  w.num(static_cast<uint32_t>(e.signals.size()));
  for (const auto& [name, payload] : e.signals) {
    w.str(name);
    w.str(payload);
  }
  if (!ai) return out;
  for (const step_state& s : e.steps) {
    w.num(static_cast<uint16_t>(s.ai.size()));
    for (const ai_attempt& a : s.ai) {
      w.num(a.attempt);
      w.str(a.provider);
      w.str(a.model);
      w.num(a.input_per_1k_micros);
      w.num(a.output_per_1k_micros);
      w.num(static_cast<uint8_t>((a.failover ? 1 : 0) | (a.usage_recorded ? 2 : 0)));
    }
  }
  if (!items) return out;
  for (const step_state& s : e.steps) {
    w.str(s.items_json);
    w.num(static_cast<uint32_t>(s.items.size()));
    for (const item_state& i : s.items) {
      w.num(static_cast<uint8_t>(i.status));
      w.num(i.attempt);
      w.num(i.timer_at_ms);
      w.str(i.output_json);
      w.str(i.error);
    }
  }
  if (!links) return out;
  w.str(e.parent);
  w.str(e.parent_step);
  w.num(e.depth);
  for (const step_state& s : e.steps) {
    w.str(s.child);
    for (const item_state& i : s.items) w.str(i.child);
  }
  return out;
}

bool peek_execution_status(std::string_view bytes, exec_status& out) {
  reader r(bytes);
  uint8_t format = 0, status = 0;
  std::string tenant, id, workflow;
  uint32_t version = 0;
  if (!r.num(format) || format < execution_format || format > execution_format_links ||
      !r.str(tenant) || !r.str(id) || !r.str(workflow) || !r.num(version) || !r.num(status)) {
    return false;
  }
  out = static_cast<exec_status>(status);
  return true;
}

bool decode_execution(std::string_view bytes, execution_state& e) {
  reader r(bytes);
  uint8_t format = 0, status = 0;
  uint16_t steps = 0;
  uint32_t signals = 0;
  if (!r.num(format) || format < execution_format || format > execution_format_links) {
    return false;
  }
  if (!r.str(e.tenant) || !r.str(e.id) || !r.str(e.workflow) || !r.num(e.version) ||
      !r.num(status) || !r.str(e.input_json) || !r.num(e.event_count) ||
      !r.bytes(e.last_hash.data(), e.last_hash.size()) || !r.num(e.started_ms) ||
      !r.num(e.ended_ms) || !r.str(e.result) || !r.num(steps)) {
    return false;
  }
  e.status = static_cast<exec_status>(status);
  e.steps.assign(steps, step_state{});
  for (step_state& s : e.steps) {
    uint8_t st = 0;
    if (!r.num(st) || !r.num(s.attempt) || !r.num(s.timer_at_ms) || !r.str(s.output_json) ||
        !r.str(s.error)) {
      return false;
    }
    s.status = static_cast<step_status>(st);
  }
  if (!r.num(signals)) return false;
  e.signals.assign(signals, {});
  for (auto& [name, payload] : e.signals) {
    if (!r.str(name) || !r.str(payload)) return false;
  }
  if (format >= execution_format_ai) {
    for (step_state& s : e.steps) {
      uint16_t n = 0;
      if (!r.num(n)) return false;
      s.ai.assign(n, ai_attempt{});
      for (ai_attempt& a : s.ai) {
        uint8_t flags = 0;
        if (!r.num(a.attempt) || !r.str(a.provider) || !r.str(a.model) ||
            !r.num(a.input_per_1k_micros) || !r.num(a.output_per_1k_micros) || !r.num(flags)) {
          return false;
        }
        a.failover = flags & 1;
        a.usage_recorded = flags & 2;
      }
    }
  }
  if (format >= execution_format_items) {
    for (step_state& s : e.steps) {
      uint32_t n = 0;
      if (!r.str(s.items_json) || !r.num(n) || n > limits::foreach_items_max) return false;
      s.items.assign(n, item_state{});
      for (item_state& i : s.items) {
        uint8_t st = 0;
        if (!r.num(st) || !r.num(i.attempt) || !r.num(i.timer_at_ms) || !r.str(i.output_json) ||
            !r.str(i.error)) {
          return false;
        }
        i.status = static_cast<step_status>(st);
      }
    }
  }
  if (format >= execution_format_links) {
    if (!r.str(e.parent) || !r.str(e.parent_step) || !r.num(e.depth)) return false;
    for (step_state& s : e.steps) {
      if (!r.str(s.child)) return false;
      for (item_state& i : s.items) {
        if (!r.str(i.child)) return false;
      }
    }
  }
  return r.done();
}

namespace {
constexpr uint8_t held_signal_format = 1;
}  // namespace

std::string encode_held_signal(const held_signal& h) {
  std::string out;
  writer w(out);
  w.num(held_signal_format);
  w.str(h.name);
  w.str(h.payload_json);
  w.str(h.command_id);
  w.num(h.source_partition);
  w.num(h.source_offset);
  w.num(h.held_ms);
  w.num(h.expires_at_ms);
  return out;
}

bool decode_held_signal(std::string_view bytes, held_signal& h) {
  reader r(bytes);
  uint8_t format = 0;
  return r.num(format) && format == held_signal_format && r.str(h.name) && r.str(h.payload_json) &&
         r.str(h.command_id) && r.num(h.source_partition) && r.num(h.source_offset) &&
         r.num(h.held_ms) && r.num(h.expires_at_ms) && r.done();
}

std::string encode_chain(const tenant_chain& c) {
  std::string out;
  writer w(out);
  w.num(c.event_count);
  w.bytes(c.last_hash.data(), c.last_hash.size());
  return out;
}

bool decode_chain(std::string_view bytes, tenant_chain& c) {
  reader r(bytes);
  return r.num(c.event_count) && r.bytes(c.last_hash.data(), c.last_hash.size()) && r.done();
}

namespace keys {

void put_be32(std::string& out, uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<char>(v >> shift));
}
void put_be64(std::string& out, uint64_t v) {
  for (int shift = 56; shift >= 0; shift -= 8) out.push_back(static_cast<char>(v >> shift));
}
uint32_t get_be32(std::string_view in) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v = (v << 8) | static_cast<uint8_t>(in[i]);
  return v;
}
uint64_t get_be64(std::string_view in) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | static_cast<uint8_t>(in[i]);
  return v;
}

std::string tenant_registry(std::string_view tenant) {
  std::string k = "R";
  k.append(tenant);
  return k;
}
std::string placement(std::string_view tenant) {
  std::string k = "O";
  k.append(tenant);
  return k;
}
std::string tenant_prefix(std::string_view tenant) {
  std::string k = "T";
  k.append(tenant);
  k.push_back('\0');
  return k;
}
namespace {
// The tenant's section `tag`, then `rest` as is.
std::string section(std::string_view tenant, char tag, std::string_view rest = {}) {
  std::string k = tenant_prefix(tenant);
  k.push_back(tag);
  k.append(rest);
  return k;
}
}  // namespace
std::string tenant_chain(std::string_view tenant) { return section(tenant, 'C'); }
std::string definition(std::string_view tenant, std::string_view workflow, uint32_t version) {
  std::string k = section(tenant, 'D', workflow);
  k.push_back('\0');
  put_be32(k, version);
  return k;
}
std::string latest(std::string_view tenant, std::string_view workflow) {
  return section(tenant, 'L', workflow);
}
std::string execution(std::string_view tenant, std::string_view execution) {
  return section(tenant, 'E', execution);
}
std::string event_index_prefix(std::string_view tenant, std::string_view execution) {
  std::string k = section(tenant, 'H', execution);
  k.push_back('\0');
  return k;
}
std::string event_index(std::string_view tenant, std::string_view execution, uint32_t seq) {
  std::string k = event_index_prefix(tenant, execution);
  put_be32(k, seq);
  return k;
}
std::string timer_prefix(std::string_view tenant) { return section(tenant, 'M'); }
std::string policy(std::string_view tenant) { return section(tenant, 'P'); }
std::string held_signal_prefix(std::string_view tenant) { return section(tenant, 'S'); }
std::string held_signal(std::string_view tenant, std::string_view execution, uint32_t seq) {
  std::string k = section(tenant, 'S', execution);
  k.push_back('\0');
  put_be32(k, seq);
  return k;
}
bool parse_held_signal(std::string_view key, std::string_view tenant, std::string& execution) {
  const std::string prefix = held_signal_prefix(tenant);
  if (!key.starts_with(prefix) || key.size() < prefix.size() + 1 + 4) return false;
  const std::string_view rest = key.substr(prefix.size(), key.size() - prefix.size() - 4);
  if (!rest.ends_with('\0')) return false;
  execution.assign(rest.substr(0, rest.size() - 1));
  return true;
}
std::string ai_spend_day(std::string_view tenant, std::string_view day) {
  return section(tenant, 'U', day);
}
std::string ai_spend_month(std::string_view tenant, std::string_view month) {
  return section(tenant, 'V', month);
}
std::string notify_window(std::string_view tenant, std::string_view channel) {
  return section(tenant, 'N', channel);
}
std::string notify_dedup(std::string_view tenant, const hash256& content) {
  return section(tenant, 'X',
                 std::string_view(reinterpret_cast<const char*>(content.data()), content.size()));
}
std::string timer(std::string_view tenant, int64_t due_ms, std::string_view execution,
                  uint16_t step) {
  std::string k = timer_prefix(tenant);
  put_be64(k, static_cast<uint64_t>(due_ms));
  k.append(execution);
  k.push_back('\0');
  k.push_back(static_cast<char>(step >> 8));
  k.push_back(static_cast<char>(step & 0xff));
  return k;
}
bool parse_timer(std::string_view key, std::string& tenant, int64_t& due_ms, std::string& execution,
                 uint16_t& step) {
  if (key.size() < 2 || key[0] != 'T') return false;
  size_t nul = key.find('\0', 1);
  if (nul == std::string_view::npos || nul + 1 >= key.size() || key[nul + 1] != 'M') return false;
  tenant.assign(key.substr(1, nul - 1));
  std::string_view rest = key.substr(nul + 2);
  if (rest.size() < 8 + 1 + 2) return false;
  due_ms = static_cast<int64_t>(get_be64(rest));
  rest.remove_prefix(8);
  execution.assign(rest.substr(0, rest.size() - 3));
  step = static_cast<uint16_t>((static_cast<uint8_t>(rest[rest.size() - 2]) << 8) |
                               static_cast<uint8_t>(rest[rest.size() - 1]));
  return rest[rest.size() - 3] == '\0';
}

}  // namespace keys
}  // namespace auterity
