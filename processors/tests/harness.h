#pragma once
// Test harness: a node on a temp directory driven step by step with a manual clock, plus
// helpers to submit commands and read back what the engine wrote.

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include <fmt/core.h>
#include <gtest/gtest.h>

#include "engine/record.h"
#include "node/node.h"
#include "processors/client.h"

namespace auterity::testing {

inline std::string temp_dir(std::string_view name) {
  std::string tmpl = fmt::format("{}/auterity-{}-XXXXXX", ::testing::TempDir(), name);
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  const char* made = ::mkdtemp(buf.data());
  EXPECT_NE(made, nullptr);
  return made ? std::string(made) : std::string();
}

struct dead_letter {
  std::string reason;
  std::string source;
  std::string original;
};

struct rejection {
  uint16_t code;
  std::string reason;
  std::string tenant;
  std::string execution;
};

class harness {
 public:
  explicit harness(std::string name, uint32_t partitions = 2, bool workers = true,
                   int64_t start_ms = 1'700'000'000'000)
      : harness(std::move(name), options(partitions, workers), start_ms) {}
  // A node on `o`, recovered, in a fresh temp directory (o.data_dir is set here). If it does
  // not open, the test fails and `n` stays null.
  harness(std::string name, node_options o, int64_t start_ms = 1'700'000'000'000)
      : dir(temp_dir(name)), clk(start_ms) {
    o.data_dir = dir;
    auto opened = node::open(o, clk);
    if (!opened) {
      ADD_FAILURE() << opened.error().message;
      return;
    }
    n = std::move(*opened);
    auto r = n->recover();
    if (!r) ADD_FAILURE() << r.error().message;
  }
  // What the first constructor opens: no fsync (tests do not survive power loss).
  static node_options options(uint32_t partitions, bool workers) {
    node_options o;
    o.partitions = partitions;
    o.fsync = false;
    o.workers = workers;
    return o;
  }
  ~harness() {
    n.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }

  void submit(std::string_view tenant, std::string bytes) {
    auto r = n->submit(tenant, std::move(bytes));
    ASSERT_TRUE(r.has_value()) << r.error().message;
  }
  void publish(std::string_view tenant, std::string_view json, std::string_view params = "") {
    submit(tenant, client::publish_definition({tenant, "", "pub", clk.now_ms()}, json, params));
  }
  void start(std::string_view tenant, std::string_view id, std::string_view workflow,
             std::string_view input = "{}") {
    submit(tenant, client::start_execution({tenant, id, id, clk.now_ms()}, workflow, 0, input));
  }
  void signal(std::string_view tenant, std::string_view id, std::string_view name,
              std::string_view payload = "{}") {
    submit(tenant, client::signal({tenant, id, "sig", clk.now_ms()}, name, payload));
  }
  // Runs partitions and workers until nothing is left to do at the current time.
  void settle(int max_rounds = 1000) {
    for (int i = 0; i < max_rounds; ++i) {
      auto w = n->step();
      ASSERT_TRUE(w.has_value()) << w.error().message;
      if (*w == 0) return;
    }
    FAIL() << "engine did not settle";
  }
  // Advances time in `tick_ms` steps, settling after each, `total_ms` in all.
  void run_for(int64_t total_ms, int64_t tick_ms = 10) {
    for (int64_t t = 0; t < total_ms; t += tick_ms) {
      clk.advance(tick_ms);
      settle();
    }
  }
  std::vector<record> read_all(stream s) {
    std::vector<record> out;
    log& l = n->get_log();
    for (uint32_t p = 0; p < l.partition_count(); ++p) {
      for (uint64_t off = 0; off < l.end_offset(s, p);) {
        auto r = l.read(s, p, off, 1024, 8 << 20, out);
        EXPECT_TRUE(r.has_value());
        if (!r || *r == 0) break;
        off = out.back().offset + 1;
      }
    }
    return out;
  }
  std::vector<rejection> rejections() {
    std::vector<rejection> out;
    for (const record& r : read_all(stream::executions)) {
      const fbs::Envelope* e = decode_envelope(r.value);
      if (!e || e->payload_type() != fbs::Payload::CommandRejected) continue;
      auto p = e->payload_as_CommandRejected();
      out.push_back({p->code(), std::string(sv(p->reason())), std::string(sv(e->tenant_id())),
                     std::string(sv(e->execution_id()))});
    }
    return out;
  }
  std::vector<dead_letter> dead_letters() {
    std::vector<dead_letter> out;
    for (const record& r : read_all(stream::deadletter)) {
      const fbs::Envelope* e = decode_envelope(r.value);
      EXPECT_NE(e, nullptr) << "deadletter records are envelopes themselves";
      if (!e) continue;
      auto d = e->payload_as_DeadLetter();
      out.push_back({std::string(sv(d->reason())), std::string(sv(d->source_stream())),
                     std::string(reinterpret_cast<const char*>(d->original()->data()),
                                 d->original()->size())});
    }
    return out;
  }
  // Payload type names of one execution's events, in order.
  std::vector<std::string> events_of(std::string_view id) {
    std::vector<std::string> out;
    for (const record& r : read_all(stream::executions)) {
      const fbs::Envelope* e = decode_envelope(r.value);
      if (e && e->kind() == fbs::RecordKind::Event && sv(e->execution_id()) == id) {
        out.emplace_back(payload_name(e->payload_type()));
      }
    }
    return out;
  }
  std::optional<execution_state> exec(std::string_view tenant, std::string_view id) {
    return n->execution(tenant, id);
  }

  std::string dir;
  manual_clock clk;
  std::unique_ptr<node> n;
};

inline std::vector<dead_letter> dead_letters(harness& h) { return h.dead_letters(); }

}  // namespace auterity::testing
